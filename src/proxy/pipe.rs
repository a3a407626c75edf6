//! Run one attempt against its provider and pipe the answer to the client; say how it ended.
//!
//! The attempt drives the upstream exchange itself with Pingora's `Connector` (pooled
//! keep-alive connections, TLS, the provider's timeouts): request header and (rewritten)
//! body out, response header in, then the body copied to the client chunk by chunk through
//! the attempt's response filter. No second proxy session, task or channel per attempt.
//!
//! - A response whose status is worth retrying (401, 403, 429, 5xx) is held back from the
//!   client entirely, so the next attempt can answer instead; its first 16 KiB are kept to
//!   quote (an excerpt of) the provider's message if it is the last.
//! - Every response header that reaches the client, and the body of an error answer, has the
//!   provider's key values scrubbed (`scrub`); successful bodies are not scanned.
//! - A pooled connection the provider had already closed is replaced by a fresh one, once
//!   or twice, before the attempt counts as failed (Pingora marks such errors retryable).
//! - A client that goes away stops the attempt: the upstream connection is closed, so the
//!   provider stops generating tokens nobody will read.
//! - With `pricing.cost_header`, a successful answer tells its cost: a whole answer's header
//!   is held until its body is complete (the body with it, up to `MAX_HELD_BODY`; a longer
//!   one is sent on without it) to carry `x-tollgate-cost`, and a stream ends with the
//!   comment `: x-tollgate-cost …` after its last event.

use super::attempt::{join, Attempt, AttemptState, CostTold, KeepAnswer, Outcome, MAX_HELD_BODY};
use super::moderation_output::OutputCheck;
use super::REQUEST_ID;
use crate::error::GatewayError;
use crate::forward::ForwardHeaders;
use crate::health::{self, AttemptEnd};
use crate::policy::moderation_output::{self as windows, Piece, Windows};
use crate::policy::restore::{Filtered, ResponsePolicy, StreamFilter};
use crate::pricing::PriceBook;
use crate::protocol::ClientProtocol;
use crate::provider::Provider;
use bytes::Bytes;
use pingora_core::connectors::http::Connector;
use pingora_core::protocols::http::client::HttpSession as UpstreamSession;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::Session;
use std::sync::Arc;
use std::time::Duration;

/// How much of a held-back error body is kept for the client's error message.
const KEEP_ERROR_BODY: usize = 16 * 1024;
/// How much of a held-back error body is read at most; a longer one closes its connection.
const DRAIN_ERROR_BODY: usize = 256 * 1024;
/// Pooled connections found closed by the provider, replaced before the attempt fails.
const STALE_RETRIES: u32 = 2;
/// Informational (1xx) responses skipped before the real one.
const MAX_INFORMATIONAL: usize = 8;

/// What the request cost, on an answer (`pricing.cost_header`): `0.00004125 USD` or
/// `unpriced`.
pub const X_TOLLGATE_COST: http::HeaderName = http::HeaderName::from_static("x-tollgate-cost");

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
    /// The response started and then the provider's side broke (`status`: what the client
    /// had been sent; `None` when its header was still held for its cost).
    Aborted {
        status: Option<u16>,
        error: GatewayError,
        cause: Box<Error>,
    },
    /// The client went away (`status`: what it had been sent, if anything).
    ClientGone {
        status: Option<u16>,
        cause: Box<Error>,
    },
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

/// Where an exchange stopped before a response header arrived.
enum Stop {
    Upstream(Box<Error>),
    Client(Box<Error>),
}

/// The client's side of one attempt: who it is and what its response header carries.
pub struct ClientSide<'a> {
    pub session: &'a mut Session,
    pub request_id: &'a str,
    pub extra_headers: &'a [super::exchange::ExtraHeader],
    /// Which of the client's headers go to the provider (the route's rule).
    pub forward: &'a ForwardHeaders,
    pub stream: bool,
    /// The protocol the client speaks (the shape of an error event).
    pub client: ClientProtocol,
    /// Largest SSE event (or line) read from the provider (`client.max_event_bytes`).
    pub max_event_bytes: usize,
    /// Tell the client what the request cost (`pricing.cost_header`), by this price book.
    pub cost: Option<&'a PriceBook>,
    /// Keep what the client is sent (for the response cache).
    pub capture: Option<KeepAnswer>,
    /// Restore masked values and check output deny rules in a successful answer.
    pub policy: Option<&'a ResponsePolicy>,
    /// Moderate a successful answer's text, window by window.
    pub moderate: Option<&'a OutputCheck>,
}

