//! The response cache through the management API: what this gateway holds, and purges.

use super::api::query;
use super::{json_response, Admin};
use crate::error::GatewayError;
use http::{Response, StatusCode};
use pingora_core::protocols::http::ServerSession;
use serde_json::json;

impl Admin {
    /// `GET /cache`: entries and bytes in this gateway's memory, and the routes with a cache
    /// (with a semantic cache: its model, threshold, and the questions indexed here).
    pub(super) async fn cache_stats(&self) -> Result<Response<Vec<u8>>, GatewayError> {
        let config = self.config.load_full();
        let (entries, bytes) = self.backends.cache().stats().await;
        let routes: Vec<serde_json::Value> = config
            .routes
            .iter()
            .filter_map(|r| {
                let c = r.cache.as_ref()?;
                let semantic = c.semantic.as_ref().map(|s| {
                    let st = self.backends.cache().semantic(&r.name).stats();
                    json!({"model": s.model, "threshold": s.threshold, "entries": st.entries,
                        "bytes": st.bytes, "graphed": st.graphed})
                });
                Some(
                    json!({"route": r.name, "ttl": humantime::format_duration(c.ttl).to_string(),
                    "scope": c.scope.as_str(), "charge": c.charge, "semantic": semantic}),
                )
            })
            .collect();
        let shared = self.backends.stores().redis.is_some();
        Ok(json_response(
            StatusCode::OK,
            json!({"entries": entries, "bytes": bytes, "shared_in_redis": shared, "routes": routes}),
        ))
    }

    /// `DELETE /cache?route=&model=&scope=`: drop the entries of a route, a model or a scope.
    pub(super) async fn cache_purge(
        &self,
        session: &ServerSession,
        who: &str,
    ) -> Result<Response<Vec<u8>>, GatewayError> {
        let (route, model, scope) = (
            query(session, "route"),
            query(session, "model"),
            query(session, "scope"),
        );
        if route.is_none() && model.is_none() && scope.is_none() {
            return Err(GatewayError::BadQuery(
                "name what to purge: ?route=, ?model= or ?scope= (e.g. consumer:alice)".into(),
            ));
        }
        let (memory, shared) = self
            .backends
            .cache()
            .purge(route.as_deref(), model.as_deref(), scope.as_deref())
            .await;
        let what = [("route", &route), ("model", &model), ("scope", &scope)]
            .iter()
            .filter_map(|(k, v)| Some(format!("{k}={}", v.as_deref()?)))
            .collect::<Vec<_>>()
            .join(" ");
        self.reloader.record(who, "purge", "cache", &what).await;
        Ok(json_response(
            StatusCode::OK,
            json!({"purged": {"memory": memory, "redis": shared}}),
        ))
    }
}
