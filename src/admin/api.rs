//! The management API under `/admin/api/v1/` (issue #17): the settings the gateway runs,
//! read and changed at run time.
//!
//! Objects are JSON in the settings file's schema, every literal secret masked on the way
//! out (`Settings::redacted`), each with its `source` (`file`: the operator's file, which
//! the API never changes; `api`: created here) and `revision` (also its `ETag`). A write
//! (`routes`) goes through `Reloader::write`: validated by the same build as the file,
//! stored durably, then swapped in, and recorded in the history and the audit log. A write
//! whose `If-Match` names a revision that is no longer current gets 409. The OpenAPI 3.1
//! document is generated from `ROUTES`, the table the router and its tests walk.

use super::access::Principal;
use super::{error, json_response, respond, Admin};
use crate::error::GatewayError;
use crate::managed::edit::{self, object_revision, Collection, Op, Outcome};
use crate::managed::{self, source_of, Layer, ManagedError};
use crate::settings::{self, Settings};
use http::{Method, Response, StatusCode};
use pingora_core::protocols::http::ServerSession;
use serde_json::{json, Value};

/// Where the API lives on the admin listener.
pub const PREFIX: &str = "/admin/api/v1";

/// Every operation of the API: path (after `PREFIX`), method, summary. The router, the
/// OpenAPI document and the tests all read this table.
pub const ROUTES: &[(&str, &str, &str)] = &[
    ("/config", "GET", "The settings the gateway runs (file and API merged), secrets masked, with their revision."),
    ("/config/diff", "GET", "What the API changed: the file's settings against the merged ones, as a unified diff (secrets masked), like `tollgate config diff`."),
    ("/openapi.json", "GET", "This document."),
    ("/providers", "GET", "Every provider."),
    ("/providers", "POST", "Create a provider (the settings file's schema); unnamed keys are named key-1, key-2, …"),
    ("/providers/{name}", "GET", "One provider."),
    ("/providers/{name}", "PUT", "Replace a provider created through the API."),
    ("/providers/{name}", "PATCH", "Change a provider (JSON merge patch, RFC 7386)."),
    ("/providers/{name}", "DELETE", "Delete a provider (refused while a route uses it)."),
    ("/providers/{name}/keys", "GET", "A provider's keys, masked, with their health."),
    ("/providers/{name}/keys", "POST", "Add a key: {name, key, weight, disabled}."),
    ("/providers/{name}/keys/{key}", "PATCH", "Change one key, e.g. {\"disabled\": true}; the others keep their health."),
    ("/providers/{name}/keys/{key}", "DELETE", "Remove one key."),
    ("/routes", "GET", "Every route."),
    ("/routes", "POST", "Create a route."),
    ("/routes/{name}", "GET", "One route."),
    ("/routes/{name}", "PUT", "Replace a route."),
    ("/routes/{name}", "PATCH", "Change a route (JSON merge patch)."),
    ("/routes/{name}", "DELETE", "Delete a route."),
    ("/consumers", "GET", "Every consumer (credentials masked)."),
    ("/consumers", "POST", "Create a consumer; literal credentials are stored as SHA-256 digests."),
    ("/consumers/{name}", "GET", "One consumer (credentials masked)."),
    ("/consumers/{name}", "PUT", "Replace a consumer."),
    ("/consumers/{name}", "PATCH", "Change a consumer (JSON merge patch)."),
    ("/consumers/{name}", "DELETE", "Delete a consumer."),
    ("/consumers/{name}/credentials", "POST", "Generate a credential, shown once in the answer ({\"replace\": true} revokes the others)."),
    ("/consumers/{name}/credentials/{id}", "DELETE", "Revoke a generated credential by its id."),
    ("/rate_limits", "GET", "Every rate-limit rule."),
    ("/rate_limits", "POST", "Create a rate-limit rule."),
    ("/rate_limits/{name}", "GET", "One rate-limit rule."),
    ("/rate_limits/{name}", "PUT", "Replace a rate-limit rule."),
    ("/rate_limits/{name}", "PATCH", "Change a rate-limit rule (JSON merge patch)."),
    ("/rate_limits/{name}", "DELETE", "Delete a rate-limit rule."),
    ("/rate_limits/{name}/usage", "GET", "What the rule has counted now (the sliding-window estimate admission uses) for ?key=K, or for every configured consumer (consumer rules) or route (route rules)."),
    ("/quota", "GET", "The quota section."),
    ("/quota", "PUT", "Set the quota section (when the file has none)."),
    ("/quota", "DELETE", "Remove the API's quota section."),
    ("/quota/balances", "GET", "Every charged consumer's balance."),
    ("/quota/balances/{name}", "GET", "One consumer's balance."),
    ("/quota/balances/{name}", "PUT", "Set a balance: {\"quota\": N}."),
    ("/quota/balances/{name}/delta", "POST", "Add to a balance: {\"value\": ±N}."),
    ("/revisions", "GET", "The last revisions of the API's layer: who changed what and when."),
    ("/revisions/{n}/diff", "GET", "What revision n changed: the merged settings before it against after it, as a unified diff (secrets masked)."),
    ("/revisions/{n}/restore", "POST", "Make revision n's layer current again (as a new revision; admin users are kept)."),
    ("/audit", "GET", "The audit log, newest first (?limit=N, default 100)."),
    ("/usage", "GET", "Usage rollups over a range: ?from=&to= (RFC 3339 or unix seconds; default the last hour), step=1m|1h|…, group_by=route,provider,model,consumer,class, filter[DIM]=VALUE, format=csv."),
    ("/usage/top", "GET", "The top N of one dimension by input + output tokens: ?by=consumer&n=10&from=&to=."),
    ("/requests", "GET", "The last requests' metadata (no prompt or answer text), newest first: ?consumer=&model=&route=&status=&request_id=&limit=100."),
    ("/alerts", "GET", "Every alert rule with its state (ok, pending, firing, resolved), last value and last notification, and this gateway's last 200 notices (`history`, newest first)."),
    ("/alert_rules", "GET", "Every alert rule (the file's `alerts.rules`, then the API's)."),
    ("/alert_rules", "POST", "Create an alert rule: {name, kind: tokens|spike|error_rate|keys_down|quota, threshold, window, filter, for, repeat, webhooks}."),
    ("/alert_rules/{name}", "GET", "One alert rule."),
    ("/alert_rules/{name}", "PUT", "Replace an alert rule (its state is kept)."),
    ("/alert_rules/{name}", "PATCH", "Change an alert rule (JSON merge patch), e.g. {\"threshold\": 5000}."),
    ("/alert_rules/{name}", "DELETE", "Delete an alert rule."),
    ("/alert_webhooks", "GET", "Every alert webhook (URLs masked)."),
    ("/alert_webhooks", "POST", "Create an alert webhook: {name, url, format: json|slack|dingtalk|feishu}."),
    ("/alert_webhooks/{name}", "GET", "One alert webhook (URL masked)."),
    ("/alert_webhooks/{name}", "PUT", "Replace an alert webhook; the masked URL sent back keeps the stored one."),
    ("/alert_webhooks/{name}", "PATCH", "Change an alert webhook (JSON merge patch)."),
    ("/alert_webhooks/{name}", "DELETE", "Delete an alert webhook (refused while a rule names it)."),
    ("/alert_webhooks/{name}/test", "POST", "Send a test notice in the webhook's format; answers the receiver's status."),
    ("/budgets", "GET", "Every money budget (the file's `budgets`, then the API's)."),
    ("/budgets", "POST", "Create a budget: {name, consumer|team|route|key (a name, or `*` for each), amount, currency: USD|CNY, period: day|week|month|custom|lifetime, every, anchor, time_zone, soft, unpriced: refuse|admit, output_allowance}."),
    ("/budgets/{name}", "GET", "One budget."),
    ("/budgets/{name}", "PUT", "Replace a budget (set its amount, period, …); the spend is kept."),
    ("/budgets/{name}", "PATCH", "Change a budget (JSON merge patch), e.g. {\"amount\": 50}."),
    ("/budgets/{name}", "DELETE", "Delete a budget (its spend history stays in the store)."),
    ("/budgets/{name}/spend", "GET", "The current period of ?subject= (or of every subject): amount, top-ups, spent, reserved, remaining, percent used, when it began and when it resets."),
    ("/budgets/{name}/history", "GET", "Spend and top-ups per period, newest first: ?subject=&limit=100."),
    ("/budgets/{name}/top_up", "POST", "Add to the current period's allowance: {subject, amount} (amount may be negative; `subject` may be left out for a budget of one target)."),
    ("/budgets/{name}/reset", "POST", "Set the current period's spend back to 0: {subject}."),
    ("/cache", "GET", "The response cache: entries and bytes in this gateway's memory, whether Redis shares them, the routes with a cache."),
    ("/cache", "DELETE", "Purge cached answers of ?route=, ?model= (the client's model) or ?scope= (consumer:NAME, team:NAME, route:NAME, global): from this gateway's memory and from Redis."),
    ("/playground", "POST", "Send {body} to `path` (default /v1/chat/completions) through this gateway's proxy listener as `consumer` (or anonymously); the answer streams back as it arrives. Admin role."),
    ("/users", "GET", "Admin users (names and roles)."),
    ("/users", "POST", "Create an admin user: {name, role, password}."),
    ("/users/{name}", "GET", "One admin user."),
    ("/users/{name}", "PUT", "Replace an admin user's role and password."),
    ("/users/{name}", "DELETE", "Delete an admin user (their sessions end)."),
    ("/login", "POST", "Log in: {user, password} → a session token for `Authorization: Bearer`."),
    ("/logout", "POST", "End the session whose token authorises this call."),
    ("/setup", "GET", "Whether the first admin user is still to be created."),
    ("/setup", "POST", "First run, loopback only, while no admin user exists: {user, password} creates an `admin`."),
];

