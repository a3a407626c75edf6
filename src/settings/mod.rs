//! The settings: the config file as plain data, exactly as an operator writes it.
//!
//! One tree of serde types (`Settings` and its sections) that reads the YAML file and writes
//! it back: parse → `to_yaml` → parse gives an equal value, and a section left at its default
//! or an option left out is not written, so a written file is as small as the one read.
//! Closed sets are enums (`ProviderType`, `Window`, `RateKey`, `OnError`, …), durations are
//! `HumanDuration` (`500ms`, `5s`), and every struct denies unknown fields, so a typo is an
//! error naming the field. Text is held as written: `${VAR}` references stay references and
//! secrets (`Secret`) are the text of the file, never a variable's value; expansion happens
//! when `runtime` builds the runtime from the settings.
//!
//! Nothing here knows the gateway's services: domain modules use these types or convert
//! from them, never the other way round.

mod access;
mod alerts;
mod analytics;
mod budgets;
mod cache;
mod policies;
mod pricing;
mod prompts;
mod providers;
mod redact;
mod routes;
mod schema;
mod server;
#[cfg(test)]
mod tests;
mod text;
mod tracing;

pub use access::{
    AuthSection, ConsumerSection, CredentialSource, OnError, QuotaSection, RateKey,
    RateLimitSection, RedisSection, StoreSection, Window,
};
pub use alerts::{AlertKind, AlertRuleSection, AlertsSection, WebhookFormat, WebhookSection};
pub use analytics::AnalyticsSection;
pub use budgets::{BudgetPeriod, BudgetSection, Unpriced};
pub use cache::{CacheScope, CacheSection, RouteCacheSection, SemanticCacheSection};
pub use policies::{
    CustomDetectorSection, DenyListSection, DenySection, PiiDetector, PiiMode, PiiSection,
};
pub use pricing::{Currency, PriceSection, PricingSection};
pub use prompts::{
    DecoratorsSection, ModerationOnError, ModerationOutputSection, ModerationSection,
    ModerationVia, PromptMessage, PromptRole, TemplateSection, TemplateVariableSection,
    VariableType,
};
pub use providers::{
    HealthFailure, HealthSection, KeyEntry, NamedKey, ProviderSection, ProviderType, TimeoutSection,
};
pub use redact::mask_digest;
pub use routes::{
    AllKeysDown, ModelRuleSection, RetrySection, RouteAuthSection, RouteSection, TargetSection,
};
pub use schema::api_schemas;
pub use server::{
    AccessLogPath, AccessLogSection, ClientSection, DnsSection, LimitsSection, ListenerSection,
    ListenersSection, MetricsSection, ServerSection, TlsSection,
};
pub use text::{HumanDuration, Secret};
pub use tracing::TracingSection;

use serde::{Deserialize, Serialize};
use text::is_default;

/// The whole file: Pingora's server settings and the gateway's own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    #[serde(default, skip_serializing_if = "is_default")]
    pub server: ServerSection,
    pub listeners: ListenersSection,
    #[serde(default, skip_serializing_if = "is_default")]
    pub limits: LimitsSection,
    /// Deadlines and memory bounds for client connections.
    #[serde(default, skip_serializing_if = "is_default")]
    pub client: ClientSection,
    #[serde(default, skip_serializing_if = "is_default")]
    pub access_log: AccessLogSection,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub providers: Vec<ProviderSection>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteSection>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub consumers: Vec<ConsumerSection>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub auth: AuthSection,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rate_limits: Vec<RateLimitSection>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub metrics: MetricsSection,
    /// The embedded store for quotas and hour/day windows (one machine).
    #[serde(default, skip_serializing_if = "is_default")]
    pub store: StoreSection,
    /// A shared Redis for limits and quotas across several gateways.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisSection>,
    /// Token balances per consumer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quota: Option<QuotaSection>,
    /// Addresses (CIDRs) of proxies in front of the gateway whose `X-Forwarded-For` is
    /// believed; the client IP is the right-most address not in this list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trusted_proxies: Vec<String>,
    /// Name resolution of provider hosts.
    #[serde(default, skip_serializing_if = "is_default")]
    pub dns: DnsSection,
    /// Built-in usage rollups and recent requests.
    #[serde(default, skip_serializing_if = "is_default")]
    pub analytics: AnalyticsSection,
    /// Alert rules evaluated from the rollups, and their webhooks.
    #[serde(default, skip_serializing_if = "is_default")]
    pub alerts: AlertsSection,
    /// OpenTelemetry traces over OTLP/HTTP (off when absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tracing: Option<TracingSection>,
    /// What requests cost in money: the price book.
    #[serde(default, skip_serializing_if = "is_default")]
    pub pricing: PricingSection,
    /// Money budgets per consumer, team, route or provider key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub budgets: Vec<BudgetSection>,
    /// The response cache's memory (routes turn it on with `routes[].cache`).
    #[serde(default, skip_serializing_if = "is_default")]
    pub cache: CacheSection,
    /// Named prompt templates clients invoke with variables (`"model": "template:NAME"`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub templates: Vec<TemplateSection>,
}

/// Read settings from YAML text. The error is serde's, its path naming list entries that
/// have a `name` the way validation does: `providers[0] (openai).type: …`.
pub fn from_yaml(text: &str) -> Result<Settings, String> {
    serde_yaml::from_str(text).map_err(|e| name_entries(&e.to_string(), text))
}

/// Write settings as YAML; `from_yaml` reads back an equal value.
pub fn to_yaml(settings: &Settings) -> String {
    // Every type here is plain data with string keys: serialising cannot fail.
    serde_yaml::to_string(settings).unwrap_or_default()
}

/// A revision tag of `settings`: 16 hex digits of a 64-bit FNV-1a hash of their YAML form,
/// the same for equal settings in any process (not a security hash).
pub fn revision(settings: &Settings) -> String {
    fingerprint(to_yaml(settings).as_bytes())
}

/// 16 hex digits of a 64-bit FNV-1a hash of `bytes` (a revision tag, not a security hash).
pub fn fingerprint(bytes: &[u8]) -> String {
    let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("{hash:016x}")
}

/// `message` with every `list[i]` of its leading path followed by ` (name)` when that entry
/// of the document has a `name`. Anything that is not such a path is left as it is.
fn name_entries(message: &str, text: &str) -> String {
    let Some((path, rest)) = message.split_once(": ") else {
        return message.to_string();
    };
    let Ok(doc) = serde_yaml::from_str::<serde_yaml::Value>(text) else {
        return message.to_string();
    };
    let mut out = String::with_capacity(message.len() + 16);
    let mut node = Some(&doc);
    let mut left = path;
    while !left.is_empty() {
        if let Some(after) = left.strip_prefix('[') {
            let Some(end) = after.find(']') else {
                out.push_str(left);
                break;
            };
            out.push('[');
            out.push_str(&after[..=end]);
            let index = after[..end].parse::<usize>().ok();
            node = node.zip(index).and_then(|(n, i)| n.get(i));
            if let Some(name) = node.and_then(|n| n.get("name")).and_then(|v| v.as_str()) {
                out.push_str(&format!(" ({name})"));
            }
            left = &after[end + 1..];
        } else {
            let key_start = left.strip_prefix('.').unwrap_or(left);
            if key_start.len() != left.len() {
                out.push('.');
            }
            let end = key_start.find(['.', '[']).unwrap_or(key_start.len());
            let key = &key_start[..end];
            out.push_str(key);
            node = node.and_then(|n| n.get(key));
            left = &key_start[end..];
        }
    }
    format!("{out}: {rest}")
}
