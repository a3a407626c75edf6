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

type Queue = mpsc::Sender<Box<Finished>>;

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
            if tx.try_send(finished).is_err() {
                drop_spans("queue_full", n);
            }
        }
        None => drop_spans("export_failed", n),
    }
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

/// Batch what arrives and export it, until every sender is gone.
async fn run(mut rx: mpsc::Receiver<Box<Finished>>) {
    let mut exporter = Exporter::default();
    let mut batch: Vec<SpanData> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.recv().await {
        let deadline = tokio::time::Instant::now() + EXPORT_EVERY;
        let mut config = first.trace.config.clone();
        spans::build(&first.trace, &first.record, first.ended, &mut batch);
        let mut open = true;
        while batch.len() < MAX_BATCH {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(f)) => {
                    // The newest config's collector takes the batch (after a reload).
                    if !Arc::ptr_eq(&config, &f.trace.config) {
                        config = f.trace.config.clone();
                    }
                    spans::build(&f.trace, &f.record, f.ended, &mut batch);
                }
                Ok(None) => {
                    open = false;
                    break;
                }
                Err(_) => break,
            }
        }
        exporter
            .export(
                &config,
                std::mem::replace(&mut batch, Vec::with_capacity(MAX_BATCH)),
            )
            .await;
        if !open {
            break;
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
