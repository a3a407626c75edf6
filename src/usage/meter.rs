//! [`StreamMeter`]: the streaming (`text/event-stream`) response body
//! filter. Events come from the borrowed SSE parser; each event's JSON is
//! read by the fast path ([`super::memo::chunk`]) with serde_json
//! ([`super::slow`]) as the fallback, and only a chunk whose usage must be
//! stripped is rebuilt.

use bytes::{Bytes, BytesMut};

use super::estimate::TokenEstimator;
use super::json::Bail;
use super::memo::{self, Memo};
use super::{parse_usage, slow, Estimators, Usage};
use crate::sse::{raw_lines, SseEventRef, SseParser};

fn is_data_line(line: &[u8]) -> bool {
    line == b"data" || line.starts_with(b"data:")
}

/// Rebuild an event's raw bytes with its data replaced by `data`: the first
/// `data` line becomes one `data: ` line per `\n`-separated segment of
/// `data` (using that line's terminator), the other `data` lines are dropped,
/// and every other line (comments, `event:`, `id:`, the blank line, ...) is
/// kept as it was. `stream_start`: `raw` begins the stream, so its first line
/// may carry a BOM that the parser skipped.
fn rebuild_event(raw: &[u8], data: &[u8], stream_start: bool) -> Bytes {
    let mut out = BytesMut::with_capacity(raw.len());
    let mut replaced = false;
    for (i, (line, eol)) in raw_lines(raw).enumerate() {
        let (bom, body) = match line.strip_prefix(b"\xEF\xBB\xBF") {
            Some(rest) if stream_start && i == 0 => (line.get(..3).unwrap_or_default(), rest),
            _ => (&[][..], line),
        };
        if !is_data_line(body) {
            out.extend_from_slice(line);
            out.extend_from_slice(eol);
            continue;
        }
        if replaced {
            continue;
        }
        replaced = true;
        out.extend_from_slice(bom);
        let sep: &[u8] = if eol.is_empty() { b"\n" } else { eol };
        let mut segments = data.split(|&b| b == b'\n').peekable();
        while let Some(segment) = segments.next() {
            out.extend_from_slice(b"data: ");
            out.extend_from_slice(segment);
            out.extend_from_slice(if segments.peek().is_some() { sep } else { eol });
        }
    }
    out.freeze()
}

enum Verdict {
    Keep,
    Drop,
    Replace(Bytes),
}

#[derive(Debug, Default)]
struct Tally {
    reported: Option<Usage>,
    content: TokenEstimator,
    reasoning: TokenEstimator,
    /// `content` and `reasoning` tokens when `reported` was last set: text streamed after
    /// it is not covered by the report (a stream cut short, or a provider reporting early).
    at_report: (u64, u64),
    saw_done: bool,
    first_content: bool,
    events: u64,
    /// What the fast path remembers from the previous chunks (boxed: the
    /// meter lives in the proxy's per-request state).
    memo: Box<Memo>,
}

impl Tally {
    fn observe(&mut self, ev: &SseEventRef<'_>, strip: bool) -> Verdict {
        let stream_start = self.events == 0;
        self.events = self.events.saturating_add(1);
        let bytes = ev.data_bytes();
        // The decoded text is made only when needed: a chunk (a JSON object)
        // cannot be `[DONE]`.
        if bytes.first() != Some(&b'{') && ev.data().trim() == "[DONE]" {
            self.saw_done = true;
            return Verdict::Keep;
        }
        // Estimate into copies so a payload that fails to parse half way
        // through does not count.
        let mut content = self.content;
        let mut reasoning = self.reasoning;
        let mut est = Estimators {
            content: &mut content,
            reasoning: &mut reasoning,
        };
        let lossy;
        let summary = match memo::chunk(bytes, &mut est, &mut self.memo) {
            Ok(summary) => summary,
            Err(Bail) => {
                // Start again from the committed estimates.
                *est.content = self.content;
                *est.reasoning = self.reasoning;
                lossy = ev.data();
                match slow::parse_chunk(&lossy, est) {
                    Ok(summary) => summary,
                    // Not JSON (or not an object): forward untouched, don't meter.
                    Err(_) => return Verdict::Keep,
                }
            }
        };
        self.content = content;
        self.reasoning = reasoning;
        self.first_content |= summary.has_text;
        let Some(usage) = summary.usage else {
            return Verdict::Keep;
        };
        if let Some(u) = parse_usage(usage) {
            self.reported = Some(u);
            self.at_report = (self.content.tokens(), self.reasoning.tokens());
        }
        if !strip {
            Verdict::Keep
        } else if !summary.has_choices {
            Verdict::Drop
        } else {
            match slow::remove_usage_key(&ev.data()) {
                Some(new) => Verdict::Replace(rebuild_event(ev.raw_slice(), &new, stream_start)),
                None => Verdict::Keep,
            }
        }
    }
}

