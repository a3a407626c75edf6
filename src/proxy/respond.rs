//! Responses the gateway writes itself: errors and locally answered endpoints.

use super::exchange::ExtraHeader;
use crate::error::GatewayError;
use crate::protocol::ClientProtocol;
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
    extra: &[ExtraHeader],
) -> Result<()> {
    let mut h = ResponseHeader::build(status, Some(4 + extra.len()))?;
    for (name, value) in extra {
        h.insert_header(*name, value.clone())?;
    }
    h.insert_header(http::header::CONTENT_TYPE, "application/json")?;
    h.insert_header(http::header::CONTENT_LENGTH, body.len())?;
    h.insert_header(super::REQUEST_ID, request_id)?;
    session.write_response_header(Box::new(h), false).await?;
    session.write_response_body(Some(body), true).await?;
    Ok(())
}

/// `GET /healthz`: this process's identity (`instance::id`), answered before
/// any routing, authentication or accounting. True when it answered.
pub async fn healthz(session: &mut Session) -> Result<bool> {
    let h = session.req_header();
    if h.method != http::Method::GET || h.uri.path() != "/healthz" {
        return Ok(false);
    }
    let body = Bytes::from(crate::instance::healthz_body());
    let mut h = ResponseHeader::build(200, Some(2))?;
    h.insert_header(http::header::CONTENT_TYPE, "application/json")?;
    h.insert_header(http::header::CONTENT_LENGTH, body.len())?;
    session.write_response_header(Box::new(h), false).await?;
    session.write_response_body(Some(body), true).await?;
    Ok(true)
}

/// Write `err` in the client's protocol (`ClientProtocol::error_body`). The one place
/// that gives every 429 and 503 a `Retry-After` (unless `extra` already has one) and an
/// error that needs an operator `x-should-retry: false`.
pub async fn error(
    session: &mut Session,
    err: &GatewayError,
    request_id: &str,
    client: ClientProtocol,
    extra: &[ExtraHeader],
) -> Result<()> {
    let status = err.status();
    let mut own: Vec<ExtraHeader> = Vec::new();
    if matches!(status, 429 | 503) && !extra.iter().any(|(n, _)| *n == RETRY_AFTER) {
        if let Some(secs) = err.retry_after() {
            own.push((RETRY_AFTER, secs.into()));
        }
    }
    if err.needs_operator() {
        own.push((X_SHOULD_RETRY, http::HeaderValue::from_static("false")));
    }
    if own.is_empty() {
        return json_with(session, status, err.body_for(client), request_id, extra).await;
    }
    own.extend_from_slice(extra);
    json_with(session, status, err.body_for(client), request_id, &own).await
}

/// Read by OpenAI's SDKs before any other retry rule.
const X_SHOULD_RETRY: &str = "x-should-retry";

/// `Retry-After` as stages add it (`super::exchange::ExtraHeader`), in pingora's case.
pub const RETRY_AFTER: &str = "Retry-After";
