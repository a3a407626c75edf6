//! The validated internal model: what the gateway runs on.
//!
//! Built from `settings::Settings` by `Gateway::build`; every reference is resolved (routes
//! hold `Arc<Provider>`), every pattern compiled, every secret expanded. A `Gateway` is
//! immutable; a reload builds a new one and swaps it in.

use super::env::{expand, expand_key};
use super::ConfigError;
use crate::auth::{Consumers, Source};
use crate::forward::ForwardHeaders;
use crate::health::{FailureSet, HealthSettings};
use crate::keys::HealthPolicy;
use crate::keys::{ApiKey, KeyPool};
use crate::limits::{KeyBy, Limits, Measure, Rule};
use crate::pattern::{ModelMap, Pattern};
use crate::provider::{self, Provider, ProviderSpec, Timeouts, Upstream, PRESETS};
use crate::quota::{QuotaScope, QuotaSettings};
use crate::route::{HostPattern, ModelRule, RetryPolicy, Route, RouteAuth, Target};
use crate::settings::{self, AccessLogPath, HumanDuration, KeyEntry, RateKey, Settings};
use crate::store::redis::RedisSettings;
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
}

fn duration(value: &Option<HumanDuration>, default: Duration) -> Duration {
    value.map_or(default, Duration::from)
}

/// A count that sizes or bounds something: 0 would silently disable it, so it is an error.
fn at_least_one<T: Copy + Default + PartialEq>(
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
fn positive_duration(
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
    })
}

fn build_provider(
    i: usize,
    p: &settings::ProviderSection,
    previous: Option<&Provider>,
) -> Result<Provider, ConfigError> {
    let field = |f: &str| format!("providers[{i}] ({}).{f}", p.name);
    let (_, protocol, preset_url) = PRESETS
        .iter()
        .find(|(name, _, _)| *name == p.kind.as_str())
        .ok_or_else(|| {
            let known: Vec<&str> = PRESETS.iter().map(|(n, _, _)| *n).collect();
            ConfigError::field(
                field("type"),
                format!(
                    "unknown provider type `{}` (known: {})",
                    p.kind,
                    known.join(", ")
                ),
            )
        })?;
    let url = match &p.base_url {
        Some(u) => expand(u).map_err(|e| ConfigError::field(field("base_url"), e))?,
        None => preset_url
            .ok_or_else(|| ConfigError::field(field("base_url"), "required for this type"))?
            .to_string(),
    };
    let upstream = Upstream::parse(&url, p.sni.as_deref())
        .map_err(|e| ConfigError::field(field("base_url"), e))?;

    let mut keys = Vec::new();
    let mut missing = Vec::new();
    for (k, entry) in p.api_keys.iter().enumerate() {
        let (name, raw, weight) = match entry {
            KeyEntry::Plain(raw) => (format!("{}#{k}", p.name), raw, 1),
            KeyEntry::Named(named) => (named.name.clone(), &named.key, named.weight.unwrap_or(1)),
        };
        match expand_key(raw.as_written()) {
            Ok(value) => {
                let mut key = ApiKey::new(name, value)
                    .map(|key| key.with_weight(weight))
                    .map_err(|e| ConfigError::field(field(&format!("api_keys[{k}]")), e))?;
                if let Some(old) =
                    previous.and_then(|old| old.keys.iter().find(|o| o.name == key.name))
                {
                    key.adopt_health(old);
                }
                keys.push(key);
            }
            Err(var) => missing.push(var),
        }
    }

    let model_map = ModelMap::new(p.model_mapping.iter())
        .map_err(|e| ConfigError::field(field("model_mapping"), e))?;
    let defaults = Timeouts::default();
    let timeouts = Timeouts {
        connect: positive_duration(
            &field("timeouts.connect"),
            &p.timeouts.connect,
            defaults.connect,
        )?,
        read: positive_duration(&field("timeouts.read"), &p.timeouts.read, defaults.read)?,
        write: positive_duration(&field("timeouts.write"), &p.timeouts.write, defaults.write)?,
        idle: duration(&p.timeouts.idle, defaults.idle),
    };
    let ca = match &p.ca_file {
        None => None,
        Some(path) => {
            let path = expand(path).map_err(|e| ConfigError::field(field("ca_file"), e))?;
            Some(provider::load_ca(&path).map_err(|e| ConfigError::field(field("ca_file"), e))?)
        }
    };
    let health = build_health(&field, &p.health, &p.models)?;
    let connect_to = p
        .connect_to
        .as_ref()
        .map(|a| {
            expand(a)
                .and_then(|a| {
                    a.parse::<std::net::SocketAddr>()
                        .map_err(|e| format!("`{a}`: {e}"))
                })
                .map_err(|e| ConfigError::field(field("connect_to"), e))
        })
        .transpose()?;
    if p.api_version.is_some() && !protocol.takes_api_version() {
        return Err(ConfigError::field(
            field("api_version"),
            "only for type azure",
        ));
    }
    Ok(Provider::new(ProviderSpec {
        api_version: p.api_version.clone(),
        connect_to,
        name: p.name.clone(),
        kind: p.kind.as_str().to_string(),
        protocol: *protocol,
        upstream,
        keys: KeyPool::new(keys, missing),
        model_map,
        models: p.models.clone(),
        timeouts,
        ca,
        health,
        http2: p.http2.unwrap_or(false),
    }))
}

