//! Anthropic Messages API: `POST …/messages` (streaming and not, tool use)
//! and `POST …/messages/count_tokens`, with Anthropic-style errors.

use std::sync::Arc;

use hyper::header::HeaderMap;
use hyper::{Method, Response, StatusCode};
use serde_json::{json, Map, Value};

use crate::body::RespBody;
use crate::opts::MockOpts;
use crate::reply::Ctx;
use crate::stream::{self, Event, Step};
use crate::util::{content, text_tokens, word};

/// `partial_json` fragments of a streamed tool call; they concatenate to
/// `{"location": "Paris"}`.
pub const TOOL_INPUT_FRAGMENTS: [&str; 3] = ["{\"location\": ", "\"Par", "is\"}"];

pub fn dispatch(ctx: &Ctx<'_>) -> Response<RespBody> {
    let p = ctx.parts.uri.path().trim_end_matches('/');
    if ctx.parts.method != Method::POST {
        let msg = format!("Not found: {} {}", ctx.parts.method, ctx.parts.uri.path());
        return ctx.error(StatusCode::NOT_FOUND, &msg);
    }
    if p.ends_with("/count_tokens") {
        count_tokens(ctx)
    } else {
        messages(ctx)
    }
}

/// Header checks done before faults: `x-api-key` (401) and
/// `anthropic-version` (400) are required.
pub fn preflight(h: &HeaderMap) -> Option<(StatusCode, &'static str)> {
    let present = |name: &str| {
        h.get(name)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|s| !s.trim().is_empty())
    };
    if !present("x-api-key") {
        Some((StatusCode::UNAUTHORIZED, "x-api-key header is required"))
    } else if !present("anthropic-version") {
        Some((
            StatusCode::BAD_REQUEST,
            "anthropic-version: header is required",
        ))
    } else {
        None
    }
}

/// Anthropic `error.type` for a status.
pub fn error_type(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        500..=599 => "api_error",
        _ => "invalid_request_error",
    }
}

/// Text of a `system` or message `content`: a string, or the `text` of text
/// blocks plus the text of `tool_result` contents; other blocks count 0.
fn text_of(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(blocks)) => blocks
            .iter()
            .map(|b| match b.get("type").and_then(Value::as_str) {
                Some("text") => b
                    .get("text")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned(),
                Some("tool_result") => text_of(b.get("content")),
                _ => String::new(),
            })
            .collect(),
        _ => String::new(),
    }
}

/// sum over messages of (ceil(chars / 4) + 3), `system` counting as one
/// more message when present.
pub fn prompt_tokens(req: &Map<String, Value>) -> u64 {
    let msgs: u64 = req
        .get("messages")
        .and_then(Value::as_array)
        .map(|m| {
            m.iter()
                .map(|msg| text_tokens(&text_of(msg.get("content"))) + 3)
                .sum()
        })
        .unwrap_or(0);
    let system = match req.get("system") {
        None | Some(Value::Null) => 0,
        s => text_tokens(&text_of(s)) + 3,
    };
    msgs + system
}

/// The tool to call, if any: needs non-empty `tools`, and then either
/// `x-mock-tool-call: NAME` or a `tool_choice` of type `tool` / `any`.
fn tool_name(req: &Map<String, Value>, o: &MockOpts) -> Option<String> {
    let tools = req.get("tools").and_then(Value::as_array)?;
    let first = tools.first()?;
    if let Some(name) = &o.tool_call {
        return Some(name.clone());
    }
    let choice = req.get("tool_choice")?;
    let first_name = || {
        first
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("tool")
            .to_owned()
    };
    match choice.get("type").and_then(Value::as_str) {
        Some("tool") => Some(
            choice
                .get("name")
                .and_then(Value::as_str)
                .map_or_else(first_name, str::to_owned),
        ),
        Some("any") => Some(first_name()),
        _ => None,
    }
}

fn validate(req: &Map<String, Value>) -> Result<u64, &'static str> {
    if !req.get("model").is_some_and(Value::is_string) {
        return Err("model: Field required");
    }
    if !req.get("messages").is_some_and(Value::is_array) {
        return Err("messages: Field required");
    }
    match req.get("max_tokens") {
        None | Some(Value::Null) => Err("max_tokens: Field required"),
        Some(v) => v
            .as_u64()
            .filter(|m| *m >= 1)
            .ok_or("max_tokens: Input should be a valid integer greater than or equal to 1"),
    }
}

fn count_tokens(ctx: &Ctx<'_>) -> Response<RespBody> {
    let req = match ctx.parse_object() {
        Ok(r) => r,
        Err(msg) => return ctx.error(StatusCode::BAD_REQUEST, &msg),
    };
    if !req.get("messages").is_some_and(Value::is_array) {
        return ctx.error(StatusCode::BAD_REQUEST, "messages: Field required");
    }
    ctx.json(json!({ "input_tokens": prompt_tokens(&req) }))
}

