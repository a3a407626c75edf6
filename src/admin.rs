//! The admin listener: `/metrics` (Prometheus text), `/healthz`, `/admin/keys`.
//!
//! Served by a plain Pingora `ServeHttp` app on its own listener (loopback by default), so
//! operational traffic never shares the proxy's routing.

use crate::config::SharedConfig;
use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;

pub struct Admin {
    pub config: SharedConfig,
}

/// `/admin/keys`: every provider's keys by name, with state and failure counts.
fn keys_json(config: &crate::config::Gateway) -> Vec<u8> {
    let providers: Vec<serde_json::Value> = config
        .providers
        .iter()
        .map(|p| {
            let keys: Vec<_> = p.keys.iter().map(|k| k.status()).collect();
            serde_json::json!({
                "provider": p.name,
                "missing_key_variables": p.keys.missing_vars(),
                "keys": keys,
            })
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({ "providers": providers })).unwrap_or_default()
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

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let path = session.req_header().uri.path().to_string();
        match path.as_str() {
            "/metrics" => {
                crate::metrics::observe_keys(&self.config.load());
                respond(
                    StatusCode::OK,
                    "text/plain; version=0.0.4",
                    crate::metrics::render(),
                )
            }
            "/admin/keys" => respond(
                StatusCode::OK,
                "application/json",
                keys_json(&self.config.load()),
            ),
            "/healthz" => respond(StatusCode::OK, "application/json", br#"{"status":"ok"}"#.to_vec()),
            _ => respond(
                StatusCode::NOT_FOUND,
                "application/json",
                br#"{"error":{"message":"Unknown admin path.","type":"invalid_request_error","code":"not_found"}}"#
                    .to_vec(),
            ),
        }
    }
}
