//! OpenTelemetry traces (`tracing:`): one SERVER span per proxied request and one CLIENT
//! span per upstream attempt, after the GenAI semantic conventions, exported over OTLP/HTTP.
//!
//! The request path only keeps ids and times: `RequestTrace::start` reads the client's W3C
//! `traceparent`/`tracestate` (the request span becomes a child of the caller's span) or
//! starts a trace, decides sampling, and each attempt gets its own span id, sent upstream as
//! the `traceparent` the gateway computed. When the request ends, `finish` hands one boxed
//! record to the export queue with `try_send` (`export`): the spans are built, batched and
//! sent by one thread of its own, never on Pingora's workers. When tracing is off no
//! `RequestTrace` exists: no header is read and nothing is allocated.
//!
//! Nothing of a prompt or an answer is recorded, and never a key: names from the config
//! (route, consumer, provider, key name), the models, numbers and the request id.

mod export;
mod spans;

pub use export::{dropped_spans, flush, queue_capacity};

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// `traceparent` and `tracestate` (W3C Trace Context).
pub const TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");
pub const TRACESTATE: http::HeaderName = http::HeaderName::from_static("tracestate");

/// Longest `tracestate` passed on (the W3C's 32 entries fit in 512 characters).
const MAX_TRACESTATE: usize = 512;

/// Where and how spans are exported; validated by `runtime`. Two configs with equal
/// `target`s share an exporter (a reload that changes it makes a new one).
#[derive(Clone)]
pub struct TraceConfig {
    pub target: ExportTarget,
    /// Share of new traces recorded (a caller's sampled flag decides for the others).
    pub sample_ratio: f64,
    /// Finished requests waiting for export; fixed when the export thread starts.
    pub queue: usize,
}

/// The collector and what each export carries.
#[derive(Clone, PartialEq)]
pub struct ExportTarget {
    /// The full URL (`…/v1/traces`).
    pub endpoint: String,
    /// Header names and expanded values.
    pub headers: Vec<(String, String)>,
    pub service_name: String,
    pub timeout: Duration,
}

impl std::fmt::Debug for TraceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Header values may be credentials: names only.
        let headers: Vec<&str> = self
            .target
            .headers
            .iter()
            .map(|(k, _)| k.as_str())
            .collect();
        f.debug_struct("TraceConfig")
            .field("endpoint", &self.target.endpoint)
            .field("headers", &headers)
            .field("service_name", &self.target.service_name)
            .field("sample_ratio", &self.sample_ratio)
            .field("queue", &self.queue)
            .finish()
    }
}

/// A parsed W3C `traceparent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parent {
    pub trace_id: u128,
    pub span_id: u64,
    pub sampled: bool,
}

fn hex<T: From<u8> + std::ops::Shl<u32, Output = T> + std::ops::BitOr<Output = T>>(
    s: &[u8],
) -> Option<T> {
    s.iter().try_fold(T::from(0), |acc, &c| {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => return None,
        };
        Some((acc << 4) | T::from(d))
    })
}

/// Parse a `traceparent` value: `00-<32 hex>-<16 hex>-<2 hex>` (lowercase). A later version
/// is read the same way when what follows is `-`-separated; version `ff`, all-zero ids and
/// anything else malformed give `None` (the request then starts a trace of its own).
pub fn parse_traceparent(value: &[u8]) -> Option<Parent> {
    if value.len() < 55 || value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
        return None;
    }
    let version: u8 = hex(&value[..2])?;
    if version == 0xff || (version == 0 && value.len() != 55) {
        return None;
    }
    if value.len() > 55 && value[55] != b'-' {
        return None;
    }
    let trace_id: u128 = hex(&value[3..35])?;
    let span_id: u64 = hex(&value[36..52])?;
    let flags: u8 = hex(&value[53..55])?;
    if trace_id == 0 || span_id == 0 {
        return None;
    }
    Some(Parent {
        trace_id,
        span_id,
        sampled: flags & 1 == 1,
    })
}

