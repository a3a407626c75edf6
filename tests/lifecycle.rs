//! The process's life as an operator sees it (issue 15): a quick exit on SIGTERM when idle,
//! a wait for requests in flight when not, state files beside the config (or in
//! `--state-dir`) rather than in system paths, and a short, informative server log.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A tollgate process whose stderr is collected as it is written.
struct Running {
    child: Child,
    stderr: Arc<Mutex<String>>,
}

impl Running {
    fn spawn(config: &Path, args: &[&str]) -> Running {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args(args)
            .arg("-c")
            .arg(config)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tollgate");
        let stderr = Arc::new(Mutex::new(String::new()));
        let pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        Running { child, stderr }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Wait until stderr contains `needle`.
    fn wait_for(&mut self, needle: &str) {
        let out = self.stderr.clone();
        wait_text(needle, || out.lock().unwrap().clone(), &mut self.child);
    }

    /// Wait until both listeners accept connections.
    fn wait_listening(&mut self, port: u16, admin_port: u16) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("tollgate exited ({status}):\n{}", self.stderr());
            }
            let up = |p: u16| std::net::TcpStream::connect(("127.0.0.1", p)).is_ok();
            if up(port) && up(admin_port) {
                return;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "not listening:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn signal(&self, sig: &str) {
        signal(self.child.id(), sig);
    }

