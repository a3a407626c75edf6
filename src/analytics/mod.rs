//! Usage analytics without Prometheus: per-minute rollups of every request, kept in an
//! embedded SQLite file (`analytics.db` in the state directory), queried by the admin API,
//! and a ring of the last requests' metadata (issue #18, first part).
//!
//! The request path only builds an `Event` (names and numbers, never prompt or answer text)
//! and `try_send`s it into a bounded channel; when the channel is full the event is dropped
//! and `tollgate_analytics_dropped_total` counts it. One thread (`aggregate`) folds events
//! into the current minute's series, keyed by (minute, route, provider, model, consumer,
//! status class), and writes them every `FLUSH_EVERY` in one transaction as additive upserts:
//! one row write per active series per flush, never one per request. Rows older than 48 hours
//! are folded into one row per hour (checked hourly). A restart or upgrade
//! loses at most the last unflushed seconds (`kill -9` too); an orderly stop flushes. Model
//! and consumer names are capped per minute (`MAX_MODELS_PER_MINUTE`,
//! `MAX_CONSUMERS_PER_MINUTE`; beyond: `other`). Latency and time to first token are fixed log-scale histograms (`BUCKETS_MS`),
//! so percentiles over any range merge exactly to a bucket.

mod db;
pub mod fleet;
pub mod query;

pub use query::{Query, QueryError};

use crate::metrics::METRICS;
use serde::Serialize;
use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// Upper bounds (ms) of the latency buckets; the last bucket is everything above.
pub const BUCKETS_MS: [f64; 11] = [
    50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0, 60000.0, 120000.0,
];
pub const NBUCKETS: usize = BUCKETS_MS.len() + 1;
/// Distinct model names kept per minute; the rest are counted as `other`.
pub const MAX_MODELS_PER_MINUTE: usize = 1000;
/// Distinct consumers kept per minute (consumers come from the config and the management
/// API, which has no limit of its own); the rest are counted as `other`.
pub const MAX_CONSUMERS_PER_MINUTE: usize = 1000;
/// How often the aggregates are written.
pub const FLUSH_EVERY: Duration = Duration::from_secs(5);
/// How often the queue is drained (a flush waits at most this long to start).
const DRAIN_EVERY: Duration = Duration::from_millis(100);
const QUEUE: usize = 65_536;

/// One finished request, as analytics sees it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Event {
    /// Unix milliseconds at the end of the request.
    pub time_ms: u64,
    pub request_id: String,
    pub route: String,
    pub provider: String,
    pub model: String,
    pub consumer: String,
    pub endpoint: String,
    /// The key's name (never the key) that answered, if any.
    pub key: String,
    /// Attempts at providers (retries and fallbacks included).
    pub attempts: u32,
    /// The model asked of the provider (after mapping).
    pub upstream_model: String,
    pub stream: bool,
    pub status: u16,
    pub input_tokens: u64,
    pub cached_tokens: u64,
    pub output_tokens: u64,
    pub reasoning_tokens: u64,
    pub usage_estimated: bool,
    pub ttft_ms: Option<f64>,
    pub duration_ms: f64,
    pub error: Option<&'static str>,
    /// What it cost (picounits, currency), when priced; never for a response-cache hit.
    #[serde(skip)]
    pub cost: Option<(u64, crate::settings::Currency)>,
    /// What the response cache did (`hit-exact`, `miss`, …; routes with `cache:` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<&'static str>,
    /// A response-cache hit: what its answer cost when it was made (picounits, currency).
    #[serde(skip)]
    pub saved: Option<(u64, crate::settings::Currency)>,
    /// What the route's prompt and content policies did, `policy:action` each.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<String>,
    /// A media answer's units (images, audio, characters, search units).
    #[serde(skip_serializing_if = "crate::usage::Units::is_zero")]
    pub units: crate::usage::Units,
}

impl Event {
    /// It was answered from the response cache.
    pub fn cache_hit(&self) -> bool {
        self.cache.is_some_and(|c| c.starts_with("hit"))
    }
}

