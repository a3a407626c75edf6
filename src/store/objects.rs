//! Which provider and key made an object the gateway passed through (an uploaded file, a
//! batch, a batch's output file), and for which consumer: the map the files and batches
//! calls on an id are routed by (`crate::proxy::files_api`). It must outlive the process
//! (a batch runs for up to a day, a file lives until deleted), so it is kept:
//!
//! - in the shared Redis when one is configured: `P:uo:{id}` holds the owner as JSON, for
//!   `KEEP_SECS`;
//! - else in the embedded store's file (`store.path`), in the table
//!   `upstream_objects(id, provider, key, consumer, created)`, through a connection of its
//!   own whose calls run on the blocking pool (never on the async runtime); rows older
//!   than `KEEP_SECS` are deleted when it opens;
//! - in memory only when neither can be opened (logged).
//!
//! A bounded cache of owners sits in front of either, so a known id costs no I/O.

use super::redis::RedisStore;
use super::StoreError;
use moka::sync::Cache;
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Owners kept in memory (about 150 bytes each).
const CACHE_CAPACITY: u64 = 100_000;
/// How long an object's owner is kept: a year.
const KEEP_SECS: u64 = 365 * 86_400;

/// Who made an object: the provider and key (by name), and the consumer ("" for none).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub provider: String,
    pub key: String,
    pub consumer: String,
}

enum Backend {
    Sqlite(Arc<Mutex<Connection>>),
    Redis(Arc<RedisStore>),
    Memory,
}

/// The object map (see the module doc).
pub struct Objects {
    backend: Backend,
    cache: Cache<String, Owner>,
}

fn now_secs() -> i64 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    i64::try_from(secs).unwrap_or(i64::MAX)
}

fn backend_error(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn open_sqlite(path: &Path) -> rusqlite::Result<Connection> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        // A missing directory makes `open` fail with its own message.
        let _ = std::fs::create_dir_all(dir);
    }
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get::<_, String>(0))?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS upstream_objects(id TEXT PRIMARY KEY, provider TEXT NOT NULL,
                                                     key TEXT NOT NULL, consumer TEXT NOT NULL,
                                                     created INTEGER NOT NULL);",
    )?;
    let cutoff = now_secs().saturating_sub(KEEP_SECS as i64);
    conn.execute("DELETE FROM upstream_objects WHERE created < ?1", [cutoff])?;
    Ok(conn)
}

impl Objects {
    fn with(backend: Backend) -> Self {
        Objects {
            backend,
            cache: Cache::builder().max_capacity(CACHE_CAPACITY).build(),
        }
    }

    /// The map in the embedded store's file at `path` (blocking: call it off the runtime).
    pub fn open_local(path: &Path) -> Result<Self, StoreError> {
        let conn = open_sqlite(path)
            .map_err(|e| StoreError::Backend(format!("{}: {e}", path.display())))?;
        Ok(Self::with(Backend::Sqlite(Arc::new(Mutex::new(conn)))))
    }

    /// The map in the shared Redis.
    pub fn redis(store: Arc<RedisStore>) -> Self {
        Self::with(Backend::Redis(store))
    }

    /// The map in this process's memory only.
    pub fn memory() -> Self {
        Self::with(Backend::Memory)
    }

