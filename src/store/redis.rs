//! The shared store: Redis, every operation one atomic Lua script (one round trip).
//!
//! # Deployments
//!
//! - A standalone server (or a primary behind a failover proxy): `redis://host:port/db`.
//! - TLS: `rediss://host:port/db`. The server's certificate is checked against the
//!   platform's root certificates, or only against the CA certificates of `ca_file` when it
//!   is set (a private CA). The host name (or IP address) of the URL must be in the
//!   certificate. Skipping the check (`#insecure`) is refused.
//! - Redis Cluster (`cluster: true`): `url` and `nodes` are seeds; the client reads the
//!   cluster's map of slots from them and follows redirections (`MOVED`, `ASK`). TLS works
//!   the same way (`rediss://` seeds).
//!
//! # Key layout
//!
//! Every key starts with the key prefix `P`: the configured prefix as is on a standalone
//! server, and the configured prefix as a hash tag, `{prefix}`, on a cluster:
//!
//! - `P:w:{key}:{start}`: hits of rate-limit window `key` in the fixed window beginning at
//!   `start` (unix seconds, a multiple of the window length). Expires after two windows.
//! - `P:q:{consumer}`: quota balance (an i64, no expiry).
//! - `P:qr:{consumer}`: total currently reserved against that balance by in-flight
//!   requests of every gateway; each reservation by name in `P:qh:{consumer}`
//!   ([`super::holds`]): a settle applies once however often it is retried, and a
//!   reservation left by a gateway that crashed is released 600 s after it was made.
//!   `P:qd:{consumer}:{id}`: a charge admitted without a reservation, applied (24 h).
//! - `P:w`: never written; the anchor key of [`WINDOW_RESERVE`] (below).
//! - `P:u:m:{minute}` and `P:u:h:{minute}`: the fleet's usage rollups of one minute, and of
//!   one hour at its first minute (hashes of counters; see [`super::rollups`]).
//! - `P:a:{rule}:{state}`: a gateway's claim to send that alert notice (expires).
//!
//! On a cluster a script may only touch keys of one hash slot, and the slot of a key with a
//! hash tag is the slot of the tag: so every key of one prefix lives in one slot, on one
//! primary. That is the price of atomic all-or-nothing reservations across several rules
//! (a request checked against a per-consumer, a per-route and a global window either counts
//! in all of them or in none): the counters of one prefix are not sharded across the
//! cluster, and that one primary carries all of the gateway's traffic to Redis (the cluster
//! still gives failover to its replica). Gateways that need more throughput than one
//! primary gives can use several prefixes (one per gateway group), each its own slot. The
//! key names differ between the two modes, so moving from a standalone server to a cluster
//! starts with fresh counters unless the keys are copied under their new names.
//!
//! # Scripts
//!
//! Each operation is one `EVALSHA` (falling back to `EVAL` once per server) of a script:
//!
//! - [`WINDOW_RESERVE`]: reads the clock with `TIME` (so every gateway sharing the Redis
//!   agrees), computes the sliding-window estimate `prev * (1 - frac) + curr` (floored) of
//!   every check, and adds `n` to every current window only if no check would exceed its
//!   limit: all or nothing. It names the window keys itself (they depend on `TIME`); its one
//!   declared key, the anchor `P:w`, is in the same slot as every window key, so a cluster
//!   client sends the script to the primary that holds them all.
//! - [`WINDOW_ADJUST`]: adds a correction to windows that still exist (never recreates one).
//! - [`QUOTA_ADD`], [`QUOTA_RESERVE`], [`QUOTA_SETTLE`]: balance arithmetic. Lua numbers are
//!   doubles, so balances are never converted: Redis does the arithmetic (`INCRBY`, whose
//!   overflow error becomes [`StoreError::Overflow`] with nothing changed), values are returned
//!   as the stored decimal strings, and the admission test `balance - reserved >= need` is
//!   done exactly on the decimal strings split into two 9-digit halves.
//!
//! # Failure behaviour
//!
//! [`RedisStore::start`] only validates the settings; connecting happens on a dedicated thread
//! with its own single-threaded tokio runtime, which also drives the connection, so callers
//! on any runtime (Pingora's per-thread ones) just send requests through a cloned handle.
//! That thread (re)connects with backoff (200 ms doubling to 2 s), probes the connection
//! every second (or at once after a failed call) with `EXISTS P:w` (on a cluster that reaches
//! the primary holding the prefix's slot) and drops it when it is broken. Without a
//! connection every call fails at once with [`StoreError::Unavailable`]; with one, every call
//! is bounded by the configured timeout ([`StoreError::Timeout`]). Each failed call counts in
//! `tollgate_redis_errors_total{op}` and is logged, at most one warning per 10 s (the next one
//! says how many were suppressed). The same holds for all three deployments (on a cluster
//! the connection is one cluster client, rebuilt from the seeds when it breaks). Passwords in
//! the URLs never appear in messages.

