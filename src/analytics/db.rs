//! The rollups' SQLite file: one row per (minute, route, provider, model, consumer, status
//! class), every write an additive upsert (two processes of an upgrade may write the same
//! minute; both counts are kept). WAL mode, so queries read while the aggregator writes.

use super::{SeriesKey, Sums, NBUCKETS};
use rusqlite::{params_from_iter, Connection};
use std::collections::HashMap;
use std::path::Path;

pub const COUNTS: [&str; 19] = [
    "requests",
    "input_tokens",
    "cached_tokens",
    "output_tokens",
    "reasoning_tokens",
    "estimated",
    "errors",
    "cost_usd_pico",
    "cost_cny_pico",
    "cache_hits",
    "cache_hit_tokens",
    "cache_saved_usd_pico",
    "cache_saved_cny_pico",
    "policy_actions",
    "policy_blocked",
    "images",
    "audio_ms",
    "characters",
    "search_units",
];

/// The cost columns of `COUNTS` (their index) and their currency.
pub const COSTS: [(usize, &str); 2] = [(7, "USD"), (8, "CNY")];

/// The columns of what response-cache hits saved (their index in `COUNTS`) and their
/// currency.
pub const SAVED: [(usize, &str); 2] = [(11, "USD"), (12, "CNY")];

/// `COUNTS` from this index on were added after the first release: a file that lacks them
/// gets them with `ALTER TABLE`.
const FIRST_ADDED: usize = 7;

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
    create(&conn)?;
    Ok(conn)
}

/// Create the rollups' table if it is not there.
pub fn create(conn: &Connection) -> rusqlite::Result<()> {
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
    for col in &COUNTS[FIRST_ADDED..] {
        let has: bool = conn
            .prepare("SELECT 1 FROM pragma_table_info('usage_minute') WHERE name = ?1")?
            .exists([col])?;
        if !has {
            conn.execute_batch(&format!(
                "ALTER TABLE usage_minute ADD COLUMN {col} INTEGER NOT NULL DEFAULT 0"
            ))?;
        }
    }
    Ok(())
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
                values.extend(
                    s.numbers()
                        .into_iter()
                        .map(|n| i64::try_from(n).unwrap_or(i64::MAX).into()),
                );
                stmt.execute(params_from_iter(values))?;
            }
        }
        tx.commit()
    }

    /// Fold the minute rows before `minute` (rounded down to an hour) into one row per hour
    /// and series (at the hour's first minute), keeping every sum; returns the rows folded.
    pub fn fold_into_hours(&mut self, minute: u64) -> rusqlite::Result<usize> {
        let cutoff = i64::try_from(minute - minute % 60).unwrap_or(i64::MAX);
        let cols = number_columns();
        let sums: Vec<String> = cols.iter().map(|c| format!("SUM({c})")).collect();
        let update: Vec<String> = cols
            .iter()
            .map(|c| format!("{c} = {c} + excluded.{c}"))
            .collect();
        let tx = self.conn.transaction()?;
        // Take the rows out first, so the upsert adds them to any hour row already there.
        tx.execute_batch(&format!(
            "CREATE TEMP TABLE IF NOT EXISTS fold AS SELECT * FROM usage_minute WHERE 0;
             DELETE FROM fold;
             INSERT INTO fold SELECT * FROM usage_minute WHERE minute < {cutoff} AND minute % 60 != 0;
             DELETE FROM usage_minute WHERE minute < {cutoff} AND minute % 60 != 0;"
        ))?;
        let folded = tx.query_row("SELECT COUNT(*) FROM fold", [], |r| r.get::<_, i64>(0))?;
        tx.execute_batch(&format!(
            "INSERT INTO usage_minute (minute, route, provider, model, consumer, class, {})
               SELECT (minute / 60) * 60, route, provider, model, consumer, class, {} FROM fold
               WHERE true GROUP BY (minute / 60) * 60, route, provider, model, consumer, class
             ON CONFLICT (minute, route, provider, model, consumer, class) DO UPDATE SET {};
             DELETE FROM fold;",
            cols.join(", "),
            sums.join(", "),
            update.join(", ")
        ))?;
        tx.commit()?;
        Ok(usize::try_from(folded).unwrap_or(0))
    }

    /// Delete the minutes before `minute`.
    pub fn forget_before(&mut self, minute: u64) -> rusqlite::Result<usize> {
        self.conn.execute(
            "DELETE FROM usage_minute WHERE minute < ?1",
            [i64::try_from(minute).unwrap_or(i64::MAX)],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cost_columns_are_where_costs_says() {
        assert_eq!(COUNTS[COSTS[0].0], "cost_usd_pico");
        assert_eq!(
            COUNTS[FIRST_ADDED], "cost_usd_pico",
            "the first column added"
        );
        assert_eq!(COUNTS[COSTS[1].0], "cost_cny_pico");
        assert_eq!(COUNTS[SAVED[0].0], "cache_saved_usd_pico");
        assert_eq!(COUNTS[SAVED[1].0], "cache_saved_cny_pico");
    }

    #[test]
    fn folding_into_hours_keeps_every_sum() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        let mut db = Db::open(&path).unwrap();
        let mut series = HashMap::new();
        for minute in [60, 61, 119, 120, 185, 300] {
            let key = SeriesKey {
                minute,
                route: "r".into(),
                provider: "p".into(),
                model: "m".into(),
                consumer: "c".into(),
                class: "2xx".into(),
            };
            let sums = Sums {
                requests: 1,
                input_tokens: minute,
                ..Sums::default()
            };
            series.insert(key, sums);
        }
        db.add(&series).unwrap();
        assert_eq!(
            db.fold_into_hours(250).unwrap(),
            3,
            "61, 119 and 185; 60 and 120 already are hours"
        );
        let rows: Vec<(i64, i64, i64)> = db
            .conn
            .prepare("SELECT minute, requests, input_tokens FROM usage_minute ORDER BY minute")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(
            rows,
            [(60, 3, 240), (120, 1, 120), (180, 1, 185), (300, 1, 300)]
        );
    }
}
