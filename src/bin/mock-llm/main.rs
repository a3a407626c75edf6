//! `mock-llm`: a fast, deterministic mock of the OpenAI HTTP API, used by
//! Tollgate's integration and load tests as the upstream provider.
//!
//! # CLI
//!
//! ```text
//! mock-llm [--listen 127.0.0.1:8090] [--tls-cert FILE --tls-key FILE] [--threads N]
//! ```
//!
//! * `--listen ADDR` (default `127.0.0.1:8090`). Port `0` picks a free port. After
//!   binding, exactly one line `mock-llm listening on <actual addr>` is printed to
//!   stdout (and flushed); tests parse it to learn the port.
//! * `--tls-cert FILE --tls-key FILE`: PEM certificate chain and PEM private key
//!   (PKCS#8, PKCS#1/RSA or SEC1/EC). Serves HTTPS with ALPN `h2` and `http/1.1`.
//! * `--threads N`: number of tokio worker threads (default: one per CPU).
//!
//! Plain-text listeners speak HTTP/1.1 (keep-alive) and h2c (prior knowledge),
//! auto-detected per connection. The process exits with status 0 on
//! SIGINT/SIGTERM.
//!
//! # Endpoints
//!
//! Paths are matched by suffix, so `/v1/chat/completions` and Azure-style
//! `/openai/deployments/x/chat/completions?api-version=..` both work.
//!
//! * `POST …/chat/completions`: chat completion (`stream`, `stream_options.include_usage`,
//!   `max_tokens` / `max_completion_tokens` honoured; `model` echoed verbatim).
//! * `POST …/completions`: legacy text completion (`prompt`: string, array of
//!   strings, token array, or array of token arrays).
//! * `POST …/embeddings`: `input` as string, array of strings, token array or
//!   array of token arrays; one unit-length vector per input, 8 dims (or
//!   `dimensions` if given, 1..=4096), derived from an FNV hash of the input.
//! * `GET …/models`, `GET …/models/{id}`: a small static model list / any id.
//! * Anything else: 404 with an OpenAI-style error body.
//!
//! Malformed JSON (or a non-object body) on a POST endpoint gives 400 with
//! `{"error":{"message":..,"type":"invalid_request_error","param":null,"code":null}}`.
//!
//! Generated text: N "tokens", where N = `x-mock-chunks` (default 8), capped by
//! `max_completion_tokens`/`max_tokens` when given (then `finish_reason` is
//! `"length"` if the cap cut the output, else `"stop"`). Token `i` is
//! `WORDS[i % 8]` = `"Hello", " wörld", " 世界", " from", " mock", " 🚀", " llm", "."`.
//! `completion_tokens` = N (+ reasoning tokens, see below).
//!
//! Prompt-token formula (deterministic, "chars" = Unicode scalar values):
//! * chat: `sum over messages of (ceil(chars(text content) / 4) + 3)`, where the
//!   text content is the `content` string, or the concatenation of the `text`
//!   fields of the content parts (non-text parts count 0).
//! * completions / embeddings: `sum over inputs of ceil(chars / 4)` for strings,
//!   and the array length for token arrays.
//!
//! Streaming (`"stream": true`) sends `text/event-stream`, one SSE event per body
//! frame: `data: {chunk}\n\n`. Chat: a role chunk (`delta: {role:"assistant",content:""}`),
//! one chunk per token, a finish chunk (empty delta + `finish_reason`), then, if
//! `stream_options.include_usage` is true, a chunk with `"choices": []` and the
//! usage (and every earlier chunk carries `"usage": null`), then `data: [DONE]`.
//! Legacy completions are the same minus the role chunk, with `choices[0].text`.
//!
//! # Request headers (all endpoints except `/mock/*`)
//!
//! Numeric headers must be non-negative integers, otherwise the response is 400.
//! Boolean headers are true for `1`, `true`, `yes`, `on` (case-insensitive).
//!
//! * `x-mock-chunks: N`: number of generated tokens (default 8, capped at 1,000,000).
//! * `x-mock-chunk-delay-ms: D`: sleep D ms between consecutive content chunks
//!   when streaming (not before the first one).
//! * `x-mock-delay-ms: D`: sleep D ms before sending the response headers.
//! * `x-mock-status: CODE` (200..=599): CODE >= 300 responds with that status and an
//!   OpenAI error body: 5xx → type `server_error`; 429 → type and code
//!   `rate_limit_exceeded`; 401/403 → type `invalid_request_error`, code
//!   `invalid_api_key`; others → `invalid_request_error`. 2xx is ignored.
//! * `x-mock-retry-after: S`: with an `x-mock-status` fault, also send `Retry-After: S`
//!   (value copied verbatim).
//! * `x-mock-drop-after: K`: streaming: after K content chunks the connection is
//!   aborted (HTTP/1: connection closed without the terminating chunk; HTTP/2:
//!   RST_STREAM, sent 25 ms after the last DATA frame so those frames arrive
//!   first); K = 0 drops right after the role chunk; if K > N nothing is dropped. Non-streaming: the full `Content-Length` is announced, but only
//!   the first min(K, len-1) bytes of the body are sent before aborting.
//! * `x-mock-cached-tokens: K`: usage gets `prompt_tokens_details: {cached_tokens: K}`.
//! * `x-mock-reasoning-tokens: R`: usage gets `completion_tokens_details:
//!   {reasoning_tokens: R}` and R is added to `completion_tokens`.
//! * `x-mock-no-usage: 1`: never send usage (streaming or not), even if asked.
//! * `x-mock-crlf: 1`: SSE uses `\r\n` line endings instead of `\n`.
//! * `x-mock-echo: 1`: non-streaming JSON responses (errors included) get a
//!   top-level `mock_echo` object `{method, path, query (string|null), version,
//!   headers {lowercased name: value, duplicates joined with ", "}, body_len,
//!   body_fnv64, body (parsed JSON if valid and < 64 KiB, else null)}`; when
//!   streaming it is sent as the very first event `data: {"mock_echo": {...}}`.
//!
//! Every response (including errors and `/mock/*`) carries `x-mock-body-len: n`
//! and `x-mock-body-fnv64: <16 hex digits>` (FNV-1a 64 over the whole received
//! request body). Request bodies up to 64 MiB are accepted (larger → 413).
//!
//! # Control endpoints (stateful faults and statistics)
//!
//! * `POST /mock/faults` with `{"key": "sk-abc"?, "status": 500?, "count": 3?,
//!   "retry_after": 2?, "delay_ms": 0?}` (or an array of such objects) appends
//!   rules. `key` matches the credential (the `Authorization: Bearer` token, else
//!   `x-api-key`, else `api-key`); absent = every request. `status` defaults to
//!   500; a status < 300 only applies `delay_ms`. `count` = number of requests
//!   to affect (absent = until cleared). The first matching rule with remaining
//!   count applies (exhausted rules are removed). An `x-mock-status` header
//!   takes precedence and does not consume rules. Unknown fields → 400.
//! * `GET /mock/faults` lists the rules, `DELETE /mock/faults` clears them.
//! * `GET /mock/stats` → `{"requests_total": n, "by_key": {cred: n}, "by_path": {path: n}}`
//!   counting every non-`/mock/` request (requests without a credential are not
//!   in `by_key`); `DELETE /mock/stats` resets.
//! * `GET /mock/health` → `{"status":"ok"}`.