/// Run `attempt` and pipe its answer to the client; returns how it ended and what it measured.
pub async fn run(
    client: ClientSide<'_>,
    connector: &Connector,
    attempt: Attempt,
) -> (AttemptResult, Outcome) {
    let _active = client.stream.then(ActiveStream::new);
    let mut state = AttemptState::new(attempt);
    let result = exchange(client, connector, &mut state).await;
    (result, state.outcome)
}

async fn exchange(
    client: ClientSide<'_>,
    connector: &Connector,
    state: &mut AttemptState,
) -> AttemptResult {
    let ClientSide {
        session,
        request_id,
        extra_headers,
        forward,
        stream,
        client: protocol,
        max_event_bytes,
        cost,
        capture,
        policy,
        moderate,
    } = client;
    let (mut up, peer, mut resp) = match open(session, connector, state, forward, request_id).await
    {
        Ok(opened) => opened,
        Err(end) => return end,
    };
    let status = resp.status.as_u16();
    state.keep = capture;
    state.response_header(&mut resp);
    state
        .attempt
        .provider
        .keys
        .scrubber()
        .scrub_headers(&mut resp);
    let policy = policy.filter(|_| resp.status.is_success());
    let moderate = moderate.filter(|_| resp.status.is_success());
    if policy.is_some() || moderate.is_some() {
        // The policies change the body's length.
        resp.remove_header(&http::header::CONTENT_LENGTH);
        let _ = resp.insert_header(http::header::TRANSFER_ENCODING, "chunked");
    }
    for_client(&mut resp);
    decorate(&mut resp, request_id, extra_headers);
    let cost = cost.and_then(|book| Some((book, state.cost_told()?)));
    let held = match cost {
        Some((_, CostTold::Header)) => Some(Held::new(resp)),
        _ => {
            if let Err(cause) = session.write_response_header(resp, false).await {
                return client_gone(state, &mut up, Some(status), cause).await;
            }
            None
        }
    };
    let relay = Relay {
        status,
        stream,
        protocol,
        max_event_bytes,
        cost,
        capture,
        policy,
        moderate,
    };
    if let Err(end) = relay.body(session, &mut up, state, held).await {
        return end;
    }
    finish(connector, up, &peer).await;
    AttemptResult::Delivered(status)
}

/// Connect, send the attempt's request and read the provider's response header; a status
/// worth retrying is held back (`Err`, like every way the attempt ends before an answer).
async fn open(
    session: &mut Session,
    connector: &Connector,
    state: &mut AttemptState,
    forward: &ForwardHeaders,
    request_id: &str,
) -> Result<(UpstreamSession, Arc<HttpPeer>, Box<ResponseHeader>), AttemptResult> {
    let peer = match state.peer() {
        Ok(peer) => peer,
        Err(e) => return Err(failure(state, e.attempt_end(), Some(e))),
    };
    let req = match state.upstream_request(session.req_header(), forward, request_id) {
        Ok(req) => req,
        Err(e) => {
            let e = GatewayError::Internal(format!("building the upstream request: {e}"));
            return Err(failure(state, AttemptEnd::Broken, Some(e)));
        }
    };
    let body = state.upstream_body();
    // The request header and body go with `send`: not kept while a stream runs.
    let mut up = match send(session, connector, &peer, req, body, state).await {
        Ok(up) => up,
        Err(Stop::Upstream(e)) => {
            let err = state.failed(&e);
            return Err(failure(state, err.attempt_end(), Some(err)));
        }
        Err(Stop::Client(cause)) => {
            state.ended();
            return Err(AttemptResult::ClientGone {
                status: None,
                cause,
            });
        }
    };
    let Some(resp) = up.response_header().map(|h| Box::new(h.clone())) else {
        up.shutdown().await;
        let err = GatewayError::Internal("the upstream attempt produced no response".into());
        return Err(failure(state, AttemptEnd::Broken, Some(err)));
    };
    let status = resp.status.as_u16();
    if AttemptEnd::Status(status).retryable() {
        return Err(held_back(connector, up, &peer, state, status, &resp).await);
    }
    Ok((up, peer, resp))
}

