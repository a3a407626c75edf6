//! The `tracing:` section validated into the exporter's settings (`otel::TraceConfig`).

use super::env::expand;
use super::ConfigError;
use crate::otel::{ExportTarget, TraceConfig};
use crate::settings::TracingSection;
use std::sync::Arc;
use std::time::Duration;

pub const DEFAULT_QUEUE: usize = 2048;
pub const MAX_QUEUE: usize = 1_000_000;
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// `None` when tracing is off (no section).
pub fn build(section: Option<&TracingSection>) -> Result<Option<Arc<TraceConfig>>, ConfigError> {
    let Some(t) = section else { return Ok(None) };
    let field = |name: &str| format!("tracing.{name}");
    let endpoint =
        endpoint(&t.otlp_endpoint).map_err(|e| ConfigError::field(field("otlp_endpoint"), e))?;
    let ratio = t.sample_ratio.unwrap_or(1.0);
    if !(0.0..=1.0).contains(&ratio) {
        return Err(ConfigError::field(
            field("sample_ratio"),
            "must be between 0.0 and 1.0",
        ));
    }
    let queue = t.queue.unwrap_or(DEFAULT_QUEUE);
    if queue == 0 || queue > MAX_QUEUE {
        return Err(ConfigError::field(
            field("queue"),
            format!("must be between 1 and {MAX_QUEUE}"),
        ));
    }
    let timeout = t.timeout.map_or(DEFAULT_TIMEOUT, Duration::from);
    if timeout.is_zero() {
        return Err(ConfigError::field(
            field("timeout"),
            "must be longer than 0",
        ));
    }
    let service_name = t.service_name.clone().unwrap_or_else(|| "tollgate".into());
    if service_name.trim().is_empty() {
        return Err(ConfigError::field(
            field("service_name"),
            "must not be empty",
        ));
    }
    let mut headers = Vec::with_capacity(t.headers.len());
    for (name, value) in &t.headers {
        let f = field(&format!("headers.{name}"));
        let lower = name.to_ascii_lowercase();
        if http::HeaderName::from_bytes(lower.as_bytes()).is_err() {
            return Err(ConfigError::field(f, "not a header name"));
        }
        if matches!(
            lower.as_str(),
            "content-type" | "content-length" | "host" | "content-encoding"
        ) {
            return Err(ConfigError::field(f, "set by the exporter itself"));
        }
        let value = expand(value.as_written()).map_err(|e| ConfigError::field(&f, e))?;
        if http::HeaderValue::from_str(&value).is_err() {
            return Err(ConfigError::field(f, "not a valid header value"));
        }
        headers.push((lower, value));
    }
    Ok(Some(Arc::new(TraceConfig {
        target: ExportTarget {
            endpoint,
            headers,
            service_name,
            timeout,
        },
        sample_ratio: ratio,
        queue,
    })))
}

/// The full OTLP/HTTP traces URL: `/v1/traces` appended to a base URL.
fn endpoint(text: &str) -> Result<String, String> {
    let expanded = expand(text)?;
    let uri: http::Uri = expanded
        .parse()
        .map_err(|e| format!("`{text}` is not a URL: {e}"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
        return Err(format!(
            "`{text}`: an http:// or https:// URL with a host is needed"
        ));
    }
    if uri.query().is_some() {
        return Err(format!("`{text}`: no query string"));
    }
    let base = expanded.trim_end_matches('/');
    if base.ends_with("/v1/traces") {
        Ok(base.to_string())
    } else {
        Ok(format!("{base}/v1/traces"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(yaml: &str) -> TracingSection {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn defaults_and_the_endpoint_path() {
        let c = build(Some(&section("otlp_endpoint: http://127.0.0.1:4318")))
            .unwrap()
            .unwrap();
        assert_eq!(c.target.endpoint, "http://127.0.0.1:4318/v1/traces");
        assert_eq!(c.target.service_name, "tollgate");
        assert_eq!((c.sample_ratio, c.queue), (1.0, DEFAULT_QUEUE));
        assert_eq!(c.target.timeout, DEFAULT_TIMEOUT);
        for (given, url) in [
            ("http://h:4318/", "http://h:4318/v1/traces"),
            ("https://h/otlp", "https://h/otlp/v1/traces"),
            ("http://h:4318/v1/traces", "http://h:4318/v1/traces"),
        ] {
            assert_eq!(endpoint(given).unwrap(), url);
        }
        assert!(build(None).unwrap().is_none());
    }

    #[test]
    fn errors_name_the_field() {
        for (yaml, f) in [
            ("otlp_endpoint: ftp://h", "tracing.otlp_endpoint"),
            ("otlp_endpoint: not a url", "tracing.otlp_endpoint"),
            (
                "{otlp_endpoint: 'http://h', sample_ratio: 1.5}",
                "tracing.sample_ratio",
            ),
            (
                "{otlp_endpoint: 'http://h', sample_ratio: -0.1}",
                "tracing.sample_ratio",
            ),
            ("{otlp_endpoint: 'http://h', queue: 0}", "tracing.queue"),
            (
                "{otlp_endpoint: 'http://h', timeout: 0s}",
                "tracing.timeout",
            ),
            (
                "{otlp_endpoint: 'http://h', service_name: ''}",
                "tracing.service_name",
            ),
            (
                "{otlp_endpoint: 'http://h', headers: {'bad name': x}}",
                "tracing.headers.bad name",
            ),
            (
                "{otlp_endpoint: 'http://h', headers: {host: x}}",
                "tracing.headers.host",
            ),
            (
                "{otlp_endpoint: 'http://h', headers: {x-token: '${TOLLGATE_TEST_SURELY_UNSET}'}}",
                "tracing.headers.x-token",
            ),
        ] {
            let e = build(Some(&section(yaml))).unwrap_err().to_string();
            assert!(e.contains(&format!("`{f}`")), "{yaml}: {e}");
        }
    }
}
