//! Token and request rate limits, counted in-process with Pingora's count-min estimator
//! (`pingora_limits::rate::Rate`).
//!
//! Admission is reserve-then-reconcile. At admission a request adds its reservation (the
//! estimated prompt tokens, plus `max_tokens` when the rule says so) to every applicable
//! rule's counter *first*, then reads the sliding-window estimate; if that exceeds the limit
//! the reservation is taken back and the request gets 429. Because the add is atomic,
//! concurrent requests cannot all slip under the limit: the overshoot is bounded by one
//! request's reservation. When the response ends, the reservation is replaced by the real
//! usage (the difference is added, negative when the estimate was high).
//!
//! Accuracy: the sliding window is `previous × (1 − elapsed fraction) + current`, Pingora's
//! two-slot approximation; windows flip relative to the process start, not wall-clock
//! boundaries. Each window keeps two sketches of 4 × 2048 counters: count-min never
//! undercounts, and with n distinct keys active in a window a key is overcounted only when
//! all 4 of its cells collide, so for n ≪ 2048 the overestimate is negligible (about
//! (n/2048)^4 of the other keys' counts). Counters live in memory: a restart starts them
//! afresh (see the README; shared and persistent windows are not implemented yet).

use http::HeaderMap;
use pingora_limits::rate::Rate;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// What a rule counts per.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyBy {
    /// The authenticated consumer (requests without one are not counted).
    Consumer,
    /// The route.
    Route,
    /// A header's value: every distinct value (`*`) or only the listed ones.
    Header(http::HeaderName, Vec<String>),
    /// The client IP.
    Ip,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    Second,
    Minute,
    Hour,
    Day,
}

impl Window {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "second" => Window::Second,
            "minute" => Window::Minute,
            "hour" => Window::Hour,
            "day" => Window::Day,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Window::Second => "second",
            Window::Minute => "minute",
            Window::Hour => "hour",
            Window::Day => "day",
        }
    }

    pub fn duration(self) -> Duration {
        Duration::from_secs(match self {
            Window::Second => 1,
            Window::Minute => 60,
            Window::Hour => 3600,
            Window::Day => 86400,
        })
    }
}

pub struct Rule {
    pub name: String,
    pub key: KeyBy,
    pub window: Window,
    /// Input + output tokens per window.
    pub tokens: Option<u64>,
    pub requests: Option<u64>,
    /// Reserve the request's `max_tokens` too (not only the prompt estimate).
    pub reserve_max_tokens: bool,
    /// Routes this rule applies to (empty = all).
    pub routes: Vec<String>,
    token_rate: Arc<Rate>,
    request_rate: Arc<Rate>,
}

impl std::fmt::Debug for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rule").field("name", &self.name).finish()
    }
}

impl Rule {
    pub fn new(
        name: String,
        key: KeyBy,
        window: Window,
        tokens: Option<u64>,
        requests: Option<u64>,
        reserve_max_tokens: bool,
        routes: Vec<String>,
    ) -> Self {
        Rule {
            name,
            key,
            window,
            tokens,
            requests,
            reserve_max_tokens,
            routes,
            token_rate: Arc::new(Rate::new_with_estimator_config(window.duration(), 4, 2048)),
            request_rate: Arc::new(Rate::new_with_estimator_config(window.duration(), 4, 2048)),
        }
    }

    /// Keep `previous`'s counters across a config reload (same name and window).
    pub fn adopt(&mut self, previous: &Rule) {
        if previous.name == self.name && previous.window == self.window {
            self.token_rate = previous.token_rate.clone();
            self.request_rate = previous.request_rate.clone();
        }
    }

    /// The counter key of this request for this rule, or `None` if the rule does not apply.
    fn key_of(&self, who: &Who) -> Option<String> {
        if !self.routes.is_empty() && !self.routes.iter().any(|r| r == who.route) {
            return None;
        }
        match &self.key {
            KeyBy::Consumer => who.consumer.map(str::to_string),
            KeyBy::Route => Some(who.route.to_string()),
            KeyBy::Ip => who.ip.map(|ip| ip.to_string()),
            KeyBy::Header(name, values) => {
                let v = who.headers.get(name)?.to_str().ok()?;
                (values.iter().any(|x| x == "*" || x == v)).then(|| v.to_string())
            }
        }
    }
}

