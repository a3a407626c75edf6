//! The record of one client request: what each stage decided, kept for accounting (the
//! access log, metrics, and settling what admission reserved).
//!
//! Stages are functions that return values (`routing::Routed`, `admission::Admitted`, the
//! attempts' `Delivered`); the pipeline writes what accounting needs here, and nothing else
//! reads it before the request ends.

use super::attempt::{Attempt, Outcome};
use super::pipe::ClientSide;
use crate::body::RequestBody;
use crate::conn::BodyHold;
use crate::error::GatewayError;
use crate::limits::Hold;
use crate::protocol::ClientProtocol;
use crate::provider::Provider;
use crate::quota::QuotaHold;
use crate::route::Endpoint;
use crate::runtime::Gateway;
use crate::state::Backends;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A response header a stage adds (admission's `x-ratelimit-*` and `retry-after`, the
/// cache's verdict). Its name is static text: pingora keeps a name given so as it is, and
/// copies one given as a `HeaderName` into new bytes on every response.
pub type ExtraHeader = (&'static str, http::HeaderValue);

/// The response headers the stages added.
pub type ExtraHeaders = Vec<ExtraHeader>;

/// What a client request did, stage by stage.
pub struct Exchange {
    pub config: Arc<Gateway>,
    pub backends: Arc<Backends>,
    pub request_id: String,
    pub started: Instant,
    /// The route serving the request's host and path, and its endpoint.
    pub route: Option<usize>,
    pub endpoint: Option<Endpoint>,
    /// The parsed request: its model and stream flag, and the body (kept only to estimate
    /// prompt tokens when a provider reports no usage).
    pub request: Option<RequestBody>,
    /// The route's model rule that matched the request's model.
    pub rule: Option<usize>,
    /// The authenticated consumer, if any.
    pub consumer: Option<String>,
    /// Everything reserved for the request, settled when it ends whatever happened.
    pub reserved: Reservations,
    /// Headers for the client's response (`x-ratelimit-*`, `retry-after`).
    pub extra_headers: ExtraHeaders,
    /// The upstream attempts made.
    pub attempts: AttemptLog,
    /// Status sent to the client, if any was.
    pub status: Option<u16>,
    pub error: Option<GatewayError>,
    /// The request body's share of the process-wide body memory budget, given back when
    /// the request ends.
    pub body_memory: BodyHold,
    /// The request's trace, when tracing is on (`tracing:`).
    pub trace: Option<Box<crate::otel::RequestTrace>>,
    /// What the response cache did (routes with `cache:` only).
    pub cache: Option<super::cache::CacheState>,
    /// What the route's prompt and content policies did (`crate::policy`).
    pub policies: Vec<crate::policy::Action>,
}

/// Reservations made at admission and per attempt, replaced by the real usage at the end.
#[derive(Default)]
pub struct Reservations {
    /// Rate-limit reservations taken at admission.
    pub limits: Vec<Hold>,
    /// The delivering attempt's hold on its provider key's budget.
    pub key: Vec<Hold>,
    /// The consumer's quota reservation.
    pub quota: Option<QuotaHold>,
    /// Reservations under the money budgets of the consumer, its team and the route.
    pub budgets: Vec<crate::budget::state::BudgetHold>,
    /// The delivering attempt's reservations under its provider key's money budgets.
    pub key_budgets: Vec<crate::budget::state::BudgetHold>,
}

/// What the upstream attempts did: the last one's choice and measures, and the count.
#[derive(Default)]
pub struct AttemptLog {
    /// Attempts started (a key over its own budget counts: it was tried).
    pub count: u32,
    /// The last attempt's provider, key and upstream model.
    pub chosen: Option<Chosen>,
    /// The last attempt's measures (usage, first byte and token).
    pub outcome: Outcome,
    /// Time spent waiting on providers, summed over attempts.
    pub upstream_time: Duration,
}

/// The provider, key and model of an attempt.
pub struct Chosen {
    pub provider: Arc<Provider>,
    pub key_index: usize,
    pub upstream_model: String,
}

impl AttemptLog {
    /// The one attempt of a call on a provider-kept object (it names no model).
    pub fn chose(&mut self, attempt: &Attempt) {
        self.chosen = Some(Chosen {
            provider: attempt.provider.clone(),
            key_index: attempt.key_index,
            upstream_model: String::new(),
        });
    }

    /// Record that attempt's outcome, unmetered: a stored response's usage was metered when
    /// it was made, and files and batches use no tokens here.
    pub fn unmetered(&mut self, mut outcome: Outcome) {
        outcome.usage = None;
        self.count += 1;
        self.upstream_time += outcome.upstream_time();
        self.outcome = outcome;
    }

    /// Attempts after the first.
    pub fn retries(&self) -> u32 {
        self.count.saturating_sub(1)
    }
}

impl Exchange {
    /// The client's side of a call on a provider-kept object, passed through as it is: no
    /// stream flag of its own, cost header, capture, policy or moderation.
    pub fn plain_client<'a>(
        &'a self,
        session: &'a mut pingora_proxy::Session,
        forward: &'a crate::forward::ForwardHeaders,
        client: ClientProtocol,
    ) -> ClientSide<'a> {
        ClientSide {
            session,
            request_id: &self.request_id,
            extra_headers: &self.extra_headers,
            forward,
            stream: false,
            client,
            max_event_bytes: self.config.client.max_event_bytes,
            cost: None,
            capture: None,
            policy: None,
            moderate: None,
        }
    }

    pub fn new(
        config: Arc<Gateway>,
        backends: Arc<Backends>,
        request_id: String,
        started: Instant,
    ) -> Self {
        Exchange {
            config,
            backends,
            request_id,
            started,
            route: None,
            endpoint: None,
            request: None,
            rule: None,
            consumer: None,
            reserved: Reservations::default(),
            extra_headers: Vec::new(),
            attempts: AttemptLog::default(),
            status: None,
            error: None,
            body_memory: BodyHold::default(),
            trace: None,
            cache: None,
            policies: Vec::new(),
        }
    }

    pub fn route_name(&self) -> Option<&str> {
        self.route
            .and_then(|i| self.config.routes.get(i))
            .map(|r| r.name.as_str())
    }

    pub fn model(&self) -> Option<&str> {
        self.request.as_ref().map(|b| b.model.as_str())
    }

    pub fn stream(&self) -> bool {
        self.request.as_ref().is_some_and(|b| b.stream)
    }

    pub fn provider(&self) -> Option<&Arc<Provider>> {
        self.attempts.chosen.as_ref().map(|c| &c.provider)
    }

    pub fn upstream_model(&self) -> Option<&str> {
        self.attempts
            .chosen
            .as_ref()
            .map(|c| c.upstream_model.as_str())
    }

    /// The `model` label of this request's metrics: the matched rule's pattern as configured,
    /// `other` for a model no rule matched, empty when the request named no model. Never
    /// the client's string: every label value comes from the config.
    pub fn model_label(&self) -> &str {
        let rule = self
            .route
            .zip(self.rule)
            .and_then(|(r, i)| self.config.routes.get(r)?.rules.get(i));
        match (rule, &self.request) {
            (Some(rule), _) => rule.label.as_str(),
            (None, Some(_)) => "other",
            (None, None) => "",
        }
    }

    pub fn key_name(&self) -> Option<&str> {
        let c = self.attempts.chosen.as_ref()?;
        c.provider.keys.get(c.key_index).map(|k| k.name.as_str())
    }

    /// The protocol the client speaks (errors in its shape).
    pub fn client(&self) -> ClientProtocol {
        self.endpoint
            .map_or(ClientProtocol::OpenAi, ClientProtocol::for_endpoint)
    }
}
