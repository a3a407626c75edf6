//! Who may call and how much: consumers, rate-limit rules (a reload keeps a rule's counters
//! by name and window), quotas, and the stores that keep long-lived counters.

use super::env::{expand, expand_key};
use super::model::{duration, positive_duration};
use super::ConfigError;
use super::Gateway;
use crate::auth::{Consumers, Source};
use crate::limits::{KeyBy, Limits, Measure, Rule};
use crate::quota::{QuotaScope, QuotaSettings};
use crate::route::Route;
use crate::settings::{RateKey, RateLimitSection, Settings};
use crate::store::redis::RedisSettings;
use crate::store::StoreSettings;
use ipnet::IpNet;
use std::time::Duration;

pub(super) fn build_limits(
    f: &Settings,
    routes: &[Route],
    consumers: &Consumers,
    previous: Option<&Gateway>,
) -> Result<Limits, ConfigError> {
    let mut rules: Vec<Rule> = Vec::new();
    for (i, r) in f.rate_limits.iter().enumerate() {
        let field = |f: &str| format!("rate_limits[{i}] ({}).{f}", r.name);
        let key = rule_key(r, consumers, &field)?;
        let measures = rule_measures(r, &field)?;
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
        if rules.iter().any(|x| x.name == r.name) {
            return Err(ConfigError::field(field("name"), "duplicate rule name"));
        }
        let mut rule = Rule::new(
            r.name.clone(),
            key,
            r.window,
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

/// What a rule counts by, with its `values` and `cidrs` checked against the key.
fn rule_key(
    r: &RateLimitSection,
    consumers: &Consumers,
    field: &dyn Fn(&str) -> String,
) -> Result<KeyBy, ConfigError> {
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
    Ok(key)
}

/// The rule's limits: at least one, none of them 0.
fn rule_measures(
    r: &RateLimitSection,
    field: &dyn Fn(&str) -> String,
) -> Result<Vec<(Measure, u64)>, ConfigError> {
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
    Ok(measures)
}

/// A CIDR, or a bare address as its own /32 or /128.
pub(super) fn parse_net(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| format!("`{s}` is not an address or CIDR"))
}

/// `redis:` as the store's settings (URLs expanded and checked, the CA read).
fn build_redis(r: &crate::settings::RedisSection) -> Result<RedisSettings, ConfigError> {
    let url = expand(r.url.as_written()).map_err(|e| ConfigError::field("redis.url", e))?;
    let tls = url.starts_with("rediss://");
    if !tls && !url.starts_with("redis://") {
        return Err(ConfigError::field(
            "redis.url",
            "expected redis://[user:password@]host:port[/db], or rediss:// for TLS",
        ));
    }
    let cluster = r.cluster.unwrap_or(false);
    if !cluster && !r.nodes.is_empty() {
        return Err(ConfigError::field(
            "redis.nodes",
            "seed nodes of a cluster: only with cluster: true",
        ));
    }
    let mut nodes = Vec::with_capacity(r.nodes.len());
    for (i, n) in r.nodes.iter().enumerate() {
        let field = format!("redis.nodes[{i}]");
        let n = expand(n.as_written()).map_err(|e| ConfigError::field(&field, e))?;
        if n.starts_with("rediss://") != tls || !n.starts_with("redis") {
            return Err(ConfigError::field(
                &field,
                "expected a URL with the same scheme as redis.url",
            ));
        }
        nodes.push(n);
    }
    let prefix = r.prefix.clone().unwrap_or_else(|| "tollgate".into());
    if cluster && (prefix.is_empty() || prefix.contains(['{', '}'])) {
        return Err(ConfigError::field(
            "redis.prefix",
            "on a cluster the prefix is the hash tag of every key: it must be \
             non-empty and hold no `{` or `}`",
        ));
    }
    let ca_pem = match &r.ca_file {
        None => None,
        Some(_) if !tls => {
            return Err(ConfigError::field(
                "redis.ca_file",
                "a CA file needs a rediss:// url",
            ))
        }
        Some(path) => {
            let path = expand(path).map_err(|e| ConfigError::field("redis.ca_file", e))?;
            Some(
                crate::store::redis::load_ca(&path)
                    .map_err(|e| ConfigError::field("redis.ca_file", e))?,
            )
        }
    };
    Ok(RedisSettings {
        url,
        cluster,
        nodes,
        ca_pem,
        prefix,
        timeout: positive_duration("redis.timeout", &r.timeout, Duration::from_millis(100))?,
    })
}

pub(super) fn build_store(f: &Settings, limits: &Limits) -> Result<StoreSettings, ConfigError> {
    let redis = match &f.redis {
        None => None,
        Some(r) => Some(build_redis(r)?),
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
        needs_local: f.quota.is_some()
            || !f.budgets.is_empty()
            || limits.rules.iter().any(|r| r.window.is_long()),
        redis,
        on_error,
        cache_bytes: (
            f.cache
                .max_bytes
                .unwrap_or(crate::cache::store::DEFAULT_MAX_BYTES),
            f.cache
                .max_entry_bytes
                .unwrap_or(crate::cache::store::DEFAULT_MAX_ENTRY_BYTES),
        ),
    })
}

pub(super) fn build_quota(
    f: &Settings,
    consumers: &Consumers,
) -> Result<Option<QuotaSettings>, ConfigError> {
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

pub(super) fn build_consumers(f: &Settings) -> Result<Consumers, ConfigError> {
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
            .map_err(|e| ConfigError::field(&field, e))?;
        consumers
            .add_digests(&c.name, &c.hashed_credentials)
            .map_err(|e| ConfigError::field(format!("{field}.hashed_credentials"), e))?;
    }
    Ok(consumers)
}
