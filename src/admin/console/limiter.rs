//! Failed console logins per client address: after `MAX_FAILURES` within `WINDOW` an
//! address is refused until its window ends. Bounded: at most `MAX_ADDRESSES` addresses are
//! tracked; when full, expired entries are dropped first, and if none has expired the new
//! address is refused (an attacker with that many addresses only locks out more of their
//! own).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

pub const MAX_FAILURES: u32 = 10;
pub const WINDOW: Duration = Duration::from_secs(300);
const MAX_ADDRESSES: usize = 10_000;

#[derive(Default)]
pub struct LoginLimiter {
    seen: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl LoginLimiter {
    /// Seconds `ip` must still wait, or `None` when it may try.
    pub fn blocked(&self, ip: IpAddr) -> Option<u64> {
        self.blocked_at(ip, Instant::now())
    }

    fn blocked_at(&self, ip: IpAddr, now: Instant) -> Option<u64> {
        let seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if !seen.contains_key(&ip) && seen.len() >= MAX_ADDRESSES {
            return Some(WINDOW.as_secs());
        }
        let (n, start) = seen.get(&ip)?;
        let end = *start + WINDOW;
        (*n >= MAX_FAILURES && now < end).then(|| end.duration_since(now).as_secs().max(1))
    }

    /// Count a failed login of `ip`.
    pub fn failed(&self, ip: IpAddr) {
        self.failed_at(ip, Instant::now());
    }

    fn failed_at(&self, ip: IpAddr, now: Instant) {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if !seen.contains_key(&ip) && seen.len() >= MAX_ADDRESSES {
            seen.retain(|_, (_, start)| now.duration_since(*start) < WINDOW);
            if seen.len() >= MAX_ADDRESSES {
                return;
            }
        }
        let e = seen.entry(ip).or_insert((0, now));
        if now.duration_since(e.1) >= WINDOW {
            *e = (0, now);
        }
        e.0 += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_refused_after_its_failures_until_the_window_ends() {
        let l = LoginLimiter::default();
        let t = Instant::now();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let other: IpAddr = "127.0.0.2".parse().unwrap();
        for _ in 0..MAX_FAILURES - 1 {
            l.failed_at(ip, t);
        }
        assert_eq!(l.blocked_at(ip, t), None);
        l.failed_at(ip, t);
        assert_eq!(l.blocked_at(ip, t), Some(WINDOW.as_secs()));
        assert_eq!(l.blocked_at(other, t), None, "others may still try");
        assert_eq!(l.blocked_at(ip, t + WINDOW), None, "the window ended");
        l.failed_at(ip, t + WINDOW);
        assert_eq!(l.blocked_at(ip, t + WINDOW), None, "a new window");
    }

    #[test]
    fn bounded() {
        let l = LoginLimiter::default();
        let t = Instant::now();
        for i in 0..(MAX_ADDRESSES as u32 + 10) {
            l.failed_at(IpAddr::from(i.to_be_bytes()), t);
        }
        assert_eq!(l.seen.lock().unwrap().len(), MAX_ADDRESSES);
        let late = IpAddr::from((MAX_ADDRESSES as u32 + 20).to_be_bytes());
        assert!(l.blocked_at(late, t).is_some(), "full: new addresses wait");
        l.failed_at(late, t + WINDOW);
        assert_eq!(l.seen.lock().unwrap().len(), 1, "expired entries dropped");
    }
}
