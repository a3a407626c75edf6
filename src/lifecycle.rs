//! The process's start and end, as operators see them.
//!
//! At start: one line per listener once it listens ("listening on 127.0.0.1:8080 (proxy)"),
//! logged by `Announced`, a wrapper of a listening service that watches Pingora's table of
//! listening sockets (an address appears there once bound and listening, or at once when
//! taken over from the previous process). The line names the address actually bound (read
//! from the socket), so a listener configured on port 0 reports the port the system chose.
//! Once every listener listens, `StartReport` logs one machine-readable line
//! (`ready {"instance":..,"pid":..,"listeners":[..]}`) and, with `--ready-file PATH`, writes
//! the same JSON to PATH (atomically). `instance_id()` is this process's identity, also
//! returned by `GET /healthz` on the proxy and admin listeners (`instance`).
//!
//! At the end: Pingora, after SIGTERM (at once) or after SIGQUIT (once its 5 s hand-over
//! window has passed), broadcasts the shutdown: the listeners stop accepting, requests in
//! flight go on, idle keep-alive connections are closed (the proxy's after
//! `server::DRAIN_ACCEPTED`). Pingora itself would then sleep the whole
//! `server.grace_period_seconds` whatever is in flight. `Lifecycle` instead watches the
//! client connections of every listener (`conn::Capped`) and the quota charges waiting for
//! Redis; when none is left, or when the grace period is over, it flushes the access log
//! and the embedded store and exits the process with status 0. An idle gateway therefore
//! stops within a fraction of a second of SIGTERM, a busy one when its last request ends.
//! Nothing changes before the broadcast: during an upgrade's hand-over window the old
//! process keeps accepting on the shared sockets until the new one has taken over.

use crate::access_log::AccessLog;
use crate::state::Backends;
use async_trait::async_trait;
use pingora_core::server::{ExecutionPhase, ListenFds, ShutdownWatch};
use pingora_core::services::background::BackgroundService;
use pingora_core::services::Service;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

/// How often the drain looks at what is still in flight.
const POLL: Duration = Duration::from_millis(20);
/// Longest wait for the access log and the store to be flushed at exit.
const FLUSH_WITHIN: Duration = Duration::from_secs(5);
/// How often the start-up log looks whether a listener is bound.
const LISTEN_POLL: Duration = Duration::from_millis(2);

/// One listener, as the start-up log names it.
#[derive(Clone)]
pub struct ListenerInfo {
    pub address: String,
    /// "proxy", "proxy, TLS", "admin", ...
    pub what: String,
}

/// A listening service that logs "listening on ADDRESS (WHAT)" for each of its listeners
/// once it listens, and tells `report`.
pub struct Announced<S> {
    pub inner: S,
    pub listeners: Vec<ListenerInfo>,
    pub report: Arc<StartReport>,
}

#[async_trait]
impl<S: Service> Service for Announced<S> {
    async fn start_service(
        &mut self,
        fds: Option<ListenFds>,
        shutdown: ShutdownWatch,
        listeners_per_fd: usize,
    ) {
        let listeners = std::mem::take(&mut self.listeners);
        let table = fds.clone();
        let report = self.report.clone();
        let announce = tokio::spawn(async move {
            for l in listeners {
                let mut bound = None;
                if let Some(table) = &table {
                    loop {
                        if let Some(fd) = table.lock().get(&l.address) {
                            bound = local_addr(*fd);
                            break;
                        }
                        tokio::time::sleep(LISTEN_POLL).await;
                    }
                }
                let actual = bound.map_or_else(|| l.address.clone(), |a| a.to_string());
                log::info!("listening on {actual} ({})", l.what);
                report.listening(&l, &actual);
            }
        });
        self.inner
            .start_service(fds, shutdown, listeners_per_fd)
            .await;
        announce.abort();
    }

    fn name(&self) -> &str {
        self.inner.name()
    }

    fn threads(&self) -> Option<usize> {
        self.inner.threads()
    }

    fn runtime_opts_override(
        &self,
        global: &pingora_core::server::RuntimeOpts,
    ) -> Option<pingora_core::server::RuntimeOpts> {
        self.inner.runtime_opts_override(global)
    }

