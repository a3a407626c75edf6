//! Who is calling the admin listener, and the routes that manage that: login sessions,
//! the first-run setup and admin users.
//!
//! A caller is the admin token's holder (`token`, role `admin`), a logged-in user (a
//! session token `tgs_…` from `POST /admin/api/v1/login`, or `Authorization: Basic` with a
//! user's password), or, while no admin token is configured and no admin user exists,
//! `anonymous` with role `admin` (the admin listener is on loopback by default). A `viewer`
//! may only read. Passwords are argon2id hashes (`crate::users`), checked off the async
//! workers, at most two at a time.

use super::{json_response, read_json, Admin};
use crate::auth::same_secret;
use crate::error::GatewayError;
use crate::managed::edit::Outcome;
use crate::managed::ManagedError;
use crate::users::{self, AdminUser, Role};
use http::{Method, Response, StatusCode};
use pingora_core::protocols::http::ServerSession;
use serde_json::{json, Value};

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq)]
pub struct Principal {
    pub name: String,
    pub role: Role,
}

/// The paths answered before authentication (they authenticate themselves).
pub fn is_open(path: &str) -> bool {
    matches!(
        path.strip_prefix(super::api::PREFIX),
        Some("/login" | "/setup")
    )
}

/// The `Authorization: Bearer` value of the request, trimmed.
fn bearer(session: &ServerSession) -> Option<&str> {
    session
        .req_header()
        .headers
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

fn bad(message: impl Into<String>) -> GatewayError {
    ManagedError::Invalid(message.into()).into()
}

fn text_field(body: &Value, field: &str) -> Result<String, GatewayError> {
    body.get(field)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| bad(format!("the string field `{field}` is required")))
}

impl Admin {
    /// The admin token in force: the current config's, or the one the listener started
    /// with while the config has no admin listener.
    pub(super) fn admin_token(&self) -> Option<String> {
        let config = self.config.load();
        match &config.admin_listener {
            Some(l) => l.token.clone(),
            None => self.token.clone(),
        }
    }

    /// The caller of this request, or `None` when it is not authorised.
    pub(super) async fn principal(&self, session: &ServerSession) -> Option<Principal> {
        let token = self.admin_token();
        let layer = self.reloader.sources.layer.load_full();
        let header = session
            .req_header()
            .headers
            .get(http::header::AUTHORIZATION);
        let bearer = bearer(session);
        if token.is_none() && layer.admin_users.is_empty() {
            return Some(Principal {
                name: "anonymous".into(),
                role: Role::Admin,
            });
        }
        if let Some(given) = bearer {
            if token
                .as_ref()
                .is_some_and(|t| same_secret(given.as_bytes(), t.as_bytes()))
            {
                return Some(Principal {
                    name: "token".into(),
                    role: Role::Admin,
                });
            }
            let (name, role) = self.sessions.lookup(given)?;
            return Some(Principal { name, role });
        }
        let Some(header) = header else {
            // A browser: the console's session cookie.
            let token = super::console::session_cookie(session)?;
            let (name, role) = self.sessions.lookup(&token)?;
            return Some(Principal { name, role });
        };
        let (name, password) = users::parse_basic(header.as_bytes())?;
        let role = self
            .check_password(&layer.admin_users, name.clone(), password)
            .await?;
        Some(Principal { name, role })
    }

    pub(super) async fn check_password(
        &self,
        users: &[AdminUser],
        name: String,
        password: String,
    ) -> Option<Role> {
        let _turn = self.logins.acquire().await.ok()?;
        users::authenticate_async(users.to_vec(), name, password).await
    }

    /// `login`, `logout`, `setup` (POST).
    pub(super) async fn session_api(
        &self,
        session: &mut ServerSession,
        who: &Principal,
        what: &str,
    ) -> Result<Response<Vec<u8>>, GatewayError> {
        match what {
            "logout" => {
                let ended = self.sessions.logout(bearer(session).unwrap_or_default());
                Ok(json_response(
                    StatusCode::OK,
                    json!({"logged_out": ended, "user": who.name}),
                ))
            }
            "login" => {
                let body = read_json(session).await?;
                let (name, password) = (text_field(&body, "user")?, text_field(&body, "password")?);
                let layer = self.reloader.sources.layer.load_full();
                let Some(role) = self
                    .check_password(&layer.admin_users, name.clone(), password)
                    .await
                else {
                    let shown: String = name.chars().take(64).collect();
                    log::warn!("admin login failed for `{}`", shown.escape_debug());
                    return Err(GatewayError::AdminUnauthorized);
                };
                let token = self
                    .sessions
                    .login(&name, role)
                    .map_err(|e| GatewayError::Internal(e.to_string()))?;
                Ok(json_response(
                    StatusCode::OK,
                    json!({"token": token, "user": name, "role": role}),
                ))
            }
            _ => self.setup(session).await,
        }
    }

