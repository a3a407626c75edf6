//! Admission and reconciliation across the three places a rule can be counted.

use super::*;

#[derive(Debug, Default)]
pub struct Limits {
    pub rules: Vec<Rule>,
}

/// A reservation about to be made: one check of one rule for one key.
struct Want<'a> {
    rule: usize,
    check: usize,
    place: Place,
    key: String,
    n: i64,
    c: &'a Check,
    window: Window,
}

impl Limits {
    /// Whether any rule budgets provider keys (checked per attempt).
    pub fn has_key_rules(&self) -> bool {
        self.rules.iter().any(|r| r.key == KeyBy::ProviderKey)
    }

    pub(super) fn place(window: Window, stores: &Stores) -> Place {
        if stores.redis.is_some() {
            Place::Redis
        } else if window.is_long() && stores.local.is_some() {
            Place::Local
        } else {
            Place::Memory
        }
    }

    /// Reserve the demand on every applicable rule; all or nothing.
    pub async fn admit(
        &self,
        stores: &Stores,
        who: &Who<'_>,
        demand: Demand,
    ) -> Result<(Vec<Hold>, Headroom), Refusal> {
        let wants = self.wants(stores, who, demand);
        if wants.is_empty() {
            return Ok((Vec::new(), Headroom::default()));
        }
        let mut holds = Vec::with_capacity(wants.len());
        let mut headroom = Headroom::default();
        // In-process places first: they answer at once and can be rolled back.
        self.reserve_local(stores, &wants, &mut holds, &mut headroom)?;
        let remote: Vec<&Want> = wants.iter().filter(|w| w.place == Place::Redis).collect();
        if let (Some(redis), false) = (&stores.redis, remote.is_empty()) {
            self.reserve_remote(stores, redis, &remote, &mut holds, &mut headroom)
                .await?;
        }
        Ok((holds, headroom))
    }

    /// What the request asks of each check of each rule that applies to it.
    fn wants<'a>(&'a self, stores: &Stores, who: &Who<'_>, demand: Demand) -> Vec<Want<'a>> {
        let mut wants = Vec::new();
        for (ri, rule) in self.rules.iter().enumerate() {
            let Some(key) = rule.key_of(who) else {
                continue;
            };
            let extra = if rule.reserve_max_tokens {
                demand.max_tokens
            } else {
                0
            };
            for (ci, c) in rule.checks.iter().enumerate() {
                let n = match c.measure {
                    Measure::Requests => 1,
                    Measure::Tokens => demand.prompt.saturating_add(extra),
                    Measure::InputTokens => demand.prompt,
                    Measure::OutputTokens => extra,
                };
                wants.push(Want {
                    rule: ri,
                    check: ci,
                    place: Self::place(rule.window, stores),
                    key: [c.prefix.as_str(), &key].concat(),
                    n: i64::try_from(n).unwrap_or(i64::MAX / 4),
                    c,
                    window: rule.window,
                });
            }
        }
        wants
    }

    /// Reserve on the in-process places (memory, the embedded store); on a refusal, give
    /// back what was reserved so far.
    fn reserve_local(
        &self,
        stores: &Stores,
        wants: &[Want],
        holds: &mut Vec<Hold>,
        headroom: &mut Headroom,
    ) -> Result<(), Refusal> {
        let now = now_ms();
        for w in wants.iter().filter(|w| w.place != Place::Redis) {
            match self.reserve_here(stores, w, now) {
                Ok((remaining, reset, start)) => {
                    headroom.tighten(w.c.measure, w.c.limit, remaining, reset);
                    holds.push(Hold {
                        place: w.place,
                        rule: w.rule,
                        check: w.check,
                        key: w.key.clone(),
                        reserved: w.n,
                        start,
                    });
                }
                Err(reset) => {
                    self.release(stores, holds);
                    headroom.tighten(w.c.measure, w.c.limit, 0, reset);
                    return Err(self.limited(w, reset, std::mem::take(headroom)));
                }
            }
        }
        Ok(())
    }

