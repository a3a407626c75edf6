//! Streaming translation between Anthropic Messages SSE and OpenAI
//! `chat.completion.chunk` SSE, both directions:
//! - [`AnthropicStreamToOpenAi`]: an Anthropic upstream stream → OpenAI chunks for an
//!   OpenAI-format client;
//! - [`OpenAiStreamToAnthropic`]: an OpenAI-compatible upstream stream → Anthropic events
//!   for an Anthropic-format client.
//!
//! Both parse with [`crate::sse::SseParser`], so their output and usage do not depend on how
//! the input is chunked. Events that are not JSON are ignored. A stream that ends before
//! its terminal event (`message_stop`, resp. `[DONE]` or a finish reason) ends, for the
//! client, with an error event and no terminator, so it cannot be mistaken for a complete
//! answer.

use super::anthropic::{anthropic_error_event_to_openai, finish_reason, AnthropicUsage};
use super::anthropic_reverse::{
    anthropic_usage_json, openai_error_to_anthropic_json, reasoning_text, stop_reason,
};
use super::common::{
    openai_stream_error, random_id, sse_named, usage_from_openai, ChunkWriter, INCOMPLETE_STREAM,
    SSE_DONE,
};
use super::json::{jobj, str_field, Json, Obj};
use crate::sse::{SseEvent, SseParser};
use crate::usage::{TokenEstimator, Usage};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum State {
    #[default]
    Open,
    /// The terminal event was translated.
    Done,
    /// An error event was sent; nothing more is.
    Failed,
}

/// Parse the events of `chunk` (or of the end of stream) into a list.
fn events(parser: &mut SseParser, chunk: Option<&[u8]>) -> Vec<SseEvent> {
    let mut evs = Vec::new();
    match chunk {
        Some(c) => parser.push(c, |e| evs.push(e)),
        None => {
            parser.finish_lenient(|e| evs.push(e));
        }
    }
    evs
}

/// Anthropic Messages stream → OpenAI `chat.completion.chunk` stream.
///
/// `message_start` gives the id, the input usage and the role chunk; text, thinking
/// (`reasoning_content`) and tool-use blocks become deltas (a tool call's id and name in
/// its first chunk, then `input_json_delta` fragments as `arguments`); `message_delta`
/// gives the finish chunk and the output usage; `message_stop` the usage chunk (when
/// `include_usage`) and `data: [DONE]`. `ping` is ignored; an `error` event becomes an
/// OpenAI error event and ends the translation.
#[derive(Debug)]
pub struct AnthropicStreamToOpenAi {
    parser: SseParser,
    pub(crate) w: ChunkWriter,
    include_usage: bool,
    state: State,
    role_sent: bool,
    finish_sent: bool,
    /// `(Anthropic block index, OpenAI tool call index)` of each tool_use block.
    tools: Vec<(u64, u64)>,
    usage: AnthropicUsage,
    /// Some `usage` was seen (in `message_start` or `message_delta`).
    usage_seen: bool,
    /// `message_delta` reported the final `output_tokens`.
    output_final: bool,
    est: TokenEstimator,
    first_content: bool,
}

impl AnthropicStreamToOpenAi {
    /// `model` is the name the client asked for (sent in every chunk).
    pub fn new(model: &str, include_usage: bool) -> Self {
        AnthropicStreamToOpenAi {
            parser: SseParser::new(),
            w: ChunkWriter::new(model),
            include_usage,
            state: State::Open,
            role_sent: false,
            finish_sent: false,
            tools: Vec::new(),
            usage: AnthropicUsage::default(),
            usage_seen: false,
            output_final: false,
            est: TokenEstimator::new(),
            first_content: false,
        }
    }

    /// Bytes held for an SSE event not yet complete (bounded by the caller).
    pub fn pending_bytes(&self) -> usize {
        self.parser.pending().len()
    }

