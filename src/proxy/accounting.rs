//! Accounting, when a request ends: its usage (reported, or estimated when the provider
//! reported none, clamped), the metrics and access-log line, and the settling of what
//! admission and the delivering attempt reserved.

use super::exchange::Exchange;
use crate::access_log::{AccessLog, Entry};
use crate::analytics::{Analytics, Event};
use crate::limits::Used;
use crate::metrics::METRICS;
use crate::usage::Usage;
use pingora_proxy::Session;
use std::time::Instant;

/// Account for a finished request.
pub async fn account(
    log: &AccessLog,
    analytics: &Analytics,
    session: &Session,
    req: &mut Exchange,
) {
    let reported = final_usage(req);
    let usage = reported.unwrap_or_default();
    let cost = priced(req, &usage);
    record(log, session, req, &usage, cost);
    if analytics.enabled() {
        let mut e = event(session, req, &usage);
        if let Some(Some(c)) = cost {
            // A hit paid no provider: what its answer cost is what it saved.
            match e.cache_hit() {
                true => e.saved = Some((c.pico, c.currency)),
                false => e.cost = Some((c.pico, c.currency)),
            }
        }
        analytics.record(e);
    }
    // A span for what was (or was to be) proxied; not for the gateway's own answers.
    let own_answer = req
        .endpoint
        .is_some_and(|e| crate::otel::operation(e.as_str()).is_none());
    if let Some(trace) = req.trace.take().filter(|_| !own_answer) {
        trace.finish(|| traced(session, req, reported.as_ref()));
    }
    let hit = req.cache.as_ref().filter(|c| c.hit.is_some());
    if let Some(h) = hit {
        saved(req, &usage, cost.flatten());
        if !h.charge {
            // A hit the route does not charge: every token and money reservation is given
            // back (the request still counts against requests-per-window limits: it was made).
            settle(req, Used::default(), None).await;
            return;
        }
    }
    settle(
        req,
        Used {
            input: usage.input_tokens,
            output: usage.output_tokens,
        },
        cost.flatten(),
    )
    .await;
}

/// What the request cost: `None` when no provider answered or nothing was used;
/// `Some(None)` when it used tokens the price book has no price for. What the client was
/// told (`x-tollgate-cost`), when it was.
fn priced(req: &Exchange, usage: &Usage) -> Option<Option<crate::pricing::Cost>> {
    if let Some(told) = req.attempts.outcome.cost {
        return Some(told);
    }
    let provider = req.provider()?;
    let model = req.upstream_model().or(req.model())?;
    let (name, kind) = (&provider.name, provider.kind.as_str());
    req.config
        .prices
        .priced(name, kind, model, usage, crate::pricing::now())
}

/// What a cache hit saved: its tokens and what they cost when the answer was made.
fn saved(req: &Exchange, usage: &Usage, cost: Option<crate::pricing::Cost>) {
    let route = req.route_name().unwrap_or("");
    METRICS
        .cache_saved_tokens
        .with_label_values(&[route])
        .inc_by(usage.input_tokens.saturating_add(usage.output_tokens));
    if let Some(c) = cost {
        METRICS
            .cache_saved_cost
            .with_label_values(&[route, c.currency.as_str()])
            .inc_by(c.pico as f64 / crate::pricing::PICO as f64);
    }
}

/// Replace reservations with the real usage, and charge the consumer's quota and the
/// money budgets (the request's, and its delivering key's) with its cost.
async fn settle(req: &Exchange, used: Used, cost: Option<crate::pricing::Cost>) {
    let stores = req.backends.stores();
    for holds in [&req.reserved.limits, &req.reserved.key] {
        if !holds.is_empty() {
            req.config.limits.reconcile(stores, holds, used).await;
        }
    }
    if let Some(hold) = &req.reserved.quota {
        req.backends
            .quotas()
            .charge(hold, used.input.saturating_add(used.output))
            .await;
    }
    for holds in [&req.reserved.budgets, &req.reserved.key_budgets] {
        if !holds.is_empty() {
            super::budgets::settle(&req.config.budgets, &req.backends, holds, cost).await;
        }
    }
}

fn ms(from: Instant, to: Option<Instant>) -> Option<f64> {
    to.map(|t| t.saturating_duration_since(from).as_secs_f64() * 1000.0)
}

