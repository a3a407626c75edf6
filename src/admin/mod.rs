//! The admin listener: `/metrics`, `/healthz`, `/readyz` and the `/admin/*` API
//! (`GET /admin/status`, `GET /admin/keys`, `POST /admin/reload`, the quota API, and the
//! management API under `/admin/api/v1/`, in `api`; who may call, in `access`).
//!
//! Served by a plain Pingora `ServeHttp` app on its own listener (loopback by default), so
//! operational traffic never shares the proxy's routing. With `token` set or an admin user
//! created, `/admin/*` requires `Authorization: Bearer <token>` (compared in constant
//! time), a login session or a user's password (`access`). The token is read from the
//! current config snapshot, so a reload rotates it: the old token stops working at once.

mod access;
mod api;
mod budgets;
mod cache;
pub mod console;
mod playground;
mod usage;

use crate::error::GatewayError;
use crate::protocol::ClientProtocol;
use crate::quota::QuotaOp;
use crate::reload::Reloader;
use crate::runtime::{Gateway, SharedConfig};
use async_trait::async_trait;
use http::{Method, Response, StatusCode};
use pingora_core::apps::{HttpPersistentSettings, HttpServerApp, ReusedHttpStream};
use pingora_core::protocols::http::ServerSession;
use pingora_core::server::ShutdownWatch;
use pingora_http::ResponseHeader;
use serde_json::json;
use std::sync::Arc;

pub struct Admin {
    pub config: SharedConfig,
    pub reloader: Reloader,
    /// The token the admin listener started with; used only while the current config has no
    /// admin listener (removed by a reload, which needs an upgrade to apply), so that such a
    /// reload never leaves the running admin listener open.
    pub token: Option<String>,
    pub backends: std::sync::Arc<crate::state::Backends>,
    /// Console login sessions.
    pub sessions: crate::users::Sessions,
    /// Password checks in progress (argon2: 19 MiB and tens of ms each): at most two.
    pub logins: tokio::sync::Semaphore,
    /// Usage rollups and recent requests.
    pub analytics: std::sync::Arc<crate::analytics::Analytics>,
    /// The alert rules' states.
    pub alerts: std::sync::Arc<std::sync::Mutex<crate::alerts::Alerts>>,
    /// Failed console logins per address.
    pub login_limiter: console::LoginLimiter,
}

impl Admin {
    pub fn new(
        config: SharedConfig,
        reloader: Reloader,
        token: Option<String>,
        backends: std::sync::Arc<crate::state::Backends>,
        analytics: std::sync::Arc<crate::analytics::Analytics>,
        alerts: std::sync::Arc<std::sync::Mutex<crate::alerts::Alerts>>,
    ) -> Self {
        Admin {
            config,
            reloader,
            token,
            backends,
            analytics,
            alerts,
            sessions: crate::users::Sessions::default(),
            logins: tokio::sync::Semaphore::new(2),
            login_limiter: console::LoginLimiter::default(),
        }
    }
}

fn respond(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        resp.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    let len = resp.body().len();
    resp.headers_mut()
        .insert(http::header::CONTENT_LENGTH, len.into());
    resp
}

fn json_response(status: StatusCode, v: serde_json::Value) -> Response<Vec<u8>> {
    respond(
        status,
        "application/json",
        serde_json::to_vec(&v).unwrap_or_default(),
    )
}

/// An admin API error, in OpenAI's shape like every gateway error (`error::GatewayError`).
fn error(e: &GatewayError) -> Response<Vec<u8>> {
    respond(
        StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        "application/json",
        e.body_for(ClientProtocol::OpenAi).to_vec(),
    )
}

fn providers_json(config: &Gateway) -> Vec<serde_json::Value> {
    config
        .providers
        .iter()
        .map(|p| {
            let keys: Vec<_> = p.keys.iter().map(|k| k.status()).collect();
            json!({
                "provider": p.name,
                "type": p.kind,
                "preset_base_url": crate::protocol::preset(&p.kind.to_string()).and_then(|(_, url)| url),
                "host": p.upstream.host,
                "resolved": p.resolved_addr().map(|a| a.to_string()),
                "missing_key_variables": p.keys.missing_vars(),
                "keys": keys,
            })
        })
        .collect()
}