use super::holds::{HoldId, Ticket, HOLD_LIB};
use super::StoreError;
use arc_swap::ArcSwapOption;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::{
    AsyncConnectionConfig, Client, Cmd, ConnectionAddr, ConnectionInfo, FromRedisValue,
    IntoConnectionInfo, Pipeline, RedisError, RedisFuture, RedisResult, Script, TlsCertificates,
    ToRedisArgs, Value,
};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, Notify};

const MIN_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
const HEALTH_INTERVAL: Duration = Duration::from_secs(1);
const WARN_INTERVAL: Duration = Duration::from_secs(10);
pub(super) const RESERVATION_TTL_MS: u64 = 600_000;

#[derive(Clone, Default, PartialEq, Eq)]
pub struct RedisSettings {
    /// `redis://host:port/db` or `rediss://…` (optionally with user:password); with
    /// `cluster`, a seed node.
    pub url: String,
    /// A Redis Cluster: `url` and `nodes` are seeds.
    pub cluster: bool,
    /// More seed nodes of a cluster.
    pub nodes: Vec<String>,
    /// PEM of the CA certificates to trust instead of the platform's (`rediss://` only).
    pub ca_pem: Option<Vec<u8>>,
    /// Prefix of every key the gateway writes (a hash tag `{prefix}` on a cluster).
    pub prefix: String,
    /// Deadline of one call, connection included.
    pub timeout: Duration,
}

/// Shows the servers' addresses, never a URL's credentials.
impl std::fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let addr = |url: &String| match url.as_str().into_connection_info() {
            Ok(info) => info.addr.to_string(),
            Err(_) => "(invalid url)".to_string(),
        };
        f.debug_struct("RedisSettings")
            .field("url", &addr(&self.url))
            .field("cluster", &self.cluster)
            .field("nodes", &self.nodes.iter().map(addr).collect::<Vec<_>>())
            .field("ca_pem_bytes", &self.ca_pem.as_ref().map(Vec::len))
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// What [`RedisStore::start`] would refuse, as `(settings field, problem)`; never shows a
/// password.
pub fn check(settings: &RedisSettings) -> Result<(), (String, String)> {
    for (i, url) in std::iter::once(&settings.url)
        .chain(&settings.nodes)
        .enumerate()
    {
        let field = match i {
            0 => "redis.url".to_string(),
            i => format!("redis.nodes[{}]", i - 1),
        };
        if let Err(e) = url.as_str().into_connection_info() {
            return Err((field, url_message(&e)));
        }
    }
    key_prefix(settings).map_err(|e| ("redis.prefix".to_string(), e))?;
    match Target::new(settings) {
        Ok(_) => Ok(()),
        Err(StoreError::Backend(e)) => {
            let e = e.strip_prefix("redis: ").unwrap_or(&e).to_string();
            Err(("redis".to_string(), e))
        }
        Err(e) => Err(("redis".to_string(), e.to_string())),
    }
}

/// Read a CA file for `ca_file`: PEM holding at least one certificate.
pub fn load_ca(path: &str) -> Result<Vec<u8>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read CA file `{path}`: {e}"))?;
    let mut n = 0;
    for item in rustls_pemfile::certs(&mut pem.as_slice()) {
        item.map_err(|e| format!("CA file `{path}`: {e}"))?;
        n += 1;
    }
    if n == 0 {
        return Err(format!("CA file `{path}` holds no PEM certificate"));
    }
    Ok(pem)
}

