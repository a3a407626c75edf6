//! The validated internal model: what the gateway runs on.
//!
//! Built from `settings::Settings` by `Gateway::build`; every reference is resolved (routes
//! hold `Arc<Provider>`), every pattern compiled, every secret expanded. A `Gateway` is
//! immutable; a reload builds a new one and swaps it in.

use super::access::{build_consumers, build_limits, build_quota, build_store, parse_net};
use super::env::expand;
use super::providers::build_provider;
use super::routes::build_route;
use super::ConfigError;
use crate::auth::Consumers;
use crate::limits::Limits;
use crate::provider::Provider;
use crate::quota::QuotaSettings;
use crate::route::Route;
use crate::settings::{self, AccessLogPath, HumanDuration, Settings};
use crate::store::StoreSettings;
use ipnet::IpNet;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

pub const DEFAULT_MAX_BODY: usize = 32 * 1024 * 1024;

/// Settings handed to Pingora's `ServerConf`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSettings {
    pub threads: usize,
    pub work_stealing: bool,
    pub pid_file: String,
    pub upgrade_sock: String,
    pub error_log: Option<String>,
    pub user: Option<String>,
    pub group: Option<String>,
    pub daemon: bool,
    pub grace_period_seconds: u64,
    pub graceful_shutdown_timeout_seconds: u64,
    pub upstream_keepalive_pool_size: usize,
    pub ca_file: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub address: String,
    pub tls: Option<ListenerTls>,
    /// Bearer token for `/admin/*` (admin listener only).
    pub token: Option<String>,
    /// The web console at `/console/` (admin listener only).
    pub console: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerTls {
    pub cert: String,
    pub key: String,
    pub http2: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogTarget {
    Off,
    Stdout,
    File(String),
}

#[derive(Debug)]
pub struct Gateway {
    pub server: ServerSettings,
    pub proxy_listeners: Vec<Listener>,
    pub admin_listener: Option<Listener>,
    pub max_body_bytes: usize,
    /// Client deadlines, connection cap and memory bounds (`client:`).
    pub client: super::client::ClientSettings,
    pub access_log: AccessLogTarget,
    pub access_log_buffer: usize,
    pub providers: Vec<Arc<Provider>>,
    pub routes: Vec<Route>,
    pub consumers: Consumers,
    pub limits: Limits,
    /// Where quotas and long windows are kept (opened once per process by `server`).
    pub store: StoreSettings,
    pub quota: Option<QuotaSettings>,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Consumers with their own metric series (`None`: per-consumer series are off).
    pub consumer_series: Option<std::collections::HashSet<String>>,
    /// How often provider host names are resolved again (`dns.refresh`).
    pub dns_refresh: Duration,
    /// The settings this snapshot was built from, as written (`${VAR}` unexpanded).
    pub settings: Arc<Settings>,
    /// Traces over OTLP (`tracing:`; `None`: off, nothing done per request).
    pub tracing: Option<Arc<crate::otel::TraceConfig>>,
    /// What requests cost (`pricing:` over the shipped price book).
    pub prices: crate::pricing::PriceBook,
    /// Money budgets (`budgets:`).
    pub budgets: crate::budget::BudgetBook,
    /// Each answer tells its cost (`pricing.cost_header`): `x-tollgate-cost`.
    pub cost_header: bool,
    /// Prompt decorators, templates and input moderation (`crate::policy::prompts`).
    pub prompts: crate::policy::prompts::Prompts,
}

pub(super) fn duration(value: &Option<HumanDuration>, default: Duration) -> Duration {
    value.map_or(default, Duration::from)
}

/// A count that sizes or bounds something: 0 would silently disable it, so it is an error.
pub(super) fn at_least_one<T: Copy + Default + PartialEq>(
    field: &str,
    value: Option<T>,
    default: T,
) -> Result<T, ConfigError> {
    match value {
        Some(v) if v == T::default() => Err(ConfigError::field(field, "must be at least 1")),
        v => Ok(v.unwrap_or(default)),
    }
}

/// A duration that bounds a wait: 0 would make every wait fail at once.
pub(super) fn positive_duration(
    field: &str,
    value: &Option<HumanDuration>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    let d = duration(value, default);
    if d.is_zero() {
        return Err(ConfigError::field(field, "must be longer than 0"));
    }
    Ok(d)
}

fn listener(field: &str, l: &settings::ListenerSection) -> Result<Listener, ConfigError> {
    l.address.parse::<std::net::SocketAddr>().map_err(|e| {
        ConfigError::field(format!("{field}.address"), format!("`{}`: {e}", l.address))
    })?;
    let tls = match &l.tls {
        None => None,
        Some(t) => {
            let cert =
                expand(&t.cert).map_err(|e| ConfigError::field(format!("{field}.tls.cert"), e))?;
            let key =
                expand(&t.key).map_err(|e| ConfigError::field(format!("{field}.tls.key"), e))?;
            for (name, path) in [("cert", &cert), ("key", &key)] {
                if !std::path::Path::new(path).is_file() {
                    return Err(ConfigError::field(
                        format!("{field}.tls.{name}"),
                        format!("file `{path}` does not exist"),
                    ));
                }
            }
            Some(ListenerTls {
                cert,
                key,
                http2: t.http2,
            })
        }
    };
    let token = l
        .token
        .as_ref()
        .map(|t| {
            expand(t.as_written()).map_err(|e| ConfigError::field(format!("{field}.token"), e))
        })
        .transpose()?;
    if token.as_ref().is_some_and(|t| t.is_empty()) {
        return Err(ConfigError::field(
            format!("{field}.token"),
            "must not be empty",
        ));
    }
    Ok(Listener {
        address: l.address.clone(),
        tls,
        token,
        console: l.console.unwrap_or(true),
    })
}

/// The price book; a price naming a provider or a provider type the config does not have is
/// refused (it would never apply).
fn prices(f: &Settings) -> Result<crate::pricing::PriceBook, ConfigError> {
    for (i, p) in f.pricing.prices.iter().enumerate() {
        if let Some(name) = &p.provider {
            if !f.providers.iter().any(|q| q.name == *name) {
                return Err(ConfigError::field(
                    format!("pricing.prices[{i}].provider"),
                    format!("no provider `{name}` in `providers`"),
                ));
            }
        }
        if let Some(kind) = &p.provider_type {
            if settings::ProviderType::from_word(kind).is_none() {
                return Err(ConfigError::field(
                    format!("pricing.prices[{i}].provider_type"),
                    format!("`{kind}`: expected {}", settings::ProviderType::words()),
                ));
            }
        }
    }
    crate::pricing::PriceBook::build(&f.pricing)
        .map_err(|(field, message)| ConfigError::field(field, message))
}

/// The budgets; one naming a consumer, team, route, provider or key the config does not
/// have is refused (it would never apply).
fn budgets(f: &Settings) -> Result<crate::budget::BudgetBook, ConfigError> {
    let teams: std::collections::HashMap<String, String> = f
        .consumers
        .iter()
        .filter_map(|c| Some((c.name.clone(), c.team.clone()?)))
        .collect();
    for (i, b) in f.budgets.iter().enumerate() {
        let field = |name: &str| format!("budgets[{i}] ({}).{name}", b.name);
        let missing = |what: &str, name: &str| format!("no {what} `{name}` in the config");
        fn named(v: &Option<String>) -> Option<&str> {
            v.as_deref().filter(|n| *n != "*")
        }
        if let Some(c) = named(&b.consumer) {
            if !f.consumers.iter().any(|x| x.name == c) {
                return Err(ConfigError::field(
                    field("consumer"),
                    missing("consumer", c),
                ));
            }
        }
        if let Some(t) = named(&b.team) {
            if !teams.values().any(|x| x == t) {
                return Err(ConfigError::field(
                    field("team"),
                    missing("consumer with team", t),
                ));
            }
        }
        if let Some(r) = named(&b.route) {
            if !f.routes.iter().any(|x| x.name == r) {
                return Err(ConfigError::field(field("route"), missing("route", r)));
            }
        }
        if let Some((p, k)) = named(&b.key).and_then(|k| k.split_once('/')) {
            let Some(provider) = f.providers.iter().find(|x| x.name == p) else {
                return Err(ConfigError::field(field("key"), missing("provider", p)));
            };
            // Keys as configured (one whose variable is unset is still a key of the config).
            let known = provider.api_keys.iter().enumerate().any(|(j, e)| match e {
                settings::KeyEntry::Plain(_) => k == format!("{p}#{j}"),
                settings::KeyEntry::Named(n) => n.name == k,
            });
            if k != "*" && !known {
                return Err(ConfigError::field(
                    field("key"),
                    missing("key", &format!("{p}/{k}")),
                ));
            }
        }
    }
    crate::budget::BudgetBook::build(&f.budgets, teams, f.pricing.cny_per_usd)
        .map_err(|(field, message)| ConfigError::field(field, message))
}

impl Gateway {
    /// Build the runtime snapshot from the settings. With `previous` (a reload), live state
    /// is carried over by the names the settings give (see `carry_tests`).
    pub fn build(f: &Settings, previous: Option<&Gateway>) -> Result<Self, ConfigError> {
        let (proxy_listeners, admin_listener) = build_listeners(&f.listeners)?;
        let providers = build_providers(f, previous)?;
        let consumers = build_consumers(f)?;
        let routes = build_routes(f, &providers, &consumers)?;
        let limits = build_limits(f, &routes, &consumers, previous)?;
        let store = build_store(f, &limits)?;
        let quota = build_quota(f, &consumers)?;
        let budgets = budgets(f)?;
        let trusted_proxies = f
            .trusted_proxies
            .iter()
            .enumerate()
            .map(|(i, c)| {
                parse_net(c).map_err(|e| ConfigError::field(format!("trusted_proxies[{i}]"), e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let max_body_bytes = at_least_one(
            "limits.max_body_bytes",
            f.limits.max_body_bytes,
            DEFAULT_MAX_BODY,
        )?;
        Ok(Gateway {
            server: build_server(&f.server)?,
            proxy_listeners,
            admin_listener,
            max_body_bytes,
            client: super::client::ClientSettings::build(&f.client, max_body_bytes)?,
            access_log: build_access_log(f)?,
            access_log_buffer: at_least_one(
                "access_log.buffer_lines",
                f.access_log.buffer_lines,
                65536,
            )?,
            providers,
            routes,
            limits,
            store,
            quota,
            trusted_proxies,
            consumer_series: f.metrics.consumer_labels.unwrap_or(true).then(|| {
                consumers
                    .names()
                    .iter()
                    .take(f.metrics.max_consumer_series.unwrap_or(1000))
                    .cloned()
                    .collect()
            }),
            consumers,
            dns_refresh: positive_duration("dns.refresh", &f.dns.refresh, Duration::from_secs(30))?,
            settings: Arc::new(f.clone()),
            tracing: super::tracing::build(f.tracing.as_ref())?,
            prices: prices(f)?,
            budgets,
            cost_header: f.pricing.cost_header(),
            prompts: crate::policy::prompts::Prompts::build(f)
                .map_err(|(field, message)| ConfigError::field(field, message))?,
        })
    }

    /// The subjects a budget has: its one target, or every name of its scope (consumers,
    /// teams, routes, keys) when it caps each one.
    pub fn budget_subjects(&self, b: &crate::budget::Budget) -> Vec<String> {
        use crate::budget::Scope;
        let mut names: Vec<String> = match b.scope {
            Scope::Consumer => self.consumers.names().to_vec(),
            Scope::Team => {
                let mut t: Vec<String> = self.budgets.teams.values().cloned().collect();
                t.sort();
                t.dedup();
                t
            }
            Scope::Route => self.routes.iter().map(|r| r.name.clone()).collect(),
            Scope::Key => self
                .providers
                .iter()
                .flat_map(|p| p.keys.iter().map(move |k| format!("{}/{}", p.name, k.name)))
                .collect(),
        };
        names.retain(|n| b.subject(n).is_some());
        names.truncate(1000);
        names
    }

    pub fn provider(&self, name: &str) -> Option<&Arc<Provider>> {
        self.providers.iter().find(|p| p.name == name)
    }
}

fn build_server(s: &settings::ServerSection) -> Result<ServerSettings, ConfigError> {
    Ok(ServerSettings {
        threads: at_least_one("server.threads", s.threads, 1)?,
        work_stealing: s.work_stealing.unwrap_or(true),
        pid_file: s
            .pid_file
            .clone()
            .unwrap_or_else(|| super::paths::DEFAULT_PID_FILE.into()),
        upgrade_sock: s
            .upgrade_sock
            .clone()
            .unwrap_or_else(|| super::paths::DEFAULT_UPGRADE_SOCK.into()),
        error_log: s.error_log.clone(),
        user: s.user.clone(),
        group: s.group.clone(),
        daemon: s.daemon.unwrap_or(false),
        grace_period_seconds: s.grace_period_seconds.unwrap_or(60),
        graceful_shutdown_timeout_seconds: s.graceful_shutdown_timeout_seconds.unwrap_or(10),
        upstream_keepalive_pool_size: s.upstream_keepalive_pool_size.unwrap_or(256),
        ca_file: s.ca_file.clone(),
    })
}

/// The proxy listeners (at least one, none with a token) and the admin listener.
fn build_listeners(
    l: &settings::ListenersSection,
) -> Result<(Vec<Listener>, Option<Listener>), ConfigError> {
    if l.proxy.is_empty() {
        return Err(ConfigError::field(
            "listeners.proxy",
            "at least one listener is required",
        ));
    }
    let proxy = l
        .proxy
        .iter()
        .enumerate()
        .map(|(i, l)| listener(&format!("listeners.proxy[{i}]"), l))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(i) = proxy.iter().position(|l| l.token.is_some()) {
        return Err(ConfigError::field(
            format!("listeners.proxy[{i}].token"),
            "only the admin listener takes a token",
        ));
    }
    if let Some(i) = l.proxy.iter().position(|l| l.console.is_some()) {
        return Err(ConfigError::field(
            format!("listeners.proxy[{i}].console"),
            "the console is served by the admin listener only",
        ));
    }
    let admin = l
        .admin
        .as_ref()
        .map(|l| listener("listeners.admin", l))
        .transpose()?;
    Ok((proxy, admin))
}

/// Every provider, names unique; each keeps what `previous` knew of the provider of the
/// same name (key health, resolved address).
fn build_providers(
    f: &Settings,
    previous: Option<&Gateway>,
) -> Result<Vec<Arc<Provider>>, ConfigError> {
    let mut providers: Vec<Arc<Provider>> = Vec::new();
    for (i, p) in f.providers.iter().enumerate() {
        if providers.iter().any(|q| q.name == p.name) {
            return Err(ConfigError::field(
                format!("providers[{i}].name"),
                format!("duplicate provider name `{}`", p.name),
            ));
        }
        let old = previous.and_then(|g| g.provider(&p.name)).map(|p| &**p);
        let provider = Arc::new(build_provider(i, p, old)?);
        if let Some(old) = old {
            provider.adopt_address(old);
        }
        providers.push(provider);
    }
    Ok(providers)
}

/// Every route, its targets resolved to `providers` and its allowed consumers known.
fn build_routes(
    f: &Settings,
    providers: &[Arc<Provider>],
    consumers: &Consumers,
) -> Result<Vec<Route>, ConfigError> {
    let by_name: HashMap<&str, Arc<Provider>> = providers
        .iter()
        .map(|p| (p.name.as_str(), p.clone()))
        .collect();
    let list_unconfigured: BTreeSet<&str> = f
        .providers
        .iter()
        .filter(|p| p.list_unconfigured)
        .map(|p| p.name.as_str())
        .collect();
    let routes = f
        .routes
        .iter()
        .enumerate()
        .map(|(i, r)| build_route(i, r, &by_name, &consumers.sources, &list_unconfigured))
        .collect::<Result<Vec<_>, _>>()?;
    for (i, r) in routes.iter().enumerate() {
        if let Some(name) = r.auth.allow.iter().find(|n| !consumers.names().contains(n)) {
            return Err(ConfigError::field(
                format!("routes[{i}] ({}).auth.allow", r.name),
                format!("unknown consumer `{name}`"),
            ));
        }
        if let Some(sem) = r.cache.as_ref().and_then(|c| c.semantic.as_ref()) {
            check_semantic(i, r, sem, &routes)?;
        }
    }
    Ok(routes)
}

/// A semantic cache's embeddings model must be routed by the route it names (or its own).
fn check_semantic(
    i: usize,
    r: &Route,
    sem: &crate::cache::semantic::Semantic,
    routes: &[Route],
) -> Result<(), ConfigError> {
    let field = |f: &str| format!("routes[{i}] ({}).cache.semantic.{f}", r.name);
    let serving = match &sem.route {
        None => r,
        Some(name) => routes
            .iter()
            .find(|x| x.name == *name)
            .ok_or_else(|| ConfigError::field(field("route"), format!("unknown route `{name}`")))?,
    };
    if serving.rule_index(&sem.model).is_none() {
        return Err(ConfigError::field(
            field("model"),
            format!(
                "route `{}` has no model rule for `{}`",
                serving.name, sem.model
            ),
        ));
    }
    Ok(())
}

fn build_access_log(f: &Settings) -> Result<AccessLogTarget, ConfigError> {
    Ok(match &f.access_log.path {
        None | Some(AccessLogPath::Stdout) => AccessLogTarget::Stdout,
        Some(AccessLogPath::Off) => AccessLogTarget::Off,
        Some(AccessLogPath::File(path)) => AccessLogTarget::File(
            expand(path).map_err(|e| ConfigError::field("access_log.path", e))?,
        ),
    })
}
