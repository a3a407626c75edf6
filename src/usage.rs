//! Token usage accounting for OpenAI-format responses.
//!
//! This module owns everything the gateway knows about token counts:
//!
//! * [`usage_from_json`]: the `usage` object of a buffered (non-streaming)
//!   chat / completions / embeddings response body;
//! * [`estimate_tokens`] / [`TokenEstimator`]: a cheap, allocation-free
//!   estimate for when a provider reports nothing;
//! * [`StreamMeter`]: the streaming (`text/event-stream`) response body
//!   filter. It meters usage from the chunks as they pass (reported usage, or
//!   an estimate over the streamed text), notices `data: [DONE]` and the first
//!   content, and — when the gateway itself added
//!   `stream_options.include_usage` — removes the usage it asked for from
//!   what the client receives, leaving every other byte untouched.

use std::borrow::Cow;
use std::fmt;

use bytes::{Bytes, BytesMut};
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use crate::sse::{raw_lines, SseEventRef, SseParser};

/// Token usage of one request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Prompt tokens, including cached ones.
    pub input_tokens: u64,
    /// Completion tokens, including reasoning ones.
    pub output_tokens: u64,
    pub cached_input_tokens: u64,
    pub reasoning_tokens: u64,
    /// True when the gateway estimated the numbers (the provider reported none).
    pub estimated: bool,
}

// ---------------------------------------------------------------------------
// Reported usage
// ---------------------------------------------------------------------------

/// A token count that tolerates non-integer JSON: negative numbers become 0,
/// floats are truncated (saturating at `u64::MAX`), numeric strings are
/// parsed (0 if unparsable).
struct Count(u64);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Count;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a token count")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Count, E> {
                Ok(Count(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Count, E> {
                Ok(Count(u64::try_from(v).unwrap_or(0)))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Count, E> {
                // `as` saturates; NaN and negatives become 0.
                Ok(Count(if v > 0.0 { v as u64 } else { 0 }))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Count, E> {
                Ok(Count(v.trim().parse().unwrap_or(0)))
            }
        }
        d.deserialize_any(V)
    }
}

fn count(c: &Option<Count>) -> Option<u64> {
    c.as_ref().map(|c| c.0)
}

#[derive(Deserialize)]
struct UsageDetails {
    #[serde(default)]
    cached_tokens: Option<Count>,
    #[serde(default)]
    reasoning_tokens: Option<Count>,
}

/// OpenAI `usage` object; the Responses API names are accepted as aliases.
#[derive(Deserialize)]
struct UsageView {
    #[serde(default, alias = "input_tokens")]
    prompt_tokens: Option<Count>,
    #[serde(default, alias = "output_tokens")]
    completion_tokens: Option<Count>,
    #[serde(default)]
    total_tokens: Option<Count>,
    #[serde(default, alias = "input_tokens_details")]
    prompt_tokens_details: Option<UsageDetails>,
    #[serde(default, alias = "output_tokens_details")]
    completion_tokens_details: Option<UsageDetails>,
}

/// Parse a `usage` object. `None` unless it has at least one of
/// `prompt_tokens`, `completion_tokens`, `total_tokens`.
fn parse_usage(raw: &RawValue) -> Option<Usage> {
    let u: UsageView = serde_json::from_str(raw.get()).ok()?;
    let prompt = count(&u.prompt_tokens);
    let completion = count(&u.completion_tokens);
    let total = count(&u.total_tokens);
    if prompt.is_none() && completion.is_none() && total.is_none() {
        return None;
    }
    let input =
        prompt.unwrap_or_else(|| total.unwrap_or(0).saturating_sub(completion.unwrap_or(0)));
    // Embeddings report only prompt_tokens + total_tokens: output is 0.
    let output = completion.unwrap_or_else(|| total.unwrap_or(0).saturating_sub(input));
    let detail = |d: &Option<UsageDetails>, pick: fn(&UsageDetails) -> &Option<Count>| {
        d.as_ref().and_then(|d| count(pick(d))).unwrap_or(0)
    };
    Some(Usage {
        input_tokens: input,
        output_tokens: output,
        cached_input_tokens: detail(&u.prompt_tokens_details, |d| &d.cached_tokens),
        reasoning_tokens: detail(&u.completion_tokens_details, |d| &d.reasoning_tokens),
        estimated: false,
    })
}

/// Usage from an OpenAI chat / completions / embeddings JSON response body:
/// `prompt_tokens` (incl. `prompt_tokens_details.cached_tokens`),
/// `completion_tokens` (incl. `completion_tokens_details.reasoning_tokens`);
/// embeddings report `prompt_tokens` + `total_tokens` and get output 0.
/// Missing or null fields count as 0. `None` if the body is not JSON or has
/// no usable `usage` object (absent, null, or without any token count).
pub fn usage_from_json(body: &[u8]) -> Option<Usage> {
    #[derive(Deserialize)]
    struct Body<'a> {
        #[serde(borrow, default)]
        usage: Option<&'a RawValue>,
    }
    let body: Body<'_> = serde_json::from_slice(body).ok()?;
    parse_usage(body.usage?)
}

