//! `providers:`: where requests go, with which keys, and how their health is judged.

use super::text::{is_default, is_false, text_serde, word_enum, HumanDuration, Secret};
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProviderSection {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: ProviderType,
    /// The API's base URL (`${VAR}` allowed); a preset type has a default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub api_keys: Vec<KeyEntry>,
    /// Requested model → upstream model. Keys: exact name, `prefix*`, `~regex`, or `*`.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub model_mapping: IndexMap<String, String>,
    /// Model names this provider serves, listed by `GET /v1/models`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<String>,
    /// List this provider's models even when it has no configured key (default false:
    /// `GET /models` lists only what a caller can use).
    #[serde(default, skip_serializing_if = "is_false")]
    pub list_unconfigured: bool,
    #[serde(default, skip_serializing_if = "is_default")]
    pub timeouts: TimeoutSection,
    /// PEM CA bundle trusted for this provider only (platform roots stay for the others).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// Override the TLS server name (SNI and certificate check); default the URL's host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    /// Speak HTTP/2 to the provider (default false): negotiated by ALPN over TLS, prior
    /// knowledge (h2c) over plain HTTP. Many requests share one connection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http2: Option<bool>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub health: HealthSection,
    /// Azure OpenAI `api-version` (default 2024-10-21).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// Connect to this `ip:port` instead of resolving the URL's host; TLS name and `Host`
    /// stay the URL's (like curl's `--connect-to`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect_to: Option<String>,
    /// The provider has OpenAI's Responses API (`/responses`): Responses requests are passed
    /// through. Default true for `openai` and `azure`, false for the others (Responses
    /// requests are then translated through chat completions); only for OpenAI-compatible
    /// and Azure providers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub responses_api: Option<bool>,
}

word_enum! {
    /// A provider's `type`: a preset (with its base URL) or a protocol family.
    pub enum ProviderType {
        OpenAi = "openai",
        DeepSeek = "deepseek",
        Qwen = "qwen",
        Moonshot = "moonshot",
        Doubao = "doubao",
        Zhipu = "zhipu",
        Baichuan = "baichuan",
        Yi = "yi",
        StepFun = "stepfun",
        MiniMax = "minimax",
        Groq = "groq",
        Mistral = "mistral",
        Together = "together",
        Fireworks = "fireworks",
        OpenRouter = "openrouter",
        Xai = "xai",
        Ollama = "ollama",
        Vllm = "vllm",
        OpenAiCompatible = "openai-compatible",
        Azure = "azure",
        Anthropic = "anthropic",
        Gemini = "gemini",
    }
}

impl std::str::FromStr for ProviderType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::from_word(s)
            .ok_or_else(|| format!("unknown provider type `{s}` (known: {})", Self::words()))
    }
}

text_serde!(ProviderType);

/// An API key: a plain string, or a named one (`{name, key, weight}`) so logs can say which.
/// `${VAR}` allowed in the key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum KeyEntry {
    Plain(Secret),
    Named(NamedKey),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NamedKey {
    pub name: String,
    pub key: Secret,
    /// Share of requests relative to the provider's other keys (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// Kept in the settings but out of rotation (default false): no request uses it.
    #[serde(default, skip_serializing_if = "is_false")]
    pub disabled: bool,
}

/// Provider deadlines.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TimeoutSection {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect: Option<HumanDuration>,
    /// Longest wait for any read from the provider, including the first byte.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read: Option<HumanDuration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub write: Option<HumanDuration>,
    /// How long an unused pooled connection is kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle: Option<HumanDuration>,
}

/// Key health: passive failure counting and active checks of keys out of rotation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthSection {
    /// Consecutive failures that take a key out (default 3).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_threshold: Option<u32>,
    /// Successful checks that bring it back (default 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub success_threshold: Option<u32>,
    /// Between checks of a key out of rotation (default 5s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check_interval: Option<HumanDuration>,
    /// Longest a check may take (default 5s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check_timeout: Option<HumanDuration>,
    /// Model the check asks for (default: the provider's first `models` entry).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check_model: Option<String>,
    /// Outcomes that count as failures. Default: connect, timeout, 429, 5xx.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failures: Option<Vec<HealthFailure>>,
}

/// An attempt outcome that counts against a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthFailure {
    /// `connect`: the connection failed.
    Connect,
    /// `timeout`: a provider deadline passed.
    Timeout,
    /// A status, 400 to 599 (`429`).
    Status(u16),
    /// A class of statuses, 4 or 5 (`5xx`).
    Class(u16),
}

impl std::fmt::Display for HealthFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HealthFailure::Connect => f.write_str("connect"),
            HealthFailure::Timeout => f.write_str("timeout"),
            HealthFailure::Status(code) => write!(f, "{code}"),
            HealthFailure::Class(class) => write!(f, "{class}xx"),
        }
    }
}

impl std::str::FromStr for HealthFailure {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "connect" => Ok(HealthFailure::Connect),
            "timeout" => Ok(HealthFailure::Timeout),
            s if s.len() == 3 && s.ends_with("xx") => s
                .get(..1)
                .and_then(|c| c.parse::<u16>().ok())
                .filter(|c| (4..=5).contains(c))
                .map(HealthFailure::Class)
                .ok_or_else(|| format!("`{s}`: only 4xx and 5xx classes")),
            s => s
                .parse::<u16>()
                .ok()
                .filter(|c| (400..=599).contains(c))
                .map(HealthFailure::Status)
                .ok_or_else(|| {
                    format!("`{s}`: expected connect, timeout, a 4xx/5xx status or class")
                }),
        }
    }
}

impl Serialize for HealthFailure {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            HealthFailure::Status(code) => s.serialize_u16(*code),
            other => s.collect_str(other),
        }
    }
}

impl<'de> Deserialize<'de> for HealthFailure {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(super::text::ParseVisitor::<HealthFailure>::new())
    }
}
