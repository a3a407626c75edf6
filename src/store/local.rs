//! The embedded store: SQLite on local disk, one writer thread, group commit.
//!
//! One database file (WAL, `synchronous=FULL`, 5 s `busy_timeout`) holds three tables,
//! `quota(consumer, balance)`, `counters(key, start, count)` and
//! `budget(budget, subject, start, spent, topup)` (`super::budget_sql`). A single std thread
//! (`tollgate-store`) owns the write connection; the async methods send it an op over a
//! channel and await a oneshot reply, so no SQLite call ever runs on the async runtime.
//!
//! **Group commit.** The writer blocks on the channel for at most `flush_interval`. When
//! woken it drains every queued op plus every dirty counter delta into ONE `BEGIN
//! IMMEDIATE` transaction, commits it, and only then replies. A quota write is therefore
//! fsync'd before its future resolves, and all the ops that queued up during one fsync
//! share the next one.
//!
//! **Two writers.** During a zero-downtime upgrade two processes (or two stores) may have
//! the file open. Every write is relative (`balance = balance + ?`, `count = count + ?`,
//! upserts with `RETURNING`), so neither loses the other's changes; lock contention is
//! absorbed by `busy_timeout` and a few retries of the whole transaction. The overflow
//! check of `quota_add` reads the row inside the same immediate (write-locked)
//! transaction, so it is exact too.
//!
//! **Window counters** live in a sharded in-memory cache: per (key, window start),
//! `committed` (the DB total last read back), `flushing` (deltas in the transaction now
//! being written) and `pending` (deltas not yet taken). Reads and adds only touch one
//! shard's mutex, never I/O. The writer moves pending→flushing, writes the delta, then in
//! one critical section sets `committed` to the returned total and subtracts the delta
//! from `flushing`, so readers never see an undercount. A failed transaction puts the
//! deltas back to pending, to be retried on the next cycle.
//!
//! **Durability bound.** Quota changes are durable when their future resolves. Counter
//! increments are durable after the next commit: at most `flush_interval` (plus one
//! transaction) after `counter_add`, immediately after `flush()` resolves, and on drop of
//! the store, which closes the channel and joins the writer after its final flush. A crash
//! loses at most the last `flush_interval` of counter increments. A counter touched only
//! by the other process since this one opened the file reads as this process last saw it.

use super::StoreError;
use rusqlite::{params, Connection, ErrorCode, OptionalExtension, TransactionBehavior};
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::oneshot;

/// Counter windows older than this are deleted (from disk at open and hourly, from memory
/// hourly).
const KEEP_SECS: u64 = 2 * 86_400;
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
const SHARDS: usize = 16;
/// Attempts of one transaction when the database stays locked past `busy_timeout`.
const ATTEMPTS: usize = 3;
const MIN_INTERVAL: Duration = Duration::from_millis(10);

pub struct LocalStore {
    /// `Some` until drop, which takes it to close the channel.
    tx: Option<mpsc::Sender<Op>>,
    writer: Option<JoinHandle<()>>,
    cache: Arc<Cache>,
    /// Transactions still to fail (the tests' stand-in for a full disk or a lock held
    /// too long).
    #[cfg(test)]
    failures: Arc<std::sync::atomic::AtomicUsize>,
}

enum Req {
    Get(String),
    All,
    Set(String, i64),
    Add(String, i64),
    Budget(super::budget_sql::BudgetReq),
    Flush,
}

enum Resp {
    Balance(Option<i64>),
    All(Vec<(String, i64)>),
    Value(i64),
    Budget(super::budget_sql::BudgetResp),
    Done,
}

struct Op {
    req: Req,
    reply: oneshot::Sender<Result<(u64, Resp), StoreError>>,
}

/// A value read or written by the store, with the position of its transaction among this
/// store's commits: of two answers, the one with the higher `seq` shows the newer state
/// (answers of concurrent operations may reach their callers in any order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamped<T> {
    /// From 1: the first commit's.
    pub seq: u64,
    pub value: T,
}

impl<T> Stamped<T> {
    /// The same answer, its value changed by `f`.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Stamped<U> {
        Stamped {
            seq: self.seq,
            value: f(self.value),
        }
    }
}