/// An object alone in the settings file's YAML (secrets masked, as shown), its revision
/// as the `ETag`.
fn yaml_object(mut object: Value, etag: Option<&str>) -> Response<Vec<u8>> {
    if let Some(m) = object.as_object_mut() {
        m.remove("revision");
        m.remove("source");
    }
    let text = serde_yaml::to_string(&object).unwrap_or_default();
    let resp = respond(StatusCode::OK, "application/yaml", text.into_bytes());
    with_etag(resp, etag)
}

/// The parsed `If-Match` header: `None` (absent or `*`) or the revision named.
pub fn if_match(session: &ServerSession) -> Option<String> {
    let v = session.req_header().headers.get(http::header::IF_MATCH)?;
    let v = v.to_str().ok()?.trim();
    let v = v.strip_prefix("W/").unwrap_or(v).trim_matches('"');
    (v != "*").then(|| v.to_string())
}

fn check_revision(
    given: &Option<String>,
    current: impl FnOnce() -> String,
) -> Result<(), ManagedError> {
    match given {
        None => Ok(()),
        Some(g) => {
            let current = current();
            if *g == current {
                Ok(())
            } else {
                Err(ManagedError::Stale {
                    given: g.clone(),
                    current,
                })
            }
        }
    }
}

/// The revision of the API's object `name` of `c` (empty when the layer has none).
fn layer_object_revision(layer: &Layer, c: Collection, name: &str) -> String {
    c.layer_objects(layer)
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| object_revision(&v))
        .unwrap_or_default()
}

