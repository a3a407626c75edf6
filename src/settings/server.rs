//! Process-level sections: `server` (Pingora's), `listeners`, `limits`, `client`,
//! `access_log`, `metrics` and `dns`.

use super::text::{is_true, text_serde, HumanDuration, Secret};
use serde::{Deserialize, Serialize};

/// Pingora's `ServerConf`, the fields an operator may set. Absent fields keep the gateway's
/// defaults (see `runtime::ServerSettings`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threads: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub work_stealing: Option<bool>,
    /// Default `tollgate.pid`; like `upgrade_sock` and `error_log`, a relative path is in the
    /// state directory (`--state-dir`, else the config file's directory).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid_file: Option<String>,
    /// Default `upgrade.sock`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upgrade_sock: Option<String>,
    /// The server log, in the foreground as when daemonised (default: stderr).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_log: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub daemon: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grace_period_seconds: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub graceful_shutdown_timeout_seconds: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_keepalive_pool_size: Option<usize>,
    /// CA bundle that replaces the platform roots for every upstream (prefer a provider's
    /// own `ca_file`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenersSection {
    pub proxy: Vec<ListenerSection>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin: Option<ListenerSection>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerSection {
    pub address: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSection>,
    /// Admin listener only: bearer token required for `/admin/*`; `${VAR}` allowed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<Secret>,
    /// Admin listener only: serve the web console at `/console/` (default true).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub console: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    pub cert: String,
    pub key: String,
    /// Offer HTTP/2 by ALPN (default true).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub http2: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    /// Largest request body accepted, in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<usize>,
}

/// The `client:` block: how long and how much the gateway waits for and holds on behalf of
/// client connections, and the cap on one event of a provider's stream.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientSection {
    /// How long an idle keep-alive connection is kept open between requests (default 75s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keepalive_timeout: Option<HumanDuration>,
    /// Total time allowed to receive a request header (default 60s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header_timeout: Option<HumanDuration>,
    /// Total time allowed to receive a request body (default 60s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body_timeout: Option<HumanDuration>,
    /// Concurrent client connections per listener kind (default 10000); more are closed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<usize>,
    /// Bytes of request bodies held in memory at once, summed over all requests (default
    /// 256 MiB); beyond it requests get 503 `server_busy`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_body_memory_bytes: Option<usize>,
    /// Largest SSE line or event read from a provider stream (default 1 MiB); a longer one
    /// ends the stream with an error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_event_bytes: Option<usize>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLogSection {
    /// `stdout` (or `-`), `off`, or a file path. Default `stdout`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<AccessLogPath>,
    /// Lines buffered between the request path and the writer; beyond it lines are dropped
    /// (and counted) rather than stalling requests.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub buffer_lines: Option<usize>,
}

/// Where access-log lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogPath {
    /// `stdout` (`-` reads as this too).
    Stdout,
    /// `off`.
    Off,
    /// A file, as written (`${VAR}` allowed; relative to the state directory).
    File(String),
}

impl std::fmt::Display for AccessLogPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AccessLogPath::Stdout => "stdout",
            AccessLogPath::Off => "off",
            AccessLogPath::File(path) => path,
        })
    }
}

impl std::str::FromStr for AccessLogPath {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "stdout" | "-" => AccessLogPath::Stdout,
            "off" => AccessLogPath::Off,
            path => AccessLogPath::File(path.to_string()),
        })
    }
}

text_serde!(AccessLogPath);

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    /// Per-consumer token series (default true).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consumer_labels: Option<bool>,
    /// At most this many consumers get their own series; the rest share `consumer="other"`
    /// (default 1000).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_consumer_series: Option<usize>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsSection {
    /// How often provider host names are resolved again (default 30s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh: Option<HumanDuration>,
}
