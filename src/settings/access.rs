//! Who may call and how much: `consumers`, `auth`, `rate_limits`, `quota`, and where the
//! counters live (`store`, `redis`).

use super::text::{is_false, text_serde, word_enum, HumanDuration, Secret};
use serde::{Deserialize, Serialize};

/// A caller of the gateway.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsumerSection {
    pub name: String,
    /// Credentials (API keys) this consumer presents; `${VAR}` allowed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub credentials: Vec<Secret>,
    /// Credentials known only by their SHA-256 digest (`sha256:` and 64 hex digits): what
    /// the management API stores for a key it generated, shown to the caller once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hashed_credentials: Vec<String>,
    /// The team (a group of consumers) this consumer belongs to, for team budgets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    /// Messages added around this consumer's conversations (after the route's prepended
    /// ones, before the route's appended ones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decorators: Option<super::DecoratorsSection>,
}

/// Where consumer credentials are read.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    /// In order. Default: bearer, header:x-api-key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sources: Option<Vec<CredentialSource>>,
}

/// Where a credential may be found: `bearer`, `header:NAME` or `query:NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialSource {
    Bearer,
    /// A header name, valid as one.
    Header(String),
    Query(String),
}

impl std::fmt::Display for CredentialSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CredentialSource::Bearer => f.write_str("bearer"),
            CredentialSource::Header(h) => write!(f, "header:{h}"),
            CredentialSource::Query(q) => write!(f, "query:{q}"),
        }
    }
}

/// A header name as written after `header:`, trimmed and checked.
fn header_name(h: &str) -> Result<String, String> {
    let h = h.trim();
    http::HeaderName::from_bytes(h.as_bytes())
        .map(|_| h.to_string())
        .map_err(|_| format!("`{h}` is not a header name"))
}

impl std::str::FromStr for CredentialSource {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s == "bearer" {
            return Ok(CredentialSource::Bearer);
        }
        if let Some(h) = s.strip_prefix("header:") {
            return header_name(h).map(CredentialSource::Header);
        }
        if let Some(q) = s.strip_prefix("query:") {
            return Ok(CredentialSource::Query(q.trim().to_string()));
        }
        Err(format!("`{s}`: expected bearer, header:NAME or query:NAME"))
    }
}

text_serde!(CredentialSource);

/// A token/request limit per key and window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSection {
    pub name: String,
    pub key: RateKey,
    /// For `ip` and `cidr` keys: the rule applies only to client addresses in these CIDRs;
    /// `cidr` counts each block as one (default: every address, each counted alone).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cidrs: Vec<String>,
    /// For `header:` keys: the values counted (`*` = each distinct value). For `consumer`
    /// keys: the consumers limited, each with its own budget (others are not limited by
    /// this rule). Default `*`; other keys take none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
    pub window: Window,
    /// Input + output tokens per window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens: Option<u64>,
    /// Input tokens alone, and output tokens alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests: Option<u64>,
    /// Reserve `max_tokens` at admission as well as the prompt estimate (default false).
    #[serde(default, skip_serializing_if = "is_false")]
    pub reserve_max_tokens: bool,
    /// Routes the rule applies to (default: all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<String>,
}

/// What a rate-limit rule counts per.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RateKey {
    Consumer,
    Route,
    Ip,
    Cidr,
    ProviderKey,
    /// `header:NAME`, the name valid as a header name.
    Header(String),
}

impl std::fmt::Display for RateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RateKey::Consumer => "consumer",
            RateKey::Route => "route",
            RateKey::Ip => "ip",
            RateKey::Cidr => "cidr",
            RateKey::ProviderKey => "provider_key",
            RateKey::Header(h) => return write!(f, "header:{h}"),
        })
    }
}

impl std::str::FromStr for RateKey {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "consumer" => RateKey::Consumer,
            "route" => RateKey::Route,
            "ip" => RateKey::Ip,
            "cidr" => RateKey::Cidr,
            "provider_key" => RateKey::ProviderKey,
            k => match k.strip_prefix("header:") {
                Some(h) => RateKey::Header(header_name(h)?),
                None => {
                    return Err(format!(
                        "`{k}`: expected consumer, route, ip, cidr, provider_key or header:NAME"
                    ))
                }
            },
        })
    }
}

text_serde!(RateKey);

word_enum! {
    /// A rate-limit window.
    pub enum Window {
        Second = "second",
        Minute = "minute",
        Hour = "hour",
        Day = "day",
    }
}

impl Window {
    pub fn secs(self) -> u64 {
        match self {
            Window::Second => 1,
            Window::Minute => 60,
            Window::Hour => 3600,
            Window::Day => 86400,
        }
    }

    /// Hour and day windows are kept in the embedded store on one machine.
    pub fn is_long(self) -> bool {
        matches!(self, Window::Hour | Window::Day)
    }
}

impl std::str::FromStr for Window {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::from_word(s).ok_or_else(|| format!("`{s}`: expected second, minute, hour or day"))
    }
}

text_serde!(Window);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QuotaSection {
    /// Consumers whose spending is charged to a balance (`*` = every consumer).
    pub consumers: Vec<String>,
    /// The consumer allowed to call the quota API on the proxy listener.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_consumer: Option<String>,
    /// Reserve the request's `max_tokens` too, not only its prompt estimate (default false).
    #[serde(default, skip_serializing_if = "is_false")]
    pub reserve_max_tokens: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    /// SQLite database file (default `state.db`; a relative path is in the state directory).
    /// Opened only when a quota or an hour/day window needs it and no `redis` is configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Longest time a window-counter change waits before it is written (default 50ms).
    /// Quota changes are written before they are acknowledged, whatever this says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flush_interval: Option<HumanDuration>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSection {
    /// `redis://[user:password@]host:port[/db]`, or `rediss://` for TLS; `${VAR}` allowed
    /// (it may hold a password). With `cluster: true`, a seed node of the cluster.
    pub url: Secret,
    /// A Redis Cluster (default false): `url` and `nodes` are seeds, the client follows the
    /// cluster's own map of slots. Every key is hash-tagged with the prefix (`{prefix}:…`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<bool>,
    /// More seed nodes of the cluster (same scheme and credentials as `url`); only with
    /// `cluster: true`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<Secret>,
    /// PEM file of the CA certificate(s) that sign the server's certificate, for a private CA
    /// (`rediss://` only; default: the platform's root certificates).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// Prefix of every key the gateway writes (default `tollgate`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Deadline of one call (default 100ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HumanDuration>,
    /// When Redis fails (default `open`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_error: Option<OnError>,
}

word_enum! {
    /// What to do when the shared store fails.
    #[derive(Default)]
    pub enum OnError {
        /// Admit the request unchecked (counted in `tollgate_store_fail_open_total`).
        #[default]
        Open = "open",
        /// Refuse it with 503.
        Closed = "closed",
    }
}

impl std::str::FromStr for OnError {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::from_word(s).ok_or_else(|| format!("`{s}`: expected open or closed"))
    }
}

text_serde!(OnError);
