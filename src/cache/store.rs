//! Where cached answers are kept: memory (`moka`'s synchronous cache: a lookup or an insert
//! is a plain call, no future; bounded by bytes; each entry served until its own time, then
//! dropped when read or by a sweep) and, with `redis:`, the shared Redis too
//! (`crate::store::cache`), read on a memory miss so every gateway serves what any of them
//! kept (a gateway's own copy of a shared entry lives at most `SHARED_COPY_MS`, so a purge
//! reaches every gateway). A Redis failure is a miss (counted, logged at most once a
//! minute), never a failed request. While the memory is full, an answer enters it only if
//! its key was offered before (`super::door`).

use super::door::Doorkeeper;
use super::semantic::SemanticIndex;
use super::{Entry, Key};
use crate::metrics::METRICS;
use crate::store::cache::Index;
use crate::store::redis::RedisStore;
use moka::sync::Cache;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Default memory for entries.
pub const DEFAULT_MAX_BYTES: u64 = 64 << 20;
/// Default largest entry.
pub const DEFAULT_MAX_ENTRY_BYTES: u64 = 1 << 20;
/// With Redis, how long a gateway keeps its own copy of a shared entry: a purge on any
/// gateway reaches the others' memory within this.
pub const SHARED_COPY_MS: u64 = 5_000;

/// A kept entry and when it stops being served (unix ms).
#[derive(Debug, Clone)]
pub struct Kept {
    pub entry: Arc<Entry>,
    pub expires_ms: u64,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Stored {
    expires_ms: u64,
    entry: Entry,
}

type Memory = Cache<Key, Kept, ahash::RandomState>;

/// Drop the entries past their time (at `now`, unix ms); how many. `earliest` (when the
/// first entry in memory is due) is lowered to the earliest time of those left; an entry
/// kept meanwhile lowers it itself.
fn sweep(memory: &Memory, earliest: &AtomicU64, now: u64) -> usize {
    earliest.store(u64::MAX, Ordering::Relaxed);
    let mut left = u64::MAX;
    let past: Vec<Arc<Key>> = memory
        .iter()
        .filter(|(_, v)| {
            if v.expires_ms > now {
                left = left.min(v.expires_ms);
            }
            v.expires_ms <= now
        })
        .map(|(k, _)| k)
        .collect();
    earliest.fetch_min(left, Ordering::Relaxed);
    past.iter()
        .filter(|k| drop_if_past(memory, earliest, k, now))
        .count()
}

/// Drop the entry under `key` if it is past its time at `now`; whether one was. (moka removes
/// by key only: an entry kept again meanwhile, still fresh, is put back, and `earliest`
/// lowered to its time: a sweep may have missed it.)
fn drop_if_past(memory: &Memory, earliest: &AtomicU64, key: &Key, now: u64) -> bool {
    match memory.remove(key) {
        Some(kept) if kept.expires_ms > now => {
            earliest.fetch_min(kept.expires_ms, Ordering::Relaxed);
            memory.insert(*key, kept);
            false
        }
        Some(_) => true,
        None => false,
    }
}

/// The entries moka's map is made for at first: the memory's bound over [`SIZED_ENTRY`]
/// (at most [`MAX_SIZED_ENTRIES`]). While the memory fills, the map's segments then do not
/// double (a doubling moves the segment's entries, on the requests of the moment) until it
/// holds about that many; its buckets cost about 32 bytes an entry sized for (0.8 % of the
/// bound), from the start.
fn initial_entries(max_bytes: u64) -> usize {
    usize::try_from(max_bytes / SIZED_ENTRY)
        .unwrap_or(usize::MAX)
        .min(MAX_SIZED_ENTRIES)
}

/// A kept answer's weight the map is sized by (a chat answer of a few hundred words).
const SIZED_ENTRY: u64 = 4096;

/// The most entries the map is sized for at first (about 32 MiB of buckets).
const MAX_SIZED_ENTRIES: usize = 1 << 20;

/// Now, in unix milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// How often the entries past their time are dropped from memory
/// (`ResponseCache::sweep_if_due`).
const SWEEP_EVERY_MS: u64 = 30_000;

/// The sweep's interval: with Redis, as often as a gateway's copies of shared entries
/// expire (`SHARED_COPY_MS`).
fn sweep_every(shared: bool) -> u64 {
    if shared {
        SHARED_COPY_MS
    } else {
        SWEEP_EVERY_MS
    }
}

pub struct ResponseCache {
    /// Keyed by digests (32 bytes, `super::Hashing`), hashed with `ahash` (keyed per process, so bucket
    /// collisions cannot be ground out offline; several times cheaper than the default
    /// SipHash, which the map's rehashes made visible on a miss).
    memory: Memory,
    /// While the memory is full, lets in only keys offered before (`super::door`).
    door: Doorkeeper,
    redis: Option<Arc<RedisStore>>,
    max_entry: usize,
    /// When a Redis failure was last logged (unix ms).
    warned: AtomicU64,
    /// When the memory may next be swept of entries past their time (unix ms).
    next_sweep: AtomicU64,
    /// When the first entry in memory is due (unix ms; `u64::MAX`: none): until then a sweep
    /// would find nothing, and none runs.
    earliest: Arc<AtomicU64>,
    /// Each route's semantic index (this gateway's memory only), made on first use.
    semantic: Mutex<HashMap<String, Arc<SemanticIndex>>>,
    /// Whether moka's admission sketch may be counting ([`ResponseCache::sketch_counts`]).
    sketching: AtomicBool,
}

impl ResponseCache {
    pub fn new(max_bytes: u64, max_entry: u64, redis: Option<Arc<RedisStore>>) -> Self {
        // Each entry's time is its own (`Kept::expires_ms`, checked on every read); rather
        // than moka's per-entry expiry (a timer wheel kept on every insert), entries past
        // their time are dropped when read, by the byte bound, or by the sweep.
        let memory = Cache::builder()
            .max_capacity(max_bytes)
            .initial_capacity(initial_entries(max_bytes))
            .weigher(|_: &Key, v: &Kept| v.entry.weight())
            .build_with_hasher(ahash::RandomState::new());
        let next_sweep = now_ms().saturating_add(sweep_every(redis.is_some()));
        ResponseCache {
            memory,
            door: Doorkeeper::default(),
            redis,
            max_entry: usize::try_from(max_entry).unwrap_or(usize::MAX),
            warned: AtomicU64::new(0),
            next_sweep: AtomicU64::new(next_sweep),
            earliest: Arc::new(AtomicU64::new(u64::MAX)),
            semantic: Mutex::new(HashMap::new()),
            sketching: AtomicBool::new(false),
        }
    }