/// A `traceparent` value.
pub fn format_traceparent(trace_id: u128, span_id: u64, sampled: bool) -> String {
    format!(
        "00-{trace_id:032x}-{span_id:016x}-{:02x}",
        u8::from(sampled)
    )
}

/// A random non-zero id.
fn span_id() -> u64 {
    fastrand::u64(1..)
}

fn trace_id() -> u128 {
    fastrand::u128(1..)
}

/// Sampling of a new trace by its id, as the SDK's `TraceIdRatioBased`: the low 63 bits of
/// the id against `ratio` of their range, so every service with the same ratio agrees.
fn sample(trace_id: u128, ratio: f64) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    if ratio <= 0.0 {
        return false;
    }
    let bound = (ratio * (1u64 << 63) as f64) as u64;
    ((trace_id as u64) >> 1) < bound
}

/// One upstream attempt as its span shows it.
#[derive(Debug, Clone, Default)]
pub struct AttemptRecord {
    /// The provider's name in the config, its `type`, and its host.
    pub provider: String,
    pub provider_type: String,
    pub server_address: String,
    pub server_port: u16,
    /// The key's name in the config (never the key).
    pub key: String,
    /// The model asked of the provider (after mapping).
    pub model: String,
    /// The provider's status, if a response header came.
    pub status: Option<u16>,
    /// Why the attempt failed (`error.type`), if it did.
    pub error: Option<String>,
    /// Tokens, when this attempt answered the client.
    pub usage: Option<(u64, u64)>,
}

/// An attempt under way: its span id and when it started.
#[derive(Debug)]
pub struct AttemptSpan {
    span_id: u64,
    started: Instant,
}

#[derive(Debug)]
struct FinishedAttempt {
    span_id: u64,
    started: Instant,
    ended: Instant,
    record: AttemptRecord,
}

/// The request as the request span shows it (names and numbers only).
#[derive(Debug, Clone, Default)]
pub struct RequestRecord {
    /// `chat`, `text_completion` or `embeddings` (`gen_ai.operation.name`); `None` for a
    /// request that failed before its endpoint was known.
    pub operation: Option<&'static str>,
    /// The client's HTTP method.
    pub method: String,
    /// The model the client asked for, and the one asked of the provider.
    pub request_model: Option<String>,
    pub response_model: Option<String>,
    pub provider: Option<String>,
    pub provider_type: Option<String>,
    pub route: Option<String>,
    pub consumer: Option<String>,
    pub key: Option<String>,
    pub endpoint: Option<&'static str>,
    pub request_id: String,
    pub stream: bool,
    /// The status sent to the client (0: none).
    pub status: u16,
    /// The gateway's error code, if the request failed.
    pub error: Option<&'static str>,
    pub usage: Option<(u64, u64)>,
    pub usage_estimated: bool,
    pub attempts: u32,
}

/// A request's trace while it runs.
#[derive(Debug)]
pub struct RequestTrace {
    config: Arc<TraceConfig>,
    trace_id: u128,
    span_id: u64,
    /// The caller's span, from its `traceparent`.
    parent: Option<u64>,
    sampled: bool,
    /// The caller's `tracestate`, passed upstream as it came.
    tracestate: Option<http::HeaderValue>,
    /// The request's start on the wall clock and the monotonic one.
    started_wall: SystemTime,
    started: Instant,
    attempts: Vec<FinishedAttempt>,
}

