//! Consumer token quotas: a balance per consumer, reserved at admission, charged with the
//! real usage when the response ends, and set or topped up through the quota API.
//!
//! Where balances live:
//! - With `redis`: in Redis (`store::redis`). Admission is one script that admits while
//!   `balance − reserved_by_all_gateways ≥ max(reservation, 1)` and adds the reservation;
//!   the charge is one script that releases it and subtracts the usage. Several gateways
//!   share balances exactly. A charge that cannot reach Redis is retried in the background
//!   (lost only if the process dies before Redis comes back).
//! - Otherwise: in the embedded store (`store::local`). Every charge and every API change
//!   is committed (fsync'd, group commit) before it is acknowledged: the charge is awaited
//!   in the request's logging phase, so a graceful shutdown or upgrade waits for it, and a
//!   `kill -9` can lose only charges of responses that ended in the last fsync (a few ms).
//!   A charge the store fails to commit is retried in the background and counted as
//!   pending until it is committed.
//!   Reservations are counted in memory per process; admission reads the balance from
//!   memory, refreshed from the store by every charge and API change. Every answer of the
//!   store carries its commit's position (`Stamped::seq`), and an answer older than the one
//!   learnt is ignored, so a first read that started before a charge never undoes it.
//!
//! Either way, concurrent requests cannot overspend a balance by more than the difference
//! between what they reserved and what they used.

