//! Output moderation's windows (`routes[].moderation.output`): the answer's text, as the
//! client would receive it (after the PII restore and the output deny rules), cut into
//! windows that are checked before any of their text is sent.
//!
//! A stream's events are held from the first one carrying text until its window closes:
//! when the window holds `window` characters (an event whose text would overflow the window
//! is cut in two events at the boundary, so at most `window` characters are held), when a
//! choice (content block) ends, at `[DONE]`, or when the stream ends. The closed window's text (one string per
//! choice, for a check's `input` array) is checked, then its events are sent byte for byte
//! (but for an event cut at a boundary, re-serialized).
//! Events with no text outside a window pass at once. A whole answer is checked once.

use super::restore::closing;
use super::text::{self, Shape};
use crate::sse::{SseEvent, SseParser};
use bytes::Bytes;
use serde_json::Value;

/// What a stream's moderation gives the pipe, in order.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece {
    /// Bytes with no unchecked text: send them.
    Pass(Bytes),
    /// A closed window: check `texts` (one per choice), then send `bytes`.
    Window { texts: Vec<String>, bytes: Bytes },
}

/// One streamed answer's windows.
pub struct Windows {
    window: usize,
    shape: Shape,
    parser: SseParser,
    /// The held events' bytes.
    held: Vec<u8>,
    /// The held text, per choice (content block) index.
    texts: Vec<(u64, String)>,
    chars: usize,
    /// The last OpenAI chunk seen, for the closing chunk.
    template: Option<Value>,
}

impl Windows {
    pub fn new(window: usize, shape: Shape) -> Self {
        Windows {
            window: window.max(1),
            shape,
            parser: SseParser::new(),
            held: Vec::new(),
            texts: Vec::new(),
            chars: 0,
            template: None,
        }
    }

    /// The next bytes of the stream.
    pub fn push(&mut self, chunk: &Bytes) -> Vec<Piece> {
        let mut events = Vec::new();
        self.parser.push_bytes(chunk, |e| events.push(e));
        let mut out = Vec::new();
        for e in events {
            self.event(e, &mut out);
        }
        out
    }

    /// The stream ended: the last window, with whatever the parser kept.
    pub fn finish(&mut self) -> Vec<Piece> {
        let mut events = Vec::new();
        let rest = self.parser.finish_lenient(|e| events.push(e));
        let mut out = Vec::new();
        for e in events {
            self.event(e, &mut out);
        }
        if self.held.is_empty() {
            push_pass(&mut out, rest);
        } else {
            self.held.extend_from_slice(&rest);
            self.close(&mut out);
        }
        out
    }

    /// The closing chunk of a stream the check stops.
    pub fn closing(&self) -> Bytes {
        let mut out = Vec::new();
        closing(&mut out, self.shape, self.template.as_ref());
        out.into()
    }

    /// Characters of text held back now.
    pub fn held_chars(&self) -> usize {
        self.chars
    }

    fn event(&mut self, e: SseEvent, out: &mut Vec<Piece>) {
        let (pieces, ends) = self.read(&e);
        if self.held.is_empty() && pieces.is_empty() && !ends {
            push_pass(out, e.raw);
            return;
        }
        let room = self.window.saturating_sub(self.chars);
        if let [(index, t)] = pieces.as_slice() {
            if !ends && t.chars().count() > room {
                if let Some((head, tail)) = self.split(&e, *index, t, room) {
                    self.event(head, out);
                    self.event(tail, out);
                    return;
                }
            }
        }
        self.held.extend_from_slice(&e.raw);
        for (index, t) in pieces {
            self.chars += t.chars().count();
            match self.texts.iter_mut().find(|(i, _)| *i == index) {
                Some((_, held)) => held.push_str(&t),
                None => self.texts.push((index, t)),
            }
        }
        if ends || self.chars >= self.window {
            self.close(out);
        }
    }