fn status_json(config: &Gateway) -> serde_json::Value {
    let routes: Vec<_> = config
        .routes
        .iter()
        .map(|r| {
            let rules: Vec<_> = r
                .rules
                .iter()
                .map(|rule| {
                    let targets: Vec<_> = rule
                        .targets
                        .iter()
                        .map(|t| json!({"provider": t.provider.name, "weight": t.weight, "model": t.model}))
                        .collect();
                    json!({"model": rule.pattern.source(), "targets": targets})
                })
                .collect();
            json!({"name": r.name, "path_prefix": r.path_prefix, "rules": rules})
        })
        .collect();
    let limits: Vec<_> = config
        .limits
        .rules
        .iter()
        .map(|r| {
            let mut rule = serde_json::Map::new();
            rule.insert("name".into(), json!(r.name));
            rule.insert("window".into(), json!(r.window.as_str()));
            for (measure, limit) in r.limits() {
                rule.insert(measure.as_str().into(), json!(limit));
            }
            serde_json::Value::Object(rule)
        })
        .collect();
    json!({
        "routes": routes,
        "providers": providers_json(config),
        "consumers": config.consumers.names(),
        "rate_limits": limits,
    })
}

/// Ready when every provider that has keys has at least one usable one. The detail also
/// says where the API's objects are kept and whether that store answers (an instance that
/// cannot reach a shared store stays ready, serving its last good config).
fn readiness(config: &Gateway, sources: &crate::reload::Sources) -> (bool, serde_json::Value) {
    let down: Vec<&str> = config
        .providers
        .iter()
        .filter(|p| !p.keys.is_empty() && !p.keys.any_usable())
        .map(|p| p.name.as_str())
        .collect();
    let unresolved: Vec<&str> = config
        .providers
        .iter()
        .filter(|p| p.resolved_addr().is_none())
        .map(|p| p.name.as_str())
        .collect();
    let ready = down.is_empty();
    let store = json!({
        "store": sources.store.describe(),
        "reachable": sources.health.as_ref().is_none_or(|h| h.up()),
        "error": sources.health.as_ref().and_then(|h| h.error()),
        "api_revision": sources.layer.load().revision,
    });
    (
        ready,
        json!({"ready": ready, "providers_without_usable_keys": down, "providers_unresolved": unresolved, "config_store": store}),
    )
}

impl Admin {
    /// Balance of every charged consumer (`null` when the store cannot say).
    pub(super) async fn balances(&self, config: &Gateway) -> serde_json::Value {
        let Some(settings) = &config.quota else {
            return serde_json::Value::Null;
        };
        let mut out = serde_json::Map::new();
        for name in config.consumers.names() {
            if settings.applies(name) {
                let balance = self
                    .backends
                    .quotas()
                    .apply(&config.consumers, Some(settings), name, QuotaOp::Get)
                    .await
                    .ok();
                out.insert(name.clone(), json!(balance));
            }
        }
        serde_json::Value::Object(out)
    }

