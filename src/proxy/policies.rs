//! The policy stage (after authentication, before admission, budgets and the cache): the
//! route's input deny rules and PII policy applied to the request's text, so that rate
//! limits, token estimates and the cache key see the body that goes upstream. A masked
//! request replaces the client's in `Exchange.request` (the original is dropped, never
//! logged). Returns what the answer needs: the vault of masked values to restore and the
//! output deny rules (`ResponsePolicy`), `None` when the route has neither.

use crate::body::RequestBody;
use crate::error::GatewayError;
use crate::policy::pii::{PiiPolicy, Vault};
use crate::policy::restore::ResponsePolicy;
use crate::policy::text::{request_texts, Shape};
use crate::policy::Action;
use crate::route::{Endpoint, Route};
use crate::settings::PiiMode;
use serde_json::Value;

/// The API shape of an endpoint whose text the policies read.
fn shape(endpoint: Endpoint) -> Option<Shape> {
    match endpoint {
        Endpoint::ChatCompletions => Some(Shape::Chat),
        Endpoint::Completions => Some(Shape::Completions),
        Endpoint::Messages => Some(Shape::Messages),
        _ => None,
    }
}

/// Apply the route's request policies to `body`; `actions` gets what they did.
pub fn apply(
    body: &mut RequestBody,
    route: &Route,
    endpoint: Endpoint,
    actions: &mut Vec<Action>,
) -> Result<Option<ResponsePolicy>, GatewayError> {
    let Some(shape) = shape(endpoint) else {
        if endpoint.beyond_policies() && (route.pii.is_some() || route.deny.is_some()) {
            return Err(uncovered("PII masking and deny rules", endpoint));
        }
        return Ok(None);
    };
    let input = route.deny.as_ref().and_then(|d| d.input.as_ref());
    if input.is_none() && route.pii.is_none() {
        return Ok(ResponsePolicy::new(None, route.deny.clone(), shape));
    }
    let mut v: Value = serde_json::from_slice(body.bytes())
        .map_err(|e| GatewayError::InvalidJson(e.to_string()))?;
    if let Some(list) = input {
        let mut hit = false;
        request_texts(&mut v, shape, &mut |s| hit = hit || list.matches(s));
        if hit {
            actions.push(Action::new("deny_input", "blocked"));
            return Err(GatewayError::ContentPolicy(
                "The request was refused by this route's content policy: its text matches a deny rule.".into(),
            ));
        }
    }
    let vault = match &route.pii {
        Some(pii) => mask(body, &mut v, pii, shape, actions)?,
        None => None,
    };
    Ok(ResponsePolicy::new(vault, route.deny.clone(), shape))
}

/// Mask (or refuse) the detected values; the vault to restore them (`mode: mask`).
fn mask(
    body: &mut RequestBody,
    v: &mut Value,
    pii: &PiiPolicy,
    shape: Shape,
    actions: &mut Vec<Action>,
) -> Result<Option<Vault>, GatewayError> {
    if pii.mode == PiiMode::Block {
        let mut kind = None;
        request_texts(v, shape, &mut |s| {
            if kind.is_none() {
                kind = pii.find(s).first().map(|f| pii.name(f).to_string());
            }
        });
        return match kind {
            Some(kind) => {
                actions.push(Action::new("pii", "blocked"));
                Err(GatewayError::ContentPolicy(format!(
                    "The request was refused by this route's content policy: it contains personal data ({kind})."
                )))
            }
            None => Ok(None),
        };
    }
    let mut vault = Vault::default();
    let mut masked = false;
    request_texts(v, shape, &mut |s| masked |= pii.mask(s, &mut vault));
    if !masked {
        return Ok(None);
    }
    actions.push(Action::new("pii", "masked"));
    let bytes = serde_json::to_vec(&*v)
        .map_err(|e| GatewayError::Internal(format!("masking the request: {e}")))?;
    *body = RequestBody::parse(bytes.into())?;
    Ok((pii.mode == PiiMode::Mask).then_some(vault))
}

/// A Responses API request on a route whose content policies cannot read it yet: refused
/// rather than sent upstream unchecked.
pub fn uncovered(policies: &str, endpoint: Endpoint) -> GatewayError {
    let message = match endpoint {
        Endpoint::Responses => format!(
            "This route's {policies} do not cover the Responses API yet; send the request to /chat/completions instead."
        ),
        _ => format!(
            "This route's {policies} do not cover the {} endpoint; send it through a route without them.",
            endpoint.suffix().trim_start_matches('/')
        ),
    };
    GatewayError::Translate {
        status: 400,
        code: crate::error::ErrorCode::UnsupportedEndpoint,
        message,
    }
}
