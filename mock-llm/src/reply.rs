//! Request context and response builders shared by the protocol modules:
//! provider-styled error bodies ([`Dialect`]), JSON responses (with echo and
//! `x-mock-drop-after` truncation) and streaming responses.

use std::time::Duration;

use bytes::Bytes;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::http::request::Parts;
use hyper::{Response, StatusCode};
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

use crate::body::{self, Msg, RespBody};
use crate::opts::MockOpts;
use crate::state::State;
use crate::stream::{self, Steps};
use crate::{anthropic, gemini, openai};

/// Which provider's conventions (error shape, auth) a path follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    OpenAi,
    /// `/openai/deployments/{deployment}/…`: OpenAI bodies, Azure routing.
    Azure,
    Anthropic,
    Gemini,
}

impl Dialect {
    pub fn detect(path: &str) -> Self {
        let p = path.trim_end_matches('/');
        if gemini::is_gemini_path(p) {
            Dialect::Gemini
        } else if p.ends_with("/messages") || p.ends_with("/messages/count_tokens") {
            Dialect::Anthropic
        } else if p.starts_with("/openai/deployments/") {
            Dialect::Azure
        } else {
            Dialect::OpenAi
        }
    }

    pub fn error_body(self, status: u16, message: &str) -> Value {
        match self {
            Dialect::OpenAi | Dialect::Azure => {
                let (kind, code) = openai::error_kind(status);
                json!({ "error": { "message": message, "type": kind, "param": null, "code": code } })
            }
            Dialect::Anthropic => json!({
                "type": "error",
                "error": { "type": anthropic::error_type(status), "message": message },
            }),
            Dialect::Gemini => json!({
                "error": { "code": status, "message": message, "status": gemini::error_status(status) },
            }),
        }
    }

    /// Message for an injected (`x-mock-status` / `/mock/faults`) error.
    pub fn fault_message(self, status: u16) -> String {
        match self {
            Dialect::OpenAi | Dialect::Azure => openai::default_error_message(status),
            Dialect::Anthropic | Dialect::Gemini => match status {
                401 => "Invalid API key (mock-llm injected fault).".into(),
                403 => "Permission denied (mock-llm injected fault).".into(),
                429 => "Rate limit exceeded (mock-llm injected fault).".into(),
                529 => "Overloaded (mock-llm injected fault).".into(),
                500..=599 => "Internal server error (mock-llm injected fault).".into(),
                s => format!("mock-llm injected fault with status {s}."),
            },
        }
    }

    pub fn error(
        self,
        status: StatusCode,
        message: &str,
        echo: Option<&Value>,
    ) -> Response<RespBody> {
        let v = self.error_body(status.as_u16(), message);
        json_response(status, v, echo, None)
    }
}

/// Everything a protocol handler needs about the request.
pub struct Ctx<'a> {
    pub state: &'a State,
    pub parts: &'a Parts,
    pub body: &'a Bytes,
    pub opts: MockOpts,
    pub echo: Option<Value>,
    /// Delay before an abort on HTTP/2 (see [`body::channel`]).
    pub abort_grace: Duration,
    pub dialect: Dialect,
}

