//! The admin listener: `/metrics` (Prometheus text) and `/healthz`.
//!
//! Served by a plain Pingora `ServeHttp` app on its own listener (loopback by default), so
//! operational traffic never shares the proxy's routing.

use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;

pub struct Admin;

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
            "/metrics" => respond(
                StatusCode::OK,
                "text/plain; version=0.0.4",
                crate::metrics::render(),
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
