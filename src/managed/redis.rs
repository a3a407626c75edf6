//! The layer kept in a shared Redis, so that every gateway using it serves the same API
//! objects.
//!
//! Keys share one hash tag, so they sit in one slot (a Redis Cluster keeps them together):
//! `{P:api}:revision` (the layer revision), `{P:api}:layer` (the layer as JSON),
//! `{P:api}:history` and `{P:api}:audit` (lists, newest first, trimmed to `HISTORY` and
//! `AUDIT_KEEP`). A commit is one script: it stores the layer only if the revision is the
//! one the writer started from, and publishes the new revision on `P:api:changed`. Other
//! instances apply it on that message, or on their next revision check (every second) if
//! they missed it. Durability is the Redis server's (`appendonly yes` keeps an acknowledged
//! write across a Redis restart).

use super::{Change, Layer, LayerStore, ManagedError, Revision, AUDIT_KEEP, HISTORY};
use redis::AsyncCommands;
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
    client: redis::Client,
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
    /// A store at `url` (never connects here); `prefix` as for the limits' keys.
    pub fn new(url: &str, prefix: &str, timeout: Duration) -> Result<Self, ManagedError> {
        let client = redis::Client::open(url)
            .map_err(|e| failed(format!("invalid url ({:?})", e.kind())))?;
        let shown = format!("redis {}", client.get_connection_info().addr);
        let tag = format!("{{{prefix}:api}}");
        Ok(RedisLayerStore {
            client,
            shown,
            channel: format!("{prefix}:api:changed"),
            keys: ["revision", "layer", "history", "audit"].map(|k| format!("{tag}:{k}")),
            // A management call may wait longer than a request's limit check.
            timeout: timeout.max(Duration::from_secs(1)),
            health: Arc::new(Health::default()),
        })
    }

    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    /// Run `f` on a fresh connection within the deadline, noting the store's health.
    async fn with<T, F, Fut>(&self, f: F) -> Result<T, ManagedError>
    where
        F: FnOnce(redis::aio::MultiplexedConnection) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let run = async {
            let conn = self.client.get_multiplexed_async_connection().await?;
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

    fn describe(&self) -> String {
        self.shown.clone()
    }
}
