//! Upstream host-name resolution, kept off the request path.
//!
//! `resolve_now` runs once at startup (bounded wait, in parallel); the `Resolver` background
//! service then re-resolves every provider host periodically and installs changed
//! addresses. A host that does not resolve leaves its provider without a peer: requests to it
//! fail fast with a 502 that names the host, and the next successful lookup heals it.

use crate::config::SharedConfig;
use crate::provider::Provider;
use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use std::sync::Arc;
use std::time::Duration;

const REFRESH: Duration = Duration::from_secs(30);
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

async fn resolve_one(provider: &Provider) {
    if provider.upstream.host.parse::<std::net::IpAddr>().is_ok() {
        return;
    }
    let target = (provider.upstream.host.as_str(), provider.upstream.port);
    match tokio::time::timeout(LOOKUP_TIMEOUT, tokio::net::lookup_host(target)).await {
        Ok(Ok(mut addrs)) => {
            let all: Vec<_> = addrs.by_ref().collect();
            // Prefer IPv4: loopback services often listen on 127.0.0.1 only.
            if let Some(addr) = all.iter().find(|a| a.is_ipv4()).or(all.first()) {
                provider.set_addr(*addr);
            }
        }
        Ok(Err(e)) => log::warn!(
            "provider {}: cannot resolve {}: {e}",
            provider.name,
            provider.upstream.host
        ),
        Err(_) => log::warn!(
            "provider {}: resolving {} timed out",
            provider.name,
            provider.upstream.host
        ),
    }
}

/// Resolve every provider of a freshly loaded config, waiting at most `LOOKUP_TIMEOUT`.
pub fn resolve_now(providers: &[Arc<Provider>]) {
    let providers: Vec<Arc<Provider>> = providers.to_vec();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    match runtime {
        Ok(rt) => rt.block_on(async {
            let tasks = providers.iter().map(|p| resolve_one(p));
            futures_util::future::join_all(tasks).await;
        }),
        Err(e) => log::warn!("cannot start resolver runtime: {e}"),
    }
}

pub struct Resolver {
    pub config: SharedConfig,
}

#[async_trait]
impl BackgroundService for Resolver {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(REFRESH) => {}
            }
            let snapshot = self.config.load_full();
            for provider in snapshot.providers.iter() {
                resolve_one(provider).await;
            }
        }
    }
}
