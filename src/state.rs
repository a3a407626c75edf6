//! Process-lifetime state that outlives config snapshots: the stores (`crate::store`), the
//! quota state (`crate::quota`) and the budgets' spend (`crate::budget::state`), opened once and shared by the proxy and the admin API.

use crate::budget::state::Budgets;
use crate::cache::store::ResponseCache;
use crate::quota::Quotas;
use crate::store::objects::Objects;
use crate::store::{StoreError, StoreSettings, Stores};
use std::sync::Arc;

/// The stores and the quota state of the process, shared by the proxy and the admin API.
/// Opened on first use (after Pingora has daemonised: threads do not survive a fork), or
/// eagerly by `open_now` to fail fast at start.
pub struct Backends {
    settings: StoreSettings,
    cell: once_cell::sync::OnceCell<(Arc<Stores>, Quotas, Budgets)>,
    /// The response cache (memory, and Redis when configured); made with the stores.
    cache: once_cell::sync::OnceCell<ResponseCache>,
    /// Who made the files and batches passed through; opened on first use.
    objects: tokio::sync::OnceCell<Objects>,
}

impl Backends {
    pub fn new(settings: StoreSettings) -> Self {
        Backends {
            settings,
            cell: once_cell::sync::OnceCell::new(),
            cache: once_cell::sync::OnceCell::new(),
            objects: tokio::sync::OnceCell::new(),
        }
    }

    fn with_quotas(stores: Stores) -> (Arc<Stores>, Quotas, Budgets) {
        let stores = Arc::new(stores);
        (
            stores.clone(),
            Quotas::new(stores.clone()),
            Budgets::new(stores),
        )
    }

    /// Open the stores now; an error says why (path, permissions, URL).
    pub fn open_now(&self) -> Result<(), StoreError> {
        self.cell
            .get_or_try_init(|| Ok(Self::with_quotas(Stores::open(&self.settings)?)))
            .map(|_| ())
    }

    fn get(&self) -> &(Arc<Stores>, Quotas, Budgets) {
        self.cell.get_or_init(|| {
            Self::with_quotas(Stores::open(&self.settings).unwrap_or_else(|e| {
                log::error!("opening the store failed, quotas are unavailable: {e}");
                Stores::default()
            }))
        })
    }

    /// The stores if they have been opened (never opens them).
    pub fn opened(&self) -> Option<&Arc<Stores>> {
        self.cell.get().map(|(stores, _, _)| stores)
    }

    pub fn stores(&self) -> &Arc<Stores> {
        &self.get().0
    }

    pub fn quotas(&self) -> &Quotas {
        &self.get().1
    }

    pub fn budgets(&self) -> &Budgets {
        &self.get().2
    }

    /// The response cache (opening the stores first: it shares their Redis).
    pub fn cache(&self) -> &ResponseCache {
        self.cache.get_or_init(|| {
            let (max, entry) = self.settings.cache_bytes;
            ResponseCache::new(max, entry, self.stores().redis.clone())
        })
    }

    /// The map of the files and batches passed through (`crate::store::objects`): in the
    /// shared Redis when configured, else in the embedded store's file, else (it could not
    /// be opened) in memory.
    pub async fn objects(&self) -> &Objects {
        self.objects
            .get_or_init(|| async {
                if let Some(redis) = &self.stores().redis {
                    return Objects::redis(redis.clone());
                }
                let path = self.settings.path.clone();
                let opened = tokio::task::spawn_blocking(move || Objects::open_local(&path))
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r.map_err(|e| e.to_string()));
                opened.unwrap_or_else(|e| {
                    log::error!("the files and batches map is kept in memory only: {e}");
                    Objects::memory()
                })
            })
            .await
    }
}
