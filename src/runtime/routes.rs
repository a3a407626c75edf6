//! A route, its model rules and targets, retry policy, auth and forwarded headers, built from
//! its settings.

use super::model::{at_least_one, positive_duration};
use super::ConfigError;
use crate::auth::Source;
use crate::forward::ForwardHeaders;
use crate::pattern::Pattern;
use crate::provider::Provider;
use crate::route::{HostPattern, ModelRule, RetryPolicy, Route, RouteAuth, Target};
use crate::settings::{self};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

/// Build a route's optional section; an error names the section's field (`at`: the
/// section's own path, `routes[0] (chat).pii`).
fn section<S, T>(
    s: &Option<S>,
    at: &str,
    build: impl Fn(&S) -> Result<T, (String, String)>,
) -> Result<Option<T>, ConfigError> {
    s.as_ref()
        .map(build)
        .transpose()
        .map_err(|(f, e)| ConfigError::field(format!("{at}.{f}"), e))
}

/// A route's retry policy (`retry`, `all_keys_down`).
fn retry_policy(
    r: &settings::RouteSection,
    route_field: &impl Fn(&str) -> String,
) -> Result<RetryPolicy, ConfigError> {
    let d = RetryPolicy::default();
    Ok(RetryPolicy {
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
        all_keys_down: r.all_keys_down.unwrap_or_default(),
    })
}

/// A route's model rules (`models`), their targets resolved to providers.
fn model_rules(
    i: usize,
    r: &settings::RouteSection,
    providers: &HashMap<&str, Arc<Provider>>,
    retry: &RetryPolicy,
) -> Result<Vec<ModelRule>, ConfigError> {
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
    Ok(rules)
}

pub(super) fn build_route(
    i: usize,
    r: &settings::RouteSection,
    providers: &HashMap<&str, Arc<Provider>>,
    sources: &[Source],
    list_unconfigured: &BTreeSet<&str>,
) -> Result<Route, ConfigError> {
    let route_field = |f: &str| format!("routes[{i}] ({}).{f}", r.name);
    let retry = retry_policy(r, &route_field)?;
    let rules = model_rules(i, r, providers, &retry)?;
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
        cache_counters: None,
        cache: section(
            &r.cache,
            &route_field("cache"),
            crate::cache::RouteCache::build,
        )?,
        pii: section(&r.pii, &route_field("pii"), |p| {
            crate::policy::pii::PiiPolicy::build(p).map(Arc::new)
        })?,
        deny: section(&r.deny, &route_field("deny"), |d| {
            crate::policy::deny::DenyPolicy::build(d).map(Arc::new)
        })?,
    };
    let listed = |provider: &str, keys: usize| {
        keys > 0 || r.list_unconfigured || list_unconfigured.contains(provider)
    };
    route.models = crate::route::models::ModelList::build(&route, &listed);
    if route.cache.is_some() {
        route.cache_counters = Some(crate::cache::Counters::new(&route.name));
    }
    Ok(route)
}
