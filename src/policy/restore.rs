//! The response side of the content policies: masked values restored and output deny rules
//! checked in the answer the client receives, whole or streamed.
//!
//! A stream is filtered per choice (per content block for Anthropic) with two bounded
//! hold-backs: the restore keeps back at most the longest placeholder less one character
//! (a possible placeholder prefix at the end of an event's text, prepended to the next
//! event's text), and the deny check keeps back at most `holdback` characters, checked with
//! the last `holdback` characters already sent, so a keyword split across events is found
//! before any of it is sent. Held text is flushed with the choice's finish, at `[DONE]`, or
//! when the stream ends. Events carrying no text pass through byte for byte.
//!
//! A violation in a stream ends it: a closing chunk (`finish_reason: "content_filter"`, or
//! Anthropic's `message_delta` with `stop_reason: "refusal"`), after which the caller sends
//! the error event and drops the upstream. A whole answer with a violation is answered
//! 200 with its content withheld (`text::withhold`), as OpenAI's content filter does.

use super::deny::{DenyList, DenyPolicy};
use super::pii::Vault;
use super::text::{self, Shape};
use super::Action;
use crate::sse::{SseEvent, SseParser};
use bytes::Bytes;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// What a route's policies do to one request's answer.
#[derive(Debug)]
pub struct ResponsePolicy {
    /// The request's masked values, to restore (`mode: mask` only).
    vault: Option<Vault>,
    /// The route's deny rules, with an output list.
    deny: Option<Arc<DenyPolicy>>,
    shape: Shape,
    restored: AtomicBool,
    blocked: AtomicBool,
}

/// An answer's text matched an output deny rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blocked;

impl ResponsePolicy {
    /// The answer's policy; `None` when there is nothing to restore and no output rule.
    pub fn new(vault: Option<Vault>, deny: Option<Arc<DenyPolicy>>, shape: Shape) -> Option<Self> {
        let vault = vault.filter(|v| !v.is_empty());
        let deny = deny.filter(|d| d.output.is_some());
        (vault.is_some() || deny.is_some()).then_some(ResponsePolicy {
            vault,
            deny,
            shape,
            restored: AtomicBool::new(false),
            blocked: AtomicBool::new(false),
        })
    }

    fn output(&self) -> Option<&DenyList> {
        self.deny.as_ref().and_then(|d| d.output.as_ref())
    }

    fn holdback(&self) -> usize {
        self.deny.as_ref().map_or(0, |d| d.holdback)
    }

    /// What the policies did to the answer, for `Exchange.policies`.
    pub fn actions(&self) -> Vec<Action> {
        let mut out = Vec::new();
        if self.restored.load(Ordering::Relaxed) {
            out.push(Action::new("pii", "restored"));
        }
        if self.blocked.load(Ordering::Relaxed) {
            out.push(Action::new("deny_output", "blocked"));
        }
        out
    }

    fn restore(&self, text: &str) -> String {
        match &self.vault {
            Some(v) => {
                let out = v.restore(text);
                if out != text {
                    self.restored.store(true, Ordering::Relaxed);
                }
                out
            }
            None => text.to_string(),
        }
    }

    /// A whole (non-streamed) answer: placeholders restored, content withheld on a
    /// violation. An answer that is not JSON passes unchanged.
    pub fn whole(&self, body: &[u8]) -> Bytes {
        let Ok(mut v) = serde_json::from_slice::<Value>(body) else {
            return Bytes::copy_from_slice(body);
        };
        let mut violated = false;
        text::answer_texts(&mut v, self.shape, &mut |s| {
            *s = self.restore(s);
            violated |= self.output().is_some_and(|l| l.matches(s));
        });
        if violated {
            self.blocked.store(true, Ordering::Relaxed);
            text::withhold(&mut v, self.shape);
        }
        serde_json::to_vec(&v).map_or_else(|_| Bytes::copy_from_slice(body), Bytes::from)
    }

