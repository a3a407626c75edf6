//! The layer's data and how it merges with the operator's file.

use crate::settings::{
    AlertRuleSection, BudgetSection, ConsumerSection, ProviderSection, QuotaSection,
    RateLimitSection, RouteSection, Settings, WebhookSection,
};
use serde::{Deserialize, Serialize};

/// The objects created through the API, in the settings file's schema.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Layer {
    /// Writes so far (0: none).
    #[serde(default)]
    pub revision: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub providers: Vec<ProviderSection>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteSection>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub consumers: Vec<ConsumerSection>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rate_limits: Vec<RateLimitSection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<QuotaSection>,
    /// Alert rules (after the file's `alerts.rules`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alert_rules: Vec<AlertRuleSection>,
    /// Alert webhooks (after the file's `alerts.webhooks`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alert_webhooks: Vec<WebhookSection>,
    /// Money budgets (after the file's `budgets`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub budgets: Vec<BudgetSection>,
    /// Named admin users (argon2 password hashes, never shown by the API).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub admin_users: Vec<crate::users::AdminUser>,
}

impl Layer {
    /// The layer as YAML (the state file's text).
    pub fn to_yaml(&self) -> String {
        serde_yaml::to_string(self).unwrap_or_default()
    }

    pub fn from_yaml(text: &str) -> Result<Layer, String> {
        serde_yaml::from_str(text).map_err(|e| e.to_string())
    }
}

/// Where an object comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    File,
    Api,
}

/// The file and the layer as one.
#[derive(Debug, Clone, PartialEq)]
pub struct Merged {
    pub settings: Settings,
    /// Layer objects left out because the file defines the same name.
    pub shadowed: Vec<String>,
}

/// `items` of the file, then those of the layer whose names the file does not use.
fn append<T: Clone>(
    file: &mut Vec<T>,
    layer: &[T],
    name: impl Fn(&T) -> &str,
    kind: &str,
    shadowed: &mut Vec<String>,
) {
    for item in layer {
        if file.iter().any(|f| name(f) == name(item)) {
            shadowed.push(format!("{kind} `{}`", name(item)));
        } else {
            file.push(item.clone());
        }
    }
}

/// The settings the gateway runs: the file's, with the layer's objects after them.
pub fn merge(file: &Settings, layer: &Layer) -> Merged {
    let mut s = file.clone();
    let mut shadowed = Vec::new();
    append(
        &mut s.providers,
        &layer.providers,
        |p| &p.name,
        "provider",
        &mut shadowed,
    );
    append(
        &mut s.routes,
        &layer.routes,
        |r| &r.name,
        "route",
        &mut shadowed,
    );
    append(
        &mut s.consumers,
        &layer.consumers,
        |c| &c.name,
        "consumer",
        &mut shadowed,
    );
    append(
        &mut s.rate_limits,
        &layer.rate_limits,
        |r| &r.name,
        "rate limit",
        &mut shadowed,
    );
    append(
        &mut s.alerts.webhooks,
        &layer.alert_webhooks,
        |w| &w.name,
        "alert webhook",
        &mut shadowed,
    );
    append(
        &mut s.alerts.rules,
        &layer.alert_rules,
        |r| &r.name,
        "alert rule",
        &mut shadowed,
    );
    append(
        &mut s.budgets,
        &layer.budgets,
        |b| &b.name,
        "budget",
        &mut shadowed,
    );
    match (&s.quota, &layer.quota) {
        (Some(_), Some(_)) => shadowed.push("the quota section".into()),
        (None, Some(q)) => s.quota = Some(q.clone()),
        _ => {}
    }
    Merged {
        settings: s,
        shadowed,
    }
}

/// Where the object `name` of a collection comes from, given the file's settings.
pub fn source_of(file: &Settings, collection: &str, name: &str) -> Source {
    let in_file = match collection {
        "providers" => file.providers.iter().any(|p| p.name == name),
        "routes" => file.routes.iter().any(|r| r.name == name),
        "consumers" => file.consumers.iter().any(|c| c.name == name),
        "rate_limits" => file.rate_limits.iter().any(|r| r.name == name),
        "quota" => file.quota.is_some(),
        "alert_rules" => file.alerts.rules.iter().any(|r| r.name == name),
        "alert_webhooks" => file.alerts.webhooks.iter().any(|w| w.name == name),
        "budgets" => file.budgets.iter().any(|b| b.name == name),
        _ => false,
    };
    if in_file {
        Source::File
    } else {
        Source::Api
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
listeners:
  proxy: [{address: "127.0.0.1:8080"}]
providers:
  - {name: a, type: openai, api_keys: [k]}
"#;

    #[test]
    fn the_file_wins_and_the_layer_follows() {
        let file = crate::settings::from_yaml(FILE).unwrap();
        let layer = Layer::from_yaml(
            "revision: 3\nproviders:\n  - {name: a, type: deepseek}\n  - {name: b, type: qwen}\n",
        )
        .unwrap();
        let m = merge(&file, &layer);
        let names: Vec<&str> = m
            .settings
            .providers
            .iter()
            .map(|p| p.name.as_str())
            .collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(m.settings.providers[0].kind, file.providers[0].kind);
        assert_eq!(m.shadowed, ["provider `a`"]);
        assert_eq!(source_of(&file, "providers", "a"), Source::File);
        assert_eq!(source_of(&file, "providers", "b"), Source::Api);
        assert_eq!(Layer::from_yaml(&layer.to_yaml()).unwrap(), layer);
        assert!(
            Layer::from_yaml("revison: 1").is_err(),
            "unknown fields are errors"
        );
    }

    #[test]
    fn alert_objects_merge_after_the_file() {
        let file = crate::settings::from_yaml(&format!(
            "{FILE}alerts:\n  webhooks: [{{name: w, url: 'http://f/x'}}]\n  rules: [{{name: r, kind: keys_down}}]\n"
        ))
        .unwrap();
        let layer = Layer::from_yaml(
            "revision: 2\nalert_webhooks: [{name: w, url: 'http://l/x'}, {name: v, url: 'http://l/v', format: slack}]\nalert_rules: [{name: q, kind: quota, threshold: 10, webhooks: [v]}]\n",
        )
        .unwrap();
        let m = merge(&file, &layer);
        let hooks: Vec<&str> = m
            .settings
            .alerts
            .webhooks
            .iter()
            .map(|w| w.url.as_written())
            .collect();
        assert_eq!(hooks, ["http://f/x", "http://l/v"]);
        assert_eq!(m.settings.alerts.rules.len(), 2);
        assert_eq!(m.shadowed, ["alert webhook `w`"]);
        assert_eq!(source_of(&file, "alert_rules", "r"), Source::File);
        assert_eq!(source_of(&file, "alert_webhooks", "v"), Source::Api);
        assert_eq!(Layer::from_yaml(&layer.to_yaml()).unwrap(), layer);
        // A state file written before alerts were API objects still loads.
        let old = Layer::from_yaml("revision: 4\nproviders:\n  - {name: b, type: qwen}\n").unwrap();
        assert!(old.alert_rules.is_empty() && old.alert_webhooks.is_empty());
    }
}