/// A whole answer read from the provider for the gateway to look at before the client gets
/// it: its header ready for the client (scrubbed of the provider's keys, with the request
/// id and the gateway's headers) and its body (scrubbed as the attempt's plan says).
pub struct Whole {
    pub header: Box<ResponseHeader>,
    pub body: Vec<u8>,
}

/// Run `attempt` and read its whole answer, up to `limit` bytes, sending the client nothing
/// (the caller answers it); one attempt, like `run`.
pub async fn fetch(
    client: ClientSide<'_>,
    connector: &Connector,
    attempt: Attempt,
    limit: usize,
) -> (Result<Whole, AttemptResult>, Outcome) {
    let mut state = AttemptState::new(attempt);
    let result = fetch_whole(client, connector, &mut state, limit).await;
    (result, state.outcome)
}

async fn fetch_whole(
    client: ClientSide<'_>,
    connector: &Connector,
    state: &mut AttemptState,
    limit: usize,
) -> Result<Whole, AttemptResult> {
    let ClientSide {
        session,
        request_id,
        extra_headers,
        forward,
        ..
    } = client;
    let (mut up, peer, mut header) = open(session, connector, state, forward, request_id).await?;
    state.response_header(&mut header);
    let keys = &state.attempt.provider.keys;
    keys.scrubber().scrub_headers(&mut header);
    header.set_version(http::Version::HTTP_11);
    decorate(&mut header, request_id, extra_headers);
    let mut body = Vec::new();
    loop {
        match up.read_response_body().await {
            Ok(Some(chunk)) => body.extend_from_slice(&state.response_body(Some(chunk), false)),
            Ok(None) => {
                body.extend_from_slice(&state.response_body(None, true));
                break;
            }
            Err(cause) => {
                up.shutdown().await;
                let error = state.failed(&cause);
                let status = None;
                return Err(AttemptResult::Aborted {
                    status,
                    error,
                    cause,
                });
            }
        }
        if body.len() > limit {
            up.shutdown().await;
            let detail = format!("an answer larger than {limit} bytes");
            let cause = Error::explain(ErrorType::ReadError, detail.clone());
            let error = GatewayError::UpstreamBroken {
                provider: state.attempt.provider.name.clone(),
                detail,
            };
            state.ended();
            let status = None;
            return Err(AttemptResult::Aborted {
                status,
                error,
                cause,
            });
        }
    }
    finish(connector, up, &peer).await;
    Ok(Whole { header, body })
}

/// A response worth retrying: held back from the client whole (its start kept to quote),
/// so the next attempt can answer instead.
async fn held_back(
    connector: &Connector,
    mut up: UpstreamSession,
    peer: &HttpPeer,
    state: &mut AttemptState,
    status: u16,
    resp: &ResponseHeader,
) -> AttemptResult {
    state.outcome.status = Some(status);
    let retry_after = health::retry_after(&resp.headers);
    let body = drain(&mut up).await;
    state.ended();
    finish(connector, up, peer).await;
    AttemptResult::Failed(FailedAttempt {
        body,
        retry_after,
        ..failed_attempt(state, AttemptEnd::Status(status), None)
    })
}

/// Copying a delivered response's body to the client.
struct Relay<'a> {
    status: u16,
    stream: bool,
    protocol: ClientProtocol,
    max_event_bytes: usize,
    /// How the answer tells its cost, by which price book (`pricing.cost_header`).
    cost: Option<(&'a PriceBook, CostTold)>,
    /// Keep what the client is sent (the response cache).
    capture: Option<KeepAnswer>,
    /// The answer's content policies.
    policy: Option<&'a ResponsePolicy>,
    /// The answer's moderation.
    moderate: Option<&'a OutputCheck>,
}