    /// The memory's bound in bytes (`max_bytes`), as moka holds it.
    fn bound(&self) -> u64 {
        self.memory.policy().max_capacity().unwrap_or(u64::MAX)
    }

    /// Whether moka's admission sketch (TinyLFU's frequencies, which a lookup's miss feeds)
    /// may be counting: moka starts it once its memory has been half full and never stops
    /// it. Before, a miss needs nothing of moka but the map's answer
    /// ([`ResponseCache::get`]).
    fn sketch_counts(&self) -> bool {
        if self.sketching.load(Ordering::Relaxed) {
            return true;
        }
        let counts = self.memory.weighted_size() >= self.bound() / 2;
        if counts {
            self.sketching.store(true, Ordering::Relaxed);
        }
        counts
    }

    /// The semantic index of `route`.
    pub fn semantic(&self, route: &str) -> Arc<SemanticIndex> {
        let mut all = self
            .semantic
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        all.entry(route.to_string()).or_default().clone()
    }

    /// A failure of the cache's machinery (Redis, the embeddings request): counted in
    /// `tollgate_cache_errors_total`, logged at most once a minute; the lookup is a miss.
    pub fn failed(&self, what: &str, e: &dyn std::fmt::Display) {
        METRICS.cache_errors.inc();
        let now = now_ms();
        let last = self.warned.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= 60_000
            && self
                .warned
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            log::warn!("response cache: {what} failed (a miss): {e}");
        }
    }

    /// How keys are hashed: the same in every gateway when Redis shares the entries.
    pub fn hashing(&self) -> super::Hashing {
        match self.redis {
            Some(_) => super::Hashing::Shared,
            None => super::Hashing::Local,
        }
    }

    /// The largest answer kept, bytes.
    pub fn max_entry(&self) -> usize {
        self.max_entry
    }