fn build_health(
    field: &dyn Fn(&str) -> String,
    h: &settings::HealthSection,
    models: &[String],
) -> Result<HealthSettings, ConfigError> {
    let d = HealthSettings::default();
    let failures = match &h.failures {
        None => d.failures,
        Some(list) => FailureSet::from_settings(list),
    };
    Ok(HealthSettings {
        policy: HealthPolicy {
            failure_threshold: at_least_one(
                &field("health.failure_threshold"),
                h.failure_threshold,
                d.policy.failure_threshold,
            )?,
            success_threshold: at_least_one(
                &field("health.success_threshold"),
                h.success_threshold,
                d.policy.success_threshold,
            )?,
        },
        check_interval: positive_duration(
            &field("health.check_interval"),
            &h.check_interval,
            d.check_interval,
        )?,
        check_timeout: positive_duration(
            &field("health.check_timeout"),
            &h.check_timeout,
            d.check_timeout,
        )?,
        check_model: h
            .check_model
            .clone()
            .or_else(|| models.first().cloned())
            .unwrap_or(d.check_model),
        failures,
    })
}

fn build_route(
    i: usize,
    r: &settings::RouteSection,
    providers: &HashMap<&str, Arc<Provider>>,
    sources: &[Source],
    list_unconfigured: &BTreeSet<&str>,
) -> Result<Route, ConfigError> {
    let route_field = |f: &str| format!("routes[{i}] ({}).{f}", r.name);
    let d = RetryPolicy::default();
    let all_keys_down = r.all_keys_down.unwrap_or_default();
    let retry = RetryPolicy {
        attempts: match r.retry.attempts {
            None => None,
            v => Some(at_least_one(&route_field("retry.attempts"), v, 1)?),
        },
        per_target: at_least_one(
            &route_field("retry.per_target"),
            r.retry.per_target,
            d.per_target,
        )?,
        deadline: positive_duration(
            &route_field("retry.deadline"),
            &r.retry.deadline,
            d.deadline,
        )?,
        all_keys_down,
    };
    let mut rules = Vec::new();
    for (j, rule) in r.models.iter().enumerate() {
        let field = |f: &str| format!("routes[{i}] ({}).models[{j}].{f}", r.name);
        let pattern =
            Pattern::parse(&rule.model).map_err(|e| ConfigError::field(field("model"), e))?;
        if rule.targets.is_empty() {
            return Err(ConfigError::field(
                field("targets"),
                "at least one target is required",
            ));
        }
        let mut targets = Vec::new();
        for (k, t) in rule.targets.iter().enumerate() {
            let provider = providers.get(t.provider.as_str()).ok_or_else(|| {
                ConfigError::field(
                    field(&format!("targets[{k}].provider")),
                    format!("unknown provider `{}`", t.provider),
                )
            })?;
            targets.push(Target {
                provider: provider.clone(),
                weight: t.weight,
                model: t.model.clone(),
            });
        }
        if targets.iter().all(|t| t.weight == 0) {
            return Err(ConfigError::field(field("targets"), "all weights are 0"));
        }
        rules.push(ModelRule::new(pattern, targets, retry.attempts));
    }
    let prefix = r.path_prefix.clone().unwrap_or_else(|| "/v1".into());
    if !prefix.starts_with('/') {
        return Err(ConfigError::field(
            format!("routes[{i}] ({}).path_prefix", r.name),
            "must start with `/`",
        ));
    }
    let mut route = Route {
        name: r.name.clone(),
        hosts: r.hosts.iter().map(|h| HostPattern::parse(h)).collect(),
        path_prefix: prefix.trim_end_matches('/').to_string(),
        rules,
        retry,
        auth: RouteAuth {
            required: r.auth.required,
            allow: r.auth.allow.clone(),
        },
        forward: ForwardHeaders::build(&r.forward_headers, sources).map_err(|(j, e)| {
            ConfigError::field(route_field(&format!("forward_headers[{j}]")), e)
        })?,
        models: Default::default(),
    };
    let listed = |provider: &str, keys: usize| {
        keys > 0 || r.list_unconfigured || list_unconfigured.contains(provider)
    };
    route.models = crate::route::models::ModelList::build(&route, &listed);
    Ok(route)
}