use std::convert::Infallible;
use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// Writes one line to stderr, ignoring failures (a closed stderr must not panic).
macro_rules! log {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

#[derive(Parser, Debug)]
#[command(
    name = "mock-llm",
    about = "Mock OpenAI-compatible LLM server for tests"
)]
struct Args {
    /// Address to listen on (port 0 = pick a free port).
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: String,
    /// PEM certificate chain; enables HTTPS (requires --tls-key).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, RSA or EC; requires --tls-cert).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Tokio worker threads (default: number of CPUs).
    #[arg(long)]
    threads: Option<usize>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if let Some(n) = args.threads.filter(|n| *n > 0) {
        rt.worker_threads(n);
    }
    let rt = match rt.build() {
        Ok(rt) => rt,
        Err(e) => {
            log!("mock-llm: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(run(args));
    rt.shutdown_timeout(Duration::from_millis(200));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log!("mock-llm: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(TlsAcceptor::from(tls::load(cert, key)?)),
        _ => None,
    };
    let listener = TcpListener::bind(&args.listen)
        .await
        .map_err(|e| format!("cannot bind {}: {e}", args.listen))?;
    let addr = listener.local_addr()?;
    {
        let mut out = io::stdout().lock();
        let _ = writeln!(out, "mock-llm listening on {addr}");
        let _ = out.flush();
    }

    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .initial_stream_window_size(4 * 1024 * 1024)
        .initial_connection_window_size(16 * 1024 * 1024)
        .max_concurrent_streams(4096);

    let state = Arc::new(state::State::default());
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(e) => {
                    // Typically EMFILE; back off briefly instead of spinning.
                    log!("mock-llm: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let builder = builder.clone();
        let state = Arc::clone(&state);
        let tls = tls.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let state = Arc::clone(&state);
                async move { Ok::<_, Infallible>(handler::handle(state, req).await) }
            });
            // Connection errors (client resets, deliberate drops) are expected.
            match tls {
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream));
                    if let Ok(Ok(tls_stream)) = handshake.await {
                        let _ = builder
                            .serve_connection(TokioIo::new(tls_stream), svc)
                            .await;
                    }
                }
                None => {
                    let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                }
            }
        });
    }
    Ok(())
}

/// Resolves on ctrl-c / SIGINT or SIGTERM. If a handler cannot be installed,
/// that source simply never fires.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

mod tls {
    use std::fs::File;
    use std::io::BufReader;
    use std::path::Path;
    use std::sync::Arc;

    use tokio_rustls::rustls::pki_types::CertificateDer;
    use tokio_rustls::rustls::ServerConfig;

    pub fn load(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, String> {
        let open = |p: &Path| {
            File::open(p)
                .map(BufReader::new)
                .map_err(|e| format!("cannot open {}: {e}", p.display()))
        };
        let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut open(cert)?)
            .collect::<Result<_, _>>()
            .map_err(|e| format!("invalid certificate PEM {}: {e}", cert.display()))?;
        if certs.is_empty() {
            return Err(format!("no certificates in {}", cert.display()));
        }
        let key_der = rustls_pemfile::private_key(&mut open(key)?)
            .map_err(|e| format!("invalid key PEM {}: {e}", key.display()))?
            .ok_or_else(|| format!("no private key in {}", key.display()))?;
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup failed: {e}"))?
            .with_no_client_auth()
            .with_single_cert(certs, key_der)
            .map_err(|e| format!("TLS certificate/key rejected: {e}"))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

mod util {
    use std::time::{SystemTime, UNIX_EPOCH};

    /// FNV-1a, 64 bit.
    pub fn fnv1a64(data: &[u8]) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in data {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h
    }

    pub fn splitmix64(state: &mut u64) -> u64 {
        *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn now_secs() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }

    /// ceil(chars / 4)
    pub fn text_tokens(s: &str) -> u64 {
        (s.chars().count() as u64).div_ceil(4)
    }
}

mod state {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Mutex, MutexGuard};

    use hyper::header::HeaderValue;
    use serde::{Deserialize, Serialize};
    use serde_json::Value;

    #[derive(Debug, Clone, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct FaultRule {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub key: Option<String>,
        #[serde(default = "default_status")]
        pub status: u16,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub count: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub retry_after: Option<Value>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub delay_ms: Option<u64>,
    }

