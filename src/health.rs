//! Key health policy: what an attempt's result means for its key, and whether to retry it.
//! The active checks of keys out of rotation are a background service
//! (`crate::background::checks`).
//!
//! Classification happens once per attempt, after it ends, on the client request's task;
//! the only shared state it touches is the key's atomics (`keys`).

use crate::keys::{HealthPolicy, KeyOutcome};
use crate::settings::HealthFailure;
use std::time::Duration;

/// Which outcomes count toward a key's failure threshold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureSet {
    pub connect: bool,
    pub timeout: bool,
    /// Inclusive status ranges.
    pub statuses: Vec<(u16, u16)>,
}

impl Default for FailureSet {
    fn default() -> Self {
        FailureSet {
            connect: true,
            timeout: true,
            statuses: vec![(429, 429), (500, 599)],
        }
    }
}

impl FailureSet {
    /// The set `health.failures` lists (checked when the settings were read).
    pub fn from_settings(items: &[HealthFailure]) -> Self {
        let mut set = FailureSet {
            connect: false,
            timeout: false,
            statuses: vec![],
        };
        for item in items {
            match *item {
                HealthFailure::Connect => set.connect = true,
                HealthFailure::Timeout => set.timeout = true,
                HealthFailure::Class(class) => {
                    set.statuses.push((class * 100, class * 100 + 99));
                }
                HealthFailure::Status(code) => set.statuses.push((code, code)),
            }
        }
        set
    }

    fn status_counts(&self, status: u16) -> bool {
        self.statuses
            .iter()
            .any(|(lo, hi)| (*lo..=*hi).contains(&status))
    }
}

#[derive(Debug, Clone)]
pub struct HealthSettings {
    pub policy: HealthPolicy,
    pub check_interval: Duration,
    pub check_timeout: Duration,
    pub check_model: String,
    pub failures: FailureSet,
}

impl Default for HealthSettings {
    fn default() -> Self {
        HealthSettings {
            policy: HealthPolicy::default(),
            check_interval: Duration::from_secs(5),
            check_timeout: Duration::from_secs(5),
            check_model: "health-check".into(),
            failures: FailureSet::default(),
        }
    }
}

/// How an attempt ended, before any judgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptEnd {
    /// The provider answered with this status (its body may still have failed later).
    Status(u16),
    Connect,
    Timeout,
    /// Any other transport failure before a response header.
    Broken,
}

impl AttemptEnd {
    /// A short label for metrics and summaries.
    pub fn reason(self) -> String {
        match self {
            AttemptEnd::Status(401 | 403) => "rejected".into(),
            AttemptEnd::Status(429) => "rate_limited".into(),
            AttemptEnd::Status(s) if s >= 500 => "status_5xx".into(),
            AttemptEnd::Status(s) => format!("status_{s}"),
            AttemptEnd::Connect => "connect".into(),
            AttemptEnd::Timeout => "timeout".into(),
            AttemptEnd::Broken => "broken".into(),
        }
    }

    /// Worth another key or target, when nothing has reached the client yet.
    pub fn retryable(self) -> bool {
        match self {
            AttemptEnd::Status(s) => matches!(s, 401 | 403 | 429) || s >= 500,
            _ => true,
        }
    }
}

/// What `end` means for the key that was used.
pub fn classify(
    end: AttemptEnd,
    retry_after: Option<Duration>,
    settings: &HealthSettings,
) -> KeyOutcome {
    let f = &settings.failures;
    match end {
        AttemptEnd::Status(s) if (200..400).contains(&s) => KeyOutcome::Success,
        AttemptEnd::Status(401 | 403) => KeyOutcome::Rejected,
        AttemptEnd::Status(429) if retry_after.is_some() => {
            KeyOutcome::RateLimited(retry_after.unwrap_or_default())
        }
        AttemptEnd::Status(s) if f.status_counts(s) => KeyOutcome::Failure,
        AttemptEnd::Status(_) => KeyOutcome::Neutral,
        AttemptEnd::Connect | AttemptEnd::Broken if f.connect => KeyOutcome::Failure,
        AttemptEnd::Timeout if f.timeout => KeyOutcome::Failure,
        _ => KeyOutcome::Neutral,
    }
}

