//! One management API call applied to a layer: create, replace, patch (JSON merge patch,
//! RFC 7386) or delete an object; add, change or remove one key of a provider; issue or
//! revoke a consumer credential; set or remove the quota section.
//!
//! Objects from the operator's file are never changed (`ManagedError::FromFile`). Secrets
//! are written in their masked form by `GET`; a write that sends a masked form back keeps
//! the secret it masks (a key matched by name, a credential by its masked form, an alert
//! webhook's URL by the masked form of the one stored under that name), and a
//! masked form that matches nothing is refused rather than stored. A consumer's literal
//! credentials are stored as SHA-256 digests, and a provider's unnamed keys get names
//! (`key-1`, …), so every API key can be disabled or removed by name.

use super::{Layer, ManagedError};
use crate::settings::{
    self, AlertRuleSection, BudgetSection, ConsumerSection, KeyEntry, NamedKey, ProviderSection,
    QuotaSection, RateLimitSection, RouteSection, Secret, Settings, WebhookSection,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

/// A collection of named objects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Collection {
    Providers,
    Routes,
    Consumers,
    RateLimits,
    AlertRules,
    AlertWebhooks,
    Budgets,
}

impl Collection {
    pub const ALL: [Collection; 7] = [
        Collection::Providers,
        Collection::Routes,
        Collection::Consumers,
        Collection::RateLimits,
        Collection::AlertRules,
        Collection::AlertWebhooks,
        Collection::Budgets,
    ];

    pub fn from_path(segment: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.path() == segment)
    }

    /// The collection's path segment (also its key in the settings, or in the layer for
    /// `alert_rules` and `alert_webhooks`: `alerts.rules`, `alerts.webhooks` in the file).
    pub fn path(self) -> &'static str {
        match self {
            Collection::Providers => "providers",
            Collection::Routes => "routes",
            Collection::Consumers => "consumers",
            Collection::RateLimits => "rate_limits",
            Collection::AlertRules => "alert_rules",
            Collection::AlertWebhooks => "alert_webhooks",
            Collection::Budgets => "budgets",
        }
    }

    /// One object's kind, for messages.
    pub fn kind(self) -> &'static str {
        match self {
            Collection::Providers => "provider",
            Collection::Routes => "route",
            Collection::Consumers => "consumer",
            Collection::RateLimits => "rate limit",
            Collection::AlertRules => "alert rule",
            Collection::AlertWebhooks => "alert webhook",
            Collection::Budgets => "budget",
        }
    }

    /// The objects of `settings` in this collection, as JSON, with their names.
    pub fn objects(self, settings: &Settings) -> Vec<(String, Value)> {
        match self {
            Collection::Providers => all(&settings.providers),
            Collection::Routes => all(&settings.routes),
            Collection::Consumers => all(&settings.consumers),
            Collection::RateLimits => all(&settings.rate_limits),
            Collection::AlertRules => all(&settings.alerts.rules),
            Collection::AlertWebhooks => all(&settings.alerts.webhooks),
            Collection::Budgets => all(&settings.budgets),
        }
    }

    /// The objects of the API's layer in this collection.
    pub fn layer_objects(self, layer: &Layer) -> Vec<(String, Value)> {
        match self {
            Collection::Providers => all(&layer.providers),
            Collection::Routes => all(&layer.routes),
            Collection::Consumers => all(&layer.consumers),
            Collection::RateLimits => all(&layer.rate_limits),
            Collection::AlertRules => all(&layer.alert_rules),
            Collection::AlertWebhooks => all(&layer.alert_webhooks),
            Collection::Budgets => all(&layer.budgets),
        }
    }
}

fn all<T: Serialize + Named>(items: &[T]) -> Vec<(String, Value)> {
    items
        .iter()
        .filter_map(|i| Some((i.name().to_string(), serde_json::to_value(i).ok()?)))
        .collect()
}