/// A Lua script, run with `EVALSHA`, falling back to `EVAL` (which also caches it on that
/// server) when the server does not know it yet. Not `SCRIPT LOAD`: a cluster client sends
/// that to every primary, so it would fail while any primary is down, even one that holds
/// none of the gateway's keys; `EVALSHA` and `EVAL` go only to the primary of the keys.
pub(super) struct Lua {
    code: String,
    hash: String,
}

impl Lua {
    pub(super) fn new(code: &str) -> Lua {
        Lua {
            hash: Script::new(code).get_hash().to_string(),
            code: code.to_string(),
        }
    }

    pub(super) fn prepare_invoke(&'static self) -> Invocation {
        Invocation {
            lua: self,
            keys: Vec::new(),
            args: Vec::new(),
        }
    }
}

/// One call of a [`Lua`] script: its keys and arguments.
pub(super) struct Invocation {
    lua: &'static Lua,
    keys: Vec<Vec<u8>>,
    args: Vec<Vec<u8>>,
}

impl Invocation {
    pub(super) fn key<T: ToRedisArgs>(&mut self, key: T) -> &mut Invocation {
        key.write_redis_args(&mut self.keys);
        self
    }

    pub(super) fn arg<T: ToRedisArgs>(&mut self, arg: T) -> &mut Invocation {
        arg.write_redis_args(&mut self.args);
        self
    }

    fn cmd(&self, name: &str, script: &str) -> Cmd {
        let mut cmd = redis::cmd(name);
        cmd.arg(script).arg(self.keys.len());
        for a in self.keys.iter().chain(&self.args) {
            cmd.arg(a.as_slice());
        }
        cmd
    }

    async fn invoke<T: FromRedisValue>(&self, conn: &mut Conn) -> RedisResult<T> {
        match self.cmd("EVALSHA", &self.lua.hash).query_async(conn).await {
            Err(e) if e.kind() == redis::ErrorKind::NoScriptError => {
                self.cmd("EVAL", &self.lua.code).query_async(conn).await
            }
            r => r,
        }
    }
}

/// Reserve `n` in a sliding window of `window_secs` on `key`, if it stays within `limit`.
#[derive(Debug, Clone)]
pub struct WindowCheck {
    pub key: String,
    pub window_secs: u64,
    pub n: i64,
    pub limit: u64,
}

