//! The layer kept in a shared Redis, so that every gateway using it serves the same API
//! objects.
//!
//! Keys share one hash tag, so they sit in one slot (a Redis Cluster keeps them together):
//! `{P:api}:revision` (the layer revision), `{P:api}:layer` (the layer as JSON),
//! `{P:api}:history` and `{P:api}:audit` (lists, newest first, trimmed to `HISTORY` and
//! `AUDIT_KEEP`). A commit is one script: it stores the layer only if the revision is the
//! one the writer started from, and publishes the new revision on `P:api:changed`. Other
//! instances apply it on that message, or on their next revision check (every second) if
//! they missed it (a Redis Cluster has no notices here: the check alone, every second).
//! TLS and Cluster are reached as the limits' store reaches them. Durability is the Redis server's (`appendonly yes` keeps an acknowledged
//! write across a Redis restart).

use super::{Change, Layer, LayerStore, ManagedError, Revision, AUDIT_KEEP, HISTORY};
use crate::store::redis::{Conn, RedisSettings, Target};
use redis::{AsyncCommands, AsyncConnectionConfig};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// KEYS: revision, layer, history, audit. ARGV: expected revision, new revision, layer JSON,
/// revision JSON, change JSON, history length, audit length, channel.
/// Returns `{1, new}` when stored, `{0, current}` when the revision moved.
const COMMIT: &str = r"
local cur = redis.call('GET', KEYS[1]) or '0'
if cur ~= ARGV[1] then return {0, tonumber(cur)} end
redis.call('SET', KEYS[2], ARGV[3])
redis.call('SET', KEYS[1], ARGV[2])
redis.call('LPUSH', KEYS[3], ARGV[4])
redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[6]) - 1)
redis.call('LPUSH', KEYS[4], ARGV[5])
redis.call('LTRIM', KEYS[4], 0, tonumber(ARGV[7]) - 1)
redis.call('PUBLISH', ARGV[8], ARGV[2])
return {1, tonumber(ARGV[2])}
";

/// Whether the shared store answers, for `/readyz` and the metric.
#[derive(Debug, Default)]
pub struct Health {
    up: AtomicBool,
    error: Mutex<Option<String>>,
}

impl Health {
    pub fn set(&self, result: Result<(), String>) {
        let up = result.is_ok();
        self.up.store(up, Ordering::Relaxed);
        crate::metrics::METRICS.config_store_up.set(i64::from(up));
        *self.error.lock().unwrap_or_else(PoisonError::into_inner) = result.err();
    }