fn messages(ctx: &Ctx<'_>) -> Response<RespBody> {
    let req = match ctx.parse_object() {
        Ok(r) => r,
        Err(msg) => return ctx.error(StatusCode::BAD_REQUEST, &msg),
    };
    let max = match validate(&req) {
        Ok(m) => m,
        Err(msg) => return ctx.error(StatusCode::BAD_REQUEST, msg),
    };
    let o = &ctx.opts;
    let (n, cut) = o.output_len(Some(max));
    let tool = tool_name(&req, o);
    let stop_reason = match (&tool, cut) {
        (Some(_), _) => "tool_use",
        (None, true) => "max_tokens",
        (None, false) => "end_turn",
    };
    let reply = Reply {
        id: ctx.state.next_id(),
        model: req.get("model").cloned().unwrap_or(Value::Null),
        n,
        stop_reason,
        tool,
        input_tokens: prompt_tokens(&req),
        output_tokens: n.saturating_add(o.reasoning_tokens.unwrap_or(0)),
        cached_tokens: o.cached_tokens.unwrap_or(0),
        usage: !o.no_usage,
    };
    if req.get("stream").and_then(Value::as_bool).unwrap_or(false) {
        let echo = ctx.echo.as_ref().map(|e| {
            let data = json!({ "type": "mock_echo", "mock_echo": e }).to_string();
            Step::Frame(Event::named("mock_echo", data))
        });
        let events = echo.into_iter().chain(events(reply));
        let crlf = o.crlf.unwrap_or(false);
        return ctx.stream("text/event-stream", stream::sse(events, crlf));
    }
    ctx.json(reply.message())
}

/// Everything needed to render one response, streamed or not.
pub struct Reply {
    pub id: u64,
    pub model: Value,
    pub n: u64,
    pub stop_reason: &'static str,
    pub tool: Option<String>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_tokens: u64,
    pub usage: bool,
}

impl Reply {
    fn usage_json(&self, output_tokens: u64) -> Value {
        json!({
            "input_tokens": self.input_tokens,
            "output_tokens": output_tokens,
            "cache_read_input_tokens": self.cached_tokens,
            "cache_creation_input_tokens": 0,
        })
    }

    fn tool_block(&self, name: &str, input: Value) -> Value {
        json!({ "type": "tool_use", "id": format!("toolu_mock_{}", self.id), "name": name, "input": input })
    }

    /// Non-streaming response body; `content` holds all blocks.
    pub fn message(&self) -> Value {
        let block = match &self.tool {
            Some(name) => self.tool_block(name, json!({ "location": "Paris" })),
            None => json!({ "type": "text", "text": content(self.n) }),
        };
        self.envelope(vec![block], Some(self.stop_reason), self.output_tokens)
    }

    fn envelope(&self, content: Vec<Value>, stop: Option<&str>, output_tokens: u64) -> Value {
        let mut m = Map::new();
        m.insert("id".into(), json!(format!("msg_mock_{}", self.id)));
        m.insert("type".into(), json!("message"));
        m.insert("role".into(), json!("assistant"));
        m.insert("model".into(), self.model.clone());
        m.insert("content".into(), Value::Array(content));
        m.insert("stop_reason".into(), json!(stop));
        m.insert("stop_sequence".into(), Value::Null);
        if self.usage {
            m.insert("usage".into(), self.usage_json(output_tokens));
        }
        Value::Object(m)
    }
}

fn named(name: &'static str, v: &Value) -> Event {
    Event::named(name, v.to_string())
}