// ---------------------------------------------------------------------------
// Estimation
// ---------------------------------------------------------------------------

/// Whether `c` is a CJK ideograph, kana, Hangul, or CJK/full-width
/// punctuation — scripts where one character is roughly one token.
fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x1100..=0x11FF        // Hangul Jamo
        | 0x2E80..=0x2FDF      // CJK / Kangxi radicals
        | 0x3000..=0x303F      // CJK symbols and punctuation
        | 0x3040..=0x30FF      // Hiragana, Katakana
        | 0x3100..=0x318F      // Bopomofo, Hangul compatibility Jamo
        | 0x31A0..=0x31FF      // Bopomofo ext., CJK strokes, Katakana ext.
        | 0x3200..=0x4DBF      // enclosed CJK, compatibility, Ext. A
        | 0x4E00..=0x9FFF      // CJK Unified Ideographs
        | 0xA960..=0xA97F      // Hangul Jamo ext. A
        | 0xAC00..=0xD7FF      // Hangul syllables, Jamo ext. B
        | 0xF900..=0xFAFF      // CJK compatibility ideographs
        | 0xFF00..=0xFFEF      // half-width and full-width forms
        | 0x1B000..=0x1B16F    // kana supplement / extended
        | 0x20000..=0x3134F // CJK Ext. B..G and compatibility supplement
    )
}

/// Incremental form of [`estimate_tokens`]: feeding several strings gives
/// exactly `estimate_tokens` of their concatenation. `Copy`, no allocation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenEstimator {
    /// Tokens of closed ASCII runs plus CJK characters.
    whole: u64,
    /// Length of the ASCII run still open at the end of the text so far.
    ascii_run: u64,
    /// Other non-ASCII characters (half a token each).
    halves: u64,
}

impl TokenEstimator {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn feed(&mut self, text: &str) {
        for c in text.chars() {
            if c.is_ascii() {
                self.ascii_run = self.ascii_run.saturating_add(1);
                continue;
            }
            self.whole = self.whole.saturating_add(self.ascii_run.div_ceil(4));
            self.ascii_run = 0;
            if is_cjk(c) {
                self.whole = self.whole.saturating_add(1);
            } else {
                self.halves = self.halves.saturating_add(1);
            }
        }
    }

    pub fn tokens(&self) -> u64 {
        self.whole
            .saturating_add(self.ascii_run.div_ceil(4))
            .saturating_add(self.halves.div_ceil(2))
    }
}

/// Rough token estimate for text, for when a provider reports no usage.
///
/// Rule: every maximal run of ASCII characters counts `ceil(len / 4)`
/// tokens; every CJK ideograph, kana, Hangul or CJK/full-width punctuation
/// character counts 1 token; every other non-ASCII character (Latin
/// diacritics, Cyrillic, emoji, ...) counts half a token, rounded up over the
/// whole text. So `"hello"` → 2, `"世界"` → 2, `"wörld"` → 1 + 1 + 1 = 3.
/// Cheap (one pass over the chars), no allocation.
pub fn estimate_tokens(text: &str) -> u64 {
    let mut e = TokenEstimator::new();
    e.feed(text);
    e.tokens()
}

// ---------------------------------------------------------------------------
// Streaming chunk view
// ---------------------------------------------------------------------------

/// A string field that may also be null or of another type (ignored).
struct Text<'a>(Option<Cow<'a, str>>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Text<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Text<'a>, E> {
                Ok(Text(Some(Cow::Borrowed(v))))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text<'a>, E> {
                Ok(Text(Some(Cow::Owned(v.to_owned()))))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Text<'a>, E> {
                Ok(Text(Some(Cow::Owned(v))))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Text<'a>, E> {
                Ok(Text(None))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Text<'a>, E> {
                Ok(Text(None))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Text<'a>, E> {
                Ok(Text(None))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Text<'a>, E> {
                Ok(Text(None))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Text<'a>, E> {
                Ok(Text(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Text<'a>, A::Error> {
                while s.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Text(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Text<'a>, A::Error> {
                while m.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Text(None))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

impl Text<'_> {
    fn get(&self) -> &str {
        self.0.as_deref().unwrap_or_default()
    }
}

#[derive(Deserialize)]
struct FunctionView<'a> {
    #[serde(borrow, default)]
    arguments: Option<Text<'a>>,
}

#[derive(Deserialize)]
struct ToolCallView<'a> {
    #[serde(borrow, default)]
    function: Option<FunctionView<'a>>,
}