impl RequestTrace {
    /// The trace of a request that arrived at `started` with `headers`.
    pub fn start(
        config: &Arc<TraceConfig>,
        headers: &http::HeaderMap,
        started: Instant,
    ) -> Box<RequestTrace> {
        let parent = headers
            .get(TRACEPARENT)
            .and_then(|v| parse_traceparent(v.as_bytes()));
        let tracestate = parent.and_then(|_| tracestate(headers));
        let trace_id = parent.map_or_else(trace_id, |p| p.trace_id);
        let sampled = match parent {
            Some(p) => p.sampled,
            None => sample(trace_id, config.sample_ratio),
        };
        let now = Instant::now();
        let started_wall = SystemTime::now()
            .checked_sub(now.saturating_duration_since(started))
            .unwrap_or_else(SystemTime::now);
        Box::new(RequestTrace {
            config: config.clone(),
            trace_id,
            span_id: span_id(),
            parent: parent.map(|p| p.span_id),
            sampled,
            tracestate,
            started_wall,
            started,
            attempts: Vec::new(),
        })
    }

    pub fn trace_id(&self) -> u128 {
        self.trace_id
    }

    pub fn sampled(&self) -> bool {
        self.sampled
    }

    /// A new attempt: its span, and the `traceparent` (and `tracestate`) for its request.
    pub fn begin_attempt(&self) -> (AttemptSpan, Propagate) {
        let span = AttemptSpan {
            span_id: span_id(),
            started: Instant::now(),
        };
        let traceparent = format_traceparent(self.trace_id, span.span_id, self.sampled);
        let propagate = Propagate {
            traceparent: http::HeaderValue::from_str(&traceparent).ok(),
            tracestate: self.tracestate.clone(),
        };
        (span, propagate)
    }

    /// The attempt ended now.
    pub fn end_attempt(&mut self, span: AttemptSpan, record: impl FnOnce() -> AttemptRecord) {
        if self.sampled {
            self.attempts.push(FinishedAttempt {
                span_id: span.span_id,
                started: span.started,
                ended: Instant::now(),
                record: record(),
            });
        }
    }

    /// The request ended now: queue its spans for export (if it is sampled).
    pub fn finish(self: Box<Self>, record: impl FnOnce() -> RequestRecord) {
        if !self.sampled {
            return;
        }
        let record = record();
        let ended = self.wall(Instant::now());
        export::send(Box::new(export::Finished {
            trace: self,
            record,
            ended,
        }));
    }

    /// The wall-clock time of `t`.
    fn wall(&self, t: Instant) -> SystemTime {
        self.started_wall + t.saturating_duration_since(self.started)
    }
}

/// What an attempt's upstream request carries of the trace.
#[derive(Debug, Clone, Default)]
pub struct Propagate {
    pub traceparent: Option<http::HeaderValue>,
    pub tracestate: Option<http::HeaderValue>,
}

/// The client's `tracestate` (several header lines joined), if it is short enough to pass on.
fn tracestate(headers: &http::HeaderMap) -> Option<http::HeaderValue> {
    let mut values = headers.get_all(TRACESTATE).iter();
    let first = values.next()?;
    let mut joined: Vec<u8> = first.as_bytes().to_vec();
    for v in values {
        joined.push(b',');
        joined.extend_from_slice(v.as_bytes());
    }
    if joined.len() > MAX_TRACESTATE {
        return None;
    }
    http::HeaderValue::from_bytes(&joined).ok()
}

/// `gen_ai.operation.name` of an endpoint, by its access-log word (`None`: not a model call).
pub fn operation(endpoint: &str) -> Option<&'static str> {
    match endpoint {
        "chat" | "messages" | "responses" => Some("chat"),
        "completions" => Some("text_completion"),
        "embeddings" => Some("embeddings"),
        "images" | "image_edits" | "image_variations" => Some("image_generation"),
        "speech" => Some("speech"),
        "transcriptions" | "translations" => Some("transcription"),
        "rerank" => Some("rerank"),
        "moderations" => Some("moderation"),
        _ => None,
    }
}