    /// First run: create the first admin user, from loopback only, while none exists (and
    /// with the admin token when one is configured).
    async fn setup(&self, session: &mut ServerSession) -> Result<Response<Vec<u8>>, GatewayError> {
        let loopback = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .is_some_and(|a| a.ip().is_loopback());
        if !loopback {
            return Err(GatewayError::Forbidden);
        }
        if let Some(token) = self.admin_token() {
            let given = bearer(session).unwrap_or_default();
            if !same_secret(given.as_bytes(), token.as_bytes()) {
                return Err(GatewayError::AdminUnauthorized);
            }
        }
        let body = read_json(session).await?;
        let name = body
            .get("user")
            .and_then(Value::as_str)
            .unwrap_or("admin")
            .to_string();
        let password = text_field(&body, "password")?;
        let user = new_user(name, Role::Admin, password).await?;
        let (_, revision) = self
            .reloader
            .write("setup", move |layer, _| {
                if !layer.admin_users.is_empty() {
                    return Err(ManagedError::Exists {
                        kind: "admin user",
                        name: "(setup is done)".into(),
                    });
                }
                let name = user.name.clone();
                layer.admin_users.push(user);
                Ok(Outcome {
                    action: "create",
                    kind: "admin user",
                    name,
                })
            })
            .await?;
        Ok(json_response(
            StatusCode::CREATED,
            json!({"setup": "done", "api_revision": revision}),
        ))
    }

    /// `POST /users`, `PUT /users/{name}`, `DELETE /users/{name}`.
    pub(super) async fn users_api(
        &self,
        session: &mut ServerSession,
        who: &Principal,
        rest: &[&str],
    ) -> Result<Response<Vec<u8>>, GatewayError> {
        let method = session.req_header().method.clone();
        let body = match method {
            Method::DELETE => Value::Null,
            _ => read_json(session).await?,
        };
        let (name, user) = user_asked(&method, rest, &body).await?;
        let admin_token = self.admin_token().is_some();
        let creating = method == Method::POST;
        let target = name.clone();
        let (outcome, revision) = self
            .reloader
            .write(&who.name, move |layer, _| {
                change_user(&mut layer.admin_users, target, user, creating, admin_token)
            })
            .await?;
        if outcome.action != "create" {
            self.sessions.revoke_user(&name);
        }
        let status = if outcome.action == "create" {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        Ok(json_response(
            status,
            json!({"action": outcome.action, "name": name, "api_revision": revision}),
        ))
    }
}

/// The user a `users` call names, and what it asks to store (`None`: a deletion).
async fn user_asked(
    method: &Method,
    rest: &[&str],
    body: &Value,
) -> Result<(String, Option<AdminUser>), GatewayError> {
    let role = || -> Result<Role, GatewayError> {
        serde_json::from_value(body.get("role").cloned().unwrap_or(json!("viewer")))
            .map_err(|_| bad("`role` is viewer or admin"))
    };
    match (method, rest) {
        (&Method::POST, []) => {
            let name = text_field(body, "name")?;
            let user = new_user(name.clone(), role()?, text_field(body, "password")?).await?;
            Ok((name, Some(user)))
        }
        (&Method::PUT, [name]) => {
            let user = new_user(name.to_string(), role()?, text_field(body, "password")?).await?;
            Ok((name.to_string(), Some(user)))
        }
        (_, [name]) => Ok((name.to_string(), None)),
        _ => Err(GatewayError::AdminNotFound),
    }
}

/// Create (`creating`), replace or (`user` is `None`) delete the admin user `target`; refused
/// when it would leave no user with the `admin` role, or no user and no admin token.
fn change_user(
    users: &mut Vec<AdminUser>,
    target: String,
    user: Option<AdminUser>,
    creating: bool,
    admin_token: bool,
) -> Result<Outcome, ManagedError> {
    let at = users.iter().position(|u| u.name == target);
    let action = match (user, at) {
        (Some(_), Some(_)) if creating => {
            return Err(ManagedError::Exists {
                kind: "admin user",
                name: target,
            })
        }
        (Some(u), None) if creating => {
            users.push(u);
            "create"
        }
        (Some(u), Some(i)) => {
            users[i] = u;
            "replace"
        }
        (None, Some(i)) => {
            users.remove(i);
            "delete"
        }
        (_, None) => {
            return Err(ManagedError::NotFound {
                kind: "admin user",
                name: target,
            })
        }
    };
    if !users.is_empty() && !users.iter().any(|u| u.role == Role::Admin) {
        return Err(ManagedError::Invalid(
            "at least one admin user must keep the `admin` role".into(),
        ));
    }
    if users.is_empty() && !admin_token {
        return Err(ManagedError::Invalid(
            "deleting the last admin user would leave the admin API open: configure an admin token first".into(),
        ));
    }
    Ok(Outcome {
        action,
        kind: "admin user",
        name: target,
    })
}

/// A user to store: name and password checked, the password hashed.
async fn new_user(name: String, role: Role, password: String) -> Result<AdminUser, GatewayError> {
    users::check_user_name(&name).map_err(|e| bad(e.to_string()))?;
    users::check_password_policy(&password).map_err(|e| bad(e.to_string()))?;
    let password_hash = users::hash_password_async(password)
        .await
        .map_err(|e| GatewayError::Internal(e.to_string()))?;
    Ok(AdminUser {
        name,
        role,
        password_hash,
    })
}