    /// Feed upstream bytes; returns the bytes to send to the client.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        let evs = events(&mut self.parser, Some(chunk));
        let mut out = Vec::new();
        for e in evs {
            self.event(&e, &mut out);
        }
        out
    }

    /// End of the upstream stream; returns the last bytes for the client (an error event
    /// if the stream was incomplete).
    pub fn finish(&mut self) -> Vec<u8> {
        let evs = events(&mut self.parser, None);
        let mut out = Vec::new();
        for e in evs {
            self.event(&e, &mut out);
        }
        if self.state == State::Open {
            openai_stream_error(
                &mut out,
                INCOMPLETE_STREAM,
                "server_error",
                "upstream_incomplete",
            );
            self.state = State::Failed;
        }
        out
    }

    /// Usage so far (final once the stream is done); see the module docs of
    /// [`crate::translate`] for the mapping and the estimate used without final counts.
    pub fn usage(&self) -> Usage {
        let mut u = self.usage.to_usage();
        if !self.output_final {
            u.output_tokens = u.output_tokens.max(self.est.tokens());
            u.estimated = true;
        }
        if !self.usage_seen {
            u.estimated = true;
        }
        u
    }

    /// Text, reasoning or a tool call has been sent (for time-to-first-token).
    pub fn first_content_seen(&self) -> bool {
        self.first_content
    }

    fn ensure_role(&mut self, out: &mut Vec<u8>) {
        if !self.role_sent {
            self.role_sent = true;
            self.w.choice(
                out,
                0,
                jobj! { "role" => "assistant", "content" => "" },
                None,
            );
        }
    }

    fn delta(&mut self, out: &mut Vec<u8>, delta: Json) {
        self.ensure_role(out);
        self.first_content = true;
        self.w.choice(out, 0, delta, None);
    }

    fn tool_index(&self, block: u64) -> Option<u64> {
        self.tools
            .iter()
            .find(|(b, _)| *b == block)
            .map(|(_, t)| *t)
    }

    fn event(&mut self, e: &SseEvent, out: &mut Vec<u8>) {
        if self.state != State::Open {
            return;
        }
        let Ok(data) = Json::parse_str(&e.data) else {
            return;
        };
        let kind = str_field(&data, "type")
            .map(str::to_owned)
            .or_else(|| e.event.clone())
            .unwrap_or_default();
        let block = data.get("index").and_then(Json::as_u64).unwrap_or(0);
        match kind.as_str() {
            "message_start" => {
                let msg = data.get("message");
                if !self.role_sent {
                    if let Some(id) = msg.and_then(|m| str_field(m, "id")) {
                        self.w.id = format!("chatcmpl-{id}");
                    }
                }
                if let Some(u) = msg.and_then(|m| m.get("usage")) {
                    self.usage.update(u);
                    self.usage_seen = true;
                }
                self.ensure_role(out);
            }
            "content_block_start" => {
                if let Some(cb) = data.get("content_block") {
                    self.block_start(cb, block, out);
                }
            }
            "content_block_delta" => {
                if let Some(d) = data.get("delta") {
                    self.block_delta(d, block, out);
                }
            }
            "message_delta" => {
                if let Some(u) = data.get("usage") {
                    self.usage_seen = true;
                    if self.usage.update(u) {
                        self.output_final = true;
                    }
                }
                let reason = data.get("delta").and_then(|d| str_field(d, "stop_reason"));
                if let Some(reason) = reason {
                    self.send_finish(out, finish_reason(Some(reason)));
                }
            }
            "message_stop" => {
                self.send_finish(out, "stop");
                if self.include_usage {
                    let u = self.usage();
                    self.w.usage(out, &u);
                }
                out.extend_from_slice(SSE_DONE);
                self.state = State::Done;
            }
            "error" => {
                super::common::sse_data(out, &anthropic_error_event_to_openai(&data));
                self.state = State::Failed;
            }
            // ping, content_block_stop, unknown events.
            _ => {}
        }
    }

    /// A content block starts: text, thinking, or a tool call (announced with its name).
    fn block_start(&mut self, cb: &Json, block: u64, out: &mut Vec<u8>) {
        match str_field(cb, "type") {
            Some("text") => self.text(out, str_field(cb, "text"), "content"),
            Some("thinking") => self.text(out, str_field(cb, "thinking"), "reasoning_content"),
            Some("tool_use") => {
                let index = self.tools.len() as u64;
                self.tools.push((block, index));
                let name = str_field(cb, "name").unwrap_or_default();
                self.est.feed(name);
                let call = jobj! {
                    "index" => index,
                    "id" => str_field(cb, "id").unwrap_or_default(),
                    "type" => "function",
                    "function" => jobj! { "name" => name, "arguments" => "" },
                };
                self.delta(out, jobj! { "tool_calls" => vec![call] });
            }
            _ => {}
        }
    }

    /// More of a content block: text, thinking, or a tool call's arguments.
    fn block_delta(&mut self, d: &Json, block: u64, out: &mut Vec<u8>) {
        match str_field(d, "type") {
            Some("text_delta") => self.text(out, str_field(d, "text"), "content"),
            Some("thinking_delta") => self.text(out, str_field(d, "thinking"), "reasoning_content"),
            Some("input_json_delta") => {
                let Some(index) = self.tool_index(block) else {
                    return;
                };
                let part = str_field(d, "partial_json").unwrap_or_default();
                if part.is_empty() {
                    return;
                }
                self.est.feed(part);
                let call = jobj! {
                    "index" => index,
                    "function" => jobj! { "arguments" => part },
                };
                self.delta(out, jobj! { "tool_calls" => vec![call] });
            }
            // signature_delta, citations_delta, future types.
            _ => {}
        }
    }

    fn text(&mut self, out: &mut Vec<u8>, text: Option<&str>, field: &str) {
        let Some(text) = text.filter(|t| !t.is_empty()) else {
            return;
        };
        self.est.feed(text);
        let mut d = Obj::new();
        d.insert(field.to_owned(), text.into());
        self.delta(out, Json::Obj(d));
    }

    fn send_finish(&mut self, out: &mut Vec<u8>, reason: &str) {
        if !self.finish_sent {
            self.finish_sent = true;
            self.ensure_role(out);
            self.w.choice(out, 0, Json::Obj(Obj::new()), Some(reason));
        }
    }
}

