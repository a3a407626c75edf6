//! Reading the rollups: time series grouped by any of route, provider, model, consumer and
//! status class over a range, their totals, a top-N, and CSV.

use super::db::{self, COSTS, COUNTS, SAVED};
use super::{BUCKETS_MS, NBUCKETS};
use rusqlite::params_from_iter;
use rusqlite::Connection;
use serde_json::{json, Map, Value};
use std::path::Path;

/// The dimensions a query can group and filter by.
pub const DIMENSIONS: [&str; 5] = ["route", "provider", "model", "consumer", "class"];

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("{0}")]
    Bad(String),
    #[error("analytics store: {0}")]
    Store(#[from] rusqlite::Error),
    #[error("the fleet's rollups in redis: {0}")]
    Fleet(#[from] crate::store::StoreError),
}

/// A query over `[from, to)` (unix milliseconds).
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub from_ms: u64,
    pub to_ms: u64,
    /// Points every `step_minutes` (0: one point for the whole range).
    pub step_minutes: u64,
    pub group_by: Vec<String>,
    pub filters: Vec<(String, String)>,
}

impl Query {
    /// From the URL query: `from`, `to` (RFC 3339 or unix seconds; default the last hour),
    /// `step` (`1m`, `1h`, …; default the whole range), `group_by=consumer,model`,
    /// `filter[route]=chat`.
    pub fn parse(query: Option<&str>, now_ms: u64) -> Result<Query, QueryError> {
        let mut q = Query {
            from_ms: now_ms.saturating_sub(3_600_000),
            to_ms: now_ms + 60_000,
            step_minutes: 0,
            group_by: Vec::new(),
            filters: Vec::new(),
        };
        let dim = |d: &str| -> Result<String, QueryError> {
            if DIMENSIONS.contains(&d) {
                Ok(d.to_string())
            } else {
                Err(QueryError::Bad(format!(
                    "`{d}`: group and filter by {}",
                    DIMENSIONS.join(", ")
                )))
            }
        };
        for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            match k.as_ref() {
                "from" => q.from_ms = time_ms(&v)?,
                "to" => q.to_ms = time_ms(&v)?,
                "step" => {
                    let d = humantime::parse_duration(&v)
                        .map_err(|e| QueryError::Bad(format!("step `{v}`: {e}")))?;
                    q.step_minutes = (d.as_secs() / 60).max(1);
                }
                "group_by" => {
                    for d in v.split(',').filter(|d| !d.is_empty()) {
                        q.group_by.push(dim(d)?);
                    }
                }
                "format" | "n" | "by" | "limit" => {}
                k => match k.strip_prefix("filter[").and_then(|k| k.strip_suffix(']')) {
                    Some(d) => q.filters.push((dim(d)?, v.into_owned())),
                    None => return Err(QueryError::Bad(format!("unknown parameter `{k}`"))),
                },
            }
        }
        if q.to_ms <= q.from_ms {
            return Err(QueryError::Bad("`to` must be after `from`".into()));
        }
        Ok(q)
    }

    fn where_clause(&self) -> (String, Vec<rusqlite::types::Value>) {
        let mut sql = "minute >= ? AND minute < ?".to_string();
        let mut args: Vec<rusqlite::types::Value> = vec![
            i64::try_from(self.from_ms / 60_000)
                .unwrap_or(i64::MAX)
                .into(),
            i64::try_from(self.to_ms.div_ceil(60_000))
                .unwrap_or(i64::MAX)
                .into(),
        ];
        for (d, v) in &self.filters {
            sql.push_str(&format!(" AND {d} = ?"));
            args.push(v.clone().into());
        }
        (sql, args)
    }
}

