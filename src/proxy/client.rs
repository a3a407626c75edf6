//! The client-facing side of a request: route it, read and parse its body, choose provider
//! and key, run each attempt (`pipe`) until one answers, and remember what happened for the
//! access log and metrics.

use super::attempt::{Attempt, Outcome};
use super::exhausted::{exhausted, no_key_error};
use super::pipe::{self, AttemptResult, ClientSide, FailedAttempt};
use super::plan;
use super::respond;
use crate::body::RequestBody;
use crate::config::client::ClientSettings;
use crate::config::Gateway;
use crate::conn::{BodyHold, BUSY_RETRY_AFTER};
use crate::error::GatewayError;
use crate::health::{self, AttemptEnd};
use crate::keys::KeyOutcome;
use crate::limits::Hold;
use crate::metrics::METRICS;
use crate::protocol::ClientProtocol;
use crate::provider::Provider;
use crate::quota::QuotaHold;
use crate::route::{host_without_port, Endpoint};
use crate::route::{AllKeysDown, RouteAuth, Target};
use crate::store::Backends;
use bytes::{Bytes, BytesMut};
use pingora_core::connectors::http::Connector;
use pingora_error::{Error, Result};
use pingora_proxy::Session;
use std::sync::Arc;
use std::time::Instant;

/// What the access log and metrics need to know about a client request.
pub struct ClientRequest {
    pub config: Arc<Gateway>,
    pub route: Option<usize>,
    pub endpoint: Option<Endpoint>,
    pub model: Option<String>,
    /// The index of the route's model rule that matched `model`.
    pub rule: Option<usize>,
    pub stream: bool,
    pub provider: Option<Arc<Provider>>,
    pub key_index: Option<usize>,
    pub upstream_model: Option<String>,
    /// Status sent to the client (0 = none sent).
    pub status: u16,
    pub outcome: Outcome,
    pub error: Option<GatewayError>,
    /// Kept only to estimate prompt tokens when a provider reports no usage.
    pub body: Option<RequestBody>,
    /// Attempts after the first.
    pub retries: u32,
    /// The authenticated consumer, if any.
    pub consumer: Option<String>,
    /// Rate-limit reservations to reconcile when the request ends.
    pub holds: Vec<Hold>,
    /// Headers for the client's response (`x-ratelimit-*`, `retry-after`).
    pub extra_headers: Vec<(http::HeaderName, String)>,
    /// Time spent waiting on providers, summed over attempts.
    pub upstream_time: std::time::Duration,
    pub backends: Arc<Backends>,
    /// The client's address (through trusted proxies).
    pub client_ip: Option<std::net::IpAddr>,
    /// The delivering attempt's hold on its provider key's budget.
    pub key_holds: Vec<Hold>,
    /// The consumer's quota reservation, charged when the request ends.
    pub quota_hold: Option<QuotaHold>,
    /// The request body's share of the process-wide body memory budget, given back when
    /// the request ends.
    pub body_memory: BodyHold,
}

impl ClientRequest {
    pub fn new(config: Arc<Gateway>, backends: Arc<Backends>) -> Self {
        ClientRequest {
            config,
            route: None,
            endpoint: None,
            model: None,
            rule: None,
            stream: false,
            provider: None,
            key_index: None,
            upstream_model: None,
            status: 0,
            outcome: Outcome::default(),
            error: None,
            body: None,
            retries: 0,
            consumer: None,
            holds: Vec::new(),
            extra_headers: Vec::new(),
            upstream_time: std::time::Duration::ZERO,
            backends,
            client_ip: None,
            key_holds: Vec::new(),
            quota_hold: None,
            body_memory: BodyHold::default(),
        }
    }

    pub fn route_name(&self) -> Option<&str> {
        self.route
            .and_then(|i| self.config.routes.get(i))
            .map(|r| r.name.as_str())
    }

    /// The `model` label of this request's metrics: the matched rule's pattern as configured,
    /// `other` for a model no rule matched, empty when the request named no model. Never
    /// the client's string: every label value comes from the config.
    pub fn model_label(&self) -> &str {
        let rule = self
            .route
            .zip(self.rule)
            .and_then(|(r, i)| self.config.routes.get(r)?.rules.get(i));
        match (rule, &self.model) {
            (Some(rule), _) => rule.label.as_str(),
            (None, Some(_)) => "other",
            (None, None) => "",
        }
    }