/// Output of one `feed`: contiguous slices of the input chunk are merged so
/// that forwarding unchanged events never copies.
struct Out<'c> {
    chunk: &'c Bytes,
    acc: Acc,
}

enum Acc {
    Empty,
    /// `chunk[start..end]`.
    Range(usize, usize),
    /// One piece that is not a slice of `chunk`.
    One(Bytes),
    Buf(BytesMut),
}

impl<'c> Out<'c> {
    fn new(chunk: &'c Bytes) -> Self {
        Out {
            chunk,
            acc: Acc::Empty,
        }
    }

    /// Where `piece` lies in `chunk`, if it is a slice of it.
    fn range_in_chunk(&self, piece: &Bytes) -> Option<(usize, usize)> {
        let base = self.chunk.as_ptr() as usize;
        let start = (piece.as_ptr() as usize).checked_sub(base)?;
        let end = start.checked_add(piece.len())?;
        (end <= self.chunk.len()).then_some((start, end))
    }

    fn bytes_of(&self, acc: &Acc) -> Bytes {
        match acc {
            Acc::Empty => Bytes::new(),
            Acc::Range(s, e) if *s == 0 && *e == self.chunk.len() => self.chunk.clone(),
            Acc::Range(s, e) if s <= e && *e <= self.chunk.len() => self.chunk.slice(*s..*e),
            Acc::Range(..) => Bytes::new(),
            Acc::One(b) => b.clone(),
            Acc::Buf(b) => b.clone().freeze(),
        }
    }

    /// Forward an unchanged event: its range of `chunk` when it is a slice
    /// of it (no reference count traffic), else its raw bytes.
    fn push_event(&mut self, ev: &SseEventRef<'_>) {
        match (&mut self.acc, ev.range_in_chunk()) {
            (_, Some((s, e))) if s == e => {}
            (Acc::Empty, Some((s, e))) => self.acc = Acc::Range(s, e),
            (Acc::Range(_, end), Some((s, e))) if *end == s => *end = e,
            (Acc::Buf(buf), _) => buf.extend_from_slice(ev.raw_slice()),
            _ => self.push(ev.raw()),
        }
    }

    fn push(&mut self, piece: Bytes) {
        if piece.is_empty() {
            return;
        }
        let range = self.range_in_chunk(&piece);
        match (&mut self.acc, range) {
            (Acc::Empty, Some((s, e))) => self.acc = Acc::Range(s, e),
            (Acc::Empty, None) => self.acc = Acc::One(piece),
            (Acc::Range(_, end), Some((s, e))) if *end == s => *end = e,
            (Acc::Buf(buf), _) => buf.extend_from_slice(&piece),
            _ => {
                let prev = self.bytes_of(&self.acc);
                // Room for the rest of the chunk too: one allocation per feed.
                let mut buf = BytesMut::with_capacity(prev.len() + piece.len() + self.chunk.len());
                buf.extend_from_slice(&prev);
                buf.extend_from_slice(&piece);
                self.acc = Acc::Buf(buf);
            }
        }
    }

    fn finish(self) -> Bytes {
        match self.acc {
            Acc::Buf(buf) => buf.freeze(),
            Acc::One(b) => b,
            ref acc => self.bytes_of(acc),
        }
    }
}

/// Meters (and optionally strips usage from) an OpenAI-format SSE response
/// body as it streams through the proxy.
#[derive(Debug)]
pub struct StreamMeter {
    parser: SseParser,
    strip: bool,
    tally: Tally,
}

impl StreamMeter {
    /// `strip_usage`: the client did not ask for usage (the gateway added
    /// `stream_options.include_usage` itself), so usage is removed from what
    /// the client receives.
    pub fn new(strip_usage: bool) -> Self {
        StreamMeter {
            parser: SseParser::new(),
            strip: strip_usage,
            tally: Tally::default(),
        }
    }

    /// Bytes held for an SSE event not yet complete (bounded by the caller).
    pub fn pending_bytes(&self) -> usize {
        self.parser.pending().len()
    }

