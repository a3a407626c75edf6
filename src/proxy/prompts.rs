//! The prompt stages (`crate::policy::prompts`, `crate::policy::moderation`): a template is
//! expanded right after ingress, before the request is routed by its model; after
//! authentication, the route's input moderation checks the client's text and the route's
//! and consumer's decorators are spliced in, before admission, budgets and the cache, so
//! that they all see the body that goes upstream.

use super::loopback::{self, Asked, Origin};
use crate::body::RequestBody;
use crate::error::GatewayError;
use crate::policy::moderation::{self, Moderation, Verdict, Via};
use crate::policy::prompts::{self, DecoratorContext, Wire};
use crate::policy::Action;
use crate::route::Endpoint;
use crate::runtime::Gateway;
use bytes::Bytes;

/// The shape messages are added to at `endpoint`; `None`: no prompt policy applies there.
fn wire(endpoint: Endpoint) -> Option<Wire> {
    match endpoint {
        Endpoint::ChatCompletions => Some(Wire::OpenAi),
        Endpoint::Messages => Some(Wire::Anthropic),
        _ => None,
    }
}

/// The body with the template it invokes expanded (the same bytes when it invokes none).
pub fn expand_template(
    config: &Gateway,
    endpoint: Endpoint,
    bytes: Bytes,
    actions: &mut Vec<Action>,
) -> Result<Bytes, GatewayError> {
    let Some(wire) = wire(endpoint) else {
        return Ok(bytes);
    };
    match prompts::expand(&config.prompts.templates, wire, &bytes)? {
        Some(expanded) => {
            actions.push(Action::new("template", "expanded"));
            Ok(expanded)
        }
        None => Ok(bytes),
    }
}

/// Moderation, then decorators: the new body when decorators changed it.
pub async fn apply(
    asked: &Asked<'_>,
    route: usize,
    endpoint: Endpoint,
    body: &RequestBody,
    actions: &mut Vec<Action>,
) -> Result<Option<RequestBody>, GatewayError> {
    let checked = matches!(
        endpoint,
        Endpoint::ChatCompletions | Endpoint::Messages | Endpoint::Completions
    );
    let moderated = matches!(asked.config.prompts.moderation.get(route), Some(Some(_)));
    if moderated && endpoint.beyond_policies() {
        return Err(super::policies::uncovered("moderation checks", endpoint));
    }
    if let Some(Some(m)) = asked
        .config
        .prompts
        .moderation
        .get(route)
        .filter(|_| checked)
    {
        moderate(asked, m, body, actions).await?;
    }
    decorate(asked, route, endpoint, body, actions)
}

fn decorate(
    asked: &Asked<'_>,
    route: usize,
    endpoint: Endpoint,
    body: &RequestBody,
    actions: &mut Vec<Action>,
) -> Result<Option<RequestBody>, GatewayError> {
    let Some(wire) = wire(endpoint) else {
        return Ok(None);
    };
    let policies = &asked.config.prompts;
    let of_route = policies.routes.get(route).filter(|d| !d.is_empty());
    let of_consumer = asked.consumer.and_then(|c| policies.consumers.get(c));
    if of_route.is_none() && of_consumer.is_none() {
        return Ok(None);
    }
    let date = jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date()
        .to_string();
    let cx = DecoratorContext {
        consumer: asked.consumer.unwrap_or(""),
        route: &asked.route.name,
        model: &body.model,
        date: &date,
    };
    let rewrite = prompts::decorate(body, wire, [of_route, of_consumer], &cx)?;
    if rewrite.is_empty() {
        return Ok(None);
    }
    let decorated = RequestBody::parse(rewrite.apply(body.bytes()))?;
    actions.push(Action::new("decorator", "applied"));
    Ok(Some(decorated))
}

/// Check the input; `Err` when it is flagged, or the check failed and fails closed.
async fn moderate(
    asked: &Asked<'_>,
    m: &Moderation,
    body: &RequestBody,
    actions: &mut Vec<Action>,
) -> Result<(), GatewayError> {
    let texts = moderation::input_texts(body);
    if texts.is_empty() {
        return Ok(());
    }
    match check(&asked.origin(), m, &texts).await {
        Ok(v) if v.flagged => {
            actions.push(Action::new("moderation_input", "flagged"));
            Err(GatewayError::ContentPolicy(format!(
                "Your request was rejected by the gateway's content policy (flagged: {}).",
                shown(&v)
            )))
        }
        Ok(_) => {
            actions.push(Action::new("moderation_input", "passed"));
            Ok(())
        }
        Err(e) => {
            moderation::failed(&asked.route.name, &e, m.fail_closed);
            if m.fail_closed {
                actions.push(Action::new("moderation_input", "failed_closed"));
                return Err(GatewayError::ModerationUnavailable(
                    "the moderation check failed".into(),
                ));
            }
            actions.push(Action::new("moderation_input", "failed_open"));
            Ok(())
        }
    }
}

/// The flagged categories as the client is told: a few short names.
pub fn shown(v: &Verdict) -> String {
    let names: Vec<&str> = v
        .categories
        .iter()
        .take(8)
        .map(|c| {
            let mut end = c.len().min(64);
            while !c.is_char_boundary(end) {
                end -= 1;
            }
            &c[..end]
        })
        .collect();
    if names.is_empty() {
        return "unspecified".into();
    }
    names.join(", ")
}

/// Make the check of `texts` (the input's or an answer's).
pub async fn check(
    asked: &Origin<'_>,
    m: &Moderation,
    texts: &[String],
) -> Result<Verdict, String> {
    match &m.via {
        Via::RouteModel { model, route } => {
            let body = serde_json::json!({"model": model, "input": texts});
            let suffix = "/moderations";
            let v =
                loopback::post_json_from(asked, route.as_deref(), suffix, &body, m.timeout).await?;
            moderation::openai_verdict(&v)
        }
        Via::Hook { url } => {
            let body = moderation::hook_request(texts, &asked.route.name, asked.consumer);
            let v = hook(url, &body, m.timeout).await?;
            moderation::hook_verdict(&v)
        }
    }
}

fn hook_client() -> Result<&'static reqwest::Client, String> {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    if let Some(c) = CLIENT.get() {
        return Ok(c);
    }
    let client = reqwest::Client::builder()
        .build()
        .map_err(|e| e.to_string())?;
    Ok(CLIENT.get_or_init(|| client))
}

/// POST the hook's request; its JSON answer when it is a 200.
async fn hook(
    url: &str,
    body: &serde_json::Value,
    timeout: std::time::Duration,
) -> Result<serde_json::Value, String> {
    let resp = hook_client()?
        .post(url)
        .timeout(timeout)
        .json(body)
        .send()
        .await
        .map_err(|e| format!("the hook: {e}"))?;
    if resp.status() != reqwest::StatusCode::OK {
        return Err(format!("the hook answered {}", resp.status().as_u16()));
    }
    resp.json()
        .await
        .map_err(|e| format!("the hook's answer: {e}"))
}