#[derive(Deserialize)]
struct DeltaView<'a> {
    #[serde(borrow, default)]
    content: Option<Text<'a>>,
    #[serde(borrow, default)]
    reasoning_content: Option<Text<'a>>,
    /// OpenRouter-style name; used only when `reasoning_content` is absent.
    #[serde(borrow, default)]
    reasoning: Option<Text<'a>>,
    #[serde(borrow, default)]
    tool_calls: Option<Vec<ToolCallView<'a>>>,
}

#[derive(Deserialize)]
struct ChoiceView<'a> {
    #[serde(borrow, default)]
    delta: Option<DeltaView<'a>>,
    /// Legacy completions.
    #[serde(borrow, default)]
    text: Option<Text<'a>>,
}

fn text_of<'t>(t: &'t Option<Text<'_>>) -> &'t str {
    t.as_ref().map(Text::get).unwrap_or_default()
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
enum TopField {
    Choices,
    Usage,
    #[serde(other)]
    Other,
}

/// What metering needs from one chunk's JSON.
#[derive(Default)]
struct ChunkSummary<'a> {
    /// `choices` is a non-empty array.
    has_choices: bool,
    /// Some choice carried non-empty content / reasoning / tool args / text.
    has_text: bool,
    /// A non-null `usage` value.
    usage: Option<&'a RawValue>,
}

/// Text estimators updated while the chunk is parsed (no intermediate Vec
/// of choices, no copies of borrowed strings).
struct Estimators<'e> {
    content: &'e mut TokenEstimator,
    reasoning: &'e mut TokenEstimator,
}

struct ChoicesSeed<'s, 'e>(&'s mut Estimators<'e>);

impl<'de> DeserializeSeed<'de> for ChoicesSeed<'_, '_> {
    /// (number of choices, any text)
    type Value = (usize, bool);
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ChoicesSeed<'_, '_> {
    type Value = (usize, bool);
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of choices")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok((0, false))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut n = 0usize;
        let mut any_text = false;
        while let Some(choice) = seq.next_element::<ChoiceView<'de>>()? {
            n = n.saturating_add(1);
            let mut feed = |est: &mut TokenEstimator, s: &str| {
                if !s.is_empty() {
                    est.feed(s);
                    any_text = true;
                }
            };
            if let Some(delta) = &choice.delta {
                let reasoning = match &delta.reasoning_content {
                    Some(r) => r.get(),
                    None => text_of(&delta.reasoning),
                };
                feed(self.0.reasoning, reasoning);
                feed(self.0.content, text_of(&delta.content));
                for call in delta.tool_calls.iter().flatten() {
                    if let Some(func) = &call.function {
                        feed(self.0.content, text_of(&func.arguments));
                    }
                }
            }
            feed(self.0.content, text_of(&choice.text));
        }
        Ok((n, any_text))
    }
}

struct ChunkSeed<'e>(Estimators<'e>);

impl<'de> Visitor<'de> for ChunkSeed<'_> {
    type Value = ChunkSummary<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut s = ChunkSummary::default();
        while let Some(key) = map.next_key::<TopField>()? {
            match key {
                TopField::Choices => {
                    let (n, text) = map.next_value_seed(ChoicesSeed(&mut self.0))?;
                    s.has_choices = n > 0;
                    s.has_text |= text;
                }
                TopField::Usage => s.usage = map.next_value::<Option<&'de RawValue>>()?,
                TopField::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(s)
    }
}

fn parse_chunk<'a>(data: &'a str, est: Estimators<'_>) -> serde_json::Result<ChunkSummary<'a>> {
    let mut de = serde_json::Deserializer::from_str(data);
    let summary = de.deserialize_map(ChunkSeed(est))?;
    de.end()?;
    Ok(summary)
}

/// A JSON object key, borrowed when it has no escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Key<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Key<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'a>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'a>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V(std::marker::PhantomData))
    }
}

/// A top-level JSON object as an ordered list of (key, raw value).
struct OrderedObject<'a>(Vec<(Key<'a>, &'a RawValue)>);

impl<'de> Deserialize<'de> for OrderedObject<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OrderedObject<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(entry) = map.next_entry::<Key<'de>, &'de RawValue>()? {
                    entries.push(entry);
                }
                Ok(OrderedObject(entries))
            }
        }
        d.deserialize_map(V)
    }
}

/// `data` (a JSON object) with every top-level `usage` key removed; other
/// keys and their raw values are kept byte for byte and in order (only the
/// whitespace between top-level tokens is dropped, and escaped keys are
/// re-escaped canonically).
fn remove_usage_key(data: &str) -> Option<Vec<u8>> {
    let obj: OrderedObject<'_> = serde_json::from_str(data).ok()?;
    let mut out = Vec::with_capacity(data.len());
    out.push(b'{');
    let mut first = true;
    for (key, value) in &obj.0 {
        if key.0 == "usage" {
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        serde_json::to_writer(&mut out, &*key.0).ok()?;
        out.push(b':');
        out.extend_from_slice(value.get().as_bytes());
    }
    out.push(b'}');
    Some(out)
}

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

// ---------------------------------------------------------------------------
// StreamMeter
// ---------------------------------------------------------------------------

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
    saw_done: bool,
    first_content: bool,
    events: u64,
}