fn build_limits(
    f: &Settings,
    routes: &[Route],
    consumers: &Consumers,
    previous: Option<&Gateway>,
) -> Result<Limits, ConfigError> {
    let mut rules = Vec::new();
    for (i, r) in f.rate_limits.iter().enumerate() {
        let field = |f: &str| format!("rate_limits[{i}] ({}).{f}", r.name);
        let nets = r
            .cidrs
            .iter()
            .map(|c| parse_net(c).map_err(|e| ConfigError::field(field("cidrs"), e)))
            .collect::<Result<Vec<_>, _>>()?;
        let key = match &r.key {
            RateKey::Consumer => {
                let only: Vec<String> = r.values.iter().filter(|v| *v != "*").cloned().collect();
                if r.values.iter().any(|v| v == "*") && !only.is_empty() {
                    return Err(ConfigError::field(
                        field("values"),
                        "`*` (every consumer) cannot be combined with names",
                    ));
                }
                if let Some(bad) = only.iter().find(|n| !consumers.names().contains(n)) {
                    return Err(ConfigError::field(
                        field("values"),
                        format!("unknown consumer `{bad}`"),
                    ));
                }
                KeyBy::Consumer(only)
            }
            RateKey::Route => KeyBy::Route,
            RateKey::Ip => KeyBy::Ip(nets.clone()),
            RateKey::Cidr if nets.is_empty() => {
                return Err(ConfigError::field(
                    field("cidrs"),
                    "a `cidr` rule needs at least one CIDR",
                ))
            }
            RateKey::Cidr => KeyBy::Cidr(nets.clone()),
            RateKey::ProviderKey => KeyBy::ProviderKey,
            RateKey::Header(h) => {
                let name = http::HeaderName::from_bytes(h.as_bytes()).map_err(|_| {
                    ConfigError::field(field("key"), format!("`{h}` is not a header name"))
                })?;
                let values = if r.values.is_empty() {
                    vec!["*".to_string()]
                } else {
                    r.values.clone()
                };
                KeyBy::Header(name, values)
            }
        };
        if !r.values.is_empty() && !matches!(key, KeyBy::Consumer(_) | KeyBy::Header(..)) {
            return Err(ConfigError::field(
                field("values"),
                "only `consumer` and `header:NAME` rules take values",
            ));
        }
        if !nets.is_empty() && !matches!(key, KeyBy::Ip(_) | KeyBy::Cidr(_)) {
            return Err(ConfigError::field(
                field("cidrs"),
                "only `ip` and `cidr` rules take cidrs",
            ));
        }
        let window = r.window;
        let measures: Vec<(Measure, u64)> = [
            (Measure::Requests, r.requests),
            (Measure::Tokens, r.tokens),
            (Measure::InputTokens, r.input_tokens),
            (Measure::OutputTokens, r.output_tokens),
        ]
        .into_iter()
        .filter_map(|(m, l)| l.map(|l| (m, l)))
        .collect();
        if let Some((m, _)) = measures.iter().find(|(_, l)| *l == 0) {
            return Err(ConfigError::field(
                field(m.as_str()),
                "must be at least 1 (remove the rule to stop limiting)",
            ));
        }
        if measures.is_empty() {
            return Err(ConfigError::field(
                field("tokens"),
                "set requests, tokens, input_tokens or output_tokens",
            ));
        }
        if let Some(bad) = r
            .routes
            .iter()
            .find(|n| !routes.iter().any(|x| &x.name == *n))
        {
            return Err(ConfigError::field(
                field("routes"),
                format!("unknown route `{bad}`"),
            ));
        }
        if rules.iter().any(|x: &Rule| x.name == r.name) {
            return Err(ConfigError::field(field("name"), "duplicate rule name"));
        }
        let mut rule = Rule::new(
            r.name.clone(),
            key,
            window,
            &measures,
            r.reserve_max_tokens,
            r.routes.clone(),
        );
        if let Some(old) = previous.and_then(|p| p.limits.rules.iter().find(|o| o.name == r.name)) {
            rule.adopt(old);
        }
        rules.push(rule);
    }
    Ok(Limits { rules })
}