    fn default_status() -> u16 {
        500
    }

    pub struct MatchedFault {
        /// `Some` when the rule's status is an error (>= 300).
        pub status: Option<u16>,
        pub retry_after: Option<HeaderValue>,
        pub delay_ms: u64,
    }

    #[derive(Default, Serialize)]
    pub struct Stats {
        pub requests_total: u64,
        pub by_key: BTreeMap<String, u64>,
        pub by_path: BTreeMap<String, u64>,
    }

    #[derive(Default)]
    pub struct State {
        counter: AtomicU64,
        faults: Mutex<Vec<FaultRule>>,
        stats: Mutex<Stats>,
    }

    fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    impl State {
        pub fn next_id(&self) -> u64 {
            self.counter.fetch_add(1, Ordering::Relaxed) + 1
        }

        pub fn record(&self, path: &str, cred: Option<&str>) {
            let mut s = lock(&self.stats);
            s.requests_total += 1;
            *s.by_path.entry(path.to_owned()).or_insert(0) += 1;
            if let Some(c) = cred {
                *s.by_key.entry(c.to_owned()).or_insert(0) += 1;
            }
        }

        pub fn stats_json(&self) -> Value {
            serde_json::to_value(&*lock(&self.stats)).unwrap_or(Value::Null)
        }

        pub fn reset_stats(&self) {
            *lock(&self.stats) = Stats::default();
        }

        pub fn add_faults(&self, rules: Vec<FaultRule>) {
            lock(&self.faults).extend(rules);
        }

        pub fn clear_faults(&self) {
            lock(&self.faults).clear();
        }

        pub fn faults_json(&self) -> Value {
            serde_json::to_value(&*lock(&self.faults)).unwrap_or(Value::Null)
        }

        /// Finds the first rule matching `cred`, consumes one use of it and
        /// removes it once exhausted.
        pub fn take_fault(&self, cred: Option<&str>) -> Option<MatchedFault> {
            let mut rules = lock(&self.faults);
            let idx = rules.iter().position(|r| {
                r.count != Some(0) && r.key.as_deref().is_none_or(|k| Some(k) == cred)
            })?;
            let rule = rules.get_mut(idx)?;
            if let Some(c) = rule.count.as_mut() {
                *c = c.saturating_sub(1);
            }
            let retry_after = match &rule.retry_after {
                Some(Value::String(s)) => HeaderValue::from_str(s).ok(),
                Some(Value::Number(n)) => HeaderValue::from_str(&n.to_string()).ok(),
                _ => None,
            };
            let matched = MatchedFault {
                status: (rule.status >= 300).then_some(rule.status),
                retry_after,
                delay_ms: rule.delay_ms.unwrap_or(0),
            };
            if rule.count == Some(0) {
                rules.remove(idx);
            }
            Some(matched)
        }
    }
}

/// Mock behaviour requested through `x-mock-*` request headers.
mod opts {
    use hyper::header::{HeaderMap, HeaderValue};

    pub const DEFAULT_CHUNKS: u64 = 8;
    pub const MAX_CHUNKS: u64 = 1_000_000;

    #[derive(Debug, Default)]
    pub struct MockOpts {
        pub status: Option<u16>,
        pub retry_after: Option<HeaderValue>,
        pub delay_ms: u64,
        pub chunks: u64,
        pub chunk_delay_ms: u64,
        pub drop_after: Option<u64>,
        pub cached_tokens: Option<u64>,
        pub reasoning_tokens: Option<u64>,
        pub no_usage: bool,
        pub crlf: bool,
        pub echo: bool,
    }

    fn num(h: &HeaderMap, name: &str) -> Result<Option<u64>, String> {
        match h.get(name) {
            None => Ok(None),
            Some(v) => v
                .to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .map(Some)
                .ok_or_else(|| {
                    format!("invalid value for header {name}: expected a non-negative integer")
                }),
        }
    }

    fn flag(h: &HeaderMap, name: &str) -> bool {
        h.get(name)
            .and_then(|v| v.to_str().ok())
            .map(|s| {
                let s = s.trim();
                ["1", "true", "yes", "on"]
                    .iter()
                    .any(|t| s.eq_ignore_ascii_case(t))
            })
            .unwrap_or(false)
    }

    impl MockOpts {
        pub fn from_headers(h: &HeaderMap) -> Result<Self, String> {
            let status = match num(h, "x-mock-status")? {
                Some(s) if (200..=599).contains(&s) => u16::try_from(s).ok(),
                Some(_) => return Err("x-mock-status must be within 200..=599".into()),
                None => None,
            };
            Ok(Self {
                status,
                retry_after: h.get("x-mock-retry-after").cloned(),
                delay_ms: num(h, "x-mock-delay-ms")?.unwrap_or(0),
                chunks: num(h, "x-mock-chunks")?
                    .unwrap_or(DEFAULT_CHUNKS)
                    .min(MAX_CHUNKS),
                chunk_delay_ms: num(h, "x-mock-chunk-delay-ms")?.unwrap_or(0),
                drop_after: num(h, "x-mock-drop-after")?,
                cached_tokens: num(h, "x-mock-cached-tokens")?,
                reasoning_tokens: num(h, "x-mock-reasoning-tokens")?,
                no_usage: flag(h, "x-mock-no-usage"),
                crlf: flag(h, "x-mock-crlf"),
                echo: flag(h, "x-mock-echo"),
            })
        }
    }
}

