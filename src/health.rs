//! Key health policy: what an attempt's result means for its key, whether to retry it, and
//! the background service that health-checks keys out of rotation.
//!
//! Classification happens once per attempt, after it ends, on the client request's task;
//! the only shared state it touches is the key's atomics (`keys`). Active checks run in a
//! Pingora background service, one small chat request per key out of rotation (or suspect:
//! a client request was refused with it, see `keys`) per `check_interval`; other keys are
//! never checked and requests never wait for a check. The check request is built by the
//! gateway alone, so its answer says something about the key, never about a client.

use crate::config::SharedConfig;
use crate::keys::{CheckResult, HealthPolicy, KeyOutcome};
use crate::metrics::METRICS;
use crate::provider::Provider;
use crate::route::Endpoint;
use async_trait::async_trait;
use bytes::Bytes;
use pingora_core::connectors::http::Connector;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use pingora_http::RequestHeader;
use std::collections::HashMap;
use std::time::{Duration, Instant};

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
    pub fn parse(items: &[String]) -> Result<Self, String> {
        let mut set = FailureSet {
            connect: false,
            timeout: false,
            statuses: vec![],
        };
        for item in items {
            match item.as_str() {
                "connect" => set.connect = true,
                "timeout" => set.timeout = true,
                s if s.len() == 3 && s.ends_with("xx") => {
                    let class = s[..1]
                        .parse::<u16>()
                        .ok()
                        .filter(|c| (4..=5).contains(c))
                        .ok_or_else(|| format!("`{s}`: only 4xx and 5xx classes"))?;
                    set.statuses.push((class * 100, class * 100 + 99));
                }
                s => {
                    let code = s
                        .parse::<u16>()
                        .ok()
                        .filter(|c| (400..=599).contains(c))
                        .ok_or_else(|| {
                            format!("`{s}`: expected connect, timeout, a 4xx/5xx status or class")
                        })?;
                    set.statuses.push((code, code));
                }
            }
        }
        Ok(set)
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

/// Sends health checks for keys out of rotation.
pub struct Checker {
    pub config: SharedConfig,
    pub connector: Connector,
}

async fn check_key(connector: &Connector, provider: &Provider, key_index: usize) -> CheckResult {
    let Some(key) = provider.keys.get(key_index) else {
        return CheckResult::Failed;
    };
    let Some(peer) = provider.peer() else {
        return CheckResult::Failed;
    };
    let model = provider.health.check_model.as_str();
    let chat: Bytes = serde_json::to_vec(&serde_json::json!({
        "model": model,
        "messages": [{"role": "user", "content": "ping"}],
        "max_tokens": 1,
    }))
    .unwrap_or_default()
    .into();
    // The same request in the provider's own protocol.
    let Ok(parsed) = crate::body::RequestBody::parse(chat) else {
        return CheckResult::Failed;
    };
    let Ok(plan) =
        crate::proxy::plan::plan(&parsed, Endpoint::ChatCompletions, provider.family, model)
    else {
        return CheckResult::Failed;
    };
    let body = plan.body.apply(&parsed.bytes);
    let run = async {
        let mut req = RequestHeader::build("POST", b"/", None).ok()?;
        crate::provider::prepare_request(
            &mut req,
            provider,
            key,
            plan.upstream_endpoint,
            model,
            false,
        )
        .ok()?;
        req.insert_header(http::header::CONTENT_TYPE, "application/json")
            .ok()?;
        req.insert_header(http::header::CONTENT_LENGTH, body.len())
            .ok()?;
        let (mut session, _) = connector.get_http_session(&*peer).await.ok()?;
        session.write_request_header(Box::new(req)).await.ok()?;
        session.write_request_body(body.clone(), true).await.ok()?;
        session.finish_request_body().await.ok()?;
        session.read_response_header().await.ok()?;
        let status = session.response_header()?.status;
        Some(match status.as_u16() {
            200..=299 => CheckResult::Ok,
            401 | 403 => CheckResult::Rejected,
            _ => CheckResult::Failed,
        })
    };
    tokio::time::timeout(provider.health.check_timeout, run)
        .await
        .ok()
        .flatten()
        .unwrap_or(CheckResult::Failed)
}

#[async_trait]
impl BackgroundService for Checker {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut last_check: HashMap<(String, usize), Instant> = HashMap::new();
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
            let snapshot = self.config.load_full();
            let mut checks = Vec::new();
            for provider in snapshot.providers.iter() {
                for (i, key) in provider.keys.iter().enumerate() {
                    if !key.needs_check() {
                        last_check.remove(&(provider.name.clone(), i));
                        continue;
                    }
                    let id = (provider.name.clone(), i);
                    let due = last_check
                        .get(&id)
                        .is_none_or(|t| t.elapsed() >= provider.health.check_interval);
                    if due {
                        last_check.insert(id, Instant::now());
                        checks.push((provider.clone(), i));
                    }
                }
            }
            let runs = checks.iter().map(|(p, i)| async move {
                let result = check_key(&self.connector, p, *i).await;
                let (name, came_back) = match p.keys.get(*i) {
                    Some(k) => (k.name.as_str(), k.report_check(result, &p.health.policy)),
                    None => ("", false),
                };
                let outcome = match result {
                    CheckResult::Ok => "ok",
                    CheckResult::Rejected => "rejected",
                    CheckResult::Failed => "failed",
                };
                METRICS
                    .health_checks
                    .with_label_values(&[p.name.as_str(), name, outcome])
                    .inc();
                if came_back {
                    log::info!("provider {}: key {name} is back in rotation", p.name);
                }
            });
            futures_util::future::join_all(runs).await;
        }
    }
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
            failures: FailureSet::parse(&["503".into(), "timeout".into()]).unwrap(),
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
        assert!(FailureSet::parse(&["3xx".into()]).is_err());
        assert!(FailureSet::parse(&["bogus".into()]).is_err());
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