/// The objects of `c` as shown, each with `source` and `revision`.
fn shown_objects(c: Collection, settings: &Settings, file: &Settings) -> Vec<Value> {
    let shown = c.objects(&settings.redacted());
    c.objects(settings)
        .into_iter()
        .zip(shown)
        .map(|((name, real), (_, mut v))| {
            if let Some(fields) = v.as_object_mut() {
                fields.insert("source".into(), json!(source_of(file, c.path(), &name)));
                fields.insert("revision".into(), json!(object_revision(&real)));
            }
            v
        })
        .collect()
}

fn with_etag(mut resp: Response<Vec<u8>>, etag: Option<&str>) -> Response<Vec<u8>> {
    if let Some(v) = etag.and_then(|t| format!("\"{t}\"").parse().ok()) {
        resp.headers_mut().insert(http::header::ETAG, v);
    }
    resp
}

impl Admin {
    /// Answer a request under `PREFIX` from an authenticated `who`.
    pub(super) async fn api(
        &self,
        session: &mut ServerSession,
        who: &Principal,
    ) -> Response<Vec<u8>> {
        let method = session.req_header().method.clone();
        let path = session.req_header().uri.path().to_string();
        let rest = path
            .strip_prefix(PREFIX)
            .unwrap_or("")
            .trim_start_matches('/');
        let segments: Vec<String> = rest.split('/').map(str::to_string).collect();
        let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
        if !ROUTES.iter().any(|(p, _, _)| matches(p, &segs)) {
            return error(&GatewayError::AdminNotFound);
        }
        if !ROUTES
            .iter()
            .any(|(p, m, _)| *m == method.as_str() && matches(p, &segs))
        {
            return error(&GatewayError::AdminMethodNotAllowed);
        }
        let result = match (&method, segs.as_slice()) {
            (&Method::GET, ["quota", "balances", name]) => {
                Ok(self.quota_api(session, &method, name, &who.name).await)
            }
            (&Method::GET, _) => self.read(session, &segs).await,
            (_, ["login" | "logout" | "setup"]) => self.session_api(session, who, segs[0]).await,
            _ if !who.role.may_write() => Err(GatewayError::AdminReadOnly),
            (_, ["quota", "balances", ..]) => {
                let rest = segs[2..].join("/");
                Ok(self.quota_api(session, &method, &rest, &who.name).await)
            }
            (_, ["users", ..]) => self.users_api(session, who, &segs[1..]).await,
            (_, ["alert_webhooks", name, "test"]) => self.test_webhook(&who.name, name).await,
            (&Method::DELETE, ["cache"]) => self.cache_purge(session, &who.name).await,
            (_, ["budgets", name, action @ ("top_up" | "reset")]) => {
                self.budget_change(session, &who.name, name, action).await
            }
            _ => self.write(session, who, &segs).await,
        };
        result.unwrap_or_else(|e| error(&e))
    }

