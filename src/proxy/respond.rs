//! Responses the gateway writes itself: errors and locally answered endpoints.

use crate::error::GatewayError;
use bytes::Bytes;
use pingora_error::Result;
use pingora_http::ResponseHeader;
use pingora_proxy::Session;

pub async fn json(session: &mut Session, status: u16, body: Bytes, request_id: &str) -> Result<()> {
    json_with(session, status, body, request_id, &[]).await
}

pub async fn json_with(
    session: &mut Session,
    status: u16,
    body: Bytes,
    request_id: &str,
    extra: &[(http::HeaderName, String)],
) -> Result<()> {
    let mut h = ResponseHeader::build(status, Some(4 + extra.len()))?;
    for (name, value) in extra {
        h.insert_header(name.clone(), value.as_str())?;
    }
    h.insert_header(http::header::CONTENT_TYPE, "application/json")?;
    h.insert_header(http::header::CONTENT_LENGTH, body.len())?;
    h.insert_header(super::X_REQUEST_ID, request_id)?;
    session.write_response_header(Box::new(h), false).await?;
    session.write_response_body(Some(body), true).await?;
    Ok(())
}

/// Write `err` in the client's format (Anthropic's for `/v1/messages` clients).
pub async fn error(
    session: &mut Session,
    err: &GatewayError,
    request_id: &str,
    anthropic: bool,
    extra: &[(http::HeaderName, String)],
) -> Result<()> {
    json_with(
        session,
        err.status(),
        err.body_for(anthropic),
        request_id,
        extra,
    )
    .await
}
