//! Attempts: the rule's targets and keys tried in order (`retry::KeyOrder`) within the
//! route's retry policy, each attempt checked against its key's own budget, prepared (model
//! mapping, body rewrite), run (`pipe`), and reported to its key's health and the metrics.

use super::admission::{self, Admitted, Caller};
use super::attempt::{Attempt, Outcome};
use super::exchange::{AttemptLog, Chosen, ExtraHeaders};
use super::exhausted::{exhausted, no_key_error};
use super::pipe::{self, AttemptResult, ClientSide, FailedAttempt};
use super::pipeline::Failure;
use super::retry::{self, Attempter, Budget, GaveUp, KeyOrder, Step};
use super::{budgets, plan};
use crate::body::RequestBody;
use crate::budget::state::BudgetHold;
use crate::error::GatewayError;
use crate::health::{self, AttemptEnd};
use crate::keys::KeyOutcome;
use crate::limits::Hold;
use crate::metrics::METRICS;
use crate::otel::{AttemptRecord, Propagate, RequestTrace};
use crate::protocol::ClientProtocol;
use crate::provider::Provider;
use crate::route::{AllKeysDown, Endpoint, ModelRule, Route, Target};
use crate::runtime::Gateway;
use crate::state::Backends;
use bytes::Bytes;
use pingora_core::connectors::http::Connector;
use pingora_proxy::Session;
use std::sync::Arc;

/// Everything the attempts of one request share.
pub struct Upstream<'a> {
    pub session: &'a mut Session,
    pub connector: &'a Connector,
    pub config: &'a Gateway,
    pub backends: &'a Backends,
    pub request_id: &'a str,
    pub route: &'a Route,
    pub endpoint: Endpoint,
    pub consumer: Option<&'a str>,
    pub admitted: Admitted,
    pub body: &'a RequestBody,
    pub extra_headers: &'a ExtraHeaders,
    /// The current attempt's hold on its key's budget (the delivering one's is settled).
    pub key_holds: &'a mut Vec<Hold>,
    /// The current attempt's reservations under its key's money budgets.
    pub key_budgets: &'a mut Vec<BudgetHold>,
    /// Keep the delivered answer (for the response cache).
    pub capture: Option<super::attempt::KeepAnswer>,
    pub log: &'a mut AttemptLog,
    /// The request's trace (tracing on only): a span per attempt.
    pub trace: Option<&'a mut RequestTrace>,
    /// Restore masked values and check output deny rules in the answer (`None`: off).
    pub respond: Option<&'a crate::policy::restore::ResponsePolicy>,
    /// Moderate the answer's text (`None`: off).
    pub moderate: Option<&'a super::moderation_output::OutputCheck>,
}

/// Try the rule's targets until one answers the client; the status it sent.
pub async fn run<'a>(mut up: Upstream<'a>, rule: &'a ModelRule) -> Result<u16, Failure> {
    let policy = up.route.retry;
    let mut order = rule.attempt_order();
    if up.endpoint == Endpoint::CountTokens {
        order.retain(|t| super::count_tokens::counts(t));
    }
    let try_anyway = policy.all_keys_down == AllKeysDown::TryAnyway;
    if !try_anyway && !order.iter().any(|t| t.provider.keys.any_usable()) {
        return Err(no_key_error(&order).into());
    }
    let keys = KeyOrder::new(&order, policy.per_target, try_anyway);
    let budget = Budget {
        attempts: rule.attempts,
        deadline: policy.deadline,
    };
    match retry::run(keys, budget, &mut up).await {
        Ok(status) => Ok(status),
        Err(GaveUp::Stopped(failure)) => Err(failure),
        Err(GaveUp::Exhausted(failures)) if failures.is_empty() => Err(no_key_error(&order).into()),
        Err(GaveUp::Exhausted(failures)) => Err(exhausted(&failures).into()),
    }
}

