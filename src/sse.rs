//! Incremental Server-Sent Events (SSE) parsing.
//!
//! This module owns the byte-level framing of `text/event-stream` bodies as
//! defined by the WHATWG HTML spec ("Interpreting an event stream"):
//!
//! * lines end with `\r\n`, `\n` or a lone `\r`; a `\r` at the end of one
//!   chunk followed by `\n` at the start of the next is a single line end;
//! * an empty line dispatches the event built so far (if it has any data);
//! * `data:` values (one optional space after the colon removed) are joined
//!   with `\n`, `event:` sets the type, lines starting with `:` are comments,
//!   a line without a colon is a field name with an empty value, and other
//!   fields (`id:`, `retry:`, unknown names) are ignored;
//! * a UTF-8 BOM at the very start of the stream is skipped;
//! * only complete lines are decoded, so multi-byte characters split across
//!   chunks are handled, and invalid UTF-8 is replaced lossily.
//!
//! Besides the decoded fields every [`SseEvent`] carries the exact bytes it
//! was built from ([`SseEvent::raw`]), so a filter can forward, drop or
//! rewrite events while keeping everything else byte for byte: the `raw` of
//! every event, in order, followed by what [`SseParser::finish`] returns reproduces the
//! input exactly. Nothing here panics on any input.
//!
//! Performance: line ends are found with `memchr`; field values are gathered
//! as bytes in buffers that are reused from event to event and decoded once
//! per event; only the unterminated tail of a chunk is copied into the
//! parser. [`SseParser::push_bytes_ref`] hands out borrowed [`SseEventRef`]s
//! for callers that do not need owned strings.

use std::borrow::Cow;

use bytes::{Bytes, BytesMut};

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Field buffers larger than this are released after their event instead of
/// being kept for reuse, so one huge event does not pin memory for the rest
/// of a long stream.
const KEEP_CAPACITY: usize = 64 * 1024;

/// One dispatched event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// Value of the last `event:` field; `None` when absent or empty (the
    /// spec's default type `message`).
    pub event: Option<String>,
    /// The `data:` values joined with `\n` (lossily decoded UTF-8).
    pub data: String,
    /// The exact bytes of this event as received: everything since the
    /// previous dispatched event (comments, ignored fields, blank lines that
    /// dispatched nothing) through the terminating blank line.
    pub raw: Bytes,
}

/// Where the raw bytes of a dispatched event are.
#[derive(Debug)]
enum Raw<'a> {
    /// `chunk[start..end]`; `shared` is the chunk as `Bytes` when the caller
    /// gave one (zero-copy slicing).
    InChunk {
        chunk: &'a [u8],
        shared: Option<&'a Bytes>,
        start: usize,
        end: usize,
    },
    /// Assembled from several chunks.
    Owned(Bytes),
}

/// One dispatched event, borrowed from the parser (see
/// [`SseParser::push_bytes_ref`]): nothing is decoded or allocated unless
/// asked for.
#[derive(Debug)]
pub struct SseEventRef<'a> {
    data: &'a [u8],
    event: &'a [u8],
    raw: Raw<'a>,
}