/// The series a request counts in.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SeriesKey {
    pub minute: u64,
    pub route: String,
    pub provider: String,
    pub model: String,
    pub consumer: String,
    /// `2xx`, `4xx`, `5xx`, … (`0xx`: no status).
    pub class: String,
}

/// One series' sums for one minute.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sums {
    pub requests: u64,
    pub input_tokens: u64,
    pub cached_tokens: u64,
    pub output_tokens: u64,
    pub reasoning_tokens: u64,
    pub estimated: u64,
    pub errors: u64,
    /// Cost in picounits of each currency.
    pub cost_usd_pico: u64,
    pub cost_cny_pico: u64,
    /// Requests answered from the response cache, their tokens (also in the token
    /// counts: a hit is charged what its answer would have cost) and what they saved.
    pub cache_hits: u64,
    pub cache_hit_tokens: u64,
    pub cache_saved_usd_pico: u64,
    pub cache_saved_cny_pico: u64,
    /// Actions of prompt and content policies, and requests a policy refused or cut.
    pub policy_actions: u64,
    pub policy_blocked: u64,
    /// Media answers' units: images made, audio milliseconds, characters spoken, search
    /// units.
    pub images: u64,
    pub audio_ms: u64,
    pub characters: u64,
    pub search_units: u64,
    pub latency: [u64; NBUCKETS],
    pub ttft: [u64; NBUCKETS],
}

pub fn bucket(ms: f64) -> usize {
    BUCKETS_MS
        .iter()
        .position(|b| ms <= *b)
        .unwrap_or(BUCKETS_MS.len())
}

impl Sums {
    /// Every number, in `db::number_columns` order.
    pub fn numbers(&self) -> Vec<u64> {
        let counts = [
            self.requests,
            self.input_tokens,
            self.cached_tokens,
            self.output_tokens,
            self.reasoning_tokens,
            self.estimated,
            self.errors,
            self.cost_usd_pico,
            self.cost_cny_pico,
            self.cache_hits,
            self.cache_hit_tokens,
            self.cache_saved_usd_pico,
            self.cache_saved_cny_pico,
            self.policy_actions,
            self.policy_blocked,
            self.images,
            self.audio_ms,
            self.characters,
            self.search_units,
        ];
        counts
            .iter()
            .chain(&self.latency)
            .chain(&self.ttft)
            .copied()
            .collect()
    }

    /// Add `other`'s numbers to these.
    pub fn merge(&mut self, other: &Sums) {
        self.requests += other.requests;
        self.input_tokens += other.input_tokens;
        self.cached_tokens += other.cached_tokens;
        self.output_tokens += other.output_tokens;
        self.reasoning_tokens += other.reasoning_tokens;
        self.estimated += other.estimated;
        self.errors += other.errors;
        self.cost_usd_pico += other.cost_usd_pico;
        self.cost_cny_pico += other.cost_cny_pico;
        self.cache_hits += other.cache_hits;
        self.cache_hit_tokens += other.cache_hit_tokens;
        self.cache_saved_usd_pico += other.cache_saved_usd_pico;
        self.cache_saved_cny_pico += other.cache_saved_cny_pico;
        self.policy_actions += other.policy_actions;
        self.policy_blocked += other.policy_blocked;
        self.images += other.images;
        self.audio_ms += other.audio_ms;
        self.characters += other.characters;
        self.search_units += other.search_units;
        for (a, b) in self.latency.iter_mut().zip(&other.latency) {
            *a += b;
        }
        for (a, b) in self.ttft.iter_mut().zip(&other.ttft) {
            *a += b;
        }
    }

