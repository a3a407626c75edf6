//! The Responses API's calls on a stored response: `GET`/`DELETE {prefix}/responses/{id}`,
//! `GET {prefix}/responses/{id}/input_items` and `POST {prefix}/responses/{id}/cancel`.
//!
//! They carry no model to route by: each goes to the provider and key that made the response
//! when the gateway passed it through (the durable object map shared with files and batches,
//! `crate::store::objects`: in Redis when configured, so every gateway of a fleet knows it,
//! else in the embedded store, so it outlives a restart), else to the first target of the
//! route (in rule order) whose provider has a Responses API (`providers[].responses_api`)
//! with its first usable key; in one attempt. A response made for another consumer is not
//! found (404), as an unknown one. The answer passes through and no usage is metered (the
//! response's tokens were metered when it was made). A response the map does not know
//! (made around the gateway) made through another provider or with a key of another
//! organisation is not found there.

use super::admission;
use super::attempt::Attempt;
use super::exchange::Exchange;
use super::exhausted::{exhausted, no_key_error};
use super::ingress::{self, BodyLimits};
use super::pipe::{self, AttemptResult};
use super::pipeline::Failure;
use super::plan::{BodyPlan, Plan, ResponsePlan};
use crate::error::{ErrorCode, GatewayError};
use crate::protocol::{ClientProtocol, Endpoint};
use crate::route::Route;
use crate::store::objects::Owner;
use bytes::Bytes;
use pingora_core::connectors::http::Connector;
use pingora_http::RequestHeader;
use pingora_proxy::Session;

/// Longest `{id}/…` path accepted.
const MAX_REST: usize = 256;
/// Remember which provider and key made the response a `POST /responses` was answered
/// with, and for which consumer, in the durable object map (`crate::store::objects`, shared
/// with files and batches: in Redis when configured, else the embedded store).
pub async fn remember(endpoint: Endpoint, x: &Exchange) {
    if endpoint != Endpoint::Responses {
        return;
    }
    let log = &x.attempts;
    let (Some(id), Some(chosen)) = (&log.outcome.response_id, &log.chosen) else {
        return;
    };
    let Some(key) = chosen.provider.keys.get(chosen.key_index) else {
        return;
    };
    let owner = Owner {
        provider: chosen.provider.name.clone(),
        key: key.name.clone(),
        consumer: x.consumer.clone().unwrap_or_default(),
    };
    if let Err(e) = x.backends.objects().await.put(id, &owner).await {
        log::warn!("responses: remembering {id}: {e}");
    }
}

/// Serve a call on a stored response; the status sent.
pub async fn serve(
    session: &mut Session,
    x: &mut Exchange,
    connector: &Connector,
) -> Result<u16, Failure> {
    let method = session.req_header().method.clone();
    let allowed = match rest_of(session.req_header()) {
        Some(rest) if rest.ends_with("/cancel") => method == http::Method::POST,
        Some(_) => matches!(method, http::Method::GET | http::Method::DELETE),
        None => return Err(GatewayError::RouteNotFound(path(session)).into()),
    };
    if !allowed {
        return Err(GatewayError::MethodNotAllowed(method.to_string()).into());
    }
    let config = x.config.clone();
    let route = x
        .route
        .and_then(|i| config.routes.get(i))
        .ok_or_else(|| GatewayError::Internal("no route".into()))?;
    x.consumer = admission::authenticate(session, &config, &route.auth)?;
    if method == http::Method::POST {
        // A cancel has no body worth sending; read it so the connection stays usable.
        let limits = BodyLimits {
            max: config.max_body_bytes,
            client: &config.client,
        };
        ingress::read_body(session, limits, &mut x.body_memory).await?;
    }
    let id = rest_of(session.req_header())
        .and_then(|r| r.split('/').next())
        .unwrap_or_default()
        .to_string();
    let objects = x.backends.objects().await;
    let consumer = x.consumer.clone().unwrap_or_default();
    let owner = super::files_api::owned(objects, &id, &consumer).await?;
    let attempt = attempt_for(route, owner.as_ref())?;
    x.attempts.chose(&attempt);
    let client = x.plain_client(session, &route.forward, ClientProtocol::Responses);
    let (result, outcome) = pipe::run(client, connector, attempt).await;
    x.attempts.unmetered(outcome);
    ended(result)
}