/// What a copy of stored figures in memory learnt of the store's answers: the stamp of the
/// newest (0 before any), so that an answer older than it is not learnt over it.
#[derive(Default)]
pub struct Learnt {
    seq: std::sync::atomic::AtomicU64,
    /// Held while an answer is compared and learnt (never to read `loaded`).
    learning: Mutex<()>,
}

impl Learnt {
    /// Whether any answer was learnt (lock-free).
    pub fn loaded(&self) -> bool {
        self.seq.load(std::sync::atomic::Ordering::SeqCst) != 0
    }

    /// Run `apply` (which stores the answer's figures) if the answer stamped `seq` is newer
    /// than every one learnt; whether it ran.
    pub fn newer(&self, seq: u64, apply: impl FnOnce()) -> bool {
        use std::sync::atomic::Ordering::SeqCst;
        let _learning = self.learning.lock().unwrap_or_else(PoisonError::into_inner);
        if self.seq.load(SeqCst) >= seq {
            return false;
        }
        apply();
        self.seq.store(seq, SeqCst);
        true
    }
}

#[derive(Default)]
struct Entry {
    committed: i64,
    flushing: i64,
    pending: i64,
    /// Listed in its shard's `dirty`.
    queued: bool,
}

impl Entry {
    fn total(&self) -> i64 {
        self.committed
            .saturating_add(self.flushing)
            .saturating_add(self.pending)
    }
}

#[derive(Default)]
struct Shard {
    map: HashMap<String, HashMap<u64, Entry>>,
    dirty: Vec<(String, u64)>,
}

struct Cache {
    shards: Vec<Mutex<Shard>>,
    hasher: RandomState,
}

/// One counter delta taken for a transaction.
type Delta = (String, u64, i64);

impl Cache {
    fn shard(&self, key: &str) -> MutexGuard<'_, Shard> {
        let i = (self.hasher.hash_one(key) % SHARDS as u64) as usize;
        self.shards[i]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Run `f` on the entry of (`key`, `start`), created if missing (allocating the key
    /// only then).
    fn with_entry<R>(
        shard: &mut Shard,
        key: &str,
        start: u64,
        f: impl FnOnce(&mut Entry) -> R,
    ) -> R {
        if let Some(m) = shard.map.get_mut(key) {
            return f(m.entry(start).or_default());
        }
        let m = shard.map.entry(key.to_string()).or_default();
        f(m.entry(start).or_default())
    }

    /// Add to `pending` (or move a failed delta back there from `flushing`).
    fn add_pending(&self, key: &str, start: u64, delta: i64, from_flushing: bool) -> i64 {
        let mut shard = self.shard(key);
        let (total, enqueue) = Cache::with_entry(&mut shard, key, start, |e| {
            e.pending = e.pending.saturating_add(delta);
            if from_flushing {
                e.flushing = e.flushing.saturating_sub(delta);
            }
            (e.total(), !std::mem::replace(&mut e.queued, true))
        });
        if enqueue {
            shard.dirty.push((key.to_string(), start));
        }
        total
    }

    /// Move every pending delta to `flushing` and return them.
    fn take_deltas(&self) -> Vec<Delta> {
        let mut out = Vec::new();
        for s in &self.shards {
            let mut guard = s.lock().unwrap_or_else(PoisonError::into_inner);
            let shard = &mut *guard;
            for (key, start) in std::mem::take(&mut shard.dirty) {
                if let Some(e) = shard.map.get_mut(&key).and_then(|m| m.get_mut(&start)) {
                    e.queued = false;
                    let d = std::mem::take(&mut e.pending);
                    if d != 0 {
                        e.flushing = e.flushing.saturating_add(d);
                        out.push((key, start, d));
                    }
                }
            }
        }
        out
    }

    fn committed(&self, deltas: &[Delta], counts: &[i64]) {
        for ((key, start, d), count) in deltas.iter().zip(counts) {
            let mut shard = self.shard(key);
            Cache::with_entry(&mut shard, key, *start, |e| {
                e.committed = *count;
                e.flushing = e.flushing.saturating_sub(*d);
            });
        }
    }

    fn failed(&self, deltas: &[Delta]) {
        for (key, start, d) in deltas {
            self.add_pending(key, *start, *d, true);
        }
    }

    fn prune(&self, cutoff: u64) {
        for s in &self.shards {
            let mut shard = s.lock().unwrap_or_else(PoisonError::into_inner);
            shard.map.retain(|_, m| {
                m.retain(|start, e| {
                    *start >= cutoff || e.queued || e.pending != 0 || e.flushing != 0
                });
                !m.is_empty()
            });
        }
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn sql_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

fn open_conn(path: &Path) -> rusqlite::Result<(Connection, Vec<Delta>)> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        log::warn!("store {}: journal_mode is {mode}, not WAL", path.display());
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS quota(consumer TEXT PRIMARY KEY, balance INTEGER NOT NULL);
         CREATE TABLE IF NOT EXISTS counters(key TEXT, start INTEGER, count INTEGER NOT NULL,
                                             PRIMARY KEY(key, start));
         CREATE TABLE IF NOT EXISTS budget(budget TEXT, subject TEXT, start INTEGER,
                                           spent INTEGER NOT NULL DEFAULT 0,
                                           topup INTEGER NOT NULL DEFAULT 0,
                                           PRIMARY KEY(budget, subject, start));",
    )?;
    let cutoff = sql_i64(now_secs().saturating_sub(KEEP_SECS));
    conn.execute("DELETE FROM counters WHERE start < ?1", [cutoff])?;
    let rows = conn
        .prepare("SELECT key, start, count FROM counters")?
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })?
        .map(|r| r.map(|(k, s, c)| (k, u64::try_from(s).unwrap_or(0), c)))
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok((conn, rows))
}

