//! The OpenAI protocol family: request path and authentication.
//!
//! OpenAI, DeepSeek, Qwen (compatible mode), Moonshot, Doubao, Zhipu, Ollama, vLLM and any
//! OpenAI-compatible server take the same body and a bearer key; only the base URL differs.

use crate::keys::ApiKey;
use crate::provider::Provider;
use crate::route::Endpoint;
use pingora_error::{ErrorType, OrErr, Result};
use pingora_http::RequestHeader;

/// Headers a client may use to carry its own credential; none of them goes upstream.
pub const CLIENT_CREDENTIAL_HEADERS: &[&str] = &[
    "authorization",
    "x-api-key",
    "api-key",
    "x-goog-api-key",
    "proxy-authorization",
];

/// Point `req` at the provider's endpoint and authenticate with `key`.
pub fn prepare_request(
    req: &mut RequestHeader,
    provider: &Provider,
    key: &ApiKey,
    endpoint: Endpoint,
) -> Result<()> {
    let path = format!("{}{}", provider.upstream.base_path, endpoint.suffix());
    let uri: http::Uri = path
        .parse()
        .or_err(ErrorType::InternalError, "building the upstream path")?;
    req.set_uri(uri);
    req.set_method(http::Method::POST);
    for name in CLIENT_CREDENTIAL_HEADERS {
        req.remove_header(*name);
    }
    req.insert_header(http::header::HOST, provider.upstream.host_header.clone())?;
    req.insert_header(http::header::AUTHORIZATION, key.bearer().clone())?;
    // Bodies must come back uncompressed for the usage parser.
    req.remove_header(&http::header::ACCEPT_ENCODING);
    Ok(())
}
