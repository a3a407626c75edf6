//! A provider's pool of API keys: selection among usable keys, and each key's health.
//!
//! Keys are named everywhere by `name` (given in the config, or `<provider>#<n>`), never by
//! their value. The value is kept as a sensitive `HeaderValue` built once at load time so the
//! hot path only clones it. Health is a few atomics per key: no lock on the request path.
//!
//! States: `healthy`; `resting` (a 429 said when to come back: usable again by itself after
//! that instant, not counted as broken); `unhealthy` (`failure_threshold` consecutive
//! failures); `revoked` (the provider refused the key). Unhealthy and revoked keys come back
//! only after `success_threshold` successful health checks (`health` service).
//!
//! A 401/403 answer to a client's request does not revoke the key by itself: what the client
//! sent (a header a route forwards, a model or parameter the key may not use) can cause it,
//! and one client must not be able to take a key away from everyone. The key is marked
//! *suspect* instead (it stays in rotation, its state unchanged) and the `health` service
//! sends it the gateway's own check request, which carries nothing from any client: a
//! 401/403 to that revokes the key; a success, or any client request served with the key,
//! clears the suspicion; any other answer keeps it, and the check is repeated every
//! `check_interval`.

use http::HeaderValue;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    Healthy = 0,
    Resting = 1,
    Unhealthy = 2,
    Revoked = 3,
}

impl KeyState {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => KeyState::Resting,
            2 => KeyState::Unhealthy,
            3 => KeyState::Revoked,
            _ => KeyState::Healthy,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Healthy => "healthy",
            KeyState::Resting => "resting",
            KeyState::Unhealthy => "unhealthy",
            KeyState::Revoked => "revoked",
        }
    }
}

/// What an attempt with a key came to, as far as the key's health is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOutcome {
    Success,
    /// Counted toward `failure_threshold`.
    Failure,
    /// 401/403 to a client's request: the key is suspect until the gateway's own health
    /// check confirms (revoked) or clears it.
    Rejected,
    /// 429 with a known reset time: rest, do not count as broken.
    RateLimited(Duration),
    /// Not the key's fault (a client error): no change.
    Neutral,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthPolicy {
    pub failure_threshold: u32,
    pub success_threshold: u32,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        HealthPolicy {
            failure_threshold: 3,
            success_threshold: 1,
        }
    }
}

#[derive(Debug, Default)]
struct Health {
    state: AtomicU8,
    consecutive_failures: AtomicU32,
    check_successes: AtomicU32,
    /// Unix ms until which a resting key rests.
    rest_until: AtomicU64,
    /// Unix ms of the last state change (0 = never).
    changed_at: AtomicU64,
    failures_total: AtomicU64,
    /// A client request got 401/403 with this key; not yet confirmed by a health check.
    suspect: AtomicBool,
}

/// What the gateway's own health-check request with a key came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckResult {
    /// A 2xx answer.
    Ok,
    /// 401 or 403: the provider refuses the key itself.
    Rejected,
    /// Any other answer, or no answer.
    Failed,
}

pub struct ApiKey {
    pub name: String,
    /// The secret; never logged, never returned to a client.
    value: String,
    /// `Bearer <secret>`, ready for the `Authorization` header.
    bearer: HeaderValue,
    plain: HeaderValue,
    /// Relative share of requests among the pool's usable keys.
    weight: u32,
    /// Shared with the same key of the previous config after a reload.
    health: std::sync::Arc<Health>,
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKey({})", self.name)
    }
}

/// A point-in-time view of a key, for the admin API and metrics.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KeyStatus {
    pub name: String,
    pub state: &'static str,
    pub consecutive_failures: u32,
    pub failures_total: u64,
    /// A client request was refused (401/403) with this key and the gateway's own check has
    /// not yet confirmed or cleared it.
    pub suspect: bool,
    /// Unix milliseconds of the last state change, if any.
    pub changed_at_ms: Option<u64>,
    /// For a resting key: Unix milliseconds when it is usable again.
    pub rest_until_ms: Option<u64>,
}

impl ApiKey {
    pub fn new(name: String, value: String) -> Result<Self, String> {
        let mut bearer = HeaderValue::from_str(&format!("Bearer {value}"))
            .map_err(|_| format!("key `{name}` contains characters not allowed in a header"))?;
        bearer.set_sensitive(true);
        let mut plain = HeaderValue::from_str(&value)
            .map_err(|_| format!("key `{name}` contains characters not allowed in a header"))?;
        plain.set_sensitive(true);
        Ok(ApiKey {
            name,
            value,
            bearer,
            plain,
            weight: 1,
            health: Default::default(),
        })
    }

