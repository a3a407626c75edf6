//! Mock behaviour requested through `x-mock-*` request headers (parsed once
//! per request, shared by every protocol).

use hyper::header::{HeaderMap, HeaderValue};

pub const DEFAULT_CHUNKS: u64 = 8;
pub const MAX_CHUNKS: u64 = 1_000_000;

#[derive(Debug, Default)]
pub struct MockOpts {
    pub status: Option<u16>,
    pub retry_after: Option<HeaderValue>,
    pub delay_ms: u64,
    pub chunks: u64,
    pub chunk_delay_ms: u64,
    pub drop_after: Option<u64>,
    pub cached_tokens: Option<u64>,
    pub reasoning_tokens: Option<u64>,
    pub no_usage: bool,
    /// `Some` when `x-mock-crlf` was sent; each protocol has its own default.
    pub crlf: Option<bool>,
    pub echo: bool,
    /// `x-mock-tool-call: NAME` (trimmed, non-empty).
    pub tool_call: Option<String>,
    /// `x-mock-reply-parrot`: OpenAI chat answers with the last user message's text.
    pub parrot: bool,
    /// `x-mock-reply-latin1`: a non-streamed OpenAI chat answer in Latin-1 (not UTF-8).
    pub latin1: bool,
}

fn num(h: &HeaderMap, name: &str) -> Result<Option<u64>, String> {
    match h.get(name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(Some)
            .ok_or_else(|| {
                format!("invalid value for header {name}: expected a non-negative integer")
            }),
    }
}

fn flag(h: &HeaderMap, name: &str) -> Option<bool> {
    h.get(name).map(|v| {
        let s = v.to_str().unwrap_or("").trim();
        ["1", "true", "yes", "on"]
            .iter()
            .any(|t| s.eq_ignore_ascii_case(t))
    })
}

impl MockOpts {
    pub fn from_headers(h: &HeaderMap) -> Result<Self, String> {
        let status = match num(h, "x-mock-status")? {
            Some(s) if (200..=599).contains(&s) => u16::try_from(s).ok(),
            Some(_) => return Err("x-mock-status must be within 200..=599".into()),
            None => None,
        };
        let tool_call = match h.get("x-mock-tool-call") {
            None => None,
            Some(v) => match v.to_str().map(str::trim) {
                Ok(s) if !s.is_empty() => Some(s.to_owned()),
                _ => {
                    return Err(
                        "invalid value for header x-mock-tool-call: expected a tool name".into(),
                    )
                }
            },
        };
        Ok(Self {
            status,
            retry_after: h.get("x-mock-retry-after").cloned(),
            delay_ms: num(h, "x-mock-delay-ms")?.unwrap_or(0),
            chunks: num(h, "x-mock-chunks")?
                .unwrap_or(DEFAULT_CHUNKS)
                .min(MAX_CHUNKS),
            chunk_delay_ms: num(h, "x-mock-chunk-delay-ms")?.unwrap_or(0),
            drop_after: num(h, "x-mock-drop-after")?,
            cached_tokens: num(h, "x-mock-cached-tokens")?,
            reasoning_tokens: num(h, "x-mock-reasoning-tokens")?,
            no_usage: flag(h, "x-mock-no-usage").unwrap_or(false),
            crlf: flag(h, "x-mock-crlf"),
            echo: flag(h, "x-mock-echo").unwrap_or(false),
            tool_call,
            parrot: flag(h, "x-mock-reply-parrot").unwrap_or(false),
            latin1: flag(h, "x-mock-reply-latin1").unwrap_or(false),
        })
    }

    /// Number of generated tokens given an optional request cap, and whether
    /// the cap cut the output.
    pub fn output_len(&self, cap: Option<u64>) -> (u64, bool) {
        match cap {
            Some(m) if m < self.chunks => (m, true),
            _ => (self.chunks, false),
        }
    }
}
