//! One attempt at a provider: the request and response filters of a single upstream exchange.
//!
//! The client-facing request reads and parses the whole body, then hands each attempt an
//! `Attempt` (provider, key, body and its rewrite). `pipe` drives the upstream connection
//! and calls the filters here, which are the attempt's own request and response phases:
//! point the request header at the provider with its key (`upstream_request`), give the
//! rewritten or translated body (`upstream_body`), choose how to read the response from its
//! header (`response_header`), and meter, translate or strip each body chunk on its way to
//! the client (`response_body`). What happened is kept in `Outcome`, owned by the attempt.

use super::plan::{self, Plan, ResponsePlan};
use crate::error::GatewayError;
use crate::forward::ForwardHeaders;
use crate::protocol::{ClientProtocol, Endpoint, Protocol};
use crate::provider::{self, Provider};
use crate::scrub::StreamScrub;
use crate::translate::StreamTranslator;
use crate::usage::{LongJson, MediaMeter, StreamMeter, Usage};
use bytes::Bytes;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use std::sync::Arc;
use std::time::Instant;

/// Largest non-streamed response body kept to read its `usage` (unless the response cache
/// keeps longer answers: then up to its largest entry); a longer one's usage is read as it
/// goes by (`LongJson`).
const MAX_JSON_FOR_USAGE: usize = 32 * 1024 * 1024;
/// Largest non-streamed response held back whole to be translated; a longer one ends the
/// response with an error.
pub const MAX_HELD_BODY: usize = 32 * 1024 * 1024;

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
    /// The cost the client was told (`pricing.cost_header`), priced once the answer was
    /// complete (`Some(None)`: unpriced); accounting reports the same.
    pub cost: Option<Option<crate::pricing::Cost>>,
    /// The whole answer as the client was sent it, when the response cache wants it (and it
    /// fit the cache's largest entry).
    pub sent: Option<Vec<u8>>,
    /// The id of a Responses API answer passed through (the provider keeps it), for the
    /// calls that name it later.
    pub response_id: Option<String>,
    /// Whether a whole answer may be kept by the response cache, read in the usage meter's
    /// pass over it (`KeepAnswer`): the bytes read, and `cache::keepable_whole`'s verdict.
    pub keepable: Option<(usize, Option<bool>)>,
}

/// The response cache wants the delivered answer (`Outcome::sent`, `Outcome::keepable`).
#[derive(Debug, Clone, Copy)]
pub struct KeepAnswer {
    /// Keep at most this many bytes (the cache's largest entry).
    pub limit: usize,
    /// The route's `store_truncated`.
    pub store_truncated: bool,
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

/// Everything an attempt needs, fixed before it starts.
pub struct Attempt {
    pub provider: Arc<Provider>,
    pub key_index: usize,
    /// The model asked of the provider (after mapping).
    pub upstream_model: String,
    pub stream: bool,
    /// The client's body, as received.
    pub original: Bytes,
    pub plan: Plan,
    /// The trace context for the provider (tracing on only).
    pub propagate: crate::otel::Propagate,
}

/// How the response body is being read.
enum Reader {
    /// Nothing to read.
    None,
    /// An error answer passed through, the provider's keys scrubbed from it.
    Scrub(StreamScrub),
    /// A native OpenAI stream: metered, usage chunk stripped if asked.
    Meter(Box<StreamMeter>),
    /// A stream translated chunk by chunk into the client's protocol.
    Translate(Box<dyn StreamTranslator>),
    /// A native stream passed through and read for usage only.
    Observe(Box<dyn StreamTranslator>),
    /// A JSON body passed through, a copy kept for its usage.
    Json(Vec<u8>, Protocol),
    /// A JSON body passed through that outgrew what `Json` keeps (`json_bound`): read for its
    /// usage as it goes by.
    LongJson(Box<LongJson>, Protocol),
    /// A media answer passed through, metered in its own unit.
    Media(Box<MediaMeter>),
    /// A JSON body held back whole, translated at its end (`ok`: a 2xx answer).
    Hold { body: Vec<u8>, ok: bool },
}

/// Where an answer can tell the client its cost (`pricing.cost_header`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CostTold {
    /// A whole (non-streamed) answer: in its header, held until the answer is complete.
    Header,
    /// A stream: in a comment after its last event.
    Comment,
}

