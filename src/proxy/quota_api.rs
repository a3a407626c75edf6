//! The quota API on the proxy listener, compatible with Higress's ai-quota plugin: under a
//! route's chat path, callable only by the configured admin consumer.
//!
//! - `GET …/chat/completions/quota?consumer=NAME` → `{"consumer":"NAME","quota":N}`
//! - `POST …/quota/refresh` with form body `consumer=NAME&quota=N` sets the balance
//! - `POST …/quota/delta` with form body `consumer=NAME&value=±N` adds to it
//!
//! Every bad input is a 400 and changes nothing; a caller that is not the admin consumer
//! gets 403 (401 without a credential).

use super::client::{read_body, BodyLimits, ClientRequest, Failure};
use super::respond;
use crate::auth::AuthError;
use crate::error::GatewayError;
use crate::quota::{form, integer, QuotaOp};
use crate::route::QuotaCall;
use pingora_proxy::Session;

const MAX_FORM_BYTES: usize = 64 * 1024;

impl ClientRequest {
    pub(super) async fn quota_api(
        &mut self,
        session: &mut Session,
        call: QuotaCall,
        request_id: &str,
    ) -> Result<(), Failure> {
        let config = self.config.clone();
        let req = session.req_header();
        let caller = config
            .consumers
            .identify(&req.headers, req.uri.query(), true, &[])
            .map_err(|e| match e {
                AuthError::Missing => GatewayError::MissingCredential,
                AuthError::Forbidden => GatewayError::Forbidden,
            })?;
        self.consumer = caller.map(str::to_string);
        let admin = config
            .quota
            .as_ref()
            .and_then(|q| q.admin_consumer.as_deref());
        if admin.is_none() || caller != admin {
            return Err(GatewayError::Forbidden.into());
        }
        let method = req.method.clone();
        let (consumer, op) = match (call, &method) {
            (QuotaCall::Get, &http::Method::GET) => {
                quota_op(call, req.uri.query().unwrap_or("").as_bytes())?
            }
            (QuotaCall::Refresh | QuotaCall::Delta, &http::Method::POST) => {
                let limits = BodyLimits {
                    max: MAX_FORM_BYTES,
                    client: &config.client,
                };
                let body = read_body(session, limits, &mut self.body_memory).await?;
                quota_op(call, &body)?
            }
            (QuotaCall::Get, m) => {
                return Err(GatewayError::BadQuotaRequest(format!(
                    "use GET to read a quota, not {m}"
                ))
                .into())
            }
            (_, m) => {
                return Err(GatewayError::BadQuotaRequest(format!(
                    "use POST to change a quota, not {m}"
                ))
                .into())
            }
        };
        let consumer = consumer.as_str();
        let balance = self.backends.quotas().apply(&config, consumer, op).await?;
        self.status = 200;
        let body = serde_json::json!({"consumer": consumer, "quota": balance}).to_string();
        respond::json(session, 200, body.into(), request_id)
            .await
            .map_err(|e| Failure::Abort(GatewayError::Internal("writing the response".into()), e))
    }
}

/// The consumer and operation of a quota API call from its parameters: the query of a `GET`,
/// the form body of a `POST`. Every bad input is a `BadQuotaRequest` naming the parameter.
pub fn quota_op(call: QuotaCall, params: &[u8]) -> Result<(String, QuotaOp), GatewayError> {
    let text = std::str::from_utf8(params)
        .map_err(|_| GatewayError::BadQuotaRequest("the form body is not UTF-8".into()))?;
    let mut params = form(text);
    let consumer = params.remove("consumer").unwrap_or_default();
    let op = match call {
        QuotaCall::Get => QuotaOp::Get,
        QuotaCall::Refresh => {
            let v = integer(&params, "quota")?;
            if v < 0 {
                return Err(GatewayError::BadQuotaRequest(
                    "`quota` must not be negative".into(),
                ));
            }
            QuotaOp::Set(v)
        }
        QuotaCall::Delta => QuotaOp::Add(integer(&params, "value")?),
    };
    Ok((consumer, op))
}
