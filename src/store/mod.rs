//! Where counters that must outlive the process are kept: quota balances and hour/day
//! rate-limit windows.
//!
//! - [`local`]: an embedded SQLite database (WAL, `synchronous=FULL`) owned by one writer
//!   thread that group-commits. SQLite rather than a single-process store such as redb
//!   because during a graceful upgrade the old and the new process both write for a while;
//!   SQLite's file locking lets them, and `count = count + ?` keeps both writers exact.
//! - [`redis`]: a shared Redis (standalone, over TLS, or a Redis Cluster), for several
//!   gateways; every operation is one atomic script.
//! - [`rollups`]: the fleet's usage rollups in that Redis (hashes of counters).
//! - Money budgets' spend: [`budget_sql`] in the embedded store, [`budgets`] in Redis.
//! - [`holds`]: in-flight reservations in Redis by name (idempotent settles, expiry).
//! - [`objects`]: which provider, key and consumer made a file or batch passed through.

pub mod budget_sql;
pub mod budgets;
pub mod cache;
pub mod holds;
pub mod local;
pub mod objects;
pub mod redis;
pub mod rollups;

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
    /// The response cache's memory and largest entry, bytes (`cache:`; set at start).
    pub cache_bytes: (u64, u64),
}

impl StoreSettings {
    /// Whether `other` would open the same stores (what a reload cannot change).
    pub fn same_stores(&self, other: &StoreSettings) -> bool {
        let local =
            |s: &StoreSettings| (s.needs_local && s.redis.is_none()).then(|| s.path.clone());
        self.redis == other.redis && local(self) == local(other)
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