/// `Retry-After` (seconds or an HTTP date) or OpenAI's `x-ratelimit-reset-*` (`6m0s`).
pub fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    if let Some(v) = headers
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
    {
        let v = v.trim();
        if let Ok(secs) = v.parse::<u64>() {
            return Some(Duration::from_secs(secs));
        }
        if let Ok(secs) = v.parse::<f64>() {
            return Duration::try_from_secs_f64(secs).ok();
        }
        // An HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`) is the usual `Retry-After` form.
        if let Some(at) = humantime::parse_rfc3339_weak(v)
            .ok()
            .or_else(|| httpdate::parse_http_date(v).ok())
        {
            return Some(
                at.duration_since(std::time::SystemTime::now())
                    .unwrap_or_default(),
            );
        }
    }
    ["x-ratelimit-reset-requests", "x-ratelimit-reset-tokens"]
        .iter()
        .filter_map(|h| headers.get(*h)?.to_str().ok())
        .filter_map(|v| humantime::parse_duration(v.trim()).ok())
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_sets_and_classification() {
        let s = HealthSettings::default();
        assert_eq!(
            classify(AttemptEnd::Status(200), None, &s),
            KeyOutcome::Success
        );
        assert_eq!(
            classify(AttemptEnd::Status(401), None, &s),
            KeyOutcome::Rejected
        );
        assert_eq!(
            classify(AttemptEnd::Status(429), None, &s),
            KeyOutcome::Failure
        );
        assert_eq!(
            classify(AttemptEnd::Status(429), Some(Duration::from_secs(2)), &s),
            KeyOutcome::RateLimited(Duration::from_secs(2))
        );
        assert_eq!(
            classify(AttemptEnd::Status(503), None, &s),
            KeyOutcome::Failure
        );
        assert_eq!(
            classify(AttemptEnd::Status(400), None, &s),
            KeyOutcome::Neutral
        );
        assert_eq!(classify(AttemptEnd::Connect, None, &s), KeyOutcome::Failure);
        let narrow = HealthSettings {
            failures: FailureSet::from_settings(&[
                HealthFailure::Status(503),
                HealthFailure::Timeout,
            ]),
            ..Default::default()
        };
        assert_eq!(
            classify(AttemptEnd::Status(500), None, &narrow),
            KeyOutcome::Neutral
        );
        assert_eq!(
            classify(AttemptEnd::Status(503), None, &narrow),
            KeyOutcome::Failure
        );
        assert_eq!(
            classify(AttemptEnd::Connect, None, &narrow),
            KeyOutcome::Neutral
        );
        assert!("3xx".parse::<HealthFailure>().is_err());
        assert!("bogus".parse::<HealthFailure>().is_err());
        assert!(AttemptEnd::Status(500).retryable() && !AttemptEnd::Status(400).retryable());
    }

    #[test]
    fn retry_after_forms() {
        let mut h = http::HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert("x-ratelimit-reset-requests", "6m0s".parse().unwrap());
        h.insert("x-ratelimit-reset-tokens", "1s".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(360)));
        h.insert("retry-after", "2".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        let future = std::time::SystemTime::now() + Duration::from_secs(100);
        let date = humantime::format_rfc3339_seconds(future).to_string();
        // RFC 3339 is not the HTTP form but some servers send it; both are accepted.
        h.insert("retry-after", date.parse().unwrap());
        let d = retry_after(&h).unwrap();
        assert!(
            d > Duration::from_secs(90) && d <= Duration::from_secs(100),
            "{d:?}"
        );
        h.insert(
            "retry-after",
            "Sun, 06 Nov 1994 08:49:37 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
    }
}