    fn add(&mut self, e: &Event) {
        self.requests += 1;
        self.input_tokens += e.input_tokens;
        self.cached_tokens += e.cached_tokens;
        self.output_tokens += e.output_tokens;
        self.reasoning_tokens += e.reasoning_tokens;
        self.estimated += u64::from(e.usage_estimated);
        self.errors += u64::from(e.error.is_some() || e.status >= 400);
        match e.cost {
            Some((pico, crate::settings::Currency::Usd)) => self.cost_usd_pico += pico,
            Some((pico, crate::settings::Currency::Cny)) => self.cost_cny_pico += pico,
            None => {}
        }
        if e.cache_hit() {
            self.cache_hits += 1;
            self.cache_hit_tokens += e.input_tokens.saturating_add(e.output_tokens);
        }
        match e.saved {
            Some((pico, crate::settings::Currency::Usd)) => self.cache_saved_usd_pico += pico,
            Some((pico, crate::settings::Currency::Cny)) => self.cache_saved_cny_pico += pico,
            None => {}
        }
        self.policy_actions += e.policies.len() as u64;
        self.policy_blocked += u64::from(e.policies.iter().any(|p| p.ends_with(":blocked")));
        self.images += e.units.images;
        self.audio_ms += e.units.audio_ms;
        self.characters += e.units.characters;
        self.search_units += e.units.search_units;
        self.latency[bucket(e.duration_ms)] += 1;
        if let Some(t) = e.ttft_ms {
            self.ttft[bucket(t)] += 1;
        }
    }
}

/// What the aggregating thread and the admin API share.
pub struct Shared {
    recent: Mutex<VecDeque<Event>>,
    recent_cap: usize,
    db: PathBuf,
    /// Rollups older than this are deleted (checked hourly).
    retention: Duration,
    /// The shared Redis the fleet's rollups go to, when `redis:` is configured.
    fleet: std::sync::OnceLock<Arc<crate::store::redis::RedisStore>>,
}

pub struct Analytics {
    tx: Option<SyncSender<Msg>>,
    pub shared: Arc<Shared>,
    rx: Mutex<Option<Receiver<Msg>>>,
}

enum Msg {
    Event(Box<Event>),
    Flush(std::sync::mpsc::Sender<()>),
}

impl Analytics {
    /// Analytics writing to `db` and keeping the last `recent` requests; `enabled: false`
    /// costs nothing on the request path.
    pub fn new(enabled: bool, db: PathBuf, recent: usize, retention: Duration) -> Self {
        let shared = Arc::new(Shared {
            recent: Mutex::new(VecDeque::with_capacity(recent.min(QUEUE))),
            recent_cap: recent,
            db,
            retention,
            fleet: std::sync::OnceLock::new(),
        });
        if !enabled {
            return Analytics {
                tx: None,
                shared,
                rx: Mutex::new(None),
            };
        }
        let (tx, rx) = sync_channel(QUEUE);
        Analytics {
            tx: Some(tx),
            shared,
            rx: Mutex::new(Some(rx)),
        }
    }

    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Hand a finished request over (never blocks).
    pub fn record(&self, event: Event) {
        let Some(tx) = &self.tx else { return };
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
            tx.try_send(Msg::Event(Box::new(event)))
        {
            METRICS.analytics_dropped.inc();
        }
    }

    /// Start the aggregating thread (once; later calls do nothing), adding to the fleet's
    /// rollups in `fleet` too when given.
    pub fn start(
        &self,
        fleet: Option<Arc<crate::store::redis::RedisStore>>,
    ) -> std::io::Result<()> {
        let Some(rx) = self
            .rx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        else {
            return Ok(());
        };
        let writer = match fleet {
            Some(redis) => {
                let _ = self.shared.fleet.set(redis.clone());
                Some(fleet::Writer::new(redis, self.shared.retention)?)
            }
            None => None,
        };
        let shared = self.shared.clone();
        std::thread::Builder::new()
            .name("tollgate-analytics".into())
            .spawn(move || aggregate(rx, &shared, writer))
            .map(|_| ())
    }

    /// The shared Redis holding the fleet's rollups, if any.
    pub fn fleet(&self) -> Option<&Arc<crate::store::redis::RedisStore>> {
        self.shared.fleet.get()
    }

    /// How long rollups are kept.
    pub fn retention(&self) -> Duration {
        self.shared.retention
    }

    /// The fleet's rollups of the minutes `[from, to)` as of minute `now`, when Redis holds
    /// them and answers; `None` (logged, saying what `purpose` does instead) means this
    /// gateway's own file is to be read.
    pub async fn fleet_rows(
        &self,
        from: u64,
        to: u64,
        now: u64,
        purpose: &str,
    ) -> Option<Vec<fleet::Row>> {
        let redis = self.fleet()?;
        match fleet::read(redis, from, to, now, self.shared.retention).await {
            Ok(rows) => Some(rows),
            Err(e) => {
                log::warn!("{purpose}: the fleet's rollups are unavailable ({e}); using this gateway's own");
                None
            }
        }
    }