fn time_ms(text: &str) -> Result<u64, QueryError> {
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(secs.saturating_mul(1000));
    }
    let t = humantime::parse_rfc3339_weak(text)
        .map_err(|e| QueryError::Bad(format!("time `{text}`: {e} (RFC 3339 or unix seconds)")))?;
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    Ok(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The `p`-quantile's bucket bound (ms) of a histogram (`None` when empty; the last bucket
/// is `+Inf`, shown as its lower bound).
fn quantile(buckets: &[u64], p: f64) -> Option<f64> {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = (p * total as f64).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (i, n) in buckets.iter().enumerate() {
        seen += n;
        if seen >= rank {
            return Some(
                BUCKETS_MS
                    .get(i)
                    .copied()
                    .unwrap_or(BUCKETS_MS[BUCKETS_MS.len() - 1]),
            );
        }
    }
    None
}

/// The costs (`COSTS`) or savings (`SAVED`) of a row as exact decimals by currency
/// (`{"USD":"0.0042"}`; only those not zero).
fn cost_json(counts: &[i64], columns: [(usize, &str); 2]) -> Value {
    let mut m = Map::new();
    for (i, currency) in columns {
        let pico = u64::try_from(counts[i]).unwrap_or(0);
        if pico > 0 {
            m.insert(currency.to_string(), json!(crate::pricing::decimal(pico)));
        }
    }
    Value::Object(m)
}

/// One aggregated row: its group values, then the numbers.
fn row_json(counts: &[i64]) -> Value {
    let mut m = Map::new();
    for (name, n) in COUNTS.iter().zip(counts) {
        m.insert(name.to_string(), json!(n));
    }
    let as_u64 = |s: &[i64]| {
        s.iter()
            .map(|n| u64::try_from(*n).unwrap_or(0))
            .collect::<Vec<_>>()
    };
    m.insert("cost".to_string(), cost_json(counts, COSTS));
    m.insert("cache_saved".to_string(), cost_json(counts, SAVED));
    let lat = as_u64(&counts[COUNTS.len()..COUNTS.len() + NBUCKETS]);
    let ttft = as_u64(&counts[COUNTS.len() + NBUCKETS..]);
    for (name, h) in [("latency_ms", &lat), ("ttft_ms", &ttft)] {
        m.insert(
            name.to_string(),
            json!({"p50": quantile(h, 0.5), "p95": quantile(h, 0.95), "p99": quantile(h, 0.99)}),
        );
    }
    Value::Object(m)
}

/// A result row: its time (unix seconds; `None` for the whole range), the group's values,
/// the summed numbers (`db::number_columns` order).
type Row = (Option<u64>, Vec<String>, Vec<i64>);

/// Run `SELECT <time?>, <dims>, SUM(...) ... GROUP BY ...`.
fn select(
    conn: &rusqlite::Connection,
    q: &Query,
    by_time: bool,
    dims: &[String],
    order: &str,
) -> Result<Vec<Row>, QueryError> {
    let sums: Vec<String> = db::number_columns()
        .iter()
        .map(|c| format!("SUM({c})"))
        .collect();
    let step = q.step_minutes.max(1);
    let time = if by_time && q.step_minutes > 0 {
        format!("(minute / {step}) * {step}")
    } else {
        "0".to_string()
    };
    let mut group: Vec<String> = vec!["t".to_string()];
    group.extend(dims.iter().cloned());
    let dim_cols = if dims.is_empty() {
        String::new()
    } else {
        format!(", {}", dims.join(", "))
    };
    let (where_sql, args) = q.where_clause();
    let sql = format!(
        "SELECT {time} AS t{dim_cols}, {} FROM usage_minute WHERE {where_sql} GROUP BY {} {order}",
        sums.join(", "),
        group.join(", ")
    );
    let mut stmt = conn.prepare(&sql)?;
    let n = sums.len();
    let rows = stmt.query_map(params_from_iter(args), |r| {
        let t: i64 = r.get(0)?;
        let mut ds = Vec::new();
        for i in 0..dims.len() {
            ds.push(r.get::<_, String>(1 + i)?);
        }
        let mut nums = Vec::with_capacity(n);
        for i in 0..n {
            nums.push(r.get::<_, Option<i64>>(1 + dims.len() + i)?.unwrap_or(0));
        }
        Ok((t, ds, nums))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (t, ds, nums) = row?;
        let t = (by_time && q.step_minutes > 0).then(|| u64::try_from(t).unwrap_or(0) * 60);
        out.push((t, ds, nums));
    }
    Ok(out)
}

fn group_json(dims: &[String], values: &[String]) -> Value {
    Value::Object(
        dims.iter()
            .cloned()
            .zip(values.iter().map(|v| json!(v)))
            .collect(),
    )
}

/// This gateway's rollups file, for reading.
pub fn local(db: &Path) -> Result<Connection, QueryError> {
    Ok(db::connect(db)?)
}

/// Time series and totals, as JSON.
pub fn usage(conn: &Connection, q: &Query) -> Result<Value, QueryError> {
    let totals = select(conn, q, false, &q.group_by, "")?;
    let mut groups: Vec<Value> = totals
        .iter()
        .map(|(_, ds, nums)| json!({"group": group_json(&q.group_by, ds), "totals": row_json(nums), "points": []}))
        .collect();
    if q.step_minutes > 0 {
        for (t, ds, nums) in select(conn, q, true, &q.group_by, "ORDER BY t")? {
            if let Some(g) = groups
                .iter_mut()
                .find(|g| g["group"] == group_json(&q.group_by, &ds))
            {
                let mut point = row_json(&nums);
                point["time"] = json!(t);
                if let Some(points) = g["points"].as_array_mut() {
                    points.push(point);
                }
            }
        }
    }
    let all = select(conn, q, false, &[], "")?;
    let total = all
        .first()
        .map(|(_, _, n)| row_json(n))
        .unwrap_or(json!(null));
    Ok(json!({
        "from": q.from_ms / 1000,
        "to": q.to_ms / 1000,
        "step_seconds": q.step_minutes * 60,
        "group_by": q.group_by,
        "groups": groups,
        "totals": total,
    }))
}

/// The `n` largest groups by `by` (one dimension), ranked by input + output tokens.
pub fn top(conn: &Connection, q: &Query, by: &str, n: usize) -> Result<Value, QueryError> {
    if !DIMENSIONS.contains(&by) {
        return Err(QueryError::Bad(format!(
            "`by`: one of {}",
            DIMENSIONS.join(", ")
        )));
    }
    let dims = vec![by.to_string()];
    let order = format!(
        "ORDER BY SUM(input_tokens) + SUM(output_tokens) DESC LIMIT {}",
        n.min(1000)
    );
    let rows = select(conn, q, false, &dims, &order)?;
    let items: Vec<Value> = rows
        .iter()
        .map(|(_, ds, nums)| {
            let mut v = row_json(nums);
            v[by] = json!(ds[0]);
            v["tokens"] = json!(nums[1] + nums[3]);
            v
        })
        .collect();
    Ok(json!({"by": by, "items": items}))
}

/// Requests, input + output tokens and errors of the minutes `[from, to)` whose series
/// match `filters` (for alert rules).
pub fn totals(
    conn: &Connection,
    from_minute: u64,
    to_minute: u64,
    filters: &[(String, String)],
) -> Result<(u64, u64, u64), QueryError> {
    for (d, _) in filters {
        if !DIMENSIONS.contains(&d.as_str()) {
            return Err(QueryError::Bad(format!(
                "`{d}`: filter by {}",
                DIMENSIONS.join(", ")
            )));
        }
    }
    let q = Query {
        from_ms: from_minute * 60_000,
        to_ms: to_minute * 60_000,
        step_minutes: 0,
        group_by: Vec::new(),
        filters: filters.to_vec(),
    };
    let rows = select(conn, &q, false, &[], "")?;
    let n = |i: usize| {
        rows.first()
            .map_or(0, |(_, _, v)| u64::try_from(v[i]).unwrap_or(0))
    };
    Ok((n(0), n(1) + n(3), n(6)))
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The same as `usage`, one CSV row per group and point (the whole range when no step).
pub fn usage_csv(conn: &Connection, q: &Query) -> Result<String, QueryError> {
    let rows = select(conn, q, true, &q.group_by, "ORDER BY t")?;
    let mut head: Vec<String> = vec!["time".into()];
    head.extend(q.group_by.iter().cloned());
    head.extend(COUNTS.iter().map(|c| c.to_string()));
    head.extend(["cost_usd", "cost_cny", "cache_saved_usd", "cache_saved_cny"].map(String::from));
    head.extend(["latency_p50_ms", "latency_p95_ms", "latency_p99_ms"].map(String::from));
    let mut out = head.join(",");
    out.push('\n');
    for (t, ds, nums) in rows {
        let mut line: Vec<String> =
            vec![t.map_or_else(|| (q.from_ms / 1000).to_string(), |t| t.to_string())];
        line.extend(ds.iter().map(|d| csv_field(d)));
        line.extend(nums[..COUNTS.len()].iter().map(|n| n.to_string()));
        for (i, _) in COSTS.into_iter().chain(SAVED) {
            line.push(crate::pricing::decimal(u64::try_from(nums[i]).unwrap_or(0)));
        }
        let lat: Vec<u64> = nums[COUNTS.len()..COUNTS.len() + NBUCKETS]
            .iter()
            .map(|n| u64::try_from(*n).unwrap_or(0))
            .collect();
        for p in [0.5, 0.95, 0.99] {
            line.push(quantile(&lat, p).map(|v| v.to_string()).unwrap_or_default());
        }
        out.push_str(&line.join(","));
        out.push('\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses() {
        let q = Query::parse(
            Some("from=60&to=7200&step=1m&group_by=consumer,model&filter%5Broute%5D=chat"),
            0,
        )
        .unwrap();
        assert_eq!((q.from_ms, q.to_ms, q.step_minutes), (60_000, 7_200_000, 1));
        assert_eq!(q.group_by, ["consumer", "model"]);
        assert_eq!(q.filters, [("route".to_string(), "chat".to_string())]);
        assert!(Query::parse(Some("group_by=secret"), 0).is_err());
        assert!(Query::parse(Some("filter[x;drop]=1"), 0).is_err());
        assert!(Query::parse(Some("from=10&to=5"), 0).is_err());
        assert!(Query::parse(Some("bogus=1"), 0).is_err());
        assert_eq!(
            quantile(&[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], 0.5),
            Some(50.0)
        );
        assert_eq!(quantile(&[0; NBUCKETS], 0.5), None);
        assert_eq!(csv_field("a,b"), "\"a,b\"");
    }
}
