//! `cache:` (the memory the response cache may use) and `routes[].cache` (whether and how a
//! route's answers are cached).

use super::text::{text_serde, word_enum, HumanDuration};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSection {
    /// Memory for cached answers, in bytes (default 64 MiB); set at start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
    /// Larger answers are not cached (default 1 MiB).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_entry_bytes: Option<u64>,
}

/// A route's response cache (off when absent).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteCacheSection {
    /// How long an answer is served from the cache (default 5m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<HumanDuration>,
    /// Whose requests share answers: `consumer` (default), `team`, `route` or `global`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<CacheScope>,
    /// A hit charges the consumer's rate limits, quota and budgets with the tokens (and
    /// money) the answer cost when it was made (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub charge: Option<bool>,
    /// Keep answers cut at `max_tokens` (`finish_reason: length`) too (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_truncated: Option<bool>,
    /// The semantic cache: a paraphrase of a kept question in the same context is answered
    /// too (off when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub semantic: Option<SemanticCacheSection>,
}

/// `routes[].cache.semantic`: nearest neighbours of the last user message's embedding.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SemanticCacheSection {
    /// The embeddings model, a model name the gateway routes (e.g. `text-embedding-3-small`).
    pub model: String,
    /// The route whose rules serve the embedding request (default: this route).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// Least cosine similarity served, in (0, 1] (default 0.9).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// Most embeddings kept for the route (default 10000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_entries: Option<u64>,
    /// Most memory the route's embeddings take, in bytes (default 64 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
    /// Serve answers that call tools to paraphrases too (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<bool>,
}

word_enum! {
    /// Whose requests may be answered with an entry.
    #[derive(Default)]
    pub enum CacheScope {
        #[default]
        Consumer = "consumer",
        Team = "team",
        Route = "route",
        Global = "global",
    }
}

impl std::str::FromStr for CacheScope {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::from_word(s).ok_or_else(|| format!("`{s}`: expected {}", Self::words()))
    }
}

text_serde!(CacheScope);
