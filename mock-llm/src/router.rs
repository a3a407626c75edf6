//! Request entry point: reads the body, answers `/mock/*` control requests,
//! records statistics, applies provider pre-checks (auth, Azure
//! `api-version`), injected faults and delays, then dispatches to the
//! protocol module for the path's [`Dialect`].

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue, RETRY_AFTER};
use hyper::http::request::Parts;
use hyper::{Method, Request, Response, StatusCode, Version};
use serde_json::{json, Map, Value};

use crate::body::RespBody;
use crate::opts::MockOpts;
use crate::reply::{json_response, Ctx, Dialect};
use crate::state::{FaultRule, State};
use crate::util::{fnv1a64, query_param};
use crate::{anthropic, gemini, openai};

const MAX_BODY: usize = 64 * 1024 * 1024;
const ECHO_BODY_MAX: usize = 64 * 1024;

pub async fn handle(state: Arc<State>, req: Request<Incoming>) -> Response<RespBody> {
    let (parts, incoming) = req.into_parts();
    let body = match Limited::new(incoming, MAX_BODY).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) => {
            let (status, msg) = if e.downcast_ref::<LengthLimitError>().is_some() {
                (
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "request body exceeds 64 MiB".to_owned(),
                )
            } else {
                (
                    StatusCode::BAD_REQUEST,
                    format!("cannot read request body: {e}"),
                )
            };
            return Dialect::detect(parts.uri.path()).error(status, &msg, None);
        }
    };
    let fnv = fnv1a64(&body);
    let mut resp = route(&state, &parts, &body, fnv).await;
    let h = resp.headers_mut();
    h.insert(
        HeaderName::from_static("x-mock-body-len"),
        HeaderValue::from(body.len()),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("{fnv:016x}")) {
        h.insert(HeaderName::from_static("x-mock-body-fnv64"), v);
    }
    resp
}

/// The caller's credential: `Authorization: Bearer`, else `x-api-key`, else
/// `api-key`, else `x-goog-api-key`, else the `key` query parameter.
fn credential(parts: &Parts) -> Option<String> {
    let h = &parts.headers;
    let auth = h
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|s| {
            let (scheme, rest) = s.trim().split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| rest.trim().to_owned())
        });
    auth.or_else(|| {
        ["x-api-key", "api-key", "x-goog-api-key"]
            .iter()
            .find_map(|n| h.get(*n).and_then(|v| v.to_str().ok()))
            .map(|s| s.trim().to_owned())
    })
    .or_else(|| {
        query_param(parts.uri.query(), "key")
            .filter(|k| !k.is_empty())
            .map(str::to_owned)
    })
}

fn echo_value(parts: &Parts, body: &Bytes, fnv: u64) -> Value {
    let mut headers = Map::new();
    for (name, value) in &parts.headers {
        let v = String::from_utf8_lossy(value.as_bytes()).into_owned();
        match headers.get_mut(name.as_str()) {
            Some(Value::String(existing)) => {
                existing.push_str(", ");
                existing.push_str(&v);
            }
            _ => {
                headers.insert(name.as_str().to_owned(), Value::String(v));
            }
        }
    }
    let parsed = if body.len() < ECHO_BODY_MAX {
        serde_json::from_slice::<Value>(body).unwrap_or(Value::Null)
    } else {
        Value::Null
    };
    json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "version": format!("{:?}", parts.version),
        "headers": headers,
        "body_len": body.len(),
        "body_fnv64": format!("{fnv:016x}"),
        "body": parsed,
    })
}

/// Provider checks that precede faults: an `openai-organization` header (401,
/// as for a key outside that organization), Azure `api-version` (404 like
/// Azure), Anthropic and Gemini credentials.
fn preflight(ctx: &Ctx<'_>) -> Option<Response<RespBody>> {
    // Like OpenAI: an organization the key does not belong to is refused (any value here).
    if matches!(ctx.dialect, Dialect::OpenAi | Dialect::Azure)
        && ctx.parts.headers.contains_key("openai-organization")
    {
        return Some(ctx.error(
            StatusCode::UNAUTHORIZED,
            "OpenAI-Organization header should match organization for API key",
        ));
    }
    let (status, msg) = match ctx.dialect {
        Dialect::OpenAi => return None,
        Dialect::Azure => {
            if query_param(ctx.query(), "api-version").is_some_and(|v| !v.is_empty()) {
                return None;
            }
            let v = json!({ "error": { "code": "404", "message": "Resource not found" } });
            return Some(json_response(
                StatusCode::NOT_FOUND,
                v,
                ctx.echo.as_ref(),
                None,
            ));
        }
        Dialect::Anthropic => anthropic::preflight(&ctx.parts.headers)?,
        Dialect::Gemini => gemini::preflight(ctx)?,
    };
    Some(ctx.error(status, msg))
}

