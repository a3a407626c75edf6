//! JSON Schemas (2020-12, as OpenAPI 3.1 uses) of the objects the management API reads and
//! writes, generated from the same types that read the file: the schema cannot drift from
//! what the file and the API accept. Types with a text form say so here.

use super::access::RateKey;
use super::providers::HealthFailure;
use super::text::{HumanDuration, Secret};
use super::NamedKey;
use super::{
    AlertRuleSection, BudgetSection, ConsumerSection, ProviderSection, QuotaSection,
    RateLimitSection, RouteSection, WebhookSection,
};
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use std::borrow::Cow;

impl JsonSchema for HumanDuration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "string", "description": "humantime: `500ms`, `5s`, `2m`, `1h 30m`", "examples": ["5s"]})
    }
}

impl JsonSchema for Secret {
    fn schema_name() -> Cow<'static, str> {
        "Secret".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "string", "description": "A secret, or a `${VAR}` reference; answers show a literal masked (`sk-…a1b2`), and a masked value sent back keeps the secret it stands for"})
    }
}

impl JsonSchema for RateKey {
    fn schema_name() -> Cow<'static, str> {
        "RateKey".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "string", "pattern": "^(consumer|route|ip|cidr|provider_key|header:.+)$"})
    }
}

impl JsonSchema for HealthFailure {
    fn schema_name() -> Cow<'static, str> {
        "HealthFailure".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"oneOf": [
            {"type": "string", "enum": ["connect", "timeout", "4xx", "5xx"]},
            {"type": "integer", "minimum": 400, "maximum": 599},
        ]})
    }
}

/// The schemas of the API's objects: every definition (for `#/components/schemas/`) and,
/// per API collection (`providers`, `keys`, `routes`, `consumers`, `rate_limits`, `quota`,
/// `alert_rules`, `alert_webhooks`), the schema of one object (a reference into the
/// definitions).
pub fn api_schemas() -> (
    serde_json::Map<String, serde_json::Value>,
    Vec<(&'static str, serde_json::Value)>,
) {
    let settings = schemars::generate::SchemaSettings::draft2020_12().with(|s| {
        s.definitions_path = "/components/schemas".into();
    });
    let mut generator = settings.into_generator();
    let roots = vec![
        ("providers", generator.subschema_for::<ProviderSection>()),
        ("keys", generator.subschema_for::<NamedKey>()),
        ("routes", generator.subschema_for::<RouteSection>()),
        ("consumers", generator.subschema_for::<ConsumerSection>()),
        ("rate_limits", generator.subschema_for::<RateLimitSection>()),
        ("quota", generator.subschema_for::<QuotaSection>()),
        ("alert_rules", generator.subschema_for::<AlertRuleSection>()),
        (
            "alert_webhooks",
            generator.subschema_for::<WebhookSection>(),
        ),
        ("budgets", generator.subschema_for::<BudgetSection>()),
    ];
    let roots = roots
        .into_iter()
        .map(|(name, schema)| (name, schema.to_value()))
        .collect();
    (generator.take_definitions(true), roots)
}