    async fn read(
        &self,
        session: &ServerSession,
        segs: &[&str],
    ) -> Result<Response<Vec<u8>>, GatewayError> {
        let config = self.config.load_full();
        let settings = &config.settings;
        let file = self.reloader.sources.file.load_full();
        let layer = self.reloader.sources.layer.load_full();
        let revision = settings::revision(settings);
        let ok = |v: Value, etag: Option<&str>| with_etag(json_response(StatusCode::OK, v), etag);
        Ok(match segs {
            ["openapi.json"] => ok(openapi(), None),
            ["config"] => ok(
                json!({"revision": revision, "api_revision": layer.revision, "settings": settings.redacted()}),
                Some(&revision),
            ),
            ["config", "diff"] => {
                let diff = managed::diff::api_changes(&file, settings, layer.revision);
                ok(
                    json!({"revision": revision, "api_revision": layer.revision, "diff": diff}),
                    Some(&revision),
                )
            }
            [c] if Collection::from_path(c).is_some() => {
                let c = Collection::from_path(c).ok_or(GatewayError::AdminNotFound)?;
                let items = shown_objects(c, settings, &file);
                ok(
                    json!({"revision": revision, "api_revision": layer.revision, "items": items}),
                    Some(&revision),
                )
            }
            [c, name] if Collection::from_path(c).is_some() => {
                let c = Collection::from_path(c).ok_or(GatewayError::AdminNotFound)?;
                let object = find(c, settings, &file, name)?;
                let etag = object["revision"].as_str().map(str::to_string);
                if query(session, "format").as_deref() == Some("yaml") {
                    return Ok(yaml_object(object, etag.as_deref()));
                }
                ok(object, etag.as_deref())
            }
            ["rate_limits", name, "usage"] => {
                return self.limit_usage(session, &config, name).await;
            }
            ["budgets", name, "spend"] => return self.budget_spend(session, name).await,
            ["cache"] => return self.cache_stats().await,
            ["budgets", name, "history"] => return self.budget_history(session, name).await,
            ["providers", name, "keys"] => {
                let object = find(Collection::Providers, settings, &file, name)?;
                let health = config
                    .provider(name)
                    .map(|p| p.keys.iter().map(|k| k.status()).collect::<Vec<_>>());
                ok(json!({"keys": object["api_keys"], "health": health}), None)
            }
            ["quota"] => {
                let q = settings.quota.as_ref().map(|q| {
                    let mut v = json!(q);
                    v["source"] = json!(source_of(&file, "quota", "quota"));
                    v
                });
                ok(json!({"quota": q}), None)
            }
            ["quota", "balances"] => ok(json!({"balances": self.balances(&config).await}), None),
            ["revisions", n, "diff"] => ok(self.revision_diff(&file, n).await?, None),
            ["usage"] | ["usage", "top"] | ["requests"] => {
                return self.usage_api(session, segs).await
            }
            _ => return self.read_operations(session, segs, settings, &layer).await,
        })
    }