impl<'a> Attempter for Upstream<'a> {
    type Choice = (&'a Target, usize);
    type Done = u16;
    type Failed = FailedAttempt;
    type Stop = Failure;

    async fn attempt(
        &mut self,
        (target, key_index): (&'a Target, usize),
        last: Option<&FailedAttempt>,
    ) -> Step<Self> {
        self.log.count += 1;
        let provider = &target.provider;
        if let Some(last) = last {
            count_retry(&self.route.name, last, provider);
        }
        let span = self.trace.as_deref().map(RequestTrace::begin_attempt);
        let model = target
            .upstream_model(&self.body.model)
            .unwrap_or(&self.body.model);
        match self.key_budget(provider, key_index, model).await {
            Ok(Ok(())) => {}
            Ok(Err(over)) => {
                if let (Some(t), Some((span, _))) = (self.trace.as_deref_mut(), span) {
                    t.end_attempt(span, || AttemptRecord {
                        status: None,
                        error: Some("key_budget".into()),
                        ..attempt_record(provider, key_index, model)
                    });
                }
                return Step::Failed(*over);
            }
            Err(e) => return Step::Stop(e.into()),
        }
        let (span, propagate) = span.unzip();
        let attempt = match self.prepare(target, key_index, propagate.unwrap_or_default()) {
            Ok(a) => a,
            Err(e) => return Step::Stop(e.into()),
        };
        let client = ClientSide {
            session: &mut *self.session,
            request_id: self.request_id,
            extra_headers: self.extra_headers,
            forward: &self.route.forward,
            stream: self.body.stream,
            client: ClientProtocol::for_endpoint(self.endpoint),
            max_event_bytes: self.config.client.max_event_bytes,
            cost: self.config.cost_header.then_some(&self.config.prices),
            capture: self.capture,
            policy: self.respond,
            moderate: self.moderate,
        };
        let (result, outcome) = pipe::run(client, self.connector, attempt).await;
        if let (Some(t), Some(span)) = (self.trace.as_deref_mut(), span) {
            let model = self
                .log
                .chosen
                .as_ref()
                .map_or("", |c| c.upstream_model.as_str());
            t.end_attempt(span, || {
                traced(provider, key_index, model, &outcome, &result)
            });
        }
        self.log.upstream_time += outcome.upstream_time();
        self.log.outcome = outcome;
        self.report(provider, key_index, result).await
    }
}

/// An attempt that did not start because its key is over its own rate limit or money
/// budget (counted, and tried as a failed attempt: the next key goes on).
fn over_budget(
    provider: &Arc<Provider>,
    key_index: usize,
    error: GatewayError,
    retry_after: Option<std::time::Duration>,
) -> Box<FailedAttempt> {
    let key_name = provider.keys.get(key_index).map_or("", |k| k.name.as_str());
    METRICS
        .attempt_failures
        .with_label_values(&[provider.name.as_str(), key_name, "key_budget"])
        .inc();
    Box::new(FailedAttempt {
        provider: provider.clone(),
        key_index,
        end: AttemptEnd::Status(429),
        error: Some(error),
        body: Bytes::new(),
        retry_after,
    })
}

impl Upstream<'_> {
    fn caller(&self) -> Caller<'_> {
        Caller {
            session: self.session,
            config: self.config,
            backends: self.backends,
            route: &self.route.name,
            consumer: self.consumer,
        }
    }

    /// Reserve on the key's own budget; a key over it is a failed attempt (try another).
    async fn key_budget(
        &mut self,
        provider: &Arc<Provider>,
        key_index: usize,
        model: &str,
    ) -> Result<Result<(), Box<FailedAttempt>>, GatewayError> {
        let key_name = provider.keys.get(key_index).map_or("", |k| k.name.as_str());
        let budget =
            admission::admit_key(&self.caller(), &self.admitted, &provider.name, key_name).await?;
        match budget {
            Ok(holds) => {
                *self.key_holds = holds;
                let money = budgets::admit_key(
                    self.config,
                    self.backends,
                    provider,
                    key_name,
                    model,
                    &self.admitted,
                )
                .await;
                let over = match money {
                    Ok(Ok(holds)) => {
                        *self.key_budgets = holds;
                        return Ok(Ok(()));
                    }
                    Ok(Err(over)) => over,
                    Err(e) => {
                        let holds = std::mem::take(self.key_holds);
                        admission::release(&self.caller(), holds).await;
                        return Err(e);
                    }
                };
                let holds = std::mem::take(self.key_holds);
                admission::release(&self.caller(), holds).await;
                Ok(Err(over_budget(provider, key_index, over, None)))
            }
            Err(limited) => {
                let error = admission::rate_limited(&limited);
                Ok(Err(over_budget(
                    provider,
                    key_index,
                    error,
                    Some(limited.retry_after),
                )))
            }
        }
    }

