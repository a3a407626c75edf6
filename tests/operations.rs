//! Operations: config hot reload (admin API and SIGHUP), the admin token, readiness.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn config(mock: &Mock, mapped_to: &str) -> String {
    format!(
        r#"providers:
  - name: main
    type: openai-compatible
    base_url: "{url}"
    api_keys: [{{name: a, key: sk-a}}, {{name: b, key: sk-b}}]
    model_mapping: {{mock-x: "{mapped_to}"}}
    health: {{check_interval: 60s}}
routes:
  - name: default
    forward_headers: ["x-mock-*"]
    models:
      - model: "mock-*"
        targets: [{{provider: main}}]
"#,
        url = mock.url()
    )
}

async fn upstream_model(gw: &Gateway) -> String {
    let resp = client()
        .post(gw.url("/v1/chat/completions"))
        .header("x-mock-echo", "1")
        .json(&json!({"model": "mock-x", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    let body: Value = resp.json().await.unwrap();
    body["mock_echo"]["body"]["model"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn reload(gw: &Gateway) -> (u16, Value) {
    let resp = client()
        .post(gw.admin_url("/admin/reload"))
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_reload_applies_to_new_requests_only_and_rejects_bad_files() {
    let mock = Mock::start();
    let gw = Gateway::start(&config(&mock, "up-1"));
    assert_eq!(upstream_model(&gw).await, "up-1");

    // Revoke key a, to see that key state survives the reload.
    client()
        .post(format!("http://{}/mock/faults", mock.addr))
        .json(&json!({"key": "sk-a", "status": 401}))
        .send()
        .await
        .unwrap();
    upstream_model(&gw).await;
    upstream_model(&gw).await;
    // Suspect after the refused requests; revoked once the gateway's own check is refused.
    eventually("key a revoked", || async {
        let keys = get_json(&gw.admin_url("/admin/keys"), None).await;
        keys["providers"][0]["keys"][0]["state"] == "revoked"
    })
    .await;

    // A stream in flight across the reload finishes under the config it started with.
    let (streaming, started) = tokio::sync::oneshot::channel();
    let in_flight = {
        let url = gw.url("/v1/chat/completions");
        tokio::spawn(async move {
            let mut resp = client()
                .post(url)
                .header("x-mock-chunks", "12")
                .header("x-mock-chunk-delay-ms", "50")
                .json(&json!({"model": "mock-x", "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
                .send()
                .await
                .unwrap();
            // The first bytes are here: the stream is in flight under the old config.
            let mut body = resp.chunk().await.unwrap().unwrap().to_vec();
            streaming.send(()).unwrap();
            while let Some(chunk) = resp.chunk().await.unwrap() {
                body.extend_from_slice(&chunk);
            }
            String::from_utf8(body).unwrap()
        })
    };
    started.await.unwrap();
    gw.rewrite_config(&config(&mock, "up-2"));
    let (status, body) = reload(&gw).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["needs_upgrade"], json!([]));
    assert_eq!(upstream_model(&gw).await, "up-2");
    let text = in_flight.await.unwrap();
    let events = sse_data(&text);
    assert_eq!(events.last().unwrap(), "[DONE]");
    assert_eq!(
        events
            .iter()
            .filter(|e| e.contains("\"content\":\"") && !e.contains("\"content\":\"\""))
            .count(),
        12
    );
    assert!(
        events
            .iter()
            .filter(|e| *e != "[DONE]")
            .all(|e| e.contains("\"model\":\"up-1\"")),
        "{text}"
    );

    let keys: Value = client()
        .get(gw.admin_url("/admin/keys"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let a = &keys["providers"][0]["keys"][0];
    assert_eq!(
        (a["name"].as_str(), a["state"].as_str()),
        (Some("a"), Some("revoked")),
        "{keys}"
    );

    // An invalid file is rejected with the field named; the old config keeps serving.
    let good = std::fs::read_to_string(&gw.config_path).unwrap();
    std::fs::write(
        &gw.config_path,
        good.replace("provider: main", "provider: nowhere"),
    )
    .unwrap();
    let (status, body) = reload(&gw).await;
    assert_eq!(status, 400);
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("unknown provider `nowhere`") && msg.contains("targets[0].provider"),
        "{msg}"
    );
    assert_eq!(upstream_model(&gw).await, "up-2");

    // SIGHUP does the same.
    gw.rewrite_config(&config(&mock, "up-3"));
    signal(gw.pid(), "-HUP");
    let start = Instant::now();
    while upstream_model(&gw).await != "up-3" {
        assert!(
            start.elapsed() < DEADLINE,
            "SIGHUP reload did not take effect"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }

    // Listener changes are reported as needing an upgrade (and not applied).
    let text = std::fs::read_to_string(&gw.config_path).unwrap();
    let moved = text.replace(
        &format!("\"{PROXY_LISTEN}\""),
        &format!("\"127.0.0.1:{}\"", closed_port()),
    );
    std::fs::write(&gw.config_path, moved).unwrap();
    let (status, body) = reload(&gw).await;
    assert_eq!(status, 200);
    assert_eq!(body["needs_upgrade"], json!(["listeners"]));
    assert_eq!(upstream_model(&gw).await, "up-3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_token_and_readiness() {
    let mock = Mock::start();
    let gw = Gateway::start_opts(
        &config(&mock, "up-1"),
        None,
        Some("${TOLLGATE_TEST_ADMIN_TOKEN}"),
        &[("TOLLGATE_TEST_ADMIN_TOKEN", "admin-secret-1")],
    );
    let c = client();
    for path in ["/admin/keys", "/admin/status"] {
        let resp = c.get(gw.admin_url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 401);
        let resp = c
            .get(gw.admin_url(path))
            .bearer_auth("wrong")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401);
        let resp = c
            .get(gw.admin_url(path))
            .bearer_auth("admin-secret-1")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    let resp = c.post(gw.admin_url("/admin/reload")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let resp = c
        .get(gw.admin_url("/admin/reload"))
        .bearer_auth("admin-secret-1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
    let status: Value = c
        .get(gw.admin_url("/admin/status"))
        .bearer_auth("admin-secret-1")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["routes"][0]["name"], "default");
    // Model patterns as written in the config, not the gateway's internal form.
    assert_eq!(status["routes"][0]["rules"][0]["model"], "mock-*");
    assert!(
        !status.to_string().contains("sk-a"),
        "no key values in status"
    );
    assert_eq!(
        c.get(gw.admin_url("/metrics"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        c.get(gw.admin_url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // Ready while a key is usable; not when every key of a provider is out.
    assert_eq!(
        c.get(gw.admin_url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    client()
        .post(format!("http://{}/mock/faults", mock.addr))
        .json(&json!({"status": 401}))
        .send()
        .await
        .unwrap();
    upstream_model_status(&gw).await;
    // The refused keys are revoked once the gateway's own checks are refused too.
    eventually("no usable key", || async {
        c.get(gw.admin_url("/readyz"))
            .send()
            .await
            .unwrap()
            .status()
            == 503
    })
    .await;
    let resp = c.get(gw.admin_url("/readyz")).send().await.unwrap();
    assert_eq!(resp.status(), 503);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["providers_without_usable_keys"], json!(["main"]));
}

async fn upstream_model_status(gw: &Gateway) -> u16 {
    client()
        .post(gw.url("/v1/chat/completions"))
        .json(&json!({"model": "mock-x", "messages": []}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// `GET /admin/api/v1/config`: the settings the gateway runs, as written, with every literal
/// secret masked; `config export` prints them so that `tollgate -t` accepts the output.
#[tokio::test(flavor = "multi_thread")]
async fn config_api_and_export_show_settings_without_secrets() {
    let mock = Mock::start();
    let body = format!(
        "{}consumers:\n  - {{name: alice, credentials: [\"alice-literal-credential-1\", \"${{TOLLGATE_TEST_ALICE}}\"]}}\n",
        config(&mock, "up-1")
    );
    let gw = Gateway::start_opts(
        &body,
        None,
        Some("${TOLLGATE_TEST_ADMIN_TOKEN}"),
        &[
            ("TOLLGATE_TEST_ADMIN_TOKEN", "admin-secret-1"),
            ("TOLLGATE_TEST_ALICE", "alice-from-env-1"),
        ],
    );
    let c = client();
    let url = gw.admin_url("/admin/api/v1/config");
    assert_eq!(c.get(&url).send().await.unwrap().status(), 401);
    let resp = c
        .get(&url)
        .bearer_auth("admin-secret-1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    for secret in [
        "sk-a",
        "sk-b",
        "alice-literal-credential-1",
        "alice-from-env-1",
        "admin-secret-1",
    ] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["api_revision"], 0);
    assert_eq!(v["revision"].as_str().unwrap().len(), 16);
    let s = &v["settings"];
    assert_eq!(s["providers"][0]["name"], "main");
    assert_eq!(s["providers"][0]["api_keys"][0]["name"], "a");
    assert_eq!(s["routes"][0]["models"][0]["model"], "mock-*");
    assert_eq!(
        s["consumers"][0]["credentials"][1],
        "${TOLLGATE_TEST_ALICE}"
    );
    assert_eq!(
        s["listeners"]["admin"]["token"],
        "${TOLLGATE_TEST_ADMIN_TOKEN}"
    );
    let wrong = c
        .post(&url)
        .bearer_auth("admin-secret-1")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 405);

    // `config export`: the same settings, secrets as written; `-t` accepts them.
    let export = |extra: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .arg("-c")
            .arg(&gw.config_path)
            .args(["config", "export"])
            .args(extra)
            .env("TOLLGATE_TEST_ADMIN_TOKEN", "admin-secret-1")
            .env("TOLLGATE_TEST_ALICE", "alice-from-env-1")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let exported = export(&[]);
    assert!(exported.contains("alice-literal-credential-1"));
    assert!(exported.contains("${TOLLGATE_TEST_ALICE}") && !exported.contains("alice-from-env-1"));
    let masked = export(&["--masked"]);
    assert!(!masked.contains("alice-literal-credential-1") && !masked.contains("sk-a"));
    let copy = gw.dir.path().join("exported.yaml");
    std::fs::write(&copy, &exported).unwrap();
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .arg("-t")
        .arg("-c")
        .arg(&copy)
        .env("TOLLGATE_TEST_ADMIN_TOKEN", "x")
        .env("TOLLGATE_TEST_ALICE", "y")
        .output()
        .unwrap();
    assert!(check.status.success(), "{check:?}");
    // A normal request is still served.
    assert_eq!(upstream_model(&gw).await, "up-1");
}
