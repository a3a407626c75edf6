//! Anthropic's Messages API: `{base}/messages` with `x-api-key` and `anthropic-version`.
//! OpenAI clients are served for chat only (`translate::anthropic`).

use super::{Call, ClientProtocol, Endpoint, Outbound, PlanError, ProviderProtocol};
use crate::keys::ApiKey;
use crate::translate::{self, EmbeddingsContext, StreamTranslator, TranslateError};
use crate::usage::Usage;
use pingora_http::RequestHeader;

pub struct Anthropic;

impl ProviderProtocol for Anthropic {
    fn name(&self) -> &'static str {
        "Anthropic"
    }

    fn native_client(&self) -> Option<ClientProtocol> {
        Some(ClientProtocol::Anthropic)
    }

    fn path(&self, call: &Call<'_>) -> String {
        match call.endpoint {
            Endpoint::CountTokens => format!("{}/messages/count_tokens", call.base_path),
            _ => format!("{}/messages", call.base_path),
        }
    }

    /// The key, and the API version unless an Anthropic client chose its own.
    fn authenticate(&self, req: &mut RequestHeader, key: &ApiKey) -> pingora_error::Result<()> {
        req.insert_header("x-api-key", key.plain().clone())?;
        if req.headers.get("anthropic-version").is_none() {
            req.insert_header("anthropic-version", translate::ANTHROPIC_VERSION)?;
        }
        Ok(())
    }

    fn request_from_openai(
        &self,
        endpoint: Endpoint,
        openai: &[u8],
        upstream_model: &str,
    ) -> Result<Outbound, PlanError> {
        if endpoint != Endpoint::ChatCompletions {
            return Err(PlanError::Unsupported {
                endpoint,
                protocol: self.name(),
            });
        }
        let t = translate::openai_chat_to_anthropic(openai, upstream_model)?;
        Ok(Outbound {
            endpoint: Endpoint::Messages,
            body: Some(t.body),
            include_usage: t.include_usage,
            embeddings: None,
        })
    }

    fn stream_to_openai(
        &self,
        model: &str,
        include_usage: bool,
    ) -> Option<Box<dyn StreamTranslator>> {
        Some(Box::new(translate::AnthropicStreamToOpenAi::new(
            model,
            include_usage,
        )))
    }

    fn response_to_openai(
        &self,
        body: &[u8],
        model: &str,
        _embeddings: Option<EmbeddingsContext>,
    ) -> Result<(Vec<u8>, Usage), TranslateError> {
        translate::anthropic_to_openai_chat_response(body, model)
    }

    fn usage(&self, body: &[u8]) -> Option<Usage> {
        translate::anthropic_to_openai_chat_response(body, "")
            .ok()
            .map(|(_, u)| u)
    }

    fn error_to_openai(&self, body: &[u8]) -> Vec<u8> {
        translate::anthropic_error_to_openai(body)
    }
}
