//! Responses API streams:
//! - [`OpenAiStreamToResponses`]: an OpenAI chat chunk stream (from an OpenAI-compatible
//!   upstream, or translated from Anthropic or Gemini) → the Responses API's typed events
//!   for a Responses client;
//! - [`ResponsesStreamUsage`]: a native Responses stream read for its usage only (the bytes
//!   pass through untouched).
//!
//! Events are `event: <type>\ndata: {"type":<type>,"sequence_number":n,...}\n\n`:
//! `response.created`, `response.in_progress`; for text `response.output_item.added`
//! (a `message` item), `response.content_part.added`, `response.output_text.delta`...,
//! then `response.output_text.done`, `response.content_part.done`,
//! `response.output_item.done`; for each tool call `response.output_item.added` (a
//! `function_call` item), `response.function_call_arguments.delta`...,
//! `response.function_call_arguments.done`, `response.output_item.done`; and last
//! `response.completed` (or `response.incomplete` when the output was cut at its limit)
//! with the whole response and its usage. A stream that ends before its finish (or with an
//! upstream error) ends with an `error` event and no `response.completed`.
//!
//! Both parse with [`crate::sse::SseParser`], so output and usage do not depend on how the
//! input is chunked.

use super::common::{usage_from_openai, INCOMPLETE_STREAM};
use super::json::{jobj, str_field, Json, Obj};
use super::responses::{
    function_call_output, message_output, output_text_part, response_id, ResponseHead, Status,
};
use crate::sse::{SseEvent, SseParser};
use crate::usage::{usage_from_json, TokenEstimator, Usage};

/// A text output item being streamed.
#[derive(Debug)]
struct OpenText {
    id: String,
    output_index: usize,
    text: String,
}

/// A function call output item being streamed.
#[derive(Debug)]
struct OpenCall {
    /// The chat stream's `tool_calls[].index`.
    chat_index: u64,
    output_index: usize,
    call_id: String,
    name: String,
    arguments: String,
}

/// OpenAI chat chunks → Responses events; see the module docs.
#[derive(Debug)]
pub struct OpenAiStreamToResponses {
    parser: SseParser,
    model: String,
    head: Option<ResponseHead>,
    seq: u64,
    /// Items opened so far (the next output index).
    opened: usize,
    /// Finished items with their output index.
    output: Vec<(usize, Json)>,
    text: Option<OpenText>,
    calls: Vec<OpenCall>,
    finish: Option<String>,
    usage: Option<Usage>,
    est: TokenEstimator,
    first_content: bool,
    ended: bool,
}

impl OpenAiStreamToResponses {
    /// `model` is reported until the upstream names its own.
    pub fn new(model: &str) -> Self {
        OpenAiStreamToResponses {
            parser: SseParser::new(),
            model: model.to_string(),
            head: None,
            seq: 0,
            opened: 0,
            output: Vec::new(),
            text: None,
            calls: Vec::new(),
            finish: None,
            usage: None,
            est: TokenEstimator::new(),
            first_content: false,
            ended: false,
        }
    }

