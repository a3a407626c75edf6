//! Protocols: what the gateway knows about the wire formats on both of its sides.
//!
//! - [`ClientProtocol`] (`client`): what a client speaks, OpenAI or Anthropic Messages, and
//!   the one place that renders the gateway's errors in each shape.
//! - [`ProviderProtocol`]: what a provider family speaks: its URL path, authentication,
//!   request, response and stream translation, usage and error bodies. One module per
//!   family (`openai`, `azure`, `anthropic`, `gemini`), and the registry [`PRESETS`] that
//!   names the provider types of the config. A provider's protocol is resolved once, at
//!   config load, and kept on the `Provider` as a `&'static dyn ProviderProtocol`.
//!
//! The gateway's working format is OpenAI's. A request from a client that the provider
//! speaks natively is spliced and its answer passed through; any other request goes
//! client → OpenAI (`ClientProtocol::request_to_openai`) → provider
//! (`ProviderProtocol::request_from_openai`), and its answer back the same way
//! (`proxy::plan` puts the two halves together). The translators themselves live in
//! `crate::translate`.
//!
//! Adding a provider protocol: a module here implementing [`ProviderProtocol`], and a line
//! in [`PRESETS`] for each provider type that speaks it.

pub mod anthropic;
pub mod azure;
pub mod client;
pub mod endpoint;
pub mod gemini;
pub mod openai;
#[cfg(test)]
mod tests;

pub use client::{ClientProtocol, ErrorView};
pub use endpoint::{Endpoint, QuotaCall};

use crate::keys::ApiKey;
use crate::translate::{EmbeddingsContext, StreamTranslator, TranslateError};
use crate::usage::{usage_from_json, Usage};
use pingora_http::RequestHeader;

/// Where one upstream request goes: what the path is built from.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    /// Path of the provider's base URL, without a trailing slash (`/v1`).
    pub base_path: &'a str,
    /// Azure's `api-version` (the config's, if any).
    pub api_version: Option<&'a str>,
    /// The operation asked of the provider.
    pub endpoint: Endpoint,
    /// The model asked of the provider (after mapping).
    pub model: &'a str,
    pub stream: bool,
}

/// An OpenAI-format request, put in a provider's protocol.
#[derive(Debug)]
pub struct Outbound {
    /// The operation asked of the provider.
    pub endpoint: Endpoint,
    /// The body in the provider's protocol; `None`: the OpenAI body as it is.
    pub body: Option<Vec<u8>>,
    /// The client asked for usage in the stream (`stream_options.include_usage`).
    pub include_usage: bool,
    /// What an embeddings answer needs to be read back (Gemini's batch API).
    pub embeddings: Option<EmbeddingsContext>,
}

/// Why a request cannot be sent to a provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanError {
    /// The body cannot be expressed in the provider's protocol.
    Translate(TranslateError),
    /// The provider's protocol has no such operation.
    Unsupported {
        endpoint: Endpoint,
        protocol: &'static str,
    },
}

impl From<TranslateError> for PlanError {
    fn from(e: TranslateError) -> Self {
        PlanError::Translate(e)
    }
}