/// An answer on its way through its content policies: a stream event by event, a whole
/// answer held until complete.
enum Policed<'a> {
    Stream(StreamFilter<'a>),
    Whole(&'a ResponsePolicy, Vec<u8>),
}

impl<'a> Policed<'a> {
    fn new(policy: &'a ResponsePolicy, stream: bool) -> Self {
        match stream {
            true => Policed::Stream(policy.stream()),
            false => Policed::Whole(policy, Vec::new()),
        }
    }

    /// What the client gets of `out` (`end`: the answer's last bytes).
    fn filter(&mut self, out: Bytes, end: bool) -> Filtered {
        match self {
            Policed::Stream(f) => match (f.push(&out), end) {
                (Filtered::Pass(a), true) => match f.finish() {
                    Filtered::Pass(b) => Filtered::Pass(join(Some(a), b)),
                    Filtered::Blocked(b) => Filtered::Blocked(join(Some(a), b)),
                },
                (step, _) => step,
            },
            Policed::Whole(policy, buf) => {
                buf.extend_from_slice(&out);
                match end {
                    true => Filtered::Pass(policy.whole(buf)),
                    false => Filtered::Pass(Bytes::new()),
                }
            }
        }
    }

    /// Bytes held for a whole answer (bounded like a held translation).
    fn held(&self) -> usize {
        match self {
            Policed::Stream(_) => 0,
            Policed::Whole(_, buf) => buf.len(),
        }
    }
}

/// What ends a stream stopped by an output deny rule, after its closing chunk: the error
/// event (`content_policy_violation`) and, for OpenAI's clients, `data: [DONE]`.
pub fn content_filter_end(protocol: ClientProtocol) -> Bytes {
    let error = GatewayError::ContentPolicy(
        "The answer was stopped by this route's content policy: its text matches a deny rule."
            .into(),
    );
    error_end(&error, protocol)
}

/// `error`'s event and, for OpenAI's clients, `data: [DONE]`.
fn error_end(error: &GatewayError, protocol: ClientProtocol) -> Bytes {
    let mut out = error.sse_event(protocol).to_vec();
    if protocol == ClientProtocol::OpenAi {
        out.extend_from_slice(b"data: [DONE]\n\n");
    }
    out.into()
}

/// An answer on its way through its moderation: a stream window by window, a whole answer
/// held until complete.
enum Moderated {
    Stream(Windows),
    Whole(Vec<u8>),
}

/// What the moderation lets the client have.
enum Checked {
    Pass(Bytes),
    /// Send these bytes (ending with the closing chunk), then `end`, and stop.
    Stopped(Bytes, Bytes),
}

impl Moderated {
    fn new(check: &OutputCheck, stream: bool) -> Self {
        match stream {
            true => Moderated::Stream(Windows::new(check.window, check.shape)),
            false => Moderated::Whole(Vec::new()),
        }
    }

    /// Bytes held for a whole answer.
    fn held(&self) -> usize {
        match self {
            Moderated::Stream(_) => 0,
            Moderated::Whole(buf) => buf.len(),
        }
    }

    /// What the client gets of `out` (`end`: the answer's last bytes), checked.
    async fn filter(
        &mut self,
        check: &OutputCheck,
        protocol: ClientProtocol,
        out: Bytes,
        end: bool,
    ) -> Checked {
        let w = match self {
            Moderated::Whole(buf) => {
                buf.extend_from_slice(&out);
                return match end {
                    true => Checked::Pass(whole(check, buf).await),
                    false => Checked::Pass(Bytes::new()),
                };
            }
            Moderated::Stream(w) => w,
        };
        let mut pieces = w.push(&out);
        if end {
            pieces.extend(w.finish());
        }
        let mut sent = Vec::new();
        for piece in pieces {
            match piece {
                Piece::Pass(b) => sent.extend_from_slice(&b),
                Piece::Window { texts, bytes } => match check.check(&texts).await {
                    Ok(()) => sent.extend_from_slice(&bytes),
                    Err(e) => {
                        sent.extend_from_slice(&w.closing());
                        return Checked::Stopped(sent.into(), error_end(&e, protocol));
                    }
                },
            }
        }
        Checked::Pass(sent.into())
    }
}

/// The answer's filters between the attempt and the client: its content policies, then its
/// moderation.
struct Outgoing<'a> {
    policed: Option<Policed<'a>>,
    moderated: Option<Moderated>,
}

impl Outgoing<'_> {
    /// What the client gets of `out` (`end`: the answer's last bytes).
    async fn filter(&mut self, relay: &Relay<'_>, out: Bytes, end: bool) -> Checked {
        let out = match self.policed.as_mut() {
            None => out,
            Some(p) => match p.filter(out, end) {
                Filtered::Pass(b) => b,
                Filtered::Blocked(b) => {
                    return Checked::Stopped(b, content_filter_end(relay.protocol));
                }
            },
        };
        match (self.moderated.as_mut(), relay.moderate) {
            (Some(m), Some(check)) => m.filter(check, relay.protocol, out, end).await,
            _ => Checked::Pass(out),
        }
    }

    /// Bytes held for a whole answer, by either.
    fn held(&self) -> usize {
        let policed = self.policed.as_ref().map_or(0, Policed::held);
        policed.max(self.moderated.as_ref().map_or(0, Moderated::held))
    }
}

