//! OpenAI's Responses API (`POST …/responses`), streaming and not.
//!
//! Input tokens: over `input` (a string, or items), `sum of (ceil(chars/4) + 3)` per
//! message (text = the content string or the concatenated `text` of its parts), per
//! `function_call_output` (its `output` string) and per other item (0 + 3); plus one more
//! for `instructions` when present. Output: N generated tokens (`x-mock-chunks`, capped by
//! `max_output_tokens`; a cut output is `status: "incomplete"`), or, when `tools` is
//! non-empty and `x-mock-tool-call: NAME` is sent (or `tool_choice` is `{"type":"function",
//! "name":NAME}` or `"required"`, NAME = the first tool), one `function_call` item with
//! `arguments` `{"location": "Paris"}`. Usage: `input_tokens` P (+ `input_tokens_details.
//! cached_tokens` = `x-mock-cached-tokens`), `output_tokens` N + R, `output_tokens_details.
//! reasoning_tokens` R (`x-mock-reasoning-tokens`), `total_tokens`; `null` with
//! `x-mock-no-usage`.
//!
//! Streaming: `event: <type>\ndata: {"type":<type>,"sequence_number":n,..}\n\n` events:
//! `response.created`, `response.in_progress`, `response.output_item.added`, then for text
//! `response.content_part.added`, one `response.output_text.delta` per token (content
//! chunks), `response.output_text.done`, `response.content_part.done`; for a function call
//! three `response.function_call_arguments.delta` fragments (content chunks) and
//! `response.function_call_arguments.done`; then `response.output_item.done` and
//! `response.completed` (`response.incomplete` when cut) with the usage.
//!
//! Stored responses (nothing is kept; any id is found): `GET …/responses/{id}` answers a
//! completed response with that id (N tokens of text, usage with 10 input tokens),
//! `GET …/responses/{id}/input_items` a list with one user message `Say hello`,
//! `DELETE …/responses/{id}` `{"id","object":"response","deleted":true}`,
//! `POST …/responses/{id}/cancel` the response with `status: "cancelled"`.

use hyper::{Response, StatusCode};
use serde_json::{json, Map, Value};

use crate::body::RespBody;
use crate::reply::Ctx;
use crate::stream::{self, Event, Step};
use crate::util::{content, now_secs, text_tokens, word};

const ARGUMENT_FRAGMENTS: [&str; 3] = ["{\"location\"", ": \"Par", "is\"}"];

/// `POST …/responses`.
pub fn create(ctx: &Ctx<'_>) -> Response<RespBody> {
    let req = match ctx.parse_object() {
        Ok(r) => r,
        Err(msg) => return ctx.error(StatusCode::BAD_REQUEST, &msg),
    };
    let o = &ctx.opts;
    let max = req.get("max_output_tokens").and_then(Value::as_u64);
    let (n, cut) = o.output_len(max);
    let plan = Plan {
        id: format!("resp_mock_{}", ctx.state.next_id()),
        model: req.get("model").cloned().unwrap_or(json!("mock-model")),
        created: now_secs(),
        n,
        cut: cut && tool_name(ctx, &req).is_none(),
        tool: tool_name(ctx, &req),
        usage: (!o.no_usage).then(|| usage(prompt_tokens(&req), n, ctx)),
    };
    if req.get("stream").and_then(Value::as_bool).unwrap_or(false) {
        let echo = ctx.echo.as_ref().map(|e| {
            Step::Frame(Event::named(
                "mock_echo",
                json!({ "type": "mock_echo", "mock_echo": e }).to_string(),
            ))
        });
        let events = echo.into_iter().chain(plan.events());
        let crlf = o.crlf.unwrap_or(false);
        return ctx.stream("text/event-stream", stream::sse(events, crlf));
    }
    ctx.json(plan.response(plan.status(), vec![plan.item(true)]))
}