/// `message_start`, `content_block_start`, `ping`, one `content_block_delta`
/// per token (tool use: [`TOOL_INPUT_FRAGMENTS`] as `input_json_delta`),
/// `content_block_stop`, `message_delta`, `message_stop`.
pub fn events(r: Reply) -> impl Iterator<Item = Step<Event>> + Send + 'static {
    let r = Arc::new(r);
    let start = json!({ "type": "message_start", "message": r.envelope(Vec::new(), None, 1) });
    let block = match &r.tool {
        Some(name) => r.tool_block(name, json!({})),
        None => json!({ "type": "text", "text": "" }),
    };
    let head = vec![
        Step::Frame(named("message_start", &start)),
        Step::Frame(named(
            "content_block_start",
            &json!({ "type": "content_block_start", "index": 0, "content_block": block }),
        )),
        Step::Frame(named("ping", &json!({ "type": "ping" }))),
    ];
    let delta = |d: Value| {
        Step::Content(named(
            "content_block_delta",
            &json!({ "type": "content_block_delta", "index": 0, "delta": d }),
        ))
    };
    let deltas: Box<dyn Iterator<Item = Step<Event>> + Send> = match r.tool {
        Some(_) => Box::new(
            TOOL_INPUT_FRAGMENTS
                .iter()
                .map(move |f| delta(json!({ "type": "input_json_delta", "partial_json": f }))),
        ),
        None => {
            Box::new((0..r.n).map(move |i| delta(json!({ "type": "text_delta", "text": word(i) }))))
        }
    };
    let mut message_delta = json!({
        "type": "message_delta",
        "delta": { "stop_reason": r.stop_reason, "stop_sequence": null },
    });
    if r.usage {
        message_delta["usage"] = json!({ "output_tokens": r.output_tokens });
    }
    let tail = vec![
        Step::EndOfContent,
        Step::Frame(named(
            "content_block_stop",
            &json!({ "type": "content_block_stop", "index": 0 }),
        )),
        Step::Frame(named("message_delta", &message_delta)),
        Step::Frame(named("message_stop", &json!({ "type": "message_stop" }))),
    ];
    head.into_iter().chain(deltas).chain(tail)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    fn reply(tool: Option<&str>) -> Reply {
        Reply {
            id: 7,
            model: json!("claude-x"),
            n: 3,
            stop_reason: if tool.is_some() {
                "tool_use"
            } else {
                "end_turn"
            },
            tool: tool.map(str::to_owned),
            input_tokens: 10,
            output_tokens: 3,
            cached_tokens: 2,
            usage: true,
        }
    }

    #[test]
    fn prompt_token_formula() {
        let req = obj(json!({
            "system": [{"type": "text", "text": "12345"}],
            "messages": [
                {"role": "user", "content": "abcd"},
                {"role": "user", "content": [
                    {"type": "image", "source": {}},
                    {"type": "tool_result", "tool_use_id": "t", "content": [{"type": "text", "text": "ab"}]},
                    {"type": "text", "text": "cd"}
                ]},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]}
            ]
        }));
        // system (2+3) + (1+3) + (ceil(4/4)+3) + (0+3)
        assert_eq!(prompt_tokens(&req), 5 + 4 + 4 + 3);
        assert_eq!(
            prompt_tokens(&obj(json!({"system": "", "messages": []}))),
            3
        );
    }

    #[test]
    fn validation_and_tools() {
        let ok = obj(json!({"model": "m", "messages": [], "max_tokens": 5}));
        assert_eq!(validate(&ok), Ok(5));
        assert!(validate(&obj(json!({"model": "m", "messages": []}))).is_err());
        assert!(validate(&obj(
            json!({"model": "m", "messages": [], "max_tokens": "5"})
        ))
        .is_err());
        let o = MockOpts::default();
        let tools = json!([{"name": "get_weather", "input_schema": {}}]);
        let with = |choice: Value| obj(json!({"tools": tools, "tool_choice": choice}));
        assert_eq!(tool_name(&with(json!({"type": "auto"})), &o), None);
        assert_eq!(
            tool_name(&with(json!({"type": "any"})), &o).as_deref(),
            Some("get_weather")
        );
        assert_eq!(
            tool_name(&with(json!({"type": "tool", "name": "x"})), &o).as_deref(),
            Some("x")
        );
        let hdr = MockOpts {
            tool_call: Some("h".into()),
            ..MockOpts::default()
        };
        assert_eq!(
            tool_name(&with(json!({"type": "auto"})), &hdr).as_deref(),
            Some("h")
        );
        assert_eq!(tool_name(&obj(json!({})), &hdr), None);
    }

    fn names(r: Reply) -> Vec<(&'static str, bool, Value)> {
        events(r)
            .filter_map(|s| match s {
                Step::Frame(e) => Some((e, false)),
                Step::Content(e) => Some((e, true)),
                Step::EndOfContent => None,
            })
            .map(|(e, c)| {
                (
                    e.name.unwrap_or(""),
                    c,
                    serde_json::from_str(&e.data).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn text_event_sequence() {
        let ev = names(reply(None));
        let seq: Vec<_> = ev.iter().map(|e| e.0).collect();
        assert_eq!(
            seq,
            [
                "message_start",
                "content_block_start",
                "ping",
                "content_block_delta",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        assert!(ev.iter().all(|(n, _, v)| v["type"] == *n));
        assert_eq!(ev[0].2["message"]["usage"]["output_tokens"], 1);
        assert_eq!(ev[0].2["message"]["usage"]["input_tokens"], 10);
        assert_eq!(
            ev[4].2["delta"],
            json!({"type": "text_delta", "text": " wörld"})
        );
        assert!(ev[4].1 && !ev[6].1);
        assert_eq!(ev[7].2["usage"]["output_tokens"], 3);
        assert_eq!(ev[7].2["delta"]["stop_reason"], "end_turn");
    }

    #[test]
    fn tool_event_sequence() {
        let ev = names(reply(Some("get_weather")));
        assert_eq!(ev[1].2["content_block"]["name"], "get_weather");
        assert_eq!(ev[1].2["content_block"]["id"], "toolu_mock_7");
        let json: String = ev
            .iter()
            .filter(|e| e.1)
            .map(|e| e.2["delta"]["partial_json"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            serde_json::from_str::<Value>(&json).unwrap(),
            json!({"location": "Paris"})
        );
        assert_eq!(ev.iter().filter(|e| e.1).count(), 3);
        let m = reply(Some("f")).message();
        assert_eq!(m["content"][0]["input"], json!({"location": "Paris"}));
        assert_eq!(m["stop_reason"], "tool_use");
        assert_eq!(m["usage"]["cache_read_input_tokens"], 2);
    }
}
