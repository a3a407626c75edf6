//! The spend of every budget, as this process keeps it: reservations and charges against
//! the embedded store or Redis (`crate::store::budget_sql`, `crate::store::budgets`), and
//! the operations of the budgets API (read, top up, reset, history).
//!
//! With the embedded store, reservations are counted in memory per process and the spend
//! of the current period is read once from the store, then learnt from every charge (each
//! committed before the request's end is logged, so `kill -9` loses at most the charges of
//! the last commit) and API change; of answers that arrive out of order, the one committed
//! last (`Stamped::seq`) is what is known. With Redis, one script reserves under every budget of a request, all
//! or nothing, against the spend and reservations of every gateway.

use super::{money, Budget};
use crate::metrics::METRICS;
use crate::store::budget_sql::{BudgetReq, BudgetResp, Row, Slot, Spend};
use crate::store::holds::{HoldId, Ticket};
use crate::store::local::{Learnt, Stamped};
use crate::store::{StoreError, Stores};
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

/// A budget, a subject, a period: what is known of it here (embedded store only).
struct Account {
    start: i64,
    /// The stamp of the store's answer `committed` and `topup` came from.
    learnt: Learnt,
    /// The spend as the store last answered (it only grows, but for a reset).
    committed: AtomicI64,
    /// Charges being written: counted from before their reservation is released until the
    /// store's answer includes them, so the spend seen never dips in between.
    pending: AtomicI64,
    topup: AtomicI64,
    reserved: AtomicI64,
}

impl Account {
    fn new(start: i64) -> Self {
        Account {
            start,
            learnt: Learnt::default(),
            committed: AtomicI64::new(0),
            pending: AtomicI64::new(0),
            topup: AtomicI64::new(0),
            reserved: AtomicI64::new(0),
        }
    }

    /// What requests in flight hold: their reservations, and the charges of those settling
    /// (from the release of their reservation until the store has the charge).
    fn in_flight(&self) -> i64 {
        self.reserved
            .load(Ordering::SeqCst)
            .saturating_add(self.pending.load(Ordering::SeqCst))
    }

    fn spent(&self) -> i64 {
        self.committed
            .load(Ordering::SeqCst)
            .saturating_add(self.pending.load(Ordering::SeqCst))
    }
}

/// One admitted request's reservation under one budget, settled when it ends.
#[derive(Debug, Clone)]
pub struct BudgetHold {
    pub budget: Arc<Budget>,
    pub subject: String,
    pub start: i64,
    pub reserved: i64,
    /// `false` when admitted without the store (fail-open): nothing to release.
    held: bool,
    /// The request's name in the shared store (a settle is applied once per id).
    id: HoldId,
}

/// Why a request was not admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// The budget has no room for the reservation.
    Spent {
        budget: String,
        subject: String,
        spent: i64,
        allowance: i64,
        currency: &'static str,
        /// When its period ends, local time (`None`: a lifetime budget).
        resets: Option<String>,
    },
    Store,
}

/// A period's standing, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Standing {
    pub subject: String,
    pub start: i64,
    pub end: Option<i64>,
    pub spend: Spend,
    pub reserved: i64,
}

/// A wanted reservation: the budget, its subject, the amount.
pub type Want = (Arc<Budget>, String, i64);

pub struct Budgets {
    stores: Arc<Stores>,
    accounts: ArcSwap<HashMap<(String, String), Arc<Account>>>,
    insert: Mutex<()>,
}

fn slot(budget: &Budget, subject: &str, start: i64) -> Slot {
    Slot {
        budget: budget.name.clone(),
        subject: subject.to_string(),
        start,
    }
}

impl Budgets {
    pub fn new(stores: Arc<Stores>) -> Self {
        Budgets {
            stores,
            accounts: ArcSwap::from_pointee(HashMap::new()),
            insert: Mutex::new(()),
        }
    }