    /// The reads of what was done and by whom: API revisions, the audit log, admin users,
    /// first-run setup, alerts.
    async fn read_operations(
        &self,
        session: &ServerSession,
        segs: &[&str],
        settings: &Settings,
        layer: &managed::Layer,
    ) -> Result<Response<Vec<u8>>, GatewayError> {
        let ok = |v: Value| json_response(StatusCode::OK, v);
        Ok(match segs {
            ["revisions"] => {
                let history = self.reloader.sources.store.history().await?;
                let items: Vec<Value> = history.iter().map(|r| json!(r.change)).collect();
                ok(json!({"api_revision": layer.revision, "items": items}))
            }
            ["audit"] => {
                let limit = query(session, "limit")
                    .and_then(|l| l.parse().ok())
                    .unwrap_or(100);
                let items = self
                    .reloader
                    .sources
                    .store
                    .audit(limit.min(managed::AUDIT_KEEP))
                    .await?;
                ok(json!({"items": items}))
            }
            ["users"] => ok(json!({"items": users_shown(layer)})),
            ["users", name] => {
                let user = users_shown(layer)
                    .into_iter()
                    .find(|u| u["name"] == *name)
                    .ok_or_else(|| GatewayError::AdminObjectNotFound {
                        kind: "admin user",
                        name: name.to_string(),
                    })?;
                ok(user)
            }
            ["setup"] => ok(json!({"needed": layer.admin_users.is_empty()})),
            ["alerts"] => {
                let states = self
                    .alerts
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let items = states.statuses(&settings.alerts.rules);
                ok(json!({"items": items, "history": states.history()}))
            }
            _ => return Err(GatewayError::AdminNotFound),
        })
    }

    /// `GET /revisions/{n}/diff`: the merged settings before revision `n` against after it.
    async fn revision_diff(&self, file: &Settings, n: &str) -> Result<Value, GatewayError> {
        let n: u64 = n
            .parse()
            .map_err(|_| GatewayError::BadQuery(format!("`{n}` is not a revision")))?;
        let history = self.reloader.sources.store.history().await?;
        let this = history.iter().find(|r| r.change.revision == n).ok_or(
            GatewayError::AdminObjectNotFound {
                kind: "revision",
                name: n.to_string(),
            },
        )?;
        let before = history
            .iter()
            .filter(|r| r.change.revision < n)
            .max_by_key(|r| r.change.revision);
        let (from, from_name) = match before {
            Some(b) => (b.layer.clone(), format!("revision {}", b.change.revision)),
            None => (Layer::default(), "the file alone".to_string()),
        };
        let diff = managed::diff::settings(
            &managed::merge(file, &from).settings,
            &managed::merge(file, &this.layer).settings,
            &from_name,
            &format!("revision {n}"),
        );
        Ok(json!({"revision": n, "change": this.change, "diff": diff}))
    }

    /// `GET /rate_limits/{name}/usage`: the rule's standing for `?key=`, or for each
    /// consumer or route it counts.
    async fn limit_usage(
        &self,
        session: &ServerSession,
        config: &crate::runtime::Gateway,
        name: &str,
    ) -> Result<Response<Vec<u8>>, GatewayError> {
        let rule = config
            .limits
            .rules
            .iter()
            .find(|r| r.name == name)
            .ok_or_else(|| GatewayError::AdminObjectNotFound {
                kind: "rate limit",
                name: name.to_string(),
            })?;
        let keys: Vec<String> = match (query(session, "key"), &rule.key) {
            (Some(k), _) => vec![k],
            (None, crate::limits::KeyBy::Consumer(only)) => config
                .consumers
                .names()
                .iter()
                .filter(|c| only.is_empty() || only.contains(c))
                .take(1000)
                .cloned()
                .collect(),
            (None, crate::limits::KeyBy::Route) => config
                .routes
                .iter()
                .filter(|r| rule.routes.is_empty() || rule.routes.contains(&r.name))
                .map(|r| r.name.clone())
                .collect(),
            (None, _) => return Err(GatewayError::BadQuery(
                "this rule counts per header value, IP, block or provider key: name one with ?key="
                    .into(),
            )),
        };
        let stores = self.backends.stores().clone();
        let mut items = Vec::with_capacity(keys.len());
        for key in keys {
            let limits = config
                .limits
                .standing(&stores, name, &key)
                .await
                .ok_or(GatewayError::StoreUnavailable("rate limits"))?;
            items.push(json!({"key": key, "limits": limits}));
        }
        Ok(super::json_response(
            StatusCode::OK,
            json!({"rule": name, "window": rule.window, "items": items}),
        ))
    }

