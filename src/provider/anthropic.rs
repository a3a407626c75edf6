//! Anthropic's Messages API: `{base}/messages` with `x-api-key` and `anthropic-version`.

use crate::keys::ApiKey;
use crate::provider::Provider;
use pingora_http::RequestHeader;

pub fn path(provider: &Provider) -> String {
    format!("{}/messages", provider.upstream.base_path)
}

/// The key, and the API version unless an Anthropic client chose its own.
pub fn authenticate(req: &mut RequestHeader, key: &ApiKey) -> pingora_error::Result<()> {
    req.insert_header("x-api-key", key.plain().clone())?;
    if req.headers.get("anthropic-version").is_none() {
        req.insert_header("anthropic-version", crate::translate::ANTHROPIC_VERSION)?;
    }
    Ok(())
}
