//! In-memory sliding windows: each window keeps two count-min sketches
//! (`pingora_limits::estimator::Estimator`), the current interval's and the previous one's,
//! and turns lazily, at the first use an interval after the current one began (as
//! `pingora_limits::rate::Rate` does). Its own rather than `Rate` for two reasons:
//!
//! - `Rate`'s turn races: a thread whose clock reading is older than the last turn computes
//!   a negative elapsed time (a panic in debug builds; in release it wraps, turns again and
//!   wipes both sketches, forgetting the window's counts). Here the turn is claimed with one
//!   compare-and-swap of the whole state (start, slot, a turning flag), others wait the few
//!   microseconds it takes, and a reading older than the start is simply inside the window.
//! - `Rate` cannot say which window an observation went to. Here every observation returns
//!   the start of the window it was counted in (a number on one process-wide clock), so a
//!   refund goes to exactly that window or, once it has turned, nowhere.

use pingora_limits::estimator::Estimator;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The clock windows are placed on.
static CLOCK: once_cell::sync::Lazy<Instant> = once_cell::sync::Lazy::new(Instant::now);

/// Added to [`CLOCK`]'s readings so that a start is never 0 and a window made before the
/// clock's first reading still has a distinct, earlier start.
const CLOCK_OFFSET_MS: u64 = 4 * 86_400_000;

/// Now, in milliseconds on [`CLOCK`] (offset).
pub fn clock_ms() -> u64 {
    u64::try_from(CLOCK.elapsed().as_millis())
        .unwrap_or(u64::MAX / 4)
        .saturating_add(CLOCK_OFFSET_MS)
}

/// The state word: the current window's start (ms on [`CLOCK`]) << 2 | turning << 1 | slot.
const TURNING: u64 = 0b10;

fn pack(start: u64, slot: usize) -> u64 {
    (start << 2) | (slot as u64 & 1)
}

/// What a use of a window saw.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Seen {
    /// The key's count in the previous and in the current interval.
    pub prev: i64,
    pub curr: i64,
    /// The elapsed fraction of the current interval (0..1).
    pub fraction: f64,
    /// When the current interval began (ms on the process's window clock): the window an
    /// observation went to.
    pub start: u64,
}

pub struct MemoryWindow {
    sketches: [Estimator; 2],
    state: AtomicU64,
    interval_ms: u64,
}

impl MemoryWindow {
    /// A window of `interval`, each sketch `hashes` × `slots` counters.
    pub fn new(interval: Duration, hashes: usize, slots: usize) -> Self {
        MemoryWindow {
            sketches: [Estimator::new(hashes, slots), Estimator::new(hashes, slots)],
            state: AtomicU64::new(pack(clock_ms(), 0)),
            interval_ms: u64::try_from(interval.as_millis())
                .unwrap_or(u64::MAX / 4)
                .max(1),
        }
    }

    /// The current slot and its start at `now`, turning the window first when an interval
    /// has passed. While another thread turns it (clears the sketch that becomes current:
    /// some thousand stores, once an interval), this one waits for the turn, so nothing is
    /// counted in a sketch being cleared.
    fn turn(&self, now: u64) -> (usize, u64) {
        loop {
            let s = self.state.load(Ordering::Acquire);
            if s & TURNING != 0 {
                std::thread::yield_now();
                continue;
            }
            let (start, slot) = (s >> 2, (s & 1) as usize);
            let past = now.saturating_sub(start);
            if past < self.interval_ms {
                return (slot, start);
            }
            if self
                .state
                .compare_exchange(s, s | TURNING, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                continue;
            }
            // The slot that becomes current held the window before the previous one.
            let next = slot ^ 1;
            self.sketches[next].reset();
            if past >= 2 * self.interval_ms {
                // The previous window is as old: nothing in it counts any more.
                self.sketches[slot].reset();
            }
            self.state.store(pack(now, next), Ordering::Release);
            return (next, now);
        }
    }

    /// The counts of `key` after adding `n` to the current interval (negative: taking back).
    pub fn observe<K: Hash>(&self, key: &K, n: i64) -> Seen {
        let now = clock_ms();
        let (slot, start) = self.turn(now);
        let curr = self.sketches[slot].incr(key, n as isize) as i64;
        self.seen(key, now, slot, start, curr)
    }