/// The revision of one object: a fingerprint of its JSON form, secrets included (a new
/// secret with the same masked form is still a new revision).
pub fn object_revision(object: &Value) -> String {
    settings::fingerprint(object.to_string().as_bytes())
}

/// A write.
#[derive(Debug, Clone)]
pub enum Op {
    Create(Collection, Value),
    Replace(Collection, String, Value),
    Patch(Collection, String, Value),
    Delete(Collection, String),
    AddKey {
        provider: String,
        key: Value,
    },
    PatchKey {
        provider: String,
        key: String,
        patch: Value,
    },
    DeleteKey {
        provider: String,
        key: String,
    },
    /// Issue a credential (`credential` is the generated secret); `replace` revokes the
    /// consumer's others.
    NewCredential {
        consumer: String,
        credential: String,
        replace: bool,
    },
    /// Revoke the hashed credential whose id (first 12 hex digits) is `id`.
    DeleteCredential {
        consumer: String,
        id: String,
    },
    PutQuota(Value),
    DeleteQuota,
}

/// What a write did, for the audit log and the answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub action: &'static str,
    pub kind: &'static str,
    pub name: String,
}

trait Named {
    fn name(&self) -> &str;
}

macro_rules! named {
    ($($t:ty),*) => {$(impl Named for $t { fn name(&self) -> &str { &self.name } })*};
}
named!(
    BudgetSection,
    ProviderSection,
    RouteSection,
    ConsumerSection,
    RateLimitSection,
    AlertRuleSection,
    WebhookSection,
    NamedKey
);

fn invalid(e: impl std::fmt::Display) -> ManagedError {
    ManagedError::Invalid(e.to_string())
}

/// `value` as a `T`, the error naming the field (`kind`: what it should be).
fn parse<T: DeserializeOwned>(kind: &str, value: Value) -> Result<T, ManagedError> {
    if !value.is_object() {
        return Err(invalid(format!("expected a JSON object: a {kind}")));
    }
    serde_json::from_value(value).map_err(|e| invalid(format!("{kind}: {e}")))
}

