//! Streaming translation of Gemini `streamGenerateContent?alt=sse` into OpenAI
//! `chat.completion.chunk` SSE ([`GeminiStreamToOpenAi`]).
//!
//! Every Gemini event is a whole `GenerateContentResponse` holding the next piece of each
//! candidate; there is no terminal event, the stream simply ends after the chunk that
//! carries `finishReason`. Parsing uses [`crate::sse::SseParser`], so output and usage do
//! not depend on how the input is chunked.

use super::common::{openai_stream_error, sse_data, ChunkWriter, INCOMPLETE_STREAM, SSE_DONE};
use super::gemini_response::{
    candidate_parts, finish_reason, gemini_error_json, usage_from_gemini, CallIds,
};
use super::json::{jobj, str_field, Json, Obj};
use crate::sse::{SseEvent, SseParser};
use crate::usage::{TokenEstimator, Usage};

/// Per-candidate (choice) state.
#[derive(Debug, Clone, Default)]
struct Choice {
    index: u64,
    tool_calls: usize,
    finish: Option<String>,
}

/// Gemini stream → OpenAI chunk stream.
///
/// Each candidate's text, thought text (`reasoning_content`) and function calls (each a
/// complete tool call: id, name and arguments in one chunk) are sent as they arrive, after
/// a role chunk per choice. [`finish`](Self::finish) sends the finish chunk of every
/// choice, then the usage chunk (when `include_usage`), then `data: [DONE]`; if no
/// candidate finished (the stream was cut), an OpenAI error event instead. An error
/// object in the stream becomes an error event and ends the translation. Usage is the last
/// `usageMetadata` seen.
#[derive(Debug)]
pub struct GeminiStreamToOpenAi {
    parser: SseParser,
    pub(crate) w: ChunkWriter,
    include_usage: bool,
    id_set: bool,
    ids: CallIds,
    choices: Vec<Choice>,
    blocked: bool,
    failed: bool,
    finished: bool,
    reported: Option<Usage>,
    est: TokenEstimator,
    first_content: bool,
}

impl GeminiStreamToOpenAi {
    /// `model` is the name the client asked for (sent in every chunk).
    pub fn new(model: &str, include_usage: bool) -> Self {
        GeminiStreamToOpenAi {
            parser: SseParser::new(),
            w: ChunkWriter::new(model),
            include_usage,
            id_set: false,
            ids: CallIds::new(),
            choices: Vec::new(),
            blocked: false,
            failed: false,
            finished: false,
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
        let mut evs = Vec::new();
        self.parser.push(chunk, |e| evs.push(e));
        let mut out = Vec::new();
        for e in evs {
            self.event(&e, &mut out);
        }
        out
    }

    /// End of the upstream stream; returns the closing bytes for the client.
    pub fn finish(&mut self) -> Vec<u8> {
        let mut evs = Vec::new();
        self.parser.finish_lenient(|e| evs.push(e));
        let mut out = Vec::new();
        for e in evs {
            self.event(&e, &mut out);
        }
        if self.failed || self.finished {
            return out;
        }
        self.finished = true;
        let any_finished = self.choices.iter().any(|c| c.finish.is_some());
        if !any_finished && !self.blocked {
            openai_stream_error(
                &mut out,
                INCOMPLETE_STREAM,
                "server_error",
                "upstream_incomplete",
            );
            self.failed = true;
            return out;
        }
        if self.choices.is_empty() {
            // Blocked prompt: no candidate at all.
            self.role(&mut out, 0);
        }
        let mut choices = std::mem::take(&mut self.choices);
        choices.sort_by_key(|c| c.index);
        for c in &choices {
            let reason = match &c.finish {
                Some(r) => finish_reason(r, c.tool_calls > 0),
                None if self.blocked => "content_filter",
                None => "stop",
            };
            self.w
                .choice(&mut out, c.index, Json::Obj(Obj::new()), Some(reason));
        }
        self.choices = choices;
        if self.include_usage {
            let u = self.usage();
            self.w.usage(&mut out, &u);
        }
        out.extend_from_slice(SSE_DONE);
        out
    }

    /// The last reported usage, or an estimate of the output (marked `estimated`).
    pub fn usage(&self) -> Usage {
        self.reported.unwrap_or(Usage {
            output_tokens: self.est.tokens(),
            estimated: true,
            ..Usage::default()
        })
    }

    /// Text, reasoning or a tool call has been sent (for time-to-first-token).
    pub fn first_content_seen(&self) -> bool {
        self.first_content
    }

    /// Position of choice `index`, sending its role chunk when it is new.
    fn role(&mut self, out: &mut Vec<u8>, index: u64) -> usize {
        if let Some(pos) = self.choices.iter().position(|c| c.index == index) {
            return pos;
        }
        self.choices.push(Choice {
            index,
            ..Choice::default()
        });
        self.w.choice(
            out,
            index,
            jobj! { "role" => "assistant", "content" => "" },
            None,
        );
        self.choices.len() - 1
    }

    fn event(&mut self, e: &SseEvent, out: &mut Vec<u8>) {
        if self.failed || self.finished {
            return;
        }
        let Ok(resp) = Json::parse_str(&e.data) else {
            return;
        };
        let resp = match resp {
            // A JSON array stream (no `alt=sse`) would hold whole responses; take the first.
            Json::Arr(mut a) if !a.is_empty() => a.swap_remove(0),
            other => other,
        };
        if resp.get("error").is_some() {
            sse_data(out, &gemini_error_json(&resp));
            self.failed = true;
            return;
        }
        let rid = str_field(&resp, "responseId");
        if !self.id_set {
            self.id_set = true;
            if let Some(r) = rid {
                self.w.id = format!("chatcmpl-{r}");
            }
        }
        self.ids.response_id(rid);
        if let Some(u) = resp.get("usageMetadata") {
            self.reported = Some(usage_from_gemini(u));
        }
        if resp
            .get("promptFeedback")
            .and_then(|f| f.get("blockReason"))
            .is_some()
        {
            self.blocked = true;
        }
        let candidates = resp
            .get("candidates")
            .and_then(Json::as_array)
            .unwrap_or_default();
        for (i, cand) in candidates.iter().enumerate() {
            let index = cand.get("index").and_then(Json::as_u64).unwrap_or(i as u64);
            let pos = self.role(out, index);
            let first_tool = self.choices.get(pos).map_or(0, |c| c.tool_calls);
            let parts = candidate_parts(cand, &mut self.ids, first_tool);
            if !parts.reasoning.is_empty() {
                self.est.feed(&parts.reasoning);
                self.first_content = true;
                self.w.choice(
                    out,
                    index,
                    jobj! { "reasoning_content" => parts.reasoning },
                    None,
                );
            }
            if !parts.text.is_empty() {
                self.est.feed(&parts.text);
                self.first_content = true;
                self.w
                    .choice(out, index, jobj! { "content" => parts.text }, None);
            }
            if !parts.calls.is_empty() {
                for c in &parts.calls {
                    if let Some(f) = c.get("function") {
                        self.est.feed(str_field(f, "name").unwrap_or_default());
                        self.est.feed(str_field(f, "arguments").unwrap_or_default());
                    }
                }
                self.first_content = true;
                let n = parts.calls.len();
                self.w
                    .choice(out, index, jobj! { "tool_calls" => parts.calls }, None);
                if let Some(c) = self.choices.get_mut(pos) {
                    c.tool_calls += n;
                }
            }
            if let Some(reason) = str_field(cand, "finishReason") {
                if let Some(c) = self.choices.get_mut(pos) {
                    c.finish = Some(reason.to_owned());
                }
            }
        }
    }
}
