//! `routes:`: which requests a route serves, its model rules and targets, retries and access.

use super::text::{is_default, is_false, text_serde, word_enum, HumanDuration};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteSection {
    pub name: String,
    /// Host names this route serves (`*.example.com` allowed); empty = any host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Path prefix of the OpenAI API, default `/v1`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    pub models: Vec<ModelRuleSection>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub retry: RetrySection,
    #[serde(default, skip_serializing_if = "is_default")]
    pub auth: RouteAuthSection,
    /// When no key of any target is usable (default `fail_fast`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub all_keys_down: Option<AllKeysDown>,
    /// Client headers forwarded to the provider besides the built-in allow-list: names
    /// (any case) or prefixes ending in `*`. Credential headers are refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forward_headers: Vec<String>,
    /// `GET /models` lists the models of every provider of this route, even those without
    /// a configured key (default false).
    #[serde(default, skip_serializing_if = "is_false")]
    pub list_unconfigured: bool,
    /// Cache this route's chat-completion answers (off when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<super::RouteCacheSection>,
    /// Messages added around every conversation on this route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decorators: Option<super::DecoratorsSection>,
    /// The client's input checked by a moderation model or hook before it goes upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moderation: Option<super::ModerationSection>,
    /// Mask personal data in what the provider receives (off when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pii: Option<super::PiiSection>,
    /// Refuse requests and answers matching keyword or regex lists (off when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deny: Option<super::DenySection>,
}

word_enum! {
    /// What a route does when no key of any target is usable.
    #[derive(Default)]
    pub enum AllKeysDown {
        /// Answer 503 at once without contacting any provider.
        #[default]
        FailFast = "fail_fast",
        /// Try keys that are out of rotation anyway.
        TryAnyway = "try_anyway",
    }
}

impl std::str::FromStr for AllKeysDown {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::from_word(s).ok_or_else(|| format!("`{s}`: expected fail_fast or try_anyway"))
    }
}

text_serde!(AllKeysDown);

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetrySection {
    /// Most attempts for one request, across keys and targets (default: every configured
    /// key of the rule's two targets with the most keys, at least 3, at most 10).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    /// Most keys tried on one target before the next target (default: every usable key).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_target: Option<u32>,
    /// No new attempt starts after this long (default 60s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deadline: Option<HumanDuration>,
}

/// A route's access rule.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteAuthSection {
    /// Requests without a known consumer credential get 401 (default false).
    #[serde(default, skip_serializing_if = "is_false")]
    pub required: bool,
    /// Consumers allowed on this route; empty = every consumer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelRuleSection {
    /// Pattern on the requested model: exact, `prefix*`, `~regex`, or `*`.
    pub model: String,
    pub targets: Vec<TargetSection>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TargetSection {
    pub provider: String,
    /// Model to ask this target for, instead of the provider's mapping of the requested one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

fn is_one(n: &u32) -> bool {
    *n == 1
}