/// The one attempt: the provider and key that made the response (`owner`), if known and on
/// the route; else the route's first target with a Responses API and its first usable key.
fn attempt_for(route: &Route, owner: Option<&Owner>) -> Result<Attempt, GatewayError> {
    let mut targets = route
        .rules
        .iter()
        .flat_map(|r| r.targets.iter())
        .filter(|t| t.provider.responses_api);
    let known = owner.and_then(|o| {
        let target = targets.clone().find(|t| t.provider.name == o.provider)?;
        let key_index = target.provider.keys.iter().position(|k| k.name == o.key)?;
        Some((target, key_index))
    });
    let (target, key_index) = match known {
        Some(found) => found,
        None => {
            let target = targets.next().ok_or_else(|| GatewayError::Translate {
                status: 400,
                code: ErrorCode::UnsupportedEndpoint,
                message: "No provider of this route has a Responses API to keep responses \
                          (`providers[].responses_api`)."
                    .into(),
            })?;
            let key = target.provider.keys.pick(&[]);
            (target, key.ok_or_else(|| no_key_error(&[target]))?)
        }
    };
    let provider = target.provider.clone();
    let plan = Plan {
        client: ClientProtocol::Responses,
        provider: provider.protocol,
        upstream_endpoint: Endpoint::ResponseById,
        body: BodyPlan::Splice(crate::body::Rewrite::default()),
        response: ResponsePlan::Native { strip_usage: false },
        content_type: None,
    };
    Ok(Attempt {
        provider,
        key_index,
        upstream_model: String::new(),
        stream: false,
        original: Bytes::new(),
        plan,
        propagate: crate::otel::Propagate::default(),
    })
}

/// What the attempt's end means for the client.
pub(super) fn ended(result: AttemptResult) -> Result<u16, Failure> {
    match result {
        AttemptResult::Delivered(status) => Ok(status),
        AttemptResult::Failed(failed) => Err(exhausted(&[failed]).into()),
        AttemptResult::Aborted {
            status: Some(sent),
            error,
            cause,
        } => Err(Failure::Abort {
            error,
            cause,
            sent: Some(sent),
        }),
        AttemptResult::Aborted { error, .. } => Err(error.into()),
        AttemptResult::ClientGone { status, cause } => Err(Failure::Abort {
            error: GatewayError::ClientClosed,
            cause,
            sent: status,
        }),
    }
}

fn path(session: &Session) -> String {
    session.req_header().uri.path().to_string()
}

/// The client's path after `/responses/` (`{id}` or `{id}/input_items`), when it is a
/// plain one: ASCII letters, digits, `_`, `-`, `.` in non-empty segments, never `..`.
fn rest_of(client: &RequestHeader) -> Option<&str> {
    let (_, rest) = client.uri.path().split_once("/responses/")?;
    let rest = rest.trim_end_matches('/');
    let plain = rest.len() <= MAX_REST
        && rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'/'))
        && rest
            .split('/')
            .all(|s| !s.is_empty() && s != "." && s != "..");
    plain.then_some(rest)
}

/// Point the upstream request (already at the provider's `/responses`) at the stored
/// response the client named, with the client's method and query.
pub(super) fn retarget(
    req: &mut RequestHeader,
    client: &RequestHeader,
) -> pingora_error::Result<()> {
    let what = "building the upstream path of a stored response";
    let rest = rest_of(client).ok_or_else(|| path_error(what))?;
    aim(req, client, &format!("/{rest}"), what)
}

/// The upstream request's path followed by `rest`, its query and the client's joined, and
/// the client's method: a call on an object the provider keeps (a stored response, a file,
/// a batch). `what` names the call in the error.
pub(super) fn aim(
    req: &mut RequestHeader,
    client: &RequestHeader,
    rest: &str,
    what: &'static str,
) -> pingora_error::Result<()> {
    let query: Vec<&str> = [req.uri.query(), client.uri.query()]
        .into_iter()
        .flatten()
        .filter(|q| !q.is_empty())
        .collect();
    let mut uri = format!("{}{rest}", req.uri.path());
    if !query.is_empty() {
        uri.push('?');
        uri.push_str(&query.join("&"));
    }
    req.set_uri(uri.parse::<http::Uri>().map_err(|_| path_error(what))?);
    req.set_method(client.method.clone());
    Ok(())
}