    /// Feed upstream bytes; returns the bytes to send to the client.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        let mut evs = Vec::new();
        self.parser.push(chunk, |e| evs.push(e));
        let mut out = Vec::new();
        for e in evs {
            self.event(&e, &mut out);
        }
        out
    }

    /// End of the upstream stream: the closing events, or an error event when the stream
    /// stopped before its finish.
    pub fn finish(&mut self) -> Vec<u8> {
        let mut evs = Vec::new();
        self.parser.finish_lenient(|e| evs.push(e));
        let mut out = Vec::new();
        for e in evs {
            self.event(&e, &mut out);
        }
        if !self.ended {
            if self.finish.is_some() {
                self.complete(&mut out);
            } else {
                self.fail(&mut out, "stream_incomplete", INCOMPLETE_STREAM);
            }
        }
        out
    }

    /// The usage the upstream reported, else an estimate of the output.
    pub fn usage(&self) -> Usage {
        self.usage.unwrap_or(Usage {
            output_tokens: self.est.tokens(),
            estimated: true,
            ..Usage::default()
        })
    }

    /// Text or a tool call has been sent (for time-to-first-token).
    pub fn first_content_seen(&self) -> bool {
        self.first_content
    }

    /// Bytes held for an SSE event not yet complete (bounded by the caller).
    pub fn pending_bytes(&self) -> usize {
        self.parser.pending().len()
    }

    fn event(&mut self, e: &SseEvent, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        let data = e.data.trim();
        if data == "[DONE]" {
            self.complete(out);
            return;
        }
        let Ok(chunk) = Json::parse_str(data) else {
            return;
        };
        if let Some(err) = chunk.get("error") {
            let message = str_field(err, "message").unwrap_or("upstream error");
            let code = str_field(err, "code")
                .unwrap_or("upstream_error")
                .to_string();
            self.fail(out, &code, message);
            return;
        }
        self.start(&chunk, out);
        if let Some(u) = chunk.get("usage") {
            self.usage = Some(usage_from_openai(u));
        }
        let Some(choice) = chunk
            .get("choices")
            .and_then(Json::as_array)
            .and_then(<[Json]>::first)
        else {
            return;
        };
        if let Some(delta) = choice.get("delta") {
            self.delta(delta, out);
        }
        if let Some(reason) = str_field(choice, "finish_reason") {
            self.finish = Some(reason.to_string());
        }
    }

    /// `response.created` and `response.in_progress`, at the first chunk.
    fn start(&mut self, chunk: &Json, out: &mut Vec<u8>) {
        if self.head.is_some() {
            return;
        }
        let head = ResponseHead {
            id: response_id(str_field(chunk, "id")),
            model: str_field(chunk, "model").unwrap_or(&self.model).to_string(),
            created_at: chunk
                .get("created")
                .and_then(Json::as_u64)
                .unwrap_or_else(super::common::unix_now),
        };
        let obj = head.object(Status::InProgress, Vec::new(), None);
        self.head = Some(head);
        self.emit(out, "response.created", jobj! { "response" => obj.clone() });
        self.emit(out, "response.in_progress", jobj! { "response" => obj });
    }

    fn delta(&mut self, delta: &Json, out: &mut Vec<u8>) {
        if let Some(text) = str_field(delta, "content").filter(|t| !t.is_empty()) {
            self.text_delta(text, out);
        }
        for call in delta
            .get("tool_calls")
            .and_then(Json::as_array)
            .unwrap_or(&[])
        {
            self.call_delta(call, out);
        }
    }

    fn text_delta(&mut self, text: &str, out: &mut Vec<u8>) {
        self.first_content = true;
        self.est.feed(text);
        if self.text.is_none() {
            let id = self
                .head
                .as_ref()
                .map_or_else(String::new, ResponseHead::message_id);
            let output_index = self.opened;
            self.opened += 1;
            let item = message_output(&id, "", "in_progress");
            self.emit(
                out,
                "response.output_item.added",
                jobj! { "output_index" => output_index, "item" => item },
            );
            self.emit(
                out,
                "response.content_part.added",
                jobj! {
                    "item_id" => id.as_str(),
                    "output_index" => output_index,
                    "content_index" => 0u64,
                    "part" => output_text_part(""),
                },
            );
            self.text = Some(OpenText {
                id,
                output_index,
                text: String::new(),
            });
        }
        let Some(open) = self.text.as_mut() else {
            return;
        };
        open.text.push_str(text);
        let ev = jobj! {
            "item_id" => open.id.as_str(),
            "output_index" => open.output_index,
            "content_index" => 0u64,
            "delta" => text,
            "logprobs" => Json::Arr(Vec::new()),
        };
        self.emit(out, "response.output_text.delta", ev);
    }

    fn call_delta(&mut self, call: &Json, out: &mut Vec<u8>) {
        let chat_index = call.get("index").and_then(Json::as_u64).unwrap_or(0);
        let f = call.get("function");
        let args = f.and_then(|f| str_field(f, "arguments")).unwrap_or("");
        let at = match self.calls.iter().position(|c| c.chat_index == chat_index) {
            Some(at) => at,
            None => {
                self.close_text(out);
                let open = OpenCall {
                    chat_index,
                    output_index: self.opened,
                    call_id: str_field(call, "id").unwrap_or("").to_string(),
                    name: f
                        .and_then(|f| str_field(f, "name"))
                        .unwrap_or("")
                        .to_string(),
                    arguments: String::new(),
                };
                self.opened += 1;
                let item = function_call_output(&open.call_id, &open.name, "", "in_progress");
                self.emit(
                    out,
                    "response.output_item.added",
                    jobj! { "output_index" => open.output_index, "item" => item },
                );
                self.calls.push(open);
                self.calls.len() - 1
            }
        };
        self.first_content = true;
        if args.is_empty() {
            return;
        }
        self.est.feed(args);
        let open = &mut self.calls[at];
        open.arguments.push_str(args);
        let ev = jobj! {
            "item_id" => item_id(&open.call_id),
            "output_index" => open.output_index,
            "delta" => args,
        };
        self.emit(out, "response.function_call_arguments.delta", ev);
    }

    /// Close the text item, if open.
    fn close_text(&mut self, out: &mut Vec<u8>) {
        let Some(open) = self.text.take() else {
            return;
        };
        let (id, index) = (open.id.as_str(), open.output_index);
        self.emit(
            out,
            "response.output_text.done",
            jobj! {
                "item_id" => id, "output_index" => index, "content_index" => 0u64,
                "text" => open.text.as_str(), "logprobs" => Json::Arr(Vec::new()),
            },
        );
        self.emit(
            out,
            "response.content_part.done",
            jobj! {
                "item_id" => id, "output_index" => index, "content_index" => 0u64,
                "part" => output_text_part(&open.text),
            },
        );
        let item = message_output(id, &open.text, "completed");
        self.item_done(out, index, item);
    }

    /// Close every open function call, in order.
    fn close_calls(&mut self, out: &mut Vec<u8>) {
        for open in std::mem::take(&mut self.calls) {
            let id = item_id(&open.call_id);
            self.emit(
                out,
                "response.function_call_arguments.done",
                jobj! {
                    "item_id" => id.as_str(), "output_index" => open.output_index,
                    "arguments" => open.arguments.as_str(),
                },
            );
            let item =
                function_call_output(&open.call_id, &open.name, &open.arguments, "completed");
            self.item_done(out, open.output_index, item);
        }
    }

    fn item_done(&mut self, out: &mut Vec<u8>, index: usize, item: Json) {
        self.emit(
            out,
            "response.output_item.done",
            jobj! { "output_index" => index, "item" => item.clone() },
        );
        self.output.push((index, item));
    }

    /// Close the open items and send `response.completed` (or `.incomplete`) with usage.
    fn complete(&mut self, out: &mut Vec<u8>) {
        self.start(&Json::Null, out);
        self.close_text(out);
        self.close_calls(out);
        self.ended = true;
        self.output.sort_by_key(|(i, _)| *i);
        let output = self.output.iter().map(|(_, item)| item.clone()).collect();
        let status = Status::done(self.finish.as_deref() == Some("length"));
        let usage = self.usage();
        let obj = match &self.head {
            Some(head) => head.object(status, output, Some(&usage)),
            None => Json::Null,
        };
        let kind = match status {
            Status::Incomplete => "response.incomplete",
            _ => "response.completed",
        };
        self.emit(out, kind, jobj! { "response" => obj });
    }

    /// An `error` event; nothing follows it.
    fn fail(&mut self, out: &mut Vec<u8>, code: &str, message: &str) {
        self.ended = true;
        let ev = jobj! { "code" => code, "message" => message, "param" => Json::Null };
        self.emit(out, "error", ev);
    }

    /// `event: kind` with `data: {"type":kind,"sequence_number":n,...fields}`.
    fn emit(&mut self, out: &mut Vec<u8>, kind: &str, fields: Json) {
        let mut m = Obj::new();
        m.insert("type".into(), kind.into());
        m.insert("sequence_number".into(), self.seq.into());
        if let Json::Obj(f) = fields {
            m.extend(f);
        }
        self.seq += 1;
        super::common::sse_named(out, kind, &Json::Obj(m));
    }
}

