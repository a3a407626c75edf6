//! Prometheus metrics, registered once in a process-wide registry and served by `admin`.
//!
//! Every label value comes from the config, never from the client, so the number of series
//! is bounded by the config whatever clients send:
//! - `route`, `provider`, `key`, `rule`, `consumer`: names written in the config (consumers
//!   beyond `metrics.max_consumer_series` share `consumer="other"`);
//! - `model`: the pattern of the route rule that matched the request, as written in the config
//!   (`gpt-4o`, `mock-*`, `~regex`), not the model name the client sent; `model="other"` for
//!   a request whose model no rule matched (404), and empty for one that named no model;
//! - `status`, `reason`, `state`, `outcome`, `op`, `what`: fixed sets chosen by the gateway
//!   (HTTP status codes are three digits).
//!
//! A request that fails before it is routed (unknown path, bad body, missing credential) is
//! counted with those same bounded labels. No label ever holds a key or a client credential,
//! and the client's path, headers or model string never become one.

use once_cell::sync::Lazy;
use prometheus::{
    register_histogram_vec_with_registry, register_int_counter_vec_with_registry,
    register_int_counter_with_registry, register_int_gauge_vec_with_registry,
    register_int_gauge_with_registry, Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Registry,
};

pub static REGISTRY: Lazy<Registry> = Lazy::new(|| {
    let registry = Registry::new();
    // CPU, RSS, open file descriptors (`process_*`).
    if let Err(e) = registry.register(Box::new(
        prometheus::process_collector::ProcessCollector::for_self(),
    )) {
        log::warn!("process metrics unavailable: {e}");
    }
    registry
});

const LATENCY_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

pub struct Metrics {
    pub requests: IntCounterVec,
    pub input_tokens: IntCounterVec,
    pub output_tokens: IntCounterVec,
    pub cached_tokens: IntCounterVec,
    pub reasoning_tokens: IntCounterVec,
    pub duration: HistogramVec,
    pub ttft: HistogramVec,
    /// Time inside the gateway: total duration minus time waiting on providers.
    pub overhead: HistogramVec,
    pub active_streams: IntGauge,
    pub access_log_dropped: IntCounter,
    /// Per consumer (names come only from the config, so the label set is bounded by it).
    pub consumer_input_tokens: IntCounterVec,
    pub consumer_output_tokens: IntCounterVec,
    /// 1 when a key is in rotation, 0 otherwise; set from key state at scrape time.
    pub key_healthy: IntGaugeVec,
    pub attempt_failures: IntCounterVec,
    pub retries: IntCounterVec,
    pub fallbacks: IntCounterVec,
    pub health_checks: IntCounterVec,
    pub ratelimit_rejections: IntCounterVec,
    /// Failed calls to the shared Redis store, by operation.
    pub redis_errors: IntCounterVec,
    /// Requests admitted without the shared store because it failed (fail-open).
    pub store_fail_open: IntCounterVec,
    pub quota_rejections: IntCounterVec,
    /// Response cache lookups by route and result (`hit-exact`, `hit-semantic`, `miss`,
    /// `refresh`, `bypass`).
    pub cache_lookups: IntCounterVec,
    /// Prompt and content policy actions by route, policy and action (`crate::policy`).
    pub policy_actions: IntCounterVec,
    /// Tokens served from the response cache instead of a provider, by route.
    pub cache_saved_tokens: IntCounterVec,
    /// What media answers used that is not tokens, by route, provider, model (the rule's
    /// pattern) and unit: `images`, `audio_seconds` (in milliseconds: `audio_ms`),
    /// `characters`, `search_units`.
    pub media_units: IntCounterVec,
    /// Money not spent thanks to the response cache, by route and currency.
    pub cache_saved_cost: prometheus::CounterVec,
    /// Answers kept in the response cache, by route.
    pub cache_stored: IntCounterVec,
    /// Reads and writes of the shared cache and semantic-cache embedding requests that failed
    /// (each a miss).
    pub cache_errors: IntCounter,
    /// Bytes of answers in this gateway's response cache memory (as last counted).
    pub cache_bytes: IntGauge,
    /// Requests (or attempts, for key budgets) refused by a money budget, by budget name.
    pub budget_rejections: IntCounterVec,
    /// Money charged to budgets, by budget name and currency.
    pub budget_spent: prometheus::CounterVec,
    pub quota_charged_tokens: IntCounterVec,
    /// Balance of consumers with a quota (names from the config: bounded).
    pub quota_remaining: IntGaugeVec,
    /// Requests left out of the usage rollups (queue full or the store failing).
    pub analytics_dropped: IntCounter,
    /// Spans not exported (`reason`: `queue_full`, `export_failed`).
    pub traces_dropped: IntCounterVec,
    /// Money spent, by route, provider, model and currency (`pricing`).
    pub cost: prometheus::CounterVec,
    /// Requests with usage but no price (`pricing`).
    pub unpriced: IntCounterVec,
    /// 1 while the store of the management API's layer answers (always 1 for local files).
    pub config_store_up: IntGauge,
    /// The API layer revision this instance runs.
    pub config_api_revision: IntGauge,
}