/// Usage as reported, or estimated from the request and the delivered text when the
/// provider reported none; every count clamped (`usage::billable`).
pub fn final_usage(req: &Exchange) -> Option<Usage> {
    let usage = req.attempts.outcome.usage?;
    let provider = req.provider().map_or("", |p| p.name.as_str());
    let request = req.request.as_ref().map(|b| &b.bytes()[..]);
    Some(crate::usage::billable(usage, request, provider))
}

/// The request as the usage rollups see it (names and numbers only).
fn event(session: &Session, req: &Exchange, usage: &Usage) -> Event {
    let end = Instant::now();
    let status = req
        .status
        .or_else(|| session.response_written().map(|h| h.status.as_u16()))
        .unwrap_or(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Event {
        time_ms: u64::try_from(now.as_millis()).unwrap_or(u64::MAX),
        request_id: req.request_id.to_string(),
        route: req.route_name().unwrap_or_default().to_string(),
        provider: req.provider().map(|p| p.name.clone()).unwrap_or_default(),
        model: req.model().unwrap_or_default().to_string(),
        consumer: req.consumer.as_deref().unwrap_or_default().to_string(),
        endpoint: req
            .endpoint
            .map(|e| e.as_str())
            .unwrap_or_default()
            .to_string(),
        key: req.key_name().unwrap_or_default().to_string(),
        attempts: req.attempts.count,
        upstream_model: req.upstream_model().unwrap_or_default().to_string(),
        stream: req.stream(),
        status,
        input_tokens: usage.input_tokens,
        cached_tokens: usage.cached_input_tokens,
        output_tokens: usage.output_tokens,
        reasoning_tokens: usage.reasoning_tokens,
        usage_estimated: usage.estimated,
        ttft_ms: ms(req.started, req.attempts.outcome.first_token),
        duration_ms: end.duration_since(req.started).as_secs_f64() * 1000.0,
        error: req.error.as_ref().map(|e| e.code()),
        cost: None,
        cache: req.cache.as_ref().map(|c| c.verdict.as_str()),
        saved: None,
        policies: req
            .policies
            .iter()
            .map(crate::policy::Action::label)
            .collect(),
        units: usage.units,
    }
}

/// The request as its span shows it (names and numbers only).
fn traced(session: &Session, req: &Exchange, usage: Option<&Usage>) -> crate::otel::RequestRecord {
    let status = req
        .status
        .or_else(|| session.response_written().map(|h| h.status.as_u16()))
        .unwrap_or(0);
    let endpoint = req.endpoint.map(|e| e.as_str());
    crate::otel::RequestRecord {
        operation: endpoint.and_then(crate::otel::operation),
        method: session.req_header().method.as_str().to_string(),
        request_model: req.model().map(str::to_string),
        response_model: req.upstream_model().map(str::to_string),
        provider: req.provider().map(|p| p.name.clone()),
        provider_type: req
            .provider()
            .map(|p| crate::otel::genai_provider(&p.kind).to_string()),
        route: req.route_name().map(str::to_string),
        consumer: req.consumer.clone(),
        key: req.key_name().map(str::to_string),
        endpoint,
        request_id: req.request_id.clone(),
        stream: req.stream(),
        status,
        error: req.error.as_ref().map(|e| e.code()),
        usage: usage.map(|u| (u.input_tokens, u.output_tokens)),
        usage_estimated: usage.is_some_and(|u| u.estimated),
        attempts: req.attempts.count,
    }
}

/// The request's metrics and access-log line.
pub fn record(
    log: &AccessLog,
    session: &Session,
    req: &Exchange,
    usage: &Usage,
    cost: Option<Option<crate::pricing::Cost>>,
) {
    let end = Instant::now();
    let status = req
        .status
        .or_else(|| session.response_written().map(|h| h.status.as_u16()))
        .unwrap_or(0);
    // A cache hit paid no provider: its cost is counted as saved (`saved`), not spent.
    let hit = req.cache.as_ref().is_some_and(|c| c.hit.is_some());
    count(req, usage, status, end, if hit { None } else { cost });
    let time = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
    let header = session.req_header();
    let total = end.duration_since(req.started);
    log.write(&Entry {
        time,
        request_id: &req.request_id,
        method: header.method.as_str(),
        path: header.uri.path(),
        route: req.route_name(),
        consumer: req.consumer.as_deref(),
        endpoint: req.endpoint.map(|e| e.as_str()),
        provider: req.provider().map(|p| p.name.as_str()),
        key: req.key_name(),
        model: req.model(),
        upstream_model: req.upstream_model(),
        stream: req.stream(),
        status,
        input_tokens: usage.input_tokens,
        output_tokens: usage.output_tokens,
        cached_tokens: usage.cached_input_tokens,
        reasoning_tokens: usage.reasoning_tokens,
        usage_estimated: usage.estimated,
        images: usage.units.images,
        audio_ms: usage.units.audio_ms,
        characters: usage.units.characters,
        search_units: usage.units.search_units,
        ttfb_ms: ms(req.started, req.attempts.outcome.first_byte),
        ttft_ms: ms(req.started, req.attempts.outcome.first_token),
        duration_ms: total.as_secs_f64() * 1000.0,
        overhead_ms: total
            .saturating_sub(req.attempts.upstream_time)
            .as_secs_f64()
            * 1000.0,
        retries: req.attempts.retries(),
        error: req.error.as_ref().map(|e| e.code()),
        cost: cost.flatten().map(|c| c.decimal()),
        currency: cost.flatten().map(|c| c.currency.as_str()),
        price_missing: matches!(cost, Some(None)),
        cache: req.cache.as_ref().map(|c| c.verdict.as_str()),
        policies: req
            .policies
            .iter()
            .map(crate::policy::Action::label)
            .collect(),
    });
}

/// The request's Prometheus series. Labels come from the config only (see
/// `crate::metrics`): route and provider names, the matched rule's pattern, consumers
/// named in the config.
fn count(
    req: &Exchange,
    usage: &Usage,
    status: u16,
    end: Instant,
    cost: Option<Option<crate::pricing::Cost>>,
) {
    let route = req.route_name().unwrap_or("");
    for a in &req.policies {
        METRICS
            .policy_actions
            .with_label_values(&[route, a.policy, a.action])
            .inc();
    }
    let provider = req.provider().map(|p| p.name.as_str());
    let model_label = req.model_label();
    let series = req.consumer.as_deref().and_then(|c| {
        let known = req.config.consumer_series.as_ref()?;
        Some(if known.contains(c) { c } else { "other" })
    });
    if let Some(consumer) = series {
        METRICS
            .consumer_input_tokens
            .with_label_values(&[consumer])
            .inc_by(usage.input_tokens);
        METRICS
            .consumer_output_tokens
            .with_label_values(&[consumer])
            .inc_by(usage.output_tokens);
    }
    let Some(provider) = provider else {
        let status_label = status.to_string();
        METRICS
            .requests
            .with_label_values(&[route, "", model_label, status_label.as_str()])
            .inc();
        return;
    };
    // Cached handles: no label hashing or registry lock per request.
    let s = crate::metrics::request_series(route, provider, model_label);
    s.request(status);
    if let Some(cost) = cost {
        s.cost(cost.map(|c| {
            (
                c.pico as f64 / crate::pricing::PICO as f64,
                c.currency.as_str(),
            )
        }));
    }
    s.tokens(
        usage.input_tokens,
        usage.output_tokens,
        usage.cached_input_tokens,
        usage.reasoning_tokens,
    );
    units(route, provider, model_label, &usage.units);
    let total = end.duration_since(req.started);
    s.duration.observe(total.as_secs_f64());
    s.overhead.observe(
        total
            .saturating_sub(req.attempts.upstream_time)
            .as_secs_f64(),
    );
    if let Some(t) = req.attempts.outcome.first_token {
        s.ttft
            .observe(t.saturating_duration_since(req.started).as_secs_f64());
    }
}

/// A media answer's units (nothing for text answers: no series is touched).
fn units(route: &str, provider: &str, model: &str, u: &crate::usage::Units) {
    if u.is_zero() {
        return;
    }
    for (unit, n) in [
        ("images", u.images),
        ("audio_ms", u.audio_ms),
        ("characters", u.characters),
        ("search_units", u.search_units),
    ] {
        if n > 0 {
            METRICS
                .media_units
                .with_label_values(&[route, provider, model, unit])
                .inc_by(n);
        }
    }
}
