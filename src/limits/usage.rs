//! What a rule has counted so far for one key, read without counting anything: the same
//! sliding-window estimate admission compares with the limit, from wherever the rule is
//! counted (memory, the embedded store, Redis). For the management API and the console.

use super::*;
use serde::Serialize;

/// One limit of a rule, as it stands for one key.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Standing {
    pub measure: &'static str,
    pub limit: u64,
    /// The sliding-window estimate now.
    pub used: u64,
    pub remaining: u64,
}

impl Limits {
    /// Rule `name`'s standing for `key` (a consumer, route, header value, IP, CIDR or
    /// `provider/key`, as the rule counts); `None` for an unknown rule.
    pub async fn standing(&self, stores: &Stores, name: &str, key: &str) -> Option<Vec<Standing>> {
        let rule = self.rules.iter().find(|r| r.name == name)?;
        let place = Self::place(rule.window, stores);
        let mut out = Vec::with_capacity(rule.checks.len());
        let now = now_ms();
        let mut remote = Vec::new();
        for c in &rule.checks {
            let counter = [c.prefix.as_str(), key].concat();
            let used = match (place, &stores.local, &stores.redis) {
                (Place::Redis, _, Some(_)) => {
                    remote.push(WindowCheck {
                        key: counter,
                        window_secs: rule.window.secs(),
                        n: 0,
                        limit: u64::MAX / 4,
                    });
                    0
                }
                (Place::Local, Some(local), _) => {
                    let span = rule.window.secs() * 1000;
                    let start = now / span * span / 1000;
                    let frac = (now % span) as f64 / span as f64;
                    let curr = local.counter(&counter, start);
                    let prev = local.counter(&counter, start.saturating_sub(rule.window.secs()));
                    slide(prev, curr, frac) as u64
                }
                _ => {
                    let seen = c.rate.read(&counter.as_str());
                    slide(seen.prev, seen.curr, seen.fraction.clamp(0.0, 1.0)) as u64
                }
            };
            out.push(Standing {
                measure: c.measure.as_str(),
                limit: c.limit,
                used,
                remaining: c.limit.saturating_sub(used),
            });
        }
        if let (false, Some(redis)) = (remote.is_empty(), &stores.redis) {
            // Adding 0 to every window reads the estimates in one script call.
            let verdict = redis.window_reserve(&remote).await.ok()?;
            for (s, count) in out.iter_mut().zip(&verdict.counts) {
                s.used = count.count;
                s.remaining = s.limit.saturating_sub(count.count);
            }
        }
        Some(out)
    }
}