    pub fn key_name(&self) -> Option<&str> {
        let p = self.provider.as_ref()?;
        p.keys.get(self.key_index?).map(|k| k.name.as_str())
    }

    /// Serve the request; `Err` only when the client connection must be aborted.
    pub async fn serve(
        &mut self,
        session: &mut Session,
        request_id: &str,
        connector: &Connector,
    ) -> Result<()> {
        match self.proxy(session, request_id, connector).await {
            Ok(()) => Ok(()),
            Err(Failure::Respond(err)) => {
                self.status = err.status();
                if err.closes_connection() {
                    // Never read what follows a broken or unread body as another request.
                    session.set_keepalive(None);
                }
                let client = self
                    .endpoint
                    .map_or(ClientProtocol::OpenAi, ClientProtocol::for_endpoint);
                let result =
                    respond::error(session, &err, request_id, client, &self.extra_headers).await;
                self.error = Some(err);
                result
            }
            Err(Failure::Abort(err, e)) => {
                self.error = Some(err);
                Err(e)
            }
        }
    }

    async fn proxy(
        &mut self,
        session: &mut Session,
        request_id: &str,
        connector: &Connector,
    ) -> Result<(), Failure> {
        let endpoint = self.route(session)?;
        if let Endpoint::Quota(call) = endpoint {
            return self.quota_api(session, call, request_id).await;
        }
        if matches!(endpoint, Endpoint::Models | Endpoint::Model) {
            return self.models_api(session, endpoint, request_id).await;
        }
        if session.req_header().method != http::Method::POST {
            return Err(Failure::Respond(GatewayError::MethodNotAllowed(
                session.req_header().method.to_string(),
            )));
        }
        let limits = BodyLimits {
            max: self.config.max_body_bytes,
            client: &self.config.client,
        };
        let bytes = read_body(session, limits, &mut self.body_memory).await?;
        let body = RequestBody::parse(bytes)?;
        self.model = Some(body.model.clone());
        self.stream = body.stream;

        let config = self.config.clone();
        let (route_index, rule_index) = self
            .rule_for(session, &config, &body.model)
            .ok_or_else(|| GatewayError::ModelNotFound(body.model.clone()))?;
        self.route = Some(route_index);
        self.rule = Some(rule_index);
        let route = &config.routes[route_index];
        let rule = &route.rules[rule_index];
        self.authenticate(session, &config, &route.auth)?;
        self.client_ip = super::admission::client_ip(session, &config.trusted_proxies);
        let demand = super::admission::demand(&body);
        self.admit_limits(session, &config, &route.name, demand)
            .await?;
        self.admit_quota(&config, demand).await?;
        let order = rule.attempt_order();
        let policy = route.retry;
        let try_anyway = policy.all_keys_down == AllKeysDown::TryAnyway;
        if !try_anyway && !order.iter().any(|t| t.provider.keys.any_usable()) {
            return Err(no_key_error(&order).into());
        }

        let started = Instant::now();
        let mut tried: Vec<(usize, usize)> = Vec::new();
        let mut failures: Vec<FailedAttempt> = Vec::new();
        let mut target = 0;
        while (tried.len() as u32) < rule.attempts
            && (tried.is_empty() || started.elapsed() < policy.deadline)
        {
            let Some((t, key_index)) =
                next_choice(&order, &tried, &mut target, policy.per_target, try_anyway)
            else {
                break;
            };
            if let Some(last) = failures.last() {
                let reason = last.end.reason();
                METRICS
                    .retries
                    .with_label_values(&[route.name.as_str(), reason.as_str()])
                    .inc();
                if !Arc::ptr_eq(&last.provider, &order[t].provider) {
                    METRICS
                        .fallbacks
                        .with_label_values(&[
                            route.name.as_str(),
                            last.provider.name.as_str(),
                            order[t].provider.name.as_str(),
                        ])
                        .inc();
                }
            }
            tried.push((t, key_index));
            let key_name = order[t]
                .provider
                .keys
                .get(key_index)
                .map(|k| k.name.as_str())
                .unwrap_or("");
            let budget = self
                .admit_key(
                    session,
                    &config,
                    &route.name,
                    &order[t].provider.name,
                    key_name,
                    demand,
                )
                .await?;
            if let Err(limited) = budget {
                METRICS
                    .attempt_failures
                    .with_label_values(&[order[t].provider.name.as_str(), key_name, "key_budget"])
                    .inc();
                failures.push(FailedAttempt {
                    provider: order[t].provider.clone(),
                    key_index,
                    end: AttemptEnd::Status(429),
                    error: Some(super::admission::rate_limited(&limited)),
                    body: Bytes::new(),
                    retry_after: Some(limited.retry_after),
                });
                continue;
            }
            let attempt = self.prepare(&body, order[t], key_index, endpoint)?;
            let client = ClientSide {
                session: &mut *session,
                request_id,
                extra_headers: &self.extra_headers,
                forward: &route.forward,
                stream: body.stream,
                client: ClientProtocol::for_endpoint(endpoint),
                max_event_bytes: config.client.max_event_bytes,
            };
            let (result, outcome) = pipe::run(client, connector, attempt).await;
            self.upstream_time += outcome.upstream_time();
            self.outcome = outcome;
            let provider = &order[t].provider;
            let key = provider.keys.get(key_index);
            match result {
                AttemptResult::Delivered(status) => {
                    let end = AttemptEnd::Status(status);
                    if let Some(k) = key {
                        k.report(
                            health::classify(end, None, &provider.health),
                            &provider.health.policy,
                        );
                    }
                    self.status = status;
                    self.retries = tried.len() as u32 - 1;
                    self.body = Some(body);
                    return Ok(());
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
                        .with_label_values(&[
                            provider.name.as_str(),
                            key.map(|k| k.name.as_str()).unwrap_or(""),
                            "broken",
                        ])
                        .inc();
                    self.status = status;
                    self.retries = tried.len() as u32 - 1;
                    self.body = Some(body);
                    return Err(Failure::Abort(error, cause));
                }
                // Not the provider's fault: the key's health is left as it was.
                AttemptResult::ClientGone { status, cause } => {
                    self.status = status.unwrap_or(GatewayError::ClientClosed.status());
                    self.retries = tried.len() as u32 - 1;
                    self.body = Some(body);
                    return Err(Failure::Abort(GatewayError::ClientClosed, cause));
                }
                AttemptResult::Failed(failed) => {
                    self.release_key(&config).await;
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
                    failures.push(failed);
                }
            }
        }
        self.retries = (tried.len() as u32).saturating_sub(1);
        self.body = Some(body);
        Err(match failures.is_empty() {
            true => no_key_error(&order),
            false => exhausted(&failures),
        }
        .into())
    }