impl Reader {
    /// A chunk of a JSON body passed through: kept while the body fits in `bound`, else read
    /// as it goes by (`LongJson`, from the bytes kept so far).
    fn json(&mut self, c: &[u8], bound: usize) {
        match self {
            Reader::Json(buf, _) if buf.len() + c.len() <= bound => buf.extend_from_slice(c),
            Reader::Json(buf, protocol) => {
                let mut long = Box::new(LongJson::new());
                long.push(buf);
                long.push(c);
                *self = Reader::LongJson(long, *protocol);
            }
            Reader::LongJson(long, _) => long.push(c),
            _ => {}
        }
    }
}

/// One attempt's state while it runs.
pub struct AttemptState {
    pub attempt: Attempt,
    reader: Reader,
    pub outcome: Outcome,
    /// Check a whole OpenAI answer for the response cache as its usage is read.
    pub keep: Option<KeepAnswer>,
}

impl AttemptState {
    pub fn new(attempt: Attempt) -> Self {
        AttemptState {
            attempt,
            reader: Reader::None,
            outcome: Outcome::default(),
            keep: None,
        }
    }

    fn provider(&self) -> &Provider {
        &self.attempt.provider
    }

    /// The provider's resolved address and connection options.
    pub fn peer(&self) -> Result<Arc<HttpPeer>, GatewayError> {
        self.provider()
            .peer()
            .ok_or_else(|| GatewayError::UpstreamUnresolved {
                provider: self.provider().name.clone(),
                host: self.provider().upstream.host.clone(),
            })
    }

    /// The request header for the provider, built fresh: path, key, framing and request id
    /// set by the gateway, and only the client headers `forward` allows.
    pub fn upstream_request(
        &self,
        client: &RequestHeader,
        forward: &ForwardHeaders,
        request_id: &str,
    ) -> Result<Box<RequestHeader>> {
        let a = &self.attempt;
        let key =
            a.provider.keys.get(a.key_index).ok_or_else(|| {
                Error::explain(ErrorType::InternalError, "key index out of range")
            })?;
        // Room for what is forwarded plus the gateway's own headers.
        let size = client.headers.len().min(24) + 6;
        let mut req = Box::new(RequestHeader::build_no_case(
            http::Method::POST,
            b"/",
            Some(size),
        )?);
        forward.copy(&client.headers, &mut req, a.plan.native())?;
        req.insert_header(super::REQUEST_ID, request_id)?;
        if let Some(traceparent) = &a.propagate.traceparent {
            // The gateway's own context replaces whatever a route forwards of the client's.
            req.insert_header(crate::otel::TRACEPARENT, traceparent)?;
            match &a.propagate.tracestate {
                Some(state) => req.insert_header(crate::otel::TRACESTATE, state)?,
                None => {
                    req.remove_header(&crate::otel::TRACESTATE);
                }
            }
        }
        provider::prepare_request(
            &mut req,
            &a.provider,
            key,
            a.plan.upstream_endpoint,
            &a.upstream_model,
            a.stream,
        )?;
        match a.plan.upstream_endpoint {
            Endpoint::ResponseById => super::responses_api::retarget(&mut req, client)?,
            e @ (Endpoint::Files | Endpoint::Batches) => {
                super::files_api::retarget(&mut req, client, e)?
            }
            _ => {}
        }
        content_type(&mut req, a.plan.content_type.as_deref())?;
        req.insert_header(
            http::header::CONTENT_LENGTH,
            a.plan.body.len(a.original.len()),
        )?;
        Ok(req)
    }

    /// The body for the provider: the client's bytes, rewritten or translated as planned.
    pub fn upstream_body(&self) -> Bytes {
        let a = &self.attempt;
        if a.plan.body.is_unchanged() {
            a.original.clone()
        } else {
            a.plan.body.apply(&a.original)
        }
    }

    /// The request is on its way to the provider (again, after a stale pooled connection).
    pub fn sending(&mut self) {
        self.outcome.upstream_started = Some(Instant::now());
    }

