//! The request path, top to bottom, one stage a line:
//!
//! 1. routing by host and path (the gateway's own answers, `/models` and the quota API,
//!    end here, and so do the calls on a stored response, `super::responses_api`, and the
//!    files and batches calls, `super::files_api`);
//! 2. ingress: method, body; a prompt template expanded (`super::prompts`); parse;
//! 3. routing by model: the route and model rule;
//! 4. admission: the consumer (authentication); the request policies (`super::policies`:
//!    deny rules and PII masking on the request's text), then the prompt stage (input
//!    moderation and decorators: `super::prompts`); then rate limits and quota;
//! 5. budgets: the request's largest possible cost reserved under its money budgets
//!    (Anthropic's token counting instead goes to its Anthropic targets or is answered
//!    with an estimate, `super::count_tokens`);
//! 6. cache: a route's cached answer served without going upstream (`super::cache`);
//! 7. attempts: targets and keys in order until one answers (the answer's policies applied
//!    as it is sent);
//! 8. accounting, when the request ends (`super::accounting`, from Pingora's `logging`).
//!
//! Each stage is a function in its own module returning a value; `Exchange` keeps what
//! accounting needs, and `finish` is the one place a failed request is answered and recorded.

use super::admission::{self, Caller};
use super::attempts::{self, Upstream};
use super::exchange::Exchange;
use super::loopback::Asked;
use super::{
    budgets, cache, count_tokens, files_api, ingress, models_api, moderation_output::OutputCheck,
    policies, prompts, quota_api, respond, responses_api, routing,
};
use crate::body::RequestBody;
use crate::error::GatewayError;
use crate::policy::restore::ResponsePolicy;
use crate::route::{Endpoint, Route};
use crate::runtime::Gateway;
use pingora_core::connectors::http::Connector;
use pingora_error::{Error, Result};
use pingora_proxy::Session;
use std::sync::Arc;

/// How a request failed: answer with an error, or abort a response already under way.
pub enum Failure {
    Respond(GatewayError),
    Abort {
        error: GatewayError,
        cause: Box<Error>,
        /// The status the client had been sent, if any.
        sent: Option<u16>,
    },
}

impl From<GatewayError> for Failure {
    fn from(e: GatewayError) -> Self {
        Failure::Respond(e)
    }
}

/// Send the gateway's own JSON answer with status 200; the status sent.
pub(super) async fn answer_json(
    session: &mut Session,
    body: bytes::Bytes,
    request_id: &str,
) -> Result<u16, Failure> {
    answer_json_with(session, body, request_id, &[]).await
}

/// `answer_json` with headers of its own.
pub(super) async fn answer_json_with(
    session: &mut Session,
    body: bytes::Bytes,
    request_id: &str,
    extra: &[super::exchange::ExtraHeader],
) -> Result<u16, Failure> {
    respond::json_with(session, 200, body, request_id, extra)
        .await
        .map_err(|cause| Failure::Abort {
            error: GatewayError::Internal("writing the response".into()),
            cause,
            sent: Some(200),
        })?;
    Ok(200)
}

/// Serve the request; `Err` only when the client connection must be aborted.
pub async fn serve(x: &mut Exchange, session: &mut Session, connector: &Connector) -> Result<()> {
    let result = pipeline(x, session, connector).await;
    finish(x, session, result).await
}

