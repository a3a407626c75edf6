//! [`LongJson`]: a JSON answer too long to keep whole for its usage, read in one pass as it
//! goes by, in bounded memory.
//!
//! A whole (non-streamed) answer is normally kept until its end and its `usage` read from it
//! (`usage_from_json`, or the provider protocol's reader). Past a bound the gateway stops
//! keeping it and hands the bytes so far, then every later chunk, to a `LongJson`, which
//! follows the JSON structure byte by byte (open containers, strings and their escapes) and
//! keeps the answer's *skeleton*: its top-level object with every member whose value is at
//! most [`MAX_MEMBER`] bytes written as it came, and every longer value emptied (`""`, `[]`,
//! `{}`, or `null`). The usage is then read from the skeleton by the same reader as a whole
//! answer's, so a provider's counts are charged exactly however long the answer was, and
//! however it was chunked. When the answer reported no usage, [`LongJson::estimate`] gives
//! the estimate over the text of its strings.
//!
//! The pass checks the structure (one object, balanced, strings closed, nothing after it);
//! the values kept are parsed again from the skeleton, the emptied ones are not checked. A
//! repeated `usage` member gives no usage, as serde_json's reading of a whole answer does.

use super::{TokenEstimator, Usage};

/// Longest top-level value kept as it came in the skeleton.
pub const MAX_MEMBER: usize = 16 << 10;
/// The skeleton's bound, past which members other than `usage` are left out (it holds at
/// most this plus one `usage` member).
const MAX_SKELETON: usize = 64 << 10;
/// Longest top-level key kept (quotes and escapes included); a member with a longer key is
/// left out.
const MAX_KEY: usize = 256;

/// Where the pass is in the top-level object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Before the opening `{`.
    Before,
    /// After `{` or `,`: a key, or (after `{` only) the closing `}`.
    Key { first: bool },
    /// Inside a top-level key.
    InKey,
    /// After a key, before its `:`.
    Colon,
    /// A member's value, up to the `,` or `}` that ends it at the top level.
    Value,
    /// After the closing `}`: only whitespace may follow.
    Done,
    /// Not one JSON object: no usage is read.
    Broken,
}

/// The pass over one long JSON answer.
#[derive(Debug)]
pub struct LongJson {
    phase: Phase,
    /// Containers open (the top-level object counts one).
    depth: u32,
    in_string: bool,
    escaped: bool,
    /// The member being read: its key as written (quoted), its value (up to `MAX_MEMBER`
    /// bytes), and whether the value went past that.
    key: Vec<u8>,
    value: Vec<u8>,
    value_long: bool,
    skeleton: Vec<u8>,
    members: usize,
    usage_seen: bool,
    /// The text of every string, and the bytes of a character split between chunks.
    text: TokenEstimator,
    carry: Vec<u8>,
}

impl Default for LongJson {
    fn default() -> Self {
        Self::new()
    }
}

impl LongJson {
    pub fn new() -> Self {
        LongJson {
            phase: Phase::Before,
            depth: 0,
            in_string: false,
            escaped: false,
            key: Vec::new(),
            value: Vec::new(),
            value_long: false,
            skeleton: Vec::new(),
            members: 0,
            usage_seen: false,
            text: TokenEstimator::new(),
            carry: Vec::new(),
        }
    }

    /// The next bytes of the answer.
    pub fn push(&mut self, bytes: &[u8]) {
        let mut i = 0;
        while i < bytes.len() && self.phase != Phase::Broken {
            if self.in_string {
                i += self.string_run(&bytes[i..]);
                continue;
            }
            let b = bytes[i];
            i += 1;
            self.structural(b);
        }
    }

    /// The answer's top-level object with its long values emptied, once it was read whole
    /// and is one JSON object.
    pub fn skeleton(&self) -> Option<&[u8]> {
        (self.phase == Phase::Done).then_some(&self.skeleton[..])
    }

    /// The estimate when the answer reported no usage: output tokens over the text of its
    /// strings (`estimated`; input left 0, as `estimate_response` leaves it).
    pub fn estimate(&self) -> Usage {
        let mut text = self.text;
        if !self.carry.is_empty() {
            text.feed("\u{FFFD}");
        }
        Usage {
            output_tokens: text.tokens(),
            estimated: true,
            ..Usage::default()
        }
    }

    /// Inside a string: the bytes up to its closing quote or an escape. Returns how many
    /// were consumed.
    fn string_run(&mut self, bytes: &[u8]) -> usize {
        if self.escaped {
            self.escaped = false;
            self.take(&bytes[..1], true);
            return 1;
        }
        let (run, used) = match memchr::memchr2(b'"', b'\\', bytes) {
            Some(at) if bytes[at] == b'"' => {
                self.in_string = false;
                (&bytes[..at], at + 1)
            }
            Some(at) => {
                self.escaped = true;
                (&bytes[..=at], at + 1)
            }
            None => (bytes, bytes.len()),
        };
        self.take(run, true);
        if !self.in_string {
            self.flush_carry();
            self.take(b"\"", false);
            if self.phase == Phase::InKey {
                self.phase = Phase::Colon;
            }
        }
        used
    }