async fn route(state: &State, parts: &Parts, body: &Bytes, fnv: u64) -> Response<RespBody> {
    let path = parts.uri.path();
    if path.starts_with("/mock/") {
        return control(state, parts, body);
    }
    let cred = credential(parts);
    state.record(path, cred.as_deref());
    let dialect = Dialect::detect(path);

    let opts = match MockOpts::from_headers(&parts.headers) {
        Ok(o) => o,
        Err(msg) => return dialect.error(StatusCode::BAD_REQUEST, &msg, None),
    };
    // HTTP/2 writes DATA frames from the connection task; give it a moment
    // before the reset so the frames sent before a drop are delivered.
    let abort_grace = if parts.version == Version::HTTP_2 {
        Duration::from_millis(25)
    } else {
        Duration::ZERO
    };
    let ctx = Ctx {
        state,
        parts,
        body,
        echo: opts.echo.then(|| echo_value(parts, body, fnv)),
        opts,
        abort_grace,
        dialect,
    };

    if let Some(resp) = preflight(&ctx) {
        if ctx.opts.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(ctx.opts.delay_ms)).await;
        }
        return resp;
    }

    let mut delay_ms = ctx.opts.delay_ms;
    let mut fault: Option<(u16, Option<HeaderValue>)> = None;
    match ctx.opts.status.filter(|s| *s >= 300) {
        Some(status) => fault = Some((status, ctx.opts.retry_after.clone())),
        None => {
            if let Some(m) = state.take_fault(cred.as_deref()) {
                delay_ms = delay_ms.saturating_add(m.delay_ms);
                fault = m.status.map(|s| (s, m.retry_after));
            }
        }
    }
    if delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
    }
    if let Some((code, retry_after)) = fault {
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = ctx.error(status, &dialect.fault_message(code));
        if let Some(ra) = retry_after {
            resp.headers_mut().insert(RETRY_AFTER, ra);
        }
        return resp;
    }

    match dialect {
        Dialect::OpenAi | Dialect::Azure => openai::dispatch(&ctx),
        Dialect::Anthropic => anthropic::dispatch(&ctx),
        Dialect::Gemini => gemini::dispatch(&ctx),
    }
}

fn control(state: &State, parts: &Parts, body: &Bytes) -> Response<RespBody> {
    let ok = |v: Value| json_response(StatusCode::OK, v, None, None);
    let err = |status: StatusCode, msg: &str| Dialect::OpenAi.error(status, msg, None);
    match (&parts.method, parts.uri.path().trim_end_matches('/')) {
        (&Method::POST, "/mock/faults") => {
            let rules = match serde_json::from_slice::<Value>(body) {
                Ok(v @ Value::Array(_)) => serde_json::from_value::<Vec<FaultRule>>(v),
                Ok(v) => serde_json::from_value::<FaultRule>(v).map(|r| vec![r]),
                Err(e) => Err(e),
            };
            match rules {
                Ok(rules) if rules.iter().all(|r| (200..=599).contains(&r.status)) => {
                    state.add_faults(rules);
                    ok(json!({ "ok": true, "rules": state.faults_json() }))
                }
                Ok(_) => err(
                    StatusCode::BAD_REQUEST,
                    "fault status must be within 200..=599",
                ),
                Err(e) => err(StatusCode::BAD_REQUEST, &format!("invalid fault rule: {e}")),
            }
        }
        (&Method::GET, "/mock/faults") => ok(json!({ "rules": state.faults_json() })),
        (&Method::DELETE, "/mock/faults") => {
            state.clear_faults();
            ok(json!({ "ok": true }))
        }
        (&Method::GET, "/mock/stats") => ok(state.stats_json()),
        (&Method::DELETE, "/mock/stats") => {
            state.reset_stats();
            ok(json!({ "ok": true }))
        }
        (&Method::GET, "/mock/health") => {
            ok(json!({ "status": "ok", "instance": crate::state::instance_id() }))
        }
        _ => {
            let msg = format!("Invalid URL ({} {})", parts.method, parts.uri.path());
            err(StatusCode::NOT_FOUND, &msg)
        }
    }
}
