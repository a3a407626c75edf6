//! Zero-downtime binary upgrade under load: a new process started with `-u` takes the
//! listening sockets, the old one gets SIGQUIT and drains. Five upgrades in a row while
//! non-streaming and long streaming requests run: not one may fail or be cut.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use common::traffic::{traffic, Tally};
use common::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_upgrades_under_load_lose_nothing() {
    let mock = Mock::start();
    let dir = tempfile::tempdir().unwrap();
    let body = mock_provider(&mock.url(), "").replace("mock-mapped", "unused");
    // Grace must cover the longest stream (20 x 40 ms here).
    let text = config_text(dir.path(), PROXY_LISTEN, ADMIN_LISTEN, None, None, &body)
        .replace("grace_period_seconds: 1", "grace_period_seconds: 2")
        .replace(
            "graceful_shutdown_timeout_seconds: 1",
            "graceful_shutdown_timeout_seconds: 2",
        );
    let config = dir.path().join("tollgate.yaml");
    std::fs::write(&config, text).unwrap();
    let upgrade_sock = dir.path().join("upgrade.sock");

    let mut current = GatewayProcess::spawn(&config, &[]);
    let port = port_of(current.wait_ready().proxy());

    let t0 = Instant::now();
    let mut events = Vec::new();
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let mut load = Vec::new();
    for i in 0..6 {
        load.push(tokio::spawn(traffic(
            port,
            i % 2 == 1,
            40,
            stop.clone(),
            tally.clone(),
            t0,
        )));
    }

    let mut pids = vec![current.pid()];
    for round in 0..5 {
        // Some traffic through the current process before it is replaced.
        let served = tally.ok.load(Ordering::Relaxed);
        eventually("traffic before the upgrade", || {
            let now = tally.ok.load(Ordering::Relaxed);
            async move { now >= served + 10 }
        })
        .await;
        let _ = std::fs::remove_file(&upgrade_sock);
        let mut next = GatewayProcess::spawn(&config, &["-u"]);
        // The new process listens on the upgrade socket for the old one's listeners.
        let t = Instant::now();
        while !upgrade_sock.exists() {
            assert!(
                t.elapsed() < DEADLINE,
                "round {round}: new process never opened the upgrade socket"
            );
            assert!(
                next.child.try_wait().unwrap().is_none(),
                "round {round}: new process exited:\n{}",
                next.stderr()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        events.push(format!("round {round}: QUIT at {:?}", t0.elapsed()));
        current.signal("-QUIT");
        // The new process reports the same port once it holds the sockets.
        let ready = next.wait_ready();
        assert_eq!(port_of(ready.proxy()), port, "round {round}");
        // Pingora's old process keeps serving 5 s after the hand-over, then the grace period.
        let mut old = std::mem::replace(&mut current, next);
        tokio::task::spawn_blocking(move || {
            assert!(
                old.exit_within(Duration::from_secs(30)).is_some(),
                "old process did not exit after draining"
            );
        })
        .await
        .unwrap();
        events.push(format!("round {round}: old exited at {:?}", t0.elapsed()));
        pids.push(current.pid());
        assert!(
            current.child.try_wait().unwrap().is_none(),
            "round {round}: new process died"
        );
    }
    // After the last old process left, traffic is served by the newest one only: some more
    // requests, each served after the old process exited.
    let before = tally.pids.lock().unwrap().len();
    eventually("traffic after the last upgrade", || {
        let n = tally.pids.lock().unwrap().len();
        async move { n >= before + 20 }
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for l in load {
        l.await.unwrap();
    }
    current.signal("-TERM");
    tokio::task::spawn_blocking(move || {
        assert!(current.exit_within(Duration::from_secs(30)).is_some());
    })
    .await
    .unwrap();

    let failures = tally.failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} failed requests: {:?}\n{events:#?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    let served = tally.pids.lock().unwrap();
    let last = *pids.last().unwrap();
    assert!(
        served[before..].iter().all(|p| *p == last),
        "late requests served by an old process"
    );
    for p in &pids {
        assert!(served.contains(p), "process {p} served nothing");
    }
    assert!(tally.ok.load(Ordering::Relaxed) > 100);
    assert!(tally.streams_ok.load(Ordering::Relaxed) > 10);
}