    /// A filter for a streamed answer.
    pub fn stream(&self) -> StreamFilter<'_> {
        StreamFilter {
            policy: self,
            parser: SseParser::new(),
            texts: Vec::new(),
            template: None,
            ended: false,
        }
    }
}

/// One choice's text on its way through the restore and the deny window.
#[derive(Debug, Default)]
pub struct TextFilter {
    /// A possible placeholder prefix, waiting for the rest.
    restore_held: String,
    /// Restored text not yet sent (at most `holdback` characters after a push).
    deny_held: String,
    /// The last `holdback` characters sent, checked again with what follows.
    context: String,
}

/// The byte offset in `s` where its last `n` characters start (0 when it has fewer).
fn last_chars(s: &str, n: usize) -> usize {
    if n == 0 {
        return s.len();
    }
    s.char_indices().rev().nth(n - 1).map_or(0, |(i, _)| i)
}

impl TextFilter {
    /// Filter the next piece of text (`last`: flush everything held); what may be sent.
    pub fn push(&mut self, p: &ResponsePolicy, text: &str, last: bool) -> Result<String, Blocked> {
        let ready = match &p.vault {
            Some(v) => {
                self.restore_held.push_str(text);
                let cut = match last {
                    true => self.restore_held.len(),
                    false => v.partial_start(&self.restore_held),
                };
                let ready: String = self.restore_held.drain(..cut).collect();
                p.restore(&ready)
            }
            None => text.to_string(),
        };
        let Some(list) = p.output() else {
            return Ok(ready);
        };
        self.deny_held.push_str(&ready);
        let window = format!("{}{}", self.context, self.deny_held);
        if list.matches(&window) {
            p.blocked.store(true, Ordering::Relaxed);
            return Err(Blocked);
        }
        let cut = match last {
            true => self.deny_held.len(),
            false => last_chars(&self.deny_held, p.holdback()),
        };
        let out: String = self.deny_held.drain(..cut).collect();
        self.context.push_str(&out);
        let keep = last_chars(&self.context, p.holdback());
        self.context.drain(..keep);
        Ok(out)
    }

    /// Characters held back now (for the bound's tests).
    pub fn held_chars(&self) -> (usize, usize) {
        (
            self.restore_held.chars().count(),
            self.deny_held.chars().count(),
        )
    }
}

/// What a stream filter gives the client.
#[derive(Debug, PartialEq, Eq)]
pub enum Filtered {
    /// Send these bytes and go on.
    Pass(Bytes),
    /// Send these bytes (the events before the violation and the closing chunk), then the
    /// error event, and stop the upstream.
    Blocked(Bytes),
}

/// A streamed answer's filter (one per attempt that answers).
pub struct StreamFilter<'a> {
    policy: &'a ResponsePolicy,
    parser: SseParser,
    /// Per choice (content block) index.
    texts: Vec<(u64, TextFilter)>,
    /// The last OpenAI chunk seen: its id, model, … for chunks the filter writes.
    template: Option<Value>,
    ended: bool,
}

fn sse_data(out: &mut Vec<u8>, event: Option<&str>, v: &Value) {
    if let Some(name) = event {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(name.as_bytes());
        out.push(b'\n');
    }
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(v.to_string().as_bytes());
    out.extend_from_slice(b"\n\n");
}

