//! The export queue and thread.
//!
//! A finished request is one boxed record put on a bounded queue with `try_send`: the request
//! path never waits. One thread (`tollgate-otlp`, started by the first traced request, so
//! after Pingora has daemonised) runs a single-threaded tokio runtime of its own, builds the
//! spans, and sends them in batches (up to `MAX_BATCH` spans, at least every `EXPORT_EVERY`)
//! with the SDK's OTLP/HTTP exporter (protobuf) over the project's reqwest client.
//!
//! The SDK's `BatchSpanProcessor` is not used: it keeps its count of dropped spans private
//! (it logs it once, and at shutdown), and a queue put in front of it could not see its
//! drops. This queue and loop do the same work (bounded queue, batches, a deadline per
//! export) and count every span lost in `tollgate_traces_dropped_total`: `queue_full` when
//! the queue is full (the collector slow or away), `export_failed` when an export failed.
//!
//! A reload that changes the collector (endpoint, headers, service name, timeout) makes a new
//! exporter at the next batch; `queue` is read once, when the thread starts.

use super::{spans, ExportTarget, RequestRecord, RequestTrace, TraceConfig};
use crate::metrics::METRICS;
use bytes::Bytes;
use opentelemetry::KeyValue;
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::{SpanData, SpanExporter as _};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;

/// Most spans in one export.
const MAX_BATCH: usize = 512;
/// Longest a finished request waits for its batch to be sent.
const EXPORT_EVERY: Duration = Duration::from_secs(1);
/// Largest collector answer read.
const MAX_ANSWER: usize = 1024 * 1024;

/// A finished request, on its way to the export thread.
pub(super) struct Finished {
    pub trace: Box<RequestTrace>,
    pub record: RequestRecord,
    pub ended: SystemTime,
}

impl Finished {
    fn spans(&self) -> usize {
        1 + self.trace.attempts.len()
    }
}

/// What the export thread is sent: a finished request, or a request to export what it
/// holds now (at exit).
enum Item {
    Spans(Box<Finished>),
    Flush(tokio::sync::oneshot::Sender<()>),
}

type Queue = mpsc::Sender<Item>;

/// The queue, made with its thread by the first traced request (`None`: it could not start).
static QUEUE: OnceLock<Option<Queue>> = OnceLock::new();

/// The size of the running queue, once the first traced request has started it.
pub fn queue_capacity() -> Option<usize> {
    QUEUE.get()?.as_ref().map(|tx| tx.max_capacity())
}

/// Spans lost so far, by reason (what `tollgate_traces_dropped_total` shows).
pub fn dropped_spans(reason: &str) -> u64 {
    METRICS.traces_dropped.with_label_values(&[reason]).get()
}

fn drop_spans(reason: &str, n: usize) {
    METRICS
        .traces_dropped
        .with_label_values(&[reason])
        .inc_by(n as u64);
}

/// Queue a finished request's spans; never waits.
pub(super) fn send(finished: Box<Finished>) {
    let queue = QUEUE.get_or_init(|| start(finished.trace.config.queue));
    let n = finished.spans();
    match queue {
        Some(tx) => {
            if tx.try_send(Item::Spans(finished)).is_err() {
                drop_spans("queue_full", n);
            }
        }
        None => drop_spans("export_failed", n),
    }
}

/// Export what is queued now; false if that did not finish `within` (at exit).
pub async fn flush(within: Duration) -> bool {
    let Some(Some(tx)) = QUEUE.get() else {
        return true;
    };
    let (done, wait) = tokio::sync::oneshot::channel();
    let flushed = async { tx.send(Item::Flush(done)).await.is_ok() && wait.await.is_ok() };
    tokio::time::timeout(within, flushed).await.unwrap_or(false)
}

fn start(queue: usize) -> Option<Queue> {
    for reason in ["queue_full", "export_failed"] {
        METRICS.traces_dropped.with_label_values(&[reason]);
    }
    let (tx, rx) = mpsc::channel(queue.max(1));
    let spawned = std::thread::Builder::new()
        .name("tollgate-otlp".into())
        .spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(run(rx)),
                Err(e) => log::error!("traces: cannot start the export runtime: {e}"),
            }
        });
    match spawned {
        Ok(_) => Some(tx),
        Err(e) => {
            log::error!("traces: cannot start the export thread: {e}");
            None
        }
    }
}

/// Spans built and not yet sent, and the config of the newest request among them (after a
/// reload, the new collector takes the whole batch).
#[derive(Default)]
struct Batch {
    spans: Vec<SpanData>,
    config: Option<Arc<TraceConfig>>,
    /// When the oldest of them must be sent.
    due: Option<tokio::time::Instant>,
}

