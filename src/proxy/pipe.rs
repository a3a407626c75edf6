//! Run one attempt as a subrequest piped to the client, and say how it ended.
//!
//! A response whose status is worth retrying (401, 403, 429, 5xx) is held back from the
//! client entirely (header and body), so the next attempt can answer instead; its first
//! 16 KiB are kept to quote the provider's message if it is the last. Anything else is
//! streamed through as it arrives.

use super::attempt::{Attempt, Outcome, Slot};
use crate::error::GatewayError;
use crate::health::{self, AttemptEnd};
use crate::provider::Provider;
use bytes::Bytes;
use pingora_core::protocols::http::HttpTask;
use pingora_error::{Error, Result};
use pingora_proxy::subrequest::pipe::{pipe_subrequest, InputBody, InputBodyType};
use pingora_proxy::subrequest::{BodyMode, Ctx as SubCtx};
use pingora_proxy::Session;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const KEEP_ERROR_BODY: usize = 16 * 1024;

/// A failed attempt that sent nothing to the client.
#[derive(Debug)]
pub struct FailedAttempt {
    pub provider: Arc<Provider>,
    pub key_index: usize,
    pub end: AttemptEnd,
    /// The gateway's description of a transport failure.
    pub error: Option<GatewayError>,
    /// The provider's own error body, for a failure with a status.
    pub body: Bytes,
    pub retry_after: Option<Duration>,
}

impl FailedAttempt {
    pub fn key_name(&self) -> &str {
        self.provider
            .keys
            .get(self.key_index)
            .map(|k| k.name.as_str())
            .unwrap_or("")
    }
}

pub enum AttemptResult {
    /// The response went to the client with this status.
    Delivered(u16),
    /// Nothing reached the client: another attempt may answer.
    Failed(FailedAttempt),
    /// The response started and then broke.
    Aborted {
        status: u16,
        error: GatewayError,
        cause: Box<Error>,
    },
}

/// Watches the subrequest's output on its way to the client.
struct Tap<'a> {
    request_id: Option<http::HeaderValue>,
    extra: &'a [(&'static str, String)],
    passed: Option<u16>,
    held: Option<u16>,
    held_body: Vec<u8>,
    retry_after: Option<Duration>,
}

impl Tap<'_> {
    fn filter(&mut self, task: HttpTask) -> Result<Option<HttpTask>> {
        if self.held.is_some() {
            if let HttpTask::Body(Some(b), _) = &task {
                let room = KEEP_ERROR_BODY.saturating_sub(self.held_body.len());
                self.held_body.extend_from_slice(&b[..b.len().min(room)]);
            }
            return Ok(None);
        }
        match task {
            HttpTask::Header(mut h, end) => {
                let status = h.status.as_u16();
                if AttemptEnd::Status(status).retryable() {
                    self.held = Some(status);
                    self.retry_after = health::retry_after(&h.headers);
                    return Ok(None);
                }
                self.passed = Some(status);
                if let Some(id) = &self.request_id {
                    h.insert_header("x-request-id", id.clone())?;
                }
                for (name, value) in self.extra {
                    h.insert_header(*name, value.as_str())?;
                }
                Ok(Some(HttpTask::Header(h, end)))
            }
            other => Ok(Some(other)),
        }
    }
}

/// Counts a streaming attempt in `tollgate_active_streams` while it lives.
struct ActiveStream;

impl ActiveStream {
    fn new() -> Self {
        crate::metrics::METRICS.active_streams.inc();
        ActiveStream
    }
}

impl Drop for ActiveStream {
    fn drop(&mut self) {
        crate::metrics::METRICS.active_streams.dec();
    }
}

/// Pipe `attempt` to the client; returns how it ended and what it measured.
pub async fn run(
    session: &mut Session,
    attempt: Attempt,
    request_id: &str,
    stream: bool,
    anthropic: bool,
    extra_headers: &[(&'static str, String)],
) -> (AttemptResult, Outcome) {
    let provider = attempt.provider.clone();
    let key_index = attempt.key_index;
    let original = attempt.original.clone();
    let shared = attempt.shared.clone();
    let failed = |end: AttemptEnd, error: Option<GatewayError>| FailedAttempt {
        provider: provider.clone(),
        key_index,
        end,
        error,
        body: Bytes::new(),
        retry_after: None,
    };

    // The subrequest parses an HTTP/1 rendering of the client's header, and the HTTP/1
    // parser refuses the version "HTTP/2": present an h2 request as HTTP/1.1 to it.
    if session.req_header().version == http::Version::HTTP_2 {
        session.req_header_mut().set_version(http::Version::HTTP_11);
    }
    let Some(spawner) = session.subrequest_spawner.as_ref() else {
        let err = GatewayError::Internal("subrequests are not enabled".into());
        return (
            AttemptResult::Failed(failed(AttemptEnd::Broken, Some(err))),
            Outcome::default(),
        );
    };
    let sub_ctx = SubCtx::builder()
        .body_mode(BodyMode::ExpectBody)
        .user_ctx(Box::new(Slot(Mutex::new(Some(Box::new(attempt))))))
        .build();
    let (sub, handle) = spawner.create_subrequest(session.as_downstream(), sub_ctx);

    let mut tap = Tap {
        request_id: http::HeaderValue::from_str(request_id).ok(),
        extra: extra_headers,
        passed: None,
        held: None,
        held_body: Vec::new(),
        retry_after: None,
    };
    let input = InputBodyType::Preset(InputBody::Bytes(vec![original]));
    let _active = stream.then(ActiveStream::new);
    let piped = pipe_subrequest(session, sub, handle, |t| tap.filter(t), input).await;
    let pipe_error = piped.err().map(|e| e.error);
    let outcome = shared.take();
    let recorded = outcome.error.clone();

    let result = match (tap.passed, tap.held, pipe_error) {
        (Some(status), _, None) => AttemptResult::Delivered(status),
        (Some(status), _, Some(cause)) => {
            // The response had started: tell a stream's reader, then cut the connection so
            // the client cannot mistake the truncated answer for a complete one.
            let error =
                recorded.unwrap_or_else(|| GatewayError::from_upstream(&provider.name, &cause));
            if stream {
                let _ = session
                    .write_response_body(Some(error.sse_event(anthropic)), false)
                    .await;
            }
            AttemptResult::Aborted {
                status,
                error,
                cause,
            }
        }
        (None, Some(status), _) => AttemptResult::Failed(FailedAttempt {
            body: tap.held_body.into(),
            retry_after: tap.retry_after,
            ..failed(AttemptEnd::Status(status), None)
        }),
        (None, None, cause) => {
            let error = recorded.unwrap_or_else(|| match &cause {
                Some(e) => GatewayError::from_upstream(&provider.name, e),
                None => GatewayError::Internal("the upstream attempt produced no response".into()),
            });
            AttemptResult::Failed(failed(error.attempt_end(), Some(error)))
        }
    };
    (result, outcome)
}