    /// Keep `previous`'s health (the same key in the config being replaced).
    pub fn adopt_health(&mut self, previous: &ApiKey) {
        if previous.name == self.name && previous.value == self.value {
            self.health = previous.health.clone();
        }
    }

    pub fn with_weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    pub fn bearer(&self) -> &HeaderValue {
        &self.bearer
    }

    pub fn plain(&self) -> &HeaderValue {
        &self.plain
    }

    /// The secret itself, for code that must scrub it from text.
    pub fn secret(&self) -> &str {
        &self.value
    }

    pub fn state(&self) -> KeyState {
        KeyState::from_u8(self.health.state.load(Ordering::Acquire))
    }

    /// Usable for a request now (a resting key whose rest is over is usable again).
    pub fn usable(&self) -> bool {
        match self.state() {
            KeyState::Healthy => true,
            KeyState::Resting => {
                if now_ms() >= self.health.rest_until.load(Ordering::Acquire) {
                    self.set_state(KeyState::Resting, KeyState::Healthy);
                    true
                } else {
                    false
                }
            }
            KeyState::Unhealthy | KeyState::Revoked => false,
        }
    }

    /// Needs active health checks (out of rotation until one succeeds, or suspect).
    pub fn needs_check(&self) -> bool {
        matches!(self.state(), KeyState::Unhealthy | KeyState::Revoked)
            || self.health.suspect.load(Ordering::Acquire)
    }

    pub fn suspect(&self) -> bool {
        self.health.suspect.load(Ordering::Acquire)
    }

    /// Move from `from` to `to`; true if this call made the change.
    fn set_state(&self, from: KeyState, to: KeyState) -> bool {
        let changed = self
            .health
            .state
            .compare_exchange(from as u8, to as u8, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if changed {
            self.health.changed_at.store(now_ms(), Ordering::Release);
            if to == KeyState::Healthy {
                self.health.consecutive_failures.store(0, Ordering::Release);
            }
            log::info!("key {} is now {}", self.name, to.as_str());
        }
        changed
    }

    fn force_state(&self, to: KeyState) {
        let from = self.state();
        if from != to {
            self.set_state(from, to);
        }
    }

    /// Record what a request with this key came to.
    pub fn report(&self, outcome: KeyOutcome, policy: &HealthPolicy) {
        let h = &self.health;
        match outcome {
            KeyOutcome::Success => {
                h.consecutive_failures.store(0, Ordering::Release);
                if h.suspect.load(Ordering::Relaxed) {
                    h.suspect.store(false, Ordering::Release);
                }
            }
            KeyOutcome::Neutral => {}
            KeyOutcome::Failure => {
                h.failures_total.fetch_add(1, Ordering::Relaxed);
                let n = h.consecutive_failures.fetch_add(1, Ordering::AcqRel) + 1;
                if n >= policy.failure_threshold.max(1) && self.state() == KeyState::Healthy {
                    h.check_successes.store(0, Ordering::Release);
                    self.set_state(KeyState::Healthy, KeyState::Unhealthy);
                }
            }
            KeyOutcome::Rejected => {
                h.failures_total.fetch_add(1, Ordering::Relaxed);
                if !h.suspect.swap(true, Ordering::AcqRel) {
                    log::warn!(
                        "key {}: a request was refused (401/403); confirming with a health check",
                        self.name
                    );
                }
            }
            KeyOutcome::RateLimited(wait) => {
                let until = now_ms() + wait.as_millis() as u64;
                h.rest_until.fetch_max(until, Ordering::AcqRel);
                if self.state() == KeyState::Healthy {
                    self.set_state(KeyState::Healthy, KeyState::Resting);
                }
            }
        }
    }

    /// Record a health-check result; true when the key came back into rotation.
    pub fn report_check(&self, result: CheckResult, policy: &HealthPolicy) -> bool {
        let h = &self.health;
        match result {
            CheckResult::Ok => h.suspect.store(false, Ordering::Release),
            CheckResult::Rejected => {
                h.suspect.store(false, Ordering::Release);
                h.check_successes.store(0, Ordering::Release);
                self.force_state(KeyState::Revoked);
                return false;
            }
            CheckResult::Failed => {
                h.check_successes.store(0, Ordering::Release);
                return false;
            }
        }
        if !matches!(self.state(), KeyState::Unhealthy | KeyState::Revoked) {
            return false;
        }
        let n = h.check_successes.fetch_add(1, Ordering::AcqRel) + 1;
        if n >= policy.success_threshold.max(1) {
            h.check_successes.store(0, Ordering::Release);
            let state = self.state();
            return matches!(state, KeyState::Unhealthy | KeyState::Revoked)
                && self.set_state(state, KeyState::Healthy);
        }
        false
    }

    pub fn status(&self) -> KeyStatus {
        let h = &self.health;
        let state = self.state();
        let changed = h.changed_at.load(Ordering::Acquire);
        KeyStatus {
            name: self.name.clone(),
            state: state.as_str(),
            consecutive_failures: h.consecutive_failures.load(Ordering::Acquire),
            failures_total: h.failures_total.load(Ordering::Relaxed),
            suspect: h.suspect.load(Ordering::Acquire),
            changed_at_ms: (changed > 0).then_some(changed),
            rest_until_ms: (state == KeyState::Resting)
                .then(|| h.rest_until.load(Ordering::Acquire)),
        }
    }
}

/// Keys of one provider, chosen round-robin among the usable ones.
#[derive(Debug, Default)]
pub struct KeyPool {
    keys: Vec<ApiKey>,
    /// Finds any of these keys' values in what a client would receive.
    scrubber: crate::scrub::Scrubber,
    /// Environment variables named by `${VAR}` keys that were unset or empty at load.
    missing_vars: Vec<String>,
    next: AtomicUsize,
}

impl KeyPool {
    pub fn new(keys: Vec<ApiKey>, missing_vars: Vec<String>) -> Self {
        KeyPool {
            scrubber: crate::scrub::Scrubber::new(keys.iter().map(ApiKey::secret)),
            keys,
            missing_vars,
            next: AtomicUsize::new(0),
        }
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Scrubs every key of the pool from text a client receives.
    pub fn scrubber(&self) -> &crate::scrub::Scrubber {
        &self.scrubber
    }

    pub fn missing_vars(&self) -> &[String] {
        &self.missing_vars
    }

    /// The next usable key not in `tried`: round-robin, or by weight when the keys have
    /// different weights (a weight-0 key is used only when no other is usable); `None`
    /// when there is none.
    pub fn pick(&self, tried: &[usize]) -> Option<usize> {
        let n = self.keys.len();
        if n == 0 {
            return None;
        }
        if self.keys.iter().any(|k| k.weight != self.keys[0].weight) {
            let candidates: Vec<usize> = (0..n)
                .filter(|i| !tried.contains(i) && self.keys[*i].usable())
                .collect();
            let total: u64 = candidates
                .iter()
                .map(|i| u64::from(self.keys[*i].weight))
                .sum();
            if total == 0 {
                return candidates.first().copied();
            }
            let mut point = fastrand::u64(..total);
            for i in candidates {
                let w = u64::from(self.keys[i].weight);
                if point < w {
                    return Some(i);
                }
                point -= w;
            }
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|i| (start + i) % n)
            .find(|i| !tried.contains(i) && self.keys[*i].usable())
    }

    /// Any key not in `tried`, ignoring health (for `all_keys_down: try_anyway`).
    pub fn pick_any(&self, tried: &[usize]) -> Option<usize> {
        let n = self.keys.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n).map(|i| (start + i) % n).find(|i| !tried.contains(i))
    }