impl StreamFilter<'_> {
    /// The most characters any choice holds back now: (restore, deny).
    pub fn held_chars(&self) -> (usize, usize) {
        self.texts.iter().fold((0, 0), |(r, d), (_, t)| {
            let (tr, td) = t.held_chars();
            (r.max(tr), d.max(td))
        })
    }

    /// Filter the next chunk of the stream.
    pub fn push(&mut self, chunk: &Bytes) -> Filtered {
        if self.ended {
            return Filtered::Pass(Bytes::new());
        }
        let mut events = Vec::new();
        self.parser.push_bytes(chunk, |e| events.push(e));
        self.events(events, Bytes::new())
    }

    /// The stream ended: flush what is held and whatever the parser kept.
    pub fn finish(&mut self) -> Filtered {
        if self.ended {
            return Filtered::Pass(Bytes::new());
        }
        let mut events = Vec::new();
        let rest = self.parser.finish_lenient(|e| events.push(e));
        let mut out = Vec::new();
        match self.events_into(events, &mut out) {
            Err(Blocked) => return self.block(out),
            Ok(()) => {
                if let Err(Blocked) = self.flush_all(&mut out) {
                    return self.block(out);
                }
            }
        }
        out.extend_from_slice(&rest);
        Filtered::Pass(out.into())
    }

    fn events(&mut self, events: Vec<SseEvent>, tail: Bytes) -> Filtered {
        let mut out = Vec::new();
        if let Err(Blocked) = self.events_into(events, &mut out) {
            return self.block(out);
        }
        out.extend_from_slice(&tail);
        Filtered::Pass(out.into())
    }

    fn events_into(&mut self, events: Vec<SseEvent>, out: &mut Vec<u8>) -> Result<(), Blocked> {
        for e in events {
            match self.policy.shape {
                Shape::Messages => self.anthropic_event(&e, out)?,
                Shape::Chat | Shape::Completions => self.openai_event(&e, out)?,
            }
        }
        Ok(())
    }

    fn text(&mut self, index: u64) -> &mut TextFilter {
        let at = match self.texts.iter().position(|(i, _)| *i == index) {
            Some(at) => at,
            None => {
                self.texts.push((index, TextFilter::default()));
                self.texts.len() - 1
            }
        };
        &mut self.texts[at].1
    }

    fn push_text(&mut self, index: u64, text: &str, last: bool) -> Result<String, Blocked> {
        let policy = self.policy;
        self.text(index).push(policy, text, last)
    }

    fn openai_event(&mut self, e: &SseEvent, out: &mut Vec<u8>) -> Result<(), Blocked> {
        if e.data.trim() == "[DONE]" {
            self.flush_all(out)?;
            out.extend_from_slice(&e.raw);
            return Ok(());
        }
        let Ok(mut v) = serde_json::from_str::<Value>(&e.data) else {
            out.extend_from_slice(&e.raw);
            return Ok(());
        };
        let changed = match v.get_mut("choices").and_then(Value::as_array_mut) {
            Some(choices) => self.openai_choices(choices)?,
            None => false,
        };
        if changed {
            sse_data(out, None, &v);
        } else {
            out.extend_from_slice(&e.raw);
        }
        if v.get("choices").is_some() {
            self.template = Some(v);
        }
        Ok(())
    }

    /// Filter each choice's text; whether any changed.
    fn openai_choices(&mut self, choices: &mut [Value]) -> Result<bool, Blocked> {
        let chat = self.policy.shape == Shape::Chat;
        let mut changed = false;
        for (pos, c) in choices.iter_mut().enumerate() {
            let index = c.get("index").and_then(Value::as_u64).unwrap_or(pos as u64);
            let last = c.get("finish_reason").is_some_and(|f| !f.is_null());
            let slot = match chat {
                true => c.get_mut("delta"),
                false => Some(&mut *c),
            };
            let Some(slot) = slot.and_then(Value::as_object_mut) else {
                continue;
            };
            let key = if chat { "content" } else { "text" };
            let given = slot.get(key).and_then(Value::as_str);
            if given.is_none() && !last {
                continue;
            }
            let given = given.unwrap_or("").to_string();
            let sent = self.push_text(index, &given, last)?;
            if sent != given {
                slot.insert(key.into(), Value::String(sent));
                changed = true;
            }
        }
        Ok(changed)
    }

    fn anthropic_event(&mut self, e: &SseEvent, out: &mut Vec<u8>) -> Result<(), Blocked> {
        let Ok(mut v) = serde_json::from_str::<Value>(&e.data) else {
            out.extend_from_slice(&e.raw);
            return Ok(());
        };
        let index = v.get("index").and_then(Value::as_u64).unwrap_or(0);
        match v.get("type").and_then(Value::as_str) {
            Some("content_block_delta") => {
                let delta = v.get_mut("delta").and_then(Value::as_object_mut);
                let Some(d) = delta.filter(|d| d.get("type").is_some_and(|t| t == "text_delta"))
                else {
                    out.extend_from_slice(&e.raw);
                    return Ok(());
                };
                let given = d
                    .get("text")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                let sent = self.push_text(index, &given, false)?;
                if sent == given {
                    out.extend_from_slice(&e.raw);
                } else {
                    d.insert("text".into(), Value::String(sent));
                    sse_data(out, Some("content_block_delta"), &v);
                }
            }
            Some("content_block_stop") => {
                self.flush_anthropic(index, out)?;
                out.extend_from_slice(&e.raw);
            }
            _ => out.extend_from_slice(&e.raw),
        }
        Ok(())
    }

    fn flush_anthropic(&mut self, index: u64, out: &mut Vec<u8>) -> Result<(), Blocked> {
        let rest = self.push_text(index, "", true)?;
        if !rest.is_empty() {
            let v = json!({"type": "content_block_delta", "index": index,
                "delta": {"type": "text_delta", "text": rest}});
            sse_data(out, Some("content_block_delta"), &v);
        }
        Ok(())
    }

    /// Send what every choice still holds (the stream is ending).
    fn flush_all(&mut self, out: &mut Vec<u8>) -> Result<(), Blocked> {
        let indexes: Vec<u64> = self.texts.iter().map(|(i, _)| *i).collect();
        for index in indexes {
            if self.policy.shape == Shape::Messages {
                self.flush_anthropic(index, out)?;
                continue;
            }
            let rest = self.push_text(index, "", true)?;
            if !rest.is_empty() {
                let choice = match self.policy.shape {
                    Shape::Chat => json!({"index": index, "delta": {"content": rest},
                        "finish_reason": null}),
                    _ => json!({"index": index, "text": rest, "finish_reason": null}),
                };
                sse_data(out, None, &self.chunk(choice));
            }
        }
        Ok(())
    }

    /// A chunk like the stream's own (id, model, …) with one choice.
    fn chunk(&self, choice: Value) -> Value {
        chunk_like(self.template.as_ref(), choice)
    }

    /// End the stream after `out` with the closing chunk of a content filter.
    fn block(&mut self, mut out: Vec<u8>) -> Filtered {
        self.ended = true;
        closing(&mut out, self.policy.shape, self.template.as_ref());
        Filtered::Blocked(out.into())
    }
}

/// A chunk like a stream's own (`template`: its last chunk: id, model, …) with one choice.
pub fn chunk_like(template: Option<&Value>, choice: Value) -> Value {
    let mut v = template.cloned().unwrap_or_else(|| json!({}));
    text::set(&mut v, "choices", Value::Array(vec![choice]));
    if let Some(o) = v.as_object_mut() {
        o.remove("usage");
    }
    v
}

/// The closing event of a stream a content filter stops (`finish_reason: "content_filter"`,
/// Anthropic's `stop_reason: "refusal"`), appended to `out`.
pub fn closing(out: &mut Vec<u8>, shape: Shape, template: Option<&Value>) {
    match shape {
        Shape::Messages => {
            let v = json!({"type": "message_delta",
                "delta": {"stop_reason": "refusal", "stop_sequence": null},
                "usage": {"output_tokens": 0}});
            sse_data(out, Some("message_delta"), &v);
        }
        shape => {
            let choice = match shape {
                Shape::Chat => json!({"index": 0, "delta": {}, "finish_reason": "content_filter"}),
                _ => json!({"index": 0, "text": "", "finish_reason": "content_filter"}),
            };
            sse_data(out, None, &chunk_like(template, choice));
        }
    }
}
