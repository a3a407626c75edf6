//! Tests of the Redis store against real `redis-server` children.

use super::*;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};

/// A `redis-server` child, killed on drop.
struct Server {
    child: Option<Child>,
    port: u16,
}

/// A port free a moment ago: another process may take it before redis-server binds it,
/// so a start checks the server's identity and tries another port after a collision.
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// The `process_id` of the Redis server answering on `port`, if one answers.
fn server_pid(port: u16) -> Option<u32> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
    s.write_all(b"INFO server\r\n").ok()?;
    // A bulk string: `$LEN\r\n` then LEN bytes.
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        reply.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&reply);
        let (head, body) = text.split_once("\r\n")?;
        let len: usize = head.strip_prefix('$')?.parse().ok()?;
        if body.len() >= len {
            let line = body.lines().find(|l| l.starts_with("process_id:"))?;
            return line["process_id:".len()..].trim().parse().ok();
        }
    }
}

impl Server {
    fn start() -> Server {
        for _ in 0..5 {
            if let Some(server) = Server::try_on(free_port()) {
                return server;
            }
        }
        panic!("redis-server did not start on any of 5 ports");
    }

    /// On this port (a restart on the port a store already uses).
    fn on(port: u16) -> Server {
        Server::try_on(port).expect("redis-server did not start")
    }

    /// Start on `port`; `None` when the port turned out to be taken (the child exited, or
    /// another server answers there).
    fn try_on(port: u16) -> Option<Server> {
        let args = ["--port".to_string(), port.to_string()];
        Server::spawn(port, &args, &server_pid)
    }