impl LocalStore {
    /// Open (or create) the database at `path`, load the window counters of the last two
    /// days into memory, and start the writer thread, which flushes counter deltas at
    /// least every `flush_interval`.
    pub fn open(path: &Path, flush_interval: Duration) -> Result<Arc<LocalStore>, StoreError> {
        let fail = |what: &str, e: &dyn std::fmt::Display| {
            let msg = format!("{} {}: {e}", what, path.display());
            log::error!("store: {msg}");
            StoreError::Backend(msg)
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| fail("cannot create directory for", &e))?;
        }
        let (conn, rows) = open_conn(path).map_err(|e| fail("cannot open", &e))?;
        let cache = Arc::new(Cache {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
        });
        for (key, start, count) in rows {
            Cache::with_entry(&mut cache.shard(&key), &key, start, |e| e.committed = count);
        }
        let (tx, rx) = mpsc::channel();
        #[cfg(test)]
        let failures = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let writer = Writer {
            #[cfg(test)]
            failures: failures.clone(),
            conn,
            seq: 0,
            cache: cache.clone(),
            path: path.display().to_string(),
        };
        let interval = flush_interval.max(MIN_INTERVAL);
        let handle = std::thread::Builder::new()
            .name("tollgate-store".into())
            .spawn(move || writer.run(rx, interval))
            .map_err(|e| fail("cannot start the writer thread for", &e))?;
        Ok(Arc::new(LocalStore {
            tx: Some(tx),
            writer: Some(handle),
            cache,
            #[cfg(test)]
            failures,
        }))
    }

    /// Fail the next `n` transactions (tests only).
    #[cfg(test)]
    pub fn fail_writes(&self, n: usize) {
        self.failures.store(n, std::sync::atomic::Ordering::SeqCst);
    }

    async fn call(&self, req: Req) -> Result<(u64, Resp), StoreError> {
        let gone = || StoreError::Unavailable("the store writer thread has stopped".into());
        let (reply, rx) = oneshot::channel();
        let tx = self.tx.as_ref().ok_or_else(gone)?;
        tx.send(Op { req, reply }).map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    /// A consumer's balance, `None` if it was never set.
    pub async fn quota_get(&self, consumer: &str) -> Result<Stamped<Option<i64>>, StoreError> {
        match self.call(Req::Get(consumer.to_string())).await? {
            (seq, Resp::Balance(value)) => Ok(Stamped { seq, value }),
            _ => Err(mismatch()),
        }
    }

    /// Every stored balance.
    pub async fn quota_all(&self) -> Result<Stamped<Vec<(String, i64)>>, StoreError> {
        match self.call(Req::All).await? {
            (seq, Resp::All(value)) => Ok(Stamped { seq, value }),
            _ => Err(mismatch()),
        }
    }

    /// Set a balance; durable when this returns. Returns the balance.
    pub async fn quota_set(&self, consumer: &str, value: i64) -> Result<Stamped<i64>, StoreError> {
        match self.call(Req::Set(consumer.to_string(), value)).await? {
            (seq, Resp::Value(value)) => Ok(Stamped { seq, value }),
            _ => Err(mismatch()),
        }
    }

    /// Add `delta` (negative to charge) to a balance (a missing one counts as 0); durable
    /// when this returns. Returns the new balance. `Overflow` leaves it unchanged.
    pub async fn quota_add(&self, consumer: &str, delta: i64) -> Result<Stamped<i64>, StoreError> {
        match self.call(Req::Add(consumer.to_string(), delta)).await? {
            (seq, Resp::Value(value)) => Ok(Stamped { seq, value }),
            _ => Err(mismatch()),
        }
    }

    /// The total of window counter `key` for the window starting at `start` (unix seconds):
    /// committed plus not yet flushed. Memory only, never blocks.
    pub fn counter(&self, key: &str, start: u64) -> i64 {
        let shard = self.cache.shard(key);
        shard
            .map
            .get(key)
            .and_then(|m| m.get(&start))
            .map_or(0, Entry::total)
    }

    /// Add `delta` to a window counter in memory (flushed by the writer thread); returns
    /// the new total.
    pub fn counter_add(&self, key: &str, start: u64, delta: i64) -> i64 {
        self.cache.add_pending(key, start, delta, false)
    }

    /// A budget operation, committed when this returns.
    pub async fn budget(
        &self,
        req: super::budget_sql::BudgetReq,
    ) -> Result<Stamped<super::budget_sql::BudgetResp>, StoreError> {
        match self.call(Req::Budget(req)).await? {
            (seq, Resp::Budget(value)) => Ok(Stamped { seq, value }),
            _ => Err(mismatch()),
        }
    }

    /// Flush pending counter deltas and wait for the commit.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.call(Req::Flush).await.map(|_| ())
    }
}

