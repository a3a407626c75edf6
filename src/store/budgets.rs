//! Budget spend in the shared Redis. Per budget, subject and period (`id` is
//! `{len(budget)}:{budget}:{subject}`, `start` the period's first second):
//!
//! - `P:b:{id}:{start}`: a hash `{spent, topup}` (picounits; kept, it is the history);
//! - `P:br:{id}:{start}`: reserved by in-flight requests of every gateway, each
//!   reservation by name in `P:bh:{id}:{start}` (`super::holds`: settled once, released
//!   when it expires, 600 s after it was made); `P:bd:{id}:{start}:{hold}`: a charge
//!   admitted without a reservation, applied (24 h);
//! - `P:bi:{len(budget)}:{budget}`: a sorted set of `{start}:{subject}` (score `start`),
//!   the index of the budget's periods, for history and listings.
//!
//! Amounts are i64 decimal strings; comparisons are exact (split into 9-digit halves, as
//! the quota scripts do), so Lua's doubles never round a budget.

use super::budget_sql::{Row, Slot, Spend};
use super::holds::{HoldId, Ticket, HOLD_LIB};
use super::redis::{Lua, RedisStore, QUOTA_LIB};
use super::StoreError;
use std::sync::LazyLock;

/// Shared by the budget scripts: `fits(a, b, c, d, e)` is `a + b - c - d - e >= 0`.
const BUDGET_LIB: &str = r"
local function fits(a, b, c, d, e)
  local h, l = 0, 0
  for i, v in ipairs({a, b, c, d, e}) do
    local vh, vl = split(v)
    if i > 2 then vh, vl = -vh, -vl end
    h, l = h + vh, l + vl
  end
  return h + math.floor(l / 1e9) >= 0
end
local function spend(k)
  local v = redis.call('HMGET', k, 'spent', 'topup')
  return v[1] or '0', v[2] or '0'
end
";

/// KEYS: per budget its hash, its reserved key and its holds; ARGV: ttl, hold id, then per
/// budget its limit, its reservation and whether it is checked (`1`; a soft budget's `0`
/// reserves nothing, its hold only names the request for an idempotent settle). Releases
/// expired reservations first. All or nothing: returns `{0}`, or `{i, spent, topup}` for the
/// first budget (1-based) without room, or nil on overflow.
static BUDGET_RESERVE: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(&format!(
        "{QUOTA_LIB}{HOLD_LIB}{BUDGET_LIB}
local n = #KEYS / 3
local now = now_ms()
for i = 1, n do
  sweep(KEYS[3 * i - 1], KEYS[3 * i], now)
  if ARGV[3 * i + 2] == '1' then
    local spent, topup = spend(KEYS[3 * i - 2])
    local res = redis.call('GET', KEYS[3 * i - 1]) or '0'
    if not fits(ARGV[3 * i], topup, spent, res, ARGV[3 * i + 1]) then
      return {{i, spent, topup}}
    end
  end
end
for i = 1, n do
  if not hold(KEYS[3 * i - 1], KEYS[3 * i], ARGV[2], ARGV[3 * i + 1], now, ARGV[1]) then
    return false
  end
end
return {{0}}
"
    ))
});

/// KEYS: hash, reserved, index, holds, and the marker when unconfirmed; ARGV: reserved, cost,
/// index member, start, hold id, held (`1`/`0`). Settles once per id: again, it changes
/// nothing. Returns `{spent, topup}`, or nil on overflow (then the reservation is released
/// and nothing is charged: the charge is dropped, never retried, so the reservation must not
/// stay behind).
static BUDGET_SETTLE: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(&format!(
        "{QUOTA_LIB}{HOLD_LIB}{BUDGET_LIB}
if settles(KEYS[2], KEYS[4], KEYS[5], ARGV[5], ARGV[1], ARGV[6]) and ARGV[2] ~= '0' then
  local r = redis.pcall('HINCRBY', KEYS[1], 'spent', ARGV[2])
  if type(r) == 'table' and r.err then return false end
  redis.call('ZADD', KEYS[3], ARGV[4], ARGV[3])
end
local s, t = spend(KEYS[1])
return {{s, t}}
"
    ))
});

