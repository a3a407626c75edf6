//! One attempt at a provider, run as a Pingora subrequest.
//!
//! The client-facing request reads and parses the whole body, then hands each attempt an
//! `Attempt` (provider, key, body and its rewrite) through the subrequest context. The
//! subrequest goes through the ordinary `ProxyHttp` phases, and the functions here are its
//! side of them: frame the preset body, point the request at the provider, splice the
//! rewritten body in `request_body_filter`, and meter usage in `response_body_filter`.
//! Results flow back through `Shared`, a small per-request record (never a global lock).

use super::plan::{self, Client, Plan, ResponsePlan};
use crate::error::GatewayError;
use crate::provider::{self, Family, Provider};
use crate::translate::StreamTranslator;
use crate::usage::{StreamMeter, Usage};
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
    /// The model asked of the provider (after mapping).
    pub upstream_model: String,
    pub stream: bool,
    /// The client's body, as received; the subrequest's preset input.
    pub original: Bytes,
    pub plan: Plan,
    pub shared: Arc<Shared>,
}

/// How the response body is being read.
enum Reader {
    /// Nothing to read (an error passed through untouched).
    None,
    /// A native OpenAI stream: metered, usage chunk stripped if asked.
    Meter(StreamMeter),
    /// A stream translated chunk by chunk into the client's protocol.
    Translate(Box<dyn StreamTranslator>),
    /// A native stream passed through and read for usage only.
    Observe(Box<dyn StreamTranslator>),
    /// A JSON body passed through, a copy kept for its usage.
    Json(Vec<u8>, Family),
    /// A JSON body held back whole, translated at its end (`ok`: a 2xx answer).
    Hold { body: Vec<u8>, ok: bool },
}