    /// Wait for the process to exit within `within`; its exit status.
    fn exit_within(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if start.elapsed() > within {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Poll `text()` until it contains `needle`, failing at the harness deadline or when the
/// process exits first.
fn wait_text(needle: &str, text: impl Fn() -> String, child: &mut Child) {
    let start = Instant::now();
    while !text().contains(needle) {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("tollgate exited ({status}) before {needle:?}:\n{}", text());
        }
        assert!(
            start.elapsed() < DEADLINE,
            "no {needle:?} within {DEADLINE:?}:\n{}",
            text()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A config in `dir` with the given grace period and providers/routes block.
fn write_config(dir: &Path, grace: u64, body: &str) -> (PathBuf, u16, u16) {
    let port = free_port();
    let admin_port = free_port();
    let text = config_text(dir, port, admin_port, None, None, body).replace(
        "grace_period_seconds: 1\n",
        &format!("grace_period_seconds: {grace}\n"),
    );
    let path = dir.join("tollgate.yaml");
    std::fs::write(&path, text).unwrap();
    (path, port, admin_port)
}

async fn models_ok(port: u16) -> bool {
    client()
        .get(format!("http://127.0.0.1:{port}/v1/models"))
        .send()
        .await
        .is_ok_and(|r| r.status() == 200)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_gateway_exits_at_once_on_sigterm() {
    let mock = Mock::start();
    let dir = tempfile::tempdir().unwrap();
    // A long grace period: only the quick exit can be quick.
    let (config, port, admin_port) = write_config(dir.path(), 30, &mock_provider(&mock.url(), ""));
    let mut gw = Running::spawn(&config, &[]);
    gw.wait_listening(port, admin_port);
    // A request on a connection that is closed afterwards: nothing left in flight.
    let (answer, _) = raw_exchange(
        port,
        b"GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    );
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    gw.signal("-TERM");
    let start = Instant::now();
    let status = gw
        .exit_within(Duration::from_secs(3))
        .unwrap_or_else(|| panic!("still running 3 s after SIGTERM:\n{}", gw.stderr()));
    assert!(status.success(), "{status}");
    assert!(start.elapsed() < Duration::from_secs(3));
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "still listening after exit"
    );
    // The log said where it listened, one line per listener.
    let log = gw.stderr();
    for (addr, what) in [(port, "proxy"), (admin_port, "admin")] {
        let line = format!("listening on 127.0.0.1:{addr} ({what})");
        assert_eq!(log.matches(&line).count(), 1, "{line}:\n{log}");
    }

    // A new start on the same config serves normally.
    let _gw = Running::spawn(&config, &[]);
    eventually("a request served after the restart", || models_ok(port)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_waits_for_the_stream_in_flight_then_exits() {
    let mock = Mock::start();
    let dir = tempfile::tempdir().unwrap();
    let (config, port, admin_port) = write_config(dir.path(), 30, &mock_provider(&mock.url(), ""));
    let mut gw = Running::spawn(&config, &[]);
    gw.wait_listening(port, admin_port);

    // 15 chunks 150 ms apart: about 2 s of streaming.
    let resp = client()
        .post(format!("http://127.0.0.1:{port}/v1/chat/completions"))
        .header("x-request-id", "lifecycle-stream-1")
        .header("x-mock-chunks", "15")
        .header("x-mock-chunk-delay-ms", "150")
        .json(&serde_json::json!({
            "model": "mock-a",
            "stream": true,
            "messages": [{"role": "user", "content": "hi"}],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut resp = resp;
    // The first bytes are here: the stream is in flight.
    let mut body = resp.chunk().await.unwrap().unwrap().to_vec();
    gw.signal("-TERM");
    let signalled = Instant::now();
    while let Some(chunk) = resp.chunk().await.unwrap() {
        body.extend_from_slice(&chunk);
    }
    let streamed_for = signalled.elapsed();
    let text = String::from_utf8(body).unwrap();
    let events = sse_data(&text);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{text}");
    let tokens = events
        .iter()
        .filter(|e| *e != "[DONE]")
        .filter(|e| {
            let v: serde_json::Value = serde_json::from_str(e).unwrap();
            v["choices"][0]["delta"]["content"]
                .as_str()
                .is_some_and(|c| !c.is_empty())
        })
        .count();
    assert_eq!(tokens, 15, "stream cut after SIGTERM: {text}");
    assert!(
        streamed_for > Duration::from_millis(500),
        "the stream ended {streamed_for:?} after SIGTERM: was it in flight?"
    );

    // Then the process leaves, long before the 30 s grace period.
    let status = gw
        .exit_within(Duration::from_secs(5))
        .unwrap_or_else(|| panic!("still running 5 s after the stream ended:\n{}", gw.stderr()));
    assert!(status.success(), "{status}");
    let log = std::fs::read_to_string(dir.path().join("access.log")).unwrap();
    let line = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["request_id"] == "lifecycle-stream-1")
        .unwrap_or_else(|| panic!("no access-log line for the stream after exit:\n{log}"));
    assert_eq!(line["status"], 200);
    assert_eq!(line["output_tokens"], 15);

    let _gw = Running::spawn(&config, &[]);
    eventually("a request served after the restart", || models_ok(port)).await;
}

/// A config with a quota and no paths for the store, pid file or upgrade socket.
fn bare_config(port: u16, admin_port: u16, mock: &Mock) -> String {
    format!(
        r#"listeners:
  proxy: [{{address: "127.0.0.1:{port}"}}]
  admin: {{address: "127.0.0.1:{admin_port}"}}
access_log: {{path: access.log}}
consumers:
  - {{name: alice, credentials: ["alice-key"]}}
quota: {{consumers: ["*"]}}
{}"#,
        mock_provider(&mock.url(), "")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_files_go_beside_the_config_or_in_state_dir() {
    let mock = Mock::start();
    for with_state_dir in [false, true] {
        let conf_dir = tempfile::tempdir().unwrap();
        let state_parent = tempfile::tempdir().unwrap();
        let state_dir = state_parent.path().join("state");
        let (port, admin_port) = (free_port(), free_port());
        let config = conf_dir.path().join("tollgate.yaml");
        std::fs::write(&config, bare_config(port, admin_port, &mock)).unwrap();
        let expected = match with_state_dir {
            false => conf_dir.path().to_path_buf(),
            true => state_dir.clone(),
        };
        let state_arg = state_dir.display().to_string();
        let args: Vec<&str> = match with_state_dir {
            false => vec![],
            true => vec!["--state-dir", &state_arg],
        };
        // `-t` agrees, and writes nothing.
        let (ok, err) = run_tollgate(
            &[&args[..], &["-t"]].concat(),
            &config,
            Duration::from_secs(20),
        );
        assert_eq!(ok, Some(true), "{err}");

        // Started from elsewhere (the working directory is not the config's).
        let mut gw = Running::spawn(&config, &args);
        gw.wait_listening(port, admin_port);
        let db = expected.join("state.db");
        let start = Instant::now();
        while !db.exists() {
            assert!(start.elapsed() < DEADLINE, "no {}", db.display());
            std::thread::sleep(Duration::from_millis(20));
        }
        // What the process has open: the store here, nothing under /var/lib/tollgate.
        let open: Vec<PathBuf> = std::fs::read_dir(format!("/proc/{}/fd", gw.child.id()))
            .unwrap()
            .flatten()
            .filter_map(|fd| std::fs::read_link(fd.path()).ok())
            .collect();
        assert!(
            open.contains(&db),
            "store not open at {}: {open:?}",
            db.display()
        );
        assert!(
            !open.iter().any(|p| p.starts_with("/var/lib/tollgate")),
            "{open:?}"
        );
        // A relative access log path is in the same directory.
        let resp = client()
            .get(format!("http://127.0.0.1:{port}/v1/models"))
            .header("x-request-id", "lifecycle-state-1")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let access = expected.join("access.log");
        let start = Instant::now();
        while !std::fs::read_to_string(&access)
            .unwrap_or_default()
            .contains("lifecycle-state-1")
        {
            assert!(
                start.elapsed() < DEADLINE,
                "no line in {}",
                access.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        if with_state_dir {
            assert!(!conf_dir.path().join("state.db").exists());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn providers_without_keys_or_address_warn_once_into_the_error_log() {
    let mock = Mock::start();
    let dir = tempfile::tempdir().unwrap();
    let error_log = dir.path().join("error.log");
    // A keyless preset provider (its host is never looked up), a provider with a key whose
    // host does not resolve, and the mock; the resolver runs every 100 ms.
    let body = mock_provider(
        &mock.url(),
        r#"  - name: keyless
    type: openai
    api_keys: ["${TOLLGATE_LIFECYCLE_UNSET_KEY}"]
  - name: nowhere
    type: openai-compatible
    base_url: http://tollgate-lifecycle-test.invalid/v1
    api_keys: ["k"]
dns: {refresh: 100ms}"#,
    );
    let (config, port, admin_port) = write_config(dir.path(), 1, &body);
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "server:\n",
        &format!("server:\n  error_log: \"{}\"\n", error_log.display()),
    );
    std::fs::write(&config, text).unwrap();

    // In the foreground, the server log goes to `server.error_log`.
    let mut gw = Running::spawn(&config, &[]);
    let read = || std::fs::read_to_string(&error_log).unwrap_or_default();
    wait_text(
        &format!("listening on 127.0.0.1:{admin_port} (admin)"),
        read,
        &mut gw.child,
    );
    assert!(read().contains(&format!("listening on 127.0.0.1:{port} (proxy)")));
    eventually("a request served", || models_ok(port)).await;
    // About ten resolver rounds.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let log = read();
    let keyless: Vec<&str> = log.lines().filter(|l| l.contains("keyless")).collect();
    assert_eq!(keyless.len(), 1, "{log}");
    assert!(keyless[0].contains("TOLLGATE_LIFECYCLE_UNSET_KEY"), "{log}");
    assert!(
        !log.contains("api.openai.com"),
        "a keyless provider was resolved:\n{log}"
    );
    let nowhere = log
        .lines()
        .filter(|l| l.contains("tollgate-lifecycle-test.invalid"))
        .count();
    assert_eq!(nowhere, 1, "{log}");
    assert!(!log.contains("ERROR"), "{log}");
    assert!(!log.contains("exited"), "{log}");
    assert!(
        !gw.stderr().contains("listening on"),
        "the server log went to stderr too:\n{}",
        gw.stderr()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_successful_upgrade_logs_no_error() {
    let mock = Mock::start();
    // The harness's order: the new process first (it waits for the sockets), then SIGQUIT.
    let mut gw = Gateway::start(&mock_provider(&mock.url(), ""));
    gw.upgrade();
    assert!(models_ok(gw.port).await);
    let log = gw.stop();
    assert!(
        log.contains("took over the listening sockets"),
        "new process:\n{log}"
    );
    assert!(!log.contains("ERROR"), "new process:\n{log}");

    // systemd's order: SIGQUIT first (the old process offers its sockets), then `-u`.
    let dir = tempfile::tempdir().unwrap();
    let (config, port, admin_port) = write_config(dir.path(), 1, &mock_provider(&mock.url(), ""));
    let mut old = Running::spawn(&config, &[]);
    old.wait_for(&format!("listening on 127.0.0.1:{admin_port} (admin)"));
    old.signal("-QUIT");
    old.wait_for("SIGQUIT");
    let mut new = Running::spawn(&config, &["-u"]);
    new.wait_for(&format!("listening on 127.0.0.1:{admin_port} (admin)"));
    assert!(
        old.exit_within(Duration::from_secs(30))
            .is_some_and(|s| s.success()),
        "old process:\n{}",
        old.stderr()
    );
    for (who, p) in [("old", &old), ("new", &new)] {
        let log = p.stderr();
        assert!(!log.contains("ERROR"), "{who} process:\n{log}");
        assert!(!log.contains("WARN"), "{who} process:\n{log}");
    }
    assert!(
        old.stderr().contains("stopped"),
        "old process:\n{}",
        old.stderr()
    );
    eventually("a request served by the new process", || models_ok(port)).await;
}