impl Ctx<'_> {
    pub fn query(&self) -> Option<&str> {
        self.parts.uri.query()
    }

    /// Error in this path's provider style (with `mock_echo` if requested).
    pub fn error(&self, status: StatusCode, message: &str) -> Response<RespBody> {
        self.dialect.error(status, message, self.echo.as_ref())
    }

    /// 200 JSON response, truncated and aborted if `x-mock-drop-after` is set.
    pub fn json(&self, v: Value) -> Response<RespBody> {
        let drop = self.opts.drop_after.map(|k| (k, self.abort_grace));
        json_response(StatusCode::OK, v, self.echo.as_ref(), drop)
    }

    /// 200 response of JSON text with its characters U+0080..=U+00FF written as one byte each
    /// (Latin-1: not UTF-8 when it has any), for `x-mock-reply-latin1`.
    pub fn json_latin1(&self, v: Value) -> Response<RespBody> {
        let mut resp = Response::new(body::full(Bytes::from(latin1(&v.to_string()))));
        resp.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        resp
    }

    /// 200 JSON response that is never truncated (model lists).
    pub fn json_whole(&self, v: Value) -> Response<RespBody> {
        json_response(StatusCode::OK, v, self.echo.as_ref(), None)
    }

    /// The body as a JSON object, or the message for a 400.
    pub fn parse_object(&self) -> Result<Map<String, Value>, String> {
        match serde_json::from_slice::<Value>(self.body) {
            Ok(Value::Object(m)) => Ok(m),
            Ok(_) => Err("The request body must be a JSON object.".to_owned()),
            Err(e) => Err(format!(
                "We could not parse the JSON body of your request: {e}"
            )),
        }
    }

    /// Streams `steps` (already framed) as a 200 response.
    pub fn stream(&self, content_type: &'static str, steps: Steps) -> Response<RespBody> {
        let (tx, rx) = mpsc::channel(32);
        let chunk_delay = Duration::from_millis(self.opts.chunk_delay_ms);
        let drop_after = self.opts.drop_after;
        tokio::spawn(async move {
            if stream::run(steps, drop_after, chunk_delay, tx)
                .await
                .is_none()
            {
                crate::state::STREAMS_CANCELLED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        });
        let mut resp = Response::new(body::channel(rx, self.abort_grace));
        let h = resp.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        resp
    }
}

/// JSON response; with `drop = Some((k, grace))` the full Content-Length
/// is announced but the body is cut after at most min(k, len - 1) bytes
/// and aborted.
pub fn json_response(
    status: StatusCode,
    mut v: Value,
    echo: Option<&Value>,
    drop: Option<(u64, Duration)>,
) -> Response<RespBody> {
    if let (Some(e), Value::Object(m)) = (echo, &mut v) {
        m.insert("mock_echo".into(), e.clone());
    }
    let bytes = Bytes::from(v.to_string());
    let mut resp = match drop {
        None => Response::new(body::full(bytes)),
        Some((k, grace)) => {
            let len = bytes.len();
            let cut = usize::try_from(k)
                .unwrap_or(usize::MAX)
                .min(len.saturating_sub(1));
            let (tx, rx) = mpsc::channel(2);
            let _ = tx.try_send(Msg::Data(bytes.slice(..cut)));
            let _ = tx.try_send(Msg::Abort);
            let mut r = Response::new(body::channel(rx, grace));
            r.headers_mut()
                .insert(CONTENT_LENGTH, HeaderValue::from(len));
            r
        }
    };
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// `text` with its characters U+0080..=U+00FF as one byte each, the others in UTF-8.
fn latin1(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    for c in text.chars() {
        match u8::try_from(u32::from(c)) {
            Ok(b) => out.push(b),
            Err(_) => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latin1_writes_the_first_256_characters_as_bytes() {
        assert_eq!(latin1("café 世"), b"caf\xE9 \xE4\xB8\x96".to_vec());
        assert!(std::str::from_utf8(&latin1("é")).is_err());
    }

    #[test]
    fn detects_dialects() {
        assert_eq!(Dialect::detect("/v1/chat/completions"), Dialect::OpenAi);
        assert_eq!(Dialect::detect("/v1/messages"), Dialect::Anthropic);
        assert_eq!(
            Dialect::detect("/anthropic/v1/messages/"),
            Dialect::Anthropic
        );
        assert_eq!(
            Dialect::detect("/v1/messages/count_tokens"),
            Dialect::Anthropic
        );
        assert_eq!(
            Dialect::detect("/v1beta/models/gemini-2.0-flash:streamGenerateContent"),
            Dialect::Gemini
        );
        assert_eq!(Dialect::detect("/v1beta/models"), Dialect::Gemini);
        assert_eq!(
            Dialect::detect("/openai/deployments/gpt4/chat/completions"),
            Dialect::Azure
        );
    }

    #[test]
    fn error_shapes() {
        let a = Dialect::Anthropic.error_body(529, "busy");
        assert_eq!(a["type"], "error");
        assert_eq!(a["error"]["type"], "overloaded_error");
        let g = Dialect::Gemini.error_body(429, "slow down");
        assert_eq!(g["error"]["code"], 429);
        assert_eq!(g["error"]["status"], "RESOURCE_EXHAUSTED");
        let o = Dialect::OpenAi.error_body(503, "x");
        assert_eq!(o["error"]["type"], "server_error");
    }
}