/// A whole answer checked once: as it is, or with its content withheld.
async fn whole(check: &OutputCheck, body: &[u8]) -> Bytes {
    let texts = windows::whole_texts(body, check.shape);
    if texts.is_empty() || check.check(&texts).await.is_ok() {
        return Bytes::copy_from_slice(body);
    }
    windows::withheld(body, check.shape)
}

/// What the client was sent, kept while it fits.
enum Capture {
    /// A copy of what the client is sent.
    Copy { bytes: Vec<u8>, limit: usize },
    /// A JSON answer passed through, which the reader keeps for its usage anyway
    /// (`AttemptState::take_json`): only counted here, taken at the end rather than copied.
    Count { len: usize, limit: usize },
}

impl Capture {
    fn new(keep: KeepAnswer, state: &AttemptState) -> Capture {
        if state.keeps_json_up_to(keep.limit) {
            Capture::Count {
                len: 0,
                limit: keep.limit,
            }
        } else {
            Capture::Copy {
                bytes: Vec::new(),
                limit: keep.limit,
            }
        }
    }

    fn push(this: &mut Option<Capture>, out: &[u8]) {
        let fits = match this {
            None => return,
            Some(Capture::Copy { bytes, limit }) => {
                let fits = bytes.len() + out.len() <= *limit;
                if fits {
                    bytes.extend_from_slice(out);
                }
                fits
            }
            Some(Capture::Count { len, limit }) => {
                *len += out.len();
                *len <= *limit
            }
        };
        if !fits {
            *this = None;
        }
    }

    /// The whole answer, once it was delivered.
    fn finish(self, state: &mut AttemptState) -> Option<Vec<u8>> {
        match self {
            Capture::Copy { bytes, .. } => Some(bytes),
            // The reader's copy is whole unless it stopped keeping (a huge answer).
            Capture::Count { len, .. } => state.take_json().filter(|b| b.len() == len),
        }
    }
}

/// A response header held back until the answer is complete, to carry its cost, with the
/// body so far.
struct Held {
    header: Box<ResponseHeader>,
    body: Vec<Bytes>,
    bytes: usize,
}

impl Held {
    fn new(header: Box<ResponseHeader>) -> Self {
        Held {
            header,
            body: Vec::new(),
            bytes: 0,
        }
    }
}

/// The last bytes a stream sent: whether it stopped between events.
#[derive(Default)]
struct Tail {
    bytes: [u8; 4],
    len: usize,
}

impl Tail {
    fn push(&mut self, out: &[u8]) {
        let take = out.len().min(4);
        self.bytes.copy_within(take.., 0);
        self.bytes[4 - take..].copy_from_slice(&out[out.len() - take..]);
        self.len = (self.len + take).min(4);
    }

    /// Nothing sent yet, or the last line sent was blank (the last event is complete).
    fn between_events(&self) -> bool {
        let tail = &self.bytes[4 - self.len..];
        tail.is_empty()
            || [&b"\n\n"[..], b"\r\r", b"\n\r", b"\n\r\n", b"\r\r\n"]
                .iter()
                .any(|end| tail.ends_with(end))
    }
}

/// The comment that ends a stream with its cost (`text`: `pricing::shown`), as an event of
/// its own (a blank line first when the stream stopped inside an event).
fn cost_comment(text: &str, tail: &Tail) -> Bytes {
    let lead = if tail.between_events() { "" } else { "\n" };
    format!("{lead}: {} {text}\n\n", X_TOLLGATE_COST.as_str()).into()
}

