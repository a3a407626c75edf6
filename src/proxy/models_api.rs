//! `GET {prefix}/models` and `GET {prefix}/models/{id}`: the models a caller can use through
//! the routes that serve the request's host and path (`crate::models`).
//!
//! Each route's own auth applies: a caller that may use none of them gets that route's error
//! (401 without or with an unknown credential, 403 for a consumer not allowed); otherwise
//! the list holds only the models of the routes it may use.

use super::exchange::Exchange;
use super::pipeline::{answer_json, Failure};
use super::routing::host_and_path;
use crate::auth::AuthError;
use crate::error::GatewayError;
use crate::route::{Endpoint, Route};
use pingora_proxy::Session;

/// Answer `GET /models` or `GET /models/{id}`; the status sent.
pub(super) async fn serve(
    session: &mut Session,
    x: &mut Exchange,
    endpoint: Endpoint,
) -> Result<u16, Failure> {
    let config = x.config.clone();
    let req = session.req_header();
    if req.method != http::Method::GET {
        return Err(GatewayError::MethodNotAllowed(req.method.to_string()).into());
    }
    let (host, path) = host_and_path(session);
    let routes: Vec<&Route> = config
        .routes
        .iter()
        .skip(x.route.unwrap_or(0))
        .filter(|r| r.match_request(host, path).is_some())
        .collect();
    let mut allowed = Vec::with_capacity(routes.len());
    let mut refused: Option<AuthError> = None;
    for route in &routes {
        let who = config.consumers.identify(
            &req.headers,
            req.uri.query(),
            route.auth.required,
            &route.auth.allow,
        );
        match who {
            Ok(consumer) => {
                if x.consumer.is_none() {
                    x.consumer = consumer.map(str::to_string);
                }
                allowed.push(true);
            }
            Err(e) => {
                refused.get_or_insert(e);
                allowed.push(false);
            }
        }
    }
    if !allowed.contains(&true) {
        let e = refused.unwrap_or(AuthError::Missing);
        return Err(GatewayError::from(e).into());
    }
    let body = match endpoint {
        Endpoint::Model => {
            let prefix = routes.first().map(|r| r.path_prefix.len()).unwrap_or(0);
            let raw = path
                .get(prefix..)
                .and_then(|rest| rest.strip_prefix("/models/"))
                .unwrap_or("");
            let id = crate::route::models::decode_id(raw)
                .ok_or_else(|| GatewayError::ModelNotFound(raw.to_string()))?;
            crate::route::models::retrieve(&routes, &allowed, &id)
                .ok_or(GatewayError::ModelNotFound(id))?
        }
        _ => crate::route::models::merged(&routes, &allowed),
    };
    answer_json(session, body, &x.request_id).await
}