/// What the currently open Anthropic content block holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    Text,
    Thinking,
    /// The OpenAI tool call index.
    Tool(u64),
}

/// OpenAI chat completion stream → Anthropic Messages stream.
///
/// The first chunk gives `message_start` (id `msg_<chunk id>`, input usage 0 until the
/// end); `reasoning_content` (or `reasoning`), `content` and each tool call become
/// `thinking`, `text` and `tool_use` content blocks (arguments as `input_json_delta`),
/// opened and closed in order; the finish reason, the usage chunk and `[DONE]` give
/// `message_delta` (stop reason and full usage) and `message_stop`. Only choice 0 is
/// translated. An OpenAI error event becomes an Anthropic `error` event and ends the
/// translation.
#[derive(Debug)]
pub struct OpenAiStreamToAnthropic {
    parser: SseParser,
    model: String,
    state: State,
    started: bool,
    /// Open block: (Anthropic index, kind).
    open: Option<(u64, Block)>,
    next_block: u64,
    /// `(OpenAI tool call index, Anthropic block index)`.
    tools: Vec<(u64, u64)>,
    finish: Option<String>,
    has_tool_calls: bool,
    reported: Option<Usage>,
    est: TokenEstimator,
    first_content: bool,
}

impl OpenAiStreamToAnthropic {
    /// `model` is the name the client asked for (sent in `message_start`).
    pub fn new(model: &str) -> Self {
        OpenAiStreamToAnthropic {
            parser: SseParser::new(),
            model: model.to_owned(),
            state: State::Open,
            started: false,
            open: None,
            next_block: 0,
            tools: Vec::new(),
            finish: None,
            has_tool_calls: false,
            reported: None,
            est: TokenEstimator::new(),
            first_content: false,
        }
    }

