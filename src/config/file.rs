//! The YAML file schema, exactly as an operator writes it.
//!
//! Every struct denies unknown fields so that a typo is an error naming the field, never a
//! silently ignored setting. Nothing here is validated beyond its YAML shape: `super::model`
//! turns this into the checked internal model the gateway runs on.

use indexmap::IndexMap;
use serde::Deserialize;

/// The whole file: Pingora's server settings and the gateway's own.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub server: ServerSection,
    pub listeners: ListenersSection,
    #[serde(default)]
    pub limits: LimitsSection,
    /// Deadlines and memory bounds for client connections.
    #[serde(default)]
    pub client: super::client::ClientSection,
    #[serde(default)]
    pub access_log: AccessLogSection,
    #[serde(default)]
    pub providers: Vec<ProviderSection>,
    #[serde(default)]
    pub routes: Vec<RouteSection>,
    #[serde(default)]
    pub consumers: Vec<ConsumerSection>,
    #[serde(default)]
    pub auth: AuthSection,
    #[serde(default)]
    pub rate_limits: Vec<RateLimitSection>,
    #[serde(default)]
    pub metrics: MetricsSection,
    /// The embedded store for quotas and hour/day windows (one machine).
    #[serde(default)]
    pub store: StoreSection,
    /// A shared Redis for limits and quotas across several gateways.
    pub redis: Option<RedisSection>,
    /// Token balances per consumer.
    pub quota: Option<QuotaSection>,
    /// Addresses (CIDRs) of proxies in front of the gateway whose `X-Forwarded-For` is
    /// believed; the client IP is the right-most address not in this list.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// Name resolution of provider hosts.
    #[serde(default)]
    pub dns: DnsSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsSection {
    /// How often provider host names are resolved again (default 30s).
    pub refresh: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    /// SQLite database file (default `state.db`; a relative path is in the state directory,
    /// see `super::paths`). Opened only when a quota or an hour/day window needs it and no
    /// `redis` is configured.
    pub path: Option<String>,
    /// Longest time a window-counter change waits before it is written (default 50ms).
    /// Quota changes are written before they are acknowledged, whatever this says.
    pub flush_interval: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSection {
    /// `redis://[user:password@]host:port[/db]`; `${VAR}` allowed.
    pub url: String,
    /// Prefix of every key the gateway writes (default `tollgate`).
    pub prefix: Option<String>,
    /// Deadline of one call (default 100ms).
    pub timeout: Option<String>,
    /// When Redis fails: `open` (admit, the default) or `closed` (refuse with 503).
    pub on_error: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaSection {
    /// Consumers whose spending is charged to a balance (`*` = every consumer).
    pub consumers: Vec<String>,
    /// The consumer allowed to call the quota API on the proxy listener.
    pub admin_consumer: Option<String>,
    /// Reserve the request's `max_tokens` too, not only its prompt estimate (default false).
    #[serde(default)]
    pub reserve_max_tokens: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    /// Per-consumer token series (default true).
    pub consumer_labels: Option<bool>,
    /// At most this many consumers get their own series; the rest share `consumer="other"`
    /// (default 1000).
    pub max_consumer_series: Option<usize>,
}

/// A token/request limit per key and window.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSection {
    pub name: String,
    /// `consumer`, `route`, `ip`, `cidr`, `provider_key` or `header:NAME`.
    pub key: String,
    /// For `ip` and `cidr` keys: the rule applies only to client addresses in these CIDRs;
    /// `cidr` counts each block as one (default: every address, each counted alone).
    #[serde(default)]
    pub cidrs: Vec<String>,
    /// For `header:` keys: the values counted (`*` = each distinct value). For `consumer`
    /// keys: the consumers limited, each with its own budget (others are not limited by
    /// this rule). Default `*`; other keys take none.
    #[serde(default)]
    pub values: Vec<String>,
    /// `second`, `minute`, `hour` or `day`.
    pub window: String,
    /// Input + output tokens per window.
    pub tokens: Option<u64>,
    /// Input tokens alone, and output tokens alone.
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub requests: Option<u64>,
    /// Reserve `max_tokens` at admission as well as the prompt estimate (default false).
    #[serde(default)]
    pub reserve_max_tokens: bool,
    /// Routes the rule applies to (default: all).
    #[serde(default)]
    pub routes: Vec<String>,
}

/// A caller of the gateway.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumerSection {
    pub name: String,
    /// Credentials (API keys) this consumer presents; `${VAR}` allowed.
    pub credentials: Vec<String>,
}

/// Where consumer credentials are read.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    /// In order: `bearer`, `header:NAME`, `query:NAME`. Default: bearer, header:x-api-key.
    pub sources: Option<Vec<String>>,
}

/// A route's access rule.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteAuthSection {
    /// Requests without a known consumer credential get 401 (default false).
    #[serde(default)]
    pub required: bool,
    /// Consumers allowed on this route; empty = every consumer.
    #[serde(default)]
    pub allow: Vec<String>,
}

