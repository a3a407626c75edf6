//! A finished request's spans, built on the export thread.
//!
//! The request span is a SERVER span: the gateway serves the client's call. Each upstream
//! attempt is a CLIENT span, its child: the GenAI conventions' inference span ("a client call
//! to a Generative AI model or service", kind CLIENT), one per provider call, so retries and
//! fallbacks show as siblings. Both are named `{gen_ai.operation.name} {model}`: the model the
//! client asked for on the request span, the model asked of the provider on an attempt.
//! Attributes follow the GenAI conventions (v1.37+, where `gen_ai.provider.name` replaced
//! `gen_ai.system`), HTTP's `http.response.status_code` and `error.type`, and the gateway's
//! own `tollgate.*`. No prompt, answer or key is ever among them.

use super::{FinishedAttempt, RequestRecord, RequestTrace};
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};
use std::borrow::Cow;
use std::time::SystemTime;

pub fn scope() -> InstrumentationScope {
    InstrumentationScope::builder("tollgate")
        .with_version(env!("CARGO_PKG_VERSION"))
        .build()
}

fn context(trace: &RequestTrace, span_id: u64) -> SpanContext {
    SpanContext::new(
        TraceId::from(trace.trace_id),
        SpanId::from(span_id),
        TraceFlags::SAMPLED,
        false,
        TraceState::NONE,
    )
}

/// `{gen_ai.operation.name} {model}`; the HTTP method alone when the operation is unknown.
fn name(operation: Option<&str>, model: Option<&str>, method: &str) -> Cow<'static, str> {
    match (operation, model) {
        (Some(op), Some(m)) if !m.is_empty() => format!("{op} {}", cut(m)).into(),
        (Some(op), _) => Cow::Owned(op.to_string()),
        (None, _) => Cow::Owned(method.to_string()),
    }
}

fn status(error: Option<&str>) -> Status {
    match error {
        Some(e) => Status::Error {
            description: e.to_string().into(),
        },
        None => Status::Unset,
    }
}

/// Longest attribute value kept (a model name comes from the client).
const MAX_VALUE: usize = 256;

fn cut(v: &str) -> &str {
    if v.len() <= MAX_VALUE {
        return v;
    }
    let mut end = MAX_VALUE;
    while !v.is_char_boundary(end) {
        end -= 1;
    }
    &v[..end]
}

fn text(attrs: &mut Vec<KeyValue>, key: &'static str, value: Option<&str>) {
    if let Some(v) = value.filter(|v| !v.is_empty()) {
        attrs.push(KeyValue::new(key, cut(v).to_string()));
    }
}

fn int(attrs: &mut Vec<KeyValue>, key: &'static str, value: u64) {
    attrs.push(KeyValue::new(key, i64::try_from(value).unwrap_or(i64::MAX)));
}

fn usage(attrs: &mut Vec<KeyValue>, usage: Option<(u64, u64)>) {
    if let Some((input, output)) = usage {
        int(attrs, "gen_ai.usage.input_tokens", input);
        int(attrs, "gen_ai.usage.output_tokens", output);
    }
}

/// The request span and its attempts' spans.
pub fn build(trace: &RequestTrace, r: &RequestRecord, ended: SystemTime, out: &mut Vec<SpanData>) {
    let scope = scope();
    let mut attrs = Vec::with_capacity(20);
    text(&mut attrs, "gen_ai.operation.name", r.operation);
    text(
        &mut attrs,
        "gen_ai.provider.name",
        r.provider_type.as_deref(),
    );
    text(
        &mut attrs,
        "gen_ai.request.model",
        r.request_model.as_deref(),
    );
    text(
        &mut attrs,
        "gen_ai.response.model",
        r.response_model.as_deref(),
    );
    attrs.push(KeyValue::new("gen_ai.request.stream", r.stream));
    usage(&mut attrs, r.usage);
    text(&mut attrs, "http.request.method", Some(&r.method));
    if r.status != 0 {
        attrs.push(KeyValue::new(
            "http.response.status_code",
            i64::from(r.status),
        ));
    }
    // A server span's error: the gateway's error code, or a 5xx sent without one.
    let error = r
        .error
        .map(str::to_string)
        .or_else(|| (r.status >= 500).then(|| r.status.to_string()));
    text(&mut attrs, "error.type", error.as_deref());
    text(&mut attrs, "tollgate.request_id", Some(&r.request_id));
    text(&mut attrs, "tollgate.route", r.route.as_deref());
    text(&mut attrs, "tollgate.endpoint", r.endpoint);
    text(&mut attrs, "tollgate.consumer", r.consumer.as_deref());
    text(&mut attrs, "tollgate.provider", r.provider.as_deref());
    text(&mut attrs, "tollgate.key", r.key.as_deref());
    int(&mut attrs, "tollgate.attempts", u64::from(r.attempts));
    if r.usage.is_some() {
        attrs.push(KeyValue::new("tollgate.usage_estimated", r.usage_estimated));
    }
    let parent = trace.parent.unwrap_or(0);
    out.push(SpanData {
        span_context: context(trace, trace.span_id),
        parent_span_id: SpanId::from(parent),
        parent_span_is_remote: trace.parent.is_some(),
        span_kind: SpanKind::Server,
        name: name(r.operation, r.request_model.as_deref(), &r.method),
        start_time: trace.started_wall,
        end_time: ended,
        attributes: attrs,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: status(error.as_deref()),
        instrumentation_scope: scope.clone(),
    });
    for a in &trace.attempts {
        out.push(attempt(trace, r, a, &scope));
    }
}

fn attempt(
    trace: &RequestTrace,
    r: &RequestRecord,
    a: &FinishedAttempt,
    scope: &InstrumentationScope,
) -> SpanData {
    let rec = &a.record;
    let mut attrs = Vec::with_capacity(14);
    text(&mut attrs, "gen_ai.operation.name", r.operation);
    text(&mut attrs, "gen_ai.provider.name", Some(&rec.provider_type));
    text(&mut attrs, "gen_ai.request.model", Some(&rec.model));
    attrs.push(KeyValue::new("gen_ai.request.stream", r.stream));
    usage(&mut attrs, rec.usage);
    text(&mut attrs, "server.address", Some(&rec.server_address));
    if rec.server_port != 0 {
        attrs.push(KeyValue::new("server.port", i64::from(rec.server_port)));
    }
    if let Some(s) = rec.status {
        attrs.push(KeyValue::new("http.response.status_code", i64::from(s)));
    }
    text(&mut attrs, "error.type", rec.error.as_deref());
    text(&mut attrs, "tollgate.provider", Some(&rec.provider));
    text(&mut attrs, "tollgate.key", Some(&rec.key));
    SpanData {
        span_context: context(trace, a.span_id),
        parent_span_id: SpanId::from(trace.span_id),
        parent_span_is_remote: false,
        span_kind: SpanKind::Client,
        name: name(r.operation, Some(&rec.model), &r.method),
        start_time: trace.wall(a.started),
        end_time: trace.wall(a.ended),
        attributes: attrs,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: status(rec.error.as_deref()),
        instrumentation_scope: scope.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_values_are_cut_on_a_character_boundary() {
        let long = "é".repeat(200);
        let c = cut(&long);
        assert!(c.len() <= MAX_VALUE && c.chars().all(|ch| ch == 'é'));
        assert_eq!(cut("gpt-4o"), "gpt-4o");
        assert_eq!(name(Some("chat"), Some(&long), "POST").len(), 5 + c.len());
        assert_eq!(name(None, None, "POST"), "POST");
    }
}
