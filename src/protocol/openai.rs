//! The OpenAI protocol family: `{base}{endpoint}` with a bearer key, OpenAI bodies as they
//! are.
//!
//! OpenAI, DeepSeek, Qwen (compatible mode), Moonshot, Doubao, Zhipu, Ollama, vLLM and any
//! OpenAI-compatible server take the same body and a bearer key; only the base URL differs.

use super::{Call, ClientProtocol, Endpoint, Outbound, PlanError, ProviderProtocol};
use crate::keys::ApiKey;
use crate::translate::{EmbeddingsContext, StreamTranslator, TranslateError};
use crate::usage::{usage_from_json, Usage};
use pingora_http::RequestHeader;

pub struct OpenAi;

impl ProviderProtocol for OpenAi {
    fn name(&self) -> &'static str {
        "OpenAI-compatible"
    }

    fn native_client(&self) -> Option<ClientProtocol> {
        Some(ClientProtocol::OpenAi)
    }

    fn path(&self, call: &Call<'_>) -> String {
        format!("{}{}", call.base_path, call.endpoint.suffix())
    }

    fn authenticate(&self, req: &mut RequestHeader, key: &ApiKey) -> pingora_error::Result<()> {
        req.insert_header(http::header::AUTHORIZATION, key.bearer().clone())
    }

    fn request_from_openai(
        &self,
        endpoint: Endpoint,
        _openai: &[u8],
        _upstream_model: &str,
    ) -> Result<Outbound, PlanError> {
        Ok(as_is(endpoint))
    }

    fn stream_to_openai(&self, _: &str, _: bool) -> Option<Box<dyn StreamTranslator>> {
        None
    }

    fn response_to_openai(
        &self,
        body: &[u8],
        _model: &str,
        _embeddings: Option<EmbeddingsContext>,
    ) -> Result<(Vec<u8>, Usage), TranslateError> {
        Ok((body.to_vec(), usage_from_json(body).unwrap_or_default()))
    }
}

/// An OpenAI request sent as it is.
pub(super) fn as_is(endpoint: Endpoint) -> Outbound {
    Outbound {
        endpoint,
        body: None,
        include_usage: false,
        embeddings: None,
    }
}
