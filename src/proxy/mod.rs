//! The Pingora `ProxyHttp` implementation: each phase a few lines that delegate.
//!
//! A client request is served entirely from `request_filter` by `pipeline`, stage by stage
//! (`routing`, `ingress`, `admission`, `attempts`), because Pingora's own upstream phases run
//! once per request with one upstream and can re-send only a body kept in its 64 KiB retry
//! buffer, while failover needs several attempts, on any status, with bodies of any size.
//! `retry` is the retry loop as a generic over an attempt order and a budget. An attempt has
//! the same steps as Pingora's phases, in `attempt` (upstream request header, rewritten body,
//! response header, each response body chunk: metering, translation), driven by `pipe` over
//! Pingora's pooled `Connector`. `logging` runs `accounting`: access log, metrics, and the
//! settling of what admission reserved. `exchange` is the record the stages fill in.
//! `models_api` and `quota_api` are the gateway's own answers under a route's path;
//! `responses_api` serves the calls on a stored response (Responses API) in one attempt;
//! `files_api` OpenAI's files and batches calls, each on the provider and key that made the
//! object.

pub mod accounting;
pub mod admission;
pub mod attempt;
pub mod attempts;
pub mod budgets;
pub mod cache;
pub mod count_tokens;
pub mod exchange;
mod exhausted;
pub mod files_api;
pub mod ingress;
pub mod loopback;
pub mod models_api;
pub mod moderation_output;
pub mod pipe;
pub mod pipeline;
pub mod plan;
pub mod policies;
pub mod prompts;
pub mod quota_api;
pub mod respond;
pub mod responses_api;
pub mod retry;
pub mod routing;

use crate::access_log::AccessLog;
use crate::runtime::SharedConfig;
use async_trait::async_trait;
use exchange::Exchange;
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
    pub analytics: Arc<crate::analytics::Analytics>,
    pub backends: Arc<crate::state::Backends>,
    /// Upstream connections, pooled per provider address.
    pub connector: Connector,
}

pub enum Ctx {
    /// Before `request_filter` has decided what this request is.
    New(Instant),
    Client(Box<Exchange>),
}

/// `x-request-id` as responses and upstream requests are given it (static text:
/// `exchange::ExtraHeader`).
pub const REQUEST_ID: &str = "x-request-id";

/// `x-request-id`, made at compile time, to look up.
pub const X_REQUEST_ID: http::HeaderName = http::HeaderName::from_static(REQUEST_ID);

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
        let mut x = Box::new(Exchange::new(
            self.config.load_full(),
            self.backends.clone(),
            request_id(session),
            started,
        ));
        if let Some(tracing) = &x.config.tracing {
            let headers = &session.req_header().headers;
            x.trace = Some(crate::otel::RequestTrace::start(tracing, headers, started));
        }
        let result = pipeline::serve(&mut x, session, &self.connector).await;
        *ctx = Ctx::Client(x);
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
            Ctx::Client(x) => x.status,
            Ctx::New(_) => None,
        };
        if code.is_none() && session.response_written().is_none() {
            let err = crate::error::GatewayError::Internal(e.etype().as_str().to_string());
            let _ = respond::error(
                session,
                &err,
                "",
                crate::protocol::ClientProtocol::OpenAi,
                &[],
            )
            .await;
        }
        FailToProxy {
            error_code: code.unwrap_or(0),
            can_reuse_downstream: false,
        }
    }

    fn suppress_error_log(&self, _session: &Session, ctx: &Ctx, _error: &Error) -> bool {
        // Failures are reported once, by the request's access-log line.
        matches!(ctx, Ctx::Client(x) if x.error.is_some())
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut Ctx) {
        if let Ctx::Client(x) = ctx {
            accounting::account(&self.access_log, &self.analytics, session, x).await;
        }
    }
}
