//! Zero-downtime binary upgrade under load: a new process started with `-u` takes the
//! listening sockets, the old one gets SIGQUIT and drains. Five upgrades in a row while
//! non-streaming and long streaming requests run: not one may fail or be cut.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::json;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const STREAM_CHUNKS: usize = 20;

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

/// The process id a gateway request id (`tg-<pid hex>-<seq>`) names.
fn served_by(request_id: &str) -> u32 {
    let hex = request_id.split('-').nth(1).unwrap();
    u32::from_str_radix(hex, 16).unwrap()
}

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    streams_ok: AtomicU64,
    failures: Mutex<Vec<String>>,
    pids: Mutex<Vec<u32>>,
}

async fn traffic(port: u16, stream: bool, stop: Arc<AtomicBool>, tally: Arc<Tally>, t0: Instant) {
    // A new connection per request: an idle keep-alive connection closed by the old process
    // races with a client reusing it, a limit of HTTP/1.1 itself and not of the upgrade.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/v1/chat/completions");
    while !stop.load(Ordering::Relaxed) {
        let body = json!({"model": "mock-x", "stream": stream, "messages": [{"role": "user", "content": "hi"}]});
        let mut req = client.post(&url).json(&body);
        if stream {
            req = req
                .header("x-mock-chunks", STREAM_CHUNKS.to_string())
                .header("x-mock-chunk-delay-ms", "40");
        }
        let result = async {
            let resp = req.send().await.map_err(|e| format!("send: {e:?}"))?;
            let status = resp.status();
            let id = resp
                .headers()
                .get("x-request-id")
                .map(|v| v.to_str().unwrap_or("").to_string());
            let text = resp.text().await.map_err(|e| format!("body: {e:?}"))?;
            if status != 200 {
                return Err(format!("status {status}: {text}"));
            }
            if stream {
                let events = sse_data(&text);
                let chunks = events
                    .iter()
                    .filter(|e| e.contains("\"content\":\"") && !e.contains("\"content\":\"\""))
                    .count();
                if chunks != STREAM_CHUNKS || events.last().map(String::as_str) != Some("[DONE]") {
                    return Err(format!("truncated stream: {chunks} chunks"));
                }
            }
            Ok(id.unwrap_or_default())
        }
        .await;
        match result {
            Ok(id) => {
                if stream {
                    tally.streams_ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    tally.ok.fetch_add(1, Ordering::Relaxed);
                }
                tally.pids.lock().unwrap().push(served_by(&id));
            }
            Err(e) => tally
                .failures
                .lock()
                .unwrap()
                .push(format!("at {:?} stream={stream}: {e}", t0.elapsed())),
        }
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
