//! Tollgate: an OpenAI-compatible AI gateway on Cloudflare's Pingora.
//!
//! Layout, in layers: each module uses only modules of the layers above it in this list or
//! its own (`.ci/modgraph.py src`, run by `tests/run.sh`, finds no cycle).
//!
//! Settings and the running snapshot:
//! - `settings`: the YAML file as plain serde data (serialisable, comparable), read and
//!   written back as written, `${VAR}` kept as references; it imports no gateway module.
//! - `runtime`: settings → the validated, immutable snapshot (`Gateway`), built with the
//!   previous snapshot so live state (key health, rate counters, resolved addresses) is
//!   carried over by the names the settings give; swapped atomically (`SharedConfig`).
//!
//! The request path (`proxy`, the Pingora `ProxyHttp`), as stages in `proxy::pipeline`:
//! `routing` → `ingress` (and `prompts`: a template expanded) → `admission` (after
//! authentication, `policies`: deny rules and PII masking, then `prompts`: input moderation
//! and decorators) → `budgets` → `cache` → `attempts` (the loop in `retry`, each attempt
//! planned by `plan` and run by `pipe`/`attempt`, the answer's policies applied as it is
//! sent) → `accounting`; `exchange` is the record accounting reads; `models_api` and
//! `quota_api` are the gateway's own answers; `responses_api` the calls on a stored
//! response; `files_api` OpenAI's files and batches passed through to the provider and key
//! that made each object; `count_tokens` Anthropic's token counting;
//! `loopback` is the gateway's requests to its own listener (the semantic cache's
//! embeddings, moderation).
//!
//! The domain, used by the request path and built by `runtime`:
//! - `route` (routes, endpoints, model rules, attempt order; `route::models`: what
//!   `GET /models` lists), `pattern` (model-name patterns and mapping).
//! - `provider` (URL, TLS, keys and the peer; `resolve`: host lookup off the request path),
//!   `keys` (a key pool and each key's health), `health` (what an attempt's end means for
//!   its key; `Retry-After`).
//! - `protocol`: the wire protocols on both sides, `ClientProtocol` (OpenAI, OpenAI's
//!   Responses API or Anthropic Messages, and the rendering of every client-visible error in
//!   its shape) and one
//!   `ProviderProtocol` per provider family with the registry `PRESETS`; the translators
//!   behind it are in `translate`.
//! - `auth` (consumers and credentials), `limits` (token and request rate limits), `quota`
//!   (token balances), `store` (where long-lived counters live: SQLite, Redis; and which
//!   provider and key made each file or batch passed through), `state`
//!   (the process's stores and quotas, opened once, across reloads).
//! - `body` (the request's top-level fields and the splicing rewrite), `sse` and `usage`
//!   (the incremental SSE parser and token metering), `forward` (which client headers
//!   reach a provider), `scrub` (provider keys kept out of what clients receive).
//! - `error`: every client-visible error (`GatewayError`), a status and a code of the
//!   closed set `ErrorCode`; rendered by the client's protocol.
//! - `pricing`: what a request costs in money (the price book: `pricing:` over the shipped,
//!   dated `pricing/defaults.yaml`; exact integer picounits); `budget`: money budgets per
//!   consumer, team, route or provider key over calendar periods in a time zone (reserved at
//!   admission at the dearest target's price, settled with the real cost, in the embedded
//!   store or Redis); `cache`: the response cache (exact keys of normalised requests and
//!   their scope, read in one pass by `cache::key`, hashed by `cache::keyed` in memory,
//!   long strings by their remembered
//!   digests in `cache::long`; answers checked by `cache::whole`, kept
//!   whole and replayed as streams, in memory and Redis; and
//!   `cache::semantic`, paraphrases in the same context found by their embeddings, exactly
//!   or through `cache::graph`'s HNSW graph).
//! - `policy`: prompt and content policies (decorators, templates, PII masking and its
//!   restore, deny rules, moderation), each action recorded for metrics and the access log.
//! - `metrics`, `access_log`: what operators see of requests; `analytics` (per-minute usage
//!   rollups in SQLite and the ring of recent requests, fed off the request path) and
//!   `alerts` (rules evaluated from the rollups and the quota balances, their states and
//!   webhook notices); `otel` (OpenTelemetry spans of requests and their attempts, W3C trace
//!   context, exported over OTLP/HTTP by a thread of its own).
//! - `users` (admin users: argon2 password hashes, roles, login sessions), `managed` (the
//!   management API's own objects: the layer merged with the operator's file, the edits an
//!   API call makes, history and audit, kept in the state directory or a shared Redis).
//!
//! Around them (the composition root and operations):
//! - `server`: assembles the Pingora server, its proxy and admin services and the
//!   `background` services (active key checks, DNS refresh, following a shared API layer,
//!   evaluating alert rules);
//!   `admin`: the admin listener and the management API; `reload`: installing a new
//!   snapshot (a file reload or an API write, one at a time); `conn`: client-connection policy (connection cap,
//!   deadlines, pipelining, the body memory budget); `preflight`: what a start needs from the
//!   machine, shared with `-t`; `lifecycle`: start-up lines and report (`--ready-file`) and
//!   the exit once a shutdown has nothing in flight; `instance`: this process's id
//!   (`GET /healthz`); `logging`: the server log.
//! - `fuzzing` (tests and the `fuzzing` feature only): the fuzz targets, run as property
//!   tests by `cargo test` and by `cargo fuzz` from `fuzz/`.

pub mod access_log;
pub mod admin;
pub mod alerts;
pub mod analytics;
pub mod auth;
pub mod background;
pub mod body;
pub mod budget;
pub mod cache;
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
pub mod managed;
pub mod metrics;
pub mod otel;
pub mod pattern;
pub mod policy;
pub mod preflight;
pub mod pricing;
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
pub mod users;
