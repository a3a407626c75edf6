//! Zero-downtime binary upgrade under load: a new process started with `-u` takes the
//! listening sockets, the old one gets SIGQUIT and drains. Five upgrades in a row while
//! non-streaming and long streaming requests run: not one may fail or be cut.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::traffic::{traffic, Tally};
use common::*;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn spawn(config: &Path, upgrade: bool) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tollgate"));
    cmd.arg("-c").arg(config);
    if upgrade {
        cmd.arg("-u");
    }
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .arg(sig)
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(ok.success());
}

fn wait_exit(child: &mut Child, within: Duration) {
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(
            start.elapsed() < within,
            "old process did not exit after draining"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_upgrades_under_load_lose_nothing() {
    let mock = Mock::start();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let admin_port = free_port();
    let body = mock_provider(&mock.url(), "").replace("mock-mapped", "unused");
    // Grace must cover the longest stream (20 x 40 ms here).
    let text = config_text(dir.path(), port, admin_port, None, None, &body)
        .replace("grace_period_seconds: 1", "grace_period_seconds: 2")
        .replace(
            "graceful_shutdown_timeout_seconds: 1",
            "graceful_shutdown_timeout_seconds: 2",
        );
    let config = dir.path().join("tollgate.yaml");
    std::fs::write(&config, text).unwrap();
    let upgrade_sock = dir.path().join("upgrade.sock");

    let mut current = spawn(&config, false);
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < DEADLINE, "gateway did not start");
        std::thread::sleep(Duration::from_millis(20));
    }

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

    let mut pids = vec![current.id()];
    for round in 0..5 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let _ = std::fs::remove_file(&upgrade_sock);
        let mut next = spawn(&config, true);
        // The new process listens on the upgrade socket for the old one's listeners.
        let t = Instant::now();
        while !upgrade_sock.exists() {
            assert!(
                t.elapsed() < DEADLINE,
                "round {round}: new process never opened the upgrade socket"
            );
            assert!(
                next.try_wait().unwrap().is_none(),
                "round {round}: new process exited"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        events.push(format!("round {round}: QUIT at {:?}", t0.elapsed()));
        signal(&current, "-QUIT");
        // Pingora's old process keeps serving 5 s after the hand-over, then the grace period.
        let mut old = std::mem::replace(&mut current, next);
        tokio::task::spawn_blocking(move || wait_exit(&mut old, Duration::from_secs(30)))
            .await
            .unwrap();
        events.push(format!("round {round}: old exited at {:?}", t0.elapsed()));
        pids.push(current.id());
        assert!(
            current.try_wait().unwrap().is_none(),
            "round {round}: new process died"
        );
    }
    // After the last old process left, traffic is served by the newest one only.
    let before = tally.pids.lock().unwrap().len();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for l in load {
        l.await.unwrap();
    }
    signal(&current, "-TERM");
    tokio::task::spawn_blocking(move || wait_exit(&mut current, Duration::from_secs(30)))
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