impl Tally {
    fn observe(&mut self, ev: &SseEventRef<'_>, strip: bool) -> Verdict {
        let stream_start = self.events == 0;
        self.events = self.events.saturating_add(1);
        let data = ev.data();
        if data.trim() == "[DONE]" {
            self.saw_done = true;
            return Verdict::Keep;
        }
        // Estimate into copies so a payload that fails to parse half way
        // through does not count.
        let mut content = self.content;
        let mut reasoning = self.reasoning;
        let est = Estimators {
            content: &mut content,
            reasoning: &mut reasoning,
        };
        let Ok(summary) = parse_chunk(&data, est) else {
            // Not JSON (or not an object): forward untouched, don't meter.
            return Verdict::Keep;
        };
        self.content = content;
        self.reasoning = reasoning;
        self.first_content |= summary.has_text;
        let Some(usage) = summary.usage else {
            return Verdict::Keep;
        };
        if let Some(u) = parse_usage(usage) {
            self.reported = Some(u);
        }
        if !strip {
            Verdict::Keep
        } else if !summary.has_choices {
            Verdict::Drop
        } else {
            match remove_usage_key(&data) {
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
                let mut buf = BytesMut::with_capacity(prev.len() + piece.len());
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
    /// [`estimate_tokens`] over all streamed `choices[].delta.content`,
    /// `delta.reasoning_content` (or `delta.reasoning`),
    /// `delta.tool_calls[].function.arguments` and `choices[].text`;
    /// `reasoning_tokens` is the reasoning part of it; `estimated = true` and
    /// `input_tokens = 0` (the caller fills in its own prompt estimate).
    pub fn usage(&self) -> Usage {
        if let Some(u) = self.tally.reported {
            return u;
        }
        let reasoning = self.tally.reasoning.tokens();
        Usage {
            input_tokens: 0,
            output_tokens: self.tally.content.tokens().saturating_add(reasoning),
            cached_input_tokens: 0,
            reasoning_tokens: reasoning,
            estimated: true,
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::sse::SseEvent;

    const CHAT_EVENTS: &[&str] = &[
        r#"data: {"id":"chatcmpl-AbC123","object":"chat.completion.chunk","created":1727000000,"model":"gpt-4o-2024-08-06","system_fingerprint":"fp_5f20662549","choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}],"usage":null}"#,
        r#"data: {"id":"chatcmpl-AbC123","object":"chat.completion.chunk","created":1727000000,"model":"gpt-4o-2024-08-06","system_fingerprint":"fp_5f20662549","choices":[{"index":0,"delta":{"content":"Hello"},"logprobs":null,"finish_reason":null}],"usage":null}"#,
        r#"data: {"id":"chatcmpl-AbC123","object":"chat.completion.chunk","created":1727000000,"model":"gpt-4o-2024-08-06","system_fingerprint":"fp_5f20662549","choices":[{"index":0,"delta":{"content":" wörld"},"logprobs":null,"finish_reason":null}],"usage":null}"#,
        r#"data: {"id":"chatcmpl-AbC123","object":"chat.completion.chunk","created":1727000000,"model":"gpt-4o-2024-08-06","system_fingerprint":"fp_5f20662549","choices":[{"index":0,"delta":{"content":", 世界"},"logprobs":null,"finish_reason":null}],"usage":null}"#,
        r#"data: {"id":"chatcmpl-AbC123","object":"chat.completion.chunk","created":1727000000,"model":"gpt-4o-2024-08-06","system_fingerprint":"fp_5f20662549","choices":[{"index":0,"delta":{"content":" 🚀\n\"caf\u00e9\""},"logprobs":null,"finish_reason":null}],"usage":null}"#,
        r#"data: {"id":"chatcmpl-AbC123","object":"chat.completion.chunk","created":1727000000,"model":"gpt-4o-2024-08-06","system_fingerprint":"fp_5f20662549","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],"usage":null}"#,
        r#"data: {"id":"chatcmpl-AbC123","object":"chat.completion.chunk","created":1727000000,"model":"gpt-4o-2024-08-06","system_fingerprint":"fp_5f20662549","choices":[],"usage":{"prompt_tokens":25,"completion_tokens":12,"total_tokens":37,"prompt_tokens_details":{"cached_tokens":8,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":3,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}}"#,
        "data: [DONE]",
    ];
    const USAGE_EVENT: usize = 6;
    const CONTENT: &str = "Hello wörld, 世界 🚀\n\"café\"";
    const REPORTED: Usage = Usage {
        input_tokens: 25,
        output_tokens: 12,
        cached_input_tokens: 8,
        reasoning_tokens: 3,
        estimated: false,
    };

    fn build(events: &[&str], skip: Option<usize>, eol: &str) -> Vec<u8> {
        let mut s = String::new();
        for (i, e) in events.iter().enumerate() {
            if Some(i) != skip {
                s.push_str(e);
                s.push_str(eol);
                s.push_str(eol);
            }
        }
        s.into_bytes()
    }

    struct Run {
        out: Vec<u8>,
        usage: Usage,
        saw_done: bool,
        first: bool,
        events: u64,
    }

    fn run(strip: bool, chunks: &[&[u8]]) -> Run {
        let mut m = StreamMeter::new(strip);
        let mut out = Vec::new();
        for c in chunks {
            let input = Bytes::copy_from_slice(c);
            let got = m.feed(input.clone());
            if !strip {
                assert_eq!(got.as_ptr(), input.as_ptr(), "pass-through must not copy");
                assert_eq!(got.len(), input.len());
            }
            out.extend_from_slice(&got);
        }
        out.extend_from_slice(&m.finish());
        Run {
            out,
            usage: m.usage(),
            saw_done: m.saw_done(),
            first: m.first_content_seen(),
            events: m.events(),
        }
    }

    fn check_run(r: &Run, expected_out: &[u8], usage: Usage, events: u64) {
        assert_eq!(
            String::from_utf8_lossy(&r.out),
            String::from_utf8_lossy(expected_out)
        );
        assert_eq!(r.usage, usage);
        assert!(r.saw_done);
        assert!(r.first);
        assert_eq!(r.events, events);
    }

    fn parse_events(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut p = SseParser::new();
        let mut events = Vec::new();
        for c in chunks {
            p.push_bytes(&Bytes::copy_from_slice(c), |e| events.push(e));
        }
        assert!(p.finish(|e| events.push(e)).is_empty());
        events
    }

    #[test]
    fn chat_fixture_every_split_point() {
        for eol in ["\n", "\r\n"] {
            let input = build(CHAT_EVENTS, None, eol);
            let stripped = build(CHAT_EVENTS, Some(USAGE_EVENT), eol);
            let reference = parse_events(&[&input]);
            assert_eq!(reference.len(), CHAT_EVENTS.len());
            for (ev, src) in reference.iter().zip(CHAT_EVENTS) {
                assert_eq!(Some(ev.data.as_str()), src.strip_prefix("data: "));
            }
            for i in 0..=input.len() {
                assert_eq!(parse_events(&[&input[..i], &input[i..]]), reference);
            }
            let bytes: Vec<&[u8]> = input.chunks(1).collect();
            assert_eq!(parse_events(&bytes), reference);
            for strip in [false, true] {
                let expected: &[u8] = if strip { &stripped } else { &input };
                check_run(&run(strip, &[&input]), expected, REPORTED, 8);
                for i in 0..=input.len() {
                    let r = run(strip, &[&input[..i], &input[i..]]);
                    check_run(&r, expected, REPORTED, 8);
                }
                let bytes: Vec<&[u8]> = input.chunks(1).collect();
                check_run(&run(strip, &bytes), expected, REPORTED, 8);
            }
        }
    }

    #[test]
    fn short_fixture_three_way_splits() {
        let events = [
            r#"data: {"choices":[{"delta":{"content":"wö世🚀"}}],"usage":null}"#,
            r#"data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4}}"#,
            "data: [DONE]",
        ];
        let usage = Usage {
            input_tokens: 3,
            output_tokens: 4,
            ..Usage::default()
        };
        for eol in ["\n", "\r\n", "\r"] {
            let input = build(&events, None, eol);
            let stripped = build(&events, Some(1), eol);
            for strip in [false, true] {
                let expected: &[u8] = if strip { &stripped } else { &input };
                for i in 0..=input.len() {
                    for j in i..=input.len() {
                        let r = run(strip, &[&input[..i], &input[i..j], &input[j..]]);
                        check_run(&r, expected, usage, 3);
                    }
                }
            }
        }
    }

    #[test]
    fn strip_output_holds_back_partial_events() {
        let input = build(CHAT_EVENTS, None, "\n");
        let mut m = StreamMeter::new(true);
        let cut = CHAT_EVENTS[0].len() + 2 + 10;
        let first = m.feed(Bytes::copy_from_slice(&input[..cut]));
        assert_eq!(&first[..], &input[..CHAT_EVENTS[0].len() + 2]);
        // A whole-event chunk with nothing carried over is returned as is.
        let mut m = StreamMeter::new(true);
        let chunk = Bytes::copy_from_slice(&input[..CHAT_EVENTS[0].len() + 2]);
        let got = m.feed(chunk.clone());
        assert_eq!(got.as_ptr(), chunk.as_ptr());
        assert_eq!(got.len(), chunk.len());
    }

    #[test]
    fn usage_on_last_content_chunk_is_removed_but_content_kept() {
        let input = concat!(
            "data: {\"id\":\"x\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\n",
            "data: {\"id\":\"x\", \"choices\": [{\"index\":0,\"delta\":{\"content\":\"!\"},\"finish_reason\":\"stop\"}], ",
            "\"usage\": {\"prompt_tokens\": 5, \"completion_tokens\": 2, \"total_tokens\": 7}, \"model\": \"m\"}\n\n",
            "data: [DONE]\n\n"
        );
        let expected = concat!(
            "data: {\"id\":\"x\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\n",
            "data: {\"id\":\"x\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"!\"},\"finish_reason\":\"stop\"}],\"model\":\"m\"}\n\n",
            "data: [DONE]\n\n"
        );
        let usage = Usage {
            input_tokens: 5,
            output_tokens: 2,
            ..Usage::default()
        };
        let input = input.as_bytes();
        for i in 0..=input.len() {
            let r = run(true, &[&input[..i], &input[i..]]);
            check_run(&r, expected.as_bytes(), usage, 3);
            let r = run(false, &[&input[..i], &input[i..]]);
            check_run(&r, input, usage, 3);
        }
    }

    #[test]
    fn rewrite_keeps_other_lines_and_multiline_data() {
        let input = b"\xEF\xBB\xBF: hi\r\nevent: chunk\r\ndata: {\"choices\":[{\"text\":\"a\"}],\r\nid: 1\r\ndata: \"usage\":{\"prompt_tokens\":1},\r\ndata: \"x\":\r\ndata: [1,\r\ndata:  2]}\r\n\r\n";
        let expected = b"\xEF\xBB\xBF: hi\r\nevent: chunk\r\ndata: {\"choices\":[{\"text\":\"a\"}],\"x\":[1,\r\ndata:  2]}\r\nid: 1\r\n\r\n";
        let r = run(true, &[input]);
        assert_eq!(
            String::from_utf8_lossy(&r.out),
            String::from_utf8_lossy(expected)
        );
        // Re-parsing the rewritten event gives the same JSON minus usage.
        let mut p = SseParser::new();
        let mut evs = Vec::new();
        p.push(&r.out, |e| evs.push(e));
        let v: serde_json::Value = serde_json::from_str(&evs[0].data).unwrap();
        assert_eq!(v, serde_json::json!({"choices":[{"text":"a"}],"x":[1,2]}));
        assert_eq!(r.usage.input_tokens, 1);
    }

    #[test]
    fn bom_data_line_at_stream_start_rewritten() {
        let input = b"\xEF\xBB\xBFdata: {\"choices\":[{\"text\":\"a\"}],\"usage\":{\"total_tokens\":2}}\n\n";
        let r = run(true, &[input]);
        assert_eq!(
            &r.out[..],
            &b"\xEF\xBB\xBFdata: {\"choices\":[{\"text\":\"a\"}]}\n\n"[..]
        );
        assert_eq!(r.usage.input_tokens, 2);
    }

    #[test]
    fn usage_null_events_errors_and_non_json_forwarded() {
        let input = concat!(
            ": comment\n\n",
            "data: {\"choices\":[],\"usage\":null}\n\n",
            "data: not json {\n\n",
            "data: [1,2]\n\n",
            "event: error\ndata: {\"error\":{\"message\":\"overloaded\",\"type\":\"server_error\"}}\n\n",
            "data: {\"choices\":null,\"usage\":{\"prompt_tokens\":4}}\n\n",
            "data: [DONE]\n\n"
        );
        let expected = concat!(
            ": comment\n\n",
            "data: {\"choices\":[],\"usage\":null}\n\n",
            "data: not json {\n\n",
            "data: [1,2]\n\n",
            "event: error\ndata: {\"error\":{\"message\":\"overloaded\",\"type\":\"server_error\"}}\n\n",
            "data: [DONE]\n\n"
        );
        let r = run(true, &[input.as_bytes()]);
        assert_eq!(String::from_utf8_lossy(&r.out), expected);
        assert!(r.saw_done);
        assert!(!r.first);
        assert_eq!(r.events, 6);
        assert_eq!(r.usage.input_tokens, 4);
        assert!(!r.usage.estimated);
    }

    #[test]
    fn dropped_event_split_inside_crlf() {
        let input =
            b"data: {\"choices\":[],\"usage\":{\"total_tokens\":1}}\r\n\r\ndata: [DONE]\r\n\r\n";
        let drop_len = input.len() - b"data: [DONE]\r\n\r\n".len();
        let cut = drop_len - 1; // between the final `\r` and `\n` of the dropped event
        let r = run(true, &[&input[..cut], &input[cut..]]);
        assert_eq!(&r.out[..], &input[drop_len..]);
        // Same when the stream ends right there.
        let r = run(true, &[&input[..cut], b"\n"]);
        assert!(r.out.is_empty());
        let r = run(true, &[&input[..cut]]);
        assert!(r.out.is_empty());
        assert_eq!(r.usage.input_tokens, 1);
    }

    #[test]
    fn unterminated_final_event_is_metered_and_forwarded() {
        let tail = "data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":1}}";
        let r = run(false, &[tail.as_bytes()]);
        assert_eq!(r.out, tail.as_bytes());
        assert_eq!(r.usage.input_tokens, 9);
        let r = run(true, &[tail.as_bytes()]);
        assert_eq!(
            String::from_utf8_lossy(&r.out),
            "data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}"
        );
        assert!(!r.saw_done);
        let r = run(true, &[b": just a comment"]);
        assert_eq!(r.out, b": just a comment");
    }

    #[test]
    fn estimation_without_reported_usage() {
        let events: Vec<&str> = CHAT_EVENTS
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != USAGE_EVENT)
            .map(|(_, e)| *e)
            .collect();
        let input = build(&events, None, "\n");
        let expected_tokens = estimate_tokens(CONTENT);
        for i in 0..=input.len() {
            let r = run(true, &[&input[..i], &input[i..]]);
            assert_eq!(r.out, input);
            assert!(r.usage.estimated);
            assert_eq!(r.usage.input_tokens, 0);
            assert_eq!(r.usage.output_tokens, expected_tokens);
            assert_eq!(r.usage.reasoning_tokens, 0);
        }
        // Per-chunk estimates differ from the estimate of the whole text;
        // the meter must match the latter.
        assert_ne!(
            expected_tokens,
            ["Hello", " wörld", ", 世界", " 🚀\n\"café\""]
                .iter()
                .map(|s| estimate_tokens(s))
                .sum::<u64>()
        );
    }

    #[test]
    fn estimation_counts_reasoning_tool_args_and_legacy_text() {
        let input = concat!(
            "data: {\"choices\":[{\"delta\":{\"reasoning_content\":\"think\"}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"a\\\":1}\"}}]}}]}\n\n",
            "data: {\"choices\":[{\"text\":\"legacy text\",\"index\":0}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"content\":[1,2]}}]}\n\n",
        );
        let r = run(false, &[input.as_bytes()]);
        assert!(r.first);
        assert!(!r.saw_done);
        let reasoning = estimate_tokens("think");
        assert_eq!(r.usage.reasoning_tokens, reasoning);
        assert_eq!(
            r.usage.output_tokens,
            reasoning + estimate_tokens("{\"a\":1}legacy text")
        );
        assert!(r.usage.estimated);
    }

    #[test]
    fn first_content_not_set_by_role_chunk() {
        let r = run(false, &[CHAT_EVENTS[0].as_bytes(), b"\n\n"]);
        assert!(!r.first);
        assert_eq!(r.events, 1);
    }

    #[test]
    fn usage_from_json_chat() {
        let body = br#"{"id":"chatcmpl-1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"Hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":19,"completion_tokens":10,"total_tokens":29,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0}}}"#;
        assert_eq!(
            usage_from_json(body),
            Some(Usage {
                input_tokens: 19,
                output_tokens: 10,
                ..Usage::default()
            })
        );
    }

    #[test]
    fn usage_from_json_details() {
        let body = br#"{"usage":{"prompt_tokens":2006,"completion_tokens":300,"total_tokens":2306,"prompt_tokens_details":{"cached_tokens":1920},"completion_tokens_details":{"reasoning_tokens":256,"accepted_prediction_tokens":0}}}"#;
        assert_eq!(
            usage_from_json(body),
            Some(Usage {
                input_tokens: 2006,
                output_tokens: 300,
                cached_input_tokens: 1920,
                reasoning_tokens: 256,
                estimated: false
            })
        );
    }

    #[test]
    fn usage_from_json_completions_and_embeddings() {
        let completions = br#"{"id":"cmpl-1","object":"text_completion","choices":[{"text":"x","index":0,"logprobs":null,"finish_reason":"length"}],"usage":{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12}}"#;
        assert_eq!(
            usage_from_json(completions),
            Some(Usage {
                input_tokens: 5,
                output_tokens: 7,
                ..Usage::default()
            })
        );
        let embeddings = br#"{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.0023,-0.0093]}],"model":"text-embedding-3-small","usage":{"prompt_tokens":8,"total_tokens":8}}"#;
        assert_eq!(
            usage_from_json(embeddings),
            Some(Usage {
                input_tokens: 8,
                output_tokens: 0,
                ..Usage::default()
            })
        );
    }

    #[test]
    fn usage_from_json_missing_null_and_odd_values() {
        assert_eq!(usage_from_json(br#"{"choices":[]}"#), None);
        assert_eq!(usage_from_json(br#"{"usage":null}"#), None);
        assert_eq!(usage_from_json(br#"{"usage":{}}"#), None);
        assert_eq!(usage_from_json(b"not json"), None);
        assert_eq!(usage_from_json(b"\xff\xfe"), None);
        assert_eq!(usage_from_json(b""), None);
        assert_eq!(usage_from_json(br#""usage""#), None);
        assert_eq!(
            usage_from_json(
                br#"{"usage":{"prompt_tokens":null,"completion_tokens":3,"prompt_tokens_details":null,"completion_tokens_details":{"reasoning_tokens":null}}}"#
            ),
            Some(Usage {
                output_tokens: 3,
                ..Usage::default()
            })
        );
        assert_eq!(
            usage_from_json(
                br#"{"usage":{"prompt_tokens":1e30,"completion_tokens":-4,"total_tokens":"12"}}"#
            ),
            Some(Usage {
                input_tokens: u64::MAX,
                output_tokens: 0,
                ..Usage::default()
            })
        );
        assert_eq!(
            usage_from_json(br#"{"usage":{"prompt_tokens":99999999999999999999999999}}"#)
                .map(|u| u.input_tokens),
            Some(u64::MAX)
        );
        // Responses API names.
        assert_eq!(
            usage_from_json(
                br#"{"usage":{"input_tokens":3,"output_tokens":4,"input_tokens_details":{"cached_tokens":1},"output_tokens_details":{"reasoning_tokens":2}}}"#
            ),
            Some(Usage {
                input_tokens: 3,
                output_tokens: 4,
                cached_input_tokens: 1,
                reasoning_tokens: 2,
                estimated: false
            })
        );
    }

    #[test]
    fn estimate_rule() {
        assert_eq!(estimate_tokens(""), 0);
        assert_eq!(estimate_tokens("a"), 1);
        assert_eq!(estimate_tokens("abcd"), 1);
        assert_eq!(estimate_tokens("hello"), 2);
        assert_eq!(estimate_tokens("世界"), 2);
        assert_eq!(estimate_tokens("こんにちは"), 5);
        assert_eq!(estimate_tokens("안녕"), 2);
        // "w" (1) + ö (½) + "rld" (1) → 2 + ceil(½) = 3
        assert_eq!(estimate_tokens("wörld"), 3);
        assert_eq!(estimate_tokens("éé"), 1);
        assert_eq!(estimate_tokens("🚀🚀🚀"), 2);
        assert_eq!(estimate_tokens("abcdefgh世abc"), 2 + 1 + 1);
    }

    #[test]
    fn estimator_is_incremental() {
        let text = "Hello wörld, 世界 🚀 and more ascii text ééé";
        let whole = estimate_tokens(text);
        for (i, _) in text.char_indices() {
            let mut e = TokenEstimator::new();
            e.feed(&text[..i]);
            e.feed(&text[i..]);
            assert_eq!(e.tokens(), whole);
        }
    }

    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// Random streams mixing fixture events, garbage and line-end variants:
    /// never panics; pass-through is exact; stripped output and metering do
    /// not depend on how the stream is chunked.
    #[test]
    fn fuzz_chunking_invariance() {
        let pieces: Vec<&[u8]> = vec![
            CHAT_EVENTS[1].as_bytes(),
            CHAT_EVENTS[4].as_bytes(),
            CHAT_EVENTS[6].as_bytes(),
            br#"data: {"choices":[{"delta":{"content":"x"}}],"usage":{"prompt_tokens":1}}"#,
            b"data: [DONE]",
            b": ping",
            b"data: {\"usage\":",
            b"\n",
            b"\r",
            b"\r\n",
            b"\xEF\xBB\xBF",
            b"\xff\xc3",
            b"data: \"\\ud800\"",
        ];
        let mut rng = XorShift(0x2545_F491_4F6C_DD1D);
        for _ in 0..3000 {
            let mut input = Vec::new();
            for _ in 0..rng.below(12) {
                if rng.below(5) == 0 {
                    input.push(rng.next() as u8);
                } else {
                    input.extend_from_slice(pieces[rng.below(pieces.len())]);
                }
            }
            let mut chunks = Vec::new();
            let mut at = 0;
            while at < input.len() {
                let end = (at + 1 + rng.below(24)).min(input.len());
                chunks.push(&input[at..end]);
                at = end;
            }
            for strip in [false, true] {
                let whole = run(strip, &[&input]);
                let chunked = run(strip, &chunks);
                assert_eq!(whole.out, chunked.out);
                assert_eq!(whole.usage, chunked.usage);
                assert_eq!(whole.saw_done, chunked.saw_done);
                assert_eq!(whole.first, chunked.first);
                assert_eq!(whole.events, chunked.events);
                if !strip {
                    assert_eq!(whole.out, input);
                }
            }
        }
    }
}
