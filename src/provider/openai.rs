//! The OpenAI protocol family: request path (authentication is a bearer key).
//!
//! OpenAI, DeepSeek, Qwen (compatible mode), Moonshot, Doubao, Zhipu, Ollama, vLLM and any
//! OpenAI-compatible server take the same body and a bearer key; only the base URL differs.

use crate::provider::Provider;
use crate::route::Endpoint;

/// The upstream path of `endpoint`.
pub fn path(provider: &Provider, endpoint: Endpoint) -> String {
    format!("{}{}", provider.upstream.base_path, endpoint.suffix())
}