/// The subrequest's own per-request state.
pub struct AttemptState {
    pub attempt: Box<Attempt>,
    reader: Reader,
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
        reader: Reader::None,
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
        provider::prepare_request(
            req,
            &a.provider,
            key,
            a.plan.upstream_endpoint,
            &a.upstream_model,
            a.stream,
        )?;
        a.shared
            .update(|o| o.upstream_started = Some(Instant::now()));
        req.remove_header(&http::header::TRANSFER_ENCODING);
        req.insert_header(http::header::CONTENT_TYPE, "application/json")?;
        req.insert_header(
            http::header::CONTENT_LENGTH,
            a.plan.body.len(a.original.len()),
        )?;
        Ok(())
    }

    /// `request_body_filter`: swap the client's bytes for the rewritten or translated body.
    pub fn request_body(&self, body: &mut Option<Bytes>, end_of_stream: bool) {
        let a = &self.attempt;
        if a.plan.body.is_unchanged() {
            return;
        }
        if end_of_stream {
            *body = Some(a.plan.body.apply(&a.original));
        } else if body.is_some() {
            *body = Some(Bytes::new());
        }
    }

    /// `upstream_response_filter`: note the status and choose how to read the body.
    pub fn response_header(&mut self, resp: &mut ResponseHeader) {
        let status = resp.status.as_u16();
        self.attempt.shared.update(|o| {
            o.status = Some(status);
            o.first_byte = Some(Instant::now());
        });
        let is_sse = resp
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("text/event-stream"));
        let ok = resp.status.is_success();
        self.reader = match &self.attempt.plan.response {
            ResponsePlan::Native {
                family,
                strip_usage,
            } => match (ok, is_sse, family) {
                (true, true, Family::Anthropic) => {
                    Reader::Observe(plan::anthropic_observer(&self.attempt.upstream_model))
                }
                (true, true, _) => Reader::Meter(StreamMeter::new(*strip_usage)),
                (true, false, family) => Reader::Json(Vec::new(), *family),
                (false, _, _) => Reader::None,
            },
            ResponsePlan::Translate {
                from,
                to,
                model,
                include_usage,
                ..
            } => {
                if ok && is_sse {
                    Reader::Translate(plan::stream_translator(*from, *to, model, *include_usage))
                } else {
                    let content_type = if is_sse {
                        "text/event-stream"
                    } else {
                        "application/json"
                    };
                    let _ = resp.insert_header(http::header::CONTENT_TYPE, content_type);
                    Reader::Hold {
                        body: Vec::new(),
                        ok,
                    }
                }
            }
        };
        if matches!(self.reader, Reader::Translate(_) | Reader::Hold { .. })
            || matches!(
                self.attempt.plan.response,
                ResponsePlan::Native {
                    strip_usage: true,
                    ..
                }
            )
        {
            // The body changes length.
            resp.remove_header(&http::header::CONTENT_LENGTH);
            if resp.headers.get(http::header::TRANSFER_ENCODING).is_none() {
                let _ = resp.insert_header(http::header::TRANSFER_ENCODING, "chunked");
            }
        }
    }

    /// `response_body_filter`: meter usage, translate, or strip what the gateway added.
    pub fn response_body(&mut self, body: &mut Option<Bytes>, end_of_stream: bool) {
        if end_of_stream {
            self.attempt
                .shared
                .update(|o| o.upstream_ended = Some(Instant::now()));
        }
        let chunk = body.take();
        let out: Option<Bytes> = match &mut self.reader {
            Reader::None => chunk,
            Reader::Meter(meter) => {
                let mut out = chunk.map(|c| meter.feed(c));
                if end_of_stream {
                    out = Some(join(out, meter.finish()));
                }
                out
            }
            Reader::Translate(t) => {
                let mut out = chunk.map(|c| Bytes::from(t.push(&c)));
                if end_of_stream {
                    out = Some(join(out, t.finish().into()));
                }
                out
            }
            Reader::Observe(t) => {
                if let Some(c) = &chunk {
                    t.push(c);
                }
                if end_of_stream {
                    t.finish();
                }
                chunk
            }
            Reader::Json(buf, _) => {
                if let Some(c) = &chunk {
                    if buf.len() + c.len() <= MAX_JSON_FOR_USAGE {
                        buf.extend_from_slice(c);
                    }
                }
                chunk
            }
            Reader::Hold { body: held, .. } => {
                if let Some(c) = &chunk {
                    held.extend_from_slice(c);
                }
                if end_of_stream {
                    Some(self.translate_held())
                } else {
                    Some(Bytes::new())
                }
            }
        };
        *body = out;
        if !self.first_token_seen && self.content_seen() {
            self.first_token_seen = true;
            self.attempt
                .shared
                .update(|o| o.first_token = Some(Instant::now()));
        }
        if end_of_stream {
            self.record_usage();
        }
    }

    fn content_seen(&self) -> bool {
        match &self.reader {
            Reader::Meter(m) => m.first_content_seen(),
            Reader::Translate(t) | Reader::Observe(t) => t.first_content_seen(),
            _ => false,
        }
    }

    /// The held-back JSON body, in the client's protocol; records its usage.
    fn translate_held(&mut self) -> Bytes {
        let Reader::Hold { body, ok } = std::mem::replace(&mut self.reader, Reader::None) else {
            return Bytes::new();
        };
        let ResponsePlan::Translate {
            from,
            to,
            model,
            embeddings,
            ..
        } = &self.attempt.plan.response
        else {
            return body.into();
        };
        if !ok {
            return plan::translate_error(&body, *from, *to).into();
        }
        match plan::translate_response(&body, *from, *to, model, *embeddings) {
            Ok((out, usage)) => {
                self.attempt.shared.update(|o| o.usage = Some(usage));
                out.into()
            }
            Err(e) => {
                let err = GatewayError::from(e);
                let out = err.body_for(*to == Client::Anthropic);
                self.attempt.shared.update(|o| o.error = Some(err));
                out
            }
        }
    }

    /// Put what was metered so far into the outcome (also after a failure mid-stream).
    pub fn record_usage(&mut self) {
        let usage = match &self.reader {
            Reader::Meter(m) => Some(m.usage()),
            Reader::Translate(t) | Reader::Observe(t) => Some(t.usage()),
            Reader::Json(body, family) => plan::native_usage(*family, body),
            Reader::None | Reader::Hold { .. } => None,
        };
        if let Some(usage) = usage {
            self.attempt.shared.update(|o| o.usage = Some(usage));
        }
    }

    /// `fail_to_proxy`: remember why, unless an earlier phase already said.
    pub fn failed(&mut self, e: &Error) {
        self.attempt
            .shared
            .update(|o| o.upstream_ended = Some(Instant::now()));
        self.record_usage();
        let err = GatewayError::from_upstream(&self.attempt.provider.name, e);
        self.attempt.shared.update(|o| {
            o.error.get_or_insert(err);
        });
    }
}

fn join(a: Option<Bytes>, b: Bytes) -> Bytes {
    match a {
        None => b,
        Some(a) if b.is_empty() => a,
        Some(a) => {
            let mut v = a.to_vec();
            v.extend_from_slice(&b);
            v.into()
        }
    }
}
