//! The web console at `/console/` on the admin listener (`listeners.admin.console`, on by
//! default): static files (`assets`), and the three calls that tie a browser to a login
//! session (`/console/api/session`, `login`, `logout`). Everything else the console shows
//! or changes goes through the management API under `/admin/api/v1/`, with the same
//! checks as any other caller.
//!
//! A browser holds its session in a cookie (`tollgate_session`: `HttpOnly`,
//! `SameSite=Strict`, `Path=/`, `Secure` when the admin listener has TLS), ended by the
//! sessions' idle and absolute expiry (`crate::users`). A write authorised by that cookie
//! must carry `X-CSRF-Token`, a value derived from the session token that the page gets
//! from `login` or `session` and that another site can neither read nor guess. Failed
//! logins are limited per client address (`LoginLimiter`). Every console response
//! carries a strict Content-Security-Policy: scripts, styles and connections from the
//! admin listener only, no inline script or style element, no framing.

pub mod assets;
mod limiter;

pub use limiter::LoginLimiter;

use super::{json_response, read_json, respond, Admin};
use crate::error::GatewayError;
use http::{Method, Response, StatusCode};
use pingora_core::protocols::http::ServerSession;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

pub const COOKIE: &str = "tollgate_session";

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; \
                   frame-ancestors 'none'";

/// The session token in the request's cookie, if any.
pub fn session_cookie(session: &ServerSession) -> Option<String> {
    for value in session.req_header().headers.get_all(http::header::COOKIE) {
        let Ok(text) = value.to_str() else { continue };
        for pair in text.split(';') {
            if let Some((name, v)) = pair.trim().split_once('=') {
                if name == COOKIE && !v.is_empty() {
                    return Some(v.to_string());
                }
            }
        }
    }
    None
}

