//! The fast path for one streamed chunk: a walk over its JSON with the
//! scanner of [`super::json`] that gives what [`super::slow::parse_chunk`]
//! gives — whether `choices` is non-empty, whether any text came, the raw
//! `usage` value — and feeds the same text to the estimators in the same
//! order, or returns [`Bail`].
//!
//! It bails on everything serde_json rejects or reads in a way not modelled
//! here: a repeated field of a derived struct (`delta`, `text`, `content`,
//! ...), a choice, delta, tool call or function that is not an object or
//! null (an array is read positionally by serde's derive), `choices` or
//! `tool_calls` that are neither an array nor null, a number in a text field
//! that serde_json could find out of range, text that is not UTF-8 (the
//! serde path reads the data lossily decoded), and whatever the scanner
//! itself refuses.

use super::estimate::TokenEstimator;
use super::json::{once, once_value, Bail, Cursor, Scan, Span};
use super::{ChunkSummary, Estimators};

/// A text field's value.
#[derive(Clone, Copy)]
enum TextVal {
    Null,
    /// Any other non-string value (ignored).
    Other,
    Str(Span),
}

/// The string of a text field; `None` when absent, null or not a string.
fn str_span(t: Option<TextVal>) -> Option<Span> {
    match t {
        Some(TextVal::Str(s)) => Some(s),
        _ => None,
    }
}

/// A text field's value (serde_json reads it with `deserialize_any`).
fn text_value(c: &mut Cursor<'_>) -> Scan<TextVal> {
    match c.ws() {
        Some(b'"') => Ok(TextVal::Str(c.string()?)),
        Some(b'n') => {
            c.null()?;
            Ok(TextVal::Null)
        }
        Some(b'-' | b'0'..=b'9') => {
            // serde_json computes the number here and fails on overflow to
            // infinity; refuse everything that could come near it.
            let n = c.number()?;
            if n.exponent || n.int.len() + n.frac_digits > 300 {
                return Err(Bail);
            }
            Ok(TextVal::Other)
        }
        _ => {
            c.skip_value()?;
            Ok(TextVal::Other)
        }
    }
}

/// A token of a walked chunk whose bytes may change from chunk to chunk
/// without changing the walk but for feeding (see [`super::memo`]).
#[derive(Debug, Clone, Copy)]
pub(super) struct Slot {
    /// Where the token starts and ends.
    pub start: usize,
    pub end: usize,
    pub kind: SlotKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SlotKind {
    /// A skipped string value (of a member of the chunk, a choice or a
    /// delta that is not read).
    Str,
    /// A skipped number value.
    Num,
    /// A string fed to the content (or, if true, reasoning) estimator.
    Fed(bool),
}

/// The chunk being walked, the estimators it feeds, and its [`Slot`]s.
pub(super) struct Walk<'d, 'x, 'e> {
    pub data: &'d [u8],
    pub est: &'x mut Estimators<'e>,
    /// Strings fed to an estimator so far.
    pub fed: u32,
    /// The slots met so far (the fed ones in feeding order, which may not be
    /// the text order).
    pub slots: &'x mut Vec<Slot>,
}

