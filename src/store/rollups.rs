//! The fleet's usage rollups in the shared Redis, and the claims that let one gateway of a
//! fleet send an alert notice. The rollups are hashes of counters, one per minute
//! (`P:u:m:{minute}`) and one per hour (`P:u:h:{minute}`, at the hour's first minute), that
//! every gateway adds its own rollups to and any gateway reads back. What the fields mean is
//! the analytics module's business; here they are names with integer counts.
//!
//! A write is one script: every `HINCRBY` of one batch and the expiry of its hashes, all or
//! nothing, so a batch that fails before it reaches Redis can be sent again without counting
//! twice. Every key is under the prefix, so on a cluster they all live in its one slot.

use super::redis::{Lua, RedisStore};
use super::StoreError;
use std::collections::HashMap;
use std::sync::LazyLock;

/// One hash's additions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashAdd {
    /// `m:{minute}` or `h:{minute}`: the key is `P:u:{name}`.
    pub name: String,
    /// The hash's expiry, set again by every write.
    pub ttl_secs: u64,
    pub fields: Vec<(String, i64)>,
}

/// KEYS: the hashes; ARGV: per key, its expiry (s), its field count, then field/delta pairs.
static USAGE_ADD: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(
        "local a = 1
for j = 1, #KEYS do
  local ttl, n = ARGV[a], tonumber(ARGV[a + 1])
  a = a + 2
  for _ = 1, n do
    redis.call('HINCRBY', KEYS[j], ARGV[a], ARGV[a + 1])
    a = a + 2
  end
  redis.call('EXPIRE', KEYS[j], ttl)
end
return 1",
    )
});

/// Hashes read per round trip.
const READ_BATCH: usize = 256;

impl RedisStore {
    /// Claim `P:a:{name}` for `ttl`: true for the one caller that set it (`SET NX EX`).
    pub async fn claim(&self, name: &str, ttl: std::time::Duration) -> Result<bool, StoreError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.key("a", name))
            .arg(1)
            .arg("NX")
            .arg("EX")
            .arg(ttl.as_secs().max(1));
        let set: Option<String> = self
            .exec("claim", move |mut c| async move {
                cmd.query_async(&mut c).await
            })
            .await?;
        Ok(set.is_some())
    }

    /// Add `hashes` to the fleet's rollups in one atomic script.
    pub async fn usage_add(&self, hashes: &[HashAdd]) -> Result<(), StoreError> {
        if hashes.is_empty() {
            return Ok(());
        }
        let mut inv = USAGE_ADD.prepare_invoke();
        for h in hashes {
            inv.key(self.key("u", &h.name))
                .arg(h.ttl_secs.max(1))
                .arg(h.fields.len());
            for (field, delta) in &h.fields {
                inv.arg(field).arg(*delta);
            }
        }
        self.script::<i64>("usage_add", inv).await.map(|_| ())
    }

    /// The fields of the hashes `names` (an absent hash reads as empty), in order.
    pub async fn usage_read(
        &self,
        names: &[String],
    ) -> Result<Vec<HashMap<String, i64>>, StoreError> {
        let mut out = Vec::with_capacity(names.len());
        for batch in names.chunks(READ_BATCH) {
            let mut pipe = redis::pipe();
            for name in batch {
                pipe.cmd("HGETALL").arg(self.key("u", name));
            }
            let got: Vec<HashMap<String, i64>> = self
                .exec("usage_read", move |mut c| async move {
                    pipe.query_async(&mut c).await
                })
                .await?;
            out.extend(got);
        }
        Ok(out)
    }
}