impl Batch {
    fn add(&mut self, f: &Finished) {
        spans::build(&f.trace, &f.record, f.ended, &mut self.spans);
        if !self
            .config
            .as_ref()
            .is_some_and(|c| Arc::ptr_eq(c, &f.trace.config))
        {
            self.config = Some(f.trace.config.clone());
        }
        self.due
            .get_or_insert_with(|| tokio::time::Instant::now() + EXPORT_EVERY);
    }

    async fn send(&mut self, exporter: &mut Exporter) {
        self.due = None;
        if let (false, Some(config)) = (self.spans.is_empty(), &self.config) {
            let spans = std::mem::replace(&mut self.spans, Vec::with_capacity(MAX_BATCH));
            exporter.export(config, spans).await;
        }
    }
}

/// Batch what arrives and export it: a batch goes when it is full or `EXPORT_EVERY` after
/// its first request, and at once on a flush; until every sender is gone.
async fn run(mut rx: mpsc::Receiver<Item>) {
    let mut exporter = Exporter::default();
    let mut batch = Batch::default();
    loop {
        let item = match batch.due {
            None => rx.recv().await,
            Some(due) => match tokio::time::timeout_at(due, rx.recv()).await {
                Ok(item) => item,
                Err(_) => {
                    batch.send(&mut exporter).await;
                    continue;
                }
            },
        };
        match item {
            Some(Item::Spans(f)) => {
                batch.add(&f);
                if batch.spans.len() >= MAX_BATCH {
                    batch.send(&mut exporter).await;
                }
            }
            Some(Item::Flush(done)) => {
                batch.send(&mut exporter).await;
                let _ = done.send(());
            }
            None => {
                batch.send(&mut exporter).await;
                break;
            }
        }
    }
}

/// The exporter of the current collector, and whether the last export failed (logged once
/// per change).
#[derive(Default)]
struct Exporter {
    current: Option<(ExportTarget, opentelemetry_otlp::SpanExporter)>,
    failing: bool,
}

impl Exporter {
    async fn export(&mut self, config: &TraceConfig, batch: Vec<SpanData>) {
        let n = batch.len();
        let target = &config.target;
        if self.current.as_ref().is_none_or(|(t, _)| t != target) {
            self.current = match build(target) {
                Ok(e) => Some((target.clone(), e)),
                Err(e) => {
                    self.failed(&format!("cannot build the exporter: {e}"));
                    drop_spans("export_failed", n);
                    None
                }
            };
        }
        let Some((_, exporter)) = &self.current else {
            return;
        };
        match exporter.export(batch).await {
            Ok(()) => {
                if self.failing {
                    log::info!("traces: exporting to {} again", target.endpoint);
                    self.failing = false;
                }
            }
            Err(e) => {
                self.failed(&format!("export to {} failed: {e}", target.endpoint));
                drop_spans("export_failed", n);
            }
        }
    }

    fn failed(&mut self, what: &str) {
        if !self.failing {
            log::warn!("traces: {what} (spans are dropped and counted until it works)");
            self.failing = true;
        }
    }
}

fn build(target: &ExportTarget) -> Result<opentelemetry_otlp::SpanExporter, String> {
    let client = reqwest::Client::builder()
        .timeout(target.timeout)
        .connect_timeout(target.timeout.min(Duration::from_secs(5)))
        .build()
        .map_err(|e| e.to_string())?;
    let mut exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(Client(client))
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(target.endpoint.clone())
        .with_timeout(target.timeout)
        .with_headers(target.headers.iter().cloned().collect())
        .build()
        .map_err(|e| e.to_string())?;
    exporter.set_resource(
        &opentelemetry_sdk::Resource::builder_empty()
            .with_service_name(target.service_name.clone())
            .with_attributes([
                KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
                KeyValue::new("service.instance.id", crate::instance::id()),
            ])
            .build(),
    );
    Ok(exporter)
}

/// The SDK's HTTP client interface over the project's reqwest client (reqwest 0.12, its
/// rustls and the platform's roots), run on the export thread's runtime.
#[derive(Debug)]
struct Client(reqwest::Client);

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for Client {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, opentelemetry_http::HttpError> {
        let (parts, body) = request.into_parts();
        let mut answer = self
            .0
            .request(parts.method, parts.uri.to_string())
            .headers(parts.headers)
            .body(body)
            .send()
            .await?;
        let status = answer.status();
        let headers = std::mem::take(answer.headers_mut());
        let mut read = Vec::new();
        while let Some(chunk) = answer.chunk().await? {
            if read.len() + chunk.len() > MAX_ANSWER {
                return Err("the collector's answer is too large".into());
            }
            read.extend_from_slice(&chunk);
        }
        let mut out = http::Response::new(Bytes::from(read));
        *out.status_mut() = status;
        *out.headers_mut() = headers;
        Ok(out)
    }
}
