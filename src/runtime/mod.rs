//! Configuration: one YAML file with Pingora's server settings and the gateway's.
//!
//! `crate::settings` is the serde schema as written; `model` the validated snapshot the
//! gateway runs on; `env` the `${VAR}` expansion. `load` goes from a path to a `Gateway`,
//! `build` from settings already in hand, and every error names the field at fault. The running snapshot lives in a `SharedConfig` (arc-swap): requests
//! load it once and keep that `Arc` to the end, so nothing is parsed per request.

mod access;
#[cfg(test)]
mod carry_tests;
pub mod client;
pub mod env;
pub mod model;
pub mod paths;
mod providers;
mod routes;
pub mod tracing;

pub use model::Gateway;

use crate::settings::{self, Settings};
use arc_swap::ArcSwap;
use std::sync::Arc;

pub type SharedConfig = Arc<ArcSwap<Gateway>>;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Syntax { path: String, message: String },
    #[error("`{field}`: {message}")]
    Field { field: String, message: String },
}

impl ConfigError {
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Field {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Parse a config from YAML text; `previous` is the config it replaces, if any.
pub fn parse(text: &str, path: &str, previous: Option<&Gateway>) -> Result<Gateway, ConfigError> {
    let settings = settings::from_yaml(text).map_err(|message| ConfigError::Syntax {
        path: path.to_string(),
        message,
    })?;
    build(&settings, path, previous)
}

/// Validate `settings` into the runtime snapshot. `path` is where the settings are kept (its
/// directory is the state directory unless `--state-dir` says otherwise); `previous` is the
/// config the new one replaces, if any.
pub fn build(
    settings: &Settings,
    path: &str,
    previous: Option<&Gateway>,
) -> Result<Gateway, ConfigError> {
    if settings.analytics.recent_requests() > 1_000_000 {
        return Err(ConfigError::field(
            "analytics.recent_requests",
            "at most 1000000",
        ));
    }
    crate::alerts::validate_with(settings).map_err(|(f, m)| ConfigError::field(f, m))?;
    let mut gateway = Gateway::build(settings, previous)?;
    paths::resolve(&mut gateway, &paths::state_dir(path))?;
    Ok(gateway)
}

/// Read and parse a config file.
pub fn load(path: &str, previous: Option<&Gateway>) -> Result<Gateway, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_string(),
        source,
    })?;
    parse(&text, path, previous)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
listeners:
  proxy: [{address: "127.0.0.1:8080"}]
providers:
  - name: mock
    type: openai-compatible
    base_url: http://127.0.0.1:8090/v1
    api_keys: ["k1", {name: second, key: "k2"}, "${TOLLGATE_TEST_UNSET_KEY}"]
    model_mapping: {"mock-gpt-4o": "gpt-4o-2024", "*": "fallback"}
routes:
  - name: default
    models:
      - model: "mock-*"
        targets: [{provider: mock}]
