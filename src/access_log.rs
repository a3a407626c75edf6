//! The JSON access log, written off the request path.
//!
//! A request formats its line and `try_send`s it into a bounded channel; a writer thread
//! (started as a Pingora background service, so it survives daemonising) polls the channel
//! and drains it into a buffered file or stdout. A slow disk never stalls a request: when the channel is
//! full the line is dropped and `tollgate_access_log_dropped_total` counts it.
//!
//! `flush` (used at shutdown) sends an empty line as a marker through the same queue: the
//! writer flushes when it reaches it, so every line queued before is then on disk.

use crate::metrics::METRICS;
use crate::runtime::model::AccessLogTarget;
use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use serde::Serialize;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One access-log line.
#[derive(Debug, Default, Serialize)]
pub struct Entry<'a> {
    pub time: String,
    pub request_id: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub route: Option<&'a str>,
    pub consumer: Option<&'a str>,
    pub endpoint: Option<&'a str>,
    pub provider: Option<&'a str>,
    pub key: Option<&'a str>,
    pub model: Option<&'a str>,
    pub upstream_model: Option<&'a str>,
    pub stream: bool,
    pub status: u16,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_tokens: u64,
    pub reasoning_tokens: u64,
    pub usage_estimated: bool,
    /// Media answers' units (images made, audio milliseconds heard, characters spoken,
    /// rerank search units); absent when zero.
    #[serde(skip_serializing_if = "is_zero")]
    pub images: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub audio_ms: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub characters: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub search_units: u64,
    pub ttfb_ms: Option<f64>,
    pub ttft_ms: Option<f64>,
    pub duration_ms: f64,
    /// Time inside the gateway (duration minus time waiting on providers).
    pub overhead_ms: f64,
    /// Attempts after the first (other keys or targets).
    pub retries: u32,
    pub error: Option<&'a str>,
    /// What the request cost, an exact decimal in `currency` (`pricing`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub currency: Option<&'static str>,
    /// It used tokens that have no price.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub price_missing: bool,
    /// What the response cache did: `hit-exact`, `hit-semantic`, `miss`, `refresh`, `bypass` (routes with
    /// `cache:` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<&'static str>,
    /// What the route's policies did, `policy:action` each (`crate::policy::Action`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

pub struct AccessLog {
    tx: Option<SyncSender<String>>,
    /// Taken by the writer service when it starts.
    rx: Mutex<Option<(Receiver<String>, AccessLogTarget)>>,
    /// Flush markers the writer has handled.
    flushed: Arc<AtomicU64>,
}

impl AccessLog {
    pub fn new(target: AccessLogTarget, buffer: usize) -> Self {
        if target == AccessLogTarget::Off {
            return AccessLog {
                tx: None,
                rx: Mutex::new(None),
                flushed: Arc::default(),
            };
        }
        let (tx, rx) = sync_channel(buffer);
        AccessLog {
            tx: Some(tx),
            rx: Mutex::new(Some((rx, target))),
            flushed: Arc::default(),
        }
    }

    /// Wait until every line queued so far is written and flushed, for at most `within`;
    /// false if that did not happen in time.
    pub async fn flush(&self, within: Duration) -> bool {
        let Some(tx) = &self.tx else { return true };
        if self.rx.lock().map(|g| g.is_some()).unwrap_or(false) {
            // The writer never started: nothing will be written.
            return true;
        }
        let deadline = Instant::now() + within;
        let before = self.flushed.load(Ordering::Acquire);
        loop {
            match tx.try_send(String::new()) {
                Ok(()) => break,
                Err(TrySendError::Disconnected(_)) => return true,
                Err(TrySendError::Full(_)) if Instant::now() >= deadline => return false,
                Err(TrySendError::Full(_)) => tokio::time::sleep(POLL).await,
            }
        }
        while self.flushed.load(Ordering::Acquire) == before {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(POLL).await;
        }
        true
    }

    pub fn write(&self, entry: &Entry) {
        let Some(tx) = &self.tx else { return };
        let Ok(line) = serde_json::to_string(entry) else {
            return;
        };
        match tx.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                METRICS.access_log_dropped.inc();
            }
        }
    }
}

fn open(target: &AccessLogTarget) -> std::io::Result<Box<dyn Write + Send>> {
    Ok(match target {
        AccessLogTarget::File(path) => Box::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?,
        ),
        _ => Box::new(std::io::stdout()),
    })
}

/// Write one queued line; an empty one is a flush marker (returns true).
fn put(out: &mut impl Write, line: &str) -> bool {
    if line.is_empty() {
        return true;
    }
    let _ = out.write_all(line.as_bytes());
    let _ = out.write_all(b"\n");
    false
}

fn run_writer(rx: Receiver<String>, target: AccessLogTarget, flushed: Arc<AtomicU64>) {
    let out = match open(&target) {
        Ok(out) => out,
        Err(e) => {
            log::error!("access log {target:?}: {e}; lines will be dropped");
            return;
        }
    };
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    // The writer polls instead of blocking in `recv`: a receiver parked in `recv` makes
    // every request's `try_send` wake it with a futex system call on the request thread.
    // Polling every `POLL` keeps that off the hot path; lines still appear within `POLL`.
    loop {
        match rx.try_recv() {
            Ok(line) => {
                let mut markers = u64::from(put(&mut out, &line));
                // Flush when the queue is drained, so lines appear promptly when idle.
                while let Ok(line) = rx.try_recv() {
                    markers += u64::from(put(&mut out, &line));
                }
                let _ = out.flush();
                if markers > 0 {
                    flushed.fetch_add(markers, Ordering::Release);
                }
            }
            Err(TryRecvError::Empty) => std::thread::sleep(POLL),
            Err(TryRecvError::Disconnected) => {
                let _ = out.flush();
                return;
            }
        }
    }
}

/// How often the writer looks for new lines when the queue is empty.
const POLL: Duration = Duration::from_millis(10);

/// Starts the writer thread.
pub struct Writer(pub Arc<AccessLog>);

#[async_trait]
impl BackgroundService for Writer {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let taken = self.0.rx.lock().ok().and_then(|mut g| g.take());
        if let Some((rx, target)) = taken {
            let flushed = self.0.flushed.clone();
            let spawned = std::thread::Builder::new()
                .name("access-log".into())
                .spawn(move || run_writer(rx, target, flushed));
            if let Err(e) = spawned {
                log::error!("cannot start the access-log writer: {e}");
            }
        }
        // Live as long as the server, like the writer thread.
        let _ = shutdown.changed().await;
    }
}
