//! Shared server state: response id counter, stateful fault rules
//! (`/mock/faults`) and request statistics (`/mock/stats`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use hyper::header::HeaderValue;
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default = "default_status")]
    pub status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
}

fn default_status() -> u16 {
    500
}

pub struct MatchedFault {
    /// `Some` when the rule's status is an error (>= 300).
    pub status: Option<u16>,
    pub retry_after: Option<HeaderValue>,
    pub delay_ms: u64,
}

#[derive(Default, Serialize)]
pub struct Stats {
    pub requests_total: u64,
    pub by_key: BTreeMap<String, u64>,
    pub by_path: BTreeMap<String, u64>,
    /// Streams stopped early because the client went away.
    pub streams_cancelled: u64,
}

/// Streams stopped early because the client went away (read into `Stats` when asked:
/// stream tasks are spawned and hold no reference to the state).
pub static STREAMS_CANCELLED: AtomicU64 = AtomicU64::new(0);

#[derive(Default)]
pub struct State {
    counter: AtomicU64,
    faults: Mutex<Vec<FaultRule>>,
    stats: Mutex<Stats>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl State {
    pub fn next_id(&self) -> u64 {
        self.counter.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub fn record(&self, path: &str, cred: Option<&str>) {
        let mut s = lock(&self.stats);
        s.requests_total += 1;
        *s.by_path.entry(path.to_owned()).or_insert(0) += 1;
        if let Some(c) = cred {
            *s.by_key.entry(c.to_owned()).or_insert(0) += 1;
        }
    }

    pub fn stats_json(&self) -> Value {
        let mut s = lock(&self.stats);
        s.streams_cancelled = STREAMS_CANCELLED.load(Ordering::Relaxed);
        serde_json::to_value(&*s).unwrap_or(Value::Null)
    }

    pub fn reset_stats(&self) {
        *lock(&self.stats) = Stats::default();
        STREAMS_CANCELLED.store(0, Ordering::Relaxed);
    }

    pub fn add_faults(&self, rules: Vec<FaultRule>) {
        lock(&self.faults).extend(rules);
    }

    pub fn clear_faults(&self) {
        lock(&self.faults).clear();
    }

    pub fn faults_json(&self) -> Value {
        serde_json::to_value(&*lock(&self.faults)).unwrap_or(Value::Null)
    }

    /// Finds the first rule matching `cred`, consumes one use of it and
    /// removes it once exhausted.
    pub fn take_fault(&self, cred: Option<&str>) -> Option<MatchedFault> {
        let mut rules = lock(&self.faults);
        let idx = rules
            .iter()
            .position(|r| r.count != Some(0) && r.key.as_deref().is_none_or(|k| Some(k) == cred))?;
        let rule = rules.get_mut(idx)?;
        if let Some(c) = rule.count.as_mut() {
            *c = c.saturating_sub(1);
        }
        let retry_after = match &rule.retry_after {
            Some(Value::String(s)) => HeaderValue::from_str(s).ok(),
            Some(Value::Number(n)) => HeaderValue::from_str(&n.to_string()).ok(),
            _ => None,
        };
        let matched = MatchedFault {
            status: (rule.status >= 300).then_some(rule.status),
            retry_after,
            delay_ms: rule.delay_ms.unwrap_or(0),
        };
        if rule.count == Some(0) {
            rules.remove(idx);
        }
        Some(matched)
    }
}

/// This process's identity (random, fixed for its life): printed at start
/// (`mock-llm instance ID`) and returned by `GET /mock/health`, so a client can tell that
/// the process it started is the one answering.
pub fn instance_id() -> &'static str {
    use std::hash::{BuildHasher, Hasher};
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        format!("{:016x}", h.finish())
    })
}