pub(super) fn path_error(what: &'static str) -> Box<pingora_error::Error> {
    pingora_error::Error::explain(pingora_error::ErrorType::InternalError, what)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn header(method: &str, path: &str) -> RequestHeader {
        let method = http::Method::from_bytes(method.as_bytes()).unwrap();
        RequestHeader::build(method, path.as_bytes(), None).unwrap()
    }

    #[test]
    fn stored_response_paths() {
        let client = header("GET", "/v1/responses/resp_1/input_items?limit=5&order=asc");
        let mut up = header("POST", "/openai/responses?api-version=2025-03-01-preview");
        retarget(&mut up, &client).unwrap();
        assert_eq!(up.method, http::Method::GET);
        assert_eq!(
            up.uri.to_string(),
            "/openai/responses/resp_1/input_items?api-version=2025-03-01-preview&limit=5&order=asc"
        );
        let client = header("DELETE", "/v1/responses/resp_1");
        let mut up = header("POST", "/v1/responses");
        retarget(&mut up, &client).unwrap();
        assert_eq!(
            (up.method.as_str(), up.uri.to_string().as_str()),
            ("DELETE", "/v1/responses/resp_1")
        );
        for bad in [
            "/v1/responses/../x",
            "/v1/responses/a//b",
            "/v1/responses/a%2F",
        ] {
            assert!(rest_of(&header("GET", bad)).is_none(), "{bad}");
        }
    }

    fn provider(
        protocol: crate::protocol::Protocol,
        responses_api: bool,
    ) -> crate::provider::Provider {
        let upstream = crate::provider::Upstream::parse("http://127.0.0.1:1/v1", None).unwrap();
        crate::provider::Provider::new(crate::provider::ProviderSpec {
            http2: false,
            name: "p".into(),
            kind: "openai-compatible".into(),
            protocol,
            upstream,
            keys: crate::keys::KeyPool::new(vec![], vec![]),
            model_map: Default::default(),
            models: vec![],
            timeouts: Default::default(),
            ca: None,
            health: Default::default(),
            api_version: None,
            connect_to: None,
            responses_api,
        })
    }

    /// A Responses request is passed through only to a provider with the API; any other gets
    /// chat (in its own protocol) and a translated answer.
    #[test]
    fn responses_plans_per_provider() {
        use crate::protocol::{ANTHROPIC, AZURE, GEMINI, OPENAI};
        use crate::proxy::plan::plan_for;
        let body = crate::body::RequestBody::parse(Bytes::from_static(
            br#"{"model":"m","input":"hi","stream":true,"max_output_tokens":9}"#,
        ))
        .unwrap();
        assert_eq!(body.max_tokens, Some(9));
        let cases = [
            (OPENAI, true, Endpoint::Responses, true),
            (AZURE, true, Endpoint::Responses, true),
            (OPENAI, false, Endpoint::ChatCompletions, false),
            (AZURE, false, Endpoint::ChatCompletions, false),
            (ANTHROPIC, false, Endpoint::Messages, false),
            (GEMINI, false, Endpoint::ChatCompletions, false),
        ];
        for (protocol, api, upstream, native) in cases {
            let p = plan_for(&body, Endpoint::Responses, &provider(protocol, api), "up").unwrap();
            let what = format!("{protocol:?} responses_api={api}");
            assert_eq!(p.client, ClientProtocol::Responses, "{what}");
            assert_eq!(p.upstream_endpoint, upstream, "{what}");
            assert_eq!(p.native().is_some(), native, "{what}");
            match &p.response {
                ResponsePlan::Native { strip_usage } => assert!(native && !strip_usage, "{what}"),
                ResponsePlan::Translate { include_usage, .. } => {
                    assert!(!native && *include_usage, "{what}");
                    let t = crate::proxy::plan::stream_translator(protocol, p.client, "up", true);
                    assert!(t.is_some(), "{what}");
                }
                ResponsePlan::Unmetered | ResponsePlan::Media { .. } => {
                    panic!("{what}: Responses are metered as text")
                }
            }
        }
    }
}
