//! The Pingora `ProxyHttp` implementation: each phase a few lines that delegate.
//!
//! A client request is served entirely from `request_filter` (`client`): it reads the body,
//! routes it, picks provider and key, and runs each upstream attempt itself (`pipe`), because
//! Pingora's own upstream phases run once per request with one upstream and can re-send only
//! a body kept in its 64 KiB retry buffer, while failover needs several attempts, on any
//! status, with bodies of any size. An attempt has the same steps as those phases, in
//! `attempt`: the upstream request header (path, key), the rewritten request body, the
//! response header, and each response body chunk (token metering, translation), driven
//! over Pingora's pooled `Connector` with no second session per attempt. `logging` writes
//! the access log and metrics and settles what admission reserved.
//!
//! `admission` decides who may go ahead (client IP, rate limits at admission and per provider
//! key, the consumer's quota) and settles reservations in `logging`; `quota_api` answers the
//! Higress-compatible quota API under a route's chat path.

pub mod admission;
pub mod attempt;
pub mod client;
mod exhausted;
pub mod models_api;
pub mod pipe;
pub mod plan;
pub mod quota_api;
pub mod respond;

use crate::access_log::{AccessLog, Entry};
use crate::config::SharedConfig;
use crate::metrics::METRICS;
use crate::usage::{estimate_tokens, Usage};
use async_trait::async_trait;
use client::ClientRequest;
use pingora_core::connectors::http::Connector;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorType, Result};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

pub struct Tollgate {
    pub config: SharedConfig,
    pub access_log: Arc<AccessLog>,
    pub backends: Arc<crate::store::Backends>,
    /// Upstream connections, pooled per provider address.
    pub connector: Connector,
}

pub enum Ctx {
    /// Before `request_filter` has decided what this request is.
    New(Instant),
    Client(Box<Client>),
}

pub struct Client {
    pub started: Instant,
    pub request_id: String,
    pub req: ClientRequest,
}

/// `x-request-id`, made at compile time.
pub const X_REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");

static REQUEST_SEQ: AtomicU64 = AtomicU64::new(0);

/// This process's id, read once: `std::process::id()` is a `getpid` system call every time.
/// First read on the first request, so after Pingora has daemonised (forked).
static PID: once_cell::sync::Lazy<u32> = once_cell::sync::Lazy::new(std::process::id);

/// The client's `x-request-id` when it is a sane token, else a new one.
fn request_id(session: &Session) -> String {
    let given = session
        .req_header()
        .headers
        .get(X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128);
    match given {
        Some(id) => id.to_string(),
        None => format!(
            "tg-{:x}-{:x}",
            *PID,
            REQUEST_SEQ.fetch_add(1, Ordering::Relaxed)
        ),
    }
}

#[async_trait]
impl ProxyHttp for Tollgate {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        // Called right after the request header was read: its deadline is met.
        crate::conn::header_received();
        Ctx::New(Instant::now())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        if respond::healthz(session).await? {
            return Ok(true);
        }
        let started = match ctx {
            Ctx::New(t) => *t,
            Ctx::Client(_) => Instant::now(),
        };
        let mut client = Box::new(Client {
            started,
            request_id: request_id(session),
            req: ClientRequest::new(self.config.load_full(), self.backends.clone()),
        });
        let result = client
            .req
            .serve(session, &client.request_id, &self.connector)
            .await;
        *ctx = Ctx::Client(client);
        result.map(|()| true)
    }

    /// Never reached: `request_filter` answers every request itself.
    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        Error::e_explain(ErrorType::InternalError, "no upstream for a client request")
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        // A client request answers its own errors; what reaches here is a dead client
        // connection or a response already under way.
        let code = match ctx {
            Ctx::Client(c) => c.req.status,
            Ctx::New(_) => 0,
        };
        if code == 0 && session.response_written().is_none() {
            let err = crate::error::GatewayError::Internal(e.etype().as_str().to_string());
            let _ = respond::error(session, &err, "", false, &[]).await;
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    fn suppress_error_log(&self, _session: &Session, ctx: &Ctx, _error: &Error) -> bool {
        // Failures are reported once, by the request's access-log line.
        matches!(ctx, Ctx::Client(c) if c.req.error.is_some())
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut Ctx) {
        if let Ctx::Client(c) = ctx {
            let usage = final_usage(&c.req).unwrap_or_default();
            self.log_request(session, c, &usage);
            let used = crate::limits::Used {
                input: usage.input_tokens,
                output: usage.output_tokens,
            };
            c.req.settle(used).await;
        }
    }
}