    fn close(&mut self, out: &mut Vec<Piece>) {
        let bytes = Bytes::from(std::mem::take(&mut self.held));
        let texts: Vec<String> = std::mem::take(&mut self.texts)
            .into_iter()
            .map(|(_, t)| t)
            .filter(|t| !t.is_empty())
            .collect();
        self.chars = 0;
        match texts.is_empty() {
            true => push_pass(out, bytes),
            false => out.push(Piece::Window { texts, bytes }),
        }
    }

    /// An event whose text overflows the window cut in two: its first `n` characters (which
    /// fill the window), then the rest, each an event of its own.
    fn split(&self, e: &SseEvent, index: u64, t: &str, n: usize) -> Option<(SseEvent, SseEvent)> {
        let v = serde_json::from_str::<Value>(&e.data).ok()?;
        let at = t.char_indices().nth(n).map_or(t.len(), |(i, _)| i);
        let part = |text: &str| {
            let mut v = v.clone();
            set_text(&mut v, self.shape, index, text)?;
            let data = v.to_string();
            let mut raw = Vec::new();
            if let Some(name) = &e.event {
                raw.extend_from_slice(format!("event: {name}\n").as_bytes());
            }
            raw.extend_from_slice(format!("data: {data}\n\n").as_bytes());
            Some(SseEvent {
                event: e.event.clone(),
                data,
                raw: raw.into(),
            })
        };
        Some((part(&t[..at])?, part(&t[at..])?))
    }

    /// An event's texts by choice index, and whether it ends a choice or the stream.
    fn read(&mut self, e: &SseEvent) -> (Vec<(u64, String)>, bool) {
        if e.data.trim() == "[DONE]" {
            return (Vec::new(), true);
        }
        let Ok(v) = serde_json::from_str::<Value>(&e.data) else {
            return (Vec::new(), false);
        };
        if self.shape == Shape::Messages {
            return anthropic_text(&v);
        }
        let read = openai_text(&v, self.shape);
        if v.get("choices").is_some() {
            self.template = Some(v);
        }
        read
    }
}

fn push_pass(out: &mut Vec<Piece>, bytes: Bytes) {
    if !bytes.is_empty() {
        out.push(Piece::Pass(bytes));
    }
}

/// Replace the text of choice `index` (Anthropic: the delta's); `None` when it has none.
fn set_text(v: &mut Value, shape: Shape, index: u64, text: &str) -> Option<()> {
    let slot = match shape {
        Shape::Messages => v.get_mut("delta")?.get_mut("text")?,
        _ => {
            let choices = v.get_mut("choices")?.as_array_mut()?;
            let pos = choices.iter().enumerate().position(|(pos, c)| {
                c.get("index").and_then(Value::as_u64).unwrap_or(pos as u64) == index
            })?;
            let c = choices.get_mut(pos)?;
            match shape {
                Shape::Chat => c.get_mut("delta")?.get_mut("content")?,
                _ => c.get_mut("text")?,
            }
        }
    };
    *slot = Value::String(text.to_string());
    Some(())
}

fn openai_text(v: &Value, shape: Shape) -> (Vec<(u64, String)>, bool) {
    let mut texts = Vec::new();
    let mut ends = false;
    let choices = v.get("choices").and_then(Value::as_array);
    for (pos, c) in choices.into_iter().flatten().enumerate() {
        let index = c.get("index").and_then(Value::as_u64).unwrap_or(pos as u64);
        let t = match shape {
            Shape::Chat => c.get("delta").and_then(|d| d.get("content")),
            _ => c.get("text"),
        };
        if let Some(t) = t.and_then(Value::as_str).filter(|t| !t.is_empty()) {
            texts.push((index, t.to_string()));
        }
        ends |= c.get("finish_reason").is_some_and(|f| !f.is_null());
    }
    (texts, ends)
}

fn anthropic_text(v: &Value) -> (Vec<(u64, String)>, bool) {
    let index = v.get("index").and_then(Value::as_u64).unwrap_or(0);
    match v.get("type").and_then(Value::as_str) {
        Some("content_block_delta") => {
            let delta = v.get("delta");
            let is_text = delta.and_then(|d| d.get("type")).and_then(Value::as_str);
            let t = delta.and_then(|d| d.get("text")).and_then(Value::as_str);
            match (is_text, t) {
                (Some("text_delta"), Some(t)) if !t.is_empty() => {
                    (vec![(index, t.to_string())], false)
                }
                _ => (Vec::new(), false),
            }
        }
        Some("content_block_stop" | "message_delta" | "message_stop") => (Vec::new(), true),
        _ => (Vec::new(), false),
    }
}