/// Response bodies: fixed (`Full`) or channel-backed streams that can abort.
mod body {
    use std::future::Future;
    use std::io;
    use std::pin::Pin;
    use std::task::Poll;
    use std::time::Duration;

    use bytes::Bytes;
    use http_body_util::combinators::UnsyncBoxBody;
    use http_body_util::{BodyExt, Full, StreamBody};
    use hyper::body::Frame;
    use tokio::sync::mpsc;
    use tokio::time::Sleep;

    pub type RespBody = UnsyncBoxBody<Bytes, io::Error>;

    pub enum Msg {
        Data(Bytes),
        /// Abort the response: the body yields an error, so hyper resets the
        /// stream/connection without a clean end.
        Abort,
    }

    pub fn full(bytes: Bytes) -> RespBody {
        Full::new(bytes)
            .map_err(|never: std::convert::Infallible| match never {})
            .boxed_unsync()
    }

    /// Channel-backed body. On [`Msg::Abort`] the body first returns Pending
    /// (so an HTTP/1 connection flushes what it already has), waits `grace`
    /// (HTTP/2 writes frames from another task, so give it time to send the
    /// DATA frames before the RST_STREAM), then yields an error.
    pub fn channel(mut rx: mpsc::Receiver<Msg>, grace: Duration) -> RespBody {
        let mut aborting = false;
        let mut grace_timer: Option<Pin<Box<Sleep>>> = None;
        let stream = futures_util::stream::poll_fn(move |cx| {
            if aborting {
                if let Some(timer) = grace_timer.as_mut() {
                    if timer.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                }
                return Poll::Ready(Some(Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "mock-llm: x-mock-drop-after",
                ))));
            }
            match rx.poll_recv(cx) {
                Poll::Ready(Some(Msg::Data(b))) => Poll::Ready(Some(Ok(Frame::data(b)))),
                Poll::Ready(Some(Msg::Abort)) => {
                    aborting = true;
                    if !grace.is_zero() {
                        grace_timer = Some(Box::pin(tokio::time::sleep(grace)));
                    }
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            }
        });
        StreamBody::new(stream).boxed_unsync()
    }
}

/// OpenAI payload helpers: token counting, usage, embeddings.
mod openai {
    use serde_json::{json, Map, Value};

    use crate::opts::MockOpts;
    use crate::util::{fnv1a64, splitmix64, text_tokens};

    pub const WORDS: [&str; 8] = [
        "Hello", " wörld", " 世界", " from", " mock", " 🚀", " llm", ".",
    ];

