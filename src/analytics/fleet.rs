//! The fleet's rollups: with `redis:` configured, every gateway also adds what it flushes to
//! the shared Redis, and the query API of any gateway reads the fleet's sums from there.
//!
//! Each flush (every `FLUSH_EVERY`) is one atomic script per batch of series: one hash per
//! minute (`m:{minute}`, kept 50 hours) and one per hour (`h:{minute}`, kept for the
//! retention), each field one number of one series, `{column}|{json [route, provider, model,
//! consumer, class]}`. So the write cost is one round trip per flush, one `HINCRBY` per
//! non-zero number of each active series, never one per request. A query reads the minute
//! hashes of the last 48 hours and the hour hashes before, loads them into an in-memory
//! SQLite table of the local file's schema, and runs the same SQL as a local query.
//!
//! When Redis is unreachable the series wait (at most `MAX_BACKLOG` of them, beyond that
//! their requests are counted in `tollgate_analytics_dropped_total`) and are sent once it is
//! back. A write that fails after it was sent (a timeout) is not sent again, since it may
//! have been applied; its requests are counted as dropped. The local file is written either
//! way.

use super::db::{self, number_columns};
use super::{SeriesKey, Sums, MINUTES_KEPT};
use crate::metrics::METRICS;
use crate::store::redis::RedisStore;
use crate::store::rollups::HashAdd;
use crate::store::StoreError;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Series waiting for Redis, at most.
const MAX_BACKLOG: usize = 100_000;
/// Series per script call.
const BATCH: usize = 500;
/// How long the minute hashes live (the query reads them for 48 hours).
const MINUTE_TTL: Duration = Duration::from_secs(50 * 3600);

/// The aggregating thread's writer to Redis.
pub struct Writer {
    redis: Arc<RedisStore>,
    runtime: tokio::runtime::Runtime,
    backlog: HashMap<SeriesKey, Sums>,
    hour_ttl: Duration,
}

impl Writer {
    pub fn new(redis: Arc<RedisStore>, retention: Duration) -> std::io::Result<Writer> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(Writer {
            redis,
            runtime,
            backlog: HashMap::new(),
            hour_ttl: retention.max(Duration::from_secs(3600)),
        })
    }

    /// Add `series` to the fleet's rollups, after any that still wait.
    pub fn send(&mut self, series: &HashMap<SeriesKey, Sums>) {
        for (k, s) in series {
            if self.backlog.len() >= MAX_BACKLOG && !self.backlog.contains_key(k) {
                METRICS.analytics_dropped.inc_by(s.requests);
                continue;
            }
            self.backlog.entry(k.clone()).or_default().merge(s);
        }
        if self.backlog.is_empty() || !self.redis.connected() {
            return;
        }
        let waiting: Vec<(SeriesKey, Sums)> = self.backlog.drain().collect();
        for batch in waiting.chunks(BATCH) {
            let adds = encode(batch, MINUTE_TTL, self.hour_ttl);
            match self.runtime.block_on(self.redis.usage_add(&adds)) {
                Ok(()) => {}
                Err(StoreError::Unavailable(_)) if !self.redis.connected() => {
                    // Not sent: keep it for the next flush.
                    self.backlog.extend(batch.iter().cloned());
                }
                Err(e) => {
                    let requests: u64 = batch.iter().map(|(_, s)| s.requests).sum();
                    log::warn!(
                        "analytics: {requests} requests not added to the fleet's rollups: {e}"
                    );
                    METRICS.analytics_dropped.inc_by(requests);
                }
            }
        }
    }
}

/// The hash field of column `col` of series `k`.
fn field(col: &str, k: &SeriesKey) -> String {
    let dims = [&k.route, &k.provider, &k.model, &k.consumer, &k.class];
    format!("{col}|{}", serde_json::to_string(&dims).unwrap_or_default())
}

/// The column and the series dimensions of a field.
fn parse_field(f: &str) -> Option<(&str, [String; 5])> {
    let (col, dims) = f.split_once('|')?;
    Some((col, serde_json::from_str(dims).ok()?))
}