impl<'a> SseEventRef<'a> {
    /// [`SseEvent::data`]; borrowed unless it is not valid UTF-8.
    pub fn data(&self) -> Cow<'a, str> {
        lossy(self.data)
    }

    /// The undecoded data bytes (the `data:` values joined with `\n`).
    pub fn data_bytes(&self) -> &'a [u8] {
        self.data
    }

    /// [`SseEvent::event`].
    pub fn event(&self) -> Option<Cow<'a, str>> {
        (!self.event.is_empty()).then(|| lossy(self.event))
    }

    /// [`SseEvent::raw`] as a slice.
    pub fn raw_slice(&self) -> &[u8] {
        match &self.raw {
            Raw::InChunk {
                chunk, start, end, ..
            } => chunk.get(*start..*end).unwrap_or_default(),
            Raw::Owned(b) => b,
        }
    }

    /// Where the raw bytes lie in the `Bytes` given to
    /// [`SseParser::push_bytes_ref`], if they are a slice of it.
    pub fn range_in_chunk(&self) -> Option<(usize, usize)> {
        match self.raw {
            Raw::InChunk {
                shared: Some(_),
                start,
                end,
                ..
            } => Some((start, end)),
            _ => None,
        }
    }

    /// [`SseEvent::raw`]: a zero-copy slice when possible.
    pub fn raw(&self) -> Bytes {
        match &self.raw {
            Raw::InChunk {
                chunk,
                shared,
                start,
                end,
            } => match shared {
                Some(b) if start <= end && *end <= b.len() => b.slice(*start..*end),
                _ => Bytes::copy_from_slice(chunk.get(*start..*end).unwrap_or_default()),
            },
            Raw::Owned(b) => b.clone(),
        }
    }

    /// The owned event.
    pub fn to_event(&self) -> SseEvent {
        SseEvent {
            event: self.event().map(Cow::into_owned),
            data: self.data().into_owned(),
            raw: self.raw(),
        }
    }
}