    /// The entry kept under `key`, if it is still served.
    pub async fn get(&self, key: &Key) -> Option<Arc<Entry>> {
        // While the sketch is off, a key the map does not hold is a miss without moka's
        // lookup (its clock reading and the read it records for a sketch not counting);
        // once it counts, every miss is recorded for admission.
        let held = self.sketch_counts() || self.memory.contains_key(key);
        if let Some(k) = held.then(|| self.memory.get(key)).flatten() {
            let now = now_ms();
            if k.expires_ms > now {
                return Some(k.entry);
            }
            drop_if_past(&self.memory, &self.earliest, key, now);
        }
        let redis = self.redis.as_ref()?;
        let text = match redis.cache_get(&key.hex()).await {
            Ok(t) => t?,
            Err(e) => {
                self.failed("reading from Redis", &e);
                return None;
            }
        };
        let stored: Stored = serde_json::from_str(&text).ok()?;
        if stored.expires_ms <= now_ms() {
            return None;
        }
        let kept = Kept {
            entry: Arc::new(stored.entry),
            expires_ms: stored.expires_ms.min(now_ms() + SHARED_COPY_MS),
        };
        self.remember(*key, kept.clone());
        Some(kept.entry)
    }

    /// Keep `entry` under `key` for `ttl` (not when larger than `max_entry_bytes`); whether
    /// it was (in Redis, or in memory: while that is full, only a key offered before is let
    /// in, and moka's admission still decides).
    pub async fn put(&self, key: Key, entry: Entry, ttl: Duration) -> bool {
        if entry.completion.len() > self.max_entry {
            return false;
        }
        // The entry weighed as moka's weigher does.
        let full = self
            .memory
            .weighted_size()
            .saturating_add(u64::from(entry.weight()))
            > self.bound();
        let remember = !full || self.door.offered_before(&key);
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        let now = now_ms();
        let expires_ms = now.saturating_add(ttl_ms);
        // Redis keeps text only (an answer not in UTF-8 stays in this gateway's memory).
        let redis = self
            .redis
            .as_ref()
            .filter(|_| std::str::from_utf8(&entry.completion).is_ok());
        let shared = match redis {
            Some(redis) => {
                self.put_shared(redis, &key, &entry, expires_ms, ttl_ms)
                    .await
            }
            None => false,
        };
        if !remember {
            return shared;
        }
        let kept = Kept {
            entry: Arc::new(entry),
            expires_ms: match self.redis {
                Some(_) => expires_ms.min(now.saturating_add(SHARED_COPY_MS)),
                None => expires_ms,
            },
        };
        self.remember(key, kept);
        self.sweep_if_due(now);
        METRICS
            .cache_bytes
            .set(i64::try_from(self.memory.weighted_size()).unwrap_or(i64::MAX));
        true
    }

    /// Keep `entry` in Redis until `expires_ms`; whether it was.
    async fn put_shared(
        &self,
        redis: &RedisStore,
        key: &Key,
        entry: &Entry,
        expires_ms: u64,
        ttl_ms: u64,
    ) -> bool {
        let n = &entry.names;
        let under = [
            Index::Route(n.route()),
            Index::Model(n.model()),
            Index::Scope(n.scope()),
        ];
        let stored = Stored {
            expires_ms,
            entry: entry.clone(),
        };
        let text = serde_json::to_string(&stored).unwrap_or_default();
        match redis.cache_put(&key.hex(), &text, ttl_ms, under).await {
            Ok(()) => true,
            Err(e) => {
                self.failed("writing to Redis", &e);
                false
            }
        }
    }

    /// Put `kept` in memory.
    fn remember(&self, key: Key, kept: Kept) {
        self.earliest.fetch_min(kept.expires_ms, Ordering::Relaxed);
        self.memory.insert(key, kept);
    }