/// RFC 7386 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(fields) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(serde_json::Map::new());
    }
    if let Value::Object(t) = target {
        for (k, v) in fields {
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

/// The same body with `name` set (a body may leave it out on the object's own path).
fn with_name(mut body: Value, name: &str) -> Result<Value, ManagedError> {
    let Some(fields) = body.as_object_mut() else {
        return Err(invalid("expected a JSON object"));
    };
    match fields.get("name") {
        None => {
            fields.insert("name".into(), Value::String(name.to_string()));
        }
        Some(Value::String(n)) if n == name => {}
        Some(other) => {
            return Err(invalid(format!(
                "`name` is {other} but the path names `{name}`: renaming is delete and create"
            )))
        }
    }
    Ok(body)
}

/// Apply `op` to `layer` (a copy the caller keeps only if the merged settings validate).
pub fn apply(layer: &mut Layer, file: &Settings, op: Op) -> Result<Outcome, ManagedError> {
    match op {
        Op::Create(c, body) => create(layer, file, c, body),
        Op::Replace(c, name, body) => {
            guard(file, c, &name)?;
            let body = with_name(body, &name)?;
            on_collection(layer, c, &name, |_| Ok(None), Some(body))?;
            Ok(outcome("replace", c, name))
        }
        Op::Patch(c, name, patch) => patch_entry(layer, file, c, name, patch),
        Op::Delete(c, name) => {
            guard(file, c, &name)?;
            delete(layer, c, &name)?;
            Ok(outcome("delete", c, name))
        }
        Op::AddKey { provider, key } => add_key(layer, file, provider, key),
        Op::PatchKey {
            provider,
            key,
            patch,
        } => patch_key(layer, file, provider, key, patch),
        Op::DeleteKey { provider, key } => {
            guard(file, Collection::Providers, &provider)?;
            let p = provider_mut(layer, &provider)?;
            key_mut(p, &key)?;
            p.api_keys.retain(|k| key_name(k) != Some(key.as_str()));
            Ok(key_outcome("delete", format!("{provider}/{key}")))
        }
        Op::NewCredential {
            consumer,
            credential,
            replace,
        } => new_credential(layer, file, consumer, &credential, replace),
        Op::DeleteCredential { consumer, id } => delete_credential(layer, file, consumer, id),
        Op::PutQuota(body) => {
            if file.quota.is_some() {
                return Err(from_file("quota section", "quota"));
            }
            layer.quota = Some(parse::<QuotaSection>("quota section", body)?);
            Ok(quota_outcome("replace"))
        }
        Op::DeleteQuota => {
            if file.quota.is_some() {
                return Err(from_file("quota section", "quota"));
            }
            if layer.quota.take().is_none() {
                return Err(ManagedError::NotFound {
                    kind: "quota section",
                    name: "quota".into(),
                });
            }
            Ok(quota_outcome("delete"))
        }
    }
}

/// `Op::Create`: a new entry of `c`, named by its body.
fn create(layer: &mut Layer, file: &Settings, c: Collection, body: Value) -> ManagedResult {
    let name = match body.get("name") {
        Some(Value::String(n)) => n.clone(),
        _ => return Err(invalid(format!("a {} needs a string `name`", c.kind()))),
    };
    check_name(c.kind(), &name)?;
    guard(file, c, &name)?;
    on_collection(layer, c, &name, |_| Err(()), Some(body))?;
    Ok(outcome("create", c, name))
}

/// `Op::Patch`: a JSON merge patch (RFC 7396) on an entry of `c`.
fn patch_entry(
    layer: &mut Layer,
    file: &Settings,
    c: Collection,
    name: String,
    patch: Value,
) -> ManagedResult {
    guard(file, c, &name)?;
    if !patch.is_object() {
        return Err(invalid("a merge patch is a JSON object"));
    }
    let merged = |current: &Value| {
        let mut v = current.clone();
        merge_patch(&mut v, &patch);
        Ok(Some(v))
    };
    on_collection(layer, c, &name, merged, None)?;
    Ok(outcome("patch", c, name))
}

/// `Op::AddKey`: a named key on a provider.
fn add_key(layer: &mut Layer, file: &Settings, provider: String, key: Value) -> ManagedResult {
    guard(file, Collection::Providers, &provider)?;
    let p = provider_mut(layer, &provider)?;
    let key: NamedKey = parse("key ({name, key, weight, disabled})", key)?;
    check_name("key", &key.name)?;
    if p.api_keys
        .iter()
        .any(|k| key_name(k) == Some(key.name.as_str()))
    {
        return Err(ManagedError::Exists {
            kind: "key",
            name: key.name,
        });
    }
    let name = format!("{provider}/{}", key.name);
    p.api_keys.push(KeyEntry::Named(key));
    fix_provider(p, None)?;
    Ok(key_outcome("create", name))
}

/// `Op::PatchKey`: a merge patch on a provider's named key.
fn patch_key(
    layer: &mut Layer,
    file: &Settings,
    provider: String,
    key: String,
    patch: Value,
) -> ManagedResult {
    guard(file, Collection::Providers, &provider)?;
    let p = provider_mut(layer, &provider)?;
    let old = p.clone();
    let entry = key_mut(p, &key)?;
    let mut v = serde_json::to_value(&*entry).map_err(invalid)?;
    merge_patch(&mut v, &patch);
    let changed: NamedKey = parse("key", with_name(v, &key)?)?;
    *entry = KeyEntry::Named(changed);
    fix_provider(p, Some(&old))?;
    Ok(key_outcome("patch", format!("{provider}/{key}")))
}

/// `Op::NewCredential`: a consumer's new credential, kept hashed (`replace`: its only one).
fn new_credential(
    layer: &mut Layer,
    file: &Settings,
    consumer: String,
    credential: &str,
    replace: bool,
) -> ManagedResult {
    guard(file, Collection::Consumers, &consumer)?;
    let c = consumer_mut(layer, &consumer)?;
    if replace {
        c.credentials.clear();
        c.hashed_credentials.clear();
    }
    c.hashed_credentials
        .push(crate::auth::digest_text(credential));
    Ok(Outcome {
        action: if replace { "rotate" } else { "create" },
        kind: "credential",
        name: consumer,
    })
}

/// `Op::DeleteCredential`: revoke the hashed credential whose id starts its digest.
fn delete_credential(
    layer: &mut Layer,
    file: &Settings,
    consumer: String,
    id: String,
) -> ManagedResult {
    guard(file, Collection::Consumers, &consumer)?;
    let c = consumer_mut(layer, &consumer)?;
    let before = c.hashed_credentials.len();
    let prefix = format!("sha256:{id}");
    if id.len() < 12 {
        return Err(invalid("a credential id is 12 hex digits"));
    }
    c.hashed_credentials.retain(|d| !d.starts_with(&prefix));
    if c.hashed_credentials.len() == before {
        return Err(ManagedError::NotFound {
            kind: "credential",
            name: id,
        });
    }
    Ok(Outcome {
        action: "delete",
        kind: "credential",
        name: format!("{consumer}/{id}"),
    })
}

type ManagedResult = Result<Outcome, ManagedError>;

fn key_outcome(action: &'static str, name: String) -> Outcome {
    Outcome {
        action,
        kind: "key",
        name,
    }
}

fn quota_outcome(action: &'static str) -> Outcome {
    Outcome {
        action,
        kind: "quota",
        name: "quota".into(),
    }
}

/// A name the API can address: 1 to 128 characters, none of them `/`, `?`, `#`, `%`,
/// whitespace or a control character.
fn check_name(kind: &str, name: &str) -> Result<(), ManagedError> {
    let bad = |c: char| c.is_whitespace() || c.is_control() || "/?#%".contains(c);
    if name.is_empty() || name.chars().count() > 128 || name.chars().any(bad) {
        return Err(invalid(format!(
            "a {kind} name is 1 to 128 characters without `/`, `?`, `#`, `%`, spaces or control characters: {name:?}"
        )));
    }
    Ok(())
}

fn outcome(action: &'static str, c: Collection, name: String) -> Outcome {
    Outcome {
        action,
        kind: c.kind(),
        name,
    }
}

fn from_file(kind: &'static str, name: &str) -> ManagedError {
    ManagedError::FromFile {
        kind,
        name: name.to_string(),
    }
}

/// Refuse to touch an object the file defines.
fn guard(file: &Settings, c: Collection, name: &str) -> Result<(), ManagedError> {
    if c.objects(file).iter().any(|(n, _)| n == name) {
        return Err(from_file(c.kind(), name));
    }
    Ok(())
}

fn not_found(kind: &'static str, name: &str) -> ManagedError {
    ManagedError::NotFound {
        kind,
        name: name.to_string(),
    }
}

/// Create (`body` and `change` refusing), replace (`body`) or patch (`change`) the object
/// `name` of collection `c`.
fn on_collection(
    layer: &mut Layer,
    c: Collection,
    name: &str,
    change: impl Fn(&Value) -> Result<Option<Value>, ()>,
    body: Option<Value>,
) -> Result<(), ManagedError> {
    match c {
        Collection::Providers => upsert(&mut layer.providers, c, name, change, body, fix_provider),
        Collection::Routes => upsert(&mut layer.routes, c, name, change, body, |_, _| Ok(())),
        Collection::Consumers => upsert(&mut layer.consumers, c, name, change, body, fix_consumer),
        Collection::RateLimits => {
            upsert(&mut layer.rate_limits, c, name, change, body, |_, _| Ok(()))
        }
        Collection::AlertRules => {
            upsert(&mut layer.alert_rules, c, name, change, body, |_, _| Ok(()))
        }
        Collection::AlertWebhooks => upsert(
            &mut layer.alert_webhooks,
            c,
            name,
            change,
            body,
            fix_webhook,
        ),
        Collection::Budgets => upsert(&mut layer.budgets, c, name, change, body, |_, _| Ok(())),
    }
}

fn upsert<T: Named + Serialize + DeserializeOwned + Clone>(
    items: &mut Vec<T>,
    c: Collection,
    name: &str,
    change: impl Fn(&Value) -> Result<Option<Value>, ()>,
    body: Option<Value>,
    fix: impl Fn(&mut T, Option<&T>) -> Result<(), ManagedError>,
) -> Result<(), ManagedError> {
    let at = items.iter().position(|i| i.name() == name);
    let kind = c.kind();
    match at {
        None => {
            // Only a create gets here with a body; a replace or patch of nothing is a 404.
            let Some(body) = body else {
                return Err(not_found(kind, name));
            };
            if change(&Value::Null).is_ok() {
                return Err(not_found(kind, name));
            }
            let mut item: T = parse(kind, body)?;
            fix(&mut item, None)?;
            items.push(item);
        }
        Some(i) => {
            let current = serde_json::to_value(&items[i]).map_err(invalid)?;
            let new = match change(&current) {
                Err(()) => {
                    return Err(ManagedError::Exists {
                        kind,
                        name: name.to_string(),
                    })
                }
                Ok(Some(patched)) => patched,
                Ok(None) => body.ok_or_else(|| invalid("a body is required"))?,
            };
            let mut item: T = parse(kind, new)?;
            if item.name() != name {
                return Err(invalid("renaming is delete and create"));
            }
            fix(&mut item, Some(&items[i]))?;
            items[i] = item;
        }
    }
    Ok(())
}

fn delete(layer: &mut Layer, c: Collection, name: &str) -> Result<(), ManagedError> {
    fn remove<T: Named>(items: &mut Vec<T>, name: &str) -> bool {
        let before = items.len();
        items.retain(|i| i.name() != name);
        items.len() != before
    }
    let removed = match c {
        Collection::Providers => remove(&mut layer.providers, name),
        Collection::Routes => remove(&mut layer.routes, name),
        Collection::Consumers => remove(&mut layer.consumers, name),
        Collection::RateLimits => remove(&mut layer.rate_limits, name),
        Collection::AlertRules => remove(&mut layer.alert_rules, name),
        Collection::AlertWebhooks => remove(&mut layer.alert_webhooks, name),
        Collection::Budgets => remove(&mut layer.budgets, name),
    };
    if removed {
        Ok(())
    } else {
        Err(not_found(c.kind(), name))
    }
}

fn provider_mut<'a>(
    layer: &'a mut Layer,
    name: &str,
) -> Result<&'a mut ProviderSection, ManagedError> {
    layer
        .providers
        .iter_mut()
        .find(|p| p.name == name)
        .ok_or_else(|| not_found("provider", name))
}