/// Pingora's `ServerConf`, the fields an operator may set. Absent fields keep the gateway's
/// defaults (see `model::ServerSettings`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    pub threads: Option<usize>,
    pub work_stealing: Option<bool>,
    /// Default `tollgate.pid`; like `upgrade_sock` and `error_log`, a relative path is in the
    /// state directory (`--state-dir`, else the config file's directory).
    pub pid_file: Option<String>,
    /// Default `upgrade.sock`.
    pub upgrade_sock: Option<String>,
    /// The server log, in the foreground as when daemonised (default: stderr).
    pub error_log: Option<String>,
    pub user: Option<String>,
    pub group: Option<String>,
    pub daemon: Option<bool>,
    pub grace_period_seconds: Option<u64>,
    pub graceful_shutdown_timeout_seconds: Option<u64>,
    pub upstream_keepalive_pool_size: Option<usize>,
    /// CA bundle that replaces the platform roots for every upstream (prefer a provider's
    /// own `ca_file`).
    pub ca_file: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenersSection {
    pub proxy: Vec<ListenerSection>,
    pub admin: Option<ListenerSection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerSection {
    pub address: String,
    pub tls: Option<TlsSection>,
    /// Admin listener only: bearer token required for `/admin/*`.
    pub token: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    pub cert: String,
    pub key: String,
    /// Offer HTTP/2 by ALPN (default true).
    #[serde(default = "yes")]
    pub http2: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLogSection {
    /// `stdout`, `off`, or a file path. Default `stdout`.
    pub path: Option<String>,
    /// Lines buffered between the request path and the writer; beyond it lines are dropped
    /// (and counted) rather than stalling requests.
    pub buffer_lines: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSection {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub base_url: Option<String>,
    #[serde(default)]
    pub api_keys: Vec<KeyEntry>,
    /// Requested model → upstream model. Keys: exact name, `prefix*`, `~regex`, or `*`.
    #[serde(default)]
    pub model_mapping: IndexMap<String, String>,
    /// Model names this provider serves, listed by `GET /v1/models`.
    #[serde(default)]
    pub models: Vec<String>,
    /// List this provider's models even when it has no configured key (default false:
    /// `GET /models` lists only what a caller can use).
    #[serde(default)]
    pub list_unconfigured: bool,
    #[serde(default)]
    pub timeouts: TimeoutSection,
    /// PEM CA bundle trusted for this provider only (platform roots stay for the others).
    pub ca_file: Option<String>,
    /// Override the TLS server name (SNI and certificate check); default the URL's host.
    pub sni: Option<String>,
    /// Speak HTTP/2 to the provider (default false): negotiated by ALPN over TLS, prior
    /// knowledge (h2c) over plain HTTP. Many requests share one connection.
    pub http2: Option<bool>,
    #[serde(default)]
    pub health: HealthSection,
    /// Azure OpenAI `api-version` (default 2024-10-21).
    pub api_version: Option<String>,
    /// Connect to this `ip:port` instead of resolving the URL's host; TLS name and `Host`
    /// stay the URL's (like curl's `--connect-to`).
    pub connect_to: Option<String>,
}

/// Key health: passive failure counting and active checks of keys out of rotation.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthSection {
    /// Consecutive failures that take a key out (default 3).
    pub failure_threshold: Option<u32>,
    /// Successful checks that bring it back (default 1).
    pub success_threshold: Option<u32>,
    /// Between checks of a key out of rotation (default 5s).
    pub check_interval: Option<String>,
    /// Longest a check may take (default 5s).
    pub check_timeout: Option<String>,
    /// Model the check asks for (default: the provider's first `models` entry).
    pub check_model: Option<String>,
    /// Outcomes that count as failures: `connect`, `timeout`, a status (`429`) or a class
    /// (`5xx`). Default: connect, timeout, 429, 5xx.
    pub failures: Option<Vec<String>>,
}

/// An API key: a plain string, or a named one (`{name, key, weight}`) so logs can say which.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum KeyEntry {
    Plain(String),
    Named {
        name: String,
        key: String,
        /// Share of requests relative to the provider's other keys (default 1).
        #[serde(default)]
        weight: Option<u32>,
    },
}

/// Durations as `humantime` strings: `500ms`, `5s`, `2m`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutSection {
    pub connect: Option<String>,
    /// Longest wait for any read from the provider, including the first byte.
    pub read: Option<String>,
    pub write: Option<String>,
    /// How long an unused pooled connection is kept.
    pub idle: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSection {
    pub name: String,
    /// Host names this route serves (`*.example.com` allowed); empty = any host.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Path prefix of the OpenAI API, default `/v1`.
    pub path_prefix: Option<String>,
    pub models: Vec<ModelRuleSection>,
    #[serde(default)]
    pub retry: RetrySection,
    #[serde(default)]
    pub auth: RouteAuthSection,
    /// When no key of any target is usable: `fail_fast` (503 at once, the default) or
    /// `try_anyway` (attempt keys out of rotation).
    pub all_keys_down: Option<String>,
    /// Client headers forwarded to the provider besides the built-in allow-list: names
    /// (any case) or prefixes ending in `*`. Credential headers are refused.
    #[serde(default)]
    pub forward_headers: Vec<String>,
    /// `GET /models` lists the models of every provider of this route, even those without
    /// a configured key (default false).
    #[serde(default)]
    pub list_unconfigured: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySection {
    /// Most attempts for one request, across keys and targets (default: every configured
    /// key of the rule's two targets with the most keys, at least 3, at most 10).
    pub attempts: Option<u32>,
    /// Most keys tried on one target before the next target (default: every usable key).
    pub per_target: Option<u32>,
    /// No new attempt starts after this long (default 60s).
    pub deadline: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelRuleSection {
    /// Pattern on the requested model: exact, `prefix*`, `~regex`, or `*`.
    pub model: String,
    pub targets: Vec<TargetSection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetSection {
    pub provider: String,
    /// Model to ask this target for, instead of the provider's mapping of the requested one.
    pub model: Option<String>,
    #[serde(default = "one")]
    pub weight: u32,
}

fn one() -> u32 {
    1
}