    /// The account of a budget's subject in the period beginning at `start`. A later period
    /// replaces an earlier one's account (memory stays one account per budget and subject);
    /// an earlier period never replaces a later one: a request of the period before, ending
    /// after the turn, is settled on an account of its own (admission is always in the
    /// current period, so nothing reads it), not on one that would take the place of the
    /// current period's and lose its reservations.
    fn account(&self, budget: &str, subject: &str, start: i64) -> Arc<Account> {
        let key = (budget.to_string(), subject.to_string());
        if let Some(a) = self.accounts.load().get(&key).filter(|a| a.start == start) {
            return a.clone();
        }
        let _guard = self.insert.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.accounts.load();
        match current.get(&key) {
            Some(a) if a.start == start => return a.clone(),
            Some(a) if a.start > start => return Arc::new(Account::new(start)),
            _ => {}
        }
        let mut next = (**current).clone();
        let account = Arc::new(Account::new(start));
        next.insert(key, account.clone());
        self.accounts.store(Arc::new(next));
        account
    }

    /// Charges of `subject` under `budget` in the period from `start` not yet committed.
    #[cfg(test)]
    pub(super) fn pending(&self, budget: &str, subject: &str, start: i64) -> i64 {
        self.account(budget, subject, start)
            .pending
            .load(Ordering::SeqCst)
    }

    /// Remember what the store answered, unless a newer answer (a higher stamp) was learnt
    /// already: answers of concurrent operations reach their callers in any order, and a
    /// first read, or a charge, answered late must not undo a later charge, top-up or reset.
    fn learn(a: &Account, answer: Stamped<Spend>) {
        a.learnt.newer(answer.seq, || {
            a.committed.store(answer.value.spent, Ordering::SeqCst);
            a.topup.store(answer.value.topup, Ordering::SeqCst);
        });
    }

    async fn local_op(&self, req: BudgetReq) -> Result<Stamped<BudgetResp>, StoreError> {
        match &self.stores.local {
            Some(local) => local.budget(req).await,
            None => Err(StoreError::Unavailable("no store for budgets".into())),
        }
    }

    async fn local_spend(&self, req: BudgetReq) -> Result<Stamped<Spend>, StoreError> {
        spend_of(self.local_op(req).await?)
    }

    fn refused(want: &Want, spend: Spend, now: i64) -> Refused {
        let (budget, subject, _) = want;
        METRICS
            .budget_rejections
            .with_label_values(&[budget.name.as_str()])
            .inc();
        let period = budget.periods.at(now);
        Refused::Spent {
            budget: budget.name.clone(),
            subject: subject.clone(),
            spent: spend.spent,
            allowance: budget.limit.saturating_add(spend.topup),
            currency: budget.currency.as_str(),
            resets: period.end.map(|e| budget.periods.local(e)),
        }
    }

    /// Reserve under every budget of `wants` (soft ones reserve nothing) if each has room;
    /// all or nothing.
    pub async fn admit(&self, wants: &[Want], now: i64) -> Result<Vec<BudgetHold>, Refused> {
        if wants.is_empty() {
            return Ok(Vec::new());
        }
        let id = HoldId::new();
        let hold = |(b, s, n): &Want, held| BudgetHold {
            budget: b.clone(),
            subject: s.clone(),
            start: b.periods.at(now).start,
            reserved: if b.soft { 0 } else { (*n).max(0) },
            held,
            id,
        };
        if let Some(redis) = &self.stores.redis {
            // Soft budgets too: their hold (of nothing) names the request, so a retried
            // settle is recognised.
            let items: Vec<(Slot, Option<i64>, i64)> = wants
                .iter()
                .map(|(b, s, n)| {
                    let limit = (!b.soft).then_some(b.limit);
                    (slot(b, s, b.periods.at(now).start), limit, *n)
                })
                .collect();
            return match redis.budget_reserve(&items, id).await {
                Ok(None) => Ok(wants.iter().map(|w| hold(w, true)).collect()),
                Ok(Some((i, spend))) => {
                    Err(Self::refused(&wants[i.min(wants.len() - 1)], spend, now))
                }
                // Soft budgets never refuse a request, whatever the store does.
                Err(_) if wants.iter().all(|w| w.0.soft) || self.stores.fail_open("budget") => {
                    Ok(wants.iter().map(|w| hold(w, false)).collect())
                }
                Err(_) => Err(Refused::Store),
            };
        }
        let mut holds = Vec::with_capacity(wants.len());
        for want in wants {
            let h = hold(want, true);
            let s = slot(&h.budget, &h.subject, h.start);
            let account = self.account(&s.budget, &s.subject, s.start);
            if !account.learnt.loaded() {
                match self.local_spend(BudgetReq::Read(s.clone())).await {
                    Ok(spend) => Self::learn(&account, spend),
                    Err(_) => {
                        self.release_all(&holds);
                        return Err(Refused::Store);
                    }
                }
            }
            let before = account.reserved.fetch_add(h.reserved, Ordering::SeqCst);
            let spent = account.spent();
            let allowance = h
                .budget
                .limit
                .saturating_add(account.topup.load(Ordering::SeqCst));
            if !h.budget.soft
                && allowance
                    .saturating_sub(spent)
                    .saturating_sub(before)
                    .saturating_sub(h.reserved)
                    < 0
            {
                account.reserved.fetch_sub(h.reserved, Ordering::SeqCst);
                self.release_all(&holds);
                let spend = Spend {
                    spent,
                    topup: account.topup.load(Ordering::SeqCst),
                };
                return Err(Self::refused(want, spend, now));
            }
            holds.push(h);
        }
        Ok(holds)
    }