/// The stages; the status the client was sent.
async fn pipeline(
    x: &mut Exchange,
    session: &mut Session,
    connector: &Connector,
) -> Result<u16, Failure> {
    let config = x.config.clone();
    let (first, endpoint) = routing::route(session, &config)?;
    (x.route, x.endpoint) = (Some(first), Some(endpoint));
    if let Some(sent) = own_answer(x, session, connector, endpoint).await {
        return sent;
    }
    let read = read_body(x, session, &config, endpoint).await?;
    let body = &*x.request.insert(read);
    let routed = routing::rule(session, &config, first, &body.model)?;
    (x.route, x.rule) = (Some(routed.route), Some(routed.rule));
    let route = &config.routes[routed.route];
    x.consumer = admission::authenticate(session, &config, &route.auth)?;
    let answer = request_policies(x, session, &config, routed.route, endpoint).await?;
    let body = x
        .request
        .as_ref()
        .ok_or_else(|| GatewayError::Internal("the request body is gone".into()))?;
    let caller = Caller {
        session,
        config: &config,
        backends: &x.backends,
        route: &route.name,
        consumer: x.consumer.as_deref(),
    };
    let admitted = admission::admit(&caller, body, &mut x.reserved, &mut x.extra_headers).await?;
    let stage = (routed.route, routed.rule);
    if let Some(sent) = budget_stage(x, session, &config, stage, endpoint, &admitted).await? {
        return Ok(sent);
    }
    let rule = &route.rules[routed.rule];
    if let Some(sent) = cache_stage(x, session, &config, route, endpoint, &answer).await {
        return sent;
    }
    let body = x
        .request
        .as_ref()
        .ok_or_else(|| GatewayError::Internal("the request body is gone".into()))?;
    let capture = x
        .cache
        .as_ref()
        .filter(|c| c.verdict != crate::cache::Verdict::Bypass)
        .zip(route.cache.as_ref())
        .map(|(_, settings)| super::attempt::KeepAnswer {
            limit: x.backends.cache().max_entry(),
            store_truncated: settings.store_truncated,
        });
    let upstream = Upstream {
        session,
        connector,
        config: &config,
        backends: &x.backends,
        request_id: &x.request_id,
        route,
        endpoint,
        consumer: x.consumer.as_deref(),
        admitted,
        body,
        extra_headers: &x.extra_headers,
        key_holds: &mut x.reserved.key,
        key_budgets: &mut x.reserved.key_budgets,
        capture,
        log: &mut x.attempts,
        trace: x.trace.as_deref_mut(),
        respond: answer.respond.as_ref(),
        moderate: answer.moderate.as_ref(),
    };
    let status = attempts::run(upstream, rule).await;
    answer.record(&mut x.policies);
    let status = status?;
    responses_api::remember(endpoint, x).await;
    if let Some(state) = &x.cache {
        let sent = x.attempts.outcome.sent.take();
        cache::keep(state, &x.backends, &x.attempts, sent, route, body, status).await;
    }
    Ok(status)
}

/// The calls the gateway answers without a model to route by (its own APIs, the calls on
/// a stored response, files and batches); `None` for a model request.
async fn own_answer(
    x: &mut Exchange,
    session: &mut Session,
    connector: &Connector,
    endpoint: Endpoint,
) -> Option<Result<u16, Failure>> {
    Some(match endpoint {
        Endpoint::Quota(call) => quota_api::serve(session, x, call).await,
        Endpoint::Models | Endpoint::Model => models_api::serve(session, x, endpoint).await,
        Endpoint::ResponseById => responses_api::serve(session, x, connector).await,
        Endpoint::Files | Endpoint::Batches => {
            files_api::serve(session, x, connector, endpoint).await
        }
        Endpoint::ChatCompletions
        | Endpoint::Completions
        | Endpoint::Embeddings
        | Endpoint::Moderations
        | Endpoint::Messages
        | Endpoint::CountTokens
        | Endpoint::Responses
        | Endpoint::ImageGenerations
        | Endpoint::ImageEdits
        | Endpoint::ImageVariations
        | Endpoint::Speech
        | Endpoint::Transcriptions
        | Endpoint::Translations
        | Endpoint::Rerank => return None,
    })
}

/// Ingress: the body read within the limits, a JSON body's template expanded, and its
/// top-level fields (or a multipart form's) read.
async fn read_body(
    x: &mut Exchange,
    session: &mut Session,
    config: &Gateway,
    endpoint: Endpoint,
) -> Result<RequestBody, Failure> {
    let bytes = ingress::read_request(session, config, &mut x.body_memory).await?;
    Ok(if endpoint.multipart() {
        RequestBody::parse_form(bytes, ingress::content_type(session))?
    } else {
        let bytes = prompts::expand_template(config, endpoint, bytes, &mut x.policies)?;
        RequestBody::parse(bytes)?
    })
}

/// Money before the attempts: the budgets' reservation, or, for Anthropic token counting
/// (which costs nothing), the gateway's own estimate when no Anthropic target counts;
/// `Some` with the status when that estimate was sent.
async fn budget_stage(
    x: &mut Exchange,
    session: &mut Session,
    config: &Gateway,
    routed: (usize, usize),
    endpoint: Endpoint,
    admitted: &admission::Admitted,
) -> Result<Option<u16>, Failure> {
    let route = &config.routes[routed.0];
    let rule = &route.rules[routed.1];
    let body = x
        .request
        .as_ref()
        .ok_or_else(|| GatewayError::Internal("the request body is gone".into()))?;
    if endpoint == Endpoint::CountTokens {
        if !count_tokens::forwarded(rule) {
            let (id, extra) = (&x.request_id, &x.extra_headers);
            return count_tokens::answer_estimate(session, body.bytes(), id, extra)
                .await
                .map(Some);
        }
        return Ok(None);
    }
    let payer = crate::budget::Payer {
        consumer: x.consumer.as_deref(),
        route: &route.name,
    };
    x.reserved.budgets =
        budgets::admit(config, &x.backends, payer, rule, &body.model, admitted).await?;
    Ok(None)
}

