//! Azure OpenAI: OpenAI bodies at `{endpoint}/openai/deployments/{deployment}/{operation}
//! ?api-version=…`, authenticated with the `api-key` header. The deployment is the upstream
//! model name, so `model_mapping` maps requested models to deployments. The Responses API is
//! at `{endpoint}/openai/responses?api-version=…` with the deployment as the body's `model`;
//! files and batches at `{endpoint}/openai/files` and `{endpoint}/openai/batches`.

use super::{Call, ClientProtocol, Endpoint, Outbound, PlanError, ProviderProtocol};
use crate::keys::ApiKey;
use crate::translate::{EmbeddingsContext, StreamTranslator, TranslateError};
use crate::usage::Usage;
use pingora_http::RequestHeader;

/// Used when the config sets no `api_version`.
pub const DEFAULT_API_VERSION: &str = "2024-10-21";
/// Used for the Responses API when the config sets no `api_version` (the first version that
/// has it).
pub const RESPONSES_API_VERSION: &str = "2025-03-01-preview";

pub struct Azure;

impl ProviderProtocol for Azure {
    fn name(&self) -> &'static str {
        "Azure OpenAI"
    }

    fn native_client(&self) -> Option<ClientProtocol> {
        Some(ClientProtocol::OpenAi)
    }

    fn takes_api_version(&self) -> bool {
        true
    }

    fn path(&self, call: &Call<'_>) -> String {
        if matches!(call.endpoint, Endpoint::Responses | Endpoint::ResponseById) {
            // Not per deployment: the deployment is the body's `model`.
            return format!(
                "{}/openai/responses?api-version={}",
                call.base_path,
                call.api_version.unwrap_or(RESPONSES_API_VERSION)
            );
        }
        if matches!(call.endpoint, Endpoint::Files | Endpoint::Batches) {
            // Not per deployment either: `{endpoint}/openai/files`, `…/openai/batches`.
            return format!(
                "{}/openai{}?api-version={}",
                call.base_path,
                call.endpoint.suffix(),
                call.api_version.unwrap_or(DEFAULT_API_VERSION)
            );
        }
        let deployment: String = call
            .model
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            .collect();
        format!(
            "{}/openai/deployments/{deployment}{}?api-version={}",
            call.base_path,
            call.endpoint.suffix(),
            call.api_version.unwrap_or(DEFAULT_API_VERSION)
        )
    }

    fn authenticate(&self, req: &mut RequestHeader, key: &ApiKey) -> pingora_error::Result<()> {
        req.insert_header("api-key", key.plain().clone())
    }

    fn request_from_openai(
        &self,
        endpoint: Endpoint,
        openai: &[u8],
        upstream_model: &str,
    ) -> Result<Outbound, PlanError> {
        super::OPENAI.request_from_openai(endpoint, openai, upstream_model)
    }

    fn stream_to_openai(&self, model: &str, usage: bool) -> Option<Box<dyn StreamTranslator>> {
        super::OPENAI.stream_to_openai(model, usage)
    }

    fn response_to_openai(
        &self,
        body: &[u8],
        model: &str,
        embeddings: Option<EmbeddingsContext>,
    ) -> Result<(Vec<u8>, Usage), TranslateError> {
        super::OPENAI.response_to_openai(body, model, embeddings)
    }
}
