//! `mock-llm`: a fast, deterministic mock of the OpenAI, Azure OpenAI,
//! Anthropic Messages and Google Gemini HTTP APIs, used by Tollgate's
//! integration and load tests as the upstream provider.
//!
//! # CLI
//!
//! ```text
//! mock-llm [--listen 127.0.0.1:8090] [--tls-cert FILE --tls-key FILE] [--threads N]
//!          [--flag-word WORD]
//! ```
//!
//! * `--listen ADDR` (default `127.0.0.1:8090`). Port `0` picks a free port. After
//!   binding, exactly two lines are printed to stdout (and flushed):
//!   `mock-llm listening on <actual addr>` and `mock-llm instance <id>`; tests parse
//!   them to learn the port and then wait until `GET /mock/health` returns that id.
//! * `--tls-cert FILE --tls-key FILE`: PEM certificate chain and PEM private key
//!   (PKCS#8, PKCS#1/RSA or SEC1/EC). Serves HTTPS with ALPN `h2` and `http/1.1`.
//! * `--threads N`: number of tokio worker threads (default: one per CPU).
//! * `--flag-word WORD`: the word that `…/moderations` flags (default `flagme`).
//!
//! Plain-text listeners speak HTTP/1.1 (keep-alive) and h2c (prior knowledge),
//! auto-detected per connection. The process exits with status 0 on
//! SIGINT/SIGTERM.
//!
//! # Generated output (all protocols)
//!
//! N "tokens", where N = `x-mock-chunks` (default 8), capped by the request's
//! output limit when given (OpenAI `max_completion_tokens`/`max_tokens`,
//! Anthropic `max_tokens`, Gemini `generationConfig.maxOutputTokens`); if the
//! cap cut the output the finish reason is `"length"` / `"max_tokens"` /
//! `"MAX_TOKENS"`, else `"stop"` / `"end_turn"` / `"STOP"`. Token `i` is
//! `WORDS[i % 8]` = `"Hello", " wörld", " 世界", " from", " mock", " 🚀", " llm", "."`.
//! Output tokens = N (+ `x-mock-reasoning-tokens` where the protocol adds them).
//!
//! Prompt tokens ("chars" = Unicode scalar values, `ceil(chars / 4)` per text):
//! * OpenAI chat: `sum over messages of (ceil(chars(text)/4) + 3)`; text = the
//!   `content` string, or the concatenated `text` fields of its parts.
//! * Anthropic: the same over `messages`, plus one more message for `system`
//!   (string or text blocks) when present. Message text = the content string, or
//!   the concatenated `text` of text blocks and of `tool_result` contents (string or
//!   text blocks); image and tool_use blocks count 0.
//! * Gemini: the same over `contents`, plus one more for `systemInstruction`
//!   when present; text = concatenated `parts[].text` (inlineData, functionCall,
//!   functionResponse count 0).
//! * OpenAI completions / embeddings: `sum over inputs of ceil(chars / 4)` for
//!   strings, and the array length for token arrays.
//!
//! # OpenAI endpoints
//!
//! Paths are matched by suffix, so `/v1/chat/completions` and
//! `/openai/deployments/x/chat/completions?api-version=..` both work.
//!
//! * `POST …/chat/completions`: chat completion (`stream`, `stream_options.include_usage`,
//!   `max_tokens` / `max_completion_tokens` honoured; `model` echoed verbatim).
//! * `POST …/completions`: legacy text completion (`prompt`: string, array of
//!   strings, token array, or array of token arrays).
//! * `POST …/embeddings`: `input` as string, array of strings, token array or
//!   array of token arrays; one unit-length vector per input, 256 dims (or
//!   `dimensions` if given, 1..=4096): a hashed bag of its words (lowercase, stop
//!   words left out, each adding ±1 where its FNV hash points), so paraphrases are
//!   near and different questions far; a text without such words gets a vector
//!   derived from an FNV hash of the whole input.
//! * `POST …/moderations`: `input` as for embeddings; one result per input,
//!   `{"flagged":F,"categories":{"harassment":F,"violence":false},"category_scores":{..}}`,
//!   F true when the input contains the flag word (`--flag-word`, default `flagme`,
//!   case-insensitive); `{"id":"modr-mock-N","model":<model>,"results":[..]}`, no usage.
//! * `POST …/images/generations`, `…/images/edits`, `…/images/variations`,
//!   `…/audio/speech`, `…/audio/transcriptions`, `…/audio/translations`, `…/rerank`:
//!   deterministic media answers and their usage (`media.rs` has the units); uploads are
//!   multipart, and the answer's `x-mock-file-bytes` says how many file bytes arrived.
//! * `POST …/responses`: OpenAI's Responses API, streaming and not (`responses.rs` has the
//!   token counts, the function call and the event sequence): `input` (string or items),
//!   `instructions`, `max_output_tokens` (a cut answer is `status: "incomplete"`), `tools`
//!   with `x-mock-tool-call: NAME` or a `tool_choice` naming a function → one
//!   `function_call` item; usage `{input_tokens, input_tokens_details.cached_tokens,
//!   output_tokens, output_tokens_details.reasoning_tokens, total_tokens}` in the body and
//!   in the stream's last event (`response.completed`, or `response.incomplete`).
//!   Streams are `event: <type>` + `data: {"type":<type>,"sequence_number":n,..}`; the
//!   content chunks (for `x-mock-chunk-delay-ms`, `x-mock-drop-after`) are the
//!   `response.output_text.delta` (one per token) or the three
//!   `response.function_call_arguments.delta` events. With `x-mock-echo` a stream starts
//!   with `event: mock_echo`.
//! * `GET …/responses/{id}`, `GET …/responses/{id}/input_items`, `DELETE …/responses/{id}`,
//!   `POST …/responses/{id}/cancel`: stored responses, stateless (any id is found; see
//!   `responses.rs`).
//! * `…/files`, `…/files/{id}`, `…/files/{id}/content`, `…/batches`, `…/batches/{id}`,
//!   `…/batches/{id}/cancel` (Azure's `/openai/files`, `/openai/batches` too): files and
//!   batches in memory, each object visible to the key that made it only (`files.rs`).
//! * `GET …/models`, `GET …/models/{id}`: a small static model list / any id.
//! * Anything else: 404 with an OpenAI-style error body.
//!
//! Malformed JSON (or a non-object body) on a POST endpoint gives 400 with
//! `{"error":{"message":..,"type":"invalid_request_error","param":null,"code":null}}`.
//! Usage: `{prompt_tokens, completion_tokens, total_tokens}`.
//!
//! Streaming (`"stream": true`) sends `text/event-stream`, one SSE event per body
//! frame: `data: {chunk}\n\n`. Chat: a role chunk (`delta: {role:"assistant",content:""}`),
//! one chunk per token, a finish chunk (empty delta + `finish_reason`), then, if
//! `stream_options.include_usage` is true, a chunk with `"choices": []` and the
//! usage (and every earlier chunk carries `"usage": null`), then `data: [DONE]`.
//! Legacy completions are the same minus the role chunk, with `choices[0].text`.
//!
//! # Azure OpenAI (`/openai/deployments/{deployment}/…`)
//!
//! Same endpoints and bodies as OpenAI (chat, completions, embeddings). The
//! `api-version` query parameter is required: without it the answer is 404
//! `{"error":{"code":"404","message":"Resource not found"}}` (as Azure). The
//! `api-key` header is accepted (counted as the credential, never required).
//! When the body has no `model`, the deployment name is reported as `model`.
//!
//! # Anthropic Messages (`POST …/messages`, `POST …/messages/count_tokens`)
//!
//! Headers `x-api-key` (missing → 401 `authentication_error`) and
//! `anthropic-version` (missing → 400 `invalid_request_error`) are required.
//! Errors: `{"type":"error","error":{"type":T,"message":..}}` with T =
//! `invalid_request_error` (400, other 4xx), `authentication_error` (401),
//! `permission_error` (403), `not_found_error` (404), `request_too_large` (413),
//! `rate_limit_error` (429), `api_error` (5xx), `overloaded_error` (529).
//! `model` (string), `messages` (array) and `max_tokens` (integer >= 1) are
//! required (400 otherwise).
//!
//! Response: `{"id":"msg_mock_N","type":"message","role":"assistant","model":<model>,
//! "content":[{"type":"text","text":..}],"stop_reason":"end_turn"|"max_tokens",
//! "stop_sequence":null,"usage":{"input_tokens":P,"output_tokens":N,
//! "cache_read_input_tokens":C,"cache_creation_input_tokens":0}}`, with C =
//! `x-mock-cached-tokens` (default 0; reported in addition to P, as Anthropic's
//! input_tokens excludes cache reads) and N including `x-mock-reasoning-tokens`.
//!
//! Tool use: when `tools` is non-empty and either `x-mock-tool-call: NAME` is sent
//! or `tool_choice` is `{"type":"tool","name":X}` (NAME = X) or `{"type":"any"}`
//! (NAME = first tool), the content is one block `{"type":"tool_use",
//! "id":"toolu_mock_N","name":NAME,"input":{"location":"Paris"}}` and
//! `stop_reason` is `"tool_use"` (the header wins over `tool_choice`).
//!
//! Streaming: `event: NAME\ndata: {"type":NAME,..}\n\n` events: `message_start`
//! (message with empty content, usage input_tokens P and output_tokens 1),
//! `content_block_start` (index 0), `ping`, one `content_block_delta` per token
//! (`text_delta`; tool use: three `input_json_delta` `partial_json` fragments
//! concatenating to `{"location": "Paris"}`), `content_block_stop`,
//! `message_delta` (`stop_reason`, `usage.output_tokens` = N), `message_stop`.
//!
//! `count_tokens` answers `{"input_tokens":P}`.
//!
//! # Gemini (`POST …/{model}:{method}`, e.g. `/v1beta/models/gemini-2.0-flash:generateContent`)
//!
//! An `x-goog-api-key` header or `key` query parameter is required; missing →
//! 401 `{"error":{"code":401,"message":..,"status":"UNAUTHENTICATED"}}`. Errors
//! use that shape with status `INVALID_ARGUMENT` (400), `PERMISSION_DENIED`
//! (403), `NOT_FOUND` (404), `RESOURCE_EXHAUSTED` (429), `INTERNAL` (500),
//! `UNAVAILABLE` (503), `DEADLINE_EXCEEDED` (504), …. Unknown methods under
//! `/v1beta/models` → 404.
//!
//! * `:generateContent`: needs non-empty `contents`. Response:
//!   `{"candidates":[{"content":{"role":"model","parts":[{"text":..}]},
//!   "finishReason":"STOP"|"MAX_TOKENS","index":0}],"usageMetadata":{
//!   "promptTokenCount":P,"candidatesTokenCount":N,"totalTokenCount":P+N+R,
//!   ("cachedContentTokenCount":C),("thoughtsTokenCount":R)},
//!   "modelVersion":<model from the path>,"responseId":"mock-N"}`, where C =
//!   `x-mock-cached-tokens` and R = `x-mock-reasoning-tokens` (each only when sent).
//!   With non-empty `tools` and `x-mock-tool-call: NAME` (or
//!   `toolConfig.functionCallingConfig.mode: "ANY"`, NAME = first
//!   `allowedFunctionNames` entry, else the first declared function), the part is
//!   `{"functionCall":{"name":NAME,"args":{"location":"Paris"}}}` (finishReason `STOP`).
//! * `:streamGenerateContent`: one GenerateContentResponse per token (one text
//!   part each; a single one for a function call or N = 0), each with running
//!   usageMetadata (candidatesTokenCount = tokens so far; the last is final),
//!   `finishReason` only on the last. With `?alt=sse`: `text/event-stream`,
//!   `data: {json}\r\n\r\n` per response (`x-mock-crlf: 0` switches to `\n`).
//!   Without: `application/json`, one JSON array streamed as `[` + first,
//!   `,\r\n` + each next, `]`.
//! * `:countTokens` (`contents` or `generateContentRequest`) → `{"totalTokens":P}`.
//! * `:embedContent` → `{"embedding":{"values":[..]}}`; `:batchEmbedContents`
//!   (`requests[]`) → `{"embeddings":[{"values":[..]},..]}`; 8 values per
//!   content (or `outputDimensionality`, 1..=4096), the same hashed bag of words
//!   as OpenAI's embeddings; no token counts (as Google).
//!
//! # Request headers (all endpoints except `/mock/*`)
//!
//! Numeric headers must be non-negative integers, otherwise the response is 400
//! (in the path's provider style). Boolean headers are true for `1`, `true`,
//! `yes`, `on` (case-insensitive). Provider pre-checks (Anthropic / Gemini auth,
//! Azure `api-version`) run before faults and do not consume fault rules.
//!
//! * `x-mock-chunks: N`: number of generated tokens (default 8, capped at 1,000,000).
//! * `x-mock-chunk-delay-ms: D`: sleep D ms between consecutive content chunks
//!   when streaming (not before the first one). Content chunks are: OpenAI token
//!   chunks, Anthropic `content_block_delta` events, Gemini streamed responses.
//! * `x-mock-delay-ms: D`: sleep D ms before sending the response headers.
//! * `x-mock-status: CODE` (200..=599): CODE >= 300 responds with that status and
//!   an error body in the path's provider style. OpenAI: 5xx → type `server_error`;
//!   429 → type and code `rate_limit_exceeded`; 401/403 → type
//!   `invalid_request_error`, code `invalid_api_key`; others →
//!   `invalid_request_error`. Anthropic / Gemini: as listed above. 2xx is ignored.
//! * `x-mock-retry-after: S`: with an `x-mock-status` fault, also send `Retry-After: S`
//!   (value copied verbatim).
//! * `x-mock-drop-after: K`: streaming: after K content chunks the connection is
//!   aborted (HTTP/1: connection closed without the terminating chunk; HTTP/2:
//!   RST_STREAM, sent 25 ms after the last DATA frame so those frames arrive
//!   first). K = 0 drops before the first content chunk (after the OpenAI role
//!   chunk, after Anthropic's `ping`); K = N drops right after the last one (before
//!   the OpenAI finish chunk, Anthropic `content_block_stop`, Gemini's closing `]`
//!   or the end of the SSE stream); K > N drops nothing. Non-streaming: the full
//!   `Content-Length` is announced, but only the first min(K, len-1) bytes of the
//!   body are sent before aborting.
//! * `x-mock-cached-tokens: K`: OpenAI usage gets `prompt_tokens_details:
//!   {cached_tokens: K}`; Anthropic `cache_read_input_tokens: K`; Gemini
//!   `cachedContentTokenCount: K`.
//! * `x-mock-reasoning-tokens: R`: OpenAI usage gets `completion_tokens_details:
//!   {reasoning_tokens: R}` and R is added to `completion_tokens`; Anthropic adds
//!   R to `output_tokens`; Gemini reports `thoughtsTokenCount: R` (in the total).
//! * `x-mock-no-usage: 1`: never send usage (OpenAI `usage`, Anthropic `usage`,
//!   Gemini `usageMetadata`), streaming or not, even if asked.
//! * `x-mock-crlf: 1`: SSE uses `\r\n` line endings instead of `\n` (Gemini SSE
//!   uses `\r\n` by default; `x-mock-crlf: 0` there gives `\n`).
//! * `x-mock-tool-call: NAME`: Anthropic / Gemini / Responses requests with non-empty
//!   `tools` answer with a call of tool NAME (see above). Ignored by OpenAI chat.
//! * `x-mock-echo: 1`: non-streaming JSON responses (errors included) get a
//!   top-level `mock_echo` object `{method, path, query (string|null), version,
//!   headers {lowercased name: value, duplicates joined with ", "}, body_len,
//!   body_fnv64, body (parsed JSON if valid and < 64 KiB, else null)}`; when
//!   streaming it is sent first: OpenAI / Gemini SSE `data: {"mock_echo": {...}}`,
//!   Anthropic `event: mock_echo` with `data: {"type":"mock_echo","mock_echo":{...}}`,
//!   Gemini JSON-array streams as the first array element `{"mock_echo": {...}}`.
//!
//! * `x-mock-reply-parrot: 1`: OpenAI chat completions answer with the text of the
//!   last `user` message (its content string, or its parts' `text` joined) instead of
//!   the generated words; streamed, it is cut into `x-mock-chunks` (default 8) pieces
//!   of nearly equal length in characters, one content chunk each (fewer pieces when the
//!   text is shorter), so a value can be split across chunks. `max_tokens` does not cut
//!   it; completion tokens = the number of pieces.
//! * `x-mock-reply-latin1: 1`: a non-streamed OpenAI chat answer is written in Latin-1:
//!   its characters U+0080..=U+00FF as one byte each, so the body is not UTF-8 when it has
//!   any (with `x-mock-reply-parrot`, `café` comes back as `caf\xE9`).
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
//!   `x-api-key`, else `api-key`, else `x-goog-api-key`, else the `key` query
//!   parameter); absent = every request. `status` defaults to
//!   500; a status < 300 only applies `delay_ms`. `count` = number of requests
//!   to affect (absent = until cleared). The first matching rule with remaining
//!   count applies (exhausted rules are removed). An `x-mock-status` header
//!   takes precedence and does not consume rules. Unknown fields → 400.
//! * `GET /mock/faults` lists the rules, `DELETE /mock/faults` clears them.
//! * `GET /mock/stats` → `{"requests_total": n, "by_key": {cred: n}, "by_path": {path: n},
//!   "streams_cancelled": n}` counting every non-`/mock/` request (requests without a
//!   credential are not in `by_key`) and the streams cut short because the client closed
//!   its connection; `DELETE /mock/stats` resets.
//! * `GET /mock/health` → `{"status":"ok","instance":"<id>"}` (the id printed at start).
//!
//! # Source layout
//!
//! `router` (entry, faults, control endpoints) → `openai` (with `responses`, `files`) / `anthropic` /
//! `gemini` (protocols), built on `reply` (context, error styles, JSON
//! responses), `stream` (event framing and pacing), `opts` (`x-mock-*`
//! headers), `body`, `state`, `util`, `tls`.

mod anthropic;
mod body;
mod files;
mod gemini;
mod media;
mod openai;
mod opts;
mod reply;
mod responses;
mod router;
mod state;
mod stream;
mod tls;
mod util;

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
    /// The word `…/moderations` flags.
    #[arg(long, default_value = openai::DEFAULT_FLAG_WORD)]
    flag_word: String,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let _ = openai::FLAG_WORD.set(args.flag_word.clone());
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
        let _ = writeln!(out, "mock-llm instance {}", state::instance_id());
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
                async move { Ok::<_, Infallible>(router::handle(state, req).await) }
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