    /// The attempt for `target` with key `key_index`: model mapping and body rewrite.
    fn prepare(
        &mut self,
        target: &Target,
        key_index: usize,
        propagate: Propagate,
    ) -> Result<Attempt, GatewayError> {
        let body = self.body;
        let provider = target.provider.clone();
        let upstream_model = target
            .upstream_model(&body.model)
            .unwrap_or(&body.model)
            .to_string();
        self.log.chosen = Some(Chosen {
            provider: provider.clone(),
            key_index,
            upstream_model: upstream_model.clone(),
        });
        let plan = plan::plan_for(body, self.endpoint, &provider, &upstream_model)?;
        Ok(Attempt {
            provider,
            key_index,
            upstream_model,
            stream: body.stream,
            original: body.bytes().clone(),
            plan,
            propagate,
        })
    }

    /// What the attempt's end means for the request, its key's health and the metrics.
    async fn report(
        &mut self,
        provider: &Arc<Provider>,
        key_index: usize,
        result: AttemptResult,
    ) -> Step<Self> {
        let key = provider.keys.get(key_index);
        let key_name = key.map_or("", |k| k.name.as_str());
        match result {
            AttemptResult::Delivered(status) => {
                let end = AttemptEnd::Status(status);
                if let Some(k) = key {
                    let outcome = health::classify(end, None, &provider.health);
                    k.report(outcome, &provider.health.policy);
                }
                Step::Done(status)
            }
            AttemptResult::Aborted {
                status,
                error,
                cause,
            } => {
                if let Some(k) = key {
                    k.report(KeyOutcome::Failure, &provider.health.policy);
                }
                METRICS
                    .attempt_failures
                    .with_label_values(&[provider.name.as_str(), key_name, "broken"])
                    .inc();
                Step::Stop(match status {
                    Some(status) => Failure::Abort {
                        error,
                        cause,
                        sent: Some(status),
                    },
                    // Nothing reached the client (its header was held for the cost).
                    None => Failure::Respond(error),
                })
            }
            // Not the provider's fault: the key's health is left as it was.
            AttemptResult::ClientGone { status, cause } => Step::Stop(Failure::Abort {
                error: GatewayError::ClientClosed,
                cause,
                sent: status,
            }),
            AttemptResult::Failed(failed) => {
                let holds = std::mem::take(self.key_holds);
                admission::release(&self.caller(), holds).await;
                let money = std::mem::take(self.key_budgets);
                budgets::settle(&self.config.budgets, self.backends, &money, None).await;
                if let Some(k) = key {
                    let outcome =
                        health::classify(failed.end, failed.retry_after, &provider.health);
                    k.report(outcome, &provider.health.policy);
                }
                METRICS
                    .attempt_failures
                    .with_label_values(&[
                        provider.name.as_str(),
                        failed.key_name(),
                        failed.end.reason().as_str(),
                    ])
                    .inc();
                Step::Failed(failed)
            }
        }
    }
}

/// A retry after `last` failed, and a fallback when it moves to another provider.
fn count_retry(route: &str, last: &FailedAttempt, next: &Arc<Provider>) {
    let reason = last.end.reason();
    METRICS
        .retries
        .with_label_values(&[route, reason.as_str()])
        .inc();
    if !Arc::ptr_eq(&last.provider, next) {
        METRICS
            .fallbacks
            .with_label_values(&[route, last.provider.name.as_str(), next.name.as_str()])
            .inc();
    }
}

/// An attempt's span: who was asked (names only), its status and why it failed.
fn attempt_record(provider: &Provider, key_index: usize, model: &str) -> AttemptRecord {
    AttemptRecord {
        provider: provider.name.clone(),
        provider_type: crate::otel::genai_provider(&provider.kind).to_string(),
        server_address: provider.upstream.host.clone(),
        server_port: provider.upstream.port,
        key: provider
            .keys
            .get(key_index)
            .map(|k| k.name.clone())
            .unwrap_or_default(),
        model: model.to_string(),
        ..AttemptRecord::default()
    }
}

fn traced(
    provider: &Provider,
    key_index: usize,
    model: &str,
    outcome: &Outcome,
    result: &AttemptResult,
) -> AttemptRecord {
    let error = match result {
        AttemptResult::Delivered(s) => (*s >= 400).then(|| s.to_string()),
        AttemptResult::Failed(f) => Some(match (f.end, &f.error) {
            (AttemptEnd::Status(s), _) => s.to_string(),
            (_, Some(e)) => e.code().to_string(),
            (end, None) => end.reason(),
        }),
        AttemptResult::Aborted { error, .. } => Some(error.code().to_string()),
        AttemptResult::ClientGone { .. } => Some(GatewayError::ClientClosed.code().to_string()),
    };
    AttemptRecord {
        status: outcome.status,
        error,
        usage: outcome.usage.map(|u| (u.input_tokens, u.output_tokens)),
        ..attempt_record(provider, key_index, model)
    }
}