/// Add `delta` to `key`'s window that started at `start` (as returned by a reservation).
#[derive(Debug, Clone)]
pub struct WindowAdjust {
    pub key: String,
    pub window_secs: u64,
    pub start: u64,
    pub delta: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowCount {
    /// Sliding-window estimate: after the reservation, or before it when refused.
    pub count: u64,
    /// Start of the current fixed window (unix seconds, aligned to `window_secs`).
    pub start: u64,
    /// Milliseconds until the window has slid past.
    pub reset_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowVerdict {
    /// The first check that would exceed its limit (then nothing was added), or `None`
    /// when every reservation was added.
    pub refused: Option<usize>,
    /// One per check, in order.
    pub counts: Vec<WindowCount>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaReserve {
    pub admitted: bool,
    pub balance: i64,
}

/// KEYS: the anchor `P:w` (never touched: it only routes the script on a cluster);
/// ARGV: key prefix `P`, then per check: key, window_secs, n, limit. Every key it names is
/// `P:w:…`, in the anchor's slot.
/// Returns `{refused (1-based, 0 = none), then per check: count, start, reset_ms}`.
static WINDOW_RESERVE: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(
        r"
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now_s = tonumber(t[1])
local now_ms = now_s * 1000 + math.floor(tonumber(t[2]) / 1000)
local p = ARGV[1]
local checks = (#ARGV - 1) / 4
local keys, ests, starts, resets, ns, wins = {}, {}, {}, {}, {}, {}
local refused = 0
for i = 1, checks do
  local b = 1 + (i - 1) * 4
  local w, n, limit = tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3]), tonumber(ARGV[b + 4])
  local start = now_s - now_s % w
  local base = p .. ':w:' .. ARGV[b + 1] .. ':'
  local k = base .. string.format('%.0f', start)
  local curr = tonumber(redis.call('GET', k) or '0')
  local prev = tonumber(redis.call('GET', base .. string.format('%.0f', start - w)) or '0')
  local frac = (now_ms - start * 1000) / (w * 1000)
  local est = math.floor(prev * (1 - frac) + curr)
  if refused == 0 and est + n > limit then refused = i end
  keys[i], ests[i], starts[i], ns[i], wins[i] = k, est, start, ARGV[b + 3], w
  resets[i] = (start + w) * 1000 - now_ms
end
local out = {refused}
for i = 1, checks do
  if refused == 0 and ns[i] ~= '0' then
    redis.call('INCRBY', keys[i], ns[i])
    redis.call('PEXPIRE', keys[i], string.format('%.0f', wins[i] * 2000))
    ests[i] = ests[i] + tonumber(ns[i])
  end
  out[#out + 1] = ests[i]
  out[#out + 1] = starts[i]
  out[#out + 1] = resets[i]
end
return out
",
    )
});

/// KEYS: window counters; ARGV: one delta per key.
static WINDOW_ADJUST: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(
        r"
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then redis.pcall('INCRBY', KEYS[i], ARGV[i]) end
end
return 0
",
    )
});

/// Shared by the quota scripts: `add` applies INCRBY/DECRBY and returns false on i64
/// overflow (nothing changed) and re-raises any other error; `ge(a, b, c)` is
/// `a - b - c >= 0` computed exactly on i64 decimal strings.
pub(super) const QUOTA_LIB: &str = r"
local function add(cmd, k, d)
  local r = redis.pcall(cmd, k, d)
  if type(r) == 'table' and r.err then
    if string.find(r.err, 'overflow', 1, true) then return false end
    error(r)
  end
  return true
end
local function split(s)
  local neg = string.sub(s, 1, 1) == '-'
  if neg then s = string.sub(s, 2) end
  local hi = #s > 9 and tonumber(string.sub(s, 1, #s - 9)) or 0
  local lo = tonumber(string.sub(s, -9))
  if neg then return -hi, -lo end
  return hi, lo
end
local function ge(a, b, c)
  local ah, al = split(a)
  local bh, bl = split(b)
  local ch, cl = split(c)
  return ah - bh - ch + math.floor((al - bl - cl) / 1e9) >= 0
end
";

/// KEYS: balance; ARGV: delta. Returns the new balance, or nil on overflow.
static QUOTA_ADD: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(&format!(
        "{QUOTA_LIB}
if not add('INCRBY', KEYS[1], ARGV[1]) then return false end
return redis.call('GET', KEYS[1])
"
    ))
});

/// KEYS: balance, reserved, holds; ARGV: need (max(n, 1)), n (>= 0), reservation ttl (ms),
/// hold id. Releases expired reservations first (`holds::HOLD_LIB`). Returns `{admitted
/// 0/1, balance}`, or nil on overflow.
static QUOTA_RESERVE: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(&format!(
        "{QUOTA_LIB}{HOLD_LIB}
local now = now_ms()
sweep(KEYS[2], KEYS[3], now)
local bal = redis.call('GET', KEYS[1]) or '0'
local res = redis.call('GET', KEYS[2]) or '0'
if not ge(bal, res, ARGV[1]) then return {{0, bal}} end
if not hold(KEYS[2], KEYS[3], ARGV[4], ARGV[2], now, ARGV[3]) then return false end
return {{1, bal}}
"
    ))
});

/// KEYS: balance, reserved, holds, and the marker when unconfirmed; ARGV: hold id, reserved
/// (>= 0), used, held (`1`/`0`). Settles once per id: again, it changes nothing. Returns the
/// balance, or nil on overflow (then the reservation is released and nothing is charged:
/// the charge is dropped, never retried, so the reservation must not stay behind).
static QUOTA_SETTLE: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(&format!(
        "{QUOTA_LIB}{HOLD_LIB}
if settles(KEYS[2], KEYS[3], KEYS[4], ARGV[1], ARGV[2], ARGV[4]) and ARGV[3] ~= '0' then
  if not add('DECRBY', KEYS[1], ARGV[3]) then return false end
end
return redis.call('GET', KEYS[1]) or '0'
"
    ))
});