    /// Give back in-memory reservations (embedded store) of holds not to be settled.
    fn release_all(&self, holds: &[BudgetHold]) {
        for h in holds {
            self.account(&h.budget.name, &h.subject, h.start)
                .reserved
                .fetch_sub(h.reserved, Ordering::SeqCst);
        }
    }

    /// Release a hold's reservation and add what the request cost (picounits, in the
    /// budget's currency).
    pub async fn settle(&self, hold: &BudgetHold, cost: i64) {
        let s = slot(&hold.budget, &hold.subject, hold.start);
        if cost > 0 {
            METRICS
                .budget_spent
                .with_label_values(&[hold.budget.name.as_str(), hold.budget.currency.as_str()])
                .inc_by(cost as f64 / crate::pricing::PICO as f64);
        }
        if let Some(redis) = self.stores.redis.clone() {
            let ticket = Ticket {
                id: hold.id,
                // Unconfirmed (`held` false), the reservation is settled if it was made
                // after all (its answer lost), under what was asked.
                reserved: hold.reserved,
                held: hold.held,
            };
            if let Err(e) = redis.budget_settle(&s, ticket, cost).await {
                // Retried with the same ticket: applied once even if this try was too.
                if !matches!(e, StoreError::Overflow) {
                    retry_settle(redis, s, ticket, cost);
                }
            }
            return;
        }
        let account = self.account(&s.budget, &s.subject, s.start);
        account.pending.fetch_add(cost, Ordering::SeqCst);
        if hold.held {
            account.reserved.fetch_sub(hold.reserved, Ordering::SeqCst);
        }
        if cost == 0 {
            return;
        }
        match self.local_spend(charge(s.clone(), cost)).await {
            Ok(spend) => Self::learn(&account, spend),
            Err(StoreError::Overflow) => log::error!(
                "charging {} to budget {} ({}) would overflow its spend",
                money(cost),
                s.budget,
                s.subject
            ),
            Err(e) => {
                // Still counted as pending (admission sees it) until a retry commits it.
                log::error!(
                    "charging {} to budget {} ({}) failed, retrying: {e}",
                    money(cost),
                    s.budget,
                    s.subject
                );
                if let Some(local) = self.stores.local.clone() {
                    retry_local_charge(local, account, s, cost);
                    return;
                }
            }
        }
        account.pending.fetch_sub(cost, Ordering::SeqCst);
    }

    /// The standing of `subject` under `budget` in the period of `now`; with `change`, top
    /// it up by `Some(amount)` or reset its spend (`None`) first.
    pub async fn standing(
        &self,
        budget: &Budget,
        subject: &str,
        now: i64,
        change: Option<Option<i64>>,
    ) -> Result<Standing, StoreError> {
        let period = budget.periods.at(now);
        let s = slot(budget, subject, period.start);
        let (spend, reserved) = if let Some(redis) = &self.stores.redis {
            match change {
                None => redis.budget_change(&s, Some(0), true).await?,
                Some(c) => redis.budget_change(&s, c, false).await?,
            }
        } else {
            let req = match change {
                None => BudgetReq::Read(s.clone()),
                Some(Some(d)) => BudgetReq::Add {
                    slot: s.clone(),
                    spent: 0,
                    topup: d,
                },
                Some(None) => BudgetReq::Reset(s.clone()),
            };
            let account = self.account(&s.budget, &s.subject, s.start);
            // Taken before the read: a charge the answer lacks is committed after it, so
            // it was still held here (reserved, or pending once settling began). After the
            // read, a charge released and not yet committed would be in neither figure.
            let reserved = account.in_flight();
            let answer = self.local_spend(req).await?;
            Self::learn(&account, answer);
            (answer.value, reserved)
        };
        Ok(Standing {
            subject: subject.to_string(),
            start: period.start,
            end: period.end,
            spend,
            reserved,
        })
    }