/// A CIDR, or a bare address as its own /32 or /128.
fn parse_net(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| format!("`{s}` is not an address or CIDR"))
}

fn build_store(f: &Settings, limits: &Limits) -> Result<StoreSettings, ConfigError> {
    let redis = match &f.redis {
        None => None,
        Some(r) => {
            let url = expand(r.url.as_written()).map_err(|e| ConfigError::field("redis.url", e))?;
            if !url.starts_with("redis://") {
                return Err(ConfigError::field(
                    "redis.url",
                    "expected redis://[user:password@]host:port[/db] (TLS is not supported)",
                ));
            }
            Some(RedisSettings {
                url,
                prefix: r.prefix.clone().unwrap_or_else(|| "tollgate".into()),
                timeout: positive_duration(
                    "redis.timeout",
                    &r.timeout,
                    Duration::from_millis(100),
                )?,
            })
        }
    };
    let on_error = f
        .redis
        .as_ref()
        .and_then(|r| r.on_error)
        .unwrap_or_default();
    let path = match &f.store.path {
        Some(p) => expand(p).map_err(|e| ConfigError::field("store.path", e))?,
        None => super::paths::DEFAULT_STORE.into(),
    };
    Ok(StoreSettings {
        path: path.into(),
        flush_interval: duration(&f.store.flush_interval, Duration::from_millis(50)),
        needs_local: f.quota.is_some() || limits.rules.iter().any(|r| r.window.is_long()),
        redis,
        on_error,
    })
}

fn build_quota(f: &Settings, consumers: &Consumers) -> Result<Option<QuotaSettings>, ConfigError> {
    let Some(q) = &f.quota else { return Ok(None) };
    let known = |field: &str, name: &str| {
        if consumers.names().iter().any(|n| n == name) {
            Ok(())
        } else {
            Err(ConfigError::field(
                field,
                format!("unknown consumer `{name}`"),
            ))
        }
    };
    let scope = if q.consumers.iter().any(|c| c == "*") {
        QuotaScope::All
    } else {
        for c in &q.consumers {
            known("quota.consumers", c)?;
        }
        QuotaScope::Listed(q.consumers.iter().cloned().collect())
    };
    if let Some(a) = &q.admin_consumer {
        known("quota.admin_consumer", a)?;
    }
    Ok(Some(QuotaSettings {
        scope,
        admin_consumer: q.admin_consumer.clone(),
        reserve_max_tokens: q.reserve_max_tokens,
    }))
}