fn ms(from: Instant, to: Option<Instant>) -> Option<f64> {
    to.map(|t| t.saturating_duration_since(from).as_secs_f64() * 1000.0)
}

/// Usage as reported, or estimated from the request and the delivered text when the
/// provider reported none; every count clamped to `MAX_TOKENS_PER_REQUEST` (logged).
fn final_usage(req: &ClientRequest) -> Option<Usage> {
    let mut usage = req.outcome.usage?;
    if usage.estimated && usage.input_tokens == 0 {
        if let Some(body) = &req.body {
            usage.input_tokens = estimate_tokens(&String::from_utf8_lossy(&body.bytes));
        }
    }
    let reported = usage;
    if usage.clamp() {
        let provider = req.provider.as_ref().map_or("", |p| p.name.as_str());
        crate::usage::warn_clamped(provider, &reported);
    }
    Some(usage)
}

impl Tollgate {
    fn log_request(&self, session: &Session, c: &Client, usage: &Usage) {
        let req = &c.req;
        let end = Instant::now();
        let route = req.route_name();
        let provider = req.provider.as_ref().map(|p| p.name.as_str());
        let model = req.model.as_deref();
        // Labels come from the config only (see `crate::metrics`).
        let model_label = req.model_label();
        let status = if req.status == 0 {
            session
                .response_written()
                .map(|h| h.status.as_u16())
                .unwrap_or(0)
        } else {
            req.status
        };

        let labels = [route.unwrap_or(""), provider.unwrap_or(""), model_label];
        let series = req.consumer.as_deref().and_then(|c| {
            let known = req.config.consumer_series.as_ref()?;
            Some(if known.contains(c) { c } else { "other" })
        });
        if let Some(consumer) = series {
            METRICS
                .consumer_input_tokens
                .with_label_values(&[consumer])
                .inc_by(usage.input_tokens);
            METRICS
                .consumer_output_tokens
                .with_label_values(&[consumer])
                .inc_by(usage.output_tokens);
        }
        let total = end.duration_since(c.started);
        if provider.is_some() {
            // Cached handles: no label hashing or registry lock per request.
            let s = crate::metrics::request_series(labels[0], labels[1], labels[2]);
            s.request(status);
            s.tokens(
                usage.input_tokens,
                usage.output_tokens,
                usage.cached_input_tokens,
                usage.reasoning_tokens,
            );
            s.duration.observe(total.as_secs_f64());
            s.overhead
                .observe(total.saturating_sub(req.upstream_time).as_secs_f64());
            if let Some(t) = req.outcome.first_token {
                s.ttft
                    .observe(t.saturating_duration_since(c.started).as_secs_f64());
            }
        } else {
            let status_label = status.to_string();
            METRICS
                .requests
                .with_label_values(&[labels[0], labels[1], labels[2], status_label.as_str()])
                .inc();
        }

        let time = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
        let header = session.req_header();
        self.access_log.write(&Entry {
            time,
            request_id: &c.request_id,
            method: header.method.as_str(),
            path: header.uri.path(),
            route,
            consumer: req.consumer.as_deref(),
            endpoint: req.endpoint.map(|e| e.as_str()),
            provider,
            key: req.key_name(),
            model,
            upstream_model: req.upstream_model.as_deref(),
            stream: req.stream,
            status,
            input_tokens: usage.input_tokens,
            output_tokens: usage.output_tokens,
            cached_tokens: usage.cached_input_tokens,
            reasoning_tokens: usage.reasoning_tokens,
            usage_estimated: usage.estimated,
            ttfb_ms: ms(c.started, req.outcome.first_byte),
            ttft_ms: ms(c.started, req.outcome.first_token),
            duration_ms: end.duration_since(c.started).as_secs_f64() * 1000.0,
            overhead_ms: end
                .duration_since(c.started)
                .saturating_sub(req.upstream_time)
                .as_secs_f64()
                * 1000.0,
            retries: req.retries,
            error: req.error.as_ref().map(|e| e.code()),
        });
    }
}
