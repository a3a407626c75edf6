//! Azure OpenAI: OpenAI bodies at `{endpoint}/openai/deployments/{deployment}/{operation}
//! ?api-version=…`, authenticated with the `api-key` header. The deployment is the upstream
//! model name, so `model_mapping` maps requested models to deployments.

use crate::provider::Provider;
use crate::route::Endpoint;

/// Used when the config sets no `api_version`.
pub const DEFAULT_API_VERSION: &str = "2024-10-21";

pub fn path(provider: &Provider, endpoint: Endpoint, deployment: &str) -> String {
    let deployment: String = deployment
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .collect();
    format!(
        "{}/openai/deployments/{deployment}{}?api-version={}",
        provider.upstream.base_path,
        endpoint.suffix(),
        provider
            .api_version
            .as_deref()
            .unwrap_or(DEFAULT_API_VERSION)
    )
}
