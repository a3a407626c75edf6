//! The rollups' SQLite file: one row per (minute, route, provider, model, consumer, status
//! class), every write an additive upsert (two processes of an upgrade may write the same
//! minute; both counts are kept). WAL mode, so queries read while the aggregator writes.

use super::{SeriesKey, Sums, NBUCKETS};
use rusqlite::{params_from_iter, Connection};
use std::collections::HashMap;
use std::path::Path;

pub const COUNTS: [&str; 7] = [
    "requests",
    "input_tokens",
    "cached_tokens",
    "output_tokens",
    "reasoning_tokens",
    "estimated",
    "errors",
];

/// Every numeric column: the counts, then the latency and TTFT buckets.
pub fn number_columns() -> Vec<String> {
    let mut cols: Vec<String> = COUNTS.iter().map(|c| c.to_string()).collect();
    cols.extend((0..NBUCKETS).map(|i| format!("lat{i}")));
    cols.extend((0..NBUCKETS).map(|i| format!("ttft{i}")));
    cols
}

pub struct Db {
    conn: Connection,
    upsert: String,
}

/// Open (and create) the rollups file; `readonly` for queries.
pub fn connect(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(2))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    let numbers: Vec<String> = number_columns()
        .iter()
        .map(|c| format!("{c} INTEGER NOT NULL DEFAULT 0"))
        .collect();
    conn.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS usage_minute (
           minute INTEGER NOT NULL, route TEXT NOT NULL, provider TEXT NOT NULL,
           model TEXT NOT NULL, consumer TEXT NOT NULL, class TEXT NOT NULL, {},
           PRIMARY KEY (minute, route, provider, model, consumer, class)) WITHOUT ROWID;",
        numbers.join(", ")
    ))?;
    Ok(conn)
}

impl Db {
    pub fn open(path: &Path) -> rusqlite::Result<Db> {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let conn = connect(path)?;
        let cols = number_columns();
        let marks = vec!["?"; 6 + cols.len()].join(", ");
        let update: Vec<String> = cols
            .iter()
            .map(|c| format!("{c} = {c} + excluded.{c}"))
            .collect();
        let upsert = format!(
            "INSERT INTO usage_minute (minute, route, provider, model, consumer, class, {}) VALUES ({marks})
             ON CONFLICT (minute, route, provider, model, consumer, class) DO UPDATE SET {}",
            cols.join(", "),
            update.join(", ")
        );
        Ok(Db { conn, upsert })
    }

    /// Add `series` to what is stored, in one transaction.
    pub fn add(&mut self, series: &HashMap<SeriesKey, Sums>) -> rusqlite::Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(&self.upsert)?;
            for (k, s) in series {
                let mut values: Vec<rusqlite::types::Value> = vec![
                    i64::try_from(k.minute).unwrap_or(i64::MAX).into(),
                    k.route.clone().into(),
                    k.provider.clone().into(),
                    k.model.clone().into(),
                    k.consumer.clone().into(),
                    k.class.clone().into(),
                ];
                let counts = [
                    s.requests,
                    s.input_tokens,
                    s.cached_tokens,
                    s.output_tokens,
                    s.reasoning_tokens,
                    s.estimated,
                    s.errors,
                ];
                let numbers = counts.iter().chain(&s.latency).chain(&s.ttft);
                values.extend(numbers.map(|n| i64::try_from(*n).unwrap_or(i64::MAX).into()));
                stmt.execute(params_from_iter(values))?;
            }
        }
        tx.commit()
    }

    /// Delete the minutes before `minute`.
    pub fn forget_before(&mut self, minute: u64) -> rusqlite::Result<usize> {
        self.conn.execute(
            "DELETE FROM usage_minute WHERE minute < ?1",
            [i64::try_from(minute).unwrap_or(i64::MAX)],
        )
    }
}