impl Relay<'_> {
    /// What the client had been sent: the status, unless the header is still held.
    fn sent(&self, held: &Option<Held>) -> Option<u16> {
        held.is_none().then_some(self.status)
    }

    /// Send `out` to the client, or keep it with the held header (`end`: then send both); a
    /// held answer that grows past `MAX_HELD_BODY` is sent on without its cost.
    async fn write(
        &self,
        session: &mut Session,
        held: &mut Option<Held>,
        out: Bytes,
        end: bool,
    ) -> Result<()> {
        let Some(h) = held else {
            return session.write_response_body(Some(out), end).await;
        };
        h.bytes += out.len();
        h.body.push(out);
        if !end && h.bytes <= MAX_HELD_BODY {
            return Ok(());
        }
        let Some(Held { header, body, .. }) = held.take() else {
            return Ok(());
        };
        session.write_response_header(header, false).await?;
        let last = body.len().saturating_sub(1);
        for (i, chunk) in body.into_iter().enumerate() {
            session
                .write_response_body(Some(chunk), end && i == last)
                .await?;
        }
        Ok(())
    }

    /// Copy the body chunk by chunk through the attempt's filter, watching for the client
    /// leaving; `Err` says how the attempt ended when it did not end well. `held`: the
    /// response header, held for the answer's cost.
    async fn body(
        &self,
        session: &mut Session,
        up: &mut UpstreamSession,
        state: &mut AttemptState,
        mut held: Option<Held>,
    ) -> Result<(), AttemptResult> {
        let mut watch_client = true;
        let commenting = matches!(self.cost, Some((_, CostTold::Comment)));
        let mut tail = Tail::default();
        let mut captured = self.capture.map(|keep| Capture::new(keep, state));
        let mut outgoing = Outgoing {
            policed: self.policy.map(|p| Policed::new(p, self.stream)),
            moderated: self.moderate.map(|m| Moderated::new(m, self.stream)),
        };
        loop {
            let read = tokio::select! {
                biased;
                r = up.read_response_body() => Read::Upstream(r),
                r = session.read_body_or_idle(true), if watch_client => Read::Client(r),
            };
            let (chunk, end) = match read {
                Read::Upstream(Ok(Some(chunk))) => (Some(chunk), false),
                Read::Upstream(Ok(None)) => (None, true),
                Read::Upstream(Err(cause)) => {
                    return Err(self.upstream_failed(session, up, state, &held, cause).await)
                }
                Read::Client(Err(cause)) => {
                    let sent = self.sent(&held);
                    return Err(client_gone(state, up, sent, cause).await);
                }
                // The client's connection has nothing to say about this request any more.
                Read::Client(Ok(_)) => {
                    watch_client = false;
                    continue;
                }
            };
            let out = state.response_body(chunk, end);
            Capture::push(&mut captured, &out);
            let mut out = match outgoing.filter(self, out, end).await {
                Checked::Pass(b) => b,
                Checked::Stopped(b, stop) => {
                    return self.blocked(session, state, &mut held, b, stop).await;
                }
            };
            if !end && outgoing.held() > MAX_HELD_BODY {
                let limit = MAX_HELD_BODY;
                return Err(self.overflowed(session, up, state, limit, &held).await);
            }
            if commenting {
                tail.push(&out);
            }
            if end {
                out = self.with_cost(state, &mut held, out, &tail, commenting);
            }
            if end || !out.is_empty() {
                if let Err(cause) = self.write(session, &mut held, out, end).await {
                    let sent = self.sent(&held);
                    return Err(client_gone(state, up, sent, cause).await);
                }
            }
            if end {
                // Delivered: what the cache may keep (the reader is done with it).
                state.outcome.sent = captured.take().and_then(|c| c.finish(state));
                return Ok(());
            }
            if let Some(limit) = state.overflow(self.max_event_bytes) {
                return Err(self.overflowed(session, up, state, limit, &held).await);
            }
        }
    }

    /// The answer's last bytes with its cost: in the held header, or as a closing comment.
    fn with_cost(
        &self,
        state: &mut AttemptState,
        held: &mut Option<Held>,
        out: Bytes,
        tail: &Tail,
        commenting: bool,
    ) -> Bytes {
        let Some((book, _)) = self.cost.filter(|_| held.is_some() || commenting) else {
            return out;
        };
        let Some(text) = state.price(book) else {
            return out;
        };
        match held {
            Some(h) => {
                let _ = h.header.insert_header(X_TOLLGATE_COST, text);
                out
            }
            None => join(Some(out), cost_comment(&text, tail)),
        }
    }

    /// The upstream failed mid-answer.
    async fn upstream_failed(
        &self,
        session: &mut Session,
        up: &mut UpstreamSession,
        state: &mut AttemptState,
        held: &Option<Held>,
        cause: Box<Error>,
    ) -> AttemptResult {
        up.shutdown().await;
        let error = state.failed(&cause);
        // Tell a stream's reader; the caller then cuts the connection so the client cannot
        // mistake the truncated answer for a complete one. (A held answer sent nothing: the
        // client is answered with the error.)
        if self.stream && held.is_none() {
            let event = error.sse_event(self.protocol);
            let _ = session.write_response_body(Some(event), false).await;
        }
        AttemptResult::Aborted {
            status: self.sent(held),
            error,
            cause,
        }
    }

    /// An output deny rule or the moderation stopped the stream: send what it let through
    /// with the closing chunk, then `end` (the error event), and end the answer (the caller
    /// then drops the upstream, whose answer is not complete). Nothing of it is kept for the
    /// cache.
    async fn blocked(
        &self,
        session: &mut Session,
        state: &mut AttemptState,
        held: &mut Option<Held>,
        out: Bytes,
        end: Bytes,
    ) -> Result<(), AttemptResult> {
        state.ended();
        state.record_usage();
        state.outcome.sent = None;
        let out = join(Some(out), end);
        if let Err(cause) = self.write(session, held, out, true).await {
            return Err(AttemptResult::ClientGone {
                status: self.sent(held),
                cause,
            });
        }
        Ok(())
    }

    /// A provider that never ends its event (or body) must not grow memory without bound:
    /// stop it like a broken stream.
    async fn overflowed(
        &self,
        session: &mut Session,
        up: &mut UpstreamSession,
        state: &mut AttemptState,
        limit: usize,
        held: &Option<Held>,
    ) -> AttemptResult {
        up.shutdown().await;
        let detail = format!("an event or body larger than {limit} bytes");
        let cause = Error::explain(ErrorType::ReadError, detail.clone());
        state.outcome.error = Some(GatewayError::UpstreamBroken {
            provider: state.attempt.provider.name.clone(),
            detail,
        });
        let error = state.failed(&cause);
        if self.stream && held.is_none() {
            // Blank lines first: the client may hold part of the endless event, and the
            // error must be an event of its own.
            let mut event = b"\n\n".to_vec();
            event.extend_from_slice(&error.sse_event(self.protocol));
            let _ = session.write_response_body(Some(event.into()), false).await;
        }
        AttemptResult::Aborted {
            status: self.sent(held),
            error,
            cause,
        }
    }
}