#[expect(
    clippy::expect_used,
    reason = "static metric definitions; a failure is a programming error caught by any test"
)]
pub static METRICS: Lazy<Metrics> = Lazy::new(|| {
    let r = &*REGISTRY;
    let labels = &["route", "provider", "model"];
    Metrics {
        requests: register_int_counter_vec_with_registry!(
            "tollgate_requests_total",
            "Requests by route, provider, requested model and status code",
            &["route", "provider", "model", "status"],
            r
        )
        .expect("metric"),
        input_tokens: register_int_counter_vec_with_registry!(
            "tollgate_input_tokens_total",
            "Input (prompt) tokens, cached included",
            labels,
            r
        )
        .expect("metric"),
        output_tokens: register_int_counter_vec_with_registry!(
            "tollgate_output_tokens_total",
            "Output (completion) tokens, reasoning included",
            labels,
            r
        )
        .expect("metric"),
        cached_tokens: register_int_counter_vec_with_registry!(
            "tollgate_cached_input_tokens_total",
            "Input tokens served from the provider's prompt cache",
            labels,
            r
        )
        .expect("metric"),
        reasoning_tokens: register_int_counter_vec_with_registry!(
            "tollgate_reasoning_tokens_total",
            "Output tokens spent on reasoning",
            labels,
            r
        )
        .expect("metric"),
        duration: register_histogram_vec_with_registry!(
            "tollgate_request_duration_seconds",
            "Time from request to the end of the response",
            labels,
            LATENCY_BUCKETS.to_vec(),
            r
        )
        .expect("metric"),
        ttft: register_histogram_vec_with_registry!(
            "tollgate_time_to_first_token_seconds",
            "Time from request to the first content of a streamed response",
            labels,
            LATENCY_BUCKETS.to_vec(),
            r
        )
        .expect("metric"),
        overhead: register_histogram_vec_with_registry!(
            "tollgate_gateway_overhead_seconds",
            "Time spent inside the gateway: request duration minus time waiting on providers",
            &["route", "provider"],
            vec![
                0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                0.25, 1.0
            ],
            r
        )
        .expect("metric"),
        active_streams: register_int_gauge_with_registry!(
            "tollgate_active_streams",
            "Streaming responses in progress",
            r
        )
        .expect("metric"),
        access_log_dropped: register_int_counter_with_registry!(
            "tollgate_access_log_dropped_total",
            "Access-log lines dropped because the writer fell behind",
            r
        )
        .expect("metric"),
        consumer_input_tokens: register_int_counter_vec_with_registry!(
            "tollgate_consumer_input_tokens_total",
            "Input tokens by consumer",
            &["consumer"],
            r
        )
        .expect("metric"),
        consumer_output_tokens: register_int_counter_vec_with_registry!(
            "tollgate_consumer_output_tokens_total",
            "Output tokens by consumer",
            &["consumer"],
            r
        )
        .expect("metric"),
        key_healthy: register_int_gauge_vec_with_registry!(
            "tollgate_key_healthy",
            "1 when a provider key is in rotation, 0 when it is resting, unhealthy or revoked",
            &["provider", "key", "state"],
            r
        )
        .expect("metric"),
        attempt_failures: register_int_counter_vec_with_registry!(
            "tollgate_attempt_failures_total",
            "Failed upstream attempts by provider, key and reason",
            &["provider", "key", "reason"],
            r
        )
        .expect("metric"),
        retries: register_int_counter_vec_with_registry!(
            "tollgate_retries_total",
            "Attempts retried on another key or target, by route and reason",
            &["route", "reason"],
            r
        )
        .expect("metric"),
        fallbacks: register_int_counter_vec_with_registry!(
            "tollgate_fallbacks_total",
            "Requests moved to the route's next target",
            &["route", "from", "to"],
            r
        )
        .expect("metric"),
        ratelimit_rejections: register_int_counter_vec_with_registry!(
            "tollgate_ratelimit_rejections_total",
            "Requests refused by a rate limit, by route, consumer and rule",
            &["route", "consumer", "rule"],
            r
        )
        .expect("metric"),
        redis_errors: register_int_counter_vec_with_registry!(
            "tollgate_redis_errors_total",
            "Failed calls to the shared Redis store, by operation",
            &["op"],
            r
        )
        .expect("metric"),
        store_fail_open: register_int_counter_vec_with_registry!(
            "tollgate_store_fail_open_total",
            "Requests admitted unchecked because the shared store failed (on_error: open)",
            &["what"],
            r
        )
        .expect("metric"),
        analytics_dropped: register_int_counter_with_registry!(
            "tollgate_analytics_dropped_total",
            "Requests left out of the usage rollups (queue full, or the rollup store failed)",
            r
        )
        .expect("metric"),
        cost: prometheus::register_counter_vec_with_registry!(
            "tollgate_cost_total",
            "What requests cost, in the price book's currency (route, provider, model as for tollgate_requests_total)",
            &["route", "provider", "model", "currency"],
            r
        )
        .expect("metric"),
        unpriced: register_int_counter_vec_with_registry!(
            "tollgate_unpriced_requests_total",
            "Requests with token usage whose provider and model have no price in the price book",
            labels,
            r
        )
        .expect("metric"),
        traces_dropped: register_int_counter_vec_with_registry!(
            "tollgate_traces_dropped_total",
            "Spans not exported to the OTLP collector (reason: queue_full, export_failed)",
            &["reason"],
            r
        )
        .expect("metric"),
        config_store_up: register_int_gauge_with_registry!(
            "tollgate_config_store_up",
            "1 while the store of the management API's objects answers (a shared Redis), else 0",
            r
        )
        .expect("metric"),
        config_api_revision: register_int_gauge_with_registry!(
            "tollgate_config_api_revision",
            "The revision of the management API's objects this instance runs",
            r
        )
        .expect("metric"),
        media_units: register_int_counter_vec_with_registry!(
            "tollgate_media_units_total",
            "Units used by media answers (images, audio_ms, characters, search_units) by route, provider, model and unit",
            &["route", "provider", "model", "unit"],
            r
        )
        .expect("metric"),
        policy_actions: register_int_counter_vec_with_registry!(
            "tollgate_policy_actions_total",
            "Prompt and content policy actions by route, policy and action",
            &["route", "policy", "action"],
            r
        )
        .expect("metric"),
        cache_lookups: register_int_counter_vec_with_registry!(
            "tollgate_cache_lookups_total",
            "Response cache lookups by route and result: hit-exact, hit-semantic, miss, refresh, bypass",
            &["route", "result"],
            r
        )
        .expect("metric"),
        cache_saved_tokens: register_int_counter_vec_with_registry!(
            "tollgate_cache_saved_tokens_total",
            "Input and output tokens served from the response cache instead of a provider",
            &["route"],
            r
        )
        .expect("metric"),
        cache_saved_cost: prometheus::register_counter_vec_with_registry!(
            "tollgate_cache_saved_cost_total",
            "What the answers served from the response cache cost when they were made",
            &["route", "currency"],
            r
        )
        .expect("metric"),
        cache_stored: register_int_counter_vec_with_registry!(
            "tollgate_cache_stored_total",
            "Answers kept in the response cache, by route",
            &["route"],
            r
        )
        .expect("metric"),
        cache_errors: prometheus::register_int_counter_with_registry!(
            "tollgate_cache_errors_total",
            "Shared (Redis) response cache reads and writes and semantic-cache embedding requests that failed, each served as a miss",
            r
        )
        .expect("metric"),
        cache_bytes: register_int_gauge_with_registry!(
            "tollgate_cache_bytes",
            "Bytes of answers in this gateway's response cache memory (as last counted)",
            r
        )
        .expect("metric"),
        budget_rejections: register_int_counter_vec_with_registry!(
            "tollgate_budget_rejections_total",
            "Requests (or, for provider-key budgets, attempts) refused because a money budget had no room",
            &["budget"],
            r
        )
        .expect("metric"),
        budget_spent: prometheus::register_counter_vec_with_registry!(
            "tollgate_budget_spent_total",
            "Money charged to budgets, in each budget's currency",
            &["budget", "currency"],
            r
        )
        .expect("metric"),
        quota_rejections: register_int_counter_vec_with_registry!(
            "tollgate_quota_rejections_total",
            "Requests refused because the consumer's quota is spent",
            &["consumer"],
            r
        )
        .expect("metric"),
        quota_charged_tokens: register_int_counter_vec_with_registry!(
            "tollgate_quota_charged_tokens_total",
            "Tokens charged to consumers' quotas",
            &["consumer"],
            r
        )
        .expect("metric"),
        quota_remaining: register_int_gauge_vec_with_registry!(
            "tollgate_quota_remaining_tokens",
            "Remaining quota balance of each consumer with a quota",
            &["consumer"],
            r
        )
        .expect("metric"),
        health_checks: register_int_counter_vec_with_registry!(
            "tollgate_health_checks_total",
            "Active health checks of keys out of rotation, by outcome",
            &["provider", "key", "outcome"],
            r
        )
        .expect("metric"),
    }
});

