//! API-key health, retries and provider fallback, driven by mock-llm's fault injection.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn chat(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hello"}]})
}

async fn fault(mock: &Mock, rule: Value) {
    let resp = client()
        .post(format!("http://{}/mock/faults", mock.addr))
        .json(&rule)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.text().await.unwrap());
}

async fn clear_faults(mock: &Mock) {
    client()
        .delete(format!("http://{}/mock/faults", mock.addr))
        .send()
        .await
        .unwrap();
}

async fn stats(mock: &Mock) -> Value {
    client()
        .get(format!("http://{}/mock/stats", mock.addr))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn key_state(gw: &Gateway, provider: &str, key: &str) -> Value {
    let v: Value = client()
        .get(gw.admin_url("/admin/keys"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let p = v["providers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["provider"] == provider)
        .unwrap()
        .clone();
    p["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == key)
        .unwrap()
        .clone()
}

async fn send(gw: &Gateway, body: &Value) -> (u16, String, Value) {
    let resp = client()
        .post(gw.url("/v1/chat/completions"))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    (status, id, body)
}

fn two_key_config(mock: &Mock, extra_route: &str) -> String {
    format!(
        r#"providers:
  - name: main
    type: openai-compatible
    base_url: "{url}"
    api_keys: [{{name: a, key: sk-a}}, {{name: b, key: sk-b}}]
    health: {{check_interval: 200ms, check_timeout: 2s, check_model: mock-health}}
  - name: backup
    type: openai-compatible
    base_url: "{url}"
    api_keys: [{{name: z, key: sk-z}}]
routes:
  - name: default
    forward_headers: ["x-mock-*"]
{extra_route}
    models:
      - model: "mock-*"
        targets: [{{provider: main}}]
      - model: "fallback-*"
        targets: [{{provider: main}}, {{provider: backup, model: backup-model, weight: 0}}]
"#,
        url = mock.url()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_key_leaves_rotation_and_returns_after_health_check() {
    let mock = Mock::start();
    let gw = Gateway::start(&two_key_config(&mock, ""));
    fault(&mock, json!({"key": "sk-a", "status": 500})).await;

    // Every request succeeds: a failure of key a is retried on key b.
    for _ in 0..6 {
        let (status, _, _) = send(&gw, &chat("mock-x")).await;
        assert_eq!(status, 200);
    }
    let a = key_state(&gw, "main", "a").await;
    assert_eq!(a["state"], "unhealthy", "{a}");
    assert_eq!(a["failures_total"], 3);

    // Out of rotation: the next requests go to b without a retry.
    for _ in 0..6 {
        let (status, id, _) = send(&gw, &chat("mock-x")).await;
        assert_eq!(status, 200);
        let line = gw.log_line(&id);
        assert_eq!(line["key"], "b", "{line}");
        assert_eq!(line["retries"], 0, "{line}");
    }
    let metrics = gw.metrics().await;
    assert_eq!(
        metric_sum(
            &metrics,
            "tollgate_key_healthy",
            &[("provider", "main"), ("key", "a")]
        ),
        0.0
    );
    assert_eq!(
        metric_sum(
            &metrics,
            "tollgate_retries_total",
            &[("reason", "status_5xx")]
        ),
        3.0
    );
    eventually("a failed health check of key a", || async {
        let m = gw.metrics().await;
        metric_sum(
            &m,
            "tollgate_health_checks_total",
            &[("key", "a"), ("outcome", "failed")],
        ) >= 1.0
    })
    .await;

    // The mock recovers; a health check brings a back.
    clear_faults(&mock).await;
    eventually("key a back in rotation", || async {
        key_state(&gw, "main", "a").await["state"] == "healthy"
    })
    .await;
    let mut keys = Vec::new();
    for _ in 0..4 {
        let (_, id, _) = send(&gw, &chat("mock-x")).await;
        keys.push(gw.log_line(&id)["key"].as_str().unwrap().to_string());
    }
    assert!(keys.iter().any(|k| k == "a"), "{keys:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_key_is_out_at_once_and_rate_limited_key_rests() {
    let mock = Mock::start();
    let gw = Gateway::start(&two_key_config(&mock, ""));

    // 401 on key a: the request still succeeds on b; a is suspect at once and revoked when
    // the gateway's own health check is refused too (a client cannot revoke a key).
    fault(&mock, json!({"key": "sk-a", "status": 401})).await;
    let mut first_a = None;
    for _ in 0..2 {
        let (status, id, _) = send(&gw, &chat("mock-x")).await;
        assert_eq!(status, 200);
        if gw.log_line(&id)["retries"] == 1 {
            first_a = Some(id);
        }
    }
    assert!(first_a.is_some(), "key a was tried once");
    eventually("key a revoked by its health check", || async {
        key_state(&gw, "main", "a").await["state"] == "revoked"
    })
    .await;
    let a = key_state(&gw, "main", "a").await;
    assert!(a["failures_total"].as_u64().unwrap() >= 1, "{a}");
    clear_faults(&mock).await;
    eventually("revoked key a back after a health check", || async {
        key_state(&gw, "main", "a").await["state"] == "healthy"
    })
    .await;

    // 429 with Retry-After: 2 on key b: it rests about 2 s and is not counted as broken.
    fault(
        &mock,
        json!({"key": "sk-b", "status": 429, "retry_after": 2, "count": 1}),
    )
    .await;
    let before = Instant::now();
    for _ in 0..2 {
        let (status, _, _) = send(&gw, &chat("mock-x")).await;
        assert_eq!(status, 200);
    }
    let b = key_state(&gw, "main", "b").await;
    assert_eq!(b["state"], "resting", "{b}");
    assert_eq!(b["consecutive_failures"], 0, "{b}");
    let rest_ms = b["rest_until_ms"].as_u64().unwrap() as i64 - now_ms();
    assert!(
        (1000..=2100).contains(&rest_ms),
        "rests about 2 s, {rest_ms} ms left"
    );
    // Back by itself, with no health check (its state never needed one).
    eventually("key b usable again", || async {
        let s = key_state(&gw, "main", "b").await;
        s["state"] == "healthy"
            || s["rest_until_ms"]
                .as_u64()
                .is_some_and(|t| (t as i64) <= now_ms())
    })
    .await;
    assert!(before.elapsed() >= Duration::from_millis(1500));
    let metrics = gw.metrics().await;
    assert_eq!(
        metric_sum(&metrics, "tollgate_health_checks_total", &[("key", "b")]),
        0.0
    );
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_failing_on_every_key_falls_back_with_body_intact() {
    let mock = Mock::start();
    let gw = Gateway::start(&two_key_config(&mock, ""));
    fault(
        &mock,
        json!([{"key": "sk-a", "status": 500}, {"key": "sk-b", "status": 503}]),
    )
    .await;

    let filler = "y".repeat(1024 * 1024);
    let text = serde_json::to_string(
        &json!({"model": "fallback-1", "messages": [{"role": "user", "content": filler}]}),
    )
    .unwrap();
    let expected = text.replacen("\"model\":\"fallback-1\"", "\"model\":\"backup-model\"", 1);
    let resp = client()
        .post(gw.url("/v1/chat/completions"))
        .body(text)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["x-mock-body-len"],
        expected.len().to_string().as_str()
    );
    assert_eq!(
        resp.headers()["x-mock-body-fnv64"],
        fnv64(expected.as_bytes()).as_str()
    );
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["model"], "backup-model");
    let line = gw.log_line(&id);
    assert_eq!(line["provider"], "backup");
    assert_eq!(line["upstream_model"], "backup-model");
    assert_eq!(line["retries"], 2);
    let by_key = &stats(&mock).await["by_key"];
    assert_eq!(
        (
            by_key["sk-a"].as_u64(),
            by_key["sk-b"].as_u64(),
            by_key["sk-z"].as_u64()
        ),
        (Some(1), Some(1), Some(1))
    );
    let metrics = gw.metrics().await;
    assert_eq!(
        metric_sum(
            &metrics,
            "tollgate_fallbacks_total",
            &[("from", "main"), ("to", "backup")]
        ),
        1.0
    );

    // With the backup failing too, the client gets the last error and a message that says so.
    fault(&mock, json!({"key": "sk-z", "status": 502})).await;
    let (status, _, body) = send(&gw, &chat("fallback-2")).await;
    assert_eq!(status, 502);
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(msg.contains("All 3 attempts failed"), "{msg}");
    assert!(msg.contains("main/a") && msg.contains("backup/z"), "{msg}");
    assert!(!msg.contains("sk-"), "no key value in messages: {msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_keys_down_fails_fast_without_upstream_attempts() {
    let mock = Mock::start();
    let gw = Gateway::start(&two_key_config(&mock, "").replace("200ms", "60s"));
    fault(&mock, json!({"status": 401})).await;
    let (status, _, body) = send(&gw, &chat("mock-x")).await;
    assert_eq!(status, 502, "both keys rejected: {body}");
    assert_eq!(body["error"]["code"], "upstream_auth_error");
    // Each refused key gets one immediate health check, refused too: both revoked.
    eventually("first health checks done", || async {
        let m = gw.metrics().await;
        metric_sum(
            &m,
            "tollgate_health_checks_total",
            &[("outcome", "rejected")],
        ) >= 2.0
    })
    .await;
    let before = stats(&mock).await["requests_total"].as_u64().unwrap();
    for _ in 0..5 {
        let (status, id, body) = send(&gw, &chat("mock-x")).await;
        assert_eq!(status, 503);
        assert_eq!(body["error"]["code"], "all_keys_unavailable");
        assert!(body["error"]["message"].as_str().unwrap().contains("main"));
        assert_eq!(gw.log_line(&id)["status"], 503);
    }
    assert_eq!(
        stats(&mock).await["requests_total"].as_u64().unwrap(),
        before,
        "no upstream attempt"
    );

    // The documented alternative: try keys out of rotation anyway.
    let gw2 = Gateway::start(
        &two_key_config(&mock, "    all_keys_down: try_anyway").replace("200ms", "60s"),
    );
    send(&gw2, &chat("mock-x")).await;
    let before = stats(&mock).await["requests_total"].as_u64().unwrap();
    let (status, _, _) = send(&gw2, &chat("mock-x")).await;
    assert_eq!(status, 502);
    assert!(stats(&mock).await["requests_total"].as_u64().unwrap() > before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_stream_counts_against_the_key() {
    let mock = Mock::start();
    let gw = Gateway::start(&two_key_config(&mock, ""));
    let mut body = chat("mock-x");
    body["stream"] = json!(true);
    let resp = client()
        .post(gw.url("/v1/chat/completions"))
        .header("x-mock-drop-after", "3")
        .json(&body)
        .send()
        .await
        .unwrap();
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    assert!(resp.text().await.is_err(), "the cut must reach the client");
    let line = gw.log_line(&id);
    let key = line["key"].as_str().unwrap().to_string();
    assert_eq!(
        key_state(&gw, "main", &key).await["consecutive_failures"],
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_while_keys_fail_and_recover() {
    let mock = Mock::start();
    let gw = Gateway::start(&two_key_config(&mock, ""));
    let flapper = {
        let addr = mock.addr.clone();
        tokio::spawn(async move {
            for i in 0..10 {
                let key = if i % 2 == 0 { "sk-a" } else { "sk-b" };
                let _ = client()
                    .post(format!("http://{addr}/mock/faults"))
                    .json(&json!({"key": key, "status": 500 + (i % 4), "count": 15}))
                    .send()
                    .await;
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
        })
    };
    let mut tasks = Vec::new();
    for i in 0..200 {
        let url = gw.url("/v1/chat/completions");
        tasks.push(tokio::spawn(async move {
            // Half with a fallback provider, so some must succeed whatever the keys do.
            let mut body = chat(if i % 4 < 2 { "fallback-x" } else { "mock-x" });
            body["stream"] = json!(i % 2 == 0);
            let resp = client().post(url).json(&body).send().await.unwrap();
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap();
            (status, text)
        }));
    }
    let mut ok = 0;
    for t in tasks {
        let (status, text) = t.await.unwrap();
        if status == 200 {
            ok += 1;
        } else {
            let v: Value = serde_json::from_str(&text)
                .unwrap_or_else(|_| panic!("unclear error body: {text}"));
            assert!(v["error"]["message"].is_string(), "{text}");
        }
    }
    flapper.await.unwrap();
    assert!(ok > 0);
    // Counters are updated in the logging phase, just after the response: let them settle.
    eventually("every request counted", || async {
        let m = gw.metrics().await;
        metric_sum(&m, "tollgate_requests_total", &[("route", "default")]) == 200.0
            && metric_sum(&m, "tollgate_requests_total", &[("status", "200")]) == ok as f64
    })
    .await;
    // Still serving once the faults are gone.
    clear_faults(&mock).await;
    eventually("keys back", || async {
        key_state(&gw, "main", "a").await["state"] == "healthy"
            && key_state(&gw, "main", "b").await["state"] == "healthy"
    })
    .await;
    assert_eq!(send(&gw, &chat("mock-x")).await.0, 200);
}