enum Read {
    Upstream(Result<Option<Bytes>>),
    Client(Result<Option<Bytes>>),
}

/// Connect (or reuse a pooled connection), send the request and read the response header,
/// while watching for the client leaving.
async fn send(
    session: &mut Session,
    connector: &Connector,
    peer: &HttpPeer,
    req: Box<RequestHeader>,
    body: Bytes,
    state: &mut AttemptState,
) -> Result<UpstreamSession, Stop> {
    let mut stale = 0;
    loop {
        let (mut up, reused) = connector
            .get_http_session(peer)
            .await
            .map_err(Stop::Upstream)?;
        up.set_read_timeout(peer.options.read_timeout);
        up.set_write_timeout(peer.options.write_timeout);
        state.sending();
        let sent = tokio::select! {
            biased;
            r = request(&mut up, &req, &body) => r,
            r = client_left(session) => {
                up.shutdown().await;
                return Err(Stop::Client(r));
            }
        };
        let Err(mut e) = sent else {
            return Ok(up);
        };
        up.shutdown().await;
        e.retry.decide_reuse(reused);
        if !(reused && e.retry() && stale < STALE_RETRIES) {
            return Err(Stop::Upstream(e));
        }
        stale += 1;
    }
}

/// Resolves with the reason once the client has closed its side (never, otherwise).
async fn client_left(session: &mut Session) -> Box<Error> {
    match session.read_body_or_idle(true).await {
        Err(e) => e,
        Ok(_) => std::future::pending().await,
    }
}

/// Write the request and read the response header (skipping informational ones).
async fn request(up: &mut UpstreamSession, req: &RequestHeader, body: &Bytes) -> Result<()> {
    up.write_request_header(Box::new(req.clone())).await?;
    if !body.is_empty() {
        up.write_request_body(body.clone(), true).await?;
    }
    up.finish_request_body().await?;
    for _ in 0..MAX_INFORMATIONAL {
        up.read_response_header().await?;
        let informational = up
            .response_header()
            .is_some_and(|h| h.status.is_informational());
        if !informational {
            return Ok(());
        }
    }
    Error::e_explain(
        ErrorType::InvalidHTTPHeader,
        "too many informational responses",
    )
}