    /// `/admin/quotas/NAME`: GET the balance, PUT `{"quota": N}`, POST
    /// `/admin/quotas/NAME/delta` with `{"value": ±N}`.
    async fn quota_api(
        &self,
        session: &mut ServerSession,
        method: &Method,
        rest: &str,
        who: &str,
    ) -> Response<Vec<u8>> {
        let config = self.config.load_full();
        let (name, delta) = match rest.strip_suffix("/delta") {
            Some(name) => (name, true),
            None => (rest, false),
        };
        let op = match (method, delta) {
            (&Method::GET, false) => Ok(QuotaOp::Get),
            (&Method::PUT, false) => read_json_integer(session, "quota")
                .await
                .and_then(|v| match v {
                    v if v < 0 => Err(GatewayError::BadQuotaRequest(
                        "`quota` must not be negative".into(),
                    )),
                    v => Ok(QuotaOp::Set(v)),
                }),
            (&Method::POST, true) => read_json_integer(session, "value").await.map(QuotaOp::Add),
            (m, _) => Err(GatewayError::BadQuotaRequest(format!(
                "{m} is not allowed here: GET or PUT /admin/quotas/NAME, POST /admin/quotas/NAME/delta"
            ))),
        };
        let result = match op {
            Ok(op) => {
                self.backends
                    .quotas()
                    .apply(&config.consumers, config.quota.as_ref(), name, op)
                    .await
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(balance) => {
                if *method != Method::GET {
                    let action = if delta { "add" } else { "set" };
                    self.reloader
                        .record(who, action, "quota balance", name)
                        .await;
                }
                json_response(StatusCode::OK, json!({"consumer": name, "quota": balance}))
            }
            Err(e) => error(&e),
        }
    }

    async fn admin_api(
        &self,
        method: &Method,
        path: &str,
        who: &access::Principal,
    ) -> Response<Vec<u8>> {
        if *method != Method::GET && !who.role.may_write() {
            return error(&GatewayError::AdminReadOnly);
        }
        let config = self.config.load_full();
        match (method, path) {
            (&Method::GET, "/admin/status") => {
                let mut status = status_json(&config);
                status["quotas"] = self.balances(&config).await;
                json_response(StatusCode::OK, status)
            }
            (&Method::GET, "/admin/keys") => json_response(
                StatusCode::OK,
                json!({"providers": providers_json(&config)}),
            ),
            (&Method::POST, "/admin/reload") => match self.reloader.reload().await {
                Ok(report) => {
                    self.reloader
                        .record(&who.name, "reload", "config file", &self.reloader.path)
                        .await;
                    json_response(
                        StatusCode::OK,
                        json!({"status": "reloaded", "needs_upgrade": report.needs_upgrade}),
                    )
                }
                Err(e) => {
                    log::error!("config reload rejected, the previous config keeps serving: {e}");
                    error(&GatewayError::ConfigRejected(e.to_string()))
                }
            },
            (_, "/admin/status" | "/admin/keys" | "/admin/reload") => {
                error(&GatewayError::AdminMethodNotAllowed)
            }
            _ => error(&GatewayError::AdminNotFound),
        }
    }
}

/// The admin listener's app: every answer is built whole by `response`, except the
/// playground's, which streams (`playground`).
#[async_trait]
impl HttpServerApp for Admin {
    async fn process_new_http(
        self: &Arc<Self>,
        mut http: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        match http.read_request().await {
            Ok(true) => {}
            Ok(false) => return None,
            Err(e) => {
                log::debug!("admin listener: no request read: {e}");
                return None;
            }
        }
        http.set_keepalive(if *shutdown.borrow() { None } else { Some(60) });
        let streamed = http.req_header().method == Method::POST
            && http.req_header().uri.path() == playground::PATH;
        if streamed {
            self.playground(&mut http).await;
        } else {
            let (parts, body) = self.response(&mut http).await.into_parts();
            let header: ResponseHeader = parts.into();
            if let Err(e) = http.write_response_header(Box::new(header)).await {
                log::debug!("admin listener: answer not written: {e}");
            }
            if !body.is_empty() {
                if let Err(e) = http.write_response_body(body.into(), true).await {
                    log::debug!("admin listener: answer not written: {e}");
                }
            }
        }
        let settings = HttpPersistentSettings::for_session(&http);
        match http.finish().await {
            Ok(c) => c.map(|s| ReusedHttpStream::from_reusable_stream(s, settings)),
            Err(e) => {
                log::debug!("admin listener: request not finished: {e}");
                None
            }
        }
    }
}

impl Admin {
    /// The answer to one admin request, whole.
    pub async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        crate::conn::header_received();
        let path = session.req_header().uri.path().to_string();
        let method = session.req_header().method.clone();
        match path.as_str() {
            "/metrics" => {
                let config = self.config.load();
                let pools = config.providers.iter().map(|p| (p.name.as_str(), &p.keys));
                crate::metrics::observe_keys(pools);
                respond(
                    StatusCode::OK,
                    "text/plain; version=0.0.4",
                    crate::metrics::render(),
                )
            }
            "/healthz" => respond(
                StatusCode::OK,
                "application/json",
                crate::instance::healthz_body(),
            ),
            "/readyz" => {
                let (ready, body) = readiness(&self.config.load(), &self.reloader.sources);
                let status = if ready {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                json_response(status, body)
            }
            "/" | "/console" => self.console(session, &path).await,
            p if p.starts_with("/console/") => self.console(session, &path).await,
            p if p.starts_with("/admin/") => {
                if !console::csrf_ok(session) {
                    return error(&GatewayError::CsrfMissing);
                }
                let who = match self.principal(session).await {
                    Some(who) => who,
                    None if access::is_open(p) => access::Principal {
                        name: "anonymous".into(),
                        role: crate::users::Role::Viewer,
                    },
                    None => return error(&GatewayError::AdminUnauthorized),
                };
                if p == api::PREFIX || p.starts_with(&format!("{}/", api::PREFIX)) {
                    return self.api(session, &who).await;
                }
                if method != Method::GET && !who.role.may_write() {
                    return error(&GatewayError::AdminReadOnly);
                }
                match p.strip_prefix("/admin/quotas/") {
                    Some(rest) => self.quota_api(session, &method, rest, &who.name).await,
                    None => self.admin_api(&method, p, &who).await,
                }
            }
            _ => error(&GatewayError::AdminNotFound),
        }
    }
}

/// The largest admin request body.
const MAX_ADMIN_BODY: usize = 1 << 20;

/// Read an admin request's body, at most `MAX_ADMIN_BODY` bytes.
async fn read_body(session: &mut ServerSession) -> Result<Vec<u8>, GatewayError> {
    let mut body = Vec::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) if body.len() + chunk.len() <= MAX_ADMIN_BODY => {
                body.extend_from_slice(&chunk)
            }
            Ok(Some(_)) => {
                // The rest of the body is never read: the connection cannot be reused.
                session.set_keepalive(None);
                return Err(GatewayError::BodyTooLarge(MAX_ADMIN_BODY));
            }
            Ok(None) => return Ok(body),
            Err(_) => {
                // A framing error: never read what follows as another request.
                session.set_keepalive(None);
                return Err(GatewayError::BodyRead("admin request".into()));
            }
        }
    }
}