impl Walk<'_, '_, '_> {
    /// Feed the string whose opening quote is at the cursor; whether it was
    /// non-empty.
    fn feed_here(&mut self, c: &mut Cursor<'_>, reasoning: bool) -> Scan<bool> {
        let start = c.pos();
        let est: &mut TokenEstimator = if reasoning {
            self.est.reasoning
        } else {
            self.est.content
        };
        let text = c.string_fed(est)?;
        self.fed = self.fed.saturating_add(1);
        self.slots.push(Slot {
            start,
            end: c.pos(),
            kind: SlotKind::Fed(reasoning),
        });
        Ok(text)
    }

    /// Skip a member's value that is not read, noting it as a slot if it
    /// is a string or a number.
    fn skip(&mut self, c: &mut Cursor<'_>) -> Scan<()> {
        let kind = match c.ws() {
            Some(b'"') => Some(SlotKind::Str),
            Some(b'-' | b'0'..=b'9') => Some(SlotKind::Num),
            _ => None,
        };
        let start = c.pos();
        c.skip_value()?;
        if let Some(kind) = kind {
            self.slots.push(Slot {
                start,
                end: c.pos(),
                kind,
            });
        }
        Ok(())
    }

    /// Feed the already validated string `span` (a second pass).
    fn feed(&mut self, span: Option<Span>, reasoning: bool) -> Scan<bool> {
        match span {
            Some(span) if !span.is_empty() => {
                let quote = span.start.checked_sub(1).ok_or(Bail)?;
                self.feed_here(&mut Cursor::at(self.data, quote), reasoning)
            }
            _ => Ok(false),
        }
    }

    /// A text field fed as it is read: (non-null, non-empty).
    fn text_fed(&mut self, c: &mut Cursor<'_>, reasoning: bool) -> Scan<(bool, bool)> {
        match c.ws() {
            Some(b'"') => Ok((true, self.feed_here(c, reasoning)?)),
            Some(b'n') => {
                c.null()?;
                Ok((false, false))
            }
            _ => {
                text_value(c)?;
                Ok((true, false))
            }
        }
    }

    /// The chunk, from its start to its end.
    pub fn chunk<'d2>(&mut self, c: &mut Cursor<'d2>) -> Scan<ChunkSummary<'d2>> {
        let mut s = ChunkSummary::default();
        c.members(|c, key| {
            if key.is(b"choices") {
                let (n, text) = self.choices(c)?;
                s.has_choices = n > 0;
                s.has_text |= text;
            } else if key.is(b"usage") {
                s.usage = if c.null()? {
                    None
                } else {
                    let start = c.pos();
                    c.skip_value()?;
                    let raw = c.bytes().get(start..c.pos()).ok_or(Bail)?;
                    Some(std::str::from_utf8(raw).map_err(|_| Bail)?)
                };
            } else {
                self.skip(c)?;
            }
            Ok(())
        })?;
        c.end()?;
        Ok(s)
    }

    /// `choices`: (number of choices, whether any carried text).
    fn choices(&mut self, c: &mut Cursor<'_>) -> Scan<(usize, bool)> {
        if c.null()? {
            return Ok((0, false));
        }
        let mut any = false;
        let n = c.elements(|c| {
            any |= self.choice(c)?;
            Ok(())
        })?;
        Ok((n, any))
    }

    /// One choice, fed in the order of the serde path: the delta's reasoning
    /// (its own estimator), content and tool call arguments, then legacy
    /// `text` (kept for the end, as it may come first).
    fn choice(&mut self, c: &mut Cursor<'_>) -> Scan<bool> {
        let (mut delta_seen, mut text) = (false, None);
        let mut any = false;
        c.members(|c, key| {
            if key.is(b"delta") {
                once(&mut delta_seen)?;
                if !c.null()? {
                    any |= self.delta(c)?;
                }
                Ok(())
            } else if key.is(b"text") {
                once_value(&mut text, text_value(c)?)
            } else {
                self.skip(c)
            }
        })?;
        any |= self.feed(str_span(text), false)?;
        Ok(any)
    }

    /// A `delta` object. `content` and `reasoning_content` are fed as they
    /// are read; `reasoning` only counts if `reasoning_content` is absent or
    /// null, and tool call arguments come after `content`, so those are fed
    /// at the end.
    fn delta(&mut self, c: &mut Cursor<'_>) -> Scan<bool> {
        let (mut content_seen, mut reasoning_content_seen) = (false, false);
        let (mut reasoning_seen, mut tool_calls_seen) = (false, false);
        let mut reasoning_content = false;
        let (mut reasoning, mut tools) = (None, None);
        let mut any = false;
        c.members(|c, key| {
            if key.is(b"content") {
                once(&mut content_seen)?;
                any |= self.text_fed(c, false)?.1;
            } else if key.is(b"reasoning_content") {
                once(&mut reasoning_content_seen)?;
                let (non_null, text) = self.text_fed(c, true)?;
                reasoning_content = non_null;
                any |= text;
            } else if key.is(b"reasoning") {
                once(&mut reasoning_seen)?;
                reasoning = str_span(Some(text_value(c)?));
            } else if key.is(b"tool_calls") {
                once(&mut tool_calls_seen)?;
                if !c.null()? {
                    tools = Some(c.pos());
                    self.tool_calls(c, false)?;
                }
            } else {
                self.skip(c)?;
            }
            Ok(())
        })?;
        if !reasoning_content {
            any |= self.feed(reasoning, true)?;
        }
        if let Some(at) = tools {
            any |= self.tool_calls(&mut Cursor::at(self.data, at), true)?;
        }
        Ok(any)
    }

    /// A `tool_calls` array: validated, and its `function.arguments` strings
    /// fed if `feed`.
    fn tool_calls(&mut self, c: &mut Cursor<'_>, feed: bool) -> Scan<bool> {
        let mut any = false;
        c.elements(|c| {
            let (mut function_seen, mut args) = (false, None);
            c.members(|c, key| {
                if key.is(b"function") {
                    once(&mut function_seen)?;
                    if !c.null()? {
                        args = function_args(c)?;
                    }
                    Ok(())
                } else {
                    c.skip_value()
                }
            })?;
            if feed {
                any |= self.feed(str_span(args), false)?;
            }
            Ok(())
        })?;
        Ok(any)
    }
}

/// A `function` object: its `arguments`.
fn function_args(c: &mut Cursor<'_>) -> Scan<Option<TextVal>> {
    let mut args = None;
    c.members(|c, key| {
        if key.is(b"arguments") {
            once_value(&mut args, text_value(c)?)
        } else {
            c.skip_value()
        }
    })?;
    Ok(args)
}
