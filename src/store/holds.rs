//! Reservations by name in the shared Redis (quotas and budgets): each in-flight request's
//! reservation is a member `{id}:{amount}` of a sorted set beside the reserved sum
//! (`{sum}:h`), scored by when it expires (unix ms, Redis's own clock), so that
//!
//! - settling is idempotent: a settle removes its own member and charges only if it did, so
//!   a retry after an answer was lost (a timeout) neither charges twice nor releases twice;
//! - a reservation whose gateway died is released when it expires, one by one, by the next
//!   reservation of the same sum ([`HOLD_LIB`]'s `sweep`), however busy the sum stays (the
//!   sum's own expiry is refreshed by every reservation, so it alone never ran out under
//!   steady traffic);
//! - a request that outlives its reservation's expiry settles without releasing it again:
//!   the swept member stays as a tombstone (negative score, forgotten after [`TOMBSTONE_MS`]),
//!   so the late settle still charges, once, and never takes newer reservations' share.
//!
//! A charge admitted without a reservation (the store failed at admission and the gateway
//! fails open) has no member: it is applied once per id by a marker key `{sum}:d:{id}`
//! that lives [`MARKER_TTL_MS`]. Every key is named from the sum's, so on a cluster (hash
//! tag `{prefix}`) they share its slot.

/// How long a swept reservation's tombstone is kept for a late settle (a request that
/// outlives its reservation by more than this settles without charging).
pub const TOMBSTONE_MS: u64 = 86_400_000;
/// How long an unreserved charge's marker is kept (the time within which a retry of it is
/// recognised).
pub const MARKER_TTL_MS: u64 = 3_600_000;

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
/// uses):
///
/// - `now_ms()`: Redis's clock;
/// - `sweep(r, now)`: release up to 64 expired reservations of the sum `r` (tombstones
///   left) and forget tombstones past their time;
/// - `hold(r, id, a, now, ttl)`: reserve `a` under `id` (false on overflow, nothing changed);
/// - `release(r, id, a)`: settle `id`'s reservation; false when it was settled already;
/// - `once(r, id)`: for an unreserved charge, true the first time only.
pub const HOLD_LIB: &str = r"
local TOMB = 86400000
local MARK = 3600000
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function sweep(r, now)
  local h = r .. ':h'
  local gone = redis.call('ZRANGEBYSCORE', h, 0, now, 'LIMIT', 0, 64)
  for _, m in ipairs(gone) do
    local a = string.sub(m, string.find(m, ':', 1, true) + 1)
    if a ~= '0' and redis.call('DECRBY', r, a) <= 0 then redis.call('DEL', r) end
    redis.call('ZADD', h, -(now + TOMB), m)
  end
  redis.call('ZREMRANGEBYSCORE', h, -now, '(0')
end
local function hold(r, id, a, now, ttl)
  if a ~= '0' then
    if not add('INCRBY', r, a) then return false end
    redis.call('PEXPIRE', r, ttl)
  end
  redis.call('ZADD', r .. ':h', now + tonumber(ttl), id .. ':' .. a)
  redis.call('PEXPIRE', r .. ':h', tonumber(ttl) + TOMB)
  return true
end
local function release(r, id, a)
  local h = r .. ':h'
  local m = id .. ':' .. a
  local s = redis.call('ZSCORE', h, m)
  if not s then return false end
  redis.call('ZREM', h, m)
  if tonumber(s) > 0 and a ~= '0' then
    if redis.call('DECRBY', r, a) <= 0 then redis.call('DEL', r) end
  end
  return true
end
local function once(r, id)
  return redis.call('SET', r .. ':d:' .. id, '1', 'NX', 'PX', MARK) ~= false
end
local function settles(r, id, a, held)
  if held == '1' then return release(r, id, a) end
  return once(r, id)
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