    /// Bytes held for an SSE event not yet complete (bounded by the caller).
    pub fn pending_bytes(&self) -> usize {
        self.parser.pending().len()
    }

    /// Feed upstream bytes; returns the bytes to send to the client.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        let evs = events(&mut self.parser, Some(chunk));
        let mut out = Vec::new();
        for e in evs {
            self.event(&e, &mut out);
        }
        out
    }

    /// End of the upstream stream. A stream that gave a finish reason but no `[DONE]` is
    /// completed normally; one that gave neither ends with an `error` event.
    pub fn finish(&mut self) -> Vec<u8> {
        let evs = events(&mut self.parser, None);
        let mut out = Vec::new();
        for e in evs {
            self.event(&e, &mut out);
        }
        if self.state == State::Open {
            if self.finish.is_some() {
                self.complete(&mut out);
            } else {
                let err = jobj! {
                    "type" => "error",
                    "error" => jobj! { "type" => "api_error", "message" => INCOMPLETE_STREAM },
                };
                sse_named(&mut out, "error", &err);
                self.state = State::Failed;
            }
        }
        out
    }

    /// The upstream's reported usage, or an estimate of the output (marked `estimated`).
    pub fn usage(&self) -> Usage {
        self.reported.unwrap_or(Usage {
            output_tokens: self.est.tokens(),
            estimated: true,
            ..Usage::default()
        })
    }

    /// Text, thinking or a tool call has been sent (for time-to-first-token).
    pub fn first_content_seen(&self) -> bool {
        self.first_content
    }

    fn start(&mut self, out: &mut Vec<u8>, chunk_id: Option<&str>) {
        if self.started {
            return;
        }
        self.started = true;
        let id = chunk_id.map_or_else(|| random_id("msg_"), |id| format!("msg_{id}"));
        let msg = jobj! {
            "type" => "message_start",
            "message" => jobj! {
                "id" => id,
                "type" => "message",
                "role" => "assistant",
                "model" => self.model.as_str(),
                "content" => Vec::new(),
                "stop_reason" => Json::Null,
                "stop_sequence" => Json::Null,
                "usage" => jobj! { "input_tokens" => 0u64, "output_tokens" => 0u64 },
            },
        };
        sse_named(out, "message_start", &msg);
    }

    fn close_block(&mut self, out: &mut Vec<u8>) {
        if let Some((index, _)) = self.open.take() {
            sse_named(
                out,
                "content_block_stop",
                &jobj! { "type" => "content_block_stop", "index" => index },
            );
        }
    }

    /// Make `kind` the open block, opening it with `start` if needed; returns its index.
    fn open_block(&mut self, out: &mut Vec<u8>, kind: Block, start: Json) -> u64 {
        if let Some((index, open)) = self.open {
            if open == kind {
                return index;
            }
        }
        self.close_block(out);
        let index = self.next_block;
        self.next_block += 1;
        self.open = Some((index, kind));
        sse_named(
            out,
            "content_block_start",
            &jobj! { "type" => "content_block_start", "index" => index, "content_block" => start },
        );
        index
    }

    fn block_delta(out: &mut Vec<u8>, index: u64, delta: Json) {
        sse_named(
            out,
            "content_block_delta",
            &jobj! { "type" => "content_block_delta", "index" => index, "delta" => delta },
        );
    }

    fn event(&mut self, e: &SseEvent, out: &mut Vec<u8>) {
        if self.state != State::Open {
            return;
        }
        if e.data.trim() == "[DONE]" {
            self.start(out, None);
            self.complete(out);
            return;
        }
        let Ok(chunk) = Json::parse_str(&e.data) else {
            return;
        };
        if chunk.get("error").is_some() {
            sse_named(out, "error", &openai_error_to_anthropic_json(&chunk));
            self.state = State::Failed;
            return;
        }
        self.start(out, str_field(&chunk, "id"));
        if let Some(u) = chunk.get("usage").filter(|u| u.as_object().is_some()) {
            self.reported = Some(usage_from_openai(u));
        }
        let choice = chunk
            .get("choices")
            .and_then(Json::as_array)
            .and_then(|cs| {
                cs.iter()
                    .find(|c| c.get("index").and_then(Json::as_u64).unwrap_or(0) == 0)
            });
        let Some(choice) = choice else {
            return;
        };
        if let Some(delta) = choice.get("delta") {
            self.delta(out, delta);
        }
        if let Some(reason) = str_field(choice, "finish_reason") {
            self.close_block(out);
            self.finish = Some(reason.to_owned());
        }
    }

    fn delta(&mut self, out: &mut Vec<u8>, delta: &Json) {
        if let Some(r) = reasoning_text(delta).filter(|r| !r.is_empty()) {
            self.est.feed(r);
            self.first_content = true;
            let start = jobj! { "type" => "thinking", "thinking" => "", "signature" => "" };
            let index = self.open_block(out, Block::Thinking, start);
            Self::block_delta(
                out,
                index,
                jobj! { "type" => "thinking_delta", "thinking" => r },
            );
        }
        if let Some(t) = str_field(delta, "content").filter(|t| !t.is_empty()) {
            self.est.feed(t);
            self.first_content = true;
            let start = jobj! { "type" => "text", "text" => "" };
            let index = self.open_block(out, Block::Text, start);
            Self::block_delta(out, index, jobj! { "type" => "text_delta", "text" => t });
        }
        let calls = delta
            .get("tool_calls")
            .and_then(Json::as_array)
            .unwrap_or_default();
        for call in calls {
            let tool = call.get("index").and_then(Json::as_u64).unwrap_or(0);
            let f = call.get("function");
            let index = match self.tools.iter().find(|(t, _)| *t == tool) {
                Some((_, b)) => *b,
                None => {
                    self.has_tool_calls = true;
                    self.first_content = true;
                    let name = f.and_then(|f| str_field(f, "name")).unwrap_or_default();
                    self.est.feed(name);
                    let start = jobj! {
                        "type" => "tool_use",
                        "id" => str_field(call, "id").map_or_else(|| random_id("toolu_"), str::to_owned),
                        "name" => name,
                        "input" => Obj::new(),
                    };
                    let b = self.open_block(out, Block::Tool(tool), start);
                    self.tools.push((tool, b));
                    b
                }
            };
            let args = f
                .and_then(|f| str_field(f, "arguments"))
                .unwrap_or_default();
            if !args.is_empty() {
                self.est.feed(args);
                // Fragments for an earlier, already closed tool call (servers stream tool
                // calls one after another, so this is rare) are still sent on its index.
                Self::block_delta(
                    out,
                    index,
                    jobj! { "type" => "input_json_delta", "partial_json" => args },
                );
            }
        }
    }

    /// `message_delta` and `message_stop`.
    fn complete(&mut self, out: &mut Vec<u8>) {
        self.close_block(out);
        let finish = self.finish.as_deref().unwrap_or("stop");
        let usage = self.usage();
        let delta = jobj! {
            "type" => "message_delta",
            "delta" => jobj! {
                "stop_reason" => stop_reason(finish, self.has_tool_calls),
                "stop_sequence" => Json::Null,
            },
            "usage" => anthropic_usage_json(&usage),
        };
        sse_named(out, "message_delta", &delta);
        sse_named(out, "message_stop", &jobj! { "type" => "message_stop" });
        self.state = State::Done;
    }
}