/// The CSRF token of a session token.
pub fn csrf_of(token: &str) -> String {
    let digest = Sha256::digest(format!("tollgate-csrf:{token}").as_bytes());
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether a request may go on as far as CSRF goes: anything but a cookie-authorised write
/// does; such a write only with its session's `X-CSRF-Token`.
pub fn csrf_ok(session: &ServerSession) -> bool {
    let h = session.req_header();
    if matches!(h.method, Method::GET | Method::HEAD)
        || h.headers.contains_key(http::header::AUTHORIZATION)
    {
        return true;
    }
    let Some(token) = session_cookie(session) else {
        return true;
    };
    let given = h
        .headers
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    crate::auth::same_secret(given.as_bytes(), csrf_of(&token).as_bytes())
}

/// The headers of every console response.
fn secure(mut resp: Response<Vec<u8>>) -> Response<Vec<u8>> {
    let h = resp.headers_mut();
    for (name, value) in [
        ("content-security-policy", CSP),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
        ("x-frame-options", "DENY"),
        ("cross-origin-opener-policy", "same-origin"),
    ] {
        if let Ok(v) = value.parse() {
            h.insert(name, v);
        }
    }
    resp
}

fn redirect(to: &str) -> Response<Vec<u8>> {
    let mut resp = respond(StatusCode::FOUND, "text/plain", Vec::new());
    if let Ok(v) = to.parse() {
        resp.headers_mut().insert(http::header::LOCATION, v);
    }
    resp
}

/// A file, in the best encoding the client accepts.
fn file(session: &ServerSession, a: &assets::Asset, immutable: bool) -> Response<Vec<u8>> {
    let accepts = session
        .req_header()
        .headers
        .get(http::header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let (body, encoding) = if accepts.contains("br") {
        (a.brotli.clone(), Some("br"))
    } else if accepts.contains("gzip") {
        (a.gzip.clone(), Some("gzip"))
    } else {
        (a.raw.clone(), None)
    };
    let mut resp = respond(StatusCode::OK, a.content_type, body);
    let h = resp.headers_mut();
    if let Some(e) = encoding.and_then(|e| e.parse().ok()) {
        h.insert(http::header::CONTENT_ENCODING, e);
    }
    let cache = if immutable {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    if let Ok(v) = cache.parse() {
        h.insert(http::header::CACHE_CONTROL, v);
    }
    if let Ok(v) = "accept-encoding".parse() {
        h.insert(http::header::VARY, v);
    }
    resp
}

fn failed(e: &GatewayError) -> Response<Vec<u8>> {
    let mut resp = super::error(e);
    if let Some(s) = e.retry_after() {
        resp.headers_mut()
            .insert(http::header::RETRY_AFTER, s.into());
    }
    resp
}

impl Admin {
    /// Whether this admin listener serves the console.
    pub(super) fn console_on(&self) -> bool {
        self.config
            .load()
            .admin_listener
            .as_ref()
            .is_none_or(|l| l.console)
    }

    /// `/`, `/console`, `/console/…`.
    pub(super) async fn console(
        &self,
        session: &mut ServerSession,
        path: &str,
    ) -> Response<Vec<u8>> {
        if !self.console_on() {
            return super::error(&GatewayError::AdminNotFound);
        }
        let method = session.req_header().method.clone();
        let resp = match (&method, path) {
            (&Method::GET, "/" | "/console") => redirect("/console/"),
            (&Method::GET, "/console/") => {
                let a = tokio::task::spawn_blocking(|| &assets::ASSETS.index).await;
                match a {
                    Ok(a) => file(session, a, false),
                    Err(e) => super::error(&GatewayError::Internal(e.to_string())),
                }
            }
            (&Method::GET, p) if p.starts_with("/console/assets/") => {
                let p = p.to_string();
                match tokio::task::spawn_blocking(move || assets::find(&p)).await {
                    Ok(Some(a)) => file(session, a, true),
                    _ => super::error(&GatewayError::AdminNotFound),
                }
            }
            (&Method::GET, "/console/api/session") => self.whoami(session).await,
            (&Method::POST, "/console/api/login") => match self.browser_login(session).await {
                Ok(r) => r,
                Err(e) => failed(&e),
            },
            (&Method::POST, "/console/api/logout") => self.browser_logout(session),
            (_, p) if p.starts_with("/console/api/") => {
                super::error(&GatewayError::AdminMethodNotAllowed)
            }
            _ => super::error(&GatewayError::AdminNotFound),
        };
        secure(resp)
    }

    /// Who the browser is, its CSRF token, and whether the first admin is still to be set.
    async fn whoami(&self, session: &ServerSession) -> Response<Vec<u8>> {
        let layer = self.reloader.sources.layer.load_full();
        let setup_needed = layer.admin_users.is_empty();
        let token_required = self.admin_token().is_some();
        let base = json!({
            "setup_needed": setup_needed,
            "token_required": token_required,
            "proxy_url": crate::lifecycle::proxy_loopback_url(),
        });
        match self.principal(session).await {
            Some(who) => {
                let mut v = base;
                v["authenticated"] = json!(true);
                v["user"] = json!(who.name);
                v["role"] = json!(who.role);
                v["may_write"] = json!(who.role.may_write());
                if let Some(token) = session_cookie(session) {
                    v["csrf"] = json!(csrf_of(&token));
                }
                json_response(StatusCode::OK, v)
            }
            None => {
                // Not an error for the page (a 401 would show in its console): it shows
                // the login or the setup form.
                let mut v = base;
                v["authenticated"] = json!(false);
                json_response(StatusCode::OK, v)
            }
        }
    }

    async fn browser_login(
        &self,
        session: &mut ServerSession,
    ) -> Result<Response<Vec<u8>>, GatewayError> {
        let ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        if let Some(wait) = ip.and_then(|ip| self.login_limiter.blocked(ip)) {
            return Err(GatewayError::LoginLimited(wait));
        }
        let body = read_json(session).await?;
        let field = |f: &str| body.get(f).and_then(Value::as_str).unwrap_or_default();
        let (name, password) = (field("user").to_string(), field("password").to_string());
        let layer = self.reloader.sources.layer.load_full();
        let Some(role) = self
            .check_password(&layer.admin_users, name.clone(), password)
            .await
        else {
            if let Some(ip) = ip {
                self.login_limiter.failed(ip);
            }
            let shown: String = name.chars().take(64).collect();
            log::warn!("console login failed for `{}`", shown.escape_debug());
            return Err(GatewayError::AdminUnauthorized);
        };
        let token = self
            .sessions
            .login(&name, role)
            .map_err(|e| GatewayError::Internal(e.to_string()))?;
        let mut resp = json_response(
            StatusCode::OK,
            json!({"user": name, "role": role, "may_write": role.may_write(), "csrf": csrf_of(&token)}),
        );
        self.set_cookie(&mut resp, &token, false);
        Ok(resp)
    }

    fn browser_logout(&self, session: &ServerSession) -> Response<Vec<u8>> {
        if !csrf_ok(session) {
            return super::error(&GatewayError::CsrfMissing);
        }
        let ended = session_cookie(session).is_some_and(|t| self.sessions.logout(&t));
        let mut resp = json_response(StatusCode::OK, json!({"logged_out": ended}));
        self.set_cookie(&mut resp, "", true);
        resp
    }

    fn set_cookie(&self, resp: &mut Response<Vec<u8>>, token: &str, clear: bool) {
        let tls = self
            .config
            .load()
            .admin_listener
            .as_ref()
            .is_some_and(|l| l.tls.is_some());
        let mut cookie = format!("{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/");
        if tls {
            cookie.push_str("; Secure");
        }
        if clear {
            cookie.push_str("; Max-Age=0");
        }
        if let Ok(v) = cookie.parse() {
            resp.headers_mut().insert(http::header::SET_COOKIE, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csrf_tokens_differ_per_session_and_hide_it() {
        let a = csrf_of("tgs_a");
        assert_eq!(a.len(), 32);
        assert_ne!(a, csrf_of("tgs_b"));
        assert!(!a.contains("tgs_a"));
    }
}
