//! What a request is charged when the provider's numbers are missing or absurd:
//! [`estimate_response`] for a JSON answer without `usage` (or one cut short), and
//! [`Usage::clamp`] with [`MAX_TOKENS_PER_REQUEST`] against reported usage no request can
//! have used.

use super::{TokenEstimator, Usage};
use serde_json::Value;
use std::sync::atomic::{AtomicU64, Ordering};

/// Most tokens a request is charged per count (input, output, cached, reasoning): larger
/// reported or estimated numbers are clamped to it, so a broken or hostile provider cannot
/// wrap a balance or a counter (10 million is far beyond any model's context).
pub const MAX_TOKENS_PER_REQUEST: u64 = 10_000_000;

/// Keys whose string values are generated text, in OpenAI (`choices[].message.content`,
/// `reasoning_content`, `tool_calls[].function.arguments`, `refusal`, `choices[].text`),
/// Anthropic (`content[].text`, `thinking`) and Gemini (`candidates[].content.parts[].text`)
/// answers.
const TEXT_KEYS: [&str; 7] = [
    "content",
    "text",
    "reasoning_content",
    "reasoning",
    "arguments",
    "refusal",
    "thinking",
];

/// Keys whose values are generated structured data (tool-call input), counted as their JSON.
const DATA_KEYS: [&str; 2] = ["input", "args"];

/// An estimate of a 2xx JSON answer that reported no usage: output tokens from the text it
/// carries (by [`super::estimate_tokens`] over every generated text field), or, when it is
/// not complete JSON (a body cut short), over all of the delivered bytes. Input is left 0
/// for the caller to estimate from the request. Marked `estimated`.
pub fn estimate_response(body: &[u8]) -> Usage {
    let mut est = TokenEstimator::new();
    match serde_json::from_slice::<Value>(body) {
        Ok(v) => generated_text(&v, None, &mut est),
        Err(_) => est.feed(&String::from_utf8_lossy(body)),
    }
    Usage {
        output_tokens: est.tokens(),
        estimated: true,
        ..Usage::default()
    }
}

fn generated_text(v: &Value, key: Option<&str>, est: &mut TokenEstimator) {
    match v {
        Value::String(s) if key.is_some_and(|k| TEXT_KEYS.contains(&k)) => est.feed(s),
        Value::Object(_) | Value::Array(_) if key.is_some_and(|k| DATA_KEYS.contains(&k)) => {
            est.feed(&v.to_string())
        }
        Value::Array(items) => {
            for item in items {
                generated_text(item, key, est);
            }
        }
        Value::Object(map) => {
            for (k, item) in map {
                // Usage and embeddings are numbers, metadata is not generated text.
                if k != "usage" {
                    generated_text(item, Some(k), est);
                }
            }
        }
        _ => {}
    }
}

impl Usage {
    /// Clamp every count to [`MAX_TOKENS_PER_REQUEST`]; returns whether anything changed.
    pub fn clamp(&mut self) -> bool {
        let before = *self;
        for n in [
            &mut self.input_tokens,
            &mut self.output_tokens,
            &mut self.cached_input_tokens,
            &mut self.cache_write_tokens,
            &mut self.reasoning_tokens,
        ] {
            *n = (*n).min(MAX_TOKENS_PER_REQUEST);
        }
        let units = &mut self.units;
        // The same bound for units (ten million images, characters or search units), and
        // 28 hours for audio: far past any one request.
        for n in [
            &mut units.images,
            &mut units.characters,
            &mut units.search_units,
        ] {
            *n = (*n).min(MAX_TOKENS_PER_REQUEST);
        }
        units.audio_ms = units.audio_ms.min(MAX_TOKENS_PER_REQUEST * 10);
        *self != before
    }
}

/// What a request is charged for: `usage` as the provider reported it or as the gateway
/// estimated it, with the prompt estimated from the client's `request` body when the
/// provider reported none; every count clamped to [`MAX_TOKENS_PER_REQUEST`] (logged, naming
/// `provider`). The same again gives the same (the cost told to a client is not charged
/// twice, nor logged twice).
pub fn billable(mut usage: Usage, request: Option<&[u8]>, provider: &str) -> Usage {
    if usage.estimated && usage.input_tokens == 0 {
        if let Some(body) = request {
            usage.input_tokens = super::estimate_tokens(&String::from_utf8_lossy(body));
        }
    }
    let reported = usage;
    if usage.clamp() {
        warn_clamped(provider, &reported);
    }
    usage
}

