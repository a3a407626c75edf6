//! A provider and its keys, health policy, timeouts and TLS, built from its settings; a
//! reload keeps each key's health by provider name + key name (and the same secret).

use super::env::{expand, expand_key};
use super::model::{at_least_one, duration, positive_duration};
use super::ConfigError;
use crate::health::{FailureSet, HealthSettings};
use crate::keys::HealthPolicy;
use crate::keys::{ApiKey, KeyPool};
use crate::pattern::ModelMap;
use crate::provider::{self, Provider, ProviderSpec, Timeouts, Upstream, PRESETS};
use crate::settings::{self, KeyEntry};

pub(super) fn build_provider(
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

    let keys = build_keys(p, previous, &field)?;
    let model_map = ModelMap::new(p.model_mapping.iter())
        .map_err(|e| ConfigError::field(field("model_mapping"), e))?;
    let timeouts = build_timeouts(&p.timeouts, &field)?;
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
    let responses_api = responses_api(p, *protocol, &field)?;
    Ok(Provider::new(ProviderSpec {
        responses_api,
        api_version: p.api_version.clone(),
        connect_to,
        name: p.name.clone(),
        kind: p.kind.as_str().to_string(),
        protocol: *protocol,
        upstream,
        keys,
        model_map,
        models: p.models.clone(),
        timeouts,
        ca,
        health,
        http2: p.http2.unwrap_or(false),
    }))
}

/// Whether the provider has OpenAI's Responses API: as configured (OpenAI-compatible and
/// Azure providers only), else true for the `openai` and `azure` types.
fn responses_api(
    p: &settings::ProviderSection,
    protocol: crate::protocol::Protocol,
    field: &dyn Fn(&str) -> String,
) -> Result<bool, ConfigError> {
    let openai_family = protocol.native_client() == Some(crate::protocol::ClientProtocol::OpenAi);
    match p.responses_api {
        Some(true) if !openai_family => Err(ConfigError::field(
            field("responses_api"),
            "only for OpenAI-compatible and Azure providers",
        )),
        Some(on) => Ok(on),
        None => Ok(matches!(p.kind.as_str(), "openai" | "azure")),
    }
}

/// The provider's key pool; a disabled key is left out, a key whose variable is unset is
/// left out (and named), and each
/// key keeps the health of the previous provider's key of the same name and secret.
fn build_keys(
    p: &settings::ProviderSection,
    previous: Option<&Provider>,
    field: &dyn Fn(&str) -> String,
) -> Result<KeyPool, ConfigError> {
    let mut keys = Vec::new();
    let mut missing = Vec::new();
    for (k, entry) in p.api_keys.iter().enumerate() {
        let (name, raw, weight) = match entry {
            KeyEntry::Plain(raw) => (format!("{}#{k}", p.name), raw, 1),
            KeyEntry::Named(named) if named.disabled => continue,
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
    Ok(KeyPool::new(keys, missing))
}

fn build_timeouts(
    t: &settings::TimeoutSection,
    field: &dyn Fn(&str) -> String,
) -> Result<Timeouts, ConfigError> {
    let defaults = Timeouts::default();
    Ok(Timeouts {
        connect: positive_duration(&field("timeouts.connect"), &t.connect, defaults.connect)?,
        read: positive_duration(&field("timeouts.read"), &t.read, defaults.read)?,
        write: positive_duration(&field("timeouts.write"), &t.write, defaults.write)?,
        idle: duration(&t.idle, defaults.idle),
    })
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