    /// One byte outside any string.
    fn structural(&mut self, b: u8) {
        let ws = is_ws(b);
        match self.phase {
            Phase::Before | Phase::Done if ws => {}
            Phase::Before if b == b'{' => {
                self.depth = 1;
                self.phase = Phase::Key { first: true };
            }
            Phase::Key { .. } | Phase::Colon if ws => {}
            Phase::Key { .. } if b == b'"' => {
                self.key.clear();
                self.key.push(b);
                self.in_string = true;
                self.phase = Phase::InKey;
            }
            Phase::Key { first: true } if b == b'}' => self.close(),
            Phase::Colon if b == b':' => {
                self.value.clear();
                self.value_long = false;
                self.phase = Phase::Value;
            }
            Phase::Value => self.value_byte(b),
            _ => self.phase = Phase::Broken,
        }
    }

    /// A byte of a member's value, outside strings.
    fn value_byte(&mut self, b: u8) {
        if is_ws(b) && self.value.is_empty() {
            // The value's first byte says its kind (`MAX_MEMBER`).
            return;
        }
        match b {
            b',' | b'}' if self.depth == 1 => {
                self.end_member();
                if self.phase == Phase::Broken {
                    return;
                }
                if b == b'}' {
                    self.close();
                } else {
                    self.phase = Phase::Key { first: false };
                }
                return;
            }
            b'{' | b'[' => self.depth = self.depth.saturating_add(1),
            b'}' | b']' if self.depth > 1 => self.depth -= 1,
            b']' => {
                self.phase = Phase::Broken;
                return;
            }
            b'"' => self.in_string = true,
            _ => {}
        }
        self.take(&[b], false);
    }

    /// Bytes of the answer at the current place: into the key or value being read, and a
    /// string's text into the estimate.
    fn take(&mut self, run: &[u8], text: bool) {
        match self.phase {
            Phase::InKey => {
                let room = (MAX_KEY + 1).saturating_sub(self.key.len()).min(run.len());
                self.key.extend_from_slice(&run[..room]);
            }
            Phase::Value if !self.value_long => {
                if self.value.len() + run.len() <= MAX_MEMBER {
                    self.value.extend_from_slice(run);
                } else {
                    // The first byte, which says the value's kind, stays.
                    self.value.truncate(1);
                    if self.value.is_empty() {
                        self.value.extend_from_slice(&run[..1]);
                    }
                    self.value_long = true;
                }
            }
            _ => {}
        }
        if text && !run.is_empty() {
            self.feed_text(run);
        }
    }

    /// The end of a member's value: write the member into the skeleton.
    fn end_member(&mut self) {
        // Its leading whitespace was never taken.
        let end = self
            .value
            .iter()
            .rposition(|&b| !is_ws(b))
            .map_or(0, |e| e + 1);
        let value = self.value.get(..end).unwrap_or_default();
        if value.is_empty() {
            self.phase = Phase::Broken;
            return;
        }
        let is_usage = self.key == b"\"usage\"";
        if is_usage && std::mem::replace(&mut self.usage_seen, true) {
            // serde_json refuses a repeated `usage` in a whole answer: no usage.
            self.phase = Phase::Broken;
            return;
        }
        let room = self.skeleton.len() + self.key.len() + value.len() + 2 <= MAX_SKELETON;
        if self.key.len() > MAX_KEY || !(room || (is_usage && !self.value_long)) {
            return;
        }
        let value: &[u8] = match (self.value_long, value.first()) {
            (false, _) => value,
            (true, Some(b'{')) => b"{}",
            (true, Some(b'[')) => b"[]",
            (true, Some(b'"')) => b"\"\"",
            (true, _) => b"null",
        };
        self.skeleton
            .push(if self.members == 0 { b'{' } else { b',' });
        self.skeleton.extend_from_slice(&self.key);
        self.skeleton.push(b':');
        self.skeleton.extend_from_slice(value);
        self.members += 1;
    }

    /// The top-level object's closing `}`.
    fn close(&mut self) {
        self.depth = 0;
        if self.members == 0 {
            self.skeleton.push(b'{');
        }
        self.skeleton.push(b'}');
        self.phase = Phase::Done;
    }

    /// A string's bytes (raw: escapes as written) into the estimate, a character split
    /// between chunks carried to the next.
    fn feed_text(&mut self, mut run: &[u8]) {
        if let Some(&lead) = self.carry.first() {
            let width: usize = match lead {
                0xC0..=0xDF => 2,
                0xE0..=0xEF => 3,
                _ => 4,
            };
            let missing = width.saturating_sub(self.carry.len()).min(run.len());
            let mut char = std::mem::take(&mut self.carry);
            char.extend_from_slice(&run[..missing]);
            run = &run[missing..];
            if char.len() < width && run.is_empty() {
                self.carry = char;
                return;
            }
            self.feed_valid(&char);
            // Invalid bytes with a character's start after them, before `run`: replaced.
            self.flush_carry();
        }
        self.feed_valid(run);
    }

    fn feed_valid(&mut self, mut rest: &[u8]) {
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => return self.text.feed(s),
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    self.text
                        .feed(std::str::from_utf8(valid).unwrap_or_default());
                    match e.error_len() {
                        Some(n) => {
                            self.text.feed("\u{FFFD}");
                            rest = after.get(n..).unwrap_or_default();
                        }
                        None => {
                            self.carry = after.to_vec();
                            return;
                        }
                    }
                }
            }
        }
    }

    /// A string ended with part of a character: counted as one replaced.
    fn flush_carry(&mut self) {
        if !self.carry.is_empty() {
            self.carry.clear();
            self.text.feed("\u{FFFD}");
        }
    }
}

/// JSON's whitespace (not `\x0C`, which `u8::is_ascii_whitespace` takes too).
fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

#[cfg(test)]
#[path = "long_json_tests.rs"]
mod tests;