/// Unix second of the last clamping warning, and how many were not logged since.
static LAST_WARNING: AtomicU64 = AtomicU64::new(0);
static SUPPRESSED: AtomicU64 = AtomicU64::new(0);
const WARNING_EVERY_SECS: u64 = 10;

/// Log that `provider`'s usage for a request was clamped: at most one warning per 10 s, the
/// next one saying how many were left out.
pub fn warn_clamped(provider: &str, reported: &Usage) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let last = LAST_WARNING.load(Ordering::Relaxed);
    let due = last == 0 || now.saturating_sub(last) >= WARNING_EVERY_SECS;
    if !due
        || LAST_WARNING
            .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
    {
        SUPPRESSED.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let suppressed = SUPPRESSED.swap(0, Ordering::Relaxed);
    log::warn!(
        "usage from provider `{provider}` clamped to {MAX_TOKENS_PER_REQUEST} tokens per count \
         (it reported input {}, output {}, cached {}, reasoning {}){}",
        reported.input_tokens,
        reported.output_tokens,
        reported.cached_input_tokens,
        reported.reasoning_tokens,
        if suppressed > 0 {
            format!("; {suppressed} more clamped since the last warning")
        } else {
            String::new()
        }
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usage::estimate_tokens;

    #[test]
    fn answers_without_usage_are_estimated_from_their_text() {
        let openai = br#"{"id":"x","object":"chat.completion","model":"m","choices":[{"index":0,
            "message":{"role":"assistant","content":"Hello there, friend",
            "tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}}]},
            "finish_reason":"stop"}]}"#;
        let u = estimate_response(openai);
        assert!(u.estimated);
        assert_eq!(u.input_tokens, 0);
        let mut est = TokenEstimator::new();
        est.feed("Hello there, friend");
        est.feed("{\"a\":1}");
        assert_eq!(u.output_tokens, est.tokens());

        let anthropic = br#"{"type":"message","role":"assistant","content":[
            {"type":"text","text":"Bonjour"},{"type":"tool_use","id":"t","name":"f","input":{"q":"x"}}]}"#;
        let mut est = TokenEstimator::new();
        est.feed("Bonjour");
        est.feed(r#"{"q":"x"}"#);
        assert_eq!(estimate_response(anthropic).output_tokens, est.tokens());

        let gemini =
            br#"{"candidates":[{"content":{"role":"model","parts":[{"text":"Hallo Welt"}]}}]}"#;
        assert_eq!(
            estimate_response(gemini).output_tokens,
            estimate_tokens("Hallo Welt")
        );

        // Embeddings carry no generated text.
        let embeddings =
            br#"{"object":"list","data":[{"object":"embedding","embedding":[0.1,0.2]}]}"#;
        assert_eq!(estimate_response(embeddings).output_tokens, 0);

        // A body cut short: everything delivered counts.
        let cut = br#"{"choices":[{"message":{"content":"abcdefgh"#;
        let u = estimate_response(cut);
        assert_eq!(
            u.output_tokens,
            estimate_tokens(std::str::from_utf8(cut).unwrap())
        );
        assert!(u.estimated);
    }

    #[test]
    fn absurd_counts_are_clamped() {
        let mut u = Usage {
            input_tokens: u64::MAX,
            output_tokens: 5,
            cached_input_tokens: 1 << 60,
            cache_write_tokens: 0,
            reasoning_tokens: 2,
            estimated: false,
            units: crate::usage::Units::NONE,
        };
        assert!(u.clamp());
        assert_eq!(u.input_tokens, MAX_TOKENS_PER_REQUEST);
        assert_eq!(u.cached_input_tokens, MAX_TOKENS_PER_REQUEST);
        assert_eq!((u.output_tokens, u.reasoning_tokens), (5, 2));
        assert!(!u.clamp(), "clamping twice changes nothing");
        warn_clamped("p", &u);
        warn_clamped("p", &u);
        assert!(SUPPRESSED.load(Ordering::Relaxed) >= 1);
    }
}