fn mismatch() -> StoreError {
    StoreError::Backend("store writer sent a reply of the wrong kind".into())
}

impl Drop for LocalStore {
    /// Close the channel and wait for the writer's final flush (one transaction).
    fn drop(&mut self) {
        self.tx.take();
        if let Some(handle) = self.writer.take() {
            if handle.join().is_err() {
                log::error!("store: the writer thread panicked");
            }
        }
    }
}

struct Writer {
    #[cfg(test)]
    failures: Arc<std::sync::atomic::AtomicUsize>,
    conn: Connection,
    /// Operations committed so far: the last one's `Stamped::seq`.
    seq: u64,
    cache: Arc<Cache>,
    path: String,
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Op>, interval: Duration) {
        let mut last_prune = Instant::now();
        loop {
            let mut ops = Vec::new();
            let closed = match rx.recv_timeout(interval) {
                Ok(op) => {
                    ops.push(op);
                    ops.extend(rx.try_iter());
                    false
                }
                Err(RecvTimeoutError::Timeout) => false,
                Err(RecvTimeoutError::Disconnected) => true,
            };
            self.cycle(ops);
            if closed {
                return;
            }
            if last_prune.elapsed() >= PRUNE_EVERY {
                last_prune = Instant::now();
                self.prune();
            }
        }
    }

    /// One group commit: `ops` plus every pending counter delta.
    fn cycle(&mut self, ops: Vec<Op>) {
        let deltas = self.cache.take_deltas();
        if ops.is_empty() && deltas.is_empty() {
            return;
        }
        let mut attempt = 1;
        let outcome = loop {
            if self.injected_failure() {
                break Err(rusqlite::Error::InvalidQuery);
            }
            match write_batch(&mut self.conn, &ops, &deltas) {
                Err(e) if is_busy(&e) && attempt < ATTEMPTS => {
                    log::warn!("store {}: database busy, retrying: {e}", self.path);
                    attempt += 1;
                }
                other => break other,
            }
        };
        match outcome {
            Ok((results, counts)) => {
                self.cache.committed(&deltas, &counts);
                for (op, res) in ops.into_iter().zip(results) {
                    self.seq += 1;
                    let _ = op.reply.send(res.map(|r| (self.seq, r)));
                }
            }
            Err(e) => {
                log::error!(
                    "store {}: write failed ({} ops, {} counter deltas kept for retry): {e}",
                    self.path,
                    ops.len(),
                    deltas.len()
                );
                self.cache.failed(&deltas);
                for op in ops {
                    let _ = op
                        .reply
                        .send(Err(StoreError::Backend(format!("{}: {e}", self.path))));
                }
            }
        }
    }

    /// Whether the tests asked this transaction to fail ([`LocalStore::fail_writes`]).
    #[cfg(test)]
    fn injected_failure(&self) -> bool {
        use std::sync::atomic::Ordering::SeqCst;
        let take = |n: usize| n.checked_sub(1);
        self.failures.fetch_update(SeqCst, SeqCst, take).is_ok()
    }

    #[cfg(not(test))]
    #[inline(always)]
    fn injected_failure(&self) -> bool {
        false
    }

    fn prune(&mut self) {
        let cutoff = now_secs().saturating_sub(KEEP_SECS);
        self.cache.prune(cutoff);
        if let Err(e) = self
            .conn
            .execute("DELETE FROM counters WHERE start < ?1", [sql_i64(cutoff)])
        {
            log::warn!("store {}: pruning old counters failed: {e}", self.path);
        }
    }
}

