//! The response cache's entries in the shared Redis (`crate::cache::store`):
//!
//! - `P:c:{key}`: an entry (JSON), expiring with it;
//! - `P:ci:r:{route}`, `P:ci:m:{model}`, `P:ci:s:{scope}`: sets of the entry keys kept
//!   under a route, a model and a scope, for purges (expiring after their newest entry).

use super::redis::{Lua, RedisStore};
use super::StoreError;
use std::sync::LazyLock;

/// KEYS: the entry, its three index sets; ARGV: value, ttl (ms), the key for the sets.
static CACHE_PUT: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(
        "redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
for i = 2, 4 do
  redis.call('SADD', KEYS[i], ARGV[3])
  if redis.call('PTTL', KEYS[i]) < tonumber(ARGV[2]) then
    redis.call('PEXPIRE', KEYS[i], ARGV[2])
  end
end
return 1",
    )
});

/// KEYS: one index set; ARGV: the entry keys' prefix. Deletes every entry it lists and the
/// set; returns how many entries there were.
static CACHE_PURGE: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(
        "local n = 0
for _, k in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  n = n + redis.call('DEL', ARGV[1] .. k)
end
redis.call('DEL', KEYS[1])
return n",
    )
});

/// What a purge selects.
#[derive(Debug, Clone, Copy)]
pub enum Index<'a> {
    Route(&'a str),
    Model(&'a str),
    Scope(&'a str),
}

impl RedisStore {
    fn index_key(&self, i: Index<'_>) -> String {
        match i {
            Index::Route(r) => self.key("ci", &format!("r:{r}")),
            Index::Model(m) => self.key("ci", &format!("m:{m}")),
            Index::Scope(s) => self.key("ci", &format!("s:{s}")),
        }
    }

    /// An entry's JSON, if kept.
    pub async fn cache_get(&self, key: &str) -> Result<Option<String>, StoreError> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(self.key("c", key));
        self.exec("cache_get", move |mut c| async move {
            cmd.query_async(&mut c).await
        })
        .await
    }

    /// Keep an entry for `ttl_ms`, listed under its route, model and scope.
    pub async fn cache_put(
        &self,
        key: &str,
        value: &str,
        ttl_ms: u64,
        under: [Index<'_>; 3],
    ) -> Result<(), StoreError> {
        let mut inv = CACHE_PUT.prepare_invoke();
        inv.key(self.key("c", key));
        for i in under {
            inv.key(self.index_key(i));
        }
        inv.arg(value).arg(ttl_ms.max(1)).arg(key);
        self.script::<i64>("cache_put", inv).await.map(|_| ())
    }

    /// Delete every entry listed under `index`; how many there were.
    pub async fn cache_purge(&self, index: Index<'_>) -> Result<u64, StoreError> {
        let mut inv = CACHE_PURGE.prepare_invoke();
        inv.key(self.index_key(index)).arg(self.key("c", ""));
        self.script("cache_purge", inv).await
    }
}