/// Read a JSON body (an empty body is `{}`), or YAML when the request says
/// `Content-Type: application/yaml` (the settings file's own form).
async fn read_json(session: &mut ServerSession) -> Result<serde_json::Value, GatewayError> {
    let yaml = session
        .req_header()
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.contains("yaml"));
    let body = read_body(session).await?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    if yaml {
        return serde_yaml::from_slice(&body)
            .map_err(|e| GatewayError::InvalidJson(format!("invalid YAML: {e}")));
    }
    serde_json::from_slice(&body).map_err(|e| GatewayError::InvalidJson(e.to_string()))
}

/// Read a small JSON body `{"<field>": integer}`.
async fn read_json_integer(session: &mut ServerSession, field: &str) -> Result<i64, GatewayError> {
    let body = read_body(session).await?;
    let value: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| GatewayError::BadQuotaRequest(format!("expected a JSON object: {e}")))?;
    match value.get(field) {
        Some(serde_json::Value::Number(n)) => n.as_i64().ok_or_else(|| {
            GatewayError::BadQuotaRequest(format!("`{field}` must be an integer in i64 range"))
        }),
        _ => Err(GatewayError::BadQuotaRequest(format!(
            "the integer field `{field}` is required"
        ))),
    }
}

#[cfg(test)]
mod tests {

    use crate::auth::same_secret;

    #[test]
    fn secrets_compare() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"abc", b"abcd"));
    }
}