use crate::auth::Consumers;
use crate::error::GatewayError;
use crate::metrics::METRICS;
use crate::store::holds::{HoldId, Ticket};
use crate::store::local::{Learnt, Stamped};
use crate::store::{StoreError, Stores};
use arc_swap::ArcSwap;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Which consumers are charged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuotaScope {
    All,
    Listed(HashSet<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaSettings {
    pub scope: QuotaScope,
    /// The consumer allowed to use the quota API on the proxy listener.
    pub admin_consumer: Option<String>,
    pub reserve_max_tokens: bool,
}

impl QuotaSettings {
    pub fn applies(&self, consumer: &str) -> bool {
        match &self.scope {
            QuotaScope::All => true,
            QuotaScope::Listed(names) => names.contains(consumer),
        }
    }
}

/// A consumer's balance as this process knows it (embedded store only).
#[derive(Default)]
struct Account {
    /// The stamp of the store's answer `balance` came from.
    learnt: Learnt,
    balance: AtomicI64,
    reserved: AtomicI64,
    /// Charges being written: counted from before their reservation is released until the
    /// store's answer includes them, so admission never sees the room in between.
    pending: AtomicI64,
}

impl Account {
    /// Learn `answer` unless a newer one was learnt; whether it was.
    fn learn(&self, answer: Stamped<i64>) -> bool {
        self.learnt.newer(answer.seq, || {
            self.balance.store(answer.value, Ordering::SeqCst);
        })
    }
}

/// Show a consumer's balance as learnt (the `quota_remaining` gauge).
fn show(consumer: &str, balance: i64) {
    METRICS
        .quota_remaining
        .with_label_values(&[consumer])
        .set(balance);
}

/// An admitted request's reservation, released when it is charged.
#[derive(Debug)]
pub struct QuotaHold {
    consumer: String,
    reserved: i64,
    /// `false` when admitted without the store (fail-open): nothing to release.
    held: bool,
    /// Its name in the shared store (a settle is applied once per id).
    id: HoldId,
}

/// An operation of the quota API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaOp {
    Get,
    Set(i64),
    Add(i64),
}

/// Quota state of the process; lives across config reloads.
pub struct Quotas {
    stores: Arc<Stores>,
    accounts: ArcSwap<HashMap<String, Arc<Account>>>,
    /// Serialises inserts into `accounts` (rare: first sight of a consumer).
    insert: Mutex<()>,
}

fn store_error(e: StoreError) -> GatewayError {
    match e {
        StoreError::Overflow => {
            GatewayError::BadQuotaRequest("the resulting quota is out of range".into())
        }
        _ => GatewayError::StoreUnavailable("quotas"),
    }
}

impl Quotas {
    pub fn new(stores: Arc<Stores>) -> Self {
        Quotas {
            stores,
            accounts: ArcSwap::from_pointee(HashMap::new()),
            insert: Mutex::new(()),
        }
    }

    fn account(&self, consumer: &str) -> Arc<Account> {
        if let Some(a) = self.accounts.load().get(consumer) {
            return a.clone();
        }
        let _guard = self.insert.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.accounts.load();
        if let Some(a) = current.get(consumer) {
            return a.clone();
        }
        let mut next = (**current).clone();
        let account = Arc::new(Account::default());
        next.insert(consumer.to_string(), account.clone());
        self.accounts.store(Arc::new(next));
        account
    }

    /// Remember a balance Redis answered (only shown as a gauge: Redis admits).
    fn learn(&self, consumer: &str, balance: i64) {
        self.account(consumer)
            .balance
            .store(balance, Ordering::SeqCst);
        show(consumer, balance);
    }

    /// Remember a balance the embedded store answered, unless a newer answer (a higher
    /// stamp) was learnt already: answers of concurrent operations reach their callers in
    /// any order, and a first read that started before a charge must not undo it.
    fn learn_stamped(&self, consumer: &str, answer: Stamped<i64>) {
        if self.account(consumer).learn(answer) {
            show(consumer, answer.value);
        }
    }

    /// Admit `consumer` if its balance covers `reserve` tokens (at least one), reserving them.
    pub async fn admit(
        &self,
        settings: &QuotaSettings,
        consumer: &str,
        reserve: u64,
    ) -> Result<Option<QuotaHold>, GatewayError> {
        if !settings.applies(consumer) {
            return Ok(None);
        }
        let n = i64::try_from(reserve).unwrap_or(i64::MAX / 4);
        let refused = || {
            METRICS
                .quota_rejections
                .with_label_values(&[consumer])
                .inc();
            GatewayError::QuotaExceeded {
                consumer: consumer.to_string(),
            }
        };
        let id = HoldId::new();
        let hold = |held| QuotaHold {
            consumer: consumer.to_string(),
            reserved: n,
            held,
            id,
        };
        if let Some(redis) = &self.stores.redis {
            return match redis.quota_reserve(consumer, n, id).await {
                Ok(r) if r.admitted => {
                    METRICS
                        .quota_remaining
                        .with_label_values(&[consumer])
                        .set(r.balance);
                    Ok(Some(hold(true)))
                }
                Ok(_) => Err(refused()),
                Err(_) if self.stores.fail_open("quota") => Ok(Some(hold(false))),
                Err(_) => Err(GatewayError::StoreUnavailable("quotas")),
            };
        }
        let Some(local) = &self.stores.local else {
            return Err(GatewayError::StoreUnavailable("quotas"));
        };
        let account = self.account(consumer);
        if !account.learnt.loaded() {
            let answer = local.quota_get(consumer).await.map_err(store_error)?;
            self.learn_stamped(consumer, answer.map(|b| b.unwrap_or(0)));
        }
        let before = account.reserved.fetch_add(n, Ordering::SeqCst);
        if account
            .balance
            .load(Ordering::SeqCst)
            .saturating_sub(account.pending.load(Ordering::SeqCst))
            .saturating_sub(before)
            < n.max(1)
        {
            account.reserved.fetch_sub(n, Ordering::SeqCst);
            return Err(refused());
        }
        Ok(Some(hold(true)))
    }

    /// Release the reservation and charge the real usage.
    pub async fn charge(&self, hold: &QuotaHold, used: u64) {
        let used = i64::try_from(used).unwrap_or(i64::MAX / 4);
        let consumer = hold.consumer.as_str();
        METRICS
            .quota_charged_tokens
            .with_label_values(&[consumer])
            .inc_by(used.max(0) as u64);
        if let Some(redis) = self.stores.redis.clone() {
            let ticket = Ticket {
                id: hold.id,
                // Unconfirmed (`held` false), the reservation is settled if it was made
                // after all (its answer lost), under what was asked.
                reserved: hold.reserved.max(0),
                held: hold.held,
            };
            match redis.quota_settle(consumer, ticket, used).await {
                Ok(balance) => self.learn(consumer, balance),
                // Permanent: retrying would loop forever (nothing was changed).
                Err(StoreError::Overflow) => log::error!(
                    "charging {used} tokens to {consumer}'s quota would overflow its balance"
                ),
                // Retried with the same ticket: applied once even if this try was too.
                Err(_) => retry_settle(redis, consumer.to_string(), ticket, used),
            }
            return;
        }
        let Some(local) = &self.stores.local else {
            return;
        };
        let account = self.account(consumer);
        account.pending.fetch_add(used, Ordering::SeqCst);
        if hold.held {
            account.reserved.fetch_sub(hold.reserved, Ordering::SeqCst);
        }
        if used == 0 {
            return;
        }
        match local.quota_add(consumer, -used).await {
            Ok(answer) => self.learn_stamped(consumer, answer),
            Err(StoreError::Overflow) => log::error!(
                "charging {used} tokens to {consumer}'s quota would overflow its balance"
            ),
            Err(e) => {
                // Still counted as pending (admission sees it) until a retry commits it.
                log::error!("charging {used} tokens to {consumer}'s quota failed, retrying: {e}");
                retry_local_charge(local.clone(), account, consumer.to_string(), used);
                return;
            }
        }
        account.pending.fetch_sub(used, Ordering::SeqCst);
    }

    /// Apply an API operation to a consumer known to the config; returns the balance.
    pub async fn apply(
        &self,
        consumers: &Consumers,
        settings: Option<&QuotaSettings>,
        consumer: &str,
        op: QuotaOp,
    ) -> Result<i64, GatewayError> {
        if consumer.is_empty() {
            return Err(GatewayError::BadQuotaRequest(
                "the `consumer` parameter is required".into(),
            ));
        }
        if !consumers.names().iter().any(|n| n == consumer) {
            return Err(GatewayError::BadQuotaRequest(format!(
                "unknown consumer `{consumer}`"
            )));
        }
        if settings.is_none() {
            return Err(GatewayError::BadQuotaRequest(
                "quotas are not configured on this gateway".into(),
            ));
        }
        if let Some(redis) = &self.stores.redis {
            let balance = match op {
                QuotaOp::Get => redis.quota_get(consumer).await.map(|b| b.unwrap_or(0)),
                QuotaOp::Set(v) => redis.quota_set(consumer, v).await,
                QuotaOp::Add(d) => redis.quota_add(consumer, d).await,
            }
            .map_err(store_error)?;
            self.learn(consumer, balance);
            return Ok(balance);
        }
        let Some(local) = &self.stores.local else {
            return Err(GatewayError::StoreUnavailable("quotas"));
        };
        let answer = match op {
            QuotaOp::Get => local
                .quota_get(consumer)
                .await
                .map(|s| s.map(|b| b.unwrap_or(0))),
            QuotaOp::Set(v) => local.quota_set(consumer, v).await,
            QuotaOp::Add(d) => local.quota_add(consumer, d).await,
        }
        .map_err(store_error)?;
        self.learn_stamped(consumer, answer);
        Ok(answer.value)
    }

    /// Load every stored balance into memory and the gauges (at start).
    pub async fn preload(&self) {
        if let Some(local) = &self.stores.local {
            match local.quota_all().await {
                Ok(all) => {
                    let seq = all.seq;
                    for (consumer, value) in all.value {
                        self.learn_stamped(&consumer, Stamped { seq, value });
                    }
                }
                Err(e) => log::warn!("loading quota balances failed: {e}"),
            }
        }
    }
}

/// Charges being retried: waiting for Redis to come back (`retry_settle`) or for the
/// embedded store to commit them (`retry_local`).
static PENDING_CHARGES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// How many quota and budget charges are being retried; a graceful shutdown waits for them
/// (within the grace period).
pub fn pending_charges() -> usize {
    PENDING_CHARGES.load(Ordering::Acquire)
}

/// Counts a pending charge until dropped (settled, or the task ends).
struct Pending;

impl Pending {
    /// Count a charge as pending (until the value is dropped).
    fn start() -> Self {
        PENDING_CHARGES.fetch_add(1, Ordering::AcqRel);
        Pending
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        PENDING_CHARGES.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Keep trying a charge that could not reach Redis, with backoff up to a minute.
fn retry_settle(
    redis: Arc<crate::store::redis::RedisStore>,
    consumer: String,
    ticket: Ticket,
    used: i64,
) {
    log::warn!("charge of {used} tokens to {consumer}'s quota is pending until Redis answers");
    retry_in_background(move || {
        let (redis, consumer) = (redis.clone(), consumer.clone());
        async move { redis.quota_settle(&consumer, ticket, used).await }
    });
}

/// Retry a charge the embedded store failed to commit (a full disk, a lock held past every
/// retry) until it is committed; its tokens stay pending on the account until then.
fn retry_local_charge(
    local: Arc<crate::store::local::LocalStore>,
    account: Arc<Account>,
    consumer: String,
    used: i64,
) {
    let what = format!("charge of {used} tokens to {consumer}'s quota");
    let settled = account.clone();
    retry_local(
        what,
        move || {
            let (local, account, consumer) = (local.clone(), account.clone(), consumer.clone());
            async move {
                let answer = local.quota_add(&consumer, -used).await?;
                if account.learn(answer) {
                    show(&consumer, answer.value);
                }
                Ok(())
            }
        },
        move || {
            settled.pending.fetch_sub(used, Ordering::SeqCst);
        },
    );
}

/// Tries of a charge the embedded store failed to commit: about 16 minutes in all.
const LOCAL_RETRIES: usize = 20;

/// Retry `attempt` (a charge the embedded store failed to commit: `what`) in the background,
/// waiting 200 ms then doubling up to a minute between tries, until it is committed, fails
/// for good (an overflow, the store's writer gone) or has failed [`LOCAL_RETRIES`] times;
/// then `done` (the charge stops counting as pending). Counted as a pending charge, which a
/// graceful shutdown waits for.
pub(crate) fn retry_local<F, Fut>(what: String, attempt: F, done: impl FnOnce() + Send + 'static)
where
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(), StoreError>> + Send,
{
    let pending = Pending::start();
    tokio::spawn(async move {
        let _pending = pending;
        let mut wait = Duration::from_millis(200);
        let mut outcome = Err(StoreError::Backend("not tried".into()));
        for _ in 0..LOCAL_RETRIES {
            tokio::time::sleep(wait).await;
            outcome = attempt().await;
            if !matches!(outcome, Err(StoreError::Backend(_) | StoreError::Timeout)) {
                break;
            }
            wait = (wait * 2).min(Duration::from_secs(60));
        }
        match outcome {
            Ok(()) => log::info!("{what} committed on a retry"),
            Err(e) => log::error!("{what} is lost: {e}"),
        }
        done();
    });
}

/// Run `attempt` until it succeeds or overflows (final: nothing changed), in the
/// background, waiting 200 ms then doubling up to a minute between tries; counted as a
/// pending charge (which a graceful shutdown waits for) until then. Quota and budget charges
/// that could not reach Redis use it. After a day it gives up (logged): by then Redis no
/// longer knows whether an earlier try was applied (`store::holds`), and a retry could
/// charge twice.
pub fn retry_in_background<F, Fut, T>(attempt: F)
where
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<T, StoreError>> + Send,
{
    let pending = Pending::start();
    let give_up = std::time::Instant::now()
        + Duration::from_millis(
            crate::store::holds::MARKER_TTL_MS.min(crate::store::holds::TOMBSTONE_MS),
        );
    tokio::spawn(async move {
        let _pending = pending;
        let mut wait = Duration::from_millis(200);
        loop {
            tokio::time::sleep(wait).await;
            if !matches!(attempt().await, Err(e) if !matches!(e, StoreError::Overflow)) {
                return;
            }
            if std::time::Instant::now() >= give_up {
                log::error!("a charge that could not reach Redis for a day is dropped");
                return;
            }
            wait = (wait * 2).min(Duration::from_secs(60));
        }
    });
}

/// Parse an `application/x-www-form-urlencoded` body or query string.
pub fn form(text: &str) -> HashMap<String, String> {
    form_urlencoded::parse(text.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// An integer parameter of the quota API.
pub fn integer(params: &HashMap<String, String>, name: &str) -> Result<i64, GatewayError> {
    let raw = params.get(name).ok_or_else(|| {
        GatewayError::BadQuotaRequest(format!("the `{name}` parameter is required"))
    })?;
    raw.trim().parse::<i64>().map_err(|_| {
        GatewayError::BadQuotaRequest(format!(
            "`{name}` must be an integer between {} and {}",
            i64::MIN,
            i64::MAX
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_charges_never_overspend_a_balance() {
        let dir = tempfile::tempdir().unwrap();
        let local = crate::store::local::LocalStore::open(
            &dir.path().join("q.db"),
            Duration::from_millis(5),
        )
        .unwrap();
        let quotas = Arc::new(Quotas::new(Arc::new(Stores {
            local: Some(local),
            ..Stores::default()
        })));
        let settings = QuotaSettings {
            scope: QuotaScope::All,
            admin_consumer: None,
            reserve_max_tokens: true,
        };
        let store = quotas.stores.local.clone().unwrap();
        store.quota_set("alice", 1000).await.unwrap();
        let mut tasks = Vec::new();
        for _ in 0..400 {
            let (quotas, settings) = (quotas.clone(), settings.clone());
            tasks.push(tokio::spawn(async move {
                match quotas.admit(&settings, "alice", 10).await {
                    Ok(Some(hold)) => {
                        quotas.charge(&hold, 10).await;
                        10
                    }
                    _ => 0,
                }
            }));
        }
        let mut used = 0;
        for t in tasks {
            used += t.await.unwrap();
        }
        assert_eq!(used, 1000, "exactly the balance is served, never more");
        assert_eq!(store.quota_get("alice").await.unwrap().value, Some(0));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_charge_the_store_failed_to_commit_is_retried_and_counted_meanwhile() {
        let dir = tempfile::tempdir().unwrap();
        let local = crate::store::local::LocalStore::open(
            &dir.path().join("q.db"),
            Duration::from_millis(5),
        )
        .unwrap();
        let quotas = Quotas::new(Arc::new(Stores {
            local: Some(local.clone()),
            ..Stores::default()
        }));
        let settings = QuotaSettings {
            scope: QuotaScope::All,
            admin_consumer: None,
            reserve_max_tokens: true,
        };
        local.quota_set("alice", 100).await.unwrap();
        let hold = quotas.admit(&settings, "alice", 60).await.unwrap().unwrap();
        local.fail_writes(1);
        quotas.charge(&hold, 60).await;
        assert!(
            quotas.admit(&settings, "alice", 60).await.is_err(),
            "the failed charge is still counted"
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while quotas.account("alice").pending.load(Ordering::SeqCst) != 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the charge was retried"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(local.quota_get("alice").await.unwrap().value, Some(40));
        assert!(quotas.admit(&settings, "alice", 40).await.is_ok());
        assert!(quotas.admit(&settings, "alice", 1).await.is_err());
    }

    #[test]
    fn an_older_answer_never_undoes_a_newer_one() {
        let quotas = Quotas::new(Arc::new(Stores::default()));
        let at = |seq, value| Stamped { seq, value };
        let balance = |q: &Quotas| q.account("a").balance.load(Ordering::SeqCst);
        quotas.learn_stamped("a", at(5, 990));
        quotas.learn_stamped("a", at(3, 1000));
        assert_eq!(balance(&quotas), 990, "a first read answered late is older");
        quotas.learn_stamped("a", at(6, 2000));
        assert_eq!(balance(&quotas), 2000, "a top-up committed later is learnt");
    }

    #[test]
    fn form_and_integers() {
        let p = form("consumer=alice%20b&quota=12&value=-3&big=99999999999999999999&x=1.5");
        assert_eq!(p["consumer"], "alice b");
        assert_eq!(integer(&p, "quota").unwrap(), 12);
        assert_eq!(integer(&p, "value").unwrap(), -3);
        assert!(integer(&p, "big").is_err());
        assert!(integer(&p, "x").is_err());
        assert!(integer(&p, "missing").is_err());
    }
}
