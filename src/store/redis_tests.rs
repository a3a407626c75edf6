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
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
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
            match server_pid(port) {
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
    send(store.quota_settle("a", 1, 1));
}

#[test]
fn bad_url_is_rejected_without_the_password() {
    for url in [
        "not a url",
        "redis://user:s3cret@host:notaport/0",
        "rediss://:s3cret@host",
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
        store.quota_settle("min", 0, i64::MAX).await,
        Ok(i64::MIN)
    ));
    assert!(matches!(
        store.quota_settle("min", 0, 1).await,
        Err(StoreError::Overflow)
    ));
    assert_eq!(store.quota_get("min").await.unwrap(), Some(i64::MIN));
}

#[tokio::test]
async fn quota_reserve_counts_reservations() {
    let server = Server::start();
    let store = connected_store(server.url()).await;
    let r = store.quota_reserve("nobody", 0).await.unwrap();
    assert_eq!(
        r,
        QuotaReserve {
            admitted: false,
            balance: 0
        }
    );
    store.quota_set("c", 10).await.unwrap();
    assert!(store.quota_reserve("c", 4).await.unwrap().admitted);
    assert_eq!(
        store.quota_reserve("c", 6).await.unwrap(),
        QuotaReserve {
            admitted: true,
            balance: 10
        }
    );
    assert!(!store.quota_reserve("c", 1).await.unwrap().admitted);
    assert!(!store.quota_reserve("c", 0).await.unwrap().admitted);
    let mut raw = server.raw();
    let ttl: i64 = redis::cmd("PTTL").arg("tg:qr:c").query(&mut raw).unwrap();
    assert!(ttl > 590_000 && ttl <= 600_000, "{ttl}");
    assert_eq!(store.quota_settle("c", 4, 1).await.unwrap(), 9);
    // 9 - 6 reserved = 3 available.
    assert!(store.quota_reserve("c", 3).await.unwrap().admitted);
    assert!(!store.quota_reserve("c", 1).await.unwrap().admitted);
    // Settling more than is reserved deletes the reservation key.
    store.quota_settle("c", 100, 0).await.unwrap();
    let exists: bool = redis::cmd("EXISTS").arg("tg:qr:c").query(&mut raw).unwrap();
    assert!(!exists);
    // Exact at the edges of i64.
    store.quota_set("m", i64::MAX).await.unwrap();
    assert!(store.quota_reserve("m", i64::MAX).await.unwrap().admitted);
    assert!(!store.quota_reserve("m", 1).await.unwrap().admitted);
    store.quota_settle("m", 1, 0).await.unwrap();
    assert!(store.quota_reserve("m", 1).await.unwrap().admitted);
    assert!(!store.quota_reserve("m", 1).await.unwrap().admitted);
}

#[tokio::test]
async fn concurrent_settles_deduct_exactly() {
    let server = Server::start();
    let store = connected_store(server.url()).await;
    store.quota_set("busy", 10_000).await.unwrap();
    let reserves = (0..500).map(|_| store.quota_reserve("busy", 10));
    for r in futures_util::future::join_all(reserves).await {
        assert!(r.unwrap().admitted);
    }
    assert!(!store.quota_reserve("busy", 5001).await.unwrap().admitted);
    let settles = (0..500).map(|_| store.quota_settle("busy", 10, 3));
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
