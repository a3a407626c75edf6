//! The process's start and end, as operators see them.
//!
//! At start: one line per listener once it listens ("listening on 127.0.0.1:8080 (proxy)"),
//! logged by `Announced`, a wrapper of a listening service that watches Pingora's table of
//! listening sockets (an address appears there once bound and listening, or at once when
//! taken over from the previous process).
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
pub struct ListenerInfo {
    pub address: String,
    /// "proxy", "proxy, TLS", "admin", ...
    pub what: String,
}

/// A listening service that logs "listening on ADDRESS (WHAT)" for each of its listeners
/// once it listens.
pub struct Announced<S> {
    pub inner: S,
    pub listeners: Vec<ListenerInfo>,
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
        let announce = tokio::spawn(async move {
            for l in listeners {
                if let Some(table) = &table {
                    while table.lock().get(&l.address).is_none() {
                        tokio::time::sleep(LISTEN_POLL).await;
                    }
                }
                log::info!("listening on {} ({})", l.address, l.what);
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
                    log::error!("{charges} quota charge(s) never reached Redis and are lost");
                }
                break;
            }
            tokio::time::sleep(POLL).await;
        }
        if !self.access_log.flush(FLUSH_WITHIN).await {
            log::warn!("the access log was not flushed within {FLUSH_WITHIN:?}");
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
        n => format!(" and {n} quota charge(s) waiting for Redis"),
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