    /// The attempt for `target` with key `key_index`: model mapping and body rewrite.
    fn prepare(
        &mut self,
        body: &RequestBody,
        target: &Target,
        key_index: usize,
        endpoint: Endpoint,
    ) -> Result<Attempt, GatewayError> {
        let provider = target.provider.clone();
        let upstream_model = target
            .upstream_model(&body.model)
            .unwrap_or(&body.model)
            .to_string();
        self.provider = Some(provider.clone());
        self.key_index = Some(key_index);
        self.upstream_model = Some(upstream_model.clone());
        let plan = plan::plan(body, endpoint, provider.protocol, &upstream_model)?;
        Ok(Attempt {
            provider,
            key_index,
            upstream_model,
            stream: body.stream,
            original: body.bytes.clone(),
            plan,
        })
    }

    /// Find the first route for the request's host and path, and its endpoint.
    fn route(&mut self, session: &Session) -> Result<Endpoint, GatewayError> {
        let (host, path) = host_and_path(session);
        for (i, route) in self.config.routes.iter().enumerate() {
            if let Some(endpoint) = route.match_request(host, path) {
                self.route = Some(i);
                self.endpoint = Some(endpoint);
                return Ok(endpoint);
            }
        }
        Err(GatewayError::RouteNotFound(path.to_string()))
    }

    /// The first route serving this host and path that has a rule for `model`, and the
    /// index of that rule.
    fn rule_for(&self, session: &Session, config: &Gateway, model: &str) -> Option<(usize, usize)> {
        let (host, path) = host_and_path(session);
        let first = self.route?;
        config
            .routes
            .iter()
            .enumerate()
            .skip(first)
            .filter(|(_, r)| r.match_request(host, path).is_some())
            .find_map(|(i, r)| r.rule_index(model).map(|rule| (i, rule)))
    }

