//! Active health checks: a Pingora background service that sends one small chat request per
//! key out of rotation (or suspect: a client request was refused with it, see `keys`) per
//! `check_interval`. Other keys are never checked and requests never wait for a check. The
//! check request is built by the gateway alone, so its answer says something about the key,
//! never about a client.

use crate::keys::CheckResult;
use crate::metrics::METRICS;
use crate::provider::Provider;
use crate::route::Endpoint;
use crate::runtime::SharedConfig;
use async_trait::async_trait;
use bytes::Bytes;
use pingora_core::connectors::http::Connector;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use pingora_http::RequestHeader;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Sends health checks for keys out of rotation.
pub struct Checker {
    pub config: SharedConfig,
    pub connector: Connector,
}

async fn check_key(connector: &Connector, provider: &Provider, key_index: usize) -> CheckResult {
    let Some(key) = provider.keys.get(key_index) else {
        return CheckResult::Failed;
    };
    let Some(peer) = provider.peer() else {
        return CheckResult::Failed;
    };
    let model = provider.health.check_model.as_str();
    let chat: Bytes = serde_json::to_vec(&serde_json::json!({
        "model": model,
        "messages": [{"role": "user", "content": "ping"}],
        "max_tokens": 1,
    }))
    .unwrap_or_default()
    .into();
    // The same request in the provider's own protocol.
    let Ok(parsed) = crate::body::RequestBody::parse(chat) else {
        return CheckResult::Failed;
    };
    let Ok(plan) =
        crate::proxy::plan::plan(&parsed, Endpoint::ChatCompletions, provider.protocol, model)
    else {
        return CheckResult::Failed;
    };
    let body = plan.body.apply(parsed.bytes());
    let run = async {
        let mut req = RequestHeader::build("POST", b"/", None).ok()?;
        crate::provider::prepare_request(
            &mut req,
            provider,
            key,
            plan.upstream_endpoint,
            model,
            false,
        )
        .ok()?;
        req.insert_header(http::header::CONTENT_TYPE, "application/json")
            .ok()?;
        req.insert_header(http::header::CONTENT_LENGTH, body.len())
            .ok()?;
        let (mut session, _) = connector.get_http_session(&*peer).await.ok()?;
        session.write_request_header(Box::new(req)).await.ok()?;
        session.write_request_body(body.clone(), true).await.ok()?;
        session.finish_request_body().await.ok()?;
        session.read_response_header().await.ok()?;
        let status = session.response_header()?.status;
        Some(match status.as_u16() {
            200..=299 => CheckResult::Ok,
            401 | 403 => CheckResult::Rejected,
            _ => CheckResult::Failed,
        })
    };
    tokio::time::timeout(provider.health.check_timeout, run)
        .await
        .ok()
        .flatten()
        .unwrap_or(CheckResult::Failed)
}

#[async_trait]
impl BackgroundService for Checker {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut last_check: HashMap<(String, usize), Instant> = HashMap::new();
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
            let snapshot = self.config.load_full();
            let mut checks = Vec::new();
            for provider in snapshot.providers.iter() {
                for (i, key) in provider.keys.iter().enumerate() {
                    if !key.needs_check() {
                        last_check.remove(&(provider.name.clone(), i));
                        continue;
                    }
                    let id = (provider.name.clone(), i);
                    let due = last_check
                        .get(&id)
                        .is_none_or(|t| t.elapsed() >= provider.health.check_interval);
                    if due {
                        last_check.insert(id, Instant::now());
                        checks.push((provider.clone(), i));
                    }
                }
            }
            let runs = checks.iter().map(|(p, i)| async move {
                let result = check_key(&self.connector, p, *i).await;
                let (name, came_back) = match p.keys.get(*i) {
                    Some(k) => (k.name.as_str(), k.report_check(result, &p.health.policy)),
                    None => ("", false),
                };
                let outcome = match result {
                    CheckResult::Ok => "ok",
                    CheckResult::Rejected => "rejected",
                    CheckResult::Failed => "failed",
                };
                METRICS
                    .health_checks
                    .with_label_values(&[p.name.as_str(), name, outcome])
                    .inc();
                if came_back {
                    log::info!("provider {}: key {name} is back in rotation", p.name);
                }
            });
            futures_util::future::join_all(runs).await;
        }
    }
}