    /// Reserve on Redis in one script call; on a refusal or a store failure (failing
    /// closed), give back every hold.
    async fn reserve_remote(
        &self,
        stores: &Stores,
        redis: &crate::store::redis::RedisStore,
        remote: &[&Want<'_>],
        holds: &mut Vec<Hold>,
        headroom: &mut Headroom,
    ) -> Result<(), Refusal> {
        let checks: Vec<WindowCheck> = remote
            .iter()
            .map(|w| WindowCheck {
                key: w.key.clone(),
                window_secs: w.window.secs(),
                n: w.n,
                limit: w.c.limit,
            })
            .collect();
        let verdict = match redis.window_reserve(&checks).await {
            Ok(verdict) => verdict,
            Err(_) if stores.fail_open("ratelimit") => return Ok(()),
            Err(_) => {
                self.release(stores, holds);
                return Err(Refusal::StoreUnavailable);
            }
        };
        for (w, count) in remote.iter().zip(&verdict.counts) {
            let remaining = w.c.limit.saturating_sub(count.count);
            let reset = Duration::from_millis(count.reset_ms);
            headroom.tighten(w.c.measure, w.c.limit, remaining, reset);
        }
        if let Some(i) = verdict.refused {
            self.release(stores, holds);
            let (w, count) = (remote[i], verdict.counts.get(i));
            let reset = Duration::from_millis(count.map(|c| c.reset_ms).unwrap_or(0));
            headroom.tighten(w.c.measure, w.c.limit, 0, reset);
            return Err(self.limited(w, reset, std::mem::take(headroom)));
        }
        for (w, count) in remote.iter().zip(&verdict.counts) {
            holds.push(Hold {
                place: Place::Redis,
                rule: w.rule,
                check: w.check,
                key: w.key.clone(),
                reserved: w.n,
                start: count.start,
            });
        }
        Ok(())
    }

    fn limited(&self, w: &Want, reset: Duration, headroom: Headroom) -> Refusal {
        let name = self
            .rules
            .get(w.rule)
            .map(|r| r.name.clone())
            .unwrap_or_default();
        Refusal::Limited(Box::new(Limited {
            rule: name,
            what: w.c.measure.as_str(),
            window: w.window,
            retry_after: reset,
            headroom,
        }))
    }

    /// Reserve in memory or the embedded store: remaining budget, reset time and window
    /// start; or (with the reservation taken back) the time until the window has slid by.
    fn reserve_here(
        &self,
        stores: &Stores,
        w: &Want,
        now: u64,
    ) -> Result<(u64, Duration, u64), Duration> {
        let (count, reset, start) = match (w.place, &stores.local) {
            (Place::Local, Some(local)) => {
                let span = w.window.secs() * 1000;
                let start = now / span * span / 1000;
                let frac = (now % span) as f64 / span as f64;
                let curr = local.counter_add(&w.key, start, w.n);
                let prev = local.counter(&w.key, start.saturating_sub(w.window.secs()));
                let reset = Duration::from_millis(span - now % span);
                let count = slide(prev, curr, frac);
                if over(count, w.n, w.c.limit) {
                    local.counter_add(&w.key, start, -w.n);
                    return Err(reset);
                }
                (count, reset, start)
            }
            _ => {
                let window = &w.c.rate;
                let seen = window.observe(&w.key.as_str(), w.n);
                let frac = seen.fraction.clamp(0.0, 1.0);
                let count = slide(seen.prev, seen.curr, frac);
                let reset = window.interval().mul_f64(1.0 - frac);
                if over(count, w.n, w.c.limit) {
                    window.add_to(&w.key.as_str(), -w.n, seen.start);
                    return Err(reset);
                }
                (count, reset, seen.start)
            }
        };
        Ok(((w.c.limit as f64 - count).max(0.0) as u64, reset, start))
    }

    /// Add `delta` to the in-process counter behind `h`.
    fn add_here(&self, stores: &Stores, h: &Hold, delta: i64) {
        let Some(rule) = self.rules.get(h.rule) else {
            return;
        };
        let Some(c) = rule.checks.get(h.check) else {
            return;
        };
        match (h.place, &stores.local) {
            (Place::Local, Some(local)) => {
                local.counter_add(&h.key, h.start, delta);
            }
            (Place::Memory, _) => {
                // A refund goes only to the window the reservation went to: after a turn it
                // would lower the new window's count (and, through the shared cells of the
                // count-min sketch, other keys' counts) while the reservation still weighs
                // in the previous one. Kept there, it only overcounts until it slides by.
                // Usage beyond the reservation counts now.
                if delta < 0 {
                    c.rate.add_to(&h.key.as_str(), delta, h.start);
                } else {
                    c.rate.observe(&h.key.as_str(), delta);
                }
            }
            _ => {}
        }
    }

    /// Take back in-process reservations (Redis ones are never made before a refusal).
    fn release(&self, stores: &Stores, holds: &[Hold]) {
        for h in holds {
            self.add_here(stores, h, -h.reserved);
        }
    }

    /// Replace the reservations by the real usage.
    pub async fn reconcile(&self, stores: &Stores, holds: &[Hold], used: Used) {
        let mut remote = Vec::new();
        for h in holds {
            let Some(c) = self.rules.get(h.rule).and_then(|r| r.checks.get(h.check)) else {
                continue;
            };
            let actual = match c.measure {
                Measure::Requests => continue,
                Measure::Tokens => used.input.saturating_add(used.output),
                Measure::InputTokens => used.input,
                Measure::OutputTokens => used.output,
            };
            let delta = i64::try_from(actual).unwrap_or(i64::MAX / 4) - h.reserved;
            if delta == 0 {
                continue;
            }
            match h.place {
                Place::Redis => remote.push(WindowAdjust {
                    key: h.key.clone(),
                    window_secs: self.rules.get(h.rule).map(|r| r.window.secs()).unwrap_or(1),
                    start: h.start,
                    delta,
                }),
                _ => self.add_here(stores, h, delta),
            }
        }
        if let (Some(redis), false) = (&stores.redis, remote.is_empty()) {
            // A failure is counted and logged by the store; the window self-corrects when
            // it slides by.
            let _ = redis.window_adjust(&remote).await;
        }
    }
}