    /// Feed one upstream chunk; returns the bytes to send to the client.
    ///
    /// Without stripping the input is returned unchanged (same `Bytes`, no
    /// copy) and metered on the side. With stripping only complete events are
    /// returned (a partial event is held back until its end arrives), and:
    /// * an event with a non-null `usage` and empty (or absent / null)
    ///   `choices` is dropped entirely, together with the comment or blank
    ///   lines that preceded it since the previous event;
    /// * an event with a non-null `usage` and non-empty `choices` is
    ///   re-emitted with the top-level `usage` key removed, all other keys and
    ///   their raw values kept in order;
    /// * `"usage": null` is left as it is, and everything else (non-JSON,
    ///   `[DONE]`, `error` objects, comments) is forwarded byte for byte.
    ///
    /// Unchanged events that are contiguous in `chunk` are returned as a
    /// slice of it, without copying. (An event whose blank line ends with a
    /// `\r` that is the last byte of the chunk is released by the next
    /// chunk, see [`SseParser::push`].)
    pub fn feed(&mut self, chunk: Bytes) -> Bytes {
        let strip = self.strip;
        if !strip {
            let tally = &mut self.tally;
            self.parser.push_bytes_ref(&chunk, |ev| {
                tally.observe(&ev, false);
            });
            return chunk;
        }
        let mut out = Out::new(&chunk);
        let tally = &mut self.tally;
        self.parser
            .push_bytes_ref(&chunk, |ev| emit(&mut out, tally, &ev));
        out.finish()
    }

    /// End of the upstream body: returns any held-back bytes to forward.
    /// An unterminated final event is still metered (and, when stripping,
    /// filtered like any other event).
    pub fn finish(&mut self) -> Bytes {
        let empty = Bytes::new();
        let mut out = Out::new(&empty);
        let strip = self.strip;
        let tally = &mut self.tally;
        let rest = self.parser.finish_lenient_ref(|ev| {
            if strip {
                emit(&mut out, tally, &ev);
            } else {
                tally.observe(&ev, false);
            }
        });
        if strip {
            out.push(rest);
        }
        out.finish()
    }

    /// Usage reported by the provider (the last usable non-null `usage`
    /// object seen), else an estimate: `output_tokens` from
    /// [`estimate_tokens`](super::estimate_tokens) over all streamed `choices[].delta.content`,
    /// `delta.reasoning_content` (or `delta.reasoning`),
    /// `delta.tool_calls[].function.arguments` and `choices[].text`;
    /// `reasoning_tokens` is the reasoning part of it; `estimated = true` and
    /// `input_tokens = 0` (the caller fills in its own prompt estimate).
    ///
    /// Text streamed after the last report (a provider that reports early, or a stream
    /// that stopped before its final report) is estimated and added to the reported
    /// output, and the usage is then marked `estimated`.
    pub fn usage(&self) -> Usage {
        if let Some(mut u) = self.tally.reported {
            let (content, reasoning) = self.tally.at_report;
            let extra_reasoning = self.tally.reasoning.tokens().saturating_sub(reasoning);
            let extra = self
                .tally
                .content
                .tokens()
                .saturating_sub(content)
                .saturating_add(extra_reasoning);
            if extra > 0 {
                u.output_tokens = u.output_tokens.saturating_add(extra);
                u.reasoning_tokens = u.reasoning_tokens.saturating_add(extra_reasoning);
                u.estimated = true;
            }
            return u;
        }
        let reasoning = self.tally.reasoning.tokens();
        Usage {
            input_tokens: 0,
            output_tokens: self.tally.content.tokens().saturating_add(reasoning),
            cached_input_tokens: 0,
            cache_write_tokens: 0,
            reasoning_tokens: reasoning,
            estimated: true,
            units: crate::usage::Units::NONE,
        }
    }

    /// Whether `data: [DONE]` was seen.
    pub fn saw_done(&self) -> bool {
        self.tally.saw_done
    }

    /// Whether some event carried non-empty content, reasoning, tool-call
    /// arguments or legacy `text` (for time-to-first-token).
    pub fn first_content_seen(&self) -> bool {
        self.tally.first_content
    }

    /// Number of SSE events seen (including `[DONE]` and non-JSON ones).
    pub fn events(&self) -> u64 {
        self.tally.events
    }
}

fn emit(out: &mut Out<'_>, tally: &mut Tally, ev: &SseEventRef<'_>) {
    match tally.observe(ev, true) {
        Verdict::Keep => out.push_event(ev),
        Verdict::Replace(raw) => out.push(raw),
        Verdict::Drop => {}
    }
}
