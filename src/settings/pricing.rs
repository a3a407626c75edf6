//! `pricing:`: what requests cost in money. Prices per million tokens of each class, per
//! provider and model pattern, in a currency, with effective-from dates and time-of-day tiers;
//! under them the shipped price book (`pricing.defaults`).

use super::text::{text_serde, word_enum};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PricingSection {
    /// Fall back to the shipped price book for models the prices below do not cover
    /// (default true).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub defaults: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prices: Vec<PriceSection>,
    /// A fixed exchange rate, yuan per US dollar, for budgets in the other currency than a
    /// price (none by default: such a cost is unpriced for that budget).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cny_per_usd: Option<f64>,
    /// Tell the client what its request cost: the `x-tollgate-cost` response header on a
    /// non-streamed answer (held until the answer is complete), an SSE comment at the end of
    /// a stream (default false).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_header: Option<bool>,
}

impl PricingSection {
    pub fn defaults(&self) -> bool {
        self.defaults.unwrap_or(true)
    }

    pub fn cost_header(&self) -> bool {
        self.cost_header.unwrap_or(false)
    }
}

/// The prices of one provider's models (per million tokens unless said otherwise).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceSection {
    /// A provider's name from `providers` (default: any provider of `provider_type`, or any).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// A provider type (`openai`, `deepseek`, …): every provider of that type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_type: Option<String>,
    /// The model asked of the provider (after mapping): exact, `prefix*`, `~regex` or `*`.
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<Currency>,
    /// Input tokens not read from a cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<f64>,
    /// Input tokens read from the provider's cache (default: `input`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_input: Option<f64>,
    /// Input tokens written to the provider's cache (Anthropic; default: `input`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<f64>,
    /// Reasoning tokens (default: `output`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<f64>,
    /// Per request, on top of the tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<f64>,
    /// Per image made (`images/*` answers that report no tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<f64>,
    /// Per minute of audio transcribed or translated (answers that report no tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio_minute: Option<f64>,
    /// Per million characters turned into speech (`audio/speech`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub characters: Option<f64>,
    /// Per thousand rerank search units (Cohere's billing unit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search_units: Option<f64>,
    /// From when these prices apply (RFC 3339, UTC); an older entry of the same provider
    /// and model keeps applying before it, so past costs are never rewritten.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// When in the day these prices apply, UTC: `HH:MM-HH:MM[,HH:MM-HH:MM…]` (a range may
    /// cross midnight). Default: all day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hours: Option<String>,
    /// On which days `hours` applies: `mon-fri`, `sat,sun`, … (UTC). Default: every day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weekdays: Option<String>,
    /// Where the prices come from (documentation only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// When the source was read (documentation only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_of: Option<String>,
}

word_enum! {
    /// A price book's currency (no conversion between them).
    #[derive(Default)]
    pub enum Currency {
        #[default]
        Usd = "USD",
        Cny = "CNY",
    }
}

impl std::str::FromStr for Currency {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::from_word(s).ok_or_else(|| format!("`{s}`: expected {}", Self::words()))
    }
}

text_serde!(Currency);