/// The output item id of a function call (`fc_…` from its call id).
fn item_id(call_id: &str) -> String {
    format!("fc_{}", call_id.trim_start_matches("call_"))
}

/// A native Responses stream read for its usage: `response.completed` (or
/// `response.incomplete` / `response.failed`) carries the whole response with its `usage`;
/// without it (a stream cut short), the output is estimated from the text and argument
/// deltas. Passes nothing to the client itself (the caller forwards the bytes). Keeps the
/// response's id (from `response.created`) for the calls that name it later.
#[derive(Debug, Default)]
pub struct ResponsesStreamUsage {
    parser: SseParser,
    reported: Option<Usage>,
    est: TokenEstimator,
    first_content: bool,
    /// The response's id (from `response.created`).
    id: Option<String>,
}

/// The id of a `response` object.
#[derive(serde::Deserialize)]
struct ResponseId {
    #[serde(default)]
    id: Option<String>,
}

/// What the observer reads of one event.
#[derive(serde::Deserialize)]
struct EventView<'a> {
    #[serde(default, borrow, rename = "type")]
    kind: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    delta: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    response: Option<&'a serde_json::value::RawValue>,
}

impl ResponsesStreamUsage {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        let mut evs = Vec::new();
        self.parser.push(chunk, |e| evs.push(e));
        for e in &evs {
            self.event(e);
        }
        Vec::new()
    }

    pub fn finish(&mut self) -> Vec<u8> {
        let mut evs = Vec::new();
        self.parser.finish_lenient(|e| evs.push(e));
        for e in &evs {
            self.event(e);
        }
        Vec::new()
    }

    /// The usage of the final response, else an estimate of the output.
    pub fn usage(&self) -> Usage {
        self.reported.unwrap_or(Usage {
            output_tokens: self.est.tokens(),
            estimated: true,
            ..Usage::default()
        })
    }

    pub fn first_content_seen(&self) -> bool {
        self.first_content
    }

    pub fn pending_bytes(&self) -> usize {
        self.parser.pending().len()
    }

    /// The id of the response, once `response.created` named it.
    pub fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    fn event(&mut self, e: &SseEvent) {
        let Ok(view) = serde_json::from_str::<EventView<'_>>(&e.data) else {
            return;
        };
        match view.kind.as_deref() {
            Some("response.output_text.delta" | "response.function_call_arguments.delta") => {
                self.first_content = true;
                if let Some(d) = &view.delta {
                    self.est.feed(d);
                }
            }
            Some("response.created") if self.id.is_none() => {
                self.id = view
                    .response
                    .and_then(|r| serde_json::from_str::<ResponseId>(r.get()).ok())
                    .and_then(|r| r.id);
            }
            Some("response.completed" | "response.incomplete" | "response.failed") => {
                if let Some(u) = view
                    .response
                    .and_then(|r| usage_from_json(r.get().as_bytes()))
                {
                    self.reported = Some(u);
                }
            }
            _ => {}
        }
    }
}