    /// Write everything aggregated so far, waiting at most `within`.
    pub fn flush(&self, within: Duration) -> bool {
        let Some(tx) = &self.tx else { return true };
        let (done, wait) = std::sync::mpsc::channel();
        if tx.send(Msg::Flush(done)).is_err() {
            return false;
        }
        wait.recv_timeout(within).is_ok()
    }

    /// The last requests, newest first, that `keep` accepts, at most `limit`.
    pub fn recent(&self, limit: usize, keep: impl Fn(&Event) -> bool) -> Vec<Event> {
        let ring = self
            .shared
            .recent
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        ring.iter()
            .rev()
            .filter(|e| keep(e))
            .take(limit)
            .cloned()
            .collect()
    }

    /// The database file.
    pub fn db_path(&self) -> &std::path::Path {
        &self.shared.db
    }
}

/// The current minutes' series, with the models and consumers seen per minute.
#[derive(Default)]
struct Pending {
    series: HashMap<SeriesKey, Sums>,
    models: HashMap<u64, HashSet<String>>,
    consumers: HashMap<u64, HashSet<String>>,
}

/// `name` if `seen` holds it or has room for it (then it is added), else `other`.
fn capped(seen: &mut HashSet<String>, name: &str, cap: usize) -> String {
    if seen.contains(name) || seen.len() < cap {
        seen.insert(name.to_string());
        name.to_string()
    } else {
        "other".to_string()
    }
}

impl Pending {
    fn add(&mut self, e: &Event) {
        let minute = e.time_ms / 60_000;
        let model = capped(
            self.models.entry(minute).or_default(),
            &e.model,
            MAX_MODELS_PER_MINUTE,
        );
        let consumer = capped(
            self.consumers.entry(minute).or_default(),
            &e.consumer,
            MAX_CONSUMERS_PER_MINUTE,
        );
        let key = SeriesKey {
            minute,
            route: e.route.clone(),
            provider: e.provider.clone(),
            model,
            consumer,
            class: format!("{}xx", e.status / 100),
        };
        self.series.entry(key).or_default().add(e);
    }
}

fn aggregate(rx: Receiver<Msg>, shared: &Shared, mut fleet: Option<fleet::Writer>) {
    let mut db = match db::Db::open(&shared.db) {
        Ok(db) => Some(db),
        Err(e) => {
            log::error!(
                "analytics: cannot open {}: {e}; usage is not kept",
                shared.db.display()
            );
            None
        }
    };
    let mut pending = Pending::default();
    let mut last_flush = std::time::Instant::now();
    let mut last_forget: Option<std::time::Instant> = None;
    loop {
        if last_forget.is_none_or(|t| t.elapsed() >= Duration::from_secs(3600)) {
            last_forget = Some(std::time::Instant::now());
            forget_old(&mut db, shared.retention);
        }
        // Drain on a timer rather than waking per request: a sender whose receiver is not
        // blocked makes no wake-up call.
        std::thread::sleep(DRAIN_EVERY);
        let mut answers = Vec::new();
        let mut closed = false;
        let mut events = Vec::new();
        loop {
            match rx.try_recv() {
                Ok(Msg::Event(e)) => events.push(e),
                Ok(Msg::Flush(done)) => answers.push(done),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    closed = true;
                    break;
                }
            }
        }
        if !events.is_empty() {
            for e in &events {
                pending.add(e);
            }
            let mut ring = shared.recent.lock().unwrap_or_else(PoisonError::into_inner);
            for e in events {
                if shared.recent_cap == 0 {
                    break;
                }
                if ring.len() == shared.recent_cap {
                    ring.pop_front();
                }
                ring.push_back(*e);
            }
        }
        if closed || !answers.is_empty() || last_flush.elapsed() >= FLUSH_EVERY {
            write(&mut db, &mut pending, fleet.as_mut());
            last_flush = std::time::Instant::now();
        }
        for done in answers {
            let _ = done.send(());
        }
        if closed {
            return;
        }
    }
}