    /// Start `redis-server` with `args` (plus loopback, no persistence), ready when `pid_of`
    /// reports the child's pid for `port`; `None` when the child exited or another server
    /// answers there.
    fn spawn(port: u16, args: &[String], pid_of: &dyn Fn(u16) -> Option<u32>) -> Option<Server> {
        let child = Command::new("redis-server")
            .args(args)
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server");
        let pid = child.id();
        let mut server = Server {
            child: Some(child),
            port,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match pid_of(port) {
                Some(p) if p == pid => return Some(server),
                _ => {}
            }
            let exited = server
                .child
                .as_mut()
                .is_some_and(|c| c.try_wait().ok().flatten().is_some());
            if exited || Instant::now() > deadline {
                server.kill();
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn raw(&self) -> redis::Connection {
        Client::open(self.url()).unwrap().get_connection().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The ticket of a reservation of `reserved` under `id`.
fn held(id: HoldId, reserved: i64) -> Ticket {
    Ticket {
        id,
        reserved,
        held: true,
    }
}

/// Whether a reservation of `n` under a fresh id is admitted.
async fn admits(store: &RedisStore, consumer: &str, n: i64) -> bool {
    let r = store.quota_reserve(consumer, n, HoldId::new()).await;
    r.expect("the store answers").admitted
}

/// A charge admitted without a reservation.
fn unheld() -> Ticket {
    Ticket {
        id: HoldId::new(),
        reserved: 0,
        held: false,
    }
}

fn settings(url: String) -> RedisSettings {
    RedisSettings {
        url,
        prefix: "tg".into(),
        timeout: Duration::from_secs(1),
        ..RedisSettings::default()
    }
}

async fn connected_store(url: String) -> Arc<RedisStore> {
    let store = RedisStore::start(settings(url)).unwrap();
    wait_connected(&store).await;
    store
}

async fn wait_connected(store: &RedisStore) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !store.connected() {
        assert!(Instant::now() < deadline, "store did not connect");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn check(key: &str, window_secs: u64, n: i64, limit: u64) -> WindowCheck {
    WindowCheck {
        key: key.into(),
        window_secs,
        n,
        limit,
    }
}

#[test]
fn futures_are_send() {
    fn send<T: Send>(_: T) {}
    let store = RedisStore::start(settings("redis://127.0.0.1:1".into())).unwrap();
    send(store.window_reserve(&[]));
    send(store.quota_settle("a", held(HoldId::new(), 1), 1));
}

#[test]
fn bad_url_is_rejected_without_the_password() {
    for url in [
        "not a url",
        "redis://user:s3cret@host:notaport/0",
        "rediss://:s3cret@host/#insecure",
    ] {
        let err = RedisStore::start(settings(url.into())).err().unwrap();
        assert!(matches!(err, StoreError::Backend(_)), "{url}: {err}");
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }
}

#[tokio::test]
async fn window_reserve_is_all_or_nothing() {
    let server = Server::start();
    let store = connected_store(server.url()).await;
    let checks = [check("route:a", 3600, 2, 10), check("route:b", 3600, 1, 3)];
    for i in 1..=3u64 {
        let v = store.window_reserve(&checks).await.unwrap();
        assert_eq!(v.refused, None);
        assert_eq!((v.counts[0].count, v.counts[1].count), (2 * i, i));
    }
    let v = store.window_reserve(&checks).await.unwrap();
    assert_eq!(v.refused, Some(1));
    assert_eq!((v.counts[0].count, v.counts[1].count), (6, 3));
    for c in &v.counts {
        assert_eq!(c.start % 3600, 0);
        assert!(c.reset_ms > 0 && c.reset_ms <= 3_600_000);
    }
    // Nothing was added by the refusal; a check with n = 0 only reads.
    let v = store
        .window_reserve(&[check("route:a", 3600, 0, 10)])
        .await
        .unwrap();
    assert_eq!((v.refused, v.counts[0].count), (None, 6));
    let mut raw = server.raw();
    let ttl: i64 = redis::cmd("PTTL")
        .arg(format!("tg:w:route:a:{}", v.counts[0].start))
        .query(&mut raw)
        .unwrap();
    assert!(ttl > 3_600_000 && ttl <= 7_200_000, "{ttl}");
    assert_eq!(store.window_reserve(&[]).await.unwrap().counts, vec![]);
}

#[tokio::test]
async fn window_estimate_weighs_the_previous_window() {
    let server = Server::start();
    let store = connected_store(server.url()).await;
    let v = store
        .window_reserve(&[check("k", 10, 1, 100_000)])
        .await
        .unwrap();
    let start = v.counts[0].start;
    let mut raw = server.raw();
    let _: () = redis::cmd("SET")
        .arg(format!("tg:w:k:{}", start - 10))
        .arg(1000)
        .query(&mut raw)
        .unwrap();
    let v = store
        .window_reserve(&[check("k", 10, 0, 100_000)])
        .await
        .unwrap();
    if v.counts[0].start == start {
        // prev * (1 - frac) + curr, with 1 - frac = reset_ms / 10_000.
        let expected = 1 + v.counts[0].reset_ms / 10;
        assert!(v.counts[0].count.abs_diff(expected) <= 1, "{v:?}");
    }
}

#[tokio::test]
async fn window_adjust_changes_only_live_windows() {
    let server = Server::start();
    let store = connected_store(server.url()).await;
    let v = store
        .window_reserve(&[check("adj", 3600, 5, 100)])
        .await
        .unwrap();
    let start = v.counts[0].start;
    let adj = |start, delta| WindowAdjust {
        key: "adj".into(),
        window_secs: 3600,
        start,
        delta,
    };
    store
        .window_adjust(&[adj(start, -3), adj(start, 10), adj(start - 7200, 4)])
        .await
        .unwrap();
    let v = store
        .window_reserve(&[check("adj", 3600, 0, 100)])
        .await
        .unwrap();
    assert_eq!(v.counts[0].count, 12);
    let mut raw = server.raw();
    let exists: bool = redis::cmd("EXISTS")
        .arg(format!("tg:w:adj:{}", start - 7200))
        .query(&mut raw)
        .unwrap();
    assert!(!exists);
    store.window_adjust(&[]).await.unwrap();
}

#[tokio::test]
async fn two_stores_share_a_limit() {
    let server = Server::start();
    let a = connected_store(server.url()).await;
    let b = connected_store(server.url()).await;
    let checks = [check("shared", 60, 1, 10)];
    let mut admitted = 0;
    for i in 0..12 {
        let store = if i % 2 == 0 { &a } else { &b };
        if store
            .window_reserve(&checks)
            .await
            .unwrap()
            .refused
            .is_none()
        {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 10);
}

#[tokio::test]
async fn quota_set_get_add_overflow() {
    let server = Server::start();
    let store = connected_store(server.url()).await;
    assert_eq!(store.quota_get("alice").await.unwrap(), None);
    assert_eq!(store.quota_set("alice", 100).await.unwrap(), 100);
    assert_eq!(store.quota_get("alice").await.unwrap(), Some(100));
    assert_eq!(store.quota_add("alice", -30).await.unwrap(), 70);
    assert_eq!(store.quota_add("bob", 5).await.unwrap(), 5);
    let big = (1i64 << 62) + 1;
    store.quota_set("big", big).await.unwrap();
    assert_eq!(store.quota_add("big", 2).await.unwrap(), big + 2);
    store.quota_set("max", i64::MAX - 1).await.unwrap();
    assert_eq!(store.quota_add("max", 1).await.unwrap(), i64::MAX);
    assert!(matches!(
        store.quota_add("max", 1).await,
        Err(StoreError::Overflow)
    ));
    assert_eq!(store.quota_get("max").await.unwrap(), Some(i64::MAX));
    store.quota_set("min", -1).await.unwrap();
    assert!(matches!(
        store.quota_add("min", i64::MIN).await,
        Err(StoreError::Overflow)
    ));
    assert!(matches!(
        store.quota_settle("min", unheld(), i64::MAX).await,
        Ok(i64::MIN)
    ));
    assert!(matches!(
        store.quota_settle("min", unheld(), 1).await,
        Err(StoreError::Overflow)
    ));
    assert_eq!(store.quota_get("min").await.unwrap(), Some(i64::MIN));
    // A charge that would overflow still releases its reservation (it is not retried).
    store.quota_set("held", 5).await.unwrap();
    let id = HoldId::new();
    assert!(store.quota_reserve("held", 5, id).await.unwrap().admitted);
    assert!(!admits(&store, "held", 1).await);
    store.quota_set("held", i64::MIN + 3).await.unwrap();
    assert!(matches!(
        store.quota_settle("held", held(id, 5), 10).await,
        Err(StoreError::Overflow)
    ));
    store.quota_set("held", 5).await.unwrap();
    assert!(
        admits(&store, "held", 5).await,
        "the reservation was released"
    );
    // The same for a budget.
    let slot = crate::store::budget_sql::Slot {
        budget: "b".into(),
        subject: "s".into(),
        start: 0,
    };
    store
        .budget_settle(&slot, unheld(), i64::MAX)
        .await
        .unwrap();
    store.budget_change(&slot, Some(10), false).await.unwrap();
    let items = [(slot.clone(), Some(i64::MAX), 5)];
    let id = HoldId::new();
    assert_eq!(store.budget_reserve(&items, id).await.unwrap(), None);
    let (_, reserved) = store.budget_change(&slot, Some(0), true).await.unwrap();
    assert_eq!(reserved, 5);
    assert!(matches!(
        store.budget_settle(&slot, held(id, 5), 1).await,
        Err(StoreError::Overflow)
    ));
    let (spend, reserved) = store.budget_change(&slot, Some(0), true).await.unwrap();
    assert_eq!(
        (spend.spent, reserved),
        (i64::MAX, 0),
        "released, not charged"
    );
}

#[tokio::test]
async fn quota_reserve_counts_reservations() {
    let server = Server::start();
    let store = connected_store(server.url()).await;
    let r = store
        .quota_reserve("nobody", 0, HoldId::new())
        .await
        .unwrap();
    assert_eq!(
        r,
        QuotaReserve {
            admitted: false,
            balance: 0
        }
    );
    store.quota_set("c", 10).await.unwrap();
    let (a, b, c) = (HoldId::new(), HoldId::new(), HoldId::new());
    assert!(store.quota_reserve("c", 4, a).await.unwrap().admitted);
    assert_eq!(
        store.quota_reserve("c", 6, b).await.unwrap(),
        QuotaReserve {
            admitted: true,
            balance: 10
        }
    );
    assert!(!admits(&store, "c", 1).await);
    assert!(!admits(&store, "c", 0).await);
    let mut raw = server.raw();
    // Neither the sum nor the holds expire as keys (an eviction policy for keys with a
    // TTL never takes them); each reservation expires on its own.
    for key in ["tg:qr:c", "tg:qh:c"] {
        let ttl: i64 = redis::cmd("PTTL").arg(key).query(&mut raw).unwrap();
        assert_eq!(ttl, -1, "{key}");
    }
    assert_eq!(store.quota_settle("c", held(a, 4), 1).await.unwrap(), 9);
    // 9 - 6 reserved = 3 available.
    assert!(store.quota_reserve("c", 3, c).await.unwrap().admitted);
    assert!(!admits(&store, "c", 1).await);
    // The last settle deletes the reservation key.
    store.quota_settle("c", held(b, 6), 0).await.unwrap();
    store.quota_settle("c", held(c, 3), 0).await.unwrap();
    let exists: bool = redis::cmd("EXISTS").arg("tg:qr:c").query(&mut raw).unwrap();
    assert!(!exists);
    // Exact at the edges of i64.
    store.quota_set("m", i64::MAX).await.unwrap();
    let m = HoldId::new();
    assert!(
        store
            .quota_reserve("m", i64::MAX, m)
            .await
            .unwrap()
            .admitted
    );
    assert!(!admits(&store, "m", 1).await);
    store.quota_settle("m", held(m, i64::MAX), 0).await.unwrap();
    assert!(admits(&store, "m", 1).await);
    assert!(admits(&store, "m", i64::MAX - 1).await);
    assert!(!admits(&store, "m", 1).await);
}

#[tokio::test]
async fn concurrent_settles_deduct_exactly() {
    let server = Server::start();
    let store = connected_store(server.url()).await;
    store.quota_set("busy", 10_000).await.unwrap();
    let ids: Vec<HoldId> = (0..500).map(|_| HoldId::new()).collect();
    let reserves = ids.iter().map(|id| store.quota_reserve("busy", 10, *id));
    for r in futures_util::future::join_all(reserves).await {
        assert!(r.unwrap().admitted);
    }
    assert!(!admits(&store, "busy", 5001).await);
    let settles = ids
        .iter()
        .map(|id| store.quota_settle("busy", held(*id, 10), 3));
    for r in futures_util::future::join_all(settles).await {
        r.unwrap();
    }
    assert_eq!(store.quota_get("busy").await.unwrap(), Some(8_500));
    let mut raw = server.raw();
    let exists: bool = redis::cmd("EXISTS")
        .arg("tg:qr:busy")
        .query(&mut raw)
        .unwrap();
    assert!(!exists);
}

/// The reserved sum of `key`, 0 when it is gone.
fn reserved_sum(raw: &mut redis::Connection, key: &str) -> i64 {
    let v: Option<i64> = redis::cmd("GET").arg(key).query(raw).unwrap();
    v.unwrap_or(0)
}

#[tokio::test]
async fn a_settle_applies_once_and_expired_reservations_are_released() {
    let server = Server::start();
    let store = connected_store(server.url()).await;
    let mut raw = server.raw();
    store.quota_set("r", 100).await.unwrap();
    // A retried settle (its first answer lost) neither charges nor releases again.
    let a = HoldId::new();
    assert!(store.quota_reserve("r", 10, a).await.unwrap().admitted);
    assert_eq!(store.quota_settle("r", held(a, 10), 4).await.unwrap(), 96);
    assert_eq!(store.quota_settle("r", held(a, 10), 4).await.unwrap(), 96);
    assert_eq!(reserved_sum(&mut raw, "tg:qr:r"), 0);
    // So does a charge admitted without a reservation (the store had failed).
    let u = unheld();
    assert_eq!(store.quota_settle("r", u, 5).await.unwrap(), 91);
    assert_eq!(store.quota_settle("r", u, 5).await.unwrap(), 91);
    // A reservation whose request never settles (its gateway died) is released when it
    // expires, by the next reservation, under steady traffic too.
    // (A second is long enough for the refusal just after it on a loaded machine.)
    store.set_reservation_ttl_ms(1_000);
    let lost = HoldId::new();
    assert!(store.quota_reserve("r", 80, lost).await.unwrap().admitted);
    assert!(!admits(&store, "r", 20).await);
    store.set_reservation_ttl_ms(600_000);
    let next = HoldId::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !store.quota_reserve("r", 20, next).await.unwrap().admitted {
        assert!(
            Instant::now() < deadline,
            "the expired reservation was never released"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(reserved_sum(&mut raw, "tg:qr:r"), 20);
    // The late request still settles: charged once, and it does not release the newer
    // reservation's share.
    assert_eq!(
        store.quota_settle("r", held(lost, 80), 30).await.unwrap(),
        61
    );
    assert_eq!(
        store.quota_settle("r", held(lost, 80), 30).await.unwrap(),
        61
    );
    assert_eq!(reserved_sum(&mut raw, "tg:qr:r"), 20);
    assert_eq!(
        store.quota_settle("r", held(next, 20), 0).await.unwrap(),
        61
    );
    assert_eq!(reserved_sum(&mut raw, "tg:qr:r"), 0);
    let members: i64 = redis::cmd("ZCARD").arg("tg:qh:r").query(&mut raw).unwrap();
    assert_eq!(members, 0, "settled reservations leave nothing behind");

    // A request admitted without a confirmed reservation (the reserve's answer was lost)
    // whose reservation was made after all: its settle releases it, once.
    let made = HoldId::new();
    assert!(store.quota_reserve("r", 30, made).await.unwrap().admitted);
    let unconfirmed = Ticket {
        id: made,
        reserved: 30,
        held: false,
    };
    assert_eq!(store.quota_settle("r", unconfirmed, 1).await.unwrap(), 60);
    assert_eq!(store.quota_settle("r", unconfirmed, 1).await.unwrap(), 60);
    assert_eq!(reserved_sum(&mut raw, "tg:qr:r"), 0);
    // What no live reservation holds (an older gateway's, a failover's leftovers) is
    // dropped by the next reservation.
    redis::cmd("SET")
        .arg("tg:qr:r")
        .arg(55)
        .query::<()>(&mut raw)
        .unwrap();
    assert!(admits(&store, "r", 60).await);
    assert_eq!(reserved_sum(&mut raw, "tg:qr:r"), 60);
    // Many reservations of a dead gateway go at once when they expire.
    store.quota_set("many", 100).await.unwrap();
    store.set_reservation_ttl_ms(50);
    for _ in 0..100 {
        assert!(admits(&store, "many", 1).await);
    }
    store.set_reservation_ttl_ms(600_000);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !admits(&store, "many", 100).await {
        assert!(
            Instant::now() < deadline,
            "the expired reservations were never released"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(reserved_sum(&mut raw, "tg:qr:many"), 100);

    // Budgets: the same, soft ones included (never checked, nothing reserved).
    let slot = |budget: &str| crate::store::budget_sql::Slot {
        budget: budget.into(),
        subject: "s".into(),
        start: 0,
    };
    let (hard, soft) = (slot("hard"), slot("soft"));
    let id = HoldId::new();
    let items = [(hard.clone(), Some(10), 6), (soft.clone(), None, 1_000)];
    assert_eq!(store.budget_reserve(&items, id).await.unwrap(), None);
    let spent = |s: &crate::store::budget_sql::Slot| {
        let s = s.clone();
        let store = store.clone();
        async move { store.budget_change(&s, None, true).await.unwrap() }
    };
    assert_eq!(spent(&hard).await.1, 6);
    assert_eq!(spent(&soft).await.1, 0);
    for _ in 0..2 {
        store.budget_settle(&hard, held(id, 6), 4).await.unwrap();
        store.budget_settle(&soft, held(id, 0), 7).await.unwrap();
    }
    assert_eq!((spent(&hard).await.0.spent, spent(&hard).await.1), (4, 0));
    assert_eq!((spent(&soft).await.0.spent, spent(&soft).await.1), (7, 0));
    let u = unheld();
    for _ in 0..2 {
        store.budget_settle(&hard, u, 1).await.unwrap();
    }
    assert_eq!(spent(&hard).await.0.spent, 5);
}

#[tokio::test]
async fn starts_while_redis_is_down_then_connects() {
    let port = free_port();
    let store = RedisStore::start(settings(format!("redis://127.0.0.1:{port}"))).unwrap();
    assert!(!store.connected());
    let t = Instant::now();
    let err = store.quota_get("x").await.unwrap_err();
    assert!(
        matches!(err, StoreError::Unavailable(_) | StoreError::Timeout),
        "{err}"
    );
    assert!(t.elapsed() < Duration::from_millis(1200));
    let err = store
        .window_reserve(&[check("k", 60, 1, 5)])
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Unavailable(_) | StoreError::Timeout),
        "{err}"
    );
    let _server = Server::on(port);
    wait_connected(&store).await;
    assert_eq!(store.quota_set("x", 7).await.unwrap(), 7);
    assert_eq!(store.quota_get("x").await.unwrap(), Some(7));
}

#[tokio::test]
async fn recovers_after_redis_restarts() {
    let mut server = Server::start();
    let port = server.port;
    let store = connected_store(server.url()).await;
    store.quota_set("r", 5).await.unwrap();
    server.kill();
    let err = store.quota_get("r").await.unwrap_err();
    assert!(
        matches!(err, StoreError::Unavailable(_) | StoreError::Timeout),
        "{err}"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while store.connected() {
        assert!(Instant::now() < deadline, "still connected");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(matches!(
        store.quota_get("r").await,
        Err(StoreError::Unavailable(_))
    ));
    let server = Server::on(port);
    wait_connected(&store).await;
    assert_eq!(store.quota_get("r").await.unwrap(), None);
    assert_eq!(store.quota_add("r", 3).await.unwrap(), 3);
    drop(server);
}

// ---- TLS (rediss://) and Redis Cluster ----

/// Whether to skip a test because `redis-server` is not installed: only outside CI (on CI
/// the test runs and fails).
pub(crate) fn skip_without_redis() -> bool {
    let missing = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_err();
    if missing && std::env::var_os("CI").is_none() {
        eprintln!("skipped: redis-server is not installed (tests/deps.sh installs it)");
        return true;
    }
    false
}

/// The `process_id` line of an `INFO server` reply.
fn info_pid(info: &str) -> Option<u32> {
    let line = info.lines().find(|l| l.starts_with("process_id:"))?;
    line["process_id:".len()..].trim().parse().ok()
}

/// A private CA and a certificate for 127.0.0.1 it signed, as files in `dir`:
/// `(cert, key, ca)` paths and the CA's PEM.
fn tls_files(dir: &std::path::Path) -> (String, String, String, Vec<u8>) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // Distinct names: OpenSSL (redis-server, redis-cli) takes a certificate whose issuer is
    // its own subject for self-signed.
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "tollgate test CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &ca, &ca_key)
        .unwrap();
    let path = |name: &str| dir.join(name).to_string_lossy().into_owned();
    std::fs::write(path("cert.pem"), leaf.pem()).unwrap();
    std::fs::write(path("key.pem"), leaf_key.serialize_pem()).unwrap();
    std::fs::write(path("ca.pem"), ca.pem()).unwrap();
    (
        path("cert.pem"),
        path("key.pem"),
        path("ca.pem"),
        ca.pem().into_bytes(),
    )
}

/// A `redis-server` that speaks only TLS, with a certificate of a private CA.
pub(crate) struct TlsServer {
    server: Server,
    ca: Vec<u8>,
    ca_file: String,
    cert: String,
    key: String,
    _dir: tempfile::TempDir,
}

/// The `process_id` of the TLS Redis server answering on `port`, if one answers.
fn tls_pid(port: u16, ca: &[u8]) -> Option<u32> {
    let url = format!("rediss://127.0.0.1:{port}/0");
    let certs = TlsCertificates {
        client_tls: None,
        root_cert: Some(ca.to_vec()),
    };
    let client = Client::build_with_tls(url, certs).ok()?;
    let mut c = client
        .get_connection_with_timeout(Duration::from_millis(500))
        .ok()?;
    let info: String = redis::cmd("INFO").arg("server").query(&mut c).ok()?;
    info_pid(&info)
}

impl TlsServer {
    pub(crate) fn start() -> TlsServer {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key, ca_file, ca) = tls_files(dir.path());
        let mut server = TlsServer {
            server: Server {
                child: None,
                port: 0,
            },
            ca,
            ca_file,
            cert,
            key,
            _dir: dir,
        };
        for _ in 0..5 {
            if let Some(s) = server.spawn(free_port()) {
                server.server = s;
                return server;
            }
        }
        panic!("redis-server (TLS) did not start on any of 5 ports");
    }

    fn spawn(&self, port: u16) -> Option<Server> {
        let args: Vec<String> = [
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--tls-cert-file",
            &self.cert,
            "--tls-key-file",
            &self.key,
            "--tls-ca-cert-file",
            &self.ca_file,
            "--tls-auth-clients",
            "no",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        Server::spawn(port, &args, &|p| tls_pid(p, &self.ca))
    }

    /// Start again on the same port.
    fn restart(&mut self) {
        self.server.kill();
        self.server = self
            .spawn(self.server.port)
            .expect("redis-server (TLS) could not listen on its port again");
    }

    fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}/0", self.server.port)
    }

    pub(crate) fn settings(&self) -> RedisSettings {
        RedisSettings {
            ca_pem: Some(self.ca.clone()),
            ..settings(self.url())
        }
    }
}

/// Three primaries in cluster mode (no replicas), each in its own directory, on run-time
/// ports (the client port and the cluster bus port), with every slot assigned; optionally
/// over TLS only (clients and the cluster bus), with a certificate of a private CA.
pub(crate) struct Cluster {
    nodes: Vec<Server>,
    /// `(cert, key, ca file, ca PEM)` when the cluster speaks TLS.
    tls: Option<(String, String, String, Vec<u8>)>,
    _dirs: Vec<tempfile::TempDir>,
}

impl Cluster {
    fn start() -> Cluster {
        Cluster::start_with(false)
    }

    pub(crate) fn start_with(tls: bool) -> Cluster {
        let mut dirs = vec![tempfile::tempdir().unwrap()];
        let mut cluster = Cluster {
            nodes: Vec::new(),
            tls: tls.then(|| tls_files(dirs[0].path())),
            _dirs: Vec::new(),
        };
        for _ in 0..3 {
            let (node, dir) = (0..5)
                .find_map(|_| {
                    let dir = tempfile::tempdir().unwrap();
                    let (port, bus) = (free_port(), free_port());
                    let mut args: Vec<String> = [
                        "--cluster-enabled",
                        "yes",
                        "--cluster-port",
                        &bus.to_string(),
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-require-full-coverage",
                        "no",
                        "--dir",
                        &dir.path().to_string_lossy(),
                    ]
                    .iter()
                    .map(|s| s.to_string())
                    .collect();
                    match &cluster.tls {
                        None => args.extend(["--port".into(), port.to_string()]),
                        Some((cert, key, ca_file, _)) => args.extend(
                            [
                                "--port",
                                "0",
                                "--tls-port",
                                &port.to_string(),
                                "--tls-cluster",
                                "yes",
                                "--tls-cert-file",
                                cert,
                                "--tls-key-file",
                                key,
                                "--tls-ca-cert-file",
                                ca_file,
                                "--tls-auth-clients",
                                "no",
                            ]
                            .map(String::from),
                        ),
                    }
                    let server = match &cluster.tls {
                        None => Server::spawn(port, &args, &server_pid),
                        Some((.., ca)) => Server::spawn(port, &args, &|p| tls_pid(p, ca)),
                    };
                    server.map(|s| (s, dir))
                })
                .expect("cluster node did not start on any of 5 ports");
            cluster.nodes.push(node);
            dirs.push(dir);
        }
        cluster._dirs = dirs;
        let addrs: Vec<String> = cluster
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let mut cli = Command::new("redis-cli");
        if let Some((.., ca_file, _)) = &cluster.tls {
            cli.args(["--tls", "--cacert", ca_file]);
        }
        let out = cli
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli");
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        for node in &cluster.nodes {
            loop {
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query(&mut cluster.conn(node))
                    .unwrap();
                if info.contains("cluster_state:ok") && info.contains("cluster_known_nodes:3") {
                    break;
                }
                assert!(Instant::now() < deadline, "cluster not ok: {info}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        cluster
    }

    fn url(&self, node: &Server) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}", node.port)
    }

    fn certs(&self) -> Option<TlsCertificates> {
        self.tls.as_ref().map(|(.., ca)| TlsCertificates {
            client_tls: None,
            root_cert: Some(ca.clone()),
        })
    }

    /// A connection to one node (no redirections).
    fn conn(&self, node: &Server) -> redis::Connection {
        let client = match self.certs() {
            None => Client::open(self.url(node)),
            Some(certs) => Client::build_with_tls(self.url(node), certs),
        };
        client.unwrap().get_connection().unwrap()
    }

    /// Store settings seeded with a node that does NOT hold `prefix`'s slot (so the client
    /// must follow the cluster's map), the other nodes as further seeds.
    pub(crate) fn settings(&self, prefix: &str) -> RedisSettings {
        let anchor = format!("{{{prefix}}}:w");
        let (away, rest): (Vec<&Server>, Vec<&Server>) = self.nodes.iter().partition(|n| {
            let r: RedisResult<i64> = redis::cmd("EXISTS").arg(&anchor).query(&mut self.conn(n));
            r.is_err_and(|e| e.kind() == redis::ErrorKind::Moved)
        });
        assert_eq!(away.len(), 2, "one node holds the slot of {anchor}");
        RedisSettings {
            cluster: true,
            prefix: prefix.into(),
            nodes: away[1..].iter().chain(&rest).map(|n| self.url(n)).collect(),
            ca_pem: self.tls.as_ref().map(|(.., ca)| ca.clone()),
            ..settings(self.url(away[0]))
        }
    }

    /// A cluster connection that follows redirections, to look at the keys.
    fn raw(&self) -> redis::cluster::ClusterConnection {
        let seeds: Vec<String> = self.nodes.iter().map(|n| self.url(n)).collect();
        let mut builder = ClusterClientBuilder::new(seeds);
        if let Some(certs) = self.certs() {
            builder = builder.certs(certs);
        }
        builder.build().unwrap().get_connection().unwrap()
    }

    /// The hash slot of `key`.
    fn slot(&self, key: &str) -> i64 {
        redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut self.conn(&self.nodes[0]))
            .unwrap()
    }
}

async fn connected(settings: RedisSettings) -> Arc<RedisStore> {
    let store = RedisStore::start(settings).unwrap();
    wait_connected(&store).await;
    store
}

/// Window reserve (several rules, all or nothing) and adjust, and quota set, add, reserve
/// and settle, through `store`; `get` reads a key (`P` is the key prefix).
async fn exercise(store: &RedisStore, p: &str, mut get: impl FnMut(&str) -> Option<i64>) {
    let checks = [
        check("route:a", 3600, 2, 10),
        check("consumer:b", 3600, 1, 3),
        check("global", 60, 1, 100),
    ];
    for i in 1..=3u64 {
        let v = store.window_reserve(&checks).await.unwrap();
        assert_eq!(v.refused, None);
        assert_eq!((v.counts[0].count, v.counts[1].count), (2 * i, i));
    }
    let v = store.window_reserve(&checks).await.unwrap();
    assert_eq!(v.refused, Some(1));
    let start = v.counts[0].start;
    assert_eq!(get(&format!("{p}:w:route:a:{start}")), Some(6));
    assert_eq!(get(&format!("{p}:w:consumer:b:{start}")), Some(3));
    store
        .window_adjust(&[
            WindowAdjust {
                key: "route:a".into(),
                window_secs: 3600,
                start,
                delta: -4,
            },
            WindowAdjust {
                key: "consumer:b".into(),
                window_secs: 3600,
                start,
                delta: -1,
            },
        ])
        .await
        .unwrap();
    let v = store.window_reserve(&checks).await.unwrap();
    assert_eq!(v.refused, None, "{v:?}");
    assert_eq!((v.counts[0].count, v.counts[1].count), (4, 3));

    assert_eq!(store.quota_get("alice").await.unwrap(), None);
    assert_eq!(store.quota_set("alice", 10).await.unwrap(), 10);
    assert_eq!(store.quota_add("alice", 5).await.unwrap(), 15);
    let id = HoldId::new();
    assert!(store.quota_reserve("alice", 10, id).await.unwrap().admitted);
    assert!(!admits(store, "alice", 6).await);
    assert_eq!(get(&format!("{p}:qr:alice")), Some(10));
    assert_eq!(
        store.quota_settle("alice", held(id, 10), 7).await.unwrap(),
        8
    );
    assert_eq!(get(&format!("{p}:q:alice")), Some(8));
    assert_eq!(get(&format!("{p}:qr:alice")), None);
    store.quota_set("max", i64::MAX).await.unwrap();
    assert!(matches!(
        store.quota_add("max", 1).await,
        Err(StoreError::Overflow)
    ));
}

#[tokio::test]
async fn tls_store_with_a_private_ca() {
    if skip_without_redis() {
        return;
    }
    let server = TlsServer::start();
    let store = connected(server.settings()).await;
    let certs = TlsCertificates {
        client_tls: None,
        root_cert: Some(server.ca.clone()),
    };
    let mut raw = Client::build_with_tls(server.url(), certs)
        .unwrap()
        .get_connection()
        .unwrap();
    exercise(&store, "tg", |k| {
        redis::cmd("GET").arg(k).query(&mut raw).unwrap()
    })
    .await;
    // The CA file as the runtime reads it.
    assert_eq!(load_ca(&server.ca_file).unwrap(), server.ca);
    assert!(load_ca("/nonexistent/ca.pem").is_err());

    // Without the private CA (platform roots), the server's certificate is refused.
    let target = Target::new(&settings(server.url())).unwrap();
    let config = AsyncConnectionConfig::new();
    let err = target.connect(&config).await.err().unwrap();
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "{err}"
    );
    // A plain connection to the TLS port does not work either.
    let plain = Target::new(&settings(server.url().replace("rediss", "redis"))).unwrap();
    let attempt = tokio::time::timeout(Duration::from_secs(1), async {
        let mut c = plain.connect(&config).await?;
        redis::cmd("PING").query_async::<()>(&mut c).await
    });
    assert!(!matches!(attempt.await, Ok(Ok(()))));
}

#[tokio::test]
async fn tls_store_recovers_after_redis_restarts() {
    if skip_without_redis() {
        return;
    }
    let mut server = TlsServer::start();
    let store = connected(server.settings()).await;
    store.quota_set("r", 5).await.unwrap();
    server.server.kill();
    let deadline = Instant::now() + Duration::from_secs(5);
    while store.connected() {
        assert!(Instant::now() < deadline, "still connected");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(matches!(
        store.quota_get("r").await,
        Err(StoreError::Unavailable(_))
    ));
    server.restart();
    wait_connected(&store).await;
    assert_eq!(store.quota_get("r").await.unwrap(), None);
    assert_eq!(store.quota_add("r", 2).await.unwrap(), 2);
}

#[tokio::test]
async fn cluster_store_keeps_every_key_of_a_prefix_in_one_slot() {
    if skip_without_redis() {
        return;
    }
    let cluster = Cluster::start();
    let store = connected(cluster.settings("tg")).await;
    let mut raw = cluster.raw();
    exercise(&store, "{tg}", |k| {
        redis::cmd("GET").arg(k).query(&mut raw).unwrap()
    })
    .await;
    // The windows of that multi-rule reservation would be in different slots (most likely
    // on different nodes) without the tag; with it they share the anchor's slot.
    let v = store
        .window_reserve(&[check("route:a", 3600, 0, 10)])
        .await
        .unwrap();
    let start = v.counts[0].start;
    let keys = ["route:a", "consumer:b", "global"].map(|k| format!("w:{k}:{start}"));
    let untagged: Vec<i64> = keys
        .iter()
        .map(|k| cluster.slot(&format!("tg:{k}")))
        .collect();
    assert!(untagged.iter().any(|s| *s != untagged[0]), "{untagged:?}");
    let anchor = cluster.slot("{tg}:w");
    for k in &keys {
        assert_eq!(cluster.slot(&format!("{{tg}}:{k}")), anchor);
    }
    let ttl: i64 = redis::cmd("PTTL")
        .arg(format!("{{tg}}:w:route:a:{start}"))
        .query(&mut raw)
        .unwrap();
    assert!(ttl > 3_600_000 && ttl <= 7_200_000, "{ttl}");

    // A second gateway (another prefix: another slot) shares nothing with the first, and
    // two stores of one prefix share one limit.
    let other = connected(cluster.settings("tg2")).await;
    assert_eq!(other.quota_get("alice").await.unwrap(), None);
    let same = connected(cluster.settings("tg")).await;
    assert_eq!(same.quota_get("alice").await.unwrap(), Some(8));
    let limit = [check("shared", 60, 1, 5)];
    let mut admitted = 0;
    for i in 0..8 {
        let s = if i % 2 == 0 { &store } else { &same };
        if s.window_reserve(&limit).await.unwrap().refused.is_none() {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 5);
}

#[tokio::test]
async fn cluster_store_reconnects_when_its_seed_is_gone() {
    if skip_without_redis() {
        return;
    }
    let mut cluster = Cluster::start();
    let settings = cluster.settings("tg");
    let store = connected(settings.clone()).await;
    store.quota_set("s", 3).await.unwrap();
    // The first seed does not hold the slot: losing it leaves the prefix's primary up.
    let seed = cluster
        .nodes
        .iter()
        .position(|n| settings.url.ends_with(&format!(":{}", n.port)))
        .unwrap();
    cluster.nodes[seed].kill();
    let fresh = connected(settings).await;
    assert_eq!(fresh.quota_get("s").await.unwrap(), Some(3));
    // The first store's client notices the lost node and re-reads the cluster's map; a call
    // in the meantime may fail (within the timeout), then it serves again. Scripts it never
    // ran before work too: they are sent with EVAL to the slot's primary, not loaded on
    // every primary (SCRIPT LOAD would fail while one is down).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match store.quota_get("s").await {
            Ok(v) => break assert_eq!(v, Some(3)),
            Err(e) => assert!(Instant::now() < deadline, "{e}"),
        }
    }
    assert_eq!(store.quota_add("s", 1).await.unwrap(), 4);
    let v = fresh
        .window_reserve(&[check("after", 60, 1, 5)])
        .await
        .unwrap();
    assert_eq!((v.refused, v.counts[0].count), (None, 1));
}

#[tokio::test]
async fn tls_cluster_store() {
    if skip_without_redis() {
        return;
    }
    let cluster = Cluster::start_with(true);
    let store = connected(cluster.settings("tg")).await;
    let mut raw = cluster.raw();
    exercise(&store, "{tg}", |k| {
        redis::cmd("GET").arg(k).query(&mut raw).unwrap()
    })
    .await;
    // Without the private CA the cluster's certificates are refused.
    let untrusting = RedisSettings {
        ca_pem: None,
        ..cluster.settings("tg")
    };
    let target = Target::new(&untrusting).unwrap();
    let err = target
        .connect(&AsyncConnectionConfig::new())
        .await
        .err()
        .unwrap();
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "{err}"
    );
}

#[test]
fn settings_debug_shows_no_password() {
    let s = RedisSettings {
        nodes: vec!["rediss://u:s3cret@10.0.0.2:7001".into()],
        ca_pem: Some(b"pem".to_vec()),
        ..settings("rediss://:s3cret@10.0.0.1:7000/0".into())
    };
    let shown = format!("{s:?}");
    assert!(!shown.contains("s3cret"), "{shown}");
    assert!(
        shown.contains("10.0.0.1:7000") && shown.contains("10.0.0.2:7001"),
        "{shown}"
    );
}

#[test]
fn settings_a_store_cannot_use_are_refused() {
    let base = || settings("redis://127.0.0.1:1".into());
    let refused = |s: RedisSettings, what: &str| {
        let err = RedisStore::start(s).err().unwrap();
        assert!(err.to_string().contains(what), "{err}");
        assert!(!err.to_string().contains("s3cret"), "{err}");
    };
    refused(
        RedisSettings {
            ca_pem: Some(b"x".to_vec()),
            ..base()
        },
        "rediss://",
    );
    refused(
        RedisSettings {
            nodes: vec!["redis://127.0.0.1:2".into()],
            ..base()
        },
        "cluster: true",
    );
    refused(
        RedisSettings {
            cluster: true,
            url: "redis://:s3cret@127.0.0.1:1/2".into(),
            ..base()
        },
        "database 0",
    );
    refused(
        RedisSettings {
            cluster: true,
            nodes: vec!["rediss://127.0.0.1:2".into()],
            ..base()
        },
        "same scheme",
    );
    refused(
        RedisSettings {
            cluster: true,
            prefix: "{a}".into(),
            ..base()
        },
        "hash tag",
    );
    let err = RedisStore::start(RedisSettings {
        url: "rediss://:s3cret@127.0.0.1:1".into(),
        ca_pem: Some(b"not a certificate".to_vec()),
        ..base()
    });
    if let Err(e) = err {
        assert!(!e.to_string().contains("s3cret"), "{e}");
    }
}