/// `String::from_utf8_lossy`, but valid input (the normal case) is checked
/// with the much faster `str::from_utf8` (`from_utf8_lossy` walks
/// `Utf8Chunks` byte by byte).
#[inline]
fn lossy(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

/// Field state of the event being built. Values are kept as bytes (decoded
/// once, at dispatch: lossy decoding of the `\n`-joined bytes equals joining
/// the lossily decoded lines, as `\n` never belongs to a UTF-8 sequence).
#[derive(Debug, Default)]
struct Fields {
    data: Vec<u8>,
    /// Whether any `data` field was seen (the spec's "data buffer is not empty").
    has_data: bool,
    /// Value of the last `event` field (empty: none).
    event: Vec<u8>,
    /// At least one line of the stream was processed (BOM handling).
    started: bool,
}

impl Fields {
    /// Process one complete line (without its terminator). Returns true for a
    /// blank line, i.e. a dispatch point.
    #[inline]
    fn line(&mut self, mut line: &[u8]) -> bool {
        if !self.started {
            self.started = true;
            if let Some(rest) = line.strip_prefix(BOM) {
                line = rest;
            }
        }
        let Some(&first) = line.first() else {
            return true;
        };
        if first == b':' {
            return false;
        }
        // Fast path for the line that matters.
        if let Some(value) = line.strip_prefix(b"data:") {
            self.data_value(value.strip_prefix(b" ").unwrap_or(value));
            return false;
        }
        let (name, value): (&[u8], &[u8]) = match memchr::memchr(b':', line) {
            Some(i) => {
                let (name, rest) = line.split_at(i);
                let value = rest.get(1..).unwrap_or_default();
                (name, value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &[]),
        };
        match name {
            b"data" => self.data_value(value),
            b"event" => {
                self.event.clear();
                self.event.extend_from_slice(value);
            }
            _ => {}
        }
        false
    }

    #[inline]
    fn data_value(&mut self, value: &[u8]) {
        if self.has_data {
            self.data.push(b'\n');
        }
        self.data.extend_from_slice(value);
        self.has_data = true;
    }

    /// Blank line without data, or after a dispatch: per spec the buffers
    /// are reset.
    fn reset_event(&mut self) {
        self.has_data = false;
        for v in [&mut self.data, &mut self.event] {
            if v.capacity() > KEEP_CAPACITY {
                *v = Vec::new();
            } else {
                v.clear();
            }
        }
    }

    fn view<'a>(&'a self, raw: Raw<'a>) -> SseEventRef<'a> {
        SseEventRef {
            data: &self.data,
            event: &self.event,
            raw,
        }
    }
}

/// Incremental SSE parser; feed it chunks as they arrive.
#[derive(Debug, Default)]
pub struct SseParser {
    /// Bytes of the event not yet terminated (complete lines plus a partial line).
    buf: BytesMut,
    /// Offset in `buf` where the incomplete last line starts.
    line_start: usize,
    /// The last byte processed was a `\r` line end, so a leading `\n` in the
    /// next chunk completes that line end rather than being a new one.
    after_cr: bool,
    /// `buf` holds a complete event whose blank line ended with that `\r`;
    /// it is dispatched once the next byte (or the end of stream) is seen.
    held: bool,
    fields: Fields,
}

/// Position of the first `\r` or `\n`.
#[inline]
fn find_eol(bytes: &[u8]) -> Option<usize> {
    memchr::memchr2(b'\n', b'\r', bytes)
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feed bytes; call `f` for each event completed by them, in order.
    /// Event `raw` bytes are copied out of `chunk`.
    ///
    /// An event whose terminating blank line ends with a `\r` that is the
    /// last byte of `chunk` is dispatched on the next `push` (or `finish`),
    /// so that a `\n` completing that `\r\n` always belongs to its `raw`
    /// and events are identical however the input is chunked.
    pub fn push(&mut self, chunk: &[u8], mut f: impl FnMut(SseEvent)) {
        self.push_impl(chunk, None, &mut |e| f(e.to_event()));
    }

    /// Like [`push`](Self::push), but an event that lies entirely inside
    /// `chunk` gets a zero-copy `raw` slice of it.
    pub fn push_bytes(&mut self, chunk: &Bytes, mut f: impl FnMut(SseEvent)) {
        self.push_impl(chunk, Some(chunk), &mut |e| f(e.to_event()));
    }

    /// Like [`push_bytes`](Self::push_bytes), but events are handed out
    /// borrowed: no per-event allocation unless `f` asks for owned parts.
    pub fn push_bytes_ref(&mut self, chunk: &Bytes, mut f: impl FnMut(SseEventRef<'_>)) {
        self.push_impl(chunk, Some(chunk), &mut f);
    }

    /// Bytes held that belong to an event not yet dispatched: an
    /// unterminated event, or one whose blank line ended in a `\r` that was
    /// the last byte so far (see [`push`](Self::push)). A caller may use its
    /// length to bound memory against a peer that never ends a line.
    pub fn pending(&self) -> &[u8] {
        &self.buf
    }

    /// End of stream. An event still waiting to see whether a `\n` follows
    /// its final `\r` is dispatched to `f`. Per spec an unterminated final
    /// event is discarded: its raw bytes are returned so a caller can still
    /// forward them. The parser is reset and may be reused for a new stream.
    pub fn finish(&mut self, mut f: impl FnMut(SseEvent)) -> Bytes {
        self.flush_held(&mut |e: SseEventRef<'_>| f(e.to_event()));
        self.reset()
    }

    /// Lenient end of stream: like [`finish`](Self::finish), but if the held
    /// bytes form an event with data (treating end of stream as the end of
    /// the partial line and of the event) it is dispatched too, with all held
    /// bytes as `raw`, and the returned leftover is empty.
    pub fn finish_lenient(&mut self, mut f: impl FnMut(SseEvent)) -> Bytes {
        self.finish_lenient_ref(|e| f(e.to_event()))
    }

    /// [`finish_lenient`](Self::finish_lenient) with borrowed events.
    pub fn finish_lenient_ref(&mut self, mut f: impl FnMut(SseEventRef<'_>)) -> Bytes {
        self.flush_held(&mut f);
        if let Some(partial) = self.buf.get(self.line_start..) {
            if !partial.is_empty() {
                // A blank result (BOM-only line) changes nothing below.
                self.fields.line(partial);
                self.line_start = self.buf.len();
            }
        }
        if self.fields.has_data {
            let raw = self.buf.split().freeze();
            self.line_start = 0;
            f(self.fields.view(Raw::Owned(raw)));
            self.fields.reset_event();
        }
        self.reset()
    }

    fn reset(&mut self) -> Bytes {
        let raw = self.buf.split().freeze();
        self.line_start = 0;
        self.after_cr = false;
        self.held = false;
        self.fields = Fields::default();
        raw
    }

    /// Dispatch the event held in `buf` because its blank line ended with
    /// a `\r` at the end of a chunk.
    fn flush_held<F: FnMut(SseEventRef<'_>)>(&mut self, f: &mut F) {
        if std::mem::take(&mut self.held) {
            self.after_cr = false;
            let raw = self.buf.split().freeze();
            self.line_start = 0;
            f(self.fields.view(Raw::Owned(raw)));
            self.fields.reset_event();
        }
    }

    fn push_impl<F: FnMut(SseEventRef<'_>)>(
        &mut self,
        chunk: &[u8],
        shared: Option<&Bytes>,
        f: &mut F,
    ) {
        let Some(&first) = chunk.first() else {
            return;
        };
        // `pos`: the next byte to scan for a line end; `seg`: the start of the bytes of the
        // current event not yet copied into `buf`.
        let (mut pos, mut seg) = self.resume(first, f);
        while let Some(off) = chunk.get(pos..).and_then(find_eol) {
            let end = pos + off;
            let next = self.line_end(chunk, end);
            let blank = self.line(chunk, &mut seg, pos..end, next);
            pos = next;
            if blank {
                let event = Segment {
                    chunk,
                    shared,
                    start: seg,
                    end: next,
                };
                if self.blank_line(event, f) {
                    seg = next;
                }
            }
        }
        self.carry(chunk, seg, pos);
    }

    /// The start of a chunk: the second half of a `\r\n` split across chunks, and an event
    /// held for it. Returns where to scan from and where the event's bytes not yet copied
    /// start.
    #[inline]
    fn resume<F: FnMut(SseEventRef<'_>)>(&mut self, first: u8, f: &mut F) -> (usize, usize) {
        let mut pos = 0;
        if self.after_cr {
            self.after_cr = false;
            if first == b'\n' {
                // Already counted as a line end, but part of the raw bytes.
                pos = 1;
                if self.held {
                    self.buf.extend_from_slice(b"\n");
                }
            }
        }
        let mut seg = 0;
        if self.held {
            seg = pos;
            self.flush_held(f);
        }
        (pos, seg)
    }

    /// Where the line ending at `end` (a `\n` or `\r`) is over: after a whole `\r\n`; a `\r`
    /// last in the chunk is noted (`after_cr`).
    #[inline]
    fn line_end(&mut self, chunk: &[u8], end: usize) -> usize {
        let mut next = end + 1;
        if chunk.get(end) == Some(&b'\r') {
            match chunk.get(next) {
                Some(b'\n') => next += 1,
                Some(_) => {}
                None => self.after_cr = true,
            }
        }
        next
    }

    /// The line `text` of the chunk (its end through `next`) into the event's fields,
    /// completed in `buf` when it started in an earlier chunk; whether it was blank.
    #[inline]
    fn line(
        &mut self,
        chunk: &[u8],
        seg: &mut usize,
        text: std::ops::Range<usize>,
        next: usize,
    ) -> bool {
        if self.buf.len() <= self.line_start {
            return self.fields.line(chunk.get(text).unwrap_or_default());
        }
        self.buf
            .extend_from_slice(chunk.get(*seg..next).unwrap_or_default());
        *seg = next;
        let line_end = self.buf.len() - (next - text.end);
        let line = self.buf.get(self.line_start..line_end).unwrap_or_default();
        let blank = self.fields.line(line);
        self.line_start = self.buf.len();
        blank
    }

    /// A blank line ending at `event.end`: the event ends, and is dispatched if it has data
    /// (held when the blank line's `\r` is the chunk's last byte, so that a following `\n`
    /// ends up in this event's raw bytes whatever the chunking). Whether its bytes were taken
    /// (an event without data leaves them to the next one's raw bytes).
    #[inline]
    fn blank_line<F: FnMut(SseEventRef<'_>)>(&mut self, event: Segment<'_>, f: &mut F) -> bool {
        let Segment {
            chunk,
            shared,
            start,
            end,
        } = event;
        if !self.fields.has_data {
            self.fields.reset_event();
            return false;
        }
        if self.after_cr {
            self.buf
                .extend_from_slice(chunk.get(start..end).unwrap_or_default());
            self.line_start = self.buf.len();
            self.held = true;
            return true;
        }
        let raw = if self.buf.is_empty() {
            Raw::InChunk {
                chunk,
                shared,
                start,
                end,
            }
        } else {
            self.buf
                .extend_from_slice(chunk.get(start..end).unwrap_or_default());
            Raw::Owned(self.buf.split().freeze())
        };
        self.line_start = 0;
        f(self.fields.view(raw));
        self.fields.reset_event();
        true
    }

    /// The chunk's bytes after its last line end (from `seg`; the line's own from `pos`),
    /// kept in `buf` for the next chunk.
    #[inline]
    fn carry(&mut self, chunk: &[u8], seg: usize, pos: usize) {
        let rest = chunk.get(seg..).unwrap_or_default();
        if rest.is_empty() {
            return;
        }
        let carried_partial = self.buf.len() > self.line_start;
        let before = self.buf.len();
        self.buf.extend_from_slice(rest);
        if !carried_partial {
            self.line_start = before + (pos - seg);
        }
    }
}

/// The bytes of a chunk from an event's first byte not yet copied to its end.
#[derive(Clone, Copy)]
struct Segment<'a> {
    chunk: &'a [u8],
    shared: Option<&'a Bytes>,
    start: usize,
    end: usize,
}

/// Iterator over the lines of raw SSE bytes as `(line, line_end)` pairs,
/// where `line_end` is `\r\n`, `\n`, `\r` or empty (last line without a
/// terminator). Concatenating all pairs reproduces the input.
#[derive(Debug, Clone)]
pub struct RawLines<'a> {
    rest: &'a [u8],
}

/// Split raw SSE bytes (e.g. [`SseEvent::raw`]) into lines; see [`RawLines`].
pub fn raw_lines(raw: &[u8]) -> RawLines<'_> {
    RawLines { rest: raw }
}

impl<'a> Iterator for RawLines<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let rest = self.rest;
        let Some(i) = find_eol(rest) else {
            self.rest = &[];
            return Some((rest, &[]));
        };
        let eol_len = if rest.get(i..i + 2) == Some(b"\r\n") {
            2
        } else {
            1
        };
        let (line, tail) = rest.split_at(i);
        let (eol, after) = tail.split_at(eol_len.min(tail.len()));
        self.rest = after;
        Some((line, eol))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn parse_all(input: &[u8]) -> (Vec<SseEvent>, Bytes) {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        p.push(input, |e| out.push(e));
        let tail = p.finish(|e| out.push(e));
        (out, tail)
    }

    fn parse_chunks(chunks: &[&[u8]], shared: bool) -> (Vec<SseEvent>, Bytes) {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        for c in chunks {
            if shared {
                p.push_bytes(&Bytes::copy_from_slice(c), |e| out.push(e));
            } else {
                p.push(c, |e| out.push(e));
            }
        }
        let tail = p.finish(|e| out.push(e));
        (out, tail)
    }

    fn concat(events: &[SseEvent], tail: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        for e in events {
            v.extend_from_slice(&e.raw);
        }
        v.extend_from_slice(tail);
        v
    }

    fn ev(event: Option<&str>, data: &str) -> (Option<String>, String) {
        (event.map(str::to_owned), data.to_owned())
    }

    fn fields(events: &[SseEvent]) -> Vec<(Option<String>, String)> {
        events
            .iter()
            .map(|e| (e.event.clone(), e.data.clone()))
            .collect()
    }

    const FIXTURE: &str =
        "data: {\"choices\":[{\"delta\":{\"content\":\"h\u{e9}llo w\u{f6}rld\"}}]}\n\n\
: keep-alive comment\n\
event: update\n\
data: \u{4e16}\u{754c}\n\
data:\u{1f680}\n\n\
data\n\n\
id: 7\n\
retry: 1000\n\
data:  two spaces\n\n\
data: [DONE]\n\n";

    fn fixture_expected() -> Vec<(Option<String>, String)> {
        vec![
            ev(
                None,
                "{\"choices\":[{\"delta\":{\"content\":\"h\u{e9}llo w\u{f6}rld\"}}]}",
            ),
            ev(Some("update"), "\u{4e16}\u{754c}\n\u{1f680}"),
            ev(None, ""),
            ev(None, " two spaces"),
            ev(None, "[DONE]"),
        ]
    }

    fn variants() -> Vec<Vec<u8>> {
        vec![
            FIXTURE.as_bytes().to_vec(),
            FIXTURE.replace('\n', "\r\n").into_bytes(),
            FIXTURE.replace('\n', "\r").into_bytes(),
        ]
    }

    #[test]
    fn whole_input() {
        for input in variants() {
            let (events, tail) = parse_all(&input);
            assert_eq!(fields(&events), fixture_expected());
            assert!(tail.is_empty());
            assert_eq!(concat(&events, &tail), input);
        }
    }

    #[test]
    fn every_split_point_and_byte_by_byte() {
        for input in variants() {
            let (reference, _) = parse_all(&input);
            for i in 0..=input.len() {
                for shared in [false, true] {
                    let (events, tail) = parse_chunks(&[&input[..i], &input[i..]], shared);
                    assert_eq!(events, reference, "split at {i}");
                    assert!(tail.is_empty());
                }
            }
            let bytes: Vec<&[u8]> = input.chunks(1).collect();
            let (events, tail) = parse_chunks(&bytes, false);
            assert_eq!(events, reference);
            assert!(tail.is_empty());
        }
    }

    #[test]
    fn three_way_splits() {
        let input = b"event: a\r\ndata: x\xc3\xb6\r\n\r\n: c\rdata: y\r\rdata: z\n\n".to_vec();
        let (reference, _) = parse_all(&input);
        assert_eq!(
            fields(&reference),
            vec![ev(Some("a"), "x\u{f6}"), ev(None, "y"), ev(None, "z")]
        );
        for i in 0..=input.len() {
            for j in i..=input.len() {
                let (events, tail) =
                    parse_chunks(&[&input[..i], &input[i..j], &input[j..]], j % 2 == 0);
                assert_eq!(events, reference, "split at {i},{j}");
                assert!(tail.is_empty());
            }
        }
    }

    #[test]
    fn lone_cr_terminators() {
        let (events, tail) = parse_all(b"data: a\r\rdata: b\rdata: c\r\r");
        assert_eq!(fields(&events), vec![ev(None, "a"), ev(None, "b\nc")]);
        assert!(tail.is_empty());
    }

    #[test]
    fn cr_then_lf_across_chunks_is_one_line_end() {
        // If the `\n` were a second line end, "data: a" would be dispatched
        // on it and "data: b" would start a new event.
        let mut p = SseParser::new();
        let mut out = Vec::new();
        p.push(b"data: a\r", |e| out.push(e));
        p.push(b"\ndata: b\r", |e| out.push(e));
        p.push(b"\n", |e| out.push(e));
        assert!(out.is_empty());
        // The blank line ends in `\r` at the end of the chunk: the event waits
        // for the next byte so that its raw bytes include the `\n`.
        p.push(b"\r", |e| out.push(e));
        assert!(out.is_empty());
        assert_eq!(p.pending(), b"data: a\r\ndata: b\r\n\r");
        p.push(b"", |e| out.push(e));
        assert!(out.is_empty());
        p.push(b"\ndata: c\n\n", |e| out.push(e));
        assert_eq!(fields(&out), vec![ev(None, "a\nb"), ev(None, "c")]);
        assert_eq!(&out[0].raw[..], b"data: a\r\ndata: b\r\n\r\n");
        assert_eq!(&out[1].raw[..], b"data: c\n\n");
        assert!(p.pending().is_empty());
    }

    #[test]
    fn event_ending_in_cr_is_dispatched_by_next_byte_or_finish() {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        p.push(b"data: a\r\r", |e| out.push(e));
        assert!(out.is_empty());
        p.push(b"data: b\r\r", |e| out.push(e));
        assert_eq!(fields(&out), vec![ev(None, "a")]);
        assert_eq!(&out[0].raw[..], b"data: a\r\r");
        let tail = p.finish(|e| out.push(e));
        assert!(tail.is_empty());
        assert_eq!(fields(&out), vec![ev(None, "a"), ev(None, "b")]);
    }

    #[test]
    fn multiline_data_comments_and_event_type() {
        let (events, _) =
            parse_all(b": hello\nevent: ping\ndata: one\ndata:two\ndata\n: mid\ndata: \n\n");
        assert_eq!(fields(&events), vec![ev(Some("ping"), "one\ntwo\n\n")]);
    }

    #[test]
    fn blank_lines_without_data_dispatch_nothing() {
        let input = b"\n\n: c\n\nevent: x\n\ndata: y\n\n";
        let (events, tail) = parse_all(input);
        // The `event: x` type is reset by the blank line before the data.
        assert_eq!(fields(&events), vec![ev(None, "y")]);
        assert_eq!(&events[0].raw[..], &input[..]);
        assert!(tail.is_empty());
    }

    #[test]
    fn field_without_colon_and_unknown_fields() {
        let (events, _) = parse_all(b"data\nfoo: bar\nevent\ndata:x\n\n");
        assert_eq!(fields(&events), vec![ev(None, "\nx")]);
    }

    #[test]
    fn bom_skipped_only_at_stream_start_even_when_split() {
        let input = b"\xEF\xBB\xBFdata: a\n\n\xEF\xBB\xBFdata: b\n\n";
        let (reference, _) = parse_all(input);
        // The second BOM makes the field name "\u{feff}data", which is ignored.
        assert_eq!(fields(&reference), vec![ev(None, "a")]);
        for i in 0..=input.len() {
            let (events, tail) = parse_chunks(&[&input[..i], &input[i..]], false);
            assert_eq!(events, reference);
            assert_eq!(concat(&events, &tail), input);
        }
    }

    #[test]
    fn multibyte_split_and_invalid_utf8() {
        let input = "data: \u{1f680}\u{4e16}\n\n".as_bytes();
        for i in 0..=input.len() {
            let (events, _) = parse_chunks(&[&input[..i], &input[i..]], true);
            assert_eq!(fields(&events), vec![ev(None, "\u{1f680}\u{4e16}")]);
        }
        let (events, _) = parse_all(b"event: \xff\ndata: a\xc3\xff\xf0\x9f\n\n");
        assert_eq!(
            fields(&events),
            vec![ev(Some("\u{fffd}"), "a\u{fffd}\u{fffd}\u{fffd}")]
        );
    }

    #[test]
    fn invalid_utf8_decoded_per_line_even_when_joined() {
        // Values are joined as bytes and decoded once: a truncated sequence
        // at the end of one line must not swallow the `\n` or the next line.
        let input = b"event: x\xe4\xb8\ndata: a\xc3\ndata: \x9fb\ndata: \xf0\x9f\x9a\n\n";
        let (reference, _) = parse_all(input);
        assert_eq!(
            fields(&reference),
            vec![ev(Some("x\u{fffd}"), "a\u{fffd}\n\u{fffd}b\n\u{fffd}")]
        );
        for i in 0..=input.len() {
            let (events, _) = parse_chunks(&[&input[..i], &input[i..]], i % 2 == 0);
            assert_eq!(events, reference);
        }
    }

    #[test]
    fn finish_returns_unterminated_event() {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        p.push(b"data: a\n\ndata: b\n", |e| out.push(e));
        assert_eq!(out.len(), 1);
        assert_eq!(p.pending(), b"data: b\n");
        assert_eq!(&p.finish(|e| out.push(e))[..], b"data: b\n");
        assert_eq!(out.len(), 1);
        assert!(p.pending().is_empty());
        // Reusable afterwards.
        p.push(b"data: c\n\n", |e| out.push(e));
        assert_eq!(out[1].data, "c");
    }

    #[test]
    fn finish_lenient_dispatches_tail() {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        p.push(b": x\ndata: a\ndata: b", |e| out.push(e));
        assert!(p.finish_lenient(|e| out.push(e)).is_empty());
        assert_eq!(fields(&out), vec![ev(None, "a\nb")]);
        assert_eq!(&out[0].raw[..], b": x\ndata: a\ndata: b");

        p.push(b": only a comment\n", |e| out.push(e));
        assert_eq!(
            &p.finish_lenient(|e| out.push(e))[..],
            b": only a comment\n"
        );
        assert_eq!(out.len(), 1);

        // A held event and nothing else.
        p.push(b"data: z\r\r", |e| out.push(e));
        assert!(p.finish_lenient(|e| out.push(e)).is_empty());
        assert_eq!(out[1].data, "z");
    }

    #[test]
    fn push_bytes_slices_without_copy() {
        let chunk = Bytes::from_static(b"data: a\n\ndata: b\n\n");
        let mut p = SseParser::new();
        let mut out = Vec::new();
        p.push_bytes(&chunk, |e| out.push(e));
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].raw.as_ptr(), chunk.as_ptr());
        assert_eq!(out[1].raw.as_ptr(), chunk[9..].as_ptr());
    }

    #[test]
    fn raw_lines_round_trip() {
        let raw = b"a\r\nb\rc\n\r\n\rd";
        let lines: Vec<_> = raw_lines(raw).collect();
        assert_eq!(
            lines,
            vec![
                (&b"a"[..], &b"\r\n"[..]),
                (b"b", b"\r"),
                (b"c", b"\n"),
                (b"", b"\r\n"),
                (b"", b"\r"),
                (b"d", b""),
            ]
        );
        assert!(raw_lines(b"").next().is_none());
    }

    use crate::translate::test_support::XorShift;

    /// Random bytes biased towards SSE syntax; random chunking must never
    /// panic, must give the same events as one-shot parsing and must
    /// round-trip the raw bytes.
    #[test]
    fn fuzz_random_bytes_round_trip() {
        const ALPHABET: &[&[u8]] = &[
            b"data:",
            b"data: ",
            b"event:",
            b":",
            b"\r",
            b"\n",
            b"\r\n",
            b" ",
            b"x",
            b"\xEF\xBB\xBF",
            b"\xff",
            b"\xc3",
            b"\xe4\xb8\x96",
            b"{}",
            b"id:",
            b"\x00",
        ];
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        for _ in 0..4000 {
            let mut input = Vec::new();
            for _ in 0..rng.below(40) {
                if rng.below(4) == 0 {
                    input.push(rng.next() as u8);
                } else {
                    input.extend_from_slice(ALPHABET[rng.below(ALPHABET.len())]);
                }
            }
            let (reference, ref_tail) = parse_all(&input);
            assert_eq!(concat(&reference, &ref_tail), input);

            let mut p = SseParser::new();
            let mut events = Vec::new();
            let mut at = 0;
            while at < input.len() {
                let n = 1 + rng.below(8);
                let end = (at + n).min(input.len());
                if rng.below(2) == 0 {
                    p.push(&input[at..end], |e| events.push(e));
                } else {
                    let b = Bytes::copy_from_slice(&input[at..end]);
                    p.push_bytes(&b, |e| events.push(e));
                }
                at = end;
            }
            let tail = p.finish(|e| events.push(e));
            assert_eq!(events, reference);
            assert_eq!(tail, ref_tail);
        }
    }
}