/// Minute rows older than this are folded into hours.
pub(crate) const MINUTES_KEPT: Duration = Duration::from_secs(48 * 3600);

/// Fold the rollups older than 48 hours into hours; delete those older than `retention`.
fn forget_old(db: &mut Option<db::Db>, retention: Duration) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let before = now.saturating_sub(retention).as_secs() / 60;
    if let Some(db) = db {
        let hours_from = now.saturating_sub(MINUTES_KEPT).as_secs() / 60;
        match db.fold_into_hours(hours_from) {
            Ok(0) => {}
            Ok(n) => log::info!("analytics: {n} minute rollups older than 48 h folded into hours"),
            Err(e) => log::warn!("analytics: minute rollups not folded into hours: {e}"),
        }
        match db.forget_before(before) {
            Ok(0) => {}
            Ok(n) => log::info!("analytics: {n} rollups past the retention deleted"),
            Err(e) => log::warn!("analytics: old rollups not deleted: {e}"),
        }
    }
}

fn write(db: &mut Option<db::Db>, pending: &mut Pending, fleet: Option<&mut fleet::Writer>) {
    let series = std::mem::take(&mut pending.series);
    // Keep the name sets of the last two minutes only.
    if let Some(newest) = pending.models.keys().max().copied() {
        pending.models.retain(|m, _| *m + 1 >= newest);
        pending.consumers.retain(|m, _| *m + 1 >= newest);
    }
    if let Some(fleet) = fleet {
        // Also with nothing new: series that waited for Redis are sent.
        fleet.send(&series);
    }
    if series.is_empty() {
        return;
    }
    if let Some(db) = db {
        if let Err(e) = db.add(&series) {
            log::error!("analytics: {} series not written: {e}", series.len());
            METRICS
                .analytics_dropped
                .inc_by(series.values().map(|s| s.requests).sum());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_hits_and_policy_actions_are_counted() {
        let mut sums = Sums::default();
        let hit = Event {
            input_tokens: 3,
            output_tokens: 4,
            cache: Some("hit-exact"),
            saved: Some((500, crate::settings::Currency::Usd)),
            ..Event::default()
        };
        let blocked = Event {
            cache: Some("miss"),
            cost: Some((700, crate::settings::Currency::Usd)),
            policies: vec!["pii:masked".into(), "deny_input:blocked".into()],
            ..Event::default()
        };
        sums.add(&hit);
        sums.add(&blocked);
        assert_eq!((sums.cache_hits, sums.cache_hit_tokens), (1, 7));
        assert_eq!((sums.cost_usd_pico, sums.cache_saved_usd_pico), (700, 500));
        assert_eq!((sums.policy_actions, sums.policy_blocked), (2, 1));
        assert_eq!(sums.numbers().len(), db::number_columns().len());
    }

    #[test]
    fn names_beyond_the_caps_count_as_other_and_nothing_is_lost() {
        let mut p = Pending::default();
        let n = MAX_CONSUMERS_PER_MINUTE + 5;
        for i in 0..n {
            p.add(&Event {
                time_ms: 60_000,
                consumer: format!("c{i}"),
                model: format!("m{i}"),
                input_tokens: 1,
                ..Event::default()
            });
        }
        let consumers: HashSet<&str> = p.series.keys().map(|k| k.consumer.as_str()).collect();
        let models: HashSet<&str> = p.series.keys().map(|k| k.model.as_str()).collect();
        assert_eq!(consumers.len(), MAX_CONSUMERS_PER_MINUTE + 1);
        assert_eq!(models.len(), MAX_MODELS_PER_MINUTE + 1);
        assert!(consumers.contains("other") && models.contains("other"));
        let total: u64 = p.series.values().map(|s| s.input_tokens).sum();
        assert_eq!(total, n as u64);
        // A known name keeps its own series once the cap is reached.
        p.add(&Event {
            time_ms: 60_000,
            consumer: "c0".into(),
            model: "m0".into(),
            ..Event::default()
        });
        assert!(p
            .series
            .keys()
            .any(|k| k.consumer == "c0" && k.model == "m0"));
    }
}