    pub fn word(i: u64) -> &'static str {
        WORDS
            .get(usize::try_from(i % WORDS.len() as u64).unwrap_or(0))
            .copied()
            .unwrap_or(".")
    }

    pub fn content(n: u64) -> String {
        (0..n).map(word).collect()
    }

    /// Text of a chat `content`: a string, or the `text` of each part.
    fn content_text_tokens(content: Option<&Value>) -> u64 {
        match content {
            Some(Value::String(s)) => text_tokens(s),
            Some(Value::Array(parts)) => {
                let text: String = parts
                    .iter()
                    .filter_map(|p| match p {
                        Value::String(s) => Some(s.as_str()),
                        Value::Object(o) => o.get("text").and_then(Value::as_str),
                        _ => None,
                    })
                    .collect();
                text_tokens(&text)
            }
            _ => 0,
        }
    }

    /// sum over messages of (ceil(chars / 4) + 3)
    pub fn chat_prompt_tokens(messages: Option<&Value>) -> u64 {
        messages
            .and_then(Value::as_array)
            .map(|msgs| {
                msgs.iter()
                    .map(|m| content_text_tokens(m.get("content")) + 3)
                    .sum()
            })
            .unwrap_or(0)
    }

    /// One entry per input item: (seed material, prompt tokens).
    pub fn inputs(input: Option<&Value>) -> Vec<(String, u64)> {
        let token_array = |a: &[Value]| -> bool { !a.is_empty() && a.iter().all(Value::is_number) };
        match input {
            Some(Value::String(s)) => vec![(s.clone(), text_tokens(s))],
            Some(Value::Array(a)) if token_array(a) => {
                vec![(Value::Array(a.clone()).to_string(), a.len() as u64)]
            }
            Some(Value::Array(a)) => a
                .iter()
                .map(|item| match item {
                    Value::String(s) => (s.clone(), text_tokens(s)),
                    Value::Array(t) => (item.to_string(), t.len() as u64),
                    other => (other.to_string(), 0),
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Unit-length vector derived from the FNV-1a hash of `material`.
    pub fn embedding(material: &str, dims: usize) -> Vec<f64> {
        let mut seed = fnv1a64(material.as_bytes());
        let raw: Vec<f64> = (0..dims)
            .map(|_| (splitmix64(&mut seed) >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0)
            .collect();
        let norm = raw.iter().map(|v| v * v).sum::<f64>().sqrt();
        let norm = if norm > 0.0 { norm } else { 1.0 };
        raw.iter().map(|v| (v / norm * 1e6).round() / 1e6).collect()
    }

    pub fn usage(prompt: u64, completion: u64, o: &MockOpts) -> Value {
        let completion = completion.saturating_add(o.reasoning_tokens.unwrap_or(0));
        let mut u = Map::new();
        u.insert("prompt_tokens".into(), json!(prompt));
        u.insert("completion_tokens".into(), json!(completion));
        u.insert(
            "total_tokens".into(),
            json!(prompt.saturating_add(completion)),
        );
        if let Some(k) = o.cached_tokens {
            u.insert(
                "prompt_tokens_details".into(),
                json!({ "cached_tokens": k }),
            );
        }
        if let Some(r) = o.reasoning_tokens {
            u.insert(
                "completion_tokens_details".into(),
                json!({ "reasoning_tokens": r }),
            );
        }
        Value::Object(u)
    }

    /// OpenAI error `(type, code)` for a status.
    pub fn error_kind(status: u16) -> (&'static str, Option<&'static str>) {
        match status {
            401 | 403 => ("invalid_request_error", Some("invalid_api_key")),
            429 => ("rate_limit_exceeded", Some("rate_limit_exceeded")),
            500..=599 => ("server_error", None),
            _ => ("invalid_request_error", None),
        }
    }

    pub fn default_error_message(status: u16) -> String {
        match status {
            401 | 403 => "Incorrect API key provided (mock-llm injected fault).".into(),
            429 => "Rate limit reached (mock-llm injected fault).".into(),
            500..=599 => {
                "The server had an error while processing your request (mock-llm injected fault)."
                    .into()
            }
            s => format!("mock-llm injected fault with status {s}."),
        }
    }
}

/// Streaming (SSE) generation for chat and legacy completions.
mod sse {
    use std::time::Duration;

    use bytes::Bytes;
    use serde_json::{json, Map, Value};
    use tokio::sync::mpsc;

    use crate::body::Msg;
    use crate::openai::word;

    #[derive(Clone, Copy, PartialEq, Eq)]
    pub enum Kind {
        Chat,
        Completion,
    }

    pub struct Plan {
        pub kind: Kind,
        pub id: String,
        pub created: u64,
        pub model: Value,
        pub n: u64,
        pub finish: &'static str,
        /// `Some` when usage must be sent (include_usage and not suppressed).
        pub usage: Option<Value>,
        pub chunk_delay: Duration,
        pub drop_after: Option<u64>,
        pub crlf: bool,
        pub echo: Option<Value>,
    }

    impl Plan {
        fn event(&self, payload: &str) -> Msg {
            let nl = if self.crlf { "\r\n" } else { "\n" };
            Msg::Data(Bytes::from(format!("data: {payload}{nl}{nl}")))
        }

        fn chunk(&self, choice: Option<Value>) -> Msg {
            let mut m = Map::new();
            m.insert("id".into(), json!(self.id));
            let object = match self.kind {
                Kind::Chat => "chat.completion.chunk",
                Kind::Completion => "text_completion",
            };
            m.insert("object".into(), json!(object));
            m.insert("created".into(), json!(self.created));
            m.insert("model".into(), self.model.clone());
            if self.kind == Kind::Chat {
                m.insert("system_fingerprint".into(), json!("fp_mock"));
            }
            m.insert("choices".into(), Value::Array(choice.into_iter().collect()));
            if self.usage.is_some() {
                m.insert("usage".into(), Value::Null);
            }
            self.event(&Value::Object(m).to_string())
        }

        fn choice(&self, text: &str, finish: Option<&str>, role: bool) -> Value {
            match self.kind {
                Kind::Chat => {
                    let delta = match (role, finish) {
                        (true, _) => json!({ "role": "assistant", "content": "" }),
                        (false, Some(_)) => json!({}),
                        (false, None) => json!({ "content": text }),
                    };
                    json!({ "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish })
                }
                Kind::Completion => {
                    json!({ "index": 0, "text": text, "logprobs": null, "finish_reason": finish })
                }
            }
        }

        fn usage_chunk(&self, usage: &Value) -> Msg {
            let mut m = Map::new();
            m.insert("id".into(), json!(self.id));
            let object = match self.kind {
                Kind::Chat => "chat.completion.chunk",
                Kind::Completion => "text_completion",
            };
            m.insert("object".into(), json!(object));
            m.insert("created".into(), json!(self.created));
            m.insert("model".into(), self.model.clone());
            m.insert("choices".into(), json!([]));
            m.insert("usage".into(), usage.clone());
            self.event(&Value::Object(m).to_string())
        }
    }

    /// Produces the events; returns `None` as soon as the client is gone.
    pub async fn run(plan: Plan, tx: mpsc::Sender<Msg>) -> Option<()> {
        if let Some(echo) = &plan.echo {
            let ev = plan.event(&json!({ "mock_echo": echo }).to_string());
            tx.send(ev).await.ok()?;
        }
        if plan.kind == Kind::Chat {
            tx.send(plan.chunk(Some(plan.choice("", None, true))))
                .await
                .ok()?;
        }
        for i in 0..plan.n {
            if plan.drop_after == Some(i) {
                tx.send(Msg::Abort).await.ok()?;
                return Some(());
            }
            if i > 0 && !plan.chunk_delay.is_zero() {
                tokio::time::sleep(plan.chunk_delay).await;
            }
            tx.send(plan.chunk(Some(plan.choice(word(i), None, false))))
                .await
                .ok()?;
        }
        if plan.drop_after == Some(plan.n) {
            tx.send(Msg::Abort).await.ok()?;
            return Some(());
        }
        tx.send(plan.chunk(Some(plan.choice("", Some(plan.finish), false))))
            .await
            .ok()?;
        if let Some(usage) = &plan.usage {
            tx.send(plan.usage_chunk(usage)).await.ok()?;
        }
        tx.send(plan.event("[DONE]")).await.ok()?;
        Some(())
    }
}

mod handler {
    use std::sync::Arc;
    use std::time::Duration;

    use bytes::Bytes;
    use http_body_util::{BodyExt, LengthLimitError, Limited};
    use hyper::body::Incoming;
    use hyper::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
    use hyper::http::request::Parts;
    use hyper::{Method, Request, Response, StatusCode, Version};
    use serde_json::{json, Map, Value};
    use tokio::sync::mpsc;

    use crate::body::{self, Msg, RespBody};
    use crate::openai;
    use crate::opts::MockOpts;
    use crate::sse;
    use crate::state::{FaultRule, State};
    use crate::util::{fnv1a64, now_secs};

    const MAX_BODY: usize = 64 * 1024 * 1024;
    const ECHO_BODY_MAX: usize = 64 * 1024;

    struct Ctx<'a> {
        state: &'a State,
        body: &'a Bytes,
        opts: MockOpts,
        echo: Option<Value>,
        abort_grace: Duration,
    }

    pub async fn handle(state: Arc<State>, req: Request<Incoming>) -> Response<RespBody> {
        let (parts, incoming) = req.into_parts();
        let body = match Limited::new(incoming, MAX_BODY).collect().await {
            Ok(c) => c.to_bytes(),
            Err(e) => {
                let (status, msg) = if e.downcast_ref::<LengthLimitError>().is_some() {
                    (
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "request body exceeds 64 MiB".to_owned(),
                    )
                } else {
                    (
                        StatusCode::BAD_REQUEST,
                        format!("cannot read request body: {e}"),
                    )
                };
                return error(status, &msg, None);
            }
        };
        let fnv = fnv1a64(&body);
        let mut resp = route(&state, &parts, &body, fnv).await;
        let h = resp.headers_mut();
        h.insert(
            HeaderName::from_static("x-mock-body-len"),
            HeaderValue::from(body.len()),
        );
        if let Ok(v) = HeaderValue::from_str(&format!("{fnv:016x}")) {
            h.insert(HeaderName::from_static("x-mock-body-fnv64"), v);
        }
        resp
    }

    fn credential(h: &HeaderMap) -> Option<String> {
        let auth = h
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|s| {
                let s = s.trim();
                let (scheme, rest) = s.split_once(' ')?;
                scheme
                    .eq_ignore_ascii_case("bearer")
                    .then(|| rest.trim().to_owned())
            });
        auth.or_else(|| {
            ["x-api-key", "api-key"].iter().find_map(|n| {
                h.get(*n)
                    .and_then(|v| v.to_str().ok())
                    .map(|s| s.trim().to_owned())
            })
        })
    }

    fn echo_value(parts: &Parts, body: &Bytes, fnv: u64) -> Value {
        let mut headers = Map::new();
        for (name, value) in &parts.headers {
            let v = String::from_utf8_lossy(value.as_bytes()).into_owned();
            match headers.get_mut(name.as_str()) {
                Some(Value::String(existing)) => {
                    existing.push_str(", ");
                    existing.push_str(&v);
                }
                _ => {
                    headers.insert(name.as_str().to_owned(), Value::String(v));
                }
            }
        }
        let parsed = if body.len() < ECHO_BODY_MAX {
            serde_json::from_slice::<Value>(body).unwrap_or(Value::Null)
        } else {
            Value::Null
        };
        json!({
            "method": parts.method.as_str(),
            "path": parts.uri.path(),
            "query": parts.uri.query(),
            "version": format!("{:?}", parts.version),
            "headers": headers,
            "body_len": body.len(),
            "body_fnv64": format!("{fnv:016x}"),
            "body": parsed,
        })
    }

    async fn route(state: &State, parts: &Parts, body: &Bytes, fnv: u64) -> Response<RespBody> {
        let path = parts.uri.path();
        if path.starts_with("/mock/") {
            return control(state, parts, body);
        }
        let cred = credential(&parts.headers);
        state.record(path, cred.as_deref());

        let opts = match MockOpts::from_headers(&parts.headers) {
            Ok(o) => o,
            Err(msg) => return error(StatusCode::BAD_REQUEST, &msg, None),
        };
        let echo = opts.echo.then(|| echo_value(parts, body, fnv));

        let mut delay_ms = opts.delay_ms;
        let mut fault: Option<(u16, Option<HeaderValue>)> = None;
        match opts.status.filter(|s| *s >= 300) {
            Some(status) => fault = Some((status, opts.retry_after.clone())),
            None => {
                if let Some(m) = state.take_fault(cred.as_deref()) {
                    delay_ms = delay_ms.saturating_add(m.delay_ms);
                    fault = m.status.map(|s| (s, m.retry_after));
                }
            }
        }
        if delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        }
        if let Some((code, retry_after)) = fault {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut resp = error(status, &openai::default_error_message(code), echo.as_ref());
            if let Some(ra) = retry_after {
                resp.headers_mut().insert(hyper::header::RETRY_AFTER, ra);
            }
            return resp;
        }

        // HTTP/2 writes DATA frames from the connection task; give it a moment
        // before the reset so the frames sent before a drop are delivered.
        let abort_grace = if parts.version == Version::HTTP_2 {
            Duration::from_millis(25)
        } else {
            Duration::ZERO
        };
        let ctx = Ctx {
            state,
            body,
            opts,
            echo,
            abort_grace,
        };
        let p = path.trim_end_matches('/');
        let method = &parts.method;
        if method == Method::POST && p.ends_with("/chat/completions") {
            generate(&ctx, sse::Kind::Chat)
        } else if method == Method::POST && p.ends_with("/completions") {
            generate(&ctx, sse::Kind::Completion)
        } else if method == Method::POST && p.ends_with("/embeddings") {
            embeddings(&ctx)
        } else if method == Method::GET && p.ends_with("/models") {
            models(&ctx)
        } else if let Some((_, id)) = p.rsplit_once("/models/").filter(|_| method == Method::GET) {
            let m = json!({ "id": id, "object": "model", "created": 1_700_000_000u64, "owned_by": "mock-llm" });
            json_response(StatusCode::OK, m, ctx.echo.as_ref(), None)
        } else {
            not_found(parts, ctx.echo.as_ref())
        }
    }

    fn not_found(parts: &Parts, echo: Option<&Value>) -> Response<RespBody> {
        let msg = format!("Invalid URL ({} {})", parts.method, parts.uri.path());
        error(StatusCode::NOT_FOUND, &msg, echo)
    }

    fn control(state: &State, parts: &Parts, body: &Bytes) -> Response<RespBody> {
        let ok = |v: Value| json_response(StatusCode::OK, v, None, None);
        match (&parts.method, parts.uri.path().trim_end_matches('/')) {
            (&Method::POST, "/mock/faults") => {
                let rules = match serde_json::from_slice::<Value>(body) {
                    Ok(v @ Value::Array(_)) => serde_json::from_value::<Vec<FaultRule>>(v),
                    Ok(v) => serde_json::from_value::<FaultRule>(v).map(|r| vec![r]),
                    Err(e) => Err(e),
                };
                match rules {
                    Ok(rules) if rules.iter().all(|r| (200..=599).contains(&r.status)) => {
                        state.add_faults(rules);
                        ok(json!({ "ok": true, "rules": state.faults_json() }))
                    }
                    Ok(_) => error(
                        StatusCode::BAD_REQUEST,
                        "fault status must be within 200..=599",
                        None,
                    ),
                    Err(e) => error(
                        StatusCode::BAD_REQUEST,
                        &format!("invalid fault rule: {e}"),
                        None,
                    ),
                }
            }
            (&Method::GET, "/mock/faults") => ok(json!({ "rules": state.faults_json() })),
            (&Method::DELETE, "/mock/faults") => {
                state.clear_faults();
                ok(json!({ "ok": true }))
            }
            (&Method::GET, "/mock/stats") => ok(state.stats_json()),
            (&Method::DELETE, "/mock/stats") => {
                state.reset_stats();
                ok(json!({ "ok": true }))
            }
            (&Method::GET, "/mock/health") => ok(json!({ "status": "ok" })),
            _ => not_found(parts, None),
        }
    }

    pub fn error(status: StatusCode, message: &str, echo: Option<&Value>) -> Response<RespBody> {
        let (kind, code) = openai::error_kind(status.as_u16());
        let v = json!({
            "error": { "message": message, "type": kind, "param": null, "code": code }
        });
        json_response(status, v, echo, None)
    }

    /// JSON response; with `drop = Some((k, grace))` the full Content-Length
    /// is announced but the body is cut after at most min(k, len - 1) bytes
    /// and aborted.
    fn json_response(
        status: StatusCode,
        mut v: Value,
        echo: Option<&Value>,
        drop: Option<(u64, Duration)>,
    ) -> Response<RespBody> {
        if let (Some(e), Value::Object(m)) = (echo, &mut v) {
            m.insert("mock_echo".into(), e.clone());
        }
        let bytes = Bytes::from(v.to_string());
        let mut resp = match drop {
            None => Response::new(body::full(bytes)),
            Some((k, grace)) => {
                let len = bytes.len();
                let cut = usize::try_from(k)
                    .unwrap_or(usize::MAX)
                    .min(len.saturating_sub(1));
                let (tx, rx) = mpsc::channel(2);
                let _ = tx.try_send(Msg::Data(bytes.slice(..cut)));
                let _ = tx.try_send(Msg::Abort);
                let mut r = Response::new(body::channel(rx, grace));
                r.headers_mut()
                    .insert(CONTENT_LENGTH, HeaderValue::from(len));
                r
            }
        };
        *resp.status_mut() = status;
        resp.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        resp
    }

    fn parse_object(ctx: &Ctx<'_>) -> Result<Map<String, Value>, String> {
        match serde_json::from_slice::<Value>(ctx.body) {
            Ok(Value::Object(m)) => Ok(m),
            Ok(_) => Err("The request body must be a JSON object.".to_owned()),
            Err(e) => Err(format!(
                "We could not parse the JSON body of your request: {e}"
            )),
        }
    }

    fn model_of(req: &Map<String, Value>) -> Value {
        req.get("model")
            .cloned()
            .unwrap_or_else(|| json!("mock-model"))
    }

    /// Chat and legacy completions, streaming or not.
    fn generate(ctx: &Ctx<'_>, kind: sse::Kind) -> Response<RespBody> {
        let req = match parse_object(ctx) {
            Ok(r) => r,
            Err(msg) => return error(StatusCode::BAD_REQUEST, &msg, ctx.echo.as_ref()),
        };
        let o = &ctx.opts;
        let max_u64 = |k: &str| req.get(k).and_then(Value::as_u64);
        let (max, prompt_tokens) = match kind {
            sse::Kind::Chat => (
                max_u64("max_completion_tokens").or_else(|| max_u64("max_tokens")),
                openai::chat_prompt_tokens(req.get("messages")),
            ),
            sse::Kind::Completion => (
                max_u64("max_tokens"),
                openai::inputs(req.get("prompt"))
                    .iter()
                    .map(|(_, t)| *t)
                    .sum(),
            ),
        };
        let n = max.map_or(o.chunks, |m| m.min(o.chunks));
        let finish = if max.is_some_and(|m| m < o.chunks) {
            "length"
        } else {
            "stop"
        };
        let usage = openai::usage(prompt_tokens, n, o);
        let prefix = match kind {
            sse::Kind::Chat => "chatcmpl-mock-",
            sse::Kind::Completion => "cmpl-mock-",
        };
        let id = format!("{prefix}{}", ctx.state.next_id());
        let created = now_secs();
        let model = model_of(&req);

        if req.get("stream").and_then(Value::as_bool).unwrap_or(false) {
            let include_usage = req
                .get("stream_options")
                .and_then(|s| s.get("include_usage"))
                .and_then(Value::as_bool)
                .unwrap_or(false);
            let plan = sse::Plan {
                kind,
                id,
                created,
                model,
                n,
                finish,
                usage: (include_usage && !o.no_usage).then_some(usage),
                chunk_delay: Duration::from_millis(o.chunk_delay_ms),
                drop_after: o.drop_after,
                crlf: o.crlf,
                echo: ctx.echo.clone(),
            };
            let (tx, rx) = mpsc::channel(32);
            tokio::spawn(sse::run(plan, tx));
            let mut resp = Response::new(body::channel(rx, ctx.abort_grace));
            let h = resp.headers_mut();
            h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
            h.insert(
                hyper::header::CACHE_CONTROL,
                HeaderValue::from_static("no-cache"),
            );
            return resp;
        }

        let text = openai::content(n);
        let (object, choice) = match kind {
            sse::Kind::Chat => (
                "chat.completion",
                json!({
                    "index": 0,
                    "message": { "role": "assistant", "content": text, "refusal": null },
                    "logprobs": null,
                    "finish_reason": finish,
                }),
            ),
            sse::Kind::Completion => (
                "text_completion",
                json!({ "index": 0, "text": text, "logprobs": null, "finish_reason": finish }),
            ),
        };
        let mut m = Map::new();
        m.insert("id".into(), json!(id));
        m.insert("object".into(), json!(object));
        m.insert("created".into(), json!(created));
        m.insert("model".into(), model);
        if kind == sse::Kind::Chat {
            m.insert("system_fingerprint".into(), json!("fp_mock"));
        }
        m.insert("choices".into(), json!([choice]));
        if !o.no_usage {
            m.insert("usage".into(), usage);
        }
        json_response(
            StatusCode::OK,
            Value::Object(m),
            ctx.echo.as_ref(),
            o.drop_after.map(|k| (k, ctx.abort_grace)),
        )
    }

    fn embeddings(ctx: &Ctx<'_>) -> Response<RespBody> {
        let req = match parse_object(ctx) {
            Ok(r) => r,
            Err(msg) => return error(StatusCode::BAD_REQUEST, &msg, ctx.echo.as_ref()),
        };
        let dims = req
            .get("dimensions")
            .and_then(Value::as_u64)
            .filter(|d| (1..=4096).contains(d))
            .and_then(|d| usize::try_from(d).ok())
            .unwrap_or(8);
        let items = openai::inputs(req.get("input"));
        let prompt_tokens: u64 = items.iter().map(|(_, t)| *t).sum();
        let data: Vec<Value> = items
            .iter()
            .enumerate()
            .map(|(i, (material, _))| {
                json!({ "object": "embedding", "index": i, "embedding": openai::embedding(material, dims) })
            })
            .collect();
        let mut m = Map::new();
        m.insert("object".into(), json!("list"));
        m.insert("data".into(), Value::Array(data));
        m.insert("model".into(), model_of(&req));
        if !ctx.opts.no_usage {
            m.insert(
                "usage".into(),
                json!({ "prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens }),
            );
        }
        json_response(
            StatusCode::OK,
            Value::Object(m),
            ctx.echo.as_ref(),
            ctx.opts.drop_after.map(|k| (k, ctx.abort_grace)),
        )
    }

    fn models(ctx: &Ctx<'_>) -> Response<RespBody> {
        let data: Vec<Value> = [
            "gpt-4o",
            "gpt-4o-mini",
            "gpt-3.5-turbo-instruct",
            "text-embedding-3-small",
            "mock-model",
        ]
        .iter()
        .map(|id| json!({ "id": id, "object": "model", "created": 1_700_000_000u64, "owned_by": "mock-llm" }))
        .collect();
        json_response(
            StatusCode::OK,
            json!({ "object": "list", "data": data }),
            ctx.echo.as_ref(),
            None,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_known_vectors() {
        assert_eq!(util::fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(util::fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(util::fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn prompt_tokens_formula() {
        let msgs = serde_json::json!([
            {"role": "system", "content": "12345"},
            {"role": "user", "content": [{"type": "text", "text": "abcd"}, {"type": "image_url"}]},
            {"role": "assistant"}
        ]);
        // (ceil(5/4)+3) + (ceil(4/4)+3) + (0+3)
        assert_eq!(openai::chat_prompt_tokens(Some(&msgs)), 12);
        assert_eq!(openai::content(3), "Hello wörld 世界");
    }

    #[test]
    fn embeddings_are_unit_and_deterministic() {
        let a = openai::embedding("x", 8);
        assert_eq!(a, openai::embedding("x", 8));
        let n: f64 = a.iter().map(|v| v * v).sum();
        assert!((n - 1.0).abs() < 1e-4);
    }
}
