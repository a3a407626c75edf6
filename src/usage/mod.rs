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
//!
//! JSON is read by an allocation-free scanner that gives up on anything it
//! does not model exactly; serde_json then decides, so the results are
//! always serde_json's. Files:
//!
//! * `estimate.rs`: token estimation;
//! * `json/`: the scanner;
//! * `chunk.rs`, `memo.rs`: the fast path for a streamed chunk, and what it
//!   remembers from the previous chunks of the stream;
//! * `usage_scan.rs`: the fast path for `usage` objects and response bodies;
//! * `slow.rs`: the serde_json paths (reference and fallback);
//! * `meter.rs`: [`StreamMeter`], the stream filter;
//! * `media.rs`: [`MediaMeter`], the answers metered in images, audio seconds,
//!   characters or search units ([`Units`]);
//! * `long_json.rs`: [`LongJson`], the usage of a whole answer too long to keep, read
//!   in one pass as it goes by;
//! * `response.rs`: [`estimate_response`] for JSON answers without usage, and the
//!   per-request clamp ([`MAX_TOKENS_PER_REQUEST`]) of absurd reported usage;
//! * `tests.rs`, `tests_fast.rs`, `tests_gen.rs`: tests, and property tests
//!   of the fast paths against serde_json with their input generator.

mod chunk;
mod estimate;
pub(crate) mod json;
mod long_json;
mod media;
mod memo;
mod meter;
mod response;
mod slow;
mod usage_scan;

pub use estimate::{estimate_tokens, TokenEstimator};
pub use long_json::LongJson;
pub use media::{MediaKind, MediaMeter};
pub use meter::StreamMeter;
pub use response::{billable, estimate_response, warn_clamped, MAX_TOKENS_PER_REQUEST};

use json::Bail;
use usage_scan::BodyUsage;

/// Token usage of one request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Prompt tokens, including cached ones.
    pub input_tokens: u64,
    /// Completion tokens, including reasoning ones.
    pub output_tokens: u64,
    pub cached_input_tokens: u64,
    /// Input tokens written to the provider's cache (Anthropic's cache creation; priced on
    /// their own), included in `input_tokens`.
    pub cache_write_tokens: u64,
    pub reasoning_tokens: u64,
    /// True when the gateway estimated the numbers (the provider reported none).
    pub estimated: bool,
    /// What the request used that is not counted in tokens (media endpoints).
    pub units: Units,
}

/// What a request used that is not counted in tokens: images made, audio heard, characters
/// spoken, rerank search units. Zero for text generation; priced by the price book's unit
/// prices (`crate::pricing`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Units {
    pub images: u64,
    /// Audio transcribed or translated, in milliseconds.
    pub audio_ms: u64,
    /// Characters of text turned into speech.
    pub characters: u64,
    /// Rerank search units (Cohere's billing unit).
    pub search_units: u64,
}

impl Units {
    pub const NONE: Units = Units {
        images: 0,
        audio_ms: 0,
        characters: 0,
        search_units: 0,
    };

    pub fn is_zero(&self) -> bool {
        *self == Units::NONE
    }
}

/// What metering needs from one chunk's JSON.
#[derive(Debug, Default, PartialEq, Eq)]
struct ChunkSummary<'a> {
    /// `choices` is a non-empty array.
    has_choices: bool,
    /// Some choice carried non-empty content / reasoning / tool args / text.
    has_text: bool,
    /// The raw non-null `usage` value (the last one, if repeated).
    usage: Option<&'a str>,
}

/// Text estimators updated while the chunk is parsed (no intermediate Vec
/// of choices, no copies of borrowed strings).
struct Estimators<'e> {
    content: &'e mut TokenEstimator,
    reasoning: &'e mut TokenEstimator,
}

/// Parse a raw `usage` object: token counts tolerate non-integer JSON
/// (negative numbers become 0, floats are truncated saturating at
/// `u64::MAX`, numeric strings are parsed, else 0); the Responses API names
/// (`input_tokens`, ...) are accepted as aliases. `None` unless it has at
/// least one of `prompt_tokens`, `completion_tokens`, `total_tokens`.
fn parse_usage(raw: &str) -> Option<Usage> {
    match usage_scan::usage(raw.as_bytes()) {
        Ok(usage) => usage,
        Err(Bail) => slow::parse_usage(raw),
    }
}

/// Usage from an OpenAI chat / completions / embeddings JSON response body:
/// `prompt_tokens` (incl. `prompt_tokens_details.cached_tokens`),
/// `completion_tokens` (incl. `completion_tokens_details.reasoning_tokens`);
/// embeddings report `prompt_tokens` + `total_tokens` and get output 0.
/// Missing or null fields count as 0. `None` if the body is not JSON or has
/// no usable `usage` object (absent, null, or without any token count).
pub fn usage_from_json(body: &[u8]) -> Option<Usage> {
    usage_from_json_with(body, |_, _| Ok(false)).0
}

/// [`usage_from_json`], handing the body's other top-level members to `other` in the same
/// pass over the bytes (`Ok(true)`: it read the value; `Ok(false)`: skip it). The flag says
/// whether the pass reached the end: when `false` the scanner bailed, and what `other`
/// gathered is partial.
pub(crate) fn usage_from_json_with<'a>(
    body: &'a [u8],
    other: impl FnMut(&mut json::Cursor<'a>, &json::Key<'a>) -> json::Scan<bool>,
) -> (Option<Usage>, bool) {
    match usage_scan::body_usage(body, other) {
        Ok(BodyUsage::None) => (None, true),
        Ok(BodyUsage::Parsed(usage)) => (usage, true),
        Ok(BodyUsage::Raw(raw)) => (slow::parse_usage(raw), true),
        Err(Bail) => (slow::usage_from_json(body), false),
    }
}

/// [`usage_from_json`] through serde_json alone: the reference the fast path must agree with
/// (for the fuzz targets).
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn usage_from_json_reference(body: &[u8]) -> Option<Usage> {
    slow::usage_from_json(body)
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_fast;
#[cfg(test)]
mod tests_gen;
