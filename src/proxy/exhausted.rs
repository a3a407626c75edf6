//! The error a client gets when no attempt delivered: no usable key, or every attempt
//! failed (the last attempt's status and code, with a message listing them all).

use super::pipe::FailedAttempt;
use crate::error::{ErrorCode, GatewayError};
use crate::health::AttemptEnd;
use crate::route::Target;

/// Why no attempt could be made: keys never configured, or all out of rotation.
pub(super) fn no_key_error(order: &[&Target]) -> GatewayError {
    if let Some(t) = order
        .iter()
        .find(|t| t.provider.keys.is_empty())
        .filter(|_| order.iter().all(|t| t.provider.keys.is_empty()))
    {
        return GatewayError::ProviderKeyMissing {
            provider: t.provider.name.clone(),
            vars: t.provider.keys.missing_vars().join(", "),
        };
    }
    let names: Vec<String> = order
        .iter()
        .map(|t| format!("provider `{}`", t.provider.name))
        .collect();
    // The first key expected back: a rest that ends, or the health checks a key out of
    // rotation must pass (`success_threshold` checks, `check_interval` apart).
    let back = order
        .iter()
        .filter_map(|t| {
            let h = &t.provider.health;
            t.provider
                .keys
                .back_in(h.check_interval * h.policy.success_threshold.max(1))
        })
        .min()
        .unwrap_or_default();
    GatewayError::AllKeysUnavailable {
        targets: names.join(", "),
        retry_after: back.as_secs_f64().ceil().max(1.0) as u64,
    }
}

/// The provider's error message: a short excerpt, without any of the provider's keys.
fn provider_message(f: &FailedAttempt) -> String {
    #[derive(serde::Deserialize)]
    struct Body {
        error: Option<ErrorField>,
        message: Option<String>,
    }
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum ErrorField {
        Object { message: Option<String> },
        Text(String),
    }
    let parsed = serde_json::from_slice::<Body>(&f.body).ok();
    let text = parsed
        .and_then(|b| match b.error {
            Some(ErrorField::Object { message }) => message,
            Some(ErrorField::Text(t)) => Some(t),
            None => b.message,
        })
        .unwrap_or_else(|| String::from_utf8_lossy(&f.body).into_owned());
    crate::scrub::excerpt(&f.provider.keys.scrubber().scrub_text(text))
}

/// The error for a request whose every attempt failed: the last attempt's status and code,
/// and a message listing them all.
pub(super) fn exhausted(failures: &[FailedAttempt]) -> GatewayError {
    let Some(last) = failures.last() else {
        return GatewayError::Internal("no attempt was made".into());
    };
    let (status, code, last_text) = match (&last.error, last.end) {
        (Some(e), _) => (e.status(), e.error_code(), e.to_string()),
        (None, AttemptEnd::Status(s @ (401 | 403))) => (
            502,
            ErrorCode::UpstreamAuthError,
            format!(
                "provider `{}` rejected key `{}` ({s})",
                last.provider.name,
                last.key_name()
            ),
        ),
        (None, AttemptEnd::Status(s)) => (
            if s == 429 || s >= 500 { s } else { 502 },
            if s == 429 {
                ErrorCode::RateLimitExceeded
            } else {
                ErrorCode::UpstreamError
            },
            format!(
                "provider `{}` answered {s}: {}",
                last.provider.name,
                provider_message(last)
            ),
        ),
        (None, end) => (502, ErrorCode::UpstreamError, end.reason()),
    };
    if failures.len() == 1 {
        if let Some(e) = &last.error {
            return e.clone();
        }
    }
    let list: Vec<String> = failures
        .iter()
        .map(|f| format!("{}/{}: {}", f.provider.name, f.key_name(), f.end.reason()))
        .collect();
    GatewayError::Exhausted {
        status,
        code,
        message: format!(
            "All {} attempts failed ({}). Last error: {last_text}",
            failures.len(),
            list.join(", ")
        ),
        retry_after: last
            .retry_after
            .map(|d| d.as_secs_f64().ceil().max(1.0) as u64),
    }
}
