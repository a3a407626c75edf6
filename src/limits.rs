//! Token and request rate limits: rules, where each is counted, reserve-then-reconcile.
//!
//! Admission is reserve-then-reconcile. At admission a request adds its reservation (the
//! estimated prompt tokens, plus `max_tokens` when the rule says so) to every applicable
//! counter *first*, then reads the sliding-window estimate; if that exceeds the limit the
//! reservation is taken back and the request gets 429. Because the add is atomic,
//! concurrent requests cannot all slip under the limit: the overshoot is bounded by one
//! request's reservation. When the response ends, the reservation is replaced by the real
//! usage (the difference is added, negative when the estimate was high).
//!
//! Where a rule is counted:
//! - With `redis` configured: in Redis, every window, one script call per admission and one
//!   per reconcile (`store::redis`), so several gateways share one budget. Windows are
//!   aligned to the epoch by Redis's own clock. On Redis errors the rule is skipped
//!   (`on_error: open`, counted in `tollgate_store_fail_open_total`) or the request refused.
//! - Otherwise hour and day windows: exact counters in the embedded store (`store::local`),
//!   epoch-aligned, so they survive restarts and upgrades.
//! - Otherwise (second and minute windows on one machine): in memory with Pingora's
//!   count-min estimator (`pingora_limits::estimator::Estimator`, two per window:
//!   [`memory`]); they start afresh on restart.
//!
//! Accuracy: every sliding window is `previous × (1 − elapsed fraction) + current`, the
//! two-slot approximation (exact at window boundaries, linear in between). In memory each
//! window keeps two sketches of 4 × 2048 counters: count-min never undercounts, and with n
//! distinct keys active in a window a key is overcounted only when all 4 of its cells
//! collide, so for n ≪ 2048 the overestimate is negligible (about (n/2048)^4 of the other
//! keys' counts). In-memory windows flip relative to the process start.
//!
//! Rules keyed by `provider_key` are the gateway's budget for an upstream key: they are
//! checked per attempt (a key over its budget is skipped for the next one), never shown to
//! the client.

use crate::store::redis::{WindowAdjust, WindowCheck};
use crate::store::Stores;
use http::HeaderMap;
use ipnet::IpNet;
use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What a rule counts per.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyBy {
    /// The authenticated consumer (requests without one are not counted): every consumer
    /// when the list is empty, else only the listed ones, each with its own budget.
    Consumer(Vec<String>),
    /// The route.
    Route,
    /// A header's value: every distinct value (`*`) or only the listed ones.
    Header(http::HeaderName, Vec<String>),
    /// Each client IP (within these CIDRs, when any are listed).
    Ip(Vec<IpNet>),
    /// The CIDR block the client IP is in, one budget per block.
    Cidr(Vec<IpNet>),
    /// The upstream provider key an attempt uses.
    ProviderKey,
}

/// A rule's window (`second`, `minute`, `hour`, `day`), as the settings write it.
pub use crate::settings::Window;

/// What a limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    Requests,
    /// Input + output tokens.
    Tokens,
    InputTokens,
    OutputTokens,
}

impl Measure {
    pub fn as_str(self) -> &'static str {
        match self {
            Measure::Requests => "requests",
            Measure::Tokens => "tokens",
            Measure::InputTokens => "input_tokens",
            Measure::OutputTokens => "output_tokens",
        }
    }
}

struct Check {
    measure: Measure,
    limit: u64,
    /// `rule␟measure␟`, the start of every counter key of this check (built once).
    prefix: String,
    /// The in-memory counter (used when the rule is counted in memory).
    rate: Arc<memory::MemoryWindow>,
}

pub struct Rule {
    pub name: String,
    pub key: KeyBy,
    pub window: Window,
    /// Reserve the request's `max_tokens` too (not only the prompt estimate).
    pub reserve_max_tokens: bool,
    /// Routes this rule applies to (empty = all).
    pub routes: Vec<String>,
    checks: Vec<Check>,
}

impl std::fmt::Debug for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rule").field("name", &self.name).finish()
    }
}

impl Rule {
    pub fn new(
        name: String,
        key: KeyBy,
        window: Window,
        limits: &[(Measure, u64)],
        reserve_max_tokens: bool,
        routes: Vec<String>,
    ) -> Self {
        let period = Duration::from_secs(window.secs());
        let checks = limits
            .iter()
            .map(|&(measure, limit)| Check {
                measure,
                limit,
                prefix: format!("{name}\u{1f}{}\u{1f}", measure.as_str()),
                rate: Arc::new(memory::MemoryWindow::new(period, 4, 2048)),
            })
            .collect();
        Rule {
            name,
            key,
            window,
            reserve_max_tokens,
            routes,
            checks,
        }
    }

    /// Keep `previous`'s in-memory counters across a config reload (same name and window).
    pub fn adopt(&mut self, previous: &Rule) {
        if previous.name != self.name || previous.window != self.window {
            return;
        }
        for c in &mut self.checks {
            if let Some(old) = previous.checks.iter().find(|o| o.measure == c.measure) {
                c.rate = old.rate.clone();
            }
        }
    }