pub struct RedisStore {
    shared: Arc<Shared>,
    /// What every key starts with: the prefix, or `{prefix}` on a cluster.
    prefix: String,
    /// `prefix:w`, the key that routes [`WINDOW_RESERVE`].
    anchor: String,
    timeout: Duration,
    /// How long a reservation lasts ([`RESERVATION_TTL_MS`]; shorter in tests).
    reservation_ttl_ms: AtomicU64,
    /// Dropping it stops the connection thread.
    _stop: oneshot::Sender<()>,
}

/// What the callers and the connection thread share.
struct Shared {
    conn: ArcSwapOption<Conn>,
    /// Asks the connection thread to check the connection now.
    wake: Notify,
    warn: Mutex<WarnState>,
}

#[derive(Default)]
struct WarnState {
    last: Option<Instant>,
    suppressed: u64,
}

impl Shared {
    /// A warning, at most one per [`WARN_INTERVAL`]; the others are counted.
    fn warn(&self, msg: std::fmt::Arguments<'_>) {
        let mut w = self.warn.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if w.last
            .is_some_and(|t| now.duration_since(t) < WARN_INTERVAL)
        {
            w.suppressed += 1;
            return;
        }
        w.last = Some(now);
        let suppressed = std::mem::take(&mut w.suppressed);
        drop(w);
        if suppressed > 0 {
            log::warn!("{msg} ({suppressed} similar warnings suppressed)");
        } else {
            log::warn!("{msg}");
        }
    }

    /// Forget `conn` if it is still the current connection, and have it replaced.
    fn drop_conn(&self, conn: &Arc<Conn>) {
        let _ = self.conn.compare_and_swap(&Some(Arc::clone(conn)), None);
        self.wake.notify_one();
    }
}