/// The additions of `series` to their minute and hour hashes.
fn encode(series: &[(SeriesKey, Sums)], minute_ttl: Duration, hour_ttl: Duration) -> Vec<HashAdd> {
    let cols = number_columns();
    let mut hashes: HashMap<String, HashAdd> = HashMap::new();
    for (k, s) in series {
        let numbers = s.numbers();
        let fields: Vec<(String, i64)> = cols
            .iter()
            .zip(numbers)
            .filter(|(_, n)| *n != 0)
            .map(|(c, n)| (field(c, k), i64::try_from(n).unwrap_or(i64::MAX)))
            .collect();
        let hour = k.minute - k.minute % 60;
        for (name, ttl) in [
            (format!("m:{}", k.minute), minute_ttl),
            (format!("h:{hour}"), hour_ttl),
        ] {
            let h = hashes.entry(name.clone()).or_insert_with(|| HashAdd {
                name,
                ttl_secs: ttl.as_secs(),
                fields: Vec::new(),
            });
            h.fields.extend(fields.iter().cloned());
        }
    }
    let mut out: Vec<HashAdd> = hashes.into_values().collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The hashes that hold `[from, to)` (minutes) as of `now`: hours before the minute
/// hashes' 48 hours (an hour counts when its first minute is in the range, as in the local
/// file once folded), minutes after; never before `now - retention`, never after `now`.
fn hashes_for(from: u64, to: u64, now: u64, retention: Duration) -> Vec<String> {
    let from = from.max(now.saturating_sub(retention.as_secs() / 60));
    let to = to.min(now + 1);
    let minutes_from = now.saturating_sub(MINUTES_KEPT.as_secs() / 60);
    let minutes_from = minutes_from - minutes_from % 60;
    let mut names = Vec::new();
    let mut hour = from.div_ceil(60) * 60;
    while hour < to.min(minutes_from) {
        names.push(format!("h:{hour}"));
        hour += 60;
    }
    for minute in from.max(minutes_from)..to {
        names.push(format!("m:{minute}"));
    }
    names
}

/// One row of the fleet's rollups: minute, [route, provider, model, consumer, class],
/// the numbers in `db::number_columns` order.
pub type Row = (u64, [String; 5], Vec<i64>);

/// The fleet's rollups of `[from, to)` (minutes).
pub async fn read(
    redis: &RedisStore,
    from: u64,
    to: u64,
    now: u64,
    retention: Duration,
) -> Result<Vec<Row>, StoreError> {
    let names = hashes_for(from, to, now, retention);
    let hashes = redis.usage_read(&names).await?;
    let cols = number_columns();
    let mut rows = Vec::new();
    for (name, hash) in names.iter().zip(hashes) {
        let minute: u64 = name[2..].parse().unwrap_or(0);
        let mut series: HashMap<[String; 5], Vec<i64>> = HashMap::new();
        for (f, n) in &hash {
            let Some((col, dims)) = parse_field(f) else {
                continue;
            };
            let Some(i) = cols.iter().position(|c| c == col) else {
                continue;
            };
            series.entry(dims).or_insert_with(|| vec![0; cols.len()])[i] += n;
        }
        rows.extend(series.into_iter().map(|(d, n)| (minute, d, n)));
    }
    Ok(rows)
}

/// `rows` as the table the queries read.
pub fn table(rows: &[Row]) -> rusqlite::Result<rusqlite::Connection> {
    let mut conn = rusqlite::Connection::open_in_memory()?;
    db::create(&conn)?;
    let tx = conn.transaction()?;
    {
        let cols = number_columns();
        let marks = vec!["?"; 6 + cols.len()].join(", ");
        let mut stmt = tx.prepare(&format!(
            "INSERT INTO usage_minute (minute, route, provider, model, consumer, class, {}) VALUES ({marks})",
            cols.join(", ")
        ))?;
        for (minute, dims, numbers) in rows {
            let mut values: Vec<rusqlite::types::Value> =
                vec![i64::try_from(*minute).unwrap_or(i64::MAX).into()];
            values.extend(dims.iter().map(|d| d.clone().into()));
            values.extend(numbers.iter().map(|n| (*n).into()));
            stmt.execute(rusqlite::params_from_iter(values))?;
        }
    }
    tx.commit()?;
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(minute: u64, model: &str) -> SeriesKey {
        SeriesKey {
            minute,
            route: "r|1".into(),
            provider: "p".into(),
            model: model.into(),
            consumer: "c\"x".into(),
            class: "2xx".into(),
        }
    }

    #[test]
    fn fields_round_trip_any_name() {
        let k = key(7, "a|b,\"c\"\u{1f}");
        let f = field("lat3", &k);
        let (col, dims) = parse_field(&f).unwrap();
        assert_eq!(col, "lat3");
        assert_eq!(dims, ["r|1", "p", "a|b,\"c\"\u{1f}", "c\"x", "2xx"]);
    }

    #[test]
    fn encoding_writes_each_number_to_its_minute_and_hour() {
        let sums = Sums {
            requests: 2,
            input_tokens: 5,
            latency: {
                let mut l = [0; super::super::NBUCKETS];
                l[1] = 2;
                l
            },
            ..Sums::default()
        };
        let adds = encode(
            &[(key(61, "m"), sums.clone()), (key(62, "m"), sums)],
            Duration::from_secs(10),
            Duration::from_secs(20),
        );
        let names: Vec<&str> = adds.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["h:60", "m:61", "m:62"]);
        assert_eq!(adds[0].ttl_secs, 20);
        assert_eq!(adds[1].ttl_secs, 10);
        assert_eq!(adds[0].fields.len(), 6, "3 non-zero numbers, two minutes");
        assert_eq!(adds[1].fields.len(), 3);
        assert!(adds[1].fields.contains(&(field("lat1", &key(61, "m")), 2)));
    }

    #[test]
    fn hours_before_the_minutes_and_never_past_the_retention() {
        let day = Duration::from_secs(86_400);
        let now = 10_000 * 60 + 30;
        // The last hour only: minute hashes.
        let names = hashes_for(now - 60, now + 100, now, day);
        assert_eq!(names.len(), 61);
        assert_eq!(names[0], format!("m:{}", now - 60));
        assert_eq!(names[60], format!("m:{now}"));
        // Three days back: hours until the minutes' 48 hours start, the retention bounds it.
        let names = hashes_for(0, now, now, 3 * day);
        let hours = names.iter().filter(|n| n.starts_with("h:")).count();
        let minutes = names.iter().filter(|n| n.starts_with("m:")).count() as u64;
        let minutes_from = (now - 48 * 60) - (now - 48 * 60) % 60;
        assert_eq!(minutes, now - minutes_from);
        let first_hour = (now - 3 * 1440).div_ceil(60) * 60;
        assert_eq!(hours as u64, (minutes_from - first_hour) / 60);
        assert_eq!(
            hours, 23,
            "a day of hours before, less the one the retention cuts"
        );
        assert!(names.iter().all(|n| n[2..].parse::<u64>().unwrap() <= now));
    }

    #[test]
    fn the_table_answers_like_the_file() {
        let rows = vec![
            (60, ["r", "p", "m", "c", "2xx"].map(String::from), {
                let mut n = vec![0; number_columns().len()];
                n[0] = 3;
                n[1] = 40;
                n
            }),
            (61, ["r", "p", "m", "d", "2xx"].map(String::from), {
                let mut n = vec![0; number_columns().len()];
                n[0] = 1;
                n[1] = 2;
                n
            }),
        ];
        let conn = table(&rows).unwrap();
        let (r, t): (i64, i64) = conn
            .query_row(
                "SELECT SUM(requests), SUM(input_tokens) FROM usage_minute",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((r, t), (4, 42));
    }
}