type BatchResult = (Vec<Result<Resp, StoreError>>, Vec<i64>);

/// Run every op and counter delta in one immediate transaction. An SQL error aborts the
/// whole batch (nothing is applied); `Overflow` only fails its own op.
fn write_batch(
    conn: &mut Connection,
    ops: &[Op],
    deltas: &[Delta],
) -> rusqlite::Result<BatchResult> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut results = Vec::with_capacity(ops.len());
    for op in ops {
        let res = match &op.req {
            Req::Get(c) => Ok(Resp::Balance(get_balance(&tx, c)?)),
            Req::All => {
                let mut st =
                    tx.prepare_cached("SELECT consumer, balance FROM quota ORDER BY consumer")?;
                let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
                Ok(Resp::All(rows.collect::<rusqlite::Result<_>>()?))
            }
            Req::Set(c, v) => Ok(Resp::Value(
                tx.prepare_cached(
                    "INSERT INTO quota(consumer, balance) VALUES (?1, ?2)
                 ON CONFLICT(consumer) DO UPDATE SET balance = excluded.balance RETURNING balance",
                )?
                .query_row(params![c, v], |r| r.get(0))?,
            )),
            Req::Add(c, d) => match get_balance(&tx, c)?.unwrap_or(0).checked_add(*d) {
                None => Err(StoreError::Overflow),
                Some(_) => Ok(Resp::Value(
                    tx.prepare_cached(
                        "INSERT INTO quota(consumer, balance) VALUES (?1, ?2)
                     ON CONFLICT(consumer) DO UPDATE SET balance = balance + excluded.balance
                     RETURNING balance",
                    )?
                    .query_row(params![c, d], |r| r.get(0))?,
                )),
            },
            Req::Budget(b) => super::budget_sql::run(&tx, b)?.map(Resp::Budget),
            Req::Flush => Ok(Resp::Done),
        };
        results.push(res);
    }
    let mut counts = Vec::with_capacity(deltas.len());
    {
        let mut st = tx.prepare_cached(
            "INSERT INTO counters(key, start, count) VALUES (?1, ?2, ?3)
             ON CONFLICT(key, start) DO UPDATE SET count = count + excluded.count RETURNING count",
        )?;
        for (key, start, d) in deltas {
            counts.push(st.query_row(params![key, sql_i64(*start), d], |r| r.get(0))?);
        }
    }
    tx.commit()?;
    Ok((results, counts))
}

fn get_balance(tx: &rusqlite::Transaction<'_>, consumer: &str) -> rusqlite::Result<Option<i64>> {
    tx.prepare_cached("SELECT balance FROM quota WHERE consumer = ?1")?
        .query_row([consumer], |r| r.get(0))
        .optional()
}

#[cfg(test)]
#[path = "local_tests.rs"]
mod tests;