    /// A change to the API's layer.
    async fn write(
        &self,
        session: &mut ServerSession,
        who: &Principal,
        segs: &[&str],
    ) -> Result<Response<Vec<u8>>, GatewayError> {
        let method = session.req_header().method.clone();
        let given = if_match(session);
        let body = match method {
            Method::DELETE => Value::Null,
            _ => super::read_json(session).await?,
        };
        if let ["revisions", n, "restore"] = segs {
            return self.restore(who, n).await;
        }
        if let ["consumers", c, "credentials"] = segs {
            return self.new_credential(who, c, &body, given).await;
        }
        let (op, shown) = layer_op(&method, segs, &body)?;
        let target = object_of(&op);
        let (outcome, api_revision) = self
            .reloader
            .write(&who.name, move |layer, file| {
                match &target {
                    Some((c, name)) if layer_has(layer, *c, name) => {
                        check_revision(&given, || layer_object_revision(layer, *c, name))?
                    }
                    Some(_) | None => check_revision(&given, || {
                        settings::revision(&managed::merge(file, layer).settings)
                    })?,
                }
                edit::apply(layer, file, op)
            })
            .await?;
        self.written(outcome, api_revision, shown, &method)
    }

    /// The answer to a write: the object as it is now, or 204 after a delete.
    fn written(
        &self,
        outcome: Outcome,
        api_revision: u64,
        shown: Option<(Collection, String)>,
        method: &Method,
    ) -> Result<Response<Vec<u8>>, GatewayError> {
        if *method == Method::DELETE {
            let mut resp = respond(StatusCode::NO_CONTENT, "application/json", Vec::new());
            if let Ok(v) = api_revision.to_string().parse() {
                resp.headers_mut().insert("x-tollgate-api-revision", v);
            }
            return Ok(resp);
        }
        let Some((c, name)) = shown else {
            return Ok(json_response(
                StatusCode::OK,
                json!({"action": outcome.action, "kind": outcome.kind, "name": outcome.name, "api_revision": api_revision}),
            ));
        };
        let config = self.config.load_full();
        let file = self.reloader.sources.file.load_full();
        let mut object = find(c, &config.settings, &file, &name)?;
        object["api_revision"] = json!(api_revision);
        let etag = object["revision"].as_str().map(str::to_string);
        let created =
            *method == Method::POST && outcome.action == "create" && outcome.kind == c.kind();
        let status = if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        let mut resp = with_etag(json_response(status, object), etag.as_deref());
        if created {
            if let Ok(v) = format!("{PREFIX}/{}/{name}", c.path()).parse() {
                resp.headers_mut().insert(http::header::LOCATION, v);
            }
        }
        Ok(resp)
    }

    async fn new_credential(
        &self,
        who: &Principal,
        consumer: &str,
        body: &Value,
        given: Option<String>,
    ) -> Result<Response<Vec<u8>>, GatewayError> {
        let replace = match body.get("replace") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                return Err(ManagedError::Invalid("`replace` is true or false".into()).into())
            }
        };
        let credential = crate::auth::generate_credential().map_err(GatewayError::Internal)?;
        let digest = crate::auth::digest_text(&credential);
        let name = consumer.to_string();
        let op = Op::NewCredential {
            consumer: name.clone(),
            credential: credential.clone(),
            replace,
        };
        let (_, api_revision) = self
            .reloader
            .write(&who.name, move |layer, file| {
                if layer_has(layer, Collection::Consumers, &name) {
                    check_revision(&given, || {
                        layer_object_revision(layer, Collection::Consumers, &name)
                    })?;
                }
                edit::apply(layer, file, op)
            })
            .await?;
        Ok(respond(
            StatusCode::CREATED,
            "application/json",
            serde_json::to_vec(&json!({
                "consumer": consumer,
                "credential": credential,
                "id": digest["sha256:".len().."sha256:".len() + 12],
                "replaced_others": replace,
                "api_revision": api_revision,
                "note": "The credential is shown this once; the gateway keeps only its SHA-256 digest.",
            }))
            .unwrap_or_default(),
        ))
    }

    /// `POST /alert_webhooks/{name}/test`: a test notice, and what the receiver answered.
    async fn test_webhook(&self, who: &str, name: &str) -> Result<Response<Vec<u8>>, GatewayError> {
        let config = self.config.load_full();
        let w = (config.settings.alerts.webhooks.iter())
            .find(|w| w.name == name)
            .ok_or_else(|| GatewayError::AdminObjectNotFound {
                kind: "alert webhook",
                name: name.to_string(),
            })?;
        let url = w.url.masked_url();
        let hook = crate::background::alerting::hook(w).map_err(|var| {
            ManagedError::Invalid(format!(
                "alert webhook `{name}`: url: variable {var} is not set"
            ))
        })?;
        let notice = crate::alerts::test_notice(name);
        let answer =
            match crate::alerts::notify::post(&reqwest::Client::new(), &hook, &notice).await {
                Ok(status) => json!({
                    "webhook": name, "url": url, "format": hook.format,
                    "delivered": status.is_success(), "status": status.as_u16(), "error": null,
                }),
                Err(e) => json!({
                    "webhook": name, "url": url, "format": hook.format,
                    "delivered": false, "status": null, "error": e,
                }),
            };
        self.reloader
            .record(who, "test", "alert webhook", name)
            .await;
        Ok(json_response(StatusCode::OK, answer))
    }

    async fn restore(&self, who: &Principal, n: &str) -> Result<Response<Vec<u8>>, GatewayError> {
        let n: u64 = n
            .parse()
            .map_err(|_| ManagedError::Invalid(format!("`{n}` is not a revision number")))?;
        let history = self.reloader.sources.store.history().await?;
        let Some(old) = history.into_iter().find(|r| r.change.revision == n) else {
            return Err(ManagedError::NotFound {
                kind: "revision",
                name: n.to_string(),
            }
            .into());
        };
        let (outcome, api_revision) = self
            .reloader
            .write(&who.name, move |layer, _| {
                let users = std::mem::take(&mut layer.admin_users);
                *layer = old.layer;
                layer.admin_users = users;
                Ok(Outcome {
                    action: "restore",
                    kind: "revision",
                    name: n.to_string(),
                })
            })
            .await?;
        self.written(outcome, api_revision, None, &Method::POST)
    }
}