/// A provider protocol family. Every method is a pure function of its arguments (no I/O,
/// no configuration), so one static value serves every provider of the family.
pub trait ProviderProtocol: Send + Sync + 'static {
    /// The family's name, for messages (`Anthropic`, `Gemini`, ...).
    fn name(&self) -> &'static str;

    /// The client protocol the provider speaks itself, if any: a request in it is spliced
    /// (model mapping, usage option) and its answer passed through, metered.
    fn native_client(&self) -> Option<ClientProtocol>;

    /// Whether the provider setting `api_version` applies.
    fn takes_api_version(&self) -> bool {
        false
    }

    /// The upstream path (with query) of `call`.
    fn path(&self, call: &Call<'_>) -> String;

    /// Put `key` on the upstream request (and any header the protocol requires).
    fn authenticate(&self, req: &mut RequestHeader, key: &ApiKey) -> pingora_error::Result<()>;

    /// An OpenAI-format request at `endpoint` in this protocol.
    fn request_from_openai(
        &self,
        endpoint: Endpoint,
        openai: &[u8],
        upstream_model: &str,
    ) -> Result<Outbound, PlanError>;

    /// The translator of the provider's SSE stream into OpenAI chunks; `None`: the stream is
    /// OpenAI's already. Also used to read a native stream for its usage.
    fn stream_to_openai(
        &self,
        model: &str,
        include_usage: bool,
    ) -> Option<Box<dyn StreamTranslator>>;

    /// A complete 2xx response body as an OpenAI response, with its usage.
    fn response_to_openai(
        &self,
        body: &[u8],
        model: &str,
        embeddings: Option<EmbeddingsContext>,
    ) -> Result<(Vec<u8>, Usage), TranslateError>;

    /// The usage of a complete native (untranslated) response body.
    fn usage(&self, body: &[u8]) -> Option<Usage> {
        usage_from_json(body)
    }

    /// A provider error body in OpenAI's shape (never fails).
    fn error_to_openai(&self, body: &[u8]) -> Vec<u8> {
        body.to_vec()
    }
}

impl std::fmt::Debug for dyn ProviderProtocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A provider family, as kept on a `Provider`.
pub type Protocol = &'static dyn ProviderProtocol;

pub const OPENAI: Protocol = &openai::OpenAi;
pub const AZURE: Protocol = &azure::Azure;
pub const ANTHROPIC: Protocol = &anthropic::Anthropic;
pub const GEMINI: Protocol = &gemini::Gemini;

/// The registry: provider types known by name (the config's `type`), their protocol, and the
/// base URL used when the config gives none.
pub const PRESETS: &[(&str, Protocol, Option<&str>)] = &[
    ("openai", OPENAI, Some("https://api.openai.com/v1")),
    ("deepseek", OPENAI, Some("https://api.deepseek.com/v1")),
    (
        "qwen",
        OPENAI,
        Some("https://dashscope.aliyuncs.com/compatible-mode/v1"),
    ),
    ("moonshot", OPENAI, Some("https://api.moonshot.cn/v1")),
    (
        "doubao",
        OPENAI,
        Some("https://ark.cn-beijing.volces.com/api/v3"),
    ),
    (
        "zhipu",
        OPENAI,
        Some("https://open.bigmodel.cn/api/paas/v4"),
    ),
    ("baichuan", OPENAI, Some("https://api.baichuan-ai.com/v1")),
    ("yi", OPENAI, Some("https://api.lingyiwanwu.com/v1")),
    ("stepfun", OPENAI, Some("https://api.stepfun.com/v1")),
    ("minimax", OPENAI, Some("https://api.minimax.chat/v1")),
    ("groq", OPENAI, Some("https://api.groq.com/openai/v1")),
    ("mistral", OPENAI, Some("https://api.mistral.ai/v1")),
    ("together", OPENAI, Some("https://api.together.xyz/v1")),
    (
        "fireworks",
        OPENAI,
        Some("https://api.fireworks.ai/inference/v1"),
    ),
    ("openrouter", OPENAI, Some("https://openrouter.ai/api/v1")),
    ("xai", OPENAI, Some("https://api.x.ai/v1")),
    ("ollama", OPENAI, Some("http://127.0.0.1:11434/v1")),
    ("vllm", OPENAI, Some("http://127.0.0.1:8000/v1")),
    ("openai-compatible", OPENAI, None),
    ("azure", AZURE, None),
    ("anthropic", ANTHROPIC, Some("https://api.anthropic.com/v1")),
    (
        "gemini",
        GEMINI,
        Some("https://generativelanguage.googleapis.com"),
    ),
];

/// The protocol of the provider type `kind`.
pub fn preset(kind: &str) -> Option<(Protocol, Option<&'static str>)> {
    PRESETS
        .iter()
        .find(|(name, _, _)| *name == kind)
        .map(|(_, p, url)| (*p, *url))
}