/// `gen_ai.provider.name` for a provider `type`: the conventions' well-known value where
/// there is one, the type as written otherwise.
pub fn genai_provider(kind: &str) -> &str {
    match kind {
        "azure" => "azure.ai.openai",
        "gemini" => "gcp.gemini",
        "mistral" => "mistral_ai",
        "xai" => "x_ai",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trips_and_bad_ones_are_refused() {
        let v = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let p = parse_traceparent(v.as_bytes()).unwrap();
        assert_eq!(p.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(p.span_id, 0x00f067aa0ba902b7);
        assert!(p.sampled);
        assert_eq!(format_traceparent(p.trace_id, p.span_id, true), v);
        let unsampled = parse_traceparent(&v.replace("-01", "-00").into_bytes()).unwrap();
        assert!(!unsampled.sampled);
        // A later version with more fields is read; version 00 with more is not.
        let later = format!("{}-what-comes", v.replacen("00", "01", 1));
        assert!(parse_traceparent(later.as_bytes()).is_some());
        for bad in [
            format!("{v}-x"),
            v.replacen("00", "ff", 1),
            v.to_uppercase(),
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01".into(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01".into(),
            v[..54].to_string(),
            v.replace('-', "_"),
            String::new(),
        ] {
            assert!(parse_traceparent(bad.as_bytes()).is_none(), "{bad}");
        }
    }

    #[test]
    fn sampling_follows_the_ratio() {
        assert!(sample(1, 1.0));
        assert!(!sample(u128::MAX, 0.0));
        let n = 20_000;
        let kept = (0..n).filter(|_| sample(trace_id(), 0.25)).count();
        assert!((4_000..6_000).contains(&kept), "{kept}");
    }

    fn config(ratio: f64) -> Arc<TraceConfig> {
        Arc::new(TraceConfig {
            target: ExportTarget {
                endpoint: "http://127.0.0.1:1/v1/traces".into(),
                headers: vec![("authorization".into(), "Bearer secret".into())],
                service_name: "tollgate".into(),
                timeout: Duration::from_secs(1),
            },
            sample_ratio: ratio,
            queue: 8,
        })
    }

    #[test]
    fn a_callers_traceparent_is_the_parent_and_attempts_get_their_own_span() {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            TRACEPARENT,
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .unwrap(),
        );
        headers.append(TRACESTATE, "a=1".parse().unwrap());
        headers.append(TRACESTATE, "b=2".parse().unwrap());
        // The caller's flag wins over the ratio.
        let t = RequestTrace::start(&config(0.0), &headers, Instant::now());
        assert!(t.sampled());
        assert_eq!(t.trace_id(), 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(t.parent, Some(0x00f067aa0ba902b7));
        let (span, propagate) = t.begin_attempt();
        let sent = propagate.traceparent.unwrap();
        let p = parse_traceparent(sent.as_bytes()).unwrap();
        assert_eq!(p.trace_id, t.trace_id());
        assert_eq!(p.span_id, span.span_id);
        assert_ne!(p.span_id, t.span_id);
        assert_eq!(propagate.tracestate.unwrap(), "a=1,b=2");
        // Without one: a new trace, no tracestate, the ratio decides.
        let t = RequestTrace::start(&config(0.0), &http::HeaderMap::new(), Instant::now());
        assert!(!t.sampled());
        let (_, propagate) = t.begin_attempt();
        assert!(propagate.tracestate.is_none());
        assert!(propagate
            .traceparent
            .unwrap()
            .to_str()
            .unwrap()
            .ends_with("-00"));
        // A malformed traceparent starts a new trace and its tracestate is ignored.
        headers.insert(TRACEPARENT, "00-zz".parse().unwrap());
        let t = RequestTrace::start(&config(1.0), &headers, Instant::now());
        assert!(t.parent.is_none() && t.tracestate.is_none() && t.sampled());
    }

    #[test]
    fn debug_never_shows_header_values() {
        let shown = format!("{:?}", config(1.0));
        assert!(
            shown.contains("authorization") && !shown.contains("secret"),
            "{shown}"
        );
    }
}
