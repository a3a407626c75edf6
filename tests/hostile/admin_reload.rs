//! Admin token rotation and `needs_upgrade` on reload; consumer rate-limit rules with
//! `values`; configs that `-t` accepted but the start then failed on (busy listener, missing
//! CA bundle, unreadable TLS files, unwritable paths, nonsensical zeros).

use crate::common::*;
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

/// How long a start that cannot work may take to say so and exit.
const START_FAILS_WITHIN: Duration = Duration::from_secs(10);

async fn chat(gw: &Gateway, bearer: Option<&str>) -> u16 {
    let mut req = client()
        .post(gw.url("/v1/chat/completions"))
        .json(&json!({"model": "mock-x", "messages": [{"role": "user", "content": "hi"}]}));
    if let Some(b) = bearer {
        req = req.bearer_auth(b);
    }
    req.send().await.unwrap().status().as_u16()
}

async fn admin_status(gw: &Gateway, token: &str) -> u16 {
    client()
        .get(gw.admin_url("/admin/status"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn reload(gw: &Gateway, token: Option<&str>) -> (u16, Value) {
    let mut req = client().post(gw.admin_url("/admin/reload"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_token_rotates_on_reload_and_sighup() {
    let mock = Mock::start();
    let body = mock_provider(&mock.url(), "");
    let gw = Gateway::start_opts(&body, None, Some("old-admin-token"), &[]);
    assert_eq!(admin_status(&gw, "old-admin-token").await, 200);

    gw.rewrite_config_as(PROXY_LISTEN, Some("new-admin-token"), &body);
    let (status, answer) = reload(&gw, Some("old-admin-token")).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["needs_upgrade"], json!([]), "{answer}");
    assert_eq!(admin_status(&gw, "old-admin-token").await, 401);
    assert_eq!(admin_status(&gw, "new-admin-token").await, 200);

    // SIGHUP rotates it the same way.
    gw.rewrite_config_as(PROXY_LISTEN, Some("third-admin-token"), &body);
    signal(gw.pid(), "-HUP");
    eventually("the SIGHUP token rotation", || async {
        admin_status(&gw, "third-admin-token").await == 200
    })
    .await;
    assert_eq!(admin_status(&gw, "new-admin-token").await, 401);
    assert_eq!(chat(&gw, None).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn needs_upgrade_compares_with_the_running_listeners() {
    let mock = Mock::start();
    let body = mock_provider(&mock.url(), "");
    let gw = Gateway::start(&body);
    // An address the process does not listen on (the change is reported, never applied).
    let moved = format!("127.0.0.1:{}", closed_port());

    gw.rewrite_config_as(&moved, None, &body);
    let (status, answer) = reload(&gw, None).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["needs_upgrade"], json!(["listeners"]), "{answer}");

    // A second reload that changes something else still reports the listener: the running
    // process listens where it started, whatever the previous file said.
    gw.rewrite_config_as(
        &moved,
        None,
        &body.replace("upstream-model-x", "upstream-model-y"),
    );
    let (status, answer) = reload(&gw, None).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["needs_upgrade"], json!(["listeners"]), "{answer}");

    // Back to the running address: nothing left to upgrade.
    gw.rewrite_config_as(PROXY_LISTEN, None, &body);
    let (_, answer) = reload(&gw, None).await;
    assert_eq!(answer["needs_upgrade"], json!([]), "{answer}");
    assert_eq!(chat(&gw, None).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_rule_with_values_limits_only_those_consumers() {
    let mock = Mock::start();
    let body = format!(
        "{}consumers:
  - {{name: bob, credentials: [\"bob-key\"]}}
  - {{name: alice, credentials: [\"alice-key\"]}}
rate_limits:
  - {{name: bob-only, key: consumer, values: [bob], window: minute, requests: 1}}
",
        mock_provider(&mock.url(), "")
    );
    let gw = Gateway::start(&body);
    assert_eq!(chat(&gw, Some("bob-key")).await, 200);
    assert_eq!(chat(&gw, Some("bob-key")).await, 429);
    for _ in 0..3 {
        assert_eq!(
            chat(&gw, Some("alice-key")).await,
            200,
            "alice is not limited"
        );
    }
    assert_eq!(chat(&gw, None).await, 200);
}

/// A config for a gateway that would start (upstream unused), its proxy on `proxy`.
fn base_config(dir: &Path, proxy: &str) -> String {
    config_text(
        dir,
        proxy,
        ADMIN_LISTEN,
        None,
        None,
        &mock_provider("http://127.0.0.1:9/v1", ""),
    )
}

/// `-t` fails naming `needle` in one line, without a panic; so does a start, promptly.
fn rejected_by_test_and_start(path: &Path, needle: &str) {
    let (ok, err) = run_tollgate(&["-t"], path, DEADLINE);
    assert_eq!(ok, Some(false), "-t accepted a config with {needle}: {err}");
    assert!(err.contains(needle), "-t does not name `{needle}`: {err}");
    assert_eq!(err.trim().lines().count(), 1, "-t: not one line: {err}");
    assert!(!err.contains("panicked"), "{err}");

    let (ok, err) = run_tollgate(&[], path, START_FAILS_WITHIN);
    assert_eq!(
        ok,
        Some(false),
        "start with {needle} did not exit non-zero within {START_FAILS_WITHIN:?}: {err}"
    );
    assert!(
        err.contains(needle),
        "start does not name `{needle}`: {err}"
    );
    assert!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "start: not one line: {err}");
}

#[test]
fn configs_that_cannot_start_fail_test_and_start_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "not a directory").unwrap();
    let junk_cert = dir.path().join("cert.pem");
    let junk_key = dir.path().join("key.pem");
    std::fs::write(&junk_cert, "not a certificate").unwrap();
    std::fs::write(&junk_key, "not a key").unwrap();
    let base = base_config(dir.path(), PROXY_LISTEN);
    let cases: Vec<(String, &str)> = vec![
        (base.replace("threads: 2", "threads: 0"), "server.threads"),
        (
            format!("{base}\nlimits: {{max_body_bytes: 0}}\n"),
            "limits.max_body_bytes",
        ),
        (
            format!("{base}\n    retry: {{attempts: 0}}\n"),
            "retry.attempts",
        ),
        (
            format!("{base}\n    retry: {{per_target: 0}}\n"),
            "retry.per_target",
        ),
        (
            format!("{base}\nrate_limits: [{{name: r, key: route, window: minute, requests: 0}}]\n"),
            "rate_limits[0] (r).requests",
        ),
        (
            base.replace(
                "threads: 2",
                "threads: 2\n  ca_file: \"/nonexistent/tollgate-ca.pem\"",
            ),
            "server.ca_file",
        ),
        (
            base.replace(&format!("{d}/access.log"), &format!("{d}/a-file/access.log")),
            "access_log.path",
        ),
        (
            format!(
                "{base}\nrate_limits: [{{name: h, key: route, window: hour, requests: 9}}]\nstore: {{path: \"{d}/a-file/state.db\"}}\n"
            ),
            "store.path",
        ),
        (
            base.replace(
                "threads: 2",
                &format!("threads: 2\n  daemon: true\n  error_log: \"{d}/a-file/error.log\""),
            ),
            "server.error_log",
        ),
        (
            format!("{base}\nredis: {{url: \"redis://127.0.0.1:notaport\"}}\n"),
            "redis.url",
        ),
        (
            config_text(
                dir.path(),
                PROXY_LISTEN,
                ADMIN_LISTEN,
                Some((&junk_cert, &junk_key)),
                None,
                &mock_provider("http://127.0.0.1:9/v1", ""),
            ),
            "listeners.proxy[0].tls.cert",
        ),
    ];
    for (i, (text, needle)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("case-{i}.yaml"));
        std::fs::write(&path, text).unwrap();
        rejected_by_test_and_start(&path, needle);
    }
}

#[test]
fn a_listener_address_in_use_fails_test_and_start() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let path = dir.path().join("busy.yaml");
    std::fs::write(&path, base_config(dir.path(), &format!("127.0.0.1:{port}"))).unwrap();
    rejected_by_test_and_start(&path, &format!("127.0.0.1:{port}"));
    let (_, err) = run_tollgate(&["-t"], &path, DEADLINE);
    assert!(err.contains("listeners.proxy[0].address"), "{err}");
    drop(taken);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_beside_the_running_instance_warns_and_a_second_start_fails() {
    let mock = Mock::start();
    let gw = Gateway::start(&mock_provider(&mock.url(), ""));
    // The config names the addresses it listens on (as an operator's would).
    gw.pin_config_to_bound_ports();
    let address = gw.addr.clone();
    // `-t` before a reload or upgrade: the running instance's own listeners are a warning.
    let (ok, err) = run_tollgate(&["-t"], &gw.config_path, DEADLINE);
    assert_eq!(ok, Some(true), "{err}");
    assert!(
        err.contains("warning") && err.contains(&address) && err.contains("running instance"),
        "{err}"
    );
    // A second instance on the same addresses cannot start.
    let (ok, err) = run_tollgate(&[], &gw.config_path, START_FAILS_WITHIN);
    assert_eq!(ok, Some(false), "{err}");
    assert!(err.contains(&address) && !err.contains("panicked"), "{err}");
    assert_eq!(chat(&gw, None).await, 200);
}