/// Sliding-window count of `key` in `rate`, and the time until the window has slid by.
fn window_count(rate: &Rate, key: &str) -> (f64, Duration) {
    rate.rate_with(&key, |c| {
        let frac = c.current_interval_fraction.clamp(0.0, 1.0);
        let count = c.prev_samples as f64 * (1.0 - frac) + c.curr_samples as f64;
        (count, c.interval.mul_f64(1.0 - frac))
    })
}

/// Add `n` to `key` in `rate`, then check the window against `limit`: the remaining budget
/// and reset time, or (with `n` taken back) the time until the window has slid by.
fn reserve_in(rate: &Rate, key: &str, n: i64, limit: u64) -> Result<(u64, Duration), Duration> {
    rate.observe(&key, n as isize);
    let (count, reset) = window_count(rate, key);
    if count > limit as f64 {
        rate.observe(&key, -(n as isize));
        return Err(reset);
    }
    Ok(((limit as f64 - count).max(0.0) as u64, reset))
}

/// Who a request is, for keying rules.
pub struct Who<'a> {
    pub route: &'a str,
    pub consumer: Option<&'a str>,
    pub ip: Option<IpAddr>,
    pub headers: &'a HeaderMap,
}

/// One rule's hold on an admitted request.
#[derive(Debug)]
pub struct Hold {
    rule: usize,
    key: String,
    reserved: i64,
}

/// What the client is told: the tightest limit that applies.
#[derive(Debug, Clone, Copy, Default)]
pub struct Headroom {
    pub limit_tokens: Option<(u64, u64, Duration)>,
    pub limit_requests: Option<(u64, u64, Duration)>,
}

impl Headroom {
    fn tighten(
        slot: &mut Option<(u64, u64, Duration)>,
        limit: u64,
        remaining: u64,
        reset: Duration,
    ) {
        if slot.is_none_or(|(_, r, _)| remaining < r) {
            *slot = Some((limit, remaining, reset));
        }
    }

    /// OpenAI's `x-ratelimit-*` headers.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let fmt = |d: Duration| format!("{}ms", d.as_millis());
        if let Some((l, r, t)) = self.limit_tokens {
            out.push(("x-ratelimit-limit-tokens", l.to_string()));
            out.push(("x-ratelimit-remaining-tokens", r.to_string()));
            out.push(("x-ratelimit-reset-tokens", fmt(t)));
        }
        if let Some((l, r, t)) = self.limit_requests {
            out.push(("x-ratelimit-limit-requests", l.to_string()));
            out.push(("x-ratelimit-remaining-requests", r.to_string()));
            out.push(("x-ratelimit-reset-requests", fmt(t)));
        }
        out
    }
}

/// Why a request was refused.
#[derive(Debug, Clone)]
pub struct Limited {
    pub rule: String,
    /// `tokens` or `requests`.
    pub what: &'static str,
    pub window: Window,
    pub retry_after: Duration,
    pub headroom: Headroom,
}

#[derive(Debug, Default)]
pub struct Limits {
    pub rules: Vec<Rule>,
}

impl Limits {
    /// Reserve `tokens` (and `max_tokens` where asked) and one request on every applicable
    /// rule; all or nothing.
    pub fn admit(
        &self,
        who: &Who,
        tokens: u64,
        max_tokens: u64,
    ) -> Result<(Vec<Hold>, Headroom), Box<Limited>> {
        let mut holds: Vec<Hold> = Vec::new();
        let mut headroom = Headroom::default();
        for (i, rule) in self.rules.iter().enumerate() {
            let Some(key) = rule.key_of(who) else {
                continue;
            };
            let reserve = tokens
                + if rule.reserve_max_tokens {
                    max_tokens
                } else {
                    0
                };
            let reserve = i64::try_from(reserve).unwrap_or(i64::MAX / 2);
            let checks = [
                (rule.requests, &rule.request_rate, 1, "requests"),
                (rule.tokens, &rule.token_rate, reserve, "tokens"),
            ];
            let mut taken: Vec<(&Rate, i64)> = Vec::new();
            for (limit, rate, n, what) in checks {
                let Some(limit) = limit else { continue };
                let slot = if what == "tokens" {
                    &mut headroom.limit_tokens
                } else {
                    &mut headroom.limit_requests
                };
                match reserve_in(rate, &key, n, limit) {
                    Ok((remaining, reset)) => {
                        Headroom::tighten(slot, limit, remaining, reset);
                        taken.push((rate, n));
                    }
                    Err(reset) => {
                        for (rate, n) in taken {
                            rate.observe(&key.as_str(), -(n as isize));
                        }
                        self.release(&holds);
                        Headroom::tighten(slot, limit, 0, reset);
                        return Err(Box::new(Limited {
                            rule: rule.name.clone(),
                            what,
                            window: rule.window,
                            retry_after: reset,
                            headroom,
                        }));
                    }
                }
            }
            holds.push(Hold {
                rule: i,
                key,
                reserved: reserve,
            });
        }
        Ok((holds, headroom))
    }

