//! Tollgate: an OpenAI-compatible AI gateway on Cloudflare's Pingora.
//!
//! Layout, in the order a request meets it:
//! - `settings`: the YAML file as plain serde data, read and written back as written;
//!   `config`: settings → the validated snapshot (`model::Gateway`), swapped atomically
//!   through `SharedConfig`.
//! - `proxy`: the Pingora `ProxyHttp` phases. `proxy::pipeline` serves the client-facing
//!   request; `proxy::attempt` is one upstream attempt, driven by `proxy::pipe`.
//! - `auth`: consumers and their credentials; `limits`: token and request rate limits;
//!   `quota`: token balances; `store`: where long-lived counters are kept (SQLite, Redis).
//! - `route`: route, endpoint and model rule for a request; `pattern`: model-name patterns
//!   and the provider model mapping; `route::models`: what `GET /models` lists to a caller.
//! - `body`: the request's top-level JSON fields and the byte-splicing rewrite.
//! - `provider`: where providers live (URL, TLS, keys, the peer), host resolution off the
//!   request path (`resolve`).
//! - `protocol`: the wire protocols on both sides: `ClientProtocol` (OpenAI or Anthropic
//!   Messages, and the rendering of every client-visible error in its shape) and one
//!   `ProviderProtocol` per provider family (`openai`, `azure`, `anthropic`, `gemini`: path,
//!   authentication, request/response/stream translation over `translate`, usage, error
//!   bodies), with the registry `PRESETS` of provider types; `proxy::plan` joins the two.
//! - `keys`: a provider's API-key pool and each key's health; `health`: what an attempt's
//!   result means for its key, retry decisions, and active health checks.
//! - `sse`, `usage`: the incremental SSE parser and token metering.
//! - `forward`: which client headers reach a provider; `scrub`: provider keys and raw
//!   upstream bytes kept out of what clients receive.
//! - `error`: every client-visible error (`GatewayError`), mapped to status and a code of
//!   the closed set `ErrorCode`; its body is rendered by the client's protocol.
//! - `metrics`, `access_log`, `admin`: what operators see; `reload`: config hot reload.
//! - `conn`: client-connection policy (connection cap, header and keep-alive deadlines,
//!   pipelining, the memory budget for request bodies).
//! - `server`: assembling the Pingora server and its services; `preflight`: what a start
//!   needs from the machine (free listener addresses, loadable files), shared with `-t`;
//!   `lifecycle`: the start-up lines and report (`--ready-file`) and the exit once a
//!   shutdown has nothing in flight; `instance`: this process's id (`GET /healthz`);
//!   `logging`: the server log (stderr or `server.error_log`).
//! - `fuzzing` (tests and the `fuzzing` feature only): the fuzz targets, run as property tests
//!   by `cargo test` and by `cargo fuzz` from `fuzz/`.

pub mod access_log;
pub mod admin;
pub mod auth;
pub mod background;
pub mod body;
pub mod conn;
pub mod error;
pub mod forward;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
pub mod health;
pub mod instance;
pub mod keys;
pub mod lifecycle;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod pattern;
pub mod preflight;
pub mod protocol;
pub mod provider;
pub mod proxy;
pub mod quota;
pub mod reload;
pub mod route;
pub mod runtime;
pub mod scrub;
pub mod server;
pub mod settings;
pub mod sse;
pub mod state;
pub mod store;
pub mod translate;
pub mod usage;