/// The collection and name an operation changes, when it is one object of a collection.
fn object_of(op: &Op) -> Option<(Collection, String)> {
    match op {
        Op::Create(c, body) => Some((*c, body.get("name")?.as_str()?.to_string())),
        Op::Replace(c, n, _) | Op::Patch(c, n, _) | Op::Delete(c, n) => Some((*c, n.clone())),
        Op::AddKey { provider, .. }
        | Op::PatchKey { provider, .. }
        | Op::DeleteKey { provider, .. } => Some((Collection::Providers, provider.clone())),
        Op::NewCredential { consumer, .. } | Op::DeleteCredential { consumer, .. } => {
            Some((Collection::Consumers, consumer.clone()))
        }
        Op::PutQuota(_) | Op::DeleteQuota => None,
    }
}

fn layer_has(layer: &Layer, c: Collection, name: &str) -> bool {
    !layer_object_revision(layer, c, name).is_empty()
}

fn find(
    c: Collection,
    settings: &Settings,
    file: &Settings,
    name: &str,
) -> Result<Value, GatewayError> {
    shown_objects(c, settings, file)
        .into_iter()
        .find(|o| o["name"] == *name)
        .ok_or_else(|| GatewayError::AdminObjectNotFound {
            kind: c.kind(),
            name: name.to_string(),
        })
}

fn users_shown(layer: &Layer) -> Vec<Value> {
    layer
        .admin_users
        .iter()
        .map(|u| json!({"name": u.name, "role": u.role}))
        .collect()
}

/// A query parameter of the request.
pub fn query(session: &ServerSession, name: &str) -> Option<String> {
    let q = session.req_header().uri.query()?;
    form_urlencoded::parse(q.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// Whether `segs` fit the pattern `path` (`{x}` matches any one segment).
fn matches(path: &str, segs: &[&str]) -> bool {
    let pattern: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    pattern.len() == segs.len()
        && pattern
            .iter()
            .zip(segs)
            .all(|(p, s)| (p.starts_with('{') && !s.is_empty()) || p == s)
}

/// The collection whose object schema describes `path`'s bodies (a key of
/// `settings::api_schemas`), and whether the path names one object.
fn schema_of(path: &str) -> Option<(&'static str, bool)> {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    Some(match segs.as_slice() {
        ["providers", _, "keys"] => ("keys", false),
        ["providers", _, "keys", _] => ("keys", true),
        [c] => (collection_name(c)?, false),
        [c, _] => (collection_name(c)?, true),
        _ => return None,
    })
}

fn collection_name(c: &str) -> Option<&'static str> {
    match c {
        "quota" => Some("quota"),
        c => Collection::from_path(c).map(Collection::path),
    }
}

