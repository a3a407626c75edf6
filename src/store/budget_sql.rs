//! Budget spend in the embedded store: the table `budget(budget, subject, start, spent,
//! topup)`, one row per budget, subject and period (its start, unix seconds). Every write is
//! relative (`spent = spent + ?`) and runs in the writer's immediate transaction, so two
//! processes sharing the file during an upgrade both count exactly.

use super::StoreError;
use rusqlite::{params, OptionalExtension, Transaction};

/// A budget, a subject and a period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub budget: String,
    pub subject: String,
    pub start: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BudgetReq {
    Read(Slot),
    /// Add to the spend and to the top-ups (either may be 0 or negative).
    Add {
        slot: Slot,
        spent: i64,
        topup: i64,
    },
    /// Spend back to 0 (top-ups are kept).
    Reset(Slot),
    /// Rows of one budget, newest period first: of one subject, or of one period, or all;
    /// at most `limit`.
    Rows {
        budget: String,
        subject: Option<String>,
        start: Option<i64>,
        limit: usize,
    },
}

/// A period's figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Spend {
    pub spent: i64,
    pub topup: i64,
}

/// One row: subject, period start, figures.
pub type Row = (String, i64, Spend);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BudgetResp {
    Spend(Spend),
    Rows(Vec<Row>),
}

fn read(tx: &Transaction<'_>, s: &Slot) -> rusqlite::Result<Spend> {
    Ok(tx
        .prepare_cached(
            "SELECT spent, topup FROM budget WHERE budget = ?1 AND subject = ?2 AND start = ?3",
        )?
        .query_row(params![s.budget, s.subject, s.start], |r| {
            Ok(Spend {
                spent: r.get(0)?,
                topup: r.get(1)?,
            })
        })
        .optional()?
        .unwrap_or_default())
}

/// Run one request inside the writer's transaction; an SQL error aborts the batch.
pub(super) fn run(
    tx: &Transaction<'_>,
    req: &BudgetReq,
) -> rusqlite::Result<Result<BudgetResp, StoreError>> {
    Ok(Ok(match req {
        BudgetReq::Read(s) => BudgetResp::Spend(read(tx, s)?),
        BudgetReq::Add { slot, spent, topup } => {
            let now = read(tx, slot)?;
            if now.spent.checked_add(*spent).is_none() || now.topup.checked_add(*topup).is_none() {
                return Ok(Err(StoreError::Overflow));
            }
            let row = tx
                .prepare_cached(
                    "INSERT INTO budget(budget, subject, start, spent, topup) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT(budget, subject, start) DO UPDATE
                       SET spent = spent + excluded.spent, topup = topup + excluded.topup
                     RETURNING spent, topup",
                )?
                .query_row(
                    params![slot.budget, slot.subject, slot.start, spent, topup],
                    |r| Ok(Spend { spent: r.get(0)?, topup: r.get(1)? }),
                )?;
            BudgetResp::Spend(row)
        }
        BudgetReq::Reset(s) => {
            tx.prepare_cached(
                "UPDATE budget SET spent = 0 WHERE budget = ?1 AND subject = ?2 AND start = ?3",
            )?
            .execute(params![s.budget, s.subject, s.start])?;
            BudgetResp::Spend(read(tx, s)?)
        }
        BudgetReq::Rows {
            budget,
            subject,
            start,
            limit,
        } => {
            let mut st = tx.prepare_cached(
                "SELECT subject, start, spent, topup FROM budget
                 WHERE budget = ?1 AND (?2 IS NULL OR subject = ?2) AND (?3 IS NULL OR start = ?3)
                 ORDER BY start DESC, subject LIMIT ?4",
            )?;
            let limit = i64::try_from(*limit).unwrap_or(i64::MAX);
            let rows = st.query_map(params![budget, subject, start, limit], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    Spend {
                        spent: r.get(2)?,
                        topup: r.get(3)?,
                    },
                ))
            })?;
            BudgetResp::Rows(rows.collect::<rusqlite::Result<_>>()?)
        }
    }))
}