/// Read a held-back error body: its first bytes for the message, the rest to keep the
/// connection reusable (up to a bound).
async fn drain(up: &mut UpstreamSession) -> Bytes {
    let mut kept = Vec::new();
    let mut read = 0;
    while read <= DRAIN_ERROR_BODY {
        match up.read_response_body().await {
            Ok(Some(chunk)) => {
                read += chunk.len();
                let room = KEEP_ERROR_BODY.saturating_sub(kept.len());
                kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Ok(None) | Err(_) => break,
        }
    }
    kept.into()
}

/// Give a finished connection back to the pool, or close one that is not.
async fn finish(connector: &Connector, mut up: UpstreamSession, peer: &HttpPeer) {
    if up.response_done() {
        connector
            .release_http_session(up, peer, peer.options.idle_timeout)
            .await;
    } else {
        up.shutdown().await;
    }
}

/// The provider's response header as the client's connection can carry it: Pingora writes
/// (and an HTTP/1 client reads) only HTTP/1.1 headers, and an HTTP/2 answer has no framing
/// header of its own, so a body without a length is sent chunked.
fn for_client(resp: &mut ResponseHeader) {
    resp.set_version(http::Version::HTTP_11);
    let bodiless = matches!(resp.status.as_u16(), 204 | 304);
    let framed = resp.headers.contains_key(http::header::CONTENT_LENGTH)
        || resp.headers.contains_key(http::header::TRANSFER_ENCODING);
    if !bodiless && !framed {
        let _ = resp.insert_header(http::header::TRANSFER_ENCODING, "chunked");
    }
}

/// The request id and the gateway's own headers on the client's response. All are valid
/// header values (the request id is checked when it is taken from the client).
fn decorate(resp: &mut ResponseHeader, request_id: &str, extra: &[super::exchange::ExtraHeader]) {
    let _ = resp.insert_header(REQUEST_ID, request_id);
    for (name, value) in extra {
        let _ = resp.insert_header(*name, value.clone());
    }
}

async fn client_gone(
    state: &mut AttemptState,
    up: &mut UpstreamSession,
    status: Option<u16>,
    cause: Box<Error>,
) -> AttemptResult {
    up.shutdown().await;
    state.ended();
    state.record_usage();
    AttemptResult::ClientGone { status, cause }
}

fn failed_attempt(
    state: &AttemptState,
    end: AttemptEnd,
    error: Option<GatewayError>,
) -> FailedAttempt {
    FailedAttempt {
        provider: state.attempt.provider.clone(),
        key_index: state.attempt.key_index,
        end,
        error,
        body: Bytes::new(),
        retry_after: None,
    }
}

fn failure(state: &AttemptState, end: AttemptEnd, error: Option<GatewayError>) -> AttemptResult {
    AttemptResult::Failed(failed_attempt(state, end, error))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn after(sent: &[&[u8]]) -> String {
        let mut tail = Tail::default();
        for chunk in sent {
            tail.push(chunk);
        }
        String::from_utf8(cost_comment("0.5 USD", &tail).to_vec()).unwrap()
    }

    #[test]
    fn the_cost_comment_is_an_event_of_its_own() {
        let own = ": x-tollgate-cost 0.5 USD\n\n";
        // Between events (LF, CRLF, CR), or nothing sent: the comment alone.
        for sent in [
            &[][..],
            &[&b"data: [DONE]\n\n"[..]],
            &[b"data: [DONE]\r\n\r\n"],
            &[b"data: x\r\r"],
            &[b"data: [DONE]\n", b"\n"],
            &[b"event: message_stop\ndata: {}\n\n", b""],
            &[b"data: [DONE]\r\n", b"\r", b"\n"],
        ] {
            assert_eq!(after(sent), own, "{sent:?}");
        }
        // Inside an event (a provider that did not end its last one): a line break first,
        // which ends that event after the comment line.
        for sent in [
            &[&b"data: [DONE]"[..]][..],
            &[b"data: [DONE]\n"],
            &[b"data: [DONE]\r\n"],
            &[b"\n\n", b"data: x"],
        ] {
            assert_eq!(after(sent), format!("\n{own}"), "{sent:?}");
        }
    }
}