"#;

    #[test]
    fn loads_a_valid_config() {
        let gw = parse(BASE, "t.yaml", None).unwrap();
        let p = gw.provider("mock").unwrap();
        assert_eq!(p.keys.len(), 2);
        assert_eq!(p.keys.missing_vars(), ["TOLLGATE_TEST_UNSET_KEY"]);
        assert_eq!(p.keys.get(1).unwrap().name, "second");
        assert_eq!(p.upstream.base_path, "/v1");
        assert!(p.peer().is_some(), "IP literal resolved at load");
        assert_eq!(gw.routes[0].path_prefix, "/v1");
        assert_eq!(p.model_map.map("mock-gpt-4o"), Some("gpt-4o-2024"));
    }

    #[test]
    fn builds_from_settings_in_hand() {
        let mut settings = crate::settings::from_yaml(BASE).unwrap();
        settings.providers[0].api_version = Some("2024-10-21".into());
        let e = build(&settings, "t.yaml", None).unwrap_err().to_string();
        assert!(e.contains("providers[0] (mock).api_version"), "{e}");
        settings.providers[0].kind = crate::settings::ProviderType::Azure;
        settings.routes[0].name = "renamed".into();
        let gw = build(&settings, "t.yaml", None).unwrap();
        assert_eq!(gw.routes[0].name, "renamed");
        assert_eq!(gw.provider("mock").unwrap().kind, "azure");
    }

    #[test]
    fn every_provider_type_has_a_preset() {
        use crate::settings::ProviderType;
        for kind in ProviderType::ALL {
            let presets = crate::provider::PRESETS.iter();
            assert!(
                presets.filter(|(n, _, _)| *n == kind.as_str()).count() == 1,
                "{kind}"
            );
        }
        assert_eq!(crate::provider::PRESETS.len(), ProviderType::ALL.len());
    }

    fn err(text: &str) -> String {
        parse(text, "t.yaml", None).unwrap_err().to_string()
    }

    #[test]
    fn errors_name_the_field() {
        let e = err(&BASE.replace("provider: mock}", "provider: nope}"));
        assert!(
            e.contains("routes[0] (default).models[0].targets[0].provider"),
            "{e}"
        );
        assert!(e.contains("unknown provider `nope`"), "{e}");
        let e = err(&BASE.replace("type: openai-compatible", "type: foo"));
        assert!(
            e.contains("providers[0] (mock).type") && e.contains("unknown provider type `foo`"),
            "{e}"
        );
        let e = err(&BASE.replace("base_url:", "base_urll:"));
        assert!(e.contains("base_urll"), "{e}");
        let e = err(&BASE.replace("127.0.0.1:8080", "nonsense"));
        assert!(e.contains("listeners.proxy[0].address"), "{e}");
        let e = err(&BASE.replace("\"mock-*\"", "\"~(\""));
        assert!(
            e.contains("models[0].model") && e.contains("invalid regex"),
            "{e}"
        );
        let e = err(&BASE.replace("http://127.0.0.1:8090/v1", "ftp://x"));
        assert!(e.contains("base_url"), "{e}");
    }

    #[test]
    fn a_semantic_cache_needs_a_threshold_in_range_and_a_routed_model() {
        let with = |semantic: &str| {
            BASE.replace(
                "  - name: default\n",
                &format!("  - name: default\n    cache: {{semantic: {semantic}}}\n"),
            )
        };
        let gw = parse(&with("{model: mock-embed}"), "t.yaml", None).unwrap();
        let sem = gw.routes[0]
            .cache
            .as_ref()
            .unwrap()
            .semantic
            .clone()
            .unwrap();
        assert_eq!((sem.model.as_str(), sem.threshold), ("mock-embed", 0.9));
        assert_eq!((sem.max_entries, sem.tool_calls), (10_000, false));
        for (semantic, field, says) in [
            ("{model: mock-e, threshold: 0}", "cache.semantic", "(0, 1]"),
            (
                "{model: mock-e, threshold: 1.5}",
                "cache.semantic",
                "(0, 1]",
            ),
            (
                "{model: text-embedding-3-small}",
                "cache.semantic.model",
                "no model rule",
            ),
            (
                "{model: mock-e, route: nope}",
                "cache.semantic.route",
                "unknown route",
            ),
        ] {
            let e = err(&with(semantic));
            assert!(
                e.contains(&format!("routes[0] (default).{field}")) && e.contains(says),
                "{e}"
            );
        }
    }

    #[test]
    fn nonsensical_zeros_are_rejected_naming_the_field() {
        let with_retry = |retry: &str| {
            BASE.replace(
                "        targets: [{provider: mock}]",
                &format!("        targets: [{{provider: mock}}]\n    retry: {retry}"),
            )
        };
        let limit = |rule: &str| format!("{BASE}\nrate_limits: [{rule}]\n");
        let cases = [
            (format!("server: {{threads: 0}}\n{BASE}"), "server.threads"),
            (
                format!("limits: {{max_body_bytes: 0}}\n{BASE}"),
                "limits.max_body_bytes",
            ),
            (
                format!("access_log: {{buffer_lines: 0}}\n{BASE}"),
                "access_log.buffer_lines",
            ),
            (with_retry("{attempts: 0}"), "retry.attempts"),
            (with_retry("{per_target: 0}"), "retry.per_target"),
            (with_retry("{deadline: 0s}"), "retry.deadline"),
            (
                limit("{name: a, key: route, window: minute, requests: 0}"),
                "rate_limits[0] (a).requests",
            ),
            (
                limit("{name: a, key: route, window: minute, requests: 5, tokens: 0}"),
                "rate_limits[0] (a).tokens",
            ),
            (
                BASE.replace(
                    "model_mapping:",
                    "health: {failure_threshold: 0}\n    model_mapping:",
                ),
                "health.failure_threshold",
            ),
            (
                BASE.replace(
                    "model_mapping:",
                    "timeouts: {read: 0ms}\n    model_mapping:",
                ),
                "timeouts.read",
            ),
            (
                limit("{name: a, key: consumer, values: [bob], window: minute, requests: 1}"),
                "rate_limits[0] (a).values",
            ),
            (
                limit("{name: a, key: route, values: [x], window: minute, requests: 1}"),
                "rate_limits[0] (a).values",
            ),
        ];
        for (text, field) in cases {
            let e = err(&text);
            assert!(e.contains(field), "{field}: {e}");
        }
        // Zero grace periods are fine.
        let text = format!("server: {{grace_period_seconds: 0}}\n{BASE}");
        assert!(parse(&text, "t.yaml", None).is_ok());
    }
}