impl RedisStore {
    /// Validate the settings and start connecting in the background; never blocks on the
    /// network.
    pub fn start(settings: RedisSettings) -> Result<Arc<RedisStore>, StoreError> {
        let target = Target::new(&settings)?;
        let prefix = key_prefix(&settings).map_err(StoreError::Backend)?;
        let anchor = format!("{prefix}:w");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| StoreError::Backend(format!("redis runtime: {e}")))?;
        let shared = Arc::new(Shared {
            conn: ArcSwapOption::empty(),
            wake: Notify::new(),
            warn: Mutex::new(WarnState::default()),
        });
        let (stop, stopped) = oneshot::channel::<()>();
        let bg = Arc::clone(&shared);
        let timeout = settings.timeout;
        let mut probe = redis::cmd("EXISTS");
        probe.arg(&anchor);
        std::thread::Builder::new()
            .name("tollgate-redis".into())
            .spawn(move || {
                runtime.block_on(async move {
                    tokio::select! {
                        () = maintain(bg, target, timeout, probe) => {}
                        _ = stopped => {}
                    }
                });
            })
            .map_err(|e| StoreError::Backend(format!("redis thread: {e}")))?;
        Ok(Arc::new(RedisStore {
            shared,
            prefix,
            anchor,
            timeout: settings.timeout,
            reservation_ttl_ms: AtomicU64::new(RESERVATION_TTL_MS),
            _stop: stop,
        }))
    }

    /// Reservations made from now on last `ms` (tests of their expiry).
    #[cfg(test)]
    pub fn set_reservation_ttl_ms(&self, ms: u64) {
        self.reservation_ttl_ms.store(ms, Ordering::Relaxed);
    }

    /// How long a reservation made now lasts, ms.
    pub(super) fn reservation_ttl(&self) -> u64 {
        self.reservation_ttl_ms.load(Ordering::Relaxed)
    }

    pub fn connected(&self) -> bool {
        self.shared.conn.load().is_some()
    }

    pub async fn window_reserve(
        &self,
        checks: &[WindowCheck],
    ) -> Result<WindowVerdict, StoreError> {
        if checks.is_empty() {
            return Ok(WindowVerdict {
                refused: None,
                counts: Vec::new(),
            });
        }
        let mut inv = WINDOW_RESERVE.prepare_invoke();
        inv.key(&self.anchor).arg(&self.prefix);
        for c in checks {
            inv.arg(&c.key)
                .arg(c.window_secs.max(1))
                .arg(c.n)
                .arg(c.limit);
        }
        let raw: Vec<i64> = self.script("window_reserve", inv).await?;
        let bad = || StoreError::Backend("unexpected reply to window_reserve".into());
        let (&refused, rest) = raw.split_first().ok_or_else(bad)?;
        if rest.len() != checks.len() * 3 {
            return Err(bad());
        }
        let counts = rest
            .chunks_exact(3)
            .map(|c| WindowCount {
                count: c[0].max(0) as u64,
                start: c[1].max(0) as u64,
                reset_ms: c[2].max(0) as u64,
            })
            .collect();
        let refused = usize::try_from(refused).ok().and_then(|i| i.checked_sub(1));
        Ok(WindowVerdict { refused, counts })
    }

    pub async fn window_adjust(&self, adjust: &[WindowAdjust]) -> Result<(), StoreError> {
        let mut inv = WINDOW_ADJUST.prepare_invoke();
        let mut any = false;
        for a in adjust.iter().filter(|a| a.delta != 0) {
            inv.key(format!("{}:w:{}:{}", self.prefix, a.key, a.start))
                .arg(a.delta);
            any = true;
        }
        if !any {
            return Ok(());
        }
        self.script("window_adjust", inv).await
    }

    pub async fn quota_get(&self, consumer: &str) -> Result<Option<i64>, StoreError> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(self.key("q", consumer));
        self.cmd("quota_get", cmd).await
    }

    pub async fn quota_set(&self, consumer: &str, value: i64) -> Result<i64, StoreError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.key("q", consumer)).arg(value);
        self.cmd::<()>("quota_set", cmd).await?;
        Ok(value)
    }

    pub async fn quota_add(&self, consumer: &str, delta: i64) -> Result<i64, StoreError> {
        let mut inv = QUOTA_ADD.prepare_invoke();
        inv.key(self.key("q", consumer)).arg(delta);
        let r: Option<i64> = self.script("quota_add", inv).await?;
        r.ok_or(StoreError::Overflow)
    }

    /// Admit when `balance - reserved_by_all >= max(n, 1)`, then reserve `n` under `id`.
    pub async fn quota_reserve(
        &self,
        consumer: &str,
        n: i64,
        id: HoldId,
    ) -> Result<QuotaReserve, StoreError> {
        let mut inv = QUOTA_RESERVE.prepare_invoke();
        inv.key(self.key("q", consumer))
            .key(self.key("qr", consumer))
            .key(self.key("qh", consumer))
            .arg(n.max(1))
            .arg(n.max(0))
            .arg(self.reservation_ttl())
            .arg(id.to_string());
        let r: Option<(i64, i64)> = self.script("quota_reserve", inv).await?;
        let (admitted, balance) = r.ok_or(StoreError::Overflow)?;
        Ok(QuotaReserve {
            admitted: admitted == 1,
            balance,
        })
    }

    /// Release the reservation of `ticket` and charge `used`, once per ticket (a retry after
    /// a lost answer changes nothing); the balance.
    pub async fn quota_settle(
        &self,
        consumer: &str,
        ticket: Ticket,
        used: i64,
    ) -> Result<i64, StoreError> {
        let mut inv = QUOTA_SETTLE.prepare_invoke();
        inv.key(self.key("q", consumer))
            .key(self.key("qr", consumer))
            .key(self.key("qh", consumer));
        if !ticket.held {
            inv.key(self.key("qd", &format!("{consumer}:{}", ticket.id)));
        }
        inv.arg(ticket.id.to_string())
            .arg(ticket.reserved.max(0))
            .arg(used)
            .arg(if ticket.held { "1" } else { "0" });
        let r: Option<i64> = self.script("quota_settle", inv).await?;
        r.ok_or(StoreError::Overflow)
    }

    pub(super) fn key(&self, kind: &str, id: &str) -> String {
        format!("{}:{kind}:{id}", self.prefix)
    }

    pub(super) async fn script<T: FromRedisValue + Send>(
        &self,
        op: &'static str,
        inv: Invocation,
    ) -> Result<T, StoreError> {
        self.exec(op, move |mut c| async move { inv.invoke(&mut c).await })
            .await
    }

    async fn cmd<T: FromRedisValue + Send>(
        &self,
        op: &'static str,
        cmd: Cmd,
    ) -> Result<T, StoreError> {
        self.exec(
            op,
            move |mut c| async move { cmd.query_async(&mut c).await },
        )
        .await
    }

    /// Run one request on the current connection within the timeout; count and log failures.
    pub(super) async fn exec<T, F, Fut>(&self, op: &'static str, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let err = match self.shared.conn.load_full() {
            None => StoreError::Unavailable("not connected".into()),
            Some(conn) => match tokio::time::timeout(self.timeout, f((*conn).clone())).await {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) => self.classify(&conn, e),
                Err(_) => {
                    // Maybe a hung server: have the connection thread check at once.
                    self.shared.wake.notify_one();
                    StoreError::Timeout
                }
            },
        };
        crate::metrics::METRICS
            .redis_errors
            .with_label_values(&[op])
            .inc();
        self.shared.warn(format_args!("redis {op} failed: {err}"));
        Err(err)
    }

    fn classify(&self, conn: &Arc<Conn>, e: RedisError) -> StoreError {
        if e.is_io_error() || e.is_unrecoverable_error() {
            self.shared.drop_conn(conn);
            StoreError::Unavailable(e.to_string())
        } else {
            StoreError::Backend(e.to_string())
        }
    }
}