    /// The response header arrived: note the status and choose how to read the body.
    pub fn response_header(&mut self, resp: &mut ResponseHeader) {
        let status = resp.status.as_u16();
        self.outcome.status = Some(status);
        self.outcome.first_byte = Some(Instant::now());
        let is_sse = resp
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("text/event-stream"));
        let ok = resp.status.is_success();
        let (from, to) = (self.attempt.plan.provider, self.attempt.plan.client);
        self.reader = match &self.attempt.plan.response {
            ResponsePlan::Native { strip_usage } => self.native_reader(*strip_usage, ok, is_sse),
            ResponsePlan::Media { kind, asked } if ok => {
                let content_type = resp
                    .headers
                    .get(http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                Reader::Media(Box::new(MediaMeter::new(*kind, *asked, content_type)))
            }
            ResponsePlan::Unmetered | ResponsePlan::Media { .. }
                if self.attempt.provider.keys.scrubber().is_active() =>
            {
                Reader::Scrub(StreamScrub::default())
            }
            ResponsePlan::Unmetered | ResponsePlan::Media { .. } => Reader::None,
            ResponsePlan::Translate {
                model,
                include_usage,
                ..
            } => {
                if ok && is_sse {
                    match plan::stream_translator(from, to, model, *include_usage) {
                        Some(t) => Reader::Translate(t),
                        None => Reader::Meter(Box::new(StreamMeter::new(false))),
                    }
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
        if matches!(
            self.reader,
            Reader::Translate(_) | Reader::Hold { .. } | Reader::Scrub(_)
        ) || matches!(
            self.attempt.plan.response,
            ResponsePlan::Native {
                strip_usage: true,
                ..
            }
        ) {
            // The body changes length.
            resp.remove_header(&http::header::CONTENT_LENGTH);
            if resp.headers.get(http::header::TRANSFER_ENCODING).is_none() {
                let _ = resp.insert_header(http::header::TRANSFER_ENCODING, "chunked");
            }
        }
    }

    /// The reader of an answer in the client's protocol, passed through.
    fn native_reader(&self, strip_usage: bool, ok: bool, is_sse: bool) -> Reader {
        let from = self.attempt.plan.provider;
        match (ok, is_sse) {
            // A native Responses stream: usage from `response.completed`.
            (true, true) if self.attempt.plan.client == ClientProtocol::Responses => {
                Reader::Observe(Box::new(crate::translate::ResponsesStreamUsage::new()))
            }
            // A stream in another protocol than OpenAI's is read for its usage only.
            (true, true) => match from.stream_to_openai(&self.attempt.upstream_model, true) {
                Some(observer) => Reader::Observe(observer),
                None => Reader::Meter(Box::new(StreamMeter::new(strip_usage))),
            },
            (true, false) => Reader::Json(Vec::new(), from),
            (false, _) if self.attempt.provider.keys.scrubber().is_active() => {
                Reader::Scrub(StreamScrub::default())
            }
            (false, _) => Reader::None,
        }
    }

    /// A body chunk on its way to the client (`None` with `end_of_stream` at the end): meter
    /// usage, translate, or strip what the gateway added. Returns what the client gets.
    pub fn response_body(&mut self, chunk: Option<Bytes>, end_of_stream: bool) -> Bytes {
        if end_of_stream {
            self.ended();
        }
        let json_bound = self.json_bound();
        let out: Option<Bytes> = match &mut self.reader {
            Reader::None => chunk,
            Reader::Scrub(scrub) => {
                let scrubber = self.attempt.provider.keys.scrubber();
                let mut out = chunk.map(|c| scrub.push(scrubber, c));
                if end_of_stream {
                    out = Some(join(out, scrub.finish(scrubber)));
                }
                out
            }
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
            Reader::Json(..) | Reader::LongJson(..) => {
                if let Some(c) = &chunk {
                    self.reader.json(c, json_bound);
                }
                chunk
            }
            Reader::Media(meter) => {
                if let Some(c) = &chunk {
                    meter.push(c);
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
        if self.outcome.first_token.is_none() && self.content_seen() {
            self.outcome.first_token = Some(Instant::now());
        }
        if end_of_stream {
            self.record_usage();
        }
        out.unwrap_or_default()
    }

    /// Where this answer (its header read) can tell its cost: a successful one only.
    pub fn cost_told(&self) -> Option<CostTold> {
        match &self.reader {
            Reader::Json(..) | Reader::LongJson(..) | Reader::Hold { ok: true, .. } => {
                Some(CostTold::Header)
            }
            // A JSON media answer (images, a transcription); not audio, not a stream.
            Reader::Media(m) if m.kept() => Some(CostTold::Header),
            Reader::Media(_) => None,
            Reader::Meter(_) | Reader::Translate(_) | Reader::Observe(_) => Some(CostTold::Comment),
            Reader::None | Reader::Scrub(_) | Reader::Hold { ok: false, .. } => None,
        }
    }

    /// Price the answer once it is complete, for the client: the usage as it is charged
    /// (`usage::billable`) and its cost are kept in the outcome, so the access log shows
    /// what the client was told. The text for the client (`pricing::shown`); `None` when
    /// nothing was used (no cost is reported then, as in the access log).
    pub fn price(&mut self, prices: &crate::pricing::PriceBook) -> Option<String> {
        let a = &self.attempt;
        let usage =
            crate::usage::billable(self.outcome.usage?, Some(&a.original[..]), &a.provider.name);
        self.outcome.usage = Some(usage);
        let cost = prices.priced(
            &a.provider.name,
            a.provider.kind.as_str(),
            &a.upstream_model,
            &usage,
            crate::pricing::now(),
        )?;
        self.outcome.cost = Some(cost);
        Some(crate::pricing::shown(cost))
    }

    /// The bound a reader's buffer went past, if it did: `max_event` for the SSE event being
    /// assembled (one never-ending line or event from the provider), `MAX_HELD_BODY` for a
    /// body held back for translation.
    pub fn overflow(&self, max_event: usize) -> Option<usize> {
        let (held, limit) = match &self.reader {
            Reader::Meter(m) => (m.pending_bytes(), max_event),
            Reader::Translate(t) | Reader::Observe(t) => (t.pending_bytes(), max_event),
            Reader::Hold { body, .. } => (body.len(), MAX_HELD_BODY),
            Reader::Media(m) => (m.pending_bytes(), max_event),
            Reader::None | Reader::Json(..) | Reader::LongJson(..) | Reader::Scrub(_) => {
                return None
            }
        };
        (held > limit).then_some(limit)
    }

    /// The last byte came from the provider (or the exchange stopped).
    pub fn ended(&mut self) {
        self.outcome.upstream_ended = Some(Instant::now());
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
            model, embeddings, ..
        } = &self.attempt.plan.response
        else {
            return body.into();
        };
        let (from, to) = (self.attempt.plan.provider, self.attempt.plan.client);
        if !ok {
            let scrubber = self.attempt.provider.keys.scrubber();
            let body = scrubber.scrub(&body).unwrap_or(body);
            return plan::translate_error(&body, from, to).into();
        }
        match plan::translate_response(&body, from, to, model, *embeddings) {
            Ok((out, usage)) => {
                self.outcome.usage = Some(reported_or_estimated(Some(usage), &out));
                out.into()
            }
            Err(e) => {
                let err = GatewayError::from(e);
                let out = err.body_for(to);
                self.outcome.error = Some(err);
                out
            }
        }
    }

    /// Whether the answer is a JSON body passed through as it came whose bytes, up to
    /// `limit`, the reader keeps whole for its usage (`take_json` gives them at the end).
    pub fn keeps_json_up_to(&self, limit: usize) -> bool {
        matches!(self.reader, Reader::Json(..)) && limit <= self.json_bound()
    }

    /// The most bytes of a JSON body `Json` keeps: `MAX_JSON_FOR_USAGE`, or the response
    /// cache's largest entry when that is more (the cache takes these bytes rather than a
    /// copy of its own).
    fn json_bound(&self) -> usize {
        MAX_JSON_FOR_USAGE.max(self.keep.map_or(0, |k| k.limit))
    }

    /// The bytes of a JSON body passed through, once it was delivered and metered (the
    /// reader is done with them: the response cache keeps them rather than a copy).
    pub fn take_json(&mut self) -> Option<Vec<u8>> {
        match std::mem::replace(&mut self.reader, Reader::None) {
            Reader::Json(body, _) => Some(body),
            other => {
                self.reader = other;
                None
            }
        }
    }

    /// Put what was metered so far into the outcome (also after a failure mid-stream).
    pub fn record_usage(&mut self) {
        let usage = match &self.reader {
            Reader::Meter(m) => Some(m.usage()),
            Reader::Translate(t) | Reader::Observe(t) => Some(t.usage()),
            Reader::Json(body, protocol) => {
                // An OpenAI client's answer from a provider speaking OpenAI (a native plan):
                // its usage is `usage_from_json`'s, read in the same pass as the check.
                let openai = Some(ClientProtocol::OpenAi);
                let fused = self.keep.filter(|_| {
                    Some(self.attempt.plan.client) == openai && protocol.native_client() == openai
                });
                let usage = match fused {
                    Some(keep) => {
                        let (usage, keepable) =
                            crate::cache::usage_and_keepable(body, keep.store_truncated);
                        self.outcome.keepable = Some((body.len(), keepable));
                        usage
                    }
                    None => protocol.usage(body),
                };
                Some(reported_or_estimated(usage, body))
            }
            // Read from the answer's skeleton by the same reader as a whole one's.
            Reader::LongJson(long, protocol) => Some(
                long.skeleton()
                    .and_then(|skeleton| protocol.usage(skeleton))
                    .filter(|u| u.input_tokens > 0 || u.output_tokens > 0)
                    .unwrap_or_else(|| long.estimate()),
            ),
            Reader::Media(meter) => Some(meter.usage()),
            Reader::None | Reader::Scrub(_) | Reader::Hold { .. } => None,
        };
        if let Some(usage) = usage {
            self.outcome.usage = Some(usage);
        }
        if self.outcome.response_id.is_none() {
            self.outcome.response_id = self.response_id();
        }
    }

    /// The id of a native Responses API answer (stream or body).
    fn response_id(&self) -> Option<String> {
        if self.attempt.plan.client != ClientProtocol::Responses {
            return None;
        }
        match &self.reader {
            Reader::Observe(t) => t.response_id(),
            Reader::Json(body, _) => id_of(body),
            Reader::LongJson(long, _) => id_of(long.skeleton()?),
            _ => None,
        }
    }

    /// The exchange with the provider failed: keep what was metered and say why, unless
    /// a filter already did. Returns the reason.
    pub fn failed(&mut self, e: &Error) -> GatewayError {
        self.ended();
        self.record_usage();
        let provider = &self.attempt.provider;
        self.outcome
            .error
            .get_or_insert_with(|| {
                GatewayError::from_upstream(&provider.name, e, provider.keys.scrubber())
            })
            .clone()
    }
}

/// The upstream request's content type: the plan's (a multipart upload's, with its
/// boundary), else JSON, on a `POST`; none on a call without a body (`GET`, `DELETE`).
pub(super) fn content_type(req: &mut RequestHeader, planned: Option<&str>) -> Result<()> {
    if req.method == http::Method::POST {
        req.insert_header(
            http::header::CONTENT_TYPE,
            planned.unwrap_or("application/json"),
        )?;
    } else {
        req.remove_header(&http::header::CONTENT_TYPE);
    }
    Ok(())
}

/// The top-level `id` of a JSON answer.
fn id_of(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Id {
        id: Option<String>,
    }
    serde_json::from_slice::<Id>(body).ok()?.id
}

/// The usage a 2xx JSON answer reported, or, when it reported none (no `usage`, or no token
/// counted at all), an estimate from the text `delivered` to the client (which may be cut
/// short when the client or the provider went away).
fn reported_or_estimated(reported: Option<Usage>, delivered: &[u8]) -> Usage {
    match reported {
        Some(u) if u.input_tokens > 0 || u.output_tokens > 0 => u,
        _ => crate::usage::estimate_response(delivered),
    }
}

pub(super) fn join(a: Option<Bytes>, b: Bytes) -> Bytes {
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