    /// Where the map is kept, for the log.
    pub fn kind(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite(_) => "the embedded store",
            Backend::Redis(_) => "redis",
            Backend::Memory => "memory",
        }
    }

    /// The owner of object `id`, if known.
    pub async fn get(&self, id: &str) -> Result<Option<Owner>, StoreError> {
        if let Some(owner) = self.cache.get(id) {
            return Ok(Some(owner));
        }
        let found = match &self.backend {
            Backend::Memory => None,
            Backend::Redis(r) => r.object_get(id).await?,
            Backend::Sqlite(conn) => {
                let id = id.to_string();
                blocking(conn, move |c| {
                    c.prepare_cached(
                        "SELECT provider, key, consumer FROM upstream_objects WHERE id = ?1",
                    )?
                    .query_row([id], |r| {
                        Ok(Owner {
                            provider: r.get(0)?,
                            key: r.get(1)?,
                            consumer: r.get(2)?,
                        })
                    })
                    .optional()
                })
                .await?
            }
        };
        if let Some(owner) = &found {
            self.cache.insert(id.to_string(), owner.clone());
        }
        Ok(found)
    }

    /// Remember `owner` as the owner of object `id`; durable when this returns.
    pub async fn put(&self, id: &str, owner: &Owner) -> Result<(), StoreError> {
        self.cache.insert(id.to_string(), owner.clone());
        match &self.backend {
            Backend::Memory => Ok(()),
            Backend::Redis(r) => r.object_put(id, owner, KEEP_SECS).await,
            Backend::Sqlite(conn) => {
                let (id, o) = (id.to_string(), owner.clone());
                blocking(conn, move |c| {
                    c.prepare_cached(
                        "INSERT INTO upstream_objects(id, provider, key, consumer, created)
                         VALUES (?1, ?2, ?3, ?4, ?5)
                         ON CONFLICT(id) DO UPDATE SET provider = excluded.provider,
                           key = excluded.key, consumer = excluded.consumer",
                    )?
                    .execute(params![id, o.provider, o.key, o.consumer, now_secs()])
                    .map(|_| ())
                })
                .await
            }
        }
    }

    /// Forget object `id` (deleted at its provider).
    pub async fn delete(&self, id: &str) -> Result<(), StoreError> {
        self.cache.invalidate(id);
        match &self.backend {
            Backend::Memory => Ok(()),
            Backend::Redis(r) => r.object_delete(id).await,
            Backend::Sqlite(conn) => {
                let id = id.to_string();
                blocking(conn, move |c| {
                    c.prepare_cached("DELETE FROM upstream_objects WHERE id = ?1")?
                        .execute([id])
                        .map(|_| ())
                })
                .await
            }
        }
    }
}

/// Run `f` on the connection on the blocking pool.
async fn blocking<T: Send + 'static>(
    conn: &Arc<Mutex<Connection>>,
    f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
) -> Result<T, StoreError> {
    let conn = conn.clone();
    tokio::task::spawn_blocking(move || {
        let c = conn.lock().unwrap_or_else(PoisonError::into_inner);
        f(&c)
    })
    .await
    .map_err(backend_error)?
    .map_err(backend_error)
}

impl RedisStore {
    async fn object_get(&self, id: &str) -> Result<Option<Owner>, StoreError> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(self.key("uo", id));
        let raw: Option<String> = self
            .exec("object_get", move |mut c| async move {
                cmd.query_async(&mut c).await
            })
            .await?;
        raw.map(|s| serde_json::from_str(&s).map_err(backend_error))
            .transpose()
    }

    async fn object_put(&self, id: &str, owner: &Owner, ttl: u64) -> Result<(), StoreError> {
        let value = serde_json::to_string(owner).map_err(backend_error)?;
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.key("uo", id)).arg(value).arg("EX").arg(ttl);
        self.exec("object_put", move |mut c| async move {
            cmd.query_async(&mut c).await
        })
        .await
    }

    async fn object_delete(&self, id: &str) -> Result<(), StoreError> {
        let mut cmd = redis::cmd("DEL");
        cmd.arg(self.key("uo", id));
        self.exec("object_delete", move |mut c| async move {
            cmd.query_async(&mut c).await
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn owner(key: &str) -> Owner {
        Owner {
            provider: "p".into(),
            key: key.into(),
            consumer: "alice".into(),
        }
    }

    /// The embedded map keeps owners across opens of the same file; a delete forgets one.
    #[tokio::test]
    async fn the_embedded_map_outlives_its_opener() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let first = Objects::open_local(&path).unwrap();
        first.put("file-1", &owner("k1")).await.unwrap();
        first.put("file-2", &owner("k2")).await.unwrap();
        first.put("file-1", &owner("k3")).await.unwrap();
        drop(first);
        let again = Objects::open_local(&path).unwrap();
        assert_eq!(again.get("file-1").await.unwrap(), Some(owner("k3")));
        assert_eq!(again.get("file-2").await.unwrap(), Some(owner("k2")));
        again.delete("file-2").await.unwrap();
        assert_eq!(again.get("file-2").await.unwrap(), None);
        assert_eq!(again.get("nope").await.unwrap(), None);
        let memory = Objects::memory();
        memory.put("batch_1", &owner("k")).await.unwrap();
        assert_eq!(memory.get("batch_1").await.unwrap(), Some(owner("k")));
    }
}
