//! The quota API on the proxy listener, compatible with Higress's ai-quota plugin: under a
//! route's chat path, callable only by the configured admin consumer.
//!
//! - `GET …/chat/completions/quota?consumer=NAME` → `{"consumer":"NAME","quota":N}`
//! - `POST …/quota/refresh` with form body `consumer=NAME&quota=N` sets the balance
//! - `POST …/quota/delta` with form body `consumer=NAME&value=±N` adds to it
//!
//! The POST bodies may also be JSON (`{"consumer":"NAME","quota":N}`), recognised by
//! `Content-Type: application/json` or by a body that starts with `{`.
//!
//! Every bad input is a 400 and changes nothing; a known consumer that is not the admin gets
//! 403 `permission_denied` ("not the quota administrator"), an unknown credential 401
//! `invalid_api_key`, no credential 401 `missing_api_key`.

use super::exchange::Exchange;
use super::ingress::{read_body, BodyLimits};
use super::pipeline::{answer_json, Failure};
use crate::error::GatewayError;
use crate::quota::{form, integer, QuotaOp};
use crate::route::QuotaCall;
use pingora_proxy::Session;
use std::collections::HashMap;

const MAX_FORM_BYTES: usize = 64 * 1024;

/// Answer a quota API call (the quota admin consumer only); the status sent.
pub(super) async fn serve(
    session: &mut Session,
    x: &mut Exchange,
    call: QuotaCall,
) -> Result<u16, Failure> {
    let config = x.config.clone();
    let req = session.req_header();
    let caller = config
        .consumers
        .identify(&req.headers, req.uri.query(), true, &[])
        .map_err(GatewayError::from)?;
    x.consumer = caller.map(str::to_string);
    let admin = config
        .quota
        .as_ref()
        .and_then(|q| q.admin_consumer.as_deref());
    if admin.is_none() || caller != admin {
        return Err(GatewayError::NotQuotaAdmin.into());
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
            let json = is_json(session.req_header());
            let body = read_body(session, limits, &mut x.body_memory).await?;
            quota_op_as(call, &body, json)?
        }
        (QuotaCall::Get, m) => {
            return Err(
                GatewayError::BadQuotaRequest(format!("use GET to read a quota, not {m}")).into(),
            )
        }
        (_, m) => {
            return Err(GatewayError::BadQuotaRequest(format!(
                "use POST to change a quota, not {m}"
            ))
            .into())
        }
    };
    let consumer = consumer.as_str();
    let balance = x
        .backends
        .quotas()
        .apply(&config.consumers, config.quota.as_ref(), consumer, op)
        .await?;
    let body = serde_json::json!({"consumer": consumer, "quota": balance}).to_string();
    answer_json(session, body.into(), &x.request_id).await
}

/// The consumer and operation of a quota API call from its parameters: the query of a `GET`,
/// the form or JSON body of a `POST` (JSON when it starts with `{`). Every bad input is a
/// `BadQuotaRequest` naming the parameter.
pub fn quota_op(call: QuotaCall, params: &[u8]) -> Result<(String, QuotaOp), GatewayError> {
    quota_op_as(call, params, false)
}

/// As `quota_op`, with `json` when the request's `Content-Type` says the body is JSON.
pub fn quota_op_as(
    call: QuotaCall,
    params: &[u8],
    json: bool,
) -> Result<(String, QuotaOp), GatewayError> {
    let text = std::str::from_utf8(params)
        .map_err(|_| GatewayError::BadQuotaRequest("the body is not UTF-8".into()))?;
    let mut params = if json || text.trim_start().starts_with('{') {
        json_params(text)?
    } else {
        form(text)
    };
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

/// Whether the request says its body is JSON.
fn is_json(req: &pingora_http::RequestHeader) -> bool {
    req.headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| {
            let m = m.trim();
            m.eq_ignore_ascii_case("application/json")
                || m.get(m.len().saturating_sub(5)..)
                    .is_some_and(|s| s.eq_ignore_ascii_case("+json"))
        })
}

/// A JSON object body as the same parameters a form gives: strings as they are, numbers in
/// their JSON text (so `integer` checks them like form values).
fn json_params(text: &str) -> Result<HashMap<String, String>, GatewayError> {
    let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(text)
        .map_err(|e| GatewayError::BadQuotaRequest(format!("the JSON body is not valid: {e}")))?;
    map.into_iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => Ok((k, s)),
            serde_json::Value::Number(n) => Ok((k, n.to_string())),
            _ => Err(GatewayError::BadQuotaRequest(format!(
                "`{k}` must be a string or a number"
            ))),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quota::integer;

    #[test]
    fn json_bodies_give_the_same_parameters_as_forms() {
        let p = json_params(r#"{"consumer": "alice", "quota": 12, "value": "-3"}"#).unwrap();
        assert_eq!(p["consumer"], "alice");
        assert_eq!(integer(&p, "quota").unwrap(), 12);
        assert_eq!(integer(&p, "value").unwrap(), -3);
        let p = json_params(r#"{"consumer": "a", "quota": 1.5}"#).unwrap();
        assert!(integer(&p, "quota").is_err());
        let p = json_params(r#"{"consumer": "a", "quota": 1e30}"#).unwrap();
        assert!(integer(&p, "quota").is_err());
        assert!(json_params(r#"{"consumer": ["a"]}"#).is_err());
        assert!(json_params("[1]").is_err());
        assert!(json_params("{").is_err());
        let mut h = pingora_http::RequestHeader::build("POST", b"/", None).unwrap();
        assert!(!is_json(&h));
        h.insert_header("content-type", "Application/JSON; charset=utf-8")
            .unwrap();
        assert!(is_json(&h));
    }
}
