//! Reservations by name in the shared Redis (quotas and budgets): each in-flight request's
//! reservation is a member `{id}:{amount}` of a sorted set (the holds) beside the reserved
//! sum, scored by when it expires (unix ms, Redis's own clock), so that
//!
//! - settling is idempotent: a settle removes its own member and charges only if it did, so
//!   a retry after an answer was lost (a timeout) neither charges twice nor releases twice;
//! - a reservation whose gateway died is released when it expires, by the next reservation
//!   of the same sum ([`HOLD_LIB`]'s `sweep`), however busy the sum stays;
//! - a request that outlives its reservation's expiry settles without releasing it again:
//!   the swept member stays as a tombstone (negative score, forgotten after [`TOMBSTONE_MS`]),
//!   so the late settle still charges, once, and never takes newer reservations' share.
//!
//! Neither the sum nor the holds expire as keys (so a `volatile-*` eviction policy never
//! takes them): they clean themselves. The sum is deleted when its last reservation goes,
//! and also whenever no live reservation is left (what an older gateway reserved without a
//! name, or a failover lost, cannot hold it up); tombstones are forgotten in their time.
//!
//! A charge admitted without a confirmed reservation (the store failed at admission and the
//! gateway fails open) settles the reservation if it was made after all (its answer lost),
//! else it is applied once per id by a marker key that lives [`MARKER_TTL_MS`]. The caller
//! names the three keys (sum, holds, marker) with kinds of their own, so no consumer's name
//! can make one of them another's; on a cluster they share the prefix's slot.

/// How long a swept reservation's tombstone is kept for a late settle (a request that
/// outlives its reservation by more than this settles without charging).
pub const TOMBSTONE_MS: u64 = 86_400_000;
/// How long an unreserved charge's marker is kept (the time within which a retry of it is
/// recognised); retries of a charge stop after it.
pub const MARKER_TTL_MS: u64 = 86_400_000;

/// A reservation's name, unique among every gateway's in-flight requests (64 random bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HoldId(pub u64);

impl HoldId {
    pub fn new() -> Self {
        HoldId(fastrand::u64(..))
    }
}

impl Default for HoldId {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Display for HoldId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// How a settle finds its reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    pub id: HoldId,
    /// What was reserved (0 when nothing was).
    pub reserved: i64,
    /// A reservation was made (`false`: admitted without the store; the marker applies).
    pub held: bool,
}

/// Lua shared by the scripts that reserve and settle (after `QUOTA_LIB`, whose `add` it
/// uses). `r` is a reserved sum, `h` its holds, `d` a marker key:
///
/// - `now_ms()`: Redis's clock (effects replication, so `TIME` may precede writes);
/// - `sweep(r, h, now)`: release up to 256 expired reservations (tombstones left), forget
///   tombstones past their time, and drop the sum when no live reservation is left;
/// - `hold(r, h, id, a, now, ttl)`: reserve `a` under `id` (false on overflow, nothing
///   changed);
/// - `release(r, h, id, a)`: settle `id`'s reservation; false when it was settled already;
/// - `settles(r, h, d, id, a, held)`: whether a settle applies now (`held` `0`: admitted
///   without a confirmed reservation: once per marker, releasing the reservation if it was
///   made after all).
pub const HOLD_LIB: &str = r"
redis.replicate_commands()
local TOMB = 86400000
local MARK = 86400000
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function sweep(r, h, now)
  local gone = redis.call('ZRANGEBYSCORE', h, 0, now, 'LIMIT', 0, 256)
  for _, m in ipairs(gone) do
    local a = string.sub(m, string.find(m, ':', 1, true) + 1)
    if a ~= '0' and redis.call('DECRBY', r, a) <= 0 then redis.call('DEL', r) end
    redis.call('ZADD', h, -(now + TOMB), m)
  end
  redis.call('ZREMRANGEBYSCORE', h, -now, '(0')
  if redis.call('ZCOUNT', h, '(0', '+inf') == 0 then redis.call('DEL', r) end
end
local function hold(r, h, id, a, now, ttl)
  if a ~= '0' and not add('INCRBY', r, a) then return false end
  redis.call('ZADD', h, now + tonumber(ttl), id .. ':' .. a)
  return true
end
local function release(r, h, id, a)
  local m = id .. ':' .. a
  local s = redis.call('ZSCORE', h, m)
  if not s then return false end
  redis.call('ZREM', h, m)
  if tonumber(s) > 0 and a ~= '0' then
    if redis.call('DECRBY', r, a) <= 0 then redis.call('DEL', r) end
  end
  return true
end
local function settles(r, h, d, id, a, held)
  if held == '1' then return release(r, h, id, a) end
  if redis.call('SET', d, '1', 'NX', 'PX', MARK) == false then return false end
  release(r, h, id, a)
  return true
end
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_differ_and_print_as_fixed_hex() {
        let (a, b) = (HoldId::new(), HoldId::new());
        assert_ne!(a, b);
        assert_eq!(HoldId(255).to_string(), "00000000000000ff");
        assert!(HOLD_LIB.contains(&format!("TOMB = {TOMBSTONE_MS}")));
        assert!(HOLD_LIB.contains(&format!("MARK = {MARKER_TTL_MS}")));
    }
}