    /// Every `SWEEP_EVERY_MS` (`SHARED_COPY_MS` with Redis), drop the entries past their
    /// time from memory, if one is (`earliest`): on a blocking thread (it walks every
    /// entry); at most one sweep starts per interval.
    fn sweep_if_due(&self, now: u64) {
        let due = self.next_sweep.load(Ordering::Relaxed);
        let next = now.saturating_add(sweep_every(self.redis.is_some()));
        if now < due
            || now < self.earliest.load(Ordering::Relaxed)
            || self
                .next_sweep
                .compare_exchange(due, next, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let (memory, earliest) = (self.memory.clone(), self.earliest.clone());
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn_blocking(move || sweep(&memory, &earliest, now_ms()))),
            Err(_) => {
                let _ = sweep(&memory, &earliest, now);
            }
        }
    }

    /// Drop the entries of a route, a model or a scope (all three given: those of all);
    /// how many this gateway's memory and Redis held.
    pub async fn purge(
        &self,
        route: Option<&str>,
        model: Option<&str>,
        scope: Option<&str>,
    ) -> (u64, u64) {
        let matches = |e: &Entry| {
            route.is_none_or(|r| r == e.names.route())
                && model.is_none_or(|m| m == e.names.model())
                && scope.is_none_or(|s| s == e.names.scope())
        };
        if let Some(r) = route {
            self.semantic(r).clear();
        }
        let mut memory = 0;
        let doomed: Vec<Arc<Key>> = self
            .memory
            .iter()
            .filter(|(_, v)| matches(&v.entry))
            .map(|(k, _)| k)
            .collect();
        for k in doomed {
            self.memory.invalidate(k.as_ref());
            memory += 1;
        }
        let mut shared = 0;
        if let Some(redis) = &self.redis {
            let index = match (route, model, scope) {
                (Some(r), _, _) => Some(Index::Route(r)),
                (None, Some(m), _) => Some(Index::Model(m)),
                (None, None, Some(s)) => Some(Index::Scope(s)),
                (None, None, None) => None,
            };
            if let Some(i) = index {
                match redis.cache_purge(i).await {
                    Ok(n) => shared = n,
                    Err(e) => self.failed("purging in Redis", &e),
                }
            }
        }
        (memory, shared)
    }

    /// Entries and their bytes in this gateway's memory.
    pub async fn stats(&self) -> (u64, u64) {
        self.memory.run_pending_tasks();
        METRICS
            .cache_bytes
            .set(i64::try_from(self.memory.weighted_size()).unwrap_or(i64::MAX));
        (self.memory.entry_count(), self.memory.weighted_size())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::Names;

    fn entry(text: &'static str) -> Entry {
        Entry {
            completion: bytes::Bytes::from_static(text.as_bytes()),
            input_tokens: 1,
            output_tokens: 1,
            cached_tokens: 0,
            reasoning_tokens: 0,
            names: Names::new("p", "m", "r", "m", "s"),
        }
    }

    #[test]
    fn the_map_is_sized_for_the_bound_over_a_typical_answer() {
        assert_eq!(initial_entries(DEFAULT_MAX_BYTES), 16_384);
        assert_eq!(initial_entries(1000), 0);
        assert_eq!(initial_entries(u64::MAX), MAX_SIZED_ENTRIES);
    }

    #[tokio::test]
    async fn a_lookup_asks_moka_only_for_a_held_key_until_its_sketch_counts() {
        let cache = ResponseCache::new(4096, 4096, None);
        let ttl = Duration::from_secs(600);
        let held = Key([7; 32]);
        assert!(cache.get(&held).await.is_none());
        assert!(cache.put(held, entry("kept"), ttl).await);
        cache.memory.run_pending_tasks();
        assert!(cache.get(&held).await.is_some(), "a held key is looked up");
        assert!(cache.get(&Key([8; 32])).await.is_none());
        assert!(!cache.sketching.load(Ordering::Relaxed), "under half full");
        // Past half of the bound (moka's rule for starting its sketch), every lookup goes to
        // moka, and keeps going once the memory is below half again.
        let text: &'static str = "x".repeat(700).leak();
        for i in 0..3 {
            assert!(cache.put(Key([10 + i; 32]), entry(text), ttl).await);
        }
        cache.memory.run_pending_tasks();
        assert!(cache.memory.weighted_size() >= 2048);
        assert!(cache.get(&Key([9; 32])).await.is_none());
        assert!(cache.sketching.load(Ordering::Relaxed), "half full");
        cache.memory.invalidate_all();
        cache.memory.run_pending_tasks();
        assert!(cache.memory.weighted_size() < 2048);
        assert!(cache.sketch_counts(), "it never stops counting");
        assert!(cache.put(held, entry("kept"), ttl).await);
        assert!(cache.get(&held).await.is_some());
    }

    #[tokio::test]
    async fn an_entry_is_served_until_its_own_time_then_dropped() {
        let cache = ResponseCache::new(1 << 20, 1 << 20, None);
        let (short, long) = (Key([1; 32]), Key([2; 32]));
        assert!(cache.put(short, entry("short"), Duration::ZERO).await);
        assert!(
            cache
                .put(long, entry("long"), Duration::from_secs(600))
                .await
        );
        assert!(cache.get(&long).await.is_some());
        // Past its time: not served, and dropped from memory when read.
        assert!(cache.get(&short).await.is_none());
        assert_eq!(cache.stats().await.0, 1);
        // The sweep drops an entry past its time that nobody reads again.
        let third = Key([3; 32]);
        assert!(cache.put(third, entry("third"), Duration::ZERO).await);
        assert_eq!(cache.stats().await.0, 2);
        assert_eq!(sweep(&cache.memory, &cache.earliest, now_ms()), 1);
        // What is left is due in ten minutes: no sweep before.
        let left = cache.earliest.load(Ordering::Relaxed);
        assert!(left > now_ms() + 590_000 && left <= now_ms() + 600_000);
        assert_eq!(cache.stats().await.0, 1);
        assert!(cache.get(&long).await.is_some());
    }

    #[test]
    fn only_an_entry_past_its_time_is_dropped() {
        let cache = ResponseCache::new(1 << 20, 1 << 20, None);
        let kept = |expires_ms| Kept {
            entry: Arc::new(entry("x")),
            expires_ms,
        };
        let (key, now) = (Key([6; 32]), now_ms());
        // Kept again (fresh) after a read or a sweep found it past its time: it stays.
        cache.memory.insert(key, kept(now + 60_000));
        assert!(!drop_if_past(&cache.memory, &cache.earliest, &key, now));
        assert!(cache.memory.get(&key).is_some());
        // A sweep that saw it past its time may have set `earliest` past it: put back, it
        // lowers it again, so its own time still starts a sweep.
        assert_eq!(cache.earliest.load(Ordering::Relaxed), now + 60_000);
        cache.memory.insert(key, kept(now));
        assert!(drop_if_past(&cache.memory, &cache.earliest, &key, now));
        assert!(cache.memory.get(&key).is_none());
        assert!(
            !drop_if_past(&cache.memory, &cache.earliest, &key, now),
            "nothing there"
        );
    }

    #[tokio::test]
    async fn while_full_the_memory_lets_in_only_a_key_offered_before() {
        // Room for four entries (each weighs its text, names and 128 bytes).
        let weight = u64::from(entry("x").weight());
        let cache = ResponseCache::new(4 * weight, 1 << 20, None);
        for i in 0..4 {
            assert!(
                cache
                    .put(Key([i; 32]), entry("x"), Duration::from_secs(60))
                    .await
            );
            assert!(cache.memory.contains_key(&Key([i; 32])), "room: let in");
        }
        cache.memory.run_pending_tasks();
        assert_eq!(cache.memory.weighted_size(), 4 * weight, "full");
        // moka inserts at once and runs its admission later: not inserted at all here.
        let new = Key([9; 32]);
        assert!(!cache.put(new, entry("x"), Duration::from_secs(60)).await);
        assert!(!cache.memory.contains_key(&new), "a first-seen key waits");
        assert!(cache.put(new, entry("x"), Duration::from_secs(60)).await);
        assert!(
            cache.memory.contains_key(&new),
            "offered again: moka decides"
        );
    }

    #[tokio::test]
    async fn a_due_sweep_runs_once_per_interval() {
        let cache = ResponseCache::new(1 << 20, 1 << 20, None);
        cache.next_sweep.store(0, Ordering::Relaxed);
        // Due, but no entry is past its time: no sweep (it would walk them all for nothing).
        let fresh = Key([7; 32]);
        assert!(cache.put(fresh, entry("z"), Duration::from_secs(60)).await);
        assert_eq!(cache.next_sweep.load(Ordering::Relaxed), 0, "not started");
        assert!(cache.put(Key([4; 32]), entry("x"), Duration::ZERO).await);
        // The put found the sweep due and started it (on a blocking thread).
        let next = cache.next_sweep.load(Ordering::Relaxed);
        assert!(next > now_ms(), "the next sweep is set ahead");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while cache.stats().await.0 != 1 {
            assert!(std::time::Instant::now() < deadline, "the sweep dropped it");
            tokio::task::yield_now().await;
        }
        assert!(cache.put(Key([5; 32]), entry("y"), Duration::ZERO).await);
        assert_eq!(
            cache.next_sweep.load(Ordering::Relaxed),
            next,
            "not due again yet"
        );
        assert!(cache.get(&fresh).await.is_some());
    }
}