fn consumer_mut<'a>(
    layer: &'a mut Layer,
    name: &str,
) -> Result<&'a mut ConsumerSection, ManagedError> {
    layer
        .consumers
        .iter_mut()
        .find(|c| c.name == name)
        .ok_or_else(|| not_found("consumer", name))
}

fn key_name(k: &KeyEntry) -> Option<&str> {
    match k {
        KeyEntry::Named(n) => Some(&n.name),
        KeyEntry::Plain(_) => None,
    }
}

fn key_mut<'a>(p: &'a mut ProviderSection, key: &str) -> Result<&'a mut KeyEntry, ManagedError> {
    p.api_keys
        .iter_mut()
        .find(|k| key_name(k) == Some(key))
        .ok_or_else(|| ManagedError::NotFound {
            kind: "key",
            name: format!("{}/{key}", p.name),
        })
}

/// A masked form as `GET` shows it (never a usable secret).
fn is_masked(s: &Secret) -> bool {
    s.as_written().contains('…')
}

/// Name unnamed keys and put back the secrets of keys sent in their masked form.
fn fix_provider(
    p: &mut ProviderSection,
    old: Option<&ProviderSection>,
) -> Result<(), ManagedError> {
    let mut n = 0;
    let entries = std::mem::take(&mut p.api_keys);
    for (i, entry) in entries.into_iter().enumerate() {
        let mut named = match entry {
            KeyEntry::Named(named) => named,
            KeyEntry::Plain(key) => loop {
                n += 1;
                let name = format!("key-{n}");
                if !p.api_keys.iter().any(|k| key_name(k) == Some(&name)) {
                    break NamedKey {
                        name,
                        key,
                        weight: None,
                        disabled: false,
                    };
                }
            },
        };
        if is_masked(&named.key) {
            let kept = old
                .and_then(|o| o.api_keys.iter().find(|k| key_name(k) == Some(&named.name)))
                .and_then(|k| match k {
                    KeyEntry::Named(k) if k.key.masked() == named.key => Some(k.key.clone()),
                    _ => None,
                });
            named.key = kept.ok_or_else(|| {
                invalid(format!(
                    "api_keys[{i}] ({}): `{}` is a masked key; send the key itself",
                    named.name,
                    named.key.as_written()
                ))
            })?;
        }
        if p.api_keys.iter().any(|k| key_name(k) == Some(&named.name)) {
            return Err(invalid(format!(
                "api_keys[{i}]: duplicate key name `{}`",
                named.name
            )));
        }
        p.api_keys.push(KeyEntry::Named(named));
    }
    Ok(())
}