/// The per-request series of one (route, provider, model), looked up once and kept: a
/// `with_label_values` call hashes its labels and takes the vector's lock, and a request
/// touches nine series. Handles stay valid for the life of the process (nothing removes
/// these series).
pub struct RequestSeries {
    input_tokens: prometheus::IntCounter,
    output_tokens: prometheus::IntCounter,
    cached_tokens: prometheus::IntCounter,
    reasoning_tokens: prometheus::IntCounter,
    pub duration: Histogram,
    pub overhead: Histogram,
    pub ttft: Histogram,
    /// `tollgate_requests_total` by status, filled as statuses are seen.
    requests: std::cell::RefCell<Vec<(u16, prometheus::IntCounter)>>,
    /// `tollgate_cost_total` by currency, filled as currencies are seen.
    cost: std::cell::RefCell<Vec<(&'static str, prometheus::Counter)>>,
    unpriced: prometheus::IntCounter,
    labels: [String; 3],
}

impl RequestSeries {
    fn new(route: &str, provider: &str, model: &str) -> Self {
        let m = &*METRICS;
        let l = [route, provider, model];
        RequestSeries {
            input_tokens: m.input_tokens.with_label_values(&l),
            output_tokens: m.output_tokens.with_label_values(&l),
            cached_tokens: m.cached_tokens.with_label_values(&l),
            reasoning_tokens: m.reasoning_tokens.with_label_values(&l),
            duration: m.duration.with_label_values(&l),
            overhead: m.overhead.with_label_values(&[route, provider]),
            ttft: m.ttft.with_label_values(&l),
            requests: std::cell::RefCell::new(Vec::new()),
            cost: std::cell::RefCell::new(Vec::new()),
            unpriced: m.unpriced.with_label_values(&l),
            labels: [route.to_string(), provider.to_string(), model.to_string()],
        }
    }