/// The error of an unusable URL, without the URL (it may hold a password).
fn url_error(e: &RedisError) -> StoreError {
    StoreError::Backend(url_message(e))
}

fn url_message(e: &RedisError) -> String {
    format!(
        "invalid redis url ({:?}); expected redis[s]://[[user]:password@]host[:port][/db]",
        e.kind()
    )
}

/// The key prefix: the configured one, as a hash tag on a cluster (then it must not hold
/// braces, which would change the tag).
fn key_prefix(settings: &RedisSettings) -> Result<String, String> {
    if !settings.cluster {
        return Ok(settings.prefix.clone());
    }
    if settings.prefix.is_empty() || settings.prefix.contains(['{', '}']) {
        return Err(format!(
            "redis prefix `{}`: on a cluster the prefix is the hash tag of every key, so it \
             must be non-empty and hold no `{{` or `}}`",
            settings.prefix
        ));
    }
    Ok(format!("{{{}}}", settings.prefix))
}

/// Where to connect: one server, or a cluster through its seeds (also how the management
/// API's shared layer reaches the same Redis).
pub enum Target {
    Single(Client),
    /// With the seeds' addresses, for logs.
    Cluster(ClusterClient, String),
}

impl Target {
    pub fn new(settings: &RedisSettings) -> Result<Target, StoreError> {
        let bad = |m: &str| StoreError::Backend(format!("redis: {m}"));
        let mut seeds: Vec<ConnectionInfo> = Vec::new();
        for url in std::iter::once(&settings.url).chain(&settings.nodes) {
            seeds.push(
                url.as_str()
                    .into_connection_info()
                    .map_err(|e| url_error(&e))?,
            );
        }
        let tls = matches!(seeds[0].addr, ConnectionAddr::TcpTls { .. });
        for seed in &seeds {
            match &seed.addr {
                ConnectionAddr::TcpTls { insecure: true, .. } => {
                    return Err(bad(
                        "a rediss:// url without certificate checks (#insecure) is not \
                         supported; set ca_file to trust a private CA",
                    ))
                }
                ConnectionAddr::TcpTls { .. } if !tls => {
                    return Err(bad("every node must use the same scheme as the url"))
                }
                ConnectionAddr::Tcp(..) if tls => {
                    return Err(bad("every node must use the same scheme as the url"))
                }
                ConnectionAddr::Unix(_) if settings.cluster => {
                    return Err(bad("a cluster is reached over TCP, not a unix socket"))
                }
                _ => {}
            }
            if settings.cluster && seed.redis.db != 0 {
                return Err(bad("a cluster has only database 0 (no /db in its urls)"));
            }
        }
        if !settings.cluster && !settings.nodes.is_empty() {
            return Err(bad("nodes are seeds of a cluster: set cluster: true"));
        }
        let certs = match &settings.ca_pem {
            Some(_) if !tls => return Err(bad("ca_file needs a rediss:// url")),
            Some(pem) => Some(TlsCertificates {
                client_tls: None,
                root_cert: Some(pem.clone()),
            }),
            None => None,
        };
        let built = if settings.cluster {
            let addrs: Vec<String> = seeds.iter().map(|i| i.addr.to_string()).collect();
            let addrs = format!("cluster {}", addrs.join(","));
            let mut b = ClusterClientBuilder::new(seeds)
                .connection_timeout(settings.timeout)
                .response_timeout(settings.timeout);
            if let Some(certs) = certs {
                b = b.certs(certs);
            }
            b.build().map(|c| Target::Cluster(c, addrs))
        } else {
            let seed = seeds.remove(0);
            match certs {
                Some(certs) => Client::build_with_tls(seed, certs),
                None => Client::open(seed),
            }
            .map(Target::Single)
        };
        // These errors are about certificates or settings, never the URL's password.
        built.map_err(|e| bad(&e.to_string()))
    }