/// What the answer needs from the request policies: the masked values to restore and the
/// output deny rules, and the output moderation.
struct AnswerPolicies {
    respond: Option<ResponsePolicy>,
    moderate: Option<OutputCheck>,
}

impl AnswerPolicies {
    /// What the response policies did, for accounting.
    fn record(&self, actions: &mut Vec<crate::policy::Action>) {
        if let Some(r) = &self.respond {
            actions.extend(r.actions());
        }
        if let Some(m) = &self.moderate {
            actions.extend(m.actions());
        }
    }
}

/// The request policies, after authentication: deny rules and PII masking
/// (`super::policies`), then input moderation and decorators (`super::prompts`), each
/// replacing the body in `x.request` when it changes it.
async fn request_policies(
    x: &mut Exchange,
    session: &Session,
    config: &Arc<Gateway>,
    route: usize,
    endpoint: Endpoint,
) -> Result<AnswerPolicies, Failure> {
    let r = &config.routes[route];
    let respond = match x.request.as_mut() {
        Some(b) => policies::apply(b, r, endpoint, &mut x.policies)?,
        None => None,
    };
    let asked = Asked {
        session,
        config,
        route: r,
        consumer: x.consumer.as_deref(),
    };
    let moderate = OutputCheck::new(&asked, config, route, endpoint);
    let body = x
        .request
        .as_ref()
        .ok_or_else(|| GatewayError::Internal("the request body is gone".into()))?;
    if let Some(decorated) = prompts::apply(&asked, route, endpoint, body, &mut x.policies).await? {
        x.request = Some(decorated);
    }
    Ok(AnswerPolicies { respond, moderate })
}

/// The cache stage: the route's kept answer looked up (never for a moderated answer, which
/// is checked as it is made); `Some` with the status when a kept answer was sent.
async fn cache_stage(
    x: &mut Exchange,
    session: &mut Session,
    config: &Gateway,
    route: &Route,
    endpoint: Endpoint,
    answer: &AnswerPolicies,
) -> Option<Result<u16, Failure>> {
    let body = x.request.as_ref()?;
    if answer.moderate.is_none() {
        let consumer = x.consumer.as_deref();
        let backends = &x.backends;
        x.cache = cache::lookup(session, config, backends, consumer, route, endpoint, body).await;
    }
    let state = x.cache.as_ref()?;
    x.extra_headers
        .push((crate::cache::CACHE_HEADER, state.header()));
    let hit = state.hit.clone()?;
    let reply = cache::Reply {
        config,
        attempts: &mut x.attempts,
        request_id: &x.request_id,
        extra_headers: &x.extra_headers,
        respond: answer.respond.as_ref(),
    };
    let how = cache::Sending {
        stream: body.stream,
        include_usage: state.include_usage,
        client: state.client,
        model: &body.model,
    };
    let sent = cache::answer(session, reply, hit, how).await;
    answer.record(&mut x.policies);
    Some(sent)
}

/// Record how the request ended; answer a failure in the client's protocol unless a response
/// was already under way (then the connection is aborted).
async fn finish(
    x: &mut Exchange,
    session: &mut Session,
    result: Result<u16, Failure>,
) -> Result<()> {
    match result {
        Ok(status) => {
            x.status = Some(status);
            Ok(())
        }
        Err(Failure::Respond(err)) => {
            x.status = Some(err.status());
            if err.closes_connection() {
                // Never read what follows a broken or unread body as another request.
                session.set_keepalive(None);
            }
            let client = x.client();
            let sent = respond::error(session, &err, &x.request_id, client, &x.extra_headers).await;
            x.error = Some(err);
            sent
        }
        Err(Failure::Abort { error, cause, sent }) => {
            x.status = Some(sent.unwrap_or(error.status()));
            x.error = Some(error);
            Err(cause)
        }
    }
}