    /// Count a request answered with `status`.
    pub fn request(&self, status: u16) {
        let mut by_status = self.requests.borrow_mut();
        if let Some((_, c)) = by_status.iter().find(|(s, _)| *s == status) {
            c.inc();
            return;
        }
        let status_label = status.to_string();
        let l = &self.labels;
        let c = METRICS.requests.with_label_values(&[
            l[0].as_str(),
            l[1].as_str(),
            l[2].as_str(),
            status_label.as_str(),
        ]);
        c.inc();
        by_status.push((status, c));
    }

    /// Add a request's cost (`None`: it had usage and no price).
    pub fn cost(&self, cost: Option<(f64, &'static str)>) {
        let Some((amount, currency)) = cost else {
            self.unpriced.inc();
            return;
        };
        let mut by_currency = self.cost.borrow_mut();
        if let Some((_, c)) = by_currency.iter().find(|(cur, _)| *cur == currency) {
            c.inc_by(amount);
            return;
        }
        let l = &self.labels;
        let c = METRICS.cost.with_label_values(&[
            l[0].as_str(),
            l[1].as_str(),
            l[2].as_str(),
            currency,
        ]);
        c.inc_by(amount);
        by_currency.push((currency, c));
    }

    /// Add a request's tokens.
    pub fn tokens(&self, input: u64, output: u64, cached: u64, reasoning: u64) {
        self.input_tokens.inc_by(input);
        self.output_tokens.inc_by(output);
        self.cached_tokens.inc_by(cached);
        self.reasoning_tokens.inc_by(reasoning);
    }
}

/// Entries kept per thread before the cache starts over. The keys are label values from the
/// config (see the module doc), so a config with fewer (route, provider, rule) combinations
/// never starts over; this only caps the cache for a very large config.
const SERIES_CACHE_MAX: usize = 256;

thread_local! {
    static SERIES: std::cell::RefCell<Vec<std::rc::Rc<RequestSeries>>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// The cached series of (route, provider, model), created on first use. The cache is per
/// thread, so a lookup takes no lock; a linear scan beats hashing for the few entries a
/// gateway has.
pub fn request_series(route: &str, provider: &str, model: &str) -> std::rc::Rc<RequestSeries> {
    SERIES.with(|cell| {
        let mut cache = cell.borrow_mut();
        if let Some(s) = cache
            .iter()
            .find(|s| s.labels[2] == model && s.labels[1] == provider && s.labels[0] == route)
        {
            return s.clone();
        }
        if cache.len() >= SERIES_CACHE_MAX {
            cache.clear();
        }
        let s = std::rc::Rc::new(RequestSeries::new(route, provider, model));
        cache.push(s.clone());
        s
    })
}

/// Refresh the key-state gauges from the running config's key pools, by provider name.
pub fn observe_keys<'a>(pools: impl Iterator<Item = (&'a str, &'a crate::keys::KeyPool)>) {
    METRICS.key_healthy.reset();
    for (provider, keys) in pools {
        for k in keys.iter() {
            let state = k.state();
            let up = i64::from(k.usable());
            METRICS
                .key_healthy
                .with_label_values(&[provider, k.name.as_str(), state.as_str()])
                .set(up);
        }
    }
}

/// The text exposition of every metric.
pub fn render() -> Vec<u8> {
    use prometheus::Encoder;
    let mut out = Vec::new();
    let encoder = prometheus::TextEncoder::new();
    if let Err(e) = encoder.encode(&REGISTRY.gather(), &mut out) {
        log::warn!("metrics encoding failed: {e}");
    }
    out
}