/// One operation of the OpenAPI document.
fn operation(path: &str, method: &str, summary: &str, objects: &[(&str, Value)]) -> Value {
    let error = json!({"description": "An error: {\"error\":{\"message\",\"type\",\"code\"}}"});
    let mut op = json!({
        "summary": summary,
        "responses": {"200": {"description": "OK", "content": {"application/json": {}}}, "401": error},
    });
    let params: Vec<Value> = path
        .split('/')
        .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
        .map(|p| json!({"name": p, "in": "path", "required": true, "schema": {"type": "string"}}))
        .collect();
    if !params.is_empty() {
        op["parameters"] = json!(params);
        op["responses"]["404"] = error.clone();
    }
    let schema = schema_of(path)
        .and_then(|(name, one)| Some((objects.iter().find(|(n, _)| *n == name)?.1.clone(), one)));
    if let Some((object, one)) = &schema {
        let shown = if *one || path == "/quota" {
            object.clone()
        } else {
            json!({"type": "object", "properties": {"revision": {"type": "string"}, "items": {"type": "array", "items": object}}})
        };
        if method == "GET" {
            op["responses"]["200"]["content"]["application/json"] = json!({"schema": shown});
        }
    }
    if method != "GET" {
        op["responses"]["400"] = error.clone();
        op["responses"]["403"] = error.clone();
        op["responses"]["409"] = json!({"description": "Defined in the config file, exists already, or a stale If-Match revision"});
        op["responses"]["503"] = json!({"description": "The state store failed; nothing changed"});
        let body = match (&schema, method) {
            (Some((_, _)), "PATCH") => Some(
                json!({"type": "object", "description": "A JSON merge patch (RFC 7386) of the object"}),
            ),
            (Some((object, _)), "POST" | "PUT") => Some(object.clone()),
            (None, "POST" | "PUT") => Some(json!({"type": "object"})),
            _ => None,
        };
        if let Some(body) = body {
            op["requestBody"] = json!({"content": {"application/json": {"schema": body}}});
        }
    }
    op
}

/// The OpenAPI 3.1 document of `ROUTES`, with the JSON Schemas of the objects generated from
/// the settings' own types.
pub fn openapi() -> Value {
    let (definitions, objects) = settings::api_schemas();
    let mut paths = serde_json::Map::new();
    for (path, method, summary) in ROUTES {
        let entry = paths.entry(path.to_string()).or_insert_with(|| json!({}));
        entry[method.to_lowercase()] = operation(path, method, summary, &objects);
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Tollgate management API", "version": "1"},
        "servers": [{"url": PREFIX}],
        "components": {
            "schemas": definitions,
            "securitySchemes": {
                "admin_token": {"type": "http", "scheme": "bearer", "description": "The admin token or a session token from /login"},
                "admin_user": {"type": "http", "scheme": "basic"},
            },
        },
        "security": [{"admin_token": []}, {"admin_user": []}],
        "paths": paths,
    })
}

/// The layer operation of a write (`method` on the path `segs`, with `body`), and the object
/// to show in the answer.
fn layer_op(
    method: &Method,
    segs: &[&str],
    body: &Value,
) -> Result<(Op, Option<(Collection, String)>), GatewayError> {
    let owned = |s: &str| s.to_string();
    Ok(match (method, segs) {
        (&Method::POST, [c]) => {
            let c = Collection::from_path(c).ok_or(GatewayError::AdminNotFound)?;
            let name = body
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            (Op::Create(c, body.clone()), Some((c, name)))
        }
        (m, [c, name]) => {
            let c = Collection::from_path(c).ok_or(GatewayError::AdminNotFound)?;
            let op = match *m {
                Method::PUT => Op::Replace(c, owned(name), body.clone()),
                Method::PATCH => Op::Patch(c, owned(name), body.clone()),
                _ => Op::Delete(c, owned(name)),
            };
            let shown = (*m != Method::DELETE).then(|| (c, owned(name)));
            (op, shown)
        }
        (_, ["providers", p, "keys"]) => (
            Op::AddKey {
                provider: owned(p),
                key: body.clone(),
            },
            Some((Collection::Providers, owned(p))),
        ),
        (&Method::PATCH, ["providers", p, "keys", k]) => (
            Op::PatchKey {
                provider: owned(p),
                key: owned(k),
                patch: body.clone(),
            },
            Some((Collection::Providers, owned(p))),
        ),
        (_, ["providers", p, "keys", k]) => (
            Op::DeleteKey {
                provider: owned(p),
                key: owned(k),
            },
            Some((Collection::Providers, owned(p))),
        ),
        (_, ["consumers", c, "credentials", id]) => (
            Op::DeleteCredential {
                consumer: owned(c),
                id: owned(id),
            },
            None,
        ),
        (&Method::PUT, ["quota"]) => (Op::PutQuota(body.clone()), None),
        (_, ["quota"]) => (Op::DeleteQuota, None),
        _ => return Err(GatewayError::AdminNotFound),
    })
}

#[cfg(test)]
#[path = "api_tests.rs"]
mod tests;