/// A call on a stored response; `rest` is the path after `/responses/`.
pub fn stored(ctx: &Ctx<'_>, rest: &str) -> Response<RespBody> {
    let (id, tail) = rest.split_once('/').unwrap_or((rest, ""));
    let plan = Plan {
        id: id.to_owned(),
        model: json!("mock-model"),
        created: now_secs(),
        n: ctx.opts.chunks,
        cut: false,
        tool: None,
        usage: Some(usage(10, ctx.opts.chunks, ctx)),
    };
    let method = &ctx.parts.method;
    match (method.as_str(), tail) {
        ("GET", "") => ctx.json(plan.response("completed", vec![plan.item(true)])),
        ("DELETE", "") => ctx.json(json!({ "id": id, "object": "response", "deleted": true })),
        ("POST", "cancel") => ctx.json(plan.response("cancelled", vec![])),
        ("GET", "input_items") => {
            let item = json!({ "id": format!("msg_in_{id}"), "type": "message", "role": "user",
                "status": "completed",
                "content": [{ "type": "input_text", "text": "Say hello" }] });
            ctx.json(json!({ "object": "list", "data": [item],
                "first_id": item["id"], "last_id": item["id"], "has_more": false }))
        }
        _ => crate::openai::not_found(ctx),
    }
}

/// The tool to call, if the request has tools and asks for one.
fn tool_name(ctx: &Ctx<'_>, req: &Map<String, Value>) -> Option<String> {
    let tools = req.get("tools").and_then(Value::as_array)?;
    let first = tools
        .iter()
        .find_map(|t| t.get("name").and_then(Value::as_str))?;
    if let Some(name) = &ctx.opts.tool_call {
        return Some(name.clone());
    }
    match req.get("tool_choice") {
        Some(Value::String(s)) if s == "required" => Some(first.to_owned()),
        Some(Value::Object(c)) if c.get("type").and_then(Value::as_str) == Some("function") => {
            c.get("name").and_then(Value::as_str).map(str::to_owned)
        }
        _ => None,
    }
}

/// Text tokens of a content: a string, or the `text` of its parts.
fn content_tokens(content: Option<&Value>) -> u64 {
    match content {
        Some(Value::String(s)) => text_tokens(s),
        Some(Value::Array(parts)) => {
            let text: String = parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect();
            text_tokens(&text)
        }
        _ => 0,
    }
}

fn prompt_tokens(req: &Map<String, Value>) -> u64 {
    let instructions = req
        .get("instructions")
        .and_then(Value::as_str)
        .map_or(0, |s| text_tokens(s) + 3);
    let input = match req.get("input") {
        Some(Value::String(s)) => text_tokens(s) + 3,
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item.get("type").and_then(Value::as_str) {
                None | Some("message") => content_tokens(item.get("content")) + 3,
                Some("function_call_output") => content_tokens(item.get("output")) + 3,
                Some(_) => 3,
            })
            .sum(),
        _ => 0,
    };
    instructions + input
}

fn usage(prompt: u64, n: u64, ctx: &Ctx<'_>) -> Value {
    let o = &ctx.opts;
    let reasoning = o.reasoning_tokens.unwrap_or(0);
    let output = n.saturating_add(reasoning);
    json!({
        "input_tokens": prompt,
        "input_tokens_details": { "cached_tokens": o.cached_tokens.unwrap_or(0) },
        "output_tokens": output,
        "output_tokens_details": { "reasoning_tokens": reasoning },
        "total_tokens": prompt.saturating_add(output),
    })
}

/// What one answer consists of.
struct Plan {
    id: String,
    model: Value,
    created: u64,
    n: u64,
    cut: bool,
    tool: Option<String>,
    usage: Option<Value>,
}