    pub fn any_usable(&self) -> bool {
        self.keys.iter().any(ApiKey::usable)
    }

    /// How long until the first key of the pool is expected back in rotation: a resting
    /// key when its rest ends, a key out of rotation after `check_back` (the health checks
    /// it needs to pass). Zero when one is usable now; `None` for a pool without keys.
    pub fn back_in(&self, check_back: Duration) -> Option<Duration> {
        let now = now_ms();
        self.keys
            .iter()
            .map(|k| match k.state() {
                KeyState::Healthy => Duration::ZERO,
                KeyState::Resting => Duration::from_millis(
                    k.health
                        .rest_until
                        .load(Ordering::Acquire)
                        .saturating_sub(now),
                ),
                KeyState::Unhealthy | KeyState::Revoked => check_back,
            })
            .min()
    }

    pub fn get(&self, index: usize) -> Option<&ApiKey> {
        self.keys.get(index)
    }

    pub fn iter(&self) -> impl Iterator<Item = &ApiKey> {
        self.keys.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(n: usize) -> KeyPool {
        KeyPool::new(
            (0..n)
                .map(|i| ApiKey::new(format!("k{i}"), format!("sk-{i}")).unwrap())
                .collect(),
            vec![],
        )
    }

    #[test]
    fn round_robin_and_debug_hides_secret() {
        let pool = pool(2);
        let picks: Vec<usize> = (0..4).filter_map(|_| pool.pick(&[])).collect();
        assert_eq!(picks, vec![0, 1, 0, 1]);
        assert!(!format!("{pool:?}").contains("sk-1"));
        assert_eq!(pool.get(0).unwrap().bearer(), "Bearer sk-0");
        assert!(KeyPool::default().pick(&[]).is_none());
        assert!(ApiKey::new("bad".into(), "a\nb".into()).is_err());
        assert_eq!(pool.pick(&[0, 1]), None);
        assert!(matches!(pool.pick(&[0]), Some(1)));
    }

    #[test]
    fn weighted_keys() {
        let pool = KeyPool::new(
            vec![
                ApiKey::new("heavy".into(), "sk-h".into())
                    .unwrap()
                    .with_weight(3),
                ApiKey::new("light".into(), "sk-l".into())
                    .unwrap()
                    .with_weight(1),
                ApiKey::new("spare".into(), "sk-s".into())
                    .unwrap()
                    .with_weight(0),
            ],
            vec![],
        );
        let heavy = (0..4000).filter(|_| pool.pick(&[]) == Some(0)).count() as f64 / 4000.0;
        assert!((0.70..0.80).contains(&heavy), "{heavy}");
        assert!(
            (0..200).all(|_| pool.pick(&[]) != Some(2)),
            "weight 0 is a spare"
        );
        assert_eq!(pool.pick(&[0, 1]), Some(2));
    }

    #[test]
    fn failures_threshold_and_checks() {
        let policy = HealthPolicy {
            failure_threshold: 3,
            success_threshold: 2,
        };
        let pool = pool(2);
        let k = pool.get(0).unwrap();
        k.report(KeyOutcome::Failure, &policy);
        k.report(KeyOutcome::Failure, &policy);
        k.report(KeyOutcome::Success, &policy);
        k.report(KeyOutcome::Failure, &policy);
        k.report(KeyOutcome::Failure, &policy);
        assert_eq!(k.state(), KeyState::Healthy, "a success resets the count");
        k.report(KeyOutcome::Failure, &policy);
        assert_eq!(k.state(), KeyState::Unhealthy);
        assert!(k.needs_check());
        for _ in 0..5 {
            assert_eq!(pool.pick(&[]), Some(1), "only the healthy key is picked");
        }
        assert!(!k.report_check(CheckResult::Ok, &policy));
        assert!(k.report_check(CheckResult::Ok, &policy));
        assert_eq!(k.state(), KeyState::Healthy);
        assert_eq!(k.status().consecutive_failures, 0);
        assert_eq!(k.status().failures_total, 5);
    }

    #[test]
    fn rejected_and_rate_limited() {
        let policy = HealthPolicy::default();
        let pool = pool(1);
        let k = pool.get(0).unwrap();
        k.report(KeyOutcome::RateLimited(Duration::from_millis(50)), &policy);
        assert_eq!(k.state(), KeyState::Resting);
        assert!(!k.needs_check(), "a resting key comes back by itself");
        let back = pool.back_in(Duration::from_secs(9)).unwrap();
        assert!(back > Duration::ZERO && back <= Duration::from_millis(50));
        assert!(!pool.any_usable());
        assert!(k.status().rest_until_ms.is_some());
        std::thread::sleep(Duration::from_millis(60));
        assert!(pool.any_usable());
        assert_eq!(k.state(), KeyState::Healthy);
        // A refused client request only makes the key suspect: it stays in rotation.
        k.report(KeyOutcome::Rejected, &policy);
        assert_eq!(k.state(), KeyState::Healthy);
        assert!(k.suspect() && k.needs_check() && pool.any_usable());
        // A request served with it clears the suspicion.
        k.report(KeyOutcome::Success, &policy);
        assert!(!k.suspect() && !k.needs_check());
        // So does a successful check; an inconclusive one keeps it.
        k.report(KeyOutcome::Rejected, &policy);
        assert!(!k.report_check(CheckResult::Failed, &policy));
        assert!(k.suspect());
        assert!(!k.report_check(CheckResult::Ok, &policy));
        assert!(!k.suspect() && k.state() == KeyState::Healthy);
        // The gateway's own check refused: revoked.
        k.report(KeyOutcome::Rejected, &policy);
        assert!(!k.report_check(CheckResult::Rejected, &policy));
        assert_eq!(k.state(), KeyState::Revoked);
        assert!(!k.suspect() && k.needs_check());
        assert_eq!(pool.pick(&[]), None);
        assert_eq!(pool.pick_any(&[]), Some(0));
        assert_eq!(
            pool.back_in(Duration::from_secs(9)),
            Some(Duration::from_secs(9))
        );
        assert_eq!(KeyPool::default().back_in(Duration::ZERO), None);
        assert!(k.report_check(CheckResult::Ok, &policy));
        assert!(pool.any_usable());
    }
}
