//! Where counters that must outlive the process are kept: quota balances and hour/day
//! rate-limit windows.
//!
//! - [`local`]: an embedded SQLite database (WAL, `synchronous=FULL`) owned by one writer
//!   thread that group-commits. SQLite rather than a single-process store such as redb
//!   because during a graceful upgrade the old and the new process both write for a while;
//!   SQLite's file locking lets them, and `count = count + ?` keeps both writers exact.
//! - [`redis`]: a shared Redis, for several gateways; every operation is one atomic script.

pub mod local;
pub mod redis;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("store timed out")]
    Timeout,
    #[error("value out of range")]
    Overflow,
    #[error("store error: {0}")]
    Backend(String),
}

/// What to do when the shared store fails (`redis.on_error`).
pub use crate::settings::OnError;

/// Where persistent counters go, as configured.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    pub path: std::path::PathBuf,
    pub flush_interval: std::time::Duration,
    pub redis: Option<redis::RedisSettings>,
    pub on_error: OnError,
    /// A quota or an hour/day window needs the embedded store (and there is no Redis).
    pub needs_local: bool,
}

impl StoreSettings {
    /// Whether `other` would open the same stores (what a reload cannot change).
    pub fn same_stores(&self, other: &StoreSettings) -> bool {
        let redis = |s: &StoreSettings| {
            s.redis
                .as_ref()
                .map(|r| (r.url.clone(), r.prefix.clone(), r.timeout))
        };
        let local =
            |s: &StoreSettings| (s.needs_local && s.redis.is_none()).then(|| s.path.clone());
        redis(self) == redis(other) && local(self) == local(other)
    }
}

/// The stores and the quota state of the process, shared by the proxy and the admin API.
/// Opened on first use (after Pingora has daemonised: threads do not survive a fork), or
/// eagerly by `open_now` to fail fast at start.
pub struct Backends {
    settings: StoreSettings,
    cell: once_cell::sync::OnceCell<(std::sync::Arc<Stores>, crate::quota::Quotas)>,
}

impl Backends {
    pub fn new(settings: StoreSettings) -> Self {
        Backends {
            settings,
            cell: once_cell::sync::OnceCell::new(),
        }
    }

    fn with_quotas(stores: Stores) -> (std::sync::Arc<Stores>, crate::quota::Quotas) {
        let stores = std::sync::Arc::new(stores);
        (stores.clone(), crate::quota::Quotas::new(stores))
    }

    /// Open the stores now; an error says why (path, permissions, URL).
    pub fn open_now(&self) -> Result<(), StoreError> {
        self.cell
            .get_or_try_init(|| Ok(Self::with_quotas(Stores::open(&self.settings)?)))
            .map(|_| ())
    }

    fn get(&self) -> &(std::sync::Arc<Stores>, crate::quota::Quotas) {
        self.cell.get_or_init(|| {
            Self::with_quotas(Stores::open(&self.settings).unwrap_or_else(|e| {
                log::error!("opening the store failed, quotas are unavailable: {e}");
                Stores::default()
            }))
        })
    }

    /// The stores if they have been opened (never opens them).
    pub fn opened(&self) -> Option<&std::sync::Arc<Stores>> {
        self.cell.get().map(|(stores, _)| stores)
    }

    pub fn stores(&self) -> &std::sync::Arc<Stores> {
        &self.get().0
    }

    pub fn quotas(&self) -> &crate::quota::Quotas {
        &self.get().1
    }
}

/// The stores this process opened; they live as long as the process, across reloads.
#[derive(Default)]
pub struct Stores {
    pub local: Option<std::sync::Arc<local::LocalStore>>,
    pub redis: Option<std::sync::Arc<redis::RedisStore>>,
    pub on_error: OnError,
}

impl Stores {
    /// Open what `settings` asks for: Redis when configured, else the embedded store when
    /// something needs it.
    pub fn open(settings: &StoreSettings) -> Result<Self, StoreError> {
        let redis = match &settings.redis {
            Some(r) => Some(redis::RedisStore::start(r.clone())?),
            None => None,
        };
        let local = match settings.needs_local && redis.is_none() {
            true => Some(local::LocalStore::open(
                &settings.path,
                settings.flush_interval,
            )?),
            false => None,
        };
        Ok(Stores {
            local,
            redis,
            on_error: settings.on_error,
        })
    }

    /// Note a failure of the shared store for `what` and say whether to admit anyway.
    pub fn fail_open(&self, what: &str) -> bool {
        let open = self.on_error == OnError::Open;
        if open {
            crate::metrics::METRICS
                .store_fail_open
                .with_label_values(&[what])
                .inc();
        }
        open
    }
}