/// KEYS: hash, index, reserved; ARGV: `topup` and a delta, or `reset`; index member,
/// start, and `1` to only read. Returns `{spent, topup, reserved}`, or nil on overflow.
static BUDGET_CHANGE: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(&format!(
        "{QUOTA_LIB}{BUDGET_LIB}
if ARGV[5] ~= '1' then
  if ARGV[1] == 'reset' then
    redis.call('HSET', KEYS[1], 'spent', '0')
  else
    local r = redis.pcall('HINCRBY', KEYS[1], 'topup', ARGV[2])
    if type(r) == 'table' and r.err then return false end
  end
  redis.call('ZADD', KEYS[2], ARGV[4], ARGV[3])
end
local s, t = spend(KEYS[1])
return {{s, t, redis.call('GET', KEYS[3]) or '0'}}
"
    ))
});

/// KEYS: index; ARGV: hash key base, start or '', subject or '', limit. Returns
/// `{subject, start, spent, topup, …}`, newest period first.
static BUDGET_ROWS: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(&format!(
        "{QUOTA_LIB}{BUDGET_LIB}
local lo, hi = '-inf', '+inf'
if ARGV[2] ~= '' then lo, hi = ARGV[2], ARGV[2] end
local members = redis.call('ZREVRANGEBYSCORE', KEYS[1], hi, lo)
local out, count = {{}}, 0
for _, m in ipairs(members) do
  local colon = string.find(m, ':', 1, true)
  local start, subject = string.sub(m, 1, colon - 1), string.sub(m, colon + 1)
  if ARGV[3] == '' or ARGV[3] == subject then
    local s, t = spend(ARGV[1] .. subject .. ':' .. start)
    table.insert(out, subject)
    table.insert(out, start)
    table.insert(out, s)
    table.insert(out, t)
    count = count + 1
    if count >= tonumber(ARGV[4]) then break end
  end
end
return out
"
    ))
});

fn num(s: &str) -> Result<i64, StoreError> {
    s.parse()
        .map_err(|_| StoreError::Backend(format!("budget value `{s}` is not an integer")))
}

impl RedisStore {
    fn budget_base(&self, budget: &str) -> String {
        self.key("b", &format!("{}:{budget}:", budget.len()))
    }

    /// A period's keys: its spend, what is reserved, its reservations (`super::holds`), the
    /// budget's index.
    fn budget_keys(&self, s: &Slot) -> [String; 4] {
        let id = Self::budget_id(s);
        [
            self.key("b", &id),
            self.key("br", &id),
            self.key("bh", &id),
            self.key("bi", &format!("{}:{}", s.budget.len(), s.budget)),
        ]
    }

    fn budget_id(s: &Slot) -> String {
        format!("{}:{}:{}:{}", s.budget.len(), s.budget, s.subject, s.start)
    }

    /// Reserve `n` under `id` in each `(slot, limit, n)` if every one has room (`limit`
    /// `None`: a soft budget, never checked, nothing reserved); `Ok(None)` when admitted,
    /// else the first without room and its figures.
    pub async fn budget_reserve(
        &self,
        items: &[(Slot, Option<i64>, i64)],
        id: HoldId,
    ) -> Result<Option<(usize, Spend)>, StoreError> {
        let mut inv = BUDGET_RESERVE.prepare_invoke();
        inv.arg(self.reservation_ttl()).arg(id.to_string());
        for (slot, limit, n) in items {
            let [hash, reserved, holds, _] = self.budget_keys(slot);
            let n = if limit.is_some() { (*n).max(0) } else { 0 };
            inv.key(hash)
                .key(reserved)
                .key(holds)
                .arg(limit.unwrap_or(0))
                .arg(n)
                .arg(if limit.is_some() { "1" } else { "0" });
        }
        let r: Vec<String> = self.script("budget_reserve", inv).await?;
        match r.as_slice() {
            [i] if i == "0" => Ok(None),
            [i, spent, topup] => Ok(Some((
                usize::try_from(num(i)?.max(1) - 1).unwrap_or(0),
                Spend {
                    spent: num(spent)?,
                    topup: num(topup)?,
                },
            ))),
            _ => Err(StoreError::Backend(
                "budget_reserve: unexpected reply".into(),
            )),
        }
    }

