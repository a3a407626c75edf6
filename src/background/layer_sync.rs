//! Keeping this instance on the stored API layer: apply a change another process stored,
//! within a second: another gateway sharing a `redis` store, or, with the local files, the
//! other process of a zero-downtime upgrade (old and new serve the admin listener for a
//! moment, and a write to either reaches both).
//!
//! With Redis, a subscriber on the store's channel wakes the check at once; a revision
//! check every second covers a missed message or a lost subscription (and is all there is
//! on a cluster or with files: the state file's first line). A stored layer that does not
//! validate here (say, it names a provider this instance's file lacks) is not applied and
//! is logged once; the last good config keeps serving. With Redis unreachable the instance
//! keeps serving its last good config, `/readyz` says so and `tollgate_config_store_up` is
//! 0. An empty store is seeded with this instance's layer (its local copy).

use crate::managed::redis::RedisLayerStore;
use crate::managed::{Change, LayerStore};
use crate::reload::Reloader;
use async_trait::async_trait;
use futures_util::StreamExt;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

const CHECK_EVERY: Duration = Duration::from_secs(1);

pub struct LayerSync {
    pub reloader: Reloader,
    /// The shared store, for its change notices and seeding (`None`: the local files, read
    /// through `reloader.sources.store`).
    pub shared: Option<Arc<RedisLayerStore>>,
}

/// Wake `wake` on every message of the store's channel, resubscribing after a failure.
async fn subscribe(store: Arc<RedisLayerStore>, wake: Arc<Notify>) {
    let Some(client) = store.notices() else {
        return;
    };
    loop {
        let subscribed = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&store.channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        if let Ok(Ok(mut pubsub)) = tokio::time::timeout(CHECK_EVERY * 2, subscribed).await {
            let mut messages = pubsub.on_message();
            while messages.next().await.is_some() {
                wake.notify_one();
            }
        }
        tokio::time::sleep(CHECK_EVERY).await;
    }
}

impl LayerSync {
    /// Compare the stored revision with the running one; apply or seed as needed.
    async fn check(&self, rejected: &mut Option<u64>) {
        let sources = &self.reloader.sources;
        let store = &sources.store;
        let local = sources.layer.load_full();
        crate::metrics::METRICS
            .config_api_revision
            .set(i64::try_from(local.revision).unwrap_or(i64::MAX));
        let stored = match store.revision().await {
            Ok(r) => r,
            Err(_) => return,
        };
        if stored == local.revision || Some(stored) == *rejected {
            return;
        }
        if stored == 0 {
            let Some(shared) = &self.shared else {
                log::warn!(
                    "management API: {} is gone; revision {} keeps serving (a write stores it again)",
                    store.describe(),
                    local.revision
                );
                *rejected = Some(0);
                return;
            };
            let change = Change::now(local.revision, "seed", "seed", "layer", "local copy");
            match shared.store(0, &local, &change).await {
                Ok(()) => log::info!(
                    "management API: seeded {} with revision {}",
                    shared.describe(),
                    local.revision
                ),
                Err(e) => log::warn!("management API: cannot seed the shared store: {e}"),
            }
            return;
        }
        let layer = match store.load().await {
            Ok(Some(layer)) => layer,
            Ok(None) | Err(_) => return,
        };
        if let Err(e) = self.reloader.adopt(layer).await {
            log::error!(
                "management API: revision {stored} from {} is not applied here, revision {} keeps serving: {e}",
                store.describe(),
                local.revision
            );
            *rejected = Some(stored);
        }
    }
}

#[async_trait]
impl BackgroundService for LayerSync {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let wake = Arc::new(Notify::new());
        let subscriber = self
            .shared
            .clone()
            .map(|shared| tokio::spawn(subscribe(shared, wake.clone())));
        let mut tick = tokio::time::interval(CHECK_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut rejected = None;
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = tick.tick() => {}
                () = wake.notified() => {}
            }
            self.check(&mut rejected).await;
        }
        if let Some(s) = subscriber {
            s.abort();
        }
    }
}