impl Plan {
    fn status(&self) -> &'static str {
        if self.cut {
            "incomplete"
        } else {
            "completed"
        }
    }

    fn item_id(&self) -> String {
        let prefix = if self.tool.is_some() { "fc" } else { "msg" };
        format!("{prefix}_{}", self.id.trim_start_matches("resp_"))
    }

    /// The output item, complete or as first announced.
    fn item(&self, done: bool) -> Value {
        let status = if done { "completed" } else { "in_progress" };
        match &self.tool {
            Some(name) => json!({
                "id": self.item_id(), "type": "function_call", "status": status,
                "call_id": format!("call_{}", self.id.trim_start_matches("resp_")),
                "name": name,
                "arguments": if done { ARGUMENT_FRAGMENTS.concat() } else { String::new() },
            }),
            None => {
                let content = if done {
                    vec![text_part(&content(self.n))]
                } else {
                    Vec::new()
                };
                json!({ "id": self.item_id(), "type": "message", "status": status,
                        "role": "assistant", "content": content })
            }
        }
    }

    /// The `response` object.
    fn response(&self, status: &str, output: Vec<Value>) -> Value {
        let done = status != "in_progress";
        json!({
            "id": self.id, "object": "response", "created_at": self.created,
            "status": status, "error": null,
            "incomplete_details": if self.cut && done {
                json!({ "reason": "max_output_tokens" })
            } else {
                Value::Null
            },
            "instructions": null, "max_output_tokens": null, "model": self.model,
            "output": output, "parallel_tool_calls": true, "previous_response_id": null,
            "store": true, "temperature": 1.0, "text": { "format": { "type": "text" } },
            "tool_choice": "auto", "tools": [], "top_p": 1.0, "truncation": "disabled",
            "usage": if done { self.usage.clone().unwrap_or(Value::Null) } else { Value::Null },
            "metadata": {},
        })
    }

    /// The stream's events, lazily (N may be large).
    fn events(self) -> impl Iterator<Item = Step<Event>> + Send + 'static {
        let mut seq = 0u64;
        let mut next = move || {
            seq += 1;
            seq - 1
        };
        let mut head = vec![
            frame(
                "response.created",
                next(),
                json!({ "response": self.response("in_progress", vec![]) }),
            ),
            frame(
                "response.in_progress",
                next(),
                json!({ "response": self.response("in_progress", vec![]) }),
            ),
            frame(
                "response.output_item.added",
                next(),
                json!({ "output_index": 0, "item": self.item(false) }),
            ),
        ];
        let id = self.item_id();
        let deltas: Vec<String> = match &self.tool {
            Some(_) => ARGUMENT_FRAGMENTS.iter().map(|s| (*s).to_owned()).collect(),
            None => {
                head.push(frame(
                    "response.content_part.added",
                    next(),
                    json!({ "item_id": id, "output_index": 0, "content_index": 0,
                            "part": text_part("") }),
                ));
                Vec::new()
            }
        };
        let start = head.len() as u64;
        let count = if self.tool.is_some() { 3 } else { self.n };
        let tail = self.tail(start + count);
        let tool = self.tool.is_some();
        let n_id = id.clone();
        let content = (0..count).map(move |i| {
            let seq = start + i;
            let (kind, body) = if tool {
                let d = deltas.get(usize::try_from(i).unwrap_or(0)).cloned();
                (
                    "response.function_call_arguments.delta",
                    json!({ "item_id": n_id, "output_index": 0, "delta": d }),
                )
            } else {
                (
                    "response.output_text.delta",
                    json!({ "item_id": n_id, "output_index": 0, "content_index": 0,
                            "delta": word(i), "logprobs": [] }),
                )
            };
            Step::Content(event(kind, seq, body))
        });
        head.into_iter()
            .chain(content)
            .chain(std::iter::once(Step::EndOfContent))
            .chain(tail)
    }

    /// The closing events, numbered from `seq`.
    fn tail(&self, mut seq: u64) -> Vec<Step<Event>> {
        let mut next = move || {
            seq += 1;
            seq - 1
        };
        let id = self.item_id();
        let mut out = Vec::new();
        if self.tool.is_some() {
            out.push(frame(
                "response.function_call_arguments.done",
                next(),
                json!({ "item_id": id, "output_index": 0, "arguments": ARGUMENT_FRAGMENTS.concat() }),
            ));
        } else {
            let text = content(self.n);
            out.push(frame(
                "response.output_text.done",
                next(),
                json!({ "item_id": id, "output_index": 0, "content_index": 0, "text": text,
                        "logprobs": [] }),
            ));
            out.push(frame(
                "response.content_part.done",
                next(),
                json!({ "item_id": id, "output_index": 0, "content_index": 0,
                        "part": text_part(&text) }),
            ));
        }
        out.push(frame(
            "response.output_item.done",
            next(),
            json!({ "output_index": 0, "item": self.item(true) }),
        ));
        let kind = if self.cut {
            "response.incomplete"
        } else {
            "response.completed"
        };
        out.push(frame(
            kind,
            next(),
            json!({ "response": self.response(self.status(), vec![self.item(true)]) }),
        ));
        out
    }
}

fn text_part(text: &str) -> Value {
    json!({ "type": "output_text", "text": text, "annotations": [], "logprobs": [] })
}

/// An event with its type and sequence number added to `body`.
fn event(kind: &'static str, seq: u64, mut body: Value) -> Event {
    if let Value::Object(m) = &mut body {
        m.insert("type".into(), json!(kind));
        m.insert("sequence_number".into(), json!(seq));
    }
    Event::named(kind, body.to_string())
}

fn frame(kind: &'static str, seq: u64, body: Value) -> Step<Event> {
    Step::Frame(event(kind, seq, body))
}
