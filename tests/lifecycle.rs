//! The process's life as an operator sees it (issue 15): a quick exit on SIGTERM when idle,
//! a wait for requests in flight when not, state files beside the config (or in
//! `--state-dir`) rather than in system paths, and a short, informative server log.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use common::*;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A config in `dir` with the given grace period and providers/routes block, listening on
/// run-time ports.
fn write_config(dir: &Path, grace: u64, body: &str) -> PathBuf {
    let text = config_text(dir, PROXY_LISTEN, ADMIN_LISTEN, None, None, body).replace(
        "grace_period_seconds: 1\n",
        &format!("grace_period_seconds: {grace}\n"),
    );
    let path = dir.join("tollgate.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

async fn models_ok(addr: &str) -> bool {
    client()
        .get(format!("http://{addr}/v1/models"))
        .send()
        .await
        .is_ok_and(|r| r.status() == 200)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_gateway_exits_at_once_on_sigterm() {
    let mock = Mock::start();
    let dir = tempfile::tempdir().unwrap();
    // A long grace period: only the quick exit can be quick.
    let config = write_config(dir.path(), 30, &mock_provider(&mock.url(), ""));
    let mut gw = GatewayProcess::spawn(&config, &[]);
    let ready = gw.wait_ready();
    let (proxy, admin) = (ready.proxy(), ready.admin().unwrap());
    // A request on a connection that is closed afterwards: nothing left in flight.
    let (answer, _) = raw_exchange(
        port_of(proxy),
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
        std::net::TcpStream::connect(proxy).is_err(),
        "still listening after exit"
    );
    // The log said where it listened (the bound port), one line per listener, then the
    // machine-readable report.
    let log = gw.stderr();
    for (addr, what) in [(proxy, "proxy"), (admin, "admin")] {
        let line = format!("listening on {addr} ({what})");
        assert_eq!(log.matches(&line).count(), 1, "{line}:\n{log}");
    }
    let report = format!("ready {{\"instance\":\"{}\"", ready.instance);
    assert_eq!(log.matches(&report).count(), 1, "{report}:\n{log}");

    // A new start on the same config serves normally.
    let mut again = GatewayProcess::spawn(&config, &[]);
    let ready = again.wait_ready();
    assert!(models_ok(ready.proxy()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_waits_for_the_stream_in_flight_then_exits() {
    let mock = Mock::start();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), 30, &mock_provider(&mock.url(), ""));
    let mut gw = GatewayProcess::spawn(&config, &[]);
    let proxy = gw.wait_ready().proxy().to_string();

    // 15 chunks 150 ms apart: about 2 s of streaming.
    let resp = client()
        .post(format!("http://{proxy}/v1/chat/completions"))
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

    let mut again = GatewayProcess::spawn(&config, &[]);
    let ready = again.wait_ready();
    assert!(models_ok(ready.proxy()).await);
}

/// A config with a quota and no paths for the store, pid file or upgrade socket.
fn bare_config(mock: &Mock) -> String {
    format!(
        r#"listeners:
  proxy: [{{address: "{PROXY_LISTEN}"}}]
  admin: {{address: "{ADMIN_LISTEN}"}}
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
        let config = conf_dir.path().join("tollgate.yaml");
        std::fs::write(&config, bare_config(&mock)).unwrap();
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
        let mut gw = GatewayProcess::spawn(&config, &args);
        let proxy = gw.wait_ready().proxy().to_string();
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
            .get(format!("http://{proxy}/v1/models"))
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
    let config = write_config(dir.path(), 1, &body);
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "server:\n",
        &format!("server:\n  error_log: \"{}\"\n", error_log.display()),
    );
    std::fs::write(&config, text).unwrap();

    // In the foreground, the server log goes to `server.error_log`. The resolver's debug
    // line for each failed lookup shows how many rounds have run.
    let filter = format!(
        "{},tollgate::provider::resolve=debug",
        tollgate::logging::DEFAULT_FILTER
    );
    let mut gw = GatewayProcess::spawn_env(&config, &[], &[("RUST_LOG", filter.as_str())], false);
    let ready = gw.wait_ready();
    let read = || std::fs::read_to_string(&error_log).unwrap_or_default();
    for (addr, what) in [(ready.proxy(), "proxy"), (ready.admin().unwrap(), "admin")] {
        wait_text(
            &format!("listening on {addr} ({what})"),
            read,
            &mut gw.child,
        );
    }
    assert!(models_ok(ready.proxy()).await);
    // Ten resolver rounds (every 100 ms) have tried `nowhere`.
    let start = Instant::now();
    while read()
        .matches("lookup of tollgate-lifecycle-test.invalid failed")
        .count()
        < 10
    {
        assert!(
            start.elapsed() < DEADLINE,
            "fewer than ten resolver rounds:\n{}",
            read()
        );
        gw.check_alive();
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = read();
    let log: String = log
        .lines()
        .filter(|l| !l.contains(" DEBUG "))
        .map(|l| format!("{l}\n"))
        .collect();
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
    assert!(models_ok(&gw.addr).await);
    let log = gw.stop();
    assert!(
        log.contains("took over the listening sockets"),
        "new process:\n{log}"
    );
    assert!(!log.contains("ERROR"), "new process:\n{log}");

    // systemd's order: SIGQUIT first (the old process offers its sockets), then `-u`.
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), 1, &mock_provider(&mock.url(), ""));
    let mut old = GatewayProcess::spawn(&config, &[]);
    let first = old.wait_ready();
    old.signal("-QUIT");
    old.wait_for("SIGQUIT");
    let mut new = GatewayProcess::spawn(&config, &["-u"]);
    let ready = new.wait_ready();
    assert_eq!(ready.proxy(), first.proxy(), "the same sockets");
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
    assert!(models_ok(ready.proxy()).await);
}

/// `GET /healthz` on both listeners names the process that answers; the start-up report
/// (`--ready-file`) names the same id and the bound ports of listeners configured on port 0;
/// an upgraded process keeps the ports and has a new id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_names_the_instance_on_both_listeners() {
    let mock = Mock::start();
    let mut gw = Gateway::start(&mock_provider(&mock.url(), ""));
    assert_ne!(gw.port, 0);
    assert_ne!(gw.admin_port, 0);
    let healthz = |url: String| async move {
        let resp = client().get(url).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        resp.json::<serde_json::Value>().await.unwrap()
    };
    let want = serde_json::json!({"status": "ok", "instance": gw.instance});
    assert_eq!(healthz(gw.url("/healthz")).await, want);
    assert_eq!(healthz(gw.admin_url("/healthz")).await, want);
    // Only `GET /healthz` is local: the proxy's other paths are not.
    let resp = client()
        .post(gw.url("/healthz"))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_ne!(resp.status(), 200);

    let (before, addr, admin) = (gw.instance.clone(), gw.addr.clone(), gw.admin_addr.clone());
    let mut gw = tokio::task::spawn_blocking(move || {
        gw.upgrade();
        gw
    })
    .await
    .unwrap();
    assert_ne!(gw.instance, before);
    assert_eq!(
        (gw.addr.as_str(), gw.admin_addr.as_str()),
        (addr.as_str(), admin.as_str())
    );
    let want = serde_json::json!({"status": "ok", "instance": gw.instance});
    assert_eq!(healthz(gw.url("/healthz")).await, want);
    assert_eq!(healthz(gw.admin_url("/healthz")).await, want);
    assert!(models_ok(&gw.addr).await);
    let log = gw.stop();
    assert!(
        log.contains(&format!(
            "\"instance\":\"{}\"",
            want["instance"].as_str().unwrap()
        )),
        "{log}"
    );
}

/// `--wait-ready` with `--ready-file` waits for the process that wrote the report, not for
/// any process answering on the address: during an upgrade the old process still answers.
#[test]
fn wait_ready_waits_for_the_reported_instance() {
    let mock = Mock::start();
    let gw = Gateway::start(&mock_provider(&mock.url(), ""));
    gw.pin_config_to_bound_ports();
    let wait = |report: &Path, secs: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args(["--wait-ready", secs, "-c"])
            .arg(&gw.config_path)
            .arg("--ready-file")
            .arg(report)
            .output()
            .unwrap()
    };
    // A report from another instance (an upgrade's new process, not up yet): not ready.
    let other = gw.dir.path().join("other.json");
    std::fs::write(
        &other,
        r#"{"instance":"0000000000000000","pid":1,"listeners":[]}"#,
    )
    .unwrap();
    let out = wait(&other, "1");
    assert!(!out.status.success(), "{out:?}");
    // No report yet: not ready either.
    let out = wait(&gw.dir.path().join("missing.json"), "1");
    assert!(!out.status.success(), "{out:?}");
    // The running instance's own report: ready at once.
    let own = gw.dir.path().join("own.json");
    let report = format!(r#"{{"instance":"{}","pid":1,"listeners":[]}}"#, gw.instance);
    std::fs::write(&own, report).unwrap();
    let out = wait(&own, "10");
    assert!(out.status.success(), "{out:?}");
}