fn build_consumers(f: &Settings) -> Result<Consumers, ConfigError> {
    let mut consumers = match &f.auth.sources {
        None => Consumers::default(),
        Some(list) => Consumers::new(
            list.iter()
                .map(Source::from_settings)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ConfigError::field("auth.sources", e))?,
        ),
    };
    for (i, c) in f.consumers.iter().enumerate() {
        let field = format!("consumers[{i}] ({})", c.name);
        // An unset variable leaves the consumer without that credential (it cannot log in
        // with it), the same way an unset provider key does; it never fails the config.
        let creds: Vec<String> = c
            .credentials
            .iter()
            .filter_map(|cred| match expand_key(cred.as_written()) {
                Ok(v) => Some(v),
                Err(var) => {
                    log::warn!("{field}: credential variable {var} is not set");
                    None
                }
            })
            .collect();
        consumers
            .add(c.name.clone(), creds)
            .map_err(|e| ConfigError::field(field, e))?;
    }
    Ok(consumers)
}

impl Gateway {
    /// Build the model from the settings. With `previous` (a reload), keys that are
    /// unchanged keep their health state.
    pub fn build(f: &Settings, previous: Option<&Gateway>) -> Result<Self, ConfigError> {
        let s = &f.server;
        let server = ServerSettings {
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
        };
        if f.listeners.proxy.is_empty() {
            return Err(ConfigError::field(
                "listeners.proxy",
                "at least one listener is required",
            ));
        }
        let proxy_listeners = f
            .listeners
            .proxy
            .iter()
            .enumerate()
            .map(|(i, l)| listener(&format!("listeners.proxy[{i}]"), l))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(i) = proxy_listeners.iter().position(|l| l.token.is_some()) {
            return Err(ConfigError::field(
                format!("listeners.proxy[{i}].token"),
                "only the admin listener takes a token",
            ));
        }
        let admin_listener = f
            .listeners
            .admin
            .as_ref()
            .map(|l| listener("listeners.admin", l))
            .transpose()?;

        let mut providers = Vec::new();
        let mut by_name = HashMap::new();
        for (i, p) in f.providers.iter().enumerate() {
            if by_name.contains_key(p.name.as_str()) {
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
            by_name.insert(p.name.as_str(), provider.clone());
            providers.push(provider);
        }
        let consumers = build_consumers(f)?;
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

        let access_log = match &f.access_log.path {
            None | Some(AccessLogPath::Stdout) => AccessLogTarget::Stdout,
            Some(AccessLogPath::Off) => AccessLogTarget::Off,
            Some(AccessLogPath::File(path)) => AccessLogTarget::File(
                expand(path).map_err(|e| ConfigError::field("access_log.path", e))?,
            ),
        };
        for (i, r) in routes.iter().enumerate() {
            if let Some(name) = r.auth.allow.iter().find(|n| !consumers.names().contains(n)) {
                return Err(ConfigError::field(
                    format!("routes[{i}] ({}).auth.allow", r.name),
                    format!("unknown consumer `{name}`"),
                ));
            }
        }
        let limits = build_limits(f, &routes, &consumers, previous)?;
        let store = build_store(f, &limits)?;
        let quota = build_quota(f, &consumers)?;
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
        let client = super::client::ClientSettings::build(&f.client, max_body_bytes)?;
        Ok(Gateway {
            server,
            proxy_listeners,
            admin_listener,
            max_body_bytes,
            client,
            access_log,
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
        })
    }

    pub fn provider(&self, name: &str) -> Option<&Arc<Provider>> {
        self.providers.iter().find(|p| p.name == name)
    }
}