    /// Release `ticket`'s reservation and add `cost` to the spend, once per ticket (a retry
    /// after a lost answer changes nothing); the period's figures.
    pub async fn budget_settle(
        &self,
        slot: &Slot,
        ticket: Ticket,
        cost: i64,
    ) -> Result<Spend, StoreError> {
        let [hash, res, holds, index] = self.budget_keys(slot);
        let mut inv = BUDGET_SETTLE.prepare_invoke();
        inv.key(hash).key(res).key(index).key(holds);
        if !ticket.held {
            let marker = format!("{}:{}", Self::budget_id(slot), ticket.id);
            inv.key(self.key("bd", &marker));
        }
        inv.arg(ticket.reserved.max(0))
            .arg(cost)
            .arg(format!("{}:{}", slot.start, slot.subject))
            .arg(slot.start)
            .arg(ticket.id.to_string())
            .arg(if ticket.held { "1" } else { "0" });
        let r: Option<(String, String)> = self.script("budget_settle", inv).await?;
        let (s, t) = r.ok_or(StoreError::Overflow)?;
        Ok(Spend {
            spent: num(&s)?,
            topup: num(&t)?,
        })
    }

    /// Top up (`Some(delta)`), reset (`None`) or, with `read`, only read a period; its
    /// figures and what is reserved.
    pub async fn budget_change(
        &self,
        slot: &Slot,
        topup: Option<i64>,
        read: bool,
    ) -> Result<(Spend, i64), StoreError> {
        let [hash, res, _, index] = self.budget_keys(slot);
        let mut inv = BUDGET_CHANGE.prepare_invoke();
        inv.key(hash).key(index).key(res);
        match topup {
            Some(d) => inv.arg("topup").arg(d),
            None => inv.arg("reset").arg(0),
        };
        inv.arg(format!("{}:{}", slot.start, slot.subject))
            .arg(slot.start)
            .arg(if read { "1" } else { "0" });
        let r: Option<(String, String, String)> = self.script("budget_change", inv).await?;
        let (s, t, reserved) = r.ok_or(StoreError::Overflow)?;
        Ok((
            Spend {
                spent: num(&s)?,
                topup: num(&t)?,
            },
            num(&reserved)?,
        ))
    }

    /// Rows of `budget`, newest first (as `budget_sql::BudgetReq::Rows`).
    pub async fn budget_rows(
        &self,
        budget: &str,
        subject: Option<&str>,
        start: Option<i64>,
        limit: usize,
    ) -> Result<Vec<Row>, StoreError> {
        let mut inv = BUDGET_ROWS.prepare_invoke();
        inv.key(self.key("bi", &format!("{}:{budget}", budget.len())))
            .arg(self.budget_base(budget))
            .arg(start.map(|s| s.to_string()).unwrap_or_default())
            .arg(subject.unwrap_or_default())
            .arg(limit.max(1));
        let flat: Vec<String> = self.script("budget_rows", inv).await?;
        flat.chunks_exact(4)
            .map(|c| {
                Ok((
                    c[0].clone(),
                    num(&c[1])?,
                    Spend {
                        spent: num(&c[2])?,
                        topup: num(&c[3])?,
                    },
                ))
            })
            .collect()
    }
}
