//! Ingress: the request's method and its body read under the client limits (the pipeline
//! then expands a prompt template, `super::prompts`, and parses the top-level JSON fields,
//! `crate::body`).

use crate::conn::{BodyHold, BUSY_RETRY_AFTER};
use crate::error::GatewayError;
use crate::runtime::client::ClientSettings;
use crate::runtime::Gateway;
use bytes::{Bytes, BytesMut};
use pingora_proxy::Session;

/// A model request's body: `POST`, within the limits.
pub async fn read_request(
    session: &mut Session,
    config: &Gateway,
    memory: &mut BodyHold,
) -> Result<Bytes, GatewayError> {
    let method = &session.req_header().method;
    if method != http::Method::POST {
        return Err(GatewayError::MethodNotAllowed(method.to_string()));
    }
    let limits = BodyLimits {
        max: config.max_body_bytes,
        client: &config.client,
    };
    read_body(session, limits, memory).await
}

/// The request's `Content-Type` ("" when absent or not text).
pub fn content_type(session: &Session) -> &str {
    session
        .req_header()
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// What bounds the reading of one request body.
#[derive(Clone, Copy)]
pub struct BodyLimits<'a> {
    /// Largest body accepted.
    pub max: usize,
    /// Deadline and the process-wide memory budget.
    pub client: &'a ClientSettings,
}

/// Answer `Expect: 100-continue` (HTTP/1.1 only, and only when a body is still to come);
/// refuse any other expectation with 417.
async fn expect_continue(session: &mut Session) -> Result<(), GatewayError> {
    let header = session.req_header();
    let Some(expect) = header.headers.get(http::header::EXPECT) else {
        return Ok(());
    };
    if !expect.as_bytes().eq_ignore_ascii_case(b"100-continue") {
        let shown = String::from_utf8_lossy(&expect.as_bytes()[..expect.len().min(64)]);
        return Err(GatewayError::ExpectationFailed(shown.into_owned()));
    }
    if header.version != http::Version::HTTP_11 || session.is_body_done() {
        return Ok(());
    }
    session
        .write_continue_response()
        .await
        .map_err(|e| GatewayError::BodyRead(e.etype().as_str().to_string()))
}

/// Read the whole request body, refusing more than `limits.max` bytes, a body that takes
/// longer than `client.body_timeout`, and one that would take the process over its body
/// memory budget (`hold` keeps this request's share). Memory grows with what has arrived,
/// never with what the client declared.
pub async fn read_body(
    session: &mut Session,
    limits: BodyLimits<'_>,
    hold: &mut BodyHold,
) -> Result<Bytes, GatewayError> {
    let limit = limits.max;
    let declared = session
        .req_header()
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(GatewayError::BodyTooLarge(limit));
    }
    expect_continue(session).await?;
    let timeout = limits.client.body_timeout;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut buf = BytesMut::new();
    loop {
        let read = tokio::time::timeout_at(deadline, session.read_request_body()).await;
        match read {
            Err(_) => return Err(GatewayError::BodyTimeout(timeout.as_secs())),
            Ok(Ok(Some(chunk))) => {
                if buf.len() + chunk.len() > limit {
                    return Err(GatewayError::BodyTooLarge(limit));
                }
                hold.grow(chunk.len(), limits.client.max_body_memory_bytes)
                    .map_err(|_| GatewayError::ServerBusy(BUSY_RETRY_AFTER.as_secs()))?;
                if buf.is_empty() && declared == Some(chunk.len()) {
                    // The whole body in one read: keep it without a copy.
                    return Ok(chunk);
                }
                buf.extend_from_slice(&chunk);
            }
            Ok(Ok(None)) => break,
            Ok(Err(e)) => return Err(GatewayError::BodyRead(e.etype().as_str().to_string())),
        }
    }
    Ok(buf.freeze())
}
