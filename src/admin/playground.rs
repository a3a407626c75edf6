//! The console's playground: `POST /admin/api/v1/playground` with `{"consumer", "path",
//! "body"}` sends `body` through this gateway's own proxy listener (over loopback), as
//! `consumer` (a short-lived credential minted for it, `crate::auth::mint_playground`, that
//! never leaves the gateway) or anonymously, and streams the answer back as it arrives, so
//! the request is routed, limited, charged, metered and logged like any other. Admin role
//! only (it spends tokens); every call is in the audit log.

use super::{console, read_json, Admin};
use crate::error::GatewayError;
use bytes::Bytes;
use pingora_core::protocols::http::ServerSession;
use pingora_http::ResponseHeader;
use serde_json::Value;

pub const PATH: &str = "/admin/api/v1/playground";

/// Headers of the proxy's answer passed on to the browser.
const PASSED: [&str; 4] = [
    "content-type",
    "x-request-id",
    "x-tollgate-provider",
    "retry-after",
];

impl Admin {
    pub(super) async fn playground(&self, http: &mut ServerSession) {
        crate::conn::header_received();
        if let Err(e) = self.play(http).await {
            let (parts, body) = super::error(&e).into_parts();
            let header: ResponseHeader = parts.into();
            if http.write_response_header(Box::new(header)).await.is_ok() {
                let _ = http.write_response_body(body.into(), true).await;
            }
        }
    }

    /// Check the call, send the request, stream the answer (`Err` only before the answer
    /// has started).
    async fn play(&self, http: &mut ServerSession) -> Result<(), GatewayError> {
        if !console::csrf_ok(http) {
            return Err(GatewayError::CsrfMissing);
        }
        let who = self
            .principal(http)
            .await
            .ok_or(GatewayError::AdminUnauthorized)?;
        if !who.role.may_write() {
            return Err(GatewayError::AdminReadOnly);
        }
        let call = read_json(http).await?;
        let bad = |m: &str| GatewayError::BadQuery(format!("playground: {m}"));
        let consumer = match call.get("consumer") {
            None | Some(Value::Null) => None,
            Some(Value::String(c)) if c.is_empty() => None,
            Some(Value::String(c)) => Some(c.clone()),
            Some(_) => return Err(bad("`consumer` must be a consumer's name")),
        };
        if let Some(c) = &consumer {
            if !self.config.load().consumers.names().contains(c) {
                return Err(bad(&format!("no consumer `{c}`")));
            }
        }
        let path = call
            .get("path")
            .and_then(Value::as_str)
            .unwrap_or("/v1/chat/completions")
            .to_string();
        if !path.starts_with('/') || path.starts_with("//") || path.contains(['\r', '\n', ' ']) {
            return Err(bad("`path` must be a path such as /v1/chat/completions"));
        }
        let Some(body) = call.get("body").filter(|b| b.is_object()) else {
            return Err(bad("`body` must be the request's JSON object"));
        };
        let base = crate::lifecycle::proxy_loopback_url()
            .ok_or_else(|| GatewayError::Internal("no proxy listener is bound yet".into()))?;
        let client = reqwest::Client::builder()
            // Only ever this gateway's own listener on loopback, whose certificate may name
            // the public host instead.
            .danger_accept_invalid_certs(true)
            .no_proxy()
            .build()
            .map_err(|e| GatewayError::Internal(e.to_string()))?;
        let mut request = client.post(format!("{base}{path}")).json(body);
        if let Some(c) = &consumer {
            let credential = crate::auth::mint_playground(c)
                .map_err(|e| GatewayError::Internal(format!("no random bytes: {e}")))?;
            request = request.bearer_auth(credential);
        }
        let shown = consumer.as_deref().unwrap_or("(anonymous)");
        self.reloader
            .record(&who.name, "playground request", "consumer", shown)
            .await;
        let mut answer = request
            .send()
            .await
            .map_err(|e| GatewayError::Internal(format!("the proxy listener: {e}")))?;
        let mut header = ResponseHeader::build(answer.status().as_u16(), None)
            .map_err(|e| GatewayError::Internal(e.to_string()))?;
        for name in PASSED {
            if let Some(v) = answer.headers().get(name) {
                let _ = header.insert_header(name, v.as_bytes());
            }
        }
        let _ = header.insert_header("cache-control", "no-store");
        let _ = header.insert_header("transfer-encoding", "chunked");
        if http.write_response_header(Box::new(header)).await.is_err() {
            return Ok(());
        }
        // The browser sees each piece as the proxy sends it.
        while let Ok(Some(chunk)) = answer.chunk().await {
            if http.write_response_body(chunk, false).await.is_err() {
                return Ok(());
            }
        }
        let _ = http.write_response_body(Bytes::new(), true).await;
        Ok(())
    }
}