    fn release(&self, holds: &[Hold]) {
        for h in holds {
            if let Some(rule) = self.rules.get(h.rule) {
                if rule.tokens.is_some() {
                    rule.token_rate
                        .observe(&h.key.as_str(), -(h.reserved as isize));
                }
                if rule.requests.is_some() {
                    rule.request_rate.observe(&h.key.as_str(), -1);
                }
            }
        }
    }

    /// Replace the reservations by the real usage.
    pub fn reconcile(&self, holds: &[Hold], used_tokens: u64) {
        let used = i64::try_from(used_tokens).unwrap_or(i64::MAX / 2);
        for h in holds {
            if let Some(rule) = self.rules.get(h.rule).filter(|r| r.tokens.is_some()) {
                rule.token_rate
                    .observe(&h.key.as_str(), (used - h.reserved) as isize);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who<'a>(h: &'a HeaderMap, consumer: Option<&'a str>) -> Who<'a> {
        Who {
            route: "r",
            consumer,
            ip: None,
            headers: h,
        }
    }

    #[test]
    fn reserve_then_reconcile_bounds_the_overshoot() {
        let limits = Limits {
            rules: vec![Rule::new(
                "tpm".into(),
                KeyBy::Consumer,
                Window::Minute,
                Some(1000),
                None,
                false,
                vec![],
            )],
        };
        let h = HeaderMap::new();
        let mut admitted = 0;
        for _ in 0..20 {
            if limits.admit(&who(&h, Some("a")), 100, 0).is_ok() {
                admitted += 1;
            }
        }
        assert_eq!(admitted, 10, "exactly the budget is reserved");
        let err = limits.admit(&who(&h, Some("a")), 100, 0).unwrap_err();
        assert_eq!(err.rule, "tpm");
        assert!(err.retry_after <= Duration::from_secs(60));
        // Another consumer has its own budget; anonymous requests are not counted.
        assert!(limits.admit(&who(&h, Some("b")), 100, 0).is_ok());
        assert!(limits.admit(&who(&h, None), 5000, 0).is_ok());
        // Reconcile: the real usage was lower, so budget comes back.
        let limits = Limits {
            rules: vec![Rule::new(
                "tpm".into(),
                KeyBy::Consumer,
                Window::Minute,
                Some(1000),
                Some(100),
                false,
                vec![],
            )],
        };
        let (holds, headroom) = limits.admit(&who(&h, Some("a")), 900, 0).unwrap();
        assert_eq!(headroom.limit_tokens.unwrap().1, 100);
        assert!(limits.admit(&who(&h, Some("a")), 200, 0).is_err());
        limits.reconcile(&holds, 100);
        assert!(limits.admit(&who(&h, Some("a")), 200, 0).is_ok());
    }

    #[test]
    fn header_values_counted_separately() {
        let name = http::HeaderName::from_static("x-user");
        let limits = Limits {
            rules: vec![Rule::new(
                "per-user".into(),
                KeyBy::Header(name, vec!["*".into()]),
                Window::Minute,
                None,
                Some(2),
                false,
                vec![],
            )],
        };
        let mut a = HeaderMap::new();
        a.insert("x-user", "a".parse().unwrap());
        let mut b = HeaderMap::new();
        b.insert("x-user", "b".parse().unwrap());
        assert!(limits.admit(&who(&a, None), 0, 0).is_ok());
        assert!(limits.admit(&who(&a, None), 0, 0).is_ok());
        assert!(limits.admit(&who(&a, None), 0, 0).is_err());
        assert!(limits.admit(&who(&b, None), 0, 0).is_ok());
        let none = HeaderMap::new();
        assert!(
            limits.admit(&who(&none, None), 0, 0).is_ok(),
            "rule does not apply without the header"
        );
    }
}
