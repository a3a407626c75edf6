//! DNS refresh: a Pingora background service that resolves every provider host again every
//! `dns.refresh` (see `crate::provider::resolve`) and installs changed addresses.

use crate::provider::resolve::resolve_one;
use crate::runtime::SharedConfig;
use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;

pub struct Resolver {
    pub config: SharedConfig,
}

#[async_trait]
impl BackgroundService for Resolver {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            let refresh = self.config.load().dns_refresh;
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(refresh) => {}
            }
            let snapshot = self.config.load_full();
            for provider in snapshot.providers.iter() {
                resolve_one(provider).await;
            }
        }
    }
}
