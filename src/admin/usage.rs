//! The analytics routes of the management API: usage rollups (JSON or CSV), the top N, and
//! the recent requests. A query first has the rollups' thread write what it holds, so the
//! answer includes requests up to the call.

use super::api::query;
use super::{json_response, respond, Admin};
use crate::analytics::{query as rollups, Event, Query, QueryError};
use crate::error::GatewayError;
use http::{Response, StatusCode};
use pingora_core::protocols::http::ServerSession;
use serde_json::json;
use std::time::Duration;

fn failed(e: QueryError) -> GatewayError {
    match e {
        QueryError::Bad(m) => GatewayError::BadQuery(m),
        e @ (QueryError::Store(_) | QueryError::Fleet(_)) => {
            log::warn!("analytics query failed: {e}");
            GatewayError::StoreUnavailable("usage analytics")
        }
    }
}

impl Admin {
    pub(super) async fn usage_api(
        &self,
        session: &ServerSession,
        segs: &[&str],
    ) -> Result<Response<Vec<u8>>, GatewayError> {
        if !self.analytics.enabled() {
            return Err(GatewayError::BadQuery(
                "analytics are off (`analytics.enabled: false`)".into(),
            ));
        }
        if segs == ["requests"] {
            return Ok(self.recent(session));
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let now_ms = u64::try_from(now.as_millis()).unwrap_or(u64::MAX);
        let q = Query::parse(session.req_header().uri.query(), now_ms).map_err(failed)?;
        let csv = query(session, "format").as_deref() == Some("csv");
        let top = (segs == ["usage", "top"]).then(|| {
            let by = query(session, "by").unwrap_or_else(|| "consumer".into());
            let n = query(session, "n")
                .and_then(|n| n.parse().ok())
                .unwrap_or(10);
            (by, n)
        });
        let analytics = self.analytics.clone();
        let flushed = analytics.clone();
        // The answer includes this gateway's requests up to the call (and, with Redis, the
        // flush adds them to the fleet's rollups too).
        let _ = tokio::task::spawn_blocking(move || flushed.flush(Duration::from_secs(2))).await;
        // With Redis, the fleet's rollups; when Redis cannot answer, this gateway's own
        // (the answer's `scope` says which).
        let fleet = analytics
            .fleet_rows(
                q.from_ms / 60_000,
                q.to_ms.div_ceil(60_000),
                now_ms / 60_000,
                "usage query",
            )
            .await;
        let scope = if fleet.is_some() { "fleet" } else { "gateway" };
        let answer = tokio::task::spawn_blocking(move || {
            let conn = match &fleet {
                Some(rows) => crate::analytics::fleet::table(rows)?,
                None => rollups::local(analytics.db_path())?,
            };
            match (top, csv) {
                (Some((by, n)), _) => rollups::top(&conn, &q, &by, n).map(Ok),
                (None, true) => rollups::usage_csv(&conn, &q).map(Err),
                (None, false) => rollups::usage(&conn, &q).map(Ok),
            }
        })
        .await
        .map_err(|e| GatewayError::Internal(e.to_string()))?
        .map_err(failed)?
        .map(|mut v| {
            v["scope"] = json!(scope);
            v
        });
        Ok(match answer {
            Ok(v) => json_response(StatusCode::OK, v),
            Err(text) => respond(StatusCode::OK, "text/csv; charset=utf-8", text.into_bytes()),
        })
    }

    /// `GET /requests`: the ring, filtered.
    fn recent(&self, session: &ServerSession) -> Response<Vec<u8>> {
        let want = |name: &str| query(session, name);
        let (consumer, model, route) = (want("consumer"), want("model"), want("route"));
        let (status, id) = (want("status"), want("request_id"));
        let limit = want("limit")
            .and_then(|l| l.parse().ok())
            .unwrap_or(100_usize)
            .min(10_000);
        let keep = |e: &Event| {
            consumer.as_ref().is_none_or(|c| *c == e.consumer)
                && model.as_ref().is_none_or(|m| *m == e.model)
                && route.as_ref().is_none_or(|r| *r == e.route)
                && status.as_ref().is_none_or(|s| *s == e.status.to_string())
                && id.as_ref().is_none_or(|i| *i == e.request_id)
        };
        let items = self.analytics.recent(limit, keep);
        json_response(StatusCode::OK, json!({"items": items}))
    }
}