    fn listen_addresses(&self) -> Option<Vec<String>> {
        self.inner.listen_addresses()
    }
}

pub struct Lifecycle {
    /// Started with `-u`: the sockets came from the previous process.
    pub upgrade: bool,
    /// Open client connections, one counter per listener kind.
    pub connections: Vec<Arc<AtomicUsize>>,
    pub access_log: Arc<AccessLog>,
    pub analytics: Arc<crate::analytics::Analytics>,
    pub backends: Arc<Backends>,
    /// `server.grace_period_seconds`.
    pub grace: Duration,
    /// After the broadcast, how long connections accepted just before it get to register
    /// (a TLS handshake happens before the connection is counted).
    pub settle: Duration,
    /// Pingora's execution phases, for the log.
    pub phases: Mutex<Option<broadcast::Receiver<ExecutionPhase>>>,
}

impl Lifecycle {
    fn open(&self) -> usize {
        self.connections
            .iter()
            .map(|c| c.load(Ordering::Acquire))
            .sum()
    }

    /// Wait for requests in flight (at most the grace period), flush, exit.
    async fn drain(&self) -> ! {
        let deadline = Instant::now() + self.grace;
        tokio::time::sleep(self.settle.min(self.grace)).await;
        let (open, charges) = (self.open(), crate::quota::pending_charges());
        if open > 0 || charges > 0 {
            log::info!(
                "shutting down: waiting up to {}s (server.grace_period_seconds) for {open} \
                 client connection(s){}",
                self.grace.as_secs(),
                pending(charges)
            );
        } else {
            log::info!("shutting down: nothing in flight");
        }
        loop {
            let (open, charges) = (self.open(), crate::quota::pending_charges());
            if open == 0 && charges == 0 {
                break;
            }
            if Instant::now() >= deadline {
                log::warn!(
                    "grace period over: closing {open} client connection(s){}",
                    pending(charges)
                );
                if charges > 0 {
                    log::error!(
                        "{charges} quota or budget charge(s) were never committed (Redis \
                         unreachable, or the embedded store failing) and are lost"
                    );
                }
                break;
            }
            tokio::time::sleep(POLL).await;
        }
        if !self.access_log.flush(FLUSH_WITHIN).await {
            log::warn!("the access log was not flushed within {FLUSH_WITHIN:?}");
        }
        let analytics = self.analytics.clone();
        let flushed = tokio::task::spawn_blocking(move || analytics.flush(FLUSH_WITHIN)).await;
        if !flushed.unwrap_or(false) {
            log::warn!("the usage rollups were not flushed within {FLUSH_WITHIN:?}");
        }
        if !crate::otel::flush(FLUSH_WITHIN).await {
            log::warn!("traces were not exported within {FLUSH_WITHIN:?}");
        }
        if let Some(local) = self.backends.opened().and_then(|s| s.local.clone()) {
            match tokio::time::timeout(FLUSH_WITHIN, local.flush()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => log::error!("store: final flush failed: {e}"),
                Err(_) => log::error!("store: final flush did not finish in {FLUSH_WITHIN:?}"),
            }
        }
        log::info!("stopped");
        std::process::exit(0)
    }
}

fn pending(charges: usize) -> String {
    match charges {
        0 => String::new(),
        n => format!(" and {n} quota or budget charge(s) waiting to be committed"),
    }
}

/// The next execution phase, or never once the channel is gone.
async fn next_phase(rx: &mut Option<broadcast::Receiver<ExecutionPhase>>) -> ExecutionPhase {
    loop {
        let Some(r) = rx.as_mut() else {
            return std::future::pending().await;
        };
        match r.recv().await {
            Ok(phase) => return phase,
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => *rx = None,
        }
    }
}