    /// Who is calling, as the route requires.
    fn authenticate(
        &mut self,
        session: &Session,
        config: &Gateway,
        auth: &RouteAuth,
    ) -> Result<(), GatewayError> {
        let req = session.req_header();
        match config
            .consumers
            .identify(&req.headers, req.uri.query(), auth.required, &auth.allow)
        {
            Ok(consumer) => {
                self.consumer = consumer.map(str::to_string);
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }
}

pub(super) fn host_and_path(session: &Session) -> (&str, &str) {
    let req = session.req_header();
    let host = req
        .uri
        .host()
        .or_else(|| {
            req.headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
        })
        .map(host_without_port)
        .unwrap_or("");
    (host, req.uri.path())
}

/// The next (target, key) to try: more keys of the current target up to `per_target` (by
/// default every usable key), then the next target; keys out of rotation only with
/// `try_anyway`.
fn next_choice(
    order: &[&Target],
    tried: &[(usize, usize)],
    target: &mut usize,
    per_target: u32,
    try_anyway: bool,
) -> Option<(usize, usize)> {
    while *target < order.len() {
        let t = *target;
        let used: Vec<usize> = tried
            .iter()
            .filter(|(ti, _)| *ti == t)
            .map(|(_, k)| *k)
            .collect();
        if (used.len() as u32) < per_target {
            let keys = &order[t].provider.keys;
            let pick = keys.pick(&used).or_else(|| {
                if try_anyway {
                    keys.pick_any(&used)
                } else {
                    None
                }
            });
            if let Some(k) = pick {
                return Some((t, k));
            }
        }
        *target += 1;
    }
    None
}

/// How a request failed: answer with an error, or abort a response already under way.
pub(super) enum Failure {
    Respond(GatewayError),
    Abort(GatewayError, Box<Error>),
}

impl From<GatewayError> for Failure {
    fn from(e: GatewayError) -> Self {
        Failure::Respond(e)
    }
}

/// What bounds the reading of one request body.
#[derive(Clone, Copy)]
pub(super) struct BodyLimits<'a> {
    /// Largest body accepted.
    pub max: usize,
    /// Deadline and the process-wide memory budget.
    pub client: &'a ClientSettings,
}

/// Answer `Expect: 100-continue` (HTTP/1.1 only, and only when a body is still to come);
/// refuse any other expectation with 417.
async fn expect_continue(session: &mut Session) -> Result<(), GatewayError> {
    let header = session.req_header();
    let Some(expect) = header.headers.get(http::header::EXPECT) else {
        return Ok(());
    };
    if !expect.as_bytes().eq_ignore_ascii_case(b"100-continue") {
        let shown = String::from_utf8_lossy(&expect.as_bytes()[..expect.len().min(64)]);
        return Err(GatewayError::ExpectationFailed(shown.into_owned()));
    }
    if header.version != http::Version::HTTP_11 || session.is_body_done() {
        return Ok(());
    }
    session
        .write_continue_response()
        .await
        .map_err(|e| GatewayError::BodyRead(e.etype().as_str().to_string()))
}

/// Read the whole request body, refusing more than `limits.max` bytes, a body that takes
/// longer than `client.body_timeout`, and one that would take the process over its body
/// memory budget (`hold` keeps this request's share). Memory grows with what has arrived,
/// never with what the client declared.
pub(super) async fn read_body(
    session: &mut Session,
    limits: BodyLimits<'_>,
    hold: &mut BodyHold,
) -> Result<Bytes, GatewayError> {
    let limit = limits.max;
    let declared = session
        .req_header()
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(GatewayError::BodyTooLarge(limit));
    }
    expect_continue(session).await?;
    let timeout = limits.client.body_timeout;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut buf = BytesMut::new();
    loop {
        let read = tokio::time::timeout_at(deadline, session.read_request_body()).await;
        match read {
            Err(_) => return Err(GatewayError::BodyTimeout(timeout.as_secs())),
            Ok(Ok(Some(chunk))) => {
                if buf.len() + chunk.len() > limit {
                    return Err(GatewayError::BodyTooLarge(limit));
                }
                hold.grow(chunk.len(), limits.client.max_body_memory_bytes)
                    .map_err(|_| GatewayError::ServerBusy(BUSY_RETRY_AFTER.as_secs()))?;
                if buf.is_empty() && declared == Some(chunk.len()) {
                    // The whole body in one read: keep it without a copy.
                    return Ok(chunk);
                }
                buf.extend_from_slice(&chunk);
            }
            Ok(Ok(None)) => break,
            Ok(Err(e)) => return Err(GatewayError::BodyRead(e.etype().as_str().to_string())),
        }
    }
    Ok(buf.freeze())
}
