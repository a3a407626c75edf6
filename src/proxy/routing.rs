//! Routing: the route serving the request's host and path (and the endpoint there), then the
//! first such route with a model rule for the requested model.

use crate::error::GatewayError;
use crate::route::{host_without_port, Endpoint};
use crate::runtime::Gateway;
use pingora_proxy::Session;

/// The first route serving the request's host and path, and the endpoint there.
pub fn route(session: &Session, config: &Gateway) -> Result<(usize, Endpoint), GatewayError> {
    let (host, path) = host_and_path(session);
    config
        .routes
        .iter()
        .enumerate()
        .find_map(|(i, r)| r.match_request(host, path).map(|e| (i, e)))
        .ok_or_else(|| GatewayError::RouteNotFound(path.to_string()))
}

/// A model request's route and rule: the first route from `first` on that serves this host
/// and path and has a rule for `model`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Routed {
    pub route: usize,
    pub rule: usize,
}

pub fn rule(
    session: &Session,
    config: &Gateway,
    first: usize,
    model: &str,
) -> Result<Routed, GatewayError> {
    let (host, path) = host_and_path(session);
    config
        .routes
        .iter()
        .enumerate()
        .skip(first)
        .filter(|(_, r)| r.match_request(host, path).is_some())
        .find_map(|(i, r)| r.rule_index(model).map(|rule| Routed { route: i, rule }))
        .ok_or_else(|| GatewayError::ModelNotFound(model.to_string()))
}

/// The request's host (from the URI or `Host`, without a port) and path.
pub fn host_and_path(session: &Session) -> (&str, &str) {
    let req = session.req_header();
    let host = req
        .uri
        .host()
        .or_else(|| {
            req.headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
        })
        .map(host_without_port)
        .unwrap_or("");
    (host, req.uri.path())
}
