//! One attempt at a provider, run as a Pingora subrequest.
//!
//! The client-facing request reads and parses the whole body, then hands each attempt an
//! `Attempt` (provider, key, body and its rewrite) through the subrequest context. The
//! subrequest goes through the ordinary `ProxyHttp` phases, and the functions here are its
//! side of them: frame the preset body, point the request at the provider, splice the
//! rewritten body in `request_body_filter`, and meter usage in `response_body_filter`.
//! Results flow back through `Shared`, a small per-request record (never a global lock).

use crate::body::Rewrite;
use crate::error::GatewayError;
use crate::provider::{openai, Provider};
use crate::route::Endpoint;
use crate::usage::{usage_from_json, StreamMeter, Usage};
use bytes::Bytes;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::Session;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Largest non-streamed response body kept to read its `usage`.
const MAX_JSON_FOR_USAGE: usize = 32 * 1024 * 1024;

/// What an attempt reports back to the client-facing request.
#[derive(Debug, Default)]
pub struct Outcome {
    pub status: Option<u16>,
    pub usage: Option<Usage>,
    pub first_byte: Option<Instant>,
    pub first_token: Option<Instant>,
    pub error: Option<GatewayError>,
    /// When the request was handed to the provider, and when its last byte came back.
    pub upstream_started: Option<Instant>,
    pub upstream_ended: Option<Instant>,
}

impl Outcome {
    /// Time spent waiting on the provider (request sent to last byte received).
    pub fn upstream_time(&self) -> std::time::Duration {
        match (self.upstream_started, self.upstream_ended) {
            (Some(a), Some(b)) => b.saturating_duration_since(a),
            _ => std::time::Duration::ZERO,
        }
    }
}

#[derive(Debug, Default)]
pub struct Shared {
    pub outcome: Mutex<Outcome>,
}

impl Shared {
    pub fn update(&self, f: impl FnOnce(&mut Outcome)) {
        if let Ok(mut o) = self.outcome.lock() {
            f(&mut o);
        }
    }

    pub fn take(&self) -> Outcome {
        self.outcome
            .lock()
            .map(|mut o| std::mem::take(&mut *o))
            .unwrap_or_default()
    }
}

/// Everything a subrequest needs, fixed before it starts.
pub struct Attempt {
    pub provider: Arc<Provider>,
    pub key_index: usize,
    pub endpoint: Endpoint,
    pub stream: bool,
    /// The client's body, as received; the subrequest's preset input.
    pub original: Bytes,
    pub rewrite: Rewrite,
    /// The gateway added `include_usage`; remove usage from what the client sees.
    pub strip_usage: bool,
    pub shared: Arc<Shared>,
}

/// The subrequest's own per-request state.
pub struct AttemptState {
    pub attempt: Box<Attempt>,
    meter: Option<StreamMeter>,
    json: Option<Vec<u8>>,
    first_token_seen: bool,
}

/// Carrier through `subrequest::Ctx::user_ctx` (it must be `Any + Send + Sync`).
pub struct Slot(pub Mutex<Option<Box<Attempt>>>);

/// `request_filter` of a subrequest: take the attempt and frame the preset body.
pub fn begin(session: &mut Session) -> Result<AttemptState> {
    let attempt = session
        .subrequest_ctx
        .as_ref()
        .and_then(|c| c.user_ctx())
        .and_then(|u| u.downcast_ref::<Slot>())
        .and_then(|slot| slot.0.lock().ok().and_then(|mut g| g.take()))
        .ok_or_else(|| Error::explain(ErrorType::InternalError, "subrequest without an attempt"))?;
    // The subrequest's header is a copy of the client's: its framing must match the preset
    // body we pipe in, whatever the client sent (chunked, h2, a different length).
    let req = session.req_header_mut();
    req.remove_header(&http::header::TRANSFER_ENCODING);
    req.insert_header(http::header::CONTENT_LENGTH, attempt.original.len())?;
    Ok(AttemptState {
        attempt,
        meter: None,
        json: None,
        first_token_seen: false,
    })
}

impl AttemptState {
    fn provider(&self) -> &Provider {
        &self.attempt.provider
    }