    /// Stored rows of `budget`: of one subject's periods, or of one period's subjects.
    pub async fn rows(
        &self,
        budget: &str,
        subject: Option<&str>,
        start: Option<i64>,
        limit: usize,
    ) -> Result<Vec<Row>, StoreError> {
        if let Some(redis) = &self.stores.redis {
            return redis.budget_rows(budget, subject, start, limit).await;
        }
        let req = BudgetReq::Rows {
            budget: budget.to_string(),
            subject: subject.map(str::to_string),
            start,
            limit,
        };
        match self.local_op(req).await?.value {
            BudgetResp::Rows(r) => Ok(r),
            BudgetResp::Spend(_) => Err(StoreError::Backend("unexpected budget reply".into())),
        }
    }
}

/// The request that adds `cost` to the spend of `slot`.
fn charge(slot: Slot, cost: i64) -> BudgetReq {
    BudgetReq::Add {
        slot,
        spent: cost,
        topup: 0,
    }
}

/// The spend a budget operation answered.
fn spend_of(answer: Stamped<BudgetResp>) -> Result<Stamped<Spend>, StoreError> {
    match answer.value {
        BudgetResp::Spend(spend) => Ok(answer.map(|_| spend)),
        BudgetResp::Rows(_) => Err(StoreError::Backend("unexpected budget reply".into())),
    }
}

/// Retry a charge the embedded store failed to commit until it is committed; its cost stays
/// pending on the account until then.
fn retry_local_charge(
    local: Arc<crate::store::local::LocalStore>,
    account: Arc<Account>,
    slot: Slot,
    cost: i64,
) {
    let what = format!(
        "charge of {} to budget {} ({})",
        money(cost),
        slot.budget,
        slot.subject
    );
    let settled = account.clone();
    crate::quota::retry_local(
        what,
        move || {
            let (local, account, slot) = (local.clone(), account.clone(), slot.clone());
            async move {
                Budgets::learn(&account, spend_of(local.budget(charge(slot, cost)).await?)?);
                Ok(())
            }
        },
        move || {
            settled.pending.fetch_sub(cost, Ordering::SeqCst);
        },
    );
}

/// Keep trying a charge that could not reach Redis, with backoff up to a minute (counted
/// with the quota charges a graceful shutdown waits for).
fn retry_settle(redis: Arc<crate::store::redis::RedisStore>, s: Slot, ticket: Ticket, cost: i64) {
    log::warn!(
        "charge of {} to budget {} ({}) is pending until Redis answers",
        money(cost),
        s.budget,
        s.subject
    );
    crate::quota::retry_in_background(move || {
        let (redis, s) = (redis.clone(), s.clone());
        async move { redis.budget_settle(&s, ticket, cost).await }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_older_answer_never_undoes_a_newer_one() {
        let budgets = Budgets::new(Arc::new(Stores::default()));
        let a = budgets.account("b", "chat", 0);
        let at = |seq, spent, topup| Stamped {
            seq,
            value: Spend { spent, topup },
        };
        let known = |b: &Budgets| {
            let a = b.account("b", "chat", 0);
            (
                a.committed.load(Ordering::SeqCst),
                a.topup.load(Ordering::SeqCst),
            )
        };
        Budgets::learn(&a, at(5, 100, 10));
        Budgets::learn(&a, at(3, 50, 0));
        assert_eq!(
            known(&budgets),
            (100, 10),
            "a first read answered late is older"
        );
        Budgets::learn(&a, at(7, 0, 10));
        Budgets::learn(&a, at(6, 120, 10));
        assert_eq!(
            known(&budgets),
            (0, 10),
            "a charge answered after a later reset does not bring the spend back"
        );
        Budgets::learn(&a, at(8, 30, 10));
        assert_eq!(known(&budgets), (30, 10));
    }
}