    pub fn up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    pub fn error(&self) -> Option<String> {
        self.error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

pub struct RedisLayerStore {
    target: Target,
    /// The URL without its password, for messages.
    shown: String,
    pub channel: String,
    keys: [String; 4],
    timeout: Duration,
    pub health: Arc<Health>,
}

fn failed(e: impl std::fmt::Display) -> ManagedError {
    ManagedError::Storage(format!("redis: {e}"))
}

impl RedisLayerStore {
    /// A store on the Redis of `settings` (a server, over TLS or not, or a cluster); never
    /// connects here.
    pub fn new(settings: &RedisSettings) -> Result<Self, ManagedError> {
        let target = Target::new(settings).map_err(failed)?;
        let shown = format!("redis {}", target.addr());
        let (prefix, timeout) = (&settings.prefix, settings.timeout);
        let tag = format!("{{{prefix}:api}}");
        Ok(RedisLayerStore {
            target,
            shown,
            channel: format!("{prefix}:api:changed"),
            keys: ["revision", "layer", "history", "audit"].map(|k| format!("{tag}:{k}")),
            // A management call may wait longer than a request's limit check.
            timeout: timeout.max(Duration::from_secs(1)),
            health: Arc::new(Health::default()),
        })
    }

    /// The client of a single server, for the change notices (a cluster has none: its
    /// instances rely on the revision check every second).
    pub fn notices(&self) -> Option<&redis::Client> {
        self.target.single()
    }

    /// Run `f` on a fresh connection within the deadline, noting the store's health.
    async fn with<T, F, Fut>(&self, f: F) -> Result<T, ManagedError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let config = AsyncConnectionConfig::new().set_connection_timeout(self.timeout);
        let run = async {
            let conn = self.target.connect(&config).await?;
            f(conn).await
        };
        let result = match tokio::time::timeout(self.timeout, run).await {
            Ok(Ok(v)) => Ok(v),
            // The error's text, never the URL (which may hold a password).
            Ok(Err(e)) => Err(format!("{}: {e}", self.shown)),
            Err(_) => Err(format!(
                "{}: no answer within {:?}",
                self.shown, self.timeout
            )),
        };
        self.health
            .set(result.as_ref().map(|_| ()).map_err(Clone::clone));
        result.map_err(failed)
    }

    /// Store `layer` as revision `layer.revision` if the stored one is `expected`.
    pub async fn store(
        &self,
        expected: u64,
        layer: &Layer,
        change: &Change,
    ) -> Result<(), ManagedError> {
        let revision = Revision {
            change: change.clone(),
            layer: layer.clone(),
        };
        let args = (
            serde_json::to_string(layer).map_err(failed)?,
            serde_json::to_string(&revision).map_err(failed)?,
            serde_json::to_string(change).map_err(failed)?,
        );
        let keys = self.keys.clone();
        let channel = self.channel.clone();
        let new = layer.revision;
        let (stored, current): (i64, u64) = self
            .with(move |mut conn| async move {
                redis::Script::new(COMMIT)
                    .key(&keys[0])
                    .key(&keys[1])
                    .key(&keys[2])
                    .key(&keys[3])
                    .arg(expected.to_string())
                    .arg(new.to_string())
                    .arg(args.0)
                    .arg(args.1)
                    .arg(args.2)
                    .arg(HISTORY)
                    .arg(AUDIT_KEEP)
                    .arg(channel)
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        if stored == 1 {
            Ok(())
        } else {
            Err(ManagedError::Moved(current))
        }
    }
}

#[async_trait::async_trait]
impl LayerStore for RedisLayerStore {
    async fn load(&self) -> Result<Option<Layer>, ManagedError> {
        let key = self.keys[1].clone();
        let text: Option<String> = self
            .with(move |mut c| async move { c.get(key).await })
            .await?;
        text.map(|t| serde_json::from_str(&t).map_err(failed))
            .transpose()
    }

    async fn commit(
        &self,
        expected: u64,
        layer: &Layer,
        change: &Change,
    ) -> Result<(), ManagedError> {
        self.store(expected, layer, change).await
    }

    async fn history(&self) -> Result<Vec<Revision>, ManagedError> {
        let key = self.keys[2].clone();
        let items: Vec<String> = self
            .with(move |mut c| async move { c.lrange(key, 0, -1).await })
            .await?;
        Ok(items
            .iter()
            .filter_map(|t| serde_json::from_str(t).ok())
            .collect())
    }

    async fn audit(&self, limit: usize) -> Result<Vec<Change>, ManagedError> {
        let key = self.keys[3].clone();
        let end = isize::try_from(limit)
            .unwrap_or(isize::MAX)
            .saturating_sub(1);
        let items: Vec<String> = self
            .with(move |mut c| async move { c.lrange(key, 0, end).await })
            .await?;
        Ok(items
            .iter()
            .filter_map(|t| serde_json::from_str(t).ok())
            .collect())
    }

    async fn revision(&self) -> Result<u64, ManagedError> {
        let key = self.keys[0].clone();
        let r: Option<u64> = self
            .with(move |mut c| async move { c.get(key).await })
            .await?;
        Ok(r.unwrap_or(0))
    }

    async fn record(&self, change: &Change) -> Result<(), ManagedError> {
        let key = self.keys[3].clone();
        let entry = serde_json::to_string(change).map_err(failed)?;
        let end = isize::try_from(AUDIT_KEEP).unwrap_or(isize::MAX) - 1;
        self.with(move |mut c| async move {
            redis::pipe()
                .atomic()
                .lpush(&key, entry)
                .ltrim(&key, 0, end)
                .query_async::<()>(&mut c)
                .await
        })
        .await
    }

    fn describe(&self) -> String {
        self.shown.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::redis::tests::{skip_without_redis, Cluster, TlsServer};

    /// Commit, compare-and-set, history, audit and revision on `settings`'s Redis.
    async fn exercise(settings: &RedisSettings) {
        let store = RedisLayerStore::new(settings).unwrap();
        assert_eq!(store.revision().await.unwrap(), 0);
        assert_eq!(store.load().await.unwrap(), None);
        let mut layer = Layer {
            revision: 1,
            ..Layer::default()
        };
        let change = |n| Change::now(n, "token", "create", "route", "r");
        store.commit(0, &layer, &change(1)).await.unwrap();
        assert!(store.health.up());
        assert_eq!(
            store.commit(0, &layer, &change(1)).await,
            Err(ManagedError::Moved(1))
        );
        layer.revision = 2;
        store.commit(1, &layer, &change(2)).await.unwrap();
        assert_eq!(store.revision().await.unwrap(), 2);
        assert_eq!(store.load().await.unwrap(), Some(layer));
        assert_eq!(store.history().await.unwrap().len(), 2);
        let audit = store.audit(1).await.unwrap();
        assert_eq!(audit.len(), 1);
        assert_eq!(audit[0].revision, 2);
        store
            .record(&Change::now(2, "token", "set", "quota balance", "c"))
            .await
            .unwrap();
        assert_eq!(store.audit(5).await.unwrap()[0].action, "set");
    }

    #[tokio::test]
    async fn the_layer_is_shared_over_tls_and_on_a_cluster() {
        if skip_without_redis() {
            return;
        }
        let tls = TlsServer::start();
        exercise(&tls.settings()).await;
        let cluster = Cluster::start_with(true);
        exercise(&cluster.settings("tg")).await;
    }
}