    pub fn peer(&self) -> Result<Box<HttpPeer>> {
        self.provider().peer().ok_or_else(|| {
            let p = self.provider();
            self.attempt.shared.update(|o| {
                o.error = Some(GatewayError::UpstreamUnresolved {
                    provider: p.name.clone(),
                    host: p.upstream.host.clone(),
                })
            });
            Error::explain(ErrorType::ConnectNoRoute, "provider host not resolved")
        })
    }

    pub fn upstream_request(&self, req: &mut RequestHeader) -> Result<()> {
        let a = &self.attempt;
        let key =
            a.provider.keys.get(a.key_index).ok_or_else(|| {
                Error::explain(ErrorType::InternalError, "key index out of range")
            })?;
        openai::prepare_request(req, &a.provider, key, a.endpoint)?;
        a.shared
            .update(|o| o.upstream_started = Some(Instant::now()));
        req.remove_header(&http::header::TRANSFER_ENCODING);
        req.insert_header(
            http::header::CONTENT_LENGTH,
            a.rewrite.output_len(a.original.len()),
        )?;
        Ok(())
    }

    /// `request_body_filter`: swap the client's bytes for the rewritten body.
    pub fn request_body(&self, body: &mut Option<Bytes>, end_of_stream: bool) {
        let a = &self.attempt;
        if a.rewrite.is_empty() {
            return;
        }
        if end_of_stream {
            *body = Some(a.rewrite.apply(&a.original));
        } else if body.is_some() {
            *body = Some(Bytes::new());
        }
    }

    /// `upstream_response_filter`: note the status and choose how to meter the body.
    pub fn response_header(&mut self, resp: &mut ResponseHeader) {
        let status = resp.status.as_u16();
        self.attempt.shared.update(|o| {
            o.status = Some(status);
            o.first_byte = Some(Instant::now());
        });
        if !resp.status.is_success() {
            return;
        }
        let is_sse = resp
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("text/event-stream"));
        if is_sse {
            self.meter = Some(StreamMeter::new(self.attempt.strip_usage));
            if self.attempt.strip_usage {
                // Events may be removed: the length is no longer known.
                resp.remove_header(&http::header::CONTENT_LENGTH);
            }
        } else {
            self.json = Some(Vec::new());
        }
    }

    /// `response_body_filter`: meter usage (and strip it when the gateway asked for it).
    pub fn response_body(&mut self, body: &mut Option<Bytes>, end_of_stream: bool) {
        if end_of_stream {
            self.attempt
                .shared
                .update(|o| o.upstream_ended = Some(Instant::now()));
        }
        if let Some(meter) = self.meter.as_mut() {
            if let Some(chunk) = body.take() {
                *body = Some(meter.feed(chunk));
            }
            if !self.first_token_seen && meter.first_content_seen() {
                self.first_token_seen = true;
                self.attempt
                    .shared
                    .update(|o| o.first_token = Some(Instant::now()));
            }
            if end_of_stream {
                let rest = meter.finish();
                if !rest.is_empty() {
                    let mut joined = body.take().map(|b| b.to_vec()).unwrap_or_default();
                    joined.extend_from_slice(&rest);
                    *body = Some(joined.into());
                }
                self.record_usage();
            }
        } else if let Some(json) = self.json.as_mut() {
            if let Some(chunk) = body.as_ref() {
                if json.len() + chunk.len() <= MAX_JSON_FOR_USAGE {
                    json.extend_from_slice(chunk);
                } else {
                    self.json = None;
                }
            }
            if end_of_stream {
                self.record_usage();
            }
        }
    }

    /// Put what was metered so far into the outcome (also after a failure mid-stream).
    pub fn record_usage(&mut self) {
        self.attempt
            .shared
            .update(|o| o.upstream_ended = Some(Instant::now()));
        let usage = if let Some(meter) = self.meter.as_ref() {
            Some(meter.usage())
        } else {
            self.json.take().and_then(|j| usage_from_json(&j))
        };
        if let Some(usage) = usage {
            self.attempt.shared.update(|o| o.usage = Some(usage));
        }
    }

    /// `fail_to_proxy`: remember why, unless an earlier phase already said.
    pub fn failed(&mut self, e: &Error) {
        self.record_usage();
        let err = GatewayError::from_upstream(&self.attempt.provider.name, e);
        self.attempt.shared.update(|o| {
            o.error.get_or_insert(err);
        });
    }
}