    /// `(measure, limit)` of each limit of the rule.
    pub fn limits(&self) -> impl Iterator<Item = (Measure, u64)> + '_ {
        self.checks.iter().map(|c| (c.measure, c.limit))
    }

    pub fn limit(&self, measure: Measure) -> Option<u64> {
        self.checks
            .iter()
            .find(|c| c.measure == measure)
            .map(|c| c.limit)
    }

    /// The counter key of this request for this rule, or `None` if the rule does not apply.
    fn key_of<'w>(&self, who: &Who<'w>) -> Option<Cow<'w, str>> {
        if !self.routes.is_empty() && !self.routes.iter().any(|r| r == who.route) {
            return None;
        }
        if (self.key == KeyBy::ProviderKey) != who.provider_key.is_some() {
            return None;
        }
        match &self.key {
            KeyBy::Consumer(only) => who
                .consumer
                .filter(|c| only.is_empty() || only.iter().any(|x| x == c))
                .map(Cow::Borrowed),
            KeyBy::Route => Some(Cow::Borrowed(who.route)),
            KeyBy::ProviderKey => who.provider_key.map(Cow::Borrowed),
            KeyBy::Ip(nets) => {
                let ip = who.ip?;
                (nets.is_empty() || nets.iter().any(|n| n.contains(&ip)))
                    .then(|| Cow::Owned(ip.to_string()))
            }
            KeyBy::Cidr(nets) => {
                let ip = who.ip?;
                nets.iter()
                    .find(|n| n.contains(&ip))
                    .map(|n| Cow::Owned(n.to_string()))
            }
            KeyBy::Header(name, values) => {
                let v = who.headers.get(name)?.to_str().ok()?;
                (values.iter().any(|x| x == "*" || x == v)).then_some(Cow::Borrowed(v))
            }
        }
    }
}

/// Who a request is, for keying rules.
pub struct Who<'a> {
    pub route: &'a str,
    pub consumer: Option<&'a str>,
    pub ip: Option<IpAddr>,
    pub headers: &'a HeaderMap,
    /// `provider/key` during a per-attempt check (only `provider_key` rules apply then);
    /// `None` at the client's admission (every other rule applies).
    pub provider_key: Option<&'a str>,
}

/// What a request asks for, in tokens.
#[derive(Debug, Clone, Copy, Default)]
pub struct Demand {
    /// Estimated prompt tokens.
    pub prompt: u64,
    /// The request's `max_tokens`, if any.
    pub max_tokens: u64,
}

/// What a request turned out to use.
#[derive(Debug, Clone, Copy, Default)]
pub struct Used {
    pub input: u64,
    pub output: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Memory,
    Local,
    Redis,
}

/// One counter's hold on an admitted request.
#[derive(Debug)]
pub struct Hold {
    place: Place,
    rule: usize,
    check: usize,
    key: String,
    reserved: i64,
    /// Start of the window the reservation went to: epoch-aligned unix seconds for
    /// store-backed counters, milliseconds on the in-memory windows' clock for the others.
    start: u64,
}

/// What the client is told: the tightest limit that applies.
#[derive(Debug, Clone, Copy, Default)]
pub struct Headroom {
    pub limit_tokens: Option<(u64, u64, Duration)>,
    pub limit_requests: Option<(u64, u64, Duration)>,
}

impl Headroom {
    fn tighten(&mut self, measure: Measure, limit: u64, remaining: u64, reset: Duration) {
        let slot = match measure {
            Measure::Requests => &mut self.limit_requests,
            _ => &mut self.limit_tokens,
        };
        if slot.is_none_or(|(_, r, _)| remaining < r) {
            *slot = Some((limit, remaining, reset));
        }
    }

    /// OpenAI's `x-ratelimit-*` headers, their names static text (pingora keeps those as
    /// they are, and copies a `HeaderName` into new bytes on every response).
    pub fn headers(&self) -> Vec<(&'static str, http::HeaderValue)> {
        const LIMIT_TOKENS: &str = "x-ratelimit-limit-tokens";
        const REMAINING_TOKENS: &str = "x-ratelimit-remaining-tokens";
        const RESET_TOKENS: &str = "x-ratelimit-reset-tokens";
        const LIMIT_REQUESTS: &str = "x-ratelimit-limit-requests";
        const REMAINING_REQUESTS: &str = "x-ratelimit-remaining-requests";
        const RESET_REQUESTS: &str = "x-ratelimit-reset-requests";
        // Room for the six, and for what later stages add (`retry-after`, the response
        // cache's verdict) without growing.
        let mut out = Vec::with_capacity(8);
        let fmt = |d: Duration| {
            http::HeaderValue::try_from(format!("{}ms", d.as_millis()))
                .unwrap_or(http::HeaderValue::from_static("0ms"))
        };
        if let Some((l, r, t)) = self.limit_tokens {
            out.push((LIMIT_TOKENS, l.into()));
            out.push((REMAINING_TOKENS, r.into()));
            out.push((RESET_TOKENS, fmt(t)));
        }
        if let Some((l, r, t)) = self.limit_requests {
            out.push((LIMIT_REQUESTS, l.into()));
            out.push((REMAINING_REQUESTS, r.into()));
            out.push((RESET_REQUESTS, fmt(t)));
        }
        out
    }
}

/// Why a request was refused.
#[derive(Debug, Clone)]
pub struct Limited {
    pub rule: String,
    pub what: &'static str,
    pub window: Window,
    pub retry_after: Duration,
    pub headroom: Headroom,
}

#[derive(Debug)]
pub enum Refusal {
    Limited(Box<Limited>),
    /// The shared store failed and `on_error` is `closed`.
    StoreUnavailable,
}

/// Current unix time in milliseconds.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The sliding-window estimate from the previous and current fixed windows.
fn slide(prev: i64, curr: i64, frac: f64) -> f64 {
    prev.max(0) as f64 * (1.0 - frac) + curr.max(0) as f64
}

fn over(count: f64, n: i64, limit: u64) -> bool {
    count > limit as f64 || (n == 0 && count >= limit as f64)
}

mod admit;
mod memory;
mod usage;
pub use admit::Limits;
pub use usage::Standing;

#[cfg(test)]
mod tests;