/// A whole answer's texts (one per choice or content block); none when it is not JSON.
pub fn whole_texts(body: &[u8], shape: Shape) -> Vec<String> {
    let Ok(mut v) = serde_json::from_slice::<Value>(body) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    text::answer_texts(&mut v, shape, &mut |s| {
        if !s.is_empty() {
            out.push(s.clone());
        }
    });
    out
}

/// A whole answer with its content withheld, as a content filter does.
pub fn withheld(body: &[u8], shape: Shape) -> Bytes {
    let Ok(mut v) = serde_json::from_slice::<Value>(body) else {
        return Bytes::copy_from_slice(body);
    };
    text::withhold(&mut v, shape);
    serde_json::to_vec(&v).map_or_else(|_| Bytes::copy_from_slice(body), Bytes::from)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn chat(text: &str) -> String {
        let v = serde_json::json!({"id":"c","choices":[{"index":0,"delta":{"content":text},"finish_reason":null}]});
        format!("data: {v}\n\n")
    }

    const FINISH: &str =
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n";

    /// Run `stream` in `cuts`-sized pieces through windows of `n`, with a fake checker that
    /// flags any window containing `bad`: the bytes sent, the windows checked, and whether
    /// the stream was stopped.
    fn run(stream: &str, n: usize, cut: usize, bad: &str) -> (String, Vec<Vec<String>>, bool) {
        let mut w = Windows::new(n, Shape::Chat);
        let (mut sent, mut checked) = (Vec::new(), Vec::new());
        let bytes = stream.as_bytes();
        let mut steps: Vec<Vec<Piece>> = bytes
            .chunks(cut)
            .map(|c| {
                let pieces = w.push(&Bytes::copy_from_slice(c));
                assert!(w.held_chars() < n, "held past the window");
                pieces
            })
            .collect();
        steps.push(w.finish());
        for piece in steps.into_iter().flatten() {
            match piece {
                Piece::Pass(b) => sent.extend_from_slice(&b),
                Piece::Window { texts, bytes } => {
                    let flagged = texts.iter().any(|t| t.contains(bad));
                    checked.push(texts);
                    if flagged {
                        sent.extend_from_slice(&w.closing());
                        return (String::from_utf8(sent).unwrap(), checked, true);
                    }
                    sent.extend_from_slice(&bytes);
                }
            }
        }
        (String::from_utf8(sent).unwrap(), checked, false)
    }

    #[test]
    fn windows_close_at_the_size_and_at_the_finish() {
        let stream = format!(
            "{}{}{}{}data: [DONE]\n\n",
            chat("abcd"),
            chat("efgh"),
            chat("ij"),
            FINISH
        );
        for cut in [1, 7, 1000] {
            let (sent, checked, stopped) = run(&stream, 8, cut, "zzz");
            assert!(!stopped);
            assert_eq!(sent, stream, "a clean stream arrives byte for byte");
            assert_eq!(checked, [vec!["abcdefgh".to_string()], vec!["ij".into()]]);
        }
    }

    #[test]
    fn an_event_longer_than_the_window_is_cut_at_its_boundary() {
        let stream = format!("{}{}{FINISH}", chat("abc"), chat("défghijklmn"));
        let (sent, checked, _) = run(&stream, 4, 1000, "zzz");
        assert_eq!(
            checked,
            [
                vec!["abcd".to_string()],
                vec!["éfgh".into()],
                vec!["ijkl".into()],
                vec!["mn".into()]
            ]
        );
        let (text, _) = content(&sent);
        assert_eq!(text, "abcdéfghijklmn");
        let mut w = Windows::new(2, Shape::Messages);
        let delta = "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"xyz\"}}\n\n";
        let pieces = w.push(&Bytes::from(delta));
        let Piece::Window { texts, bytes } = &pieces[0] else {
            panic!("{pieces:?}")
        };
        assert_eq!(texts, &["xy"]);
        assert!(bytes.starts_with(b"event: content_block_delta\ndata: "));
        assert_eq!(w.held_chars(), 1);
    }

    /// The text of an OpenAI chat stream's chunks, and its events.
    fn content(sent: &str) -> (String, usize) {
        let mut text = String::new();
        let mut n = 0;
        for line in sent.lines().filter_map(|l| l.strip_prefix("data: ")) {
            n += 1;
            if let Ok(v) = serde_json::from_str::<Value>(line) {
                text.push_str(v["choices"][0]["delta"]["content"].as_str().unwrap_or(""));
            }
        }
        (text, n)
    }

    #[test]
    fn a_flagged_window_is_never_sent() {
        let stream = format!(
            "{}{}{}{}{}data: [DONE]\n\n",
            chat("clean "),
            chat("text!!"),
            chat("then fl"),
            chat("agme here"),
            FINISH
        );
        let (sent, checked, stopped) = run(&stream, 12, 5, "flagme");
        assert!(stopped);
        assert_eq!(checked.len(), 2);
        assert!(sent.contains("clean ") && sent.contains("text!!"));
        assert!(!sent.contains("then fl") && !sent.contains("agme"));
        let last = sent.trim_end().rsplit("\n\n").next().unwrap();
        assert!(
            last.contains("\"finish_reason\":\"content_filter\""),
            "{sent}"
        );
    }

    #[test]
    fn utf8_split_across_chunks_and_counted_in_characters() {
        let stream = format!("{}{}{}", chat("日本語の"), chat("文章です"), FINISH);
        for cut in 1..6 {
            let (sent, checked, _) = run(&stream, 4, cut, "zzz");
            assert_eq!(sent, stream);
            assert_eq!(
                checked,
                [vec!["日本語の".to_string()], vec!["文章です".into()]]
            );
        }
    }

    #[test]
    fn choices_are_kept_apart_and_events_without_text_pass() {
        let two = |a: &str, b: &str| {
            let v = serde_json::json!({"choices":[{"index":0,"delta":{"content":a}},{"index":1,"delta":{"content":b}}]});
            format!("data: {v}\n\n")
        };
        let role = "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\"}}]}\n\n";
        let stream = format!("{role}{}{}{FINISH}", two("fl", "ag"), two("ag", "me"));
        let mut w = Windows::new(100, Shape::Chat);
        let pieces = w.push(&Bytes::from(stream.clone()));
        assert_eq!(pieces[0], Piece::Pass(Bytes::from(role)));
        let Piece::Window { texts, .. } = &pieces[1] else {
            panic!("{pieces:?}")
        };
        assert_eq!(texts, &["flag", "agme"]);
    }

    #[test]
    fn anthropic_blocks_close_windows() {
        let delta = |t: &str| {
            format!("event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\"{t}\"}}}}\n\n")
        };
        let stop =
            "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n";
        let mut w = Windows::new(1000, Shape::Messages);
        let stream = format!("{}{}{stop}", delta("a"), delta("b"));
        let pieces = w.push(&Bytes::from(stream.clone()));
        assert_eq!(
            pieces,
            [Piece::Window {
                texts: vec!["ab".into()],
                bytes: Bytes::from(stream)
            }]
        );
        assert!(String::from_utf8(w.closing().to_vec())
            .unwrap()
            .contains("refusal"));
    }

    #[test]
    fn whole_answers() {
        let body = br#"{"choices":[{"index":0,"message":{"role":"assistant","content":"hi flagme"},"finish_reason":"stop"}]}"#;
        assert_eq!(whole_texts(body, Shape::Chat), ["hi flagme"]);
        let out: Value = serde_json::from_slice(&withheld(body, Shape::Chat)).unwrap();
        assert_eq!(out["choices"][0]["finish_reason"], "content_filter");
        assert!(out["choices"][0]["message"]["content"].is_null());
        assert!(whole_texts(b"not json", Shape::Chat).is_empty());
    }
}