/// Put back a webhook URL sent in its masked form (as `GET` shows it).
fn fix_webhook(w: &mut WebhookSection, old: Option<&WebhookSection>) -> Result<(), ManagedError> {
    if is_masked(&w.url) {
        w.url = old
            .filter(|o| o.url.masked_url() == w.url)
            .map(|o| o.url.clone())
            .ok_or_else(|| {
                invalid("url: a masked URL that matches none; send the URL itself".to_string())
            })?;
    }
    Ok(())
}

/// Store literal credentials as digests, and put back the credentials sent in their masked
/// form.
fn fix_consumer(
    c: &mut ConsumerSection,
    old: Option<&ConsumerSection>,
) -> Result<(), ManagedError> {
    let mut digests = Vec::new();
    for (i, d) in std::mem::take(&mut c.hashed_credentials)
        .into_iter()
        .enumerate()
    {
        if let Some(id) = d.strip_suffix('…') {
            let kept = old
                .and_then(|o| o.hashed_credentials.iter().find(|h| h.starts_with(id)))
                .ok_or_else(|| invalid(format!("hashed_credentials[{i}]: `{d}` matches none")))?;
            digests.push(kept.clone());
        } else {
            crate::auth::parse_digest(&d)
                .map_err(|e| invalid(format!("hashed_credentials[{i}]: {e}")))?;
            digests.push(d);
        }
    }
    let mut kept = Vec::new();
    for (i, cred) in std::mem::take(&mut c.credentials).into_iter().enumerate() {
        if is_masked(&cred) {
            let old = old
                .and_then(|o| o.credentials.iter().find(|k| k.masked() == cred))
                .ok_or_else(|| invalid(format!("credentials[{i}]: `{}` is a masked credential that matches none; send the credential itself", cred.as_written())))?;
            kept.push(old.clone());
        } else if cred.is_reference() {
            kept.push(cred);
        } else if cred.as_written().is_empty() {
            return Err(invalid(format!("credentials[{i}]: empty")));
        } else {
            digests.push(crate::auth::digest_text(cred.as_written()));
        }
    }
    c.credentials = kept;
    c.hashed_credentials = digests;
    Ok(())
}

#[cfg(test)]
#[path = "edit_tests.rs"]
mod tests;
