//! Client-connection policy, in front of the proxy and admin apps: a cap on concurrent
//! connections, a total deadline for each request header, the keep-alive idle timeout,
//! HTTP/1.1 pipelining, and the process-wide budget for request bodies held in memory.
//!
//! Pingora's own knobs cover part of this: its keep-alive timeout applies to each read
//! between requests (and is infinite by default once an HTTP/1.1 request was read), and its
//! read timeout to each read of a header or body, so a client sending a byte just before
//! each timeout is never cut off. The total deadlines are kept here instead.
//!
//! `Capped` is the Pingora `ServerApp` for a listener: it counts connections and runs each
//! one through `Guarded`, the `HttpServerApp` that bounds every request header and hands the
//! request to the wrapped app. Whether a request's header has arrived is told by the app
//! (`header_received`, from the proxy's `new_ctx` and the admin app's `response`), through
//! a task-local value scoped to the connection's task.

use crate::runtime::SharedConfig;
use async_trait::async_trait;
use pingora_core::apps::{HttpServerApp, HttpServerOptions, ReusedHttpStream, ServerApp};
use pingora_core::protocols::http::v2::server::H2Options;
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::Stream;
use pingora_core::server::ShutdownWatch;
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Per-connection state, in the connection's task.
struct ConnState {
    /// Requests started on this connection.
    requests: Cell<u32>,
    /// The current request's header has been read.
    header_seen: Cell<bool>,
}

tokio::task_local! {
    static CONN: ConnState;
}

/// Called by an app once a request's header has been read: its header deadline no longer
/// applies. A no-op outside a connection guarded here (HTTP/2 streams, tests).
pub fn header_received() {
    let _ = CONN.try_with(|c| c.header_seen.set(true));
}

/// Runs each request of a connection with a deadline for its header, the configured
/// keep-alive idle timeout, and pipelining on.
pub struct Guarded<A> {
    pub app: Arc<A>,
    pub config: SharedConfig,
    /// On shutdown, how long connections accepted just before the accept loop stopped get
    /// to deliver their request header before the app drops waiting connections.
    pub drain: Duration,
}

#[async_trait]
impl<A: HttpServerApp + Send + Sync + 'static> HttpServerApp for Guarded<A> {
    async fn process_new_http(
        self: &Arc<Self>,
        mut session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        let Ok(first) = CONN.try_with(|c| {
            let n = c.requests.get();
            c.requests.set(n.saturating_add(1));
            c.header_seen.set(false);
            n == 0
        }) else {
            // An HTTP/2 stream: its header is already read.
            return self.app.process_new_http(session, shutdown).await;
        };
        let client = self.config.load().client;
        if session.get_keepalive().is_some() {
            // Each read between requests waits at most this long (Pingora closes the
            // connection quietly when it passes).
            session.set_keepalive(Some(client.keepalive_timeout.as_secs().max(1)));
        }
        // Requests sent back to back are answered in order (RFC 9112 §9.3.2) instead of the
        // connection being closed when bytes follow a request.
        session.set_pipelining_enabled(true);
        // A new connection has `header_timeout` to send its first header; a reused one may
        // first stay idle for the keep-alive timeout.
        let deadline = match first {
            true => client.header_timeout,
            false => client.keepalive_timeout + client.header_timeout,
        };
        let serve = self.app.process_new_http(session, shutdown);
        tokio::pin!(serve);
        tokio::select! {
            biased;
            reused = &mut serve => return reused,
            () = tokio::time::sleep(deadline) => {}
        }
        if CONN.try_with(|c| c.header_seen.get()).unwrap_or(true) {
            serve.await
        } else {
            // Header deadline passed: dropping the session closes the connection.
            log::debug!("request header not received within {deadline:?}: closing");
            None
        }
    }

    fn h2_options(&self) -> Option<H2Options> {
        self.app.h2_options()
    }

    fn server_options(&self) -> Option<&HttpServerOptions> {
        self.app.server_options()
    }

    async fn http_cleanup(&self) {
        if !self.drain.is_zero() {
            tokio::time::sleep(self.drain).await;
        }
        self.app.http_cleanup().await;
    }
}

/// A listener's app: at most `max` client connections at once; one more is closed at once.
pub struct Capped<A> {
    pub app: Arc<A>,
    /// Connections open now (shared with `lifecycle`, which waits for them at shutdown).
    pub open: Arc<AtomicUsize>,
    pub max: usize,
    /// Connections are being refused (logged once per episode, not per connection).
    refusing: AtomicBool,
}

impl<A> Capped<A> {
    /// The count of this listener kind's open connections.
    pub fn connections(&self) -> Arc<AtomicUsize> {
        self.open.clone()
    }

    pub fn new(app: A, max: usize) -> Self {
        Capped {
            app: Arc::new(app),
            open: Arc::default(),
            max,
            refusing: AtomicBool::new(false),
        }
    }
}

/// Gives a connection slot back when the connection ends, however it ends.
struct Slot<'a>(&'a AtomicUsize);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Capped<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        if self.open.fetch_add(1, Ordering::AcqRel) >= self.max {
            self.open.fetch_sub(1, Ordering::AcqRel);
            if !self.refusing.swap(true, Ordering::Relaxed) {
                log::warn!(
                    "refusing client connections: {} open (client.max_connections)",
                    self.max
                );
            }
            // Dropping the stream closes it.
            return None;
        }
        if self.refusing.load(Ordering::Relaxed) {
            self.refusing.store(false, Ordering::Relaxed);
        }
        let _slot = Slot(&self.open);
        let state = ConnState {
            requests: Cell::new(0),
            header_seen: Cell::new(false),
        };
        CONN.scope(state, self.app.process_new(stream, shutdown))
            .await
    }

    async fn cleanup(&self) {
        self.app.cleanup().await;
    }
}

/// Bytes of request bodies held in memory by this process.
static BODY_BYTES: AtomicUsize = AtomicUsize::new(0);

/// The process-wide total of request body bytes held in memory right now.
pub fn body_bytes_held() -> usize {
    BODY_BYTES.load(Ordering::Relaxed)
}

/// A request's share of the body budget; given back when dropped (when the request ends).
#[derive(Debug, Default)]
pub struct BodyHold {
    bytes: usize,
}

/// The budget is full.
#[derive(Debug, Clone, Copy)]
pub struct BudgetFull;

impl BodyHold {
    /// Take `n` more bytes, unless the process would then hold more than `budget`.
    pub fn grow(&mut self, n: usize, budget: usize) -> Result<(), BudgetFull> {
        let before = BODY_BYTES.fetch_add(n, Ordering::AcqRel);
        if before.saturating_add(n) > budget {
            BODY_BYTES.fetch_sub(n, Ordering::AcqRel);
            return Err(BudgetFull);
        }
        self.bytes += n;
        Ok(())
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for BodyHold {
    fn drop(&mut self) {
        if self.bytes > 0 {
            BODY_BYTES.fetch_sub(self.bytes, Ordering::AcqRel);
        }
    }
}

/// How long a client refused for a full body budget is told to wait.
pub const BUSY_RETRY_AFTER: Duration = Duration::from_secs(1);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_budget_is_given_back() {
        let base = body_bytes_held();
        let big = usize::MAX / 4;
        let mut a = BodyHold::default();
        a.grow(100, big).unwrap();
        assert!(body_bytes_held() >= base + 100);
        let mut b = BodyHold::default();
        // Other tests may hold some; a budget of exactly what is held refuses one more byte.
        assert!(b.grow(1, body_bytes_held()).is_err());
        assert_eq!(b.bytes(), 0);
        drop(a);
        drop(b);
    }
}