#[async_trait]
impl BackgroundService for Lifecycle {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut phases = self.phases.lock().ok().and_then(|mut g| g.take());
        if self.upgrade {
            log::info!("took over the listening sockets of the previous process");
        }
        while !*shutdown.borrow() {
            tokio::select! {
                changed = shutdown.changed() => {
                    if changed.is_err() {
                        // The server is gone without a broadcast (fast shutdown).
                        return;
                    }
                }
                phase = next_phase(&mut phases) => match phase {
                    ExecutionPhase::GracefulUpgradeTransferringFds => log::info!(
                        "SIGQUIT: handing the listening sockets to the new process"
                    ),
                    ExecutionPhase::GracefulUpgradeCloseTimeout => log::info!(
                        "serving 5 s more while the new process takes over, then draining"
                    ),
                    _ => {}
                },
            }
        }
        self.drain().await
    }
}

/// The address a listening socket is bound to (its port when configured as 0).
fn local_addr(fd: std::os::fd::RawFd) -> Option<std::net::SocketAddr> {
    use nix::sys::socket::{getsockname, SockaddrStorage};
    let addr: SockaddrStorage = getsockname(fd).ok()?;
    if let Some(v4) = addr.as_sockaddr_in() {
        return Some(std::net::SocketAddr::from(*v4));
    }
    addr.as_sockaddr_in6()
        .map(|v6| std::net::SocketAddr::from(*v6))
}

/// The proxy listeners as bound: address, TLS.
static PROXY_BOUND: Mutex<Vec<(String, bool)>> = Mutex::new(Vec::new());

/// Where this process's proxy listener answers on loopback (a plain one when there is one):
/// `http://127.0.0.1:PORT` or `https://…` (for the console's playground).
pub fn proxy_loopback_url() -> Option<String> {
    let bound = PROXY_BOUND.lock().ok()?;
    let (addr, tls) = bound
        .iter()
        .find(|(_, tls)| !tls)
        .or_else(|| bound.first())?;
    let addr: std::net::SocketAddr = addr.parse().ok()?;
    let host = match addr.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => "127.0.0.1".to_string(),
        ip if ip.is_unspecified() => "[::1]".to_string(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    let scheme = if *tls { "https" } else { "http" };
    Some(format!("{scheme}://{host}:{}", addr.port()))
}

/// The start-up report: once every listener listens, one log line
/// `ready {"instance":ID,"pid":PID,"listeners":[{"configured":..,"address":..,"what":..}]}`
/// and, with `--ready-file PATH`, the same JSON written to PATH (a temporary file renamed into
/// place, so a reader never sees half of it).
pub struct StartReport {
    path: Option<PathBuf>,
    /// One slot per listener, in config order (proxy listeners, then admin).
    slots: Mutex<Vec<(ListenerInfo, Option<String>)>>,
}

impl StartReport {
    pub fn new(path: Option<PathBuf>, listeners: &[ListenerInfo]) -> Arc<Self> {
        let slots = listeners.iter().map(|l| (l.clone(), None)).collect();
        Arc::new(StartReport {
            path,
            slots: Mutex::new(slots),
        })
    }

    fn listening(&self, l: &ListenerInfo, actual: &str) {
        if l.what.starts_with("proxy") {
            if let Ok(mut bound) = PROXY_BOUND.lock() {
                bound.push((actual.to_string(), l.what.contains("TLS")));
            }
        }
        let Ok(mut slots) = self.slots.lock() else {
            return;
        };
        if let Some(slot) = slots
            .iter_mut()
            .find(|(s, bound)| s.address == l.address && bound.is_none())
        {
            slot.1 = Some(actual.to_string());
        }
        if slots.iter().any(|(_, bound)| bound.is_none()) {
            return;
        }
        let listeners: Vec<serde_json::Value> = slots
            .iter()
            .map(|(l, bound)| {
                serde_json::json!({"configured": l.address, "address": bound, "what": l.what})
            })
            .collect();
        let report = serde_json::json!({
            "instance": crate::instance::id(),
            "pid": std::process::id(),
            "listeners": listeners,
        });
        log::info!("ready {report}");
        if let Some(path) = &self.path {
            let tmp = path.with_extension("tmp");
            let written = std::fs::write(&tmp, format!("{report}\n"))
                .and_then(|()| std::fs::rename(&tmp, path));
            if let Err(e) = written {
                log::error!("--ready-file {}: {e}", path.display());
            }
        }
    }
}