    /// The counts of `key`.
    pub fn read<K: Hash>(&self, key: &K) -> Seen {
        let now = clock_ms();
        let (slot, start) = self.turn(now);
        let curr = self.sketches[slot].get(key) as i64;
        self.seen(key, now, slot, start, curr)
    }

    /// Add `n` to `key` only if the window that began at `start` is still the current one
    /// (a refund of a reservation counted there); whether it was added.
    pub fn add_to<K: Hash>(&self, key: &K, n: i64, start: u64) -> bool {
        let (slot, current) = self.turn(clock_ms());
        if current != start {
            return false;
        }
        self.sketches[slot].incr(key, n as isize);
        true
    }

    fn seen<K: Hash>(&self, key: &K, now: u64, slot: usize, start: u64, curr: i64) -> Seen {
        let past = now.saturating_sub(start);
        let i = self.interval_ms;
        // A turn is waited for, so a window is read past its interval only by a thread whose
        // clock reading came long before its use.
        let (prev, curr) = if past >= 2 * i {
            (0, 0)
        } else if past >= i {
            (curr, 0)
        } else {
            (self.sketches[slot ^ 1].get(key) as i64, curr)
        };
        Seen {
            prev,
            curr,
            fraction: (past % i) as f64 / i as f64,
            start,
        }
    }

    /// The length of an interval.
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The interval of the tests' window: a minute, so no test's own pace turns it.
    const I: u64 = 60_000;

    fn window() -> MemoryWindow {
        MemoryWindow::new(Duration::from_millis(I), 4, 64)
    }

    #[test]
    fn counts_turn_to_the_previous_interval_then_go() {
        let w = window();
        let start = w.observe(&"k", 5).start;
        assert_eq!(w.observe(&"k", 2).curr, 7);
        let now = start + I + 200;
        let (slot, turned) = w.turn(now);
        assert_eq!(turned, now);
        let seen = w.seen(&"k", now, slot, turned, w.sketches[slot].get("k") as i64);
        assert_eq!((seen.prev, seen.curr), (7, 0));
        // Two intervals later nothing is left.
        let later = now + 2 * I + 500;
        let (slot, turned) = w.turn(later);
        assert_eq!(turned, later);
        assert_eq!(w.sketches[slot].get("k"), 0);
        assert_eq!(w.sketches[slot ^ 1].get("k"), 0);
    }

    #[test]
    fn a_reading_older_than_the_start_is_inside_the_window() {
        let w = window();
        let start = w.observe(&"k", 3).start;
        let (_, turned) = w.turn(start + I + 500);
        // A thread that read the clock before the turn: no second turn, nothing wiped.
        assert_eq!(w.turn(start + I + 400), w.turn(turned));
        assert_eq!(w.turn(start + 10), w.turn(turned));
        let s = w.state.load(Ordering::Acquire) >> 2;
        assert_eq!(s, turned);
        let (slot, _) = w.turn(turned);
        assert_eq!(
            w.sketches[slot ^ 1].get("k"),
            3,
            "the previous interval kept"
        );
    }

    #[test]
    fn a_refund_goes_only_to_its_own_window() {
        let w = window();
        let start = w.observe(&"k", 10).start;
        assert!(w.add_to(&"k", -4, start));
        assert_eq!(w.read(&"k").curr, 6);
        assert!(!w.add_to(&"k", -4, start - I), "an earlier window");
        assert_eq!(w.read(&"k").curr, 6);
    }

    #[test]
    fn concurrent_uses_across_turns_never_lose_the_current_window() {
        // Many threads observing around turns of a short window: no panic (`Rate`'s turn
        // underflows here in debug builds), and every observation is counted where it
        // is read (a turn never wipes the window that is current).
        let w = std::sync::Arc::new(MemoryWindow::new(Duration::from_millis(5), 4, 64));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let w = w.clone();
                std::thread::spawn(move || {
                    for _ in 0..20_000 {
                        let seen = w.observe(&"k", 1);
                        assert!(seen.curr >= 1 && seen.prev >= 0, "{seen:?}");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("no thread panicked");
        }
    }
}