    /// The client of a single server (`None` for a cluster).
    pub fn single(&self) -> Option<&Client> {
        match self {
            Target::Single(c) => Some(c),
            Target::Cluster(..) => None,
        }
    }

    /// The addresses, for logs (no credentials).
    pub fn addr(&self) -> String {
        match self {
            Target::Single(c) => c.get_connection_info().addr.to_string(),
            Target::Cluster(_, addrs) => addrs.clone(),
        }
    }

    pub async fn connect(&self, config: &AsyncConnectionConfig) -> RedisResult<Conn> {
        match self {
            Target::Single(c) => c
                .get_multiplexed_async_connection_with_config(config)
                .await
                .map(Conn::Single),
            Target::Cluster(c, _) => c.get_async_connection().await.map(Conn::Cluster),
        }
    }
}

/// A connection to one server, or a cluster client (both multiplexed and cheap to clone).
#[derive(Clone)]
pub enum Conn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// The connection thread: keep `shared.conn` holding a working connection, checked with
/// `probe`.
async fn maintain(shared: Arc<Shared>, target: Target, timeout: Duration, probe: Cmd) {
    let addr = target.addr();
    let config = AsyncConnectionConfig::new().set_connection_timeout(timeout);
    let mut backoff = MIN_BACKOFF;
    let mut was_connected = false;
    loop {
        let Some(conn) = shared.conn.load_full() else {
            let attempt = target.connect(&config);
            let err = match tokio::time::timeout(timeout, attempt).await {
                Ok(Ok(c)) => {
                    shared.conn.store(Some(Arc::new(c)));
                    backoff = MIN_BACKOFF;
                    if was_connected {
                        // A fresh episode: its first failure is logged at once.
                        let w = std::mem::take(
                            &mut *shared.warn.lock().unwrap_or_else(PoisonError::into_inner),
                        );
                        match w.suppressed {
                            0 => log::warn!("redis reconnected"),
                            n => log::warn!("redis reconnected ({n} warnings suppressed)"),
                        }
                    } else {
                        log::info!("redis connected to {addr}");
                    }
                    was_connected = true;
                    continue;
                }
                Ok(Err(e)) => e.to_string(),
                Err(_) => "timed out".to_string(),
            };
            shared.warn(format_args!("redis connection to {addr} failed: {err}"));
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
            continue;
        };
        let _ = tokio::time::timeout(HEALTH_INTERVAL, shared.wake.notified()).await;
        match shared.conn.load_full() {
            Some(current) if Arc::ptr_eq(&current, &conn) => {}
            _ => continue,
        }
        let mut c = (*conn).clone();
        let err = match tokio::time::timeout(timeout, probe.query_async::<Value>(&mut c)).await {
            Ok(Ok(_)) => continue,
            Ok(Err(e)) => e.to_string(),
            Err(_) => "probe timed out".to_string(),
        };
        let _ = shared.conn.compare_and_swap(&Some(conn), None);
        shared.warn(format_args!("redis connection to {addr} lost: {err}"));
    }
}

#[cfg(test)]
#[path = "redis_tests.rs"]
pub(crate) mod tests;
