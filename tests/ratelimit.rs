//! Token and request rate limits: reserve-then-reconcile under concurrency, 429 with
//! OpenAI's headers, per-header-value budgets.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use common::*;
use serde_json::{json, Value};

fn config(mock: &Mock) -> String {
    Body::mock(&mock.url())
        .consumers(&["alice"])
        .section(
            "rate_limits:
  - name: alice-tpm
    key: consumer
    window: minute
    tokens: 6000
    reserve_max_tokens: true
  - name: per-user-rpm
    key: \"header:x-user\"
    window: minute
    requests: 3",
        )
        .build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_streams_cannot_overshoot_a_token_limit() {
    let mock = Mock::start();
    let gw = Gateway::start(&config(&mock));
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let url = gw.url("/v1/chat/completions");
        tasks.push(tokio::spawn(async move {
            let resp = client()
                .post(url)
                .bearer_auth("sk-alice")
                .header("x-mock-chunks", "500")
                .json(
                    &json!({"model": "mock-x", "stream": true, "max_tokens": 500,
                    "stream_options": {"include_usage": true},
                    "messages": [{"role": "user", "content": "write a long story"}]}),
                )
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let text = resp.text().await.unwrap();
            (status, headers, text)
        }));
    }
    let (mut used, mut admitted, mut rejected) = (0u64, 0, 0);
    for t in tasks {
        let (status, headers, text) = t.await.unwrap();
        match status {
            200 => {
                admitted += 1;
                assert!(headers.contains_key("x-ratelimit-remaining-tokens"));
                assert_eq!(headers["x-ratelimit-limit-tokens"], "6000");
                let usage: Value = sse_data(&text)
                    .iter()
                    .filter_map(|d| serde_json::from_str::<Value>(d).ok())
                    .find(|v| v["usage"].is_object())
                    .unwrap();
                used += usage["usage"]["total_tokens"].as_u64().unwrap();
            }
            429 => {
                rejected += 1;
                assert!(headers.contains_key("retry-after"));
                assert_eq!(headers["x-ratelimit-remaining-tokens"], "0");
                assert!(headers.contains_key("x-ratelimit-reset-tokens"));
                let v: Value = serde_json::from_str(&text).unwrap();
                assert_eq!(v["error"]["code"], "rate_limit_exceeded");
                assert!(v["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("alice-tpm"));
            }
            other => panic!("unexpected status {other}: {text}"),
        }
    }
    assert!(
        admitted > 0 && rejected > 0,
        "{admitted} admitted, {rejected} rejected"
    );
    // One request reserves its prompt estimate plus max_tokens (~530 tokens).
    assert!(
        used <= 6000 + 600,
        "admitted {used} tokens against a 6000 limit"
    );
    let metrics = gw.metrics().await;
    assert_eq!(
        metric_sum(
            &metrics,
            "tollgate_ratelimit_rejections_total",
            &[("rule", "alice-tpm")]
        ),
        rejected as f64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_header_value_has_its_own_budget() {
    let mock = Mock::start();
    let gw = Gateway::start(&config(&mock));
    let send = |user: &'static str| {
        client()
            .post(gw.url("/v1/chat/completions"))
            .header("x-user", user)
            .json(&json!({"model": "mock-x", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
    };
    for _ in 0..3 {
        let resp = send("u1").await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-ratelimit-limit-requests"], "3");
    }
    let resp = send("u1").await.unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["x-ratelimit-remaining-requests"], "0");
    for _ in 0..3 {
        assert_eq!(
            send("u2").await.unwrap().status(),
            200,
            "u2 has its own budget"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_key_over_its_budget_is_skipped() {
    let mock = Mock::start();
    let gw = Gateway::start(&format!(
        r#"providers:
  - name: mock
    type: openai-compatible
    base_url: "{url}"
    api_keys: [{{name: k1, key: "sk-k1"}}, {{name: k2, key: "sk-k2"}}]
rate_limits:
  - {{name: per-key, key: provider_key, window: minute, requests: 2}}
routes:
  - name: default
    forward_headers: ["x-mock-*"]
    retry: {{attempts: 3, per_target: 2}}
    models:
      - model: "mock-*"
        targets: [{{provider: mock}}]
"#,
        url = mock.url()
    ));
    let mut ok = 0;
    let mut last = (0, Value::Null);
    for _ in 0..6 {
        let resp = client()
            .post(gw.url("/v1/chat/completions"))
            .json(&json!({"model": "mock-x", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        assert!(
            !resp.headers().contains_key("x-ratelimit-limit-requests"),
            "a key's budget is the gateway's, not shown to clients"
        );
        if status == 200 {
            ok += 1;
        }
        last = (status, resp.json().await.unwrap());
    }
    assert_eq!(ok, 4, "two requests per key");
    assert_eq!(last.0, 429, "{}", last.1);
    assert_eq!(last.1["error"]["code"], "rate_limit_exceeded");
    let message = last.1["error"]["message"].as_str().unwrap();
    assert!(
        !message.contains("sk-k1") && !message.contains("sk-k2"),
        "{message}"
    );
    let stats = mock_stats(&mock).await;
    assert_eq!(stats["by_key"]["sk-k1"], 2);
    assert_eq!(stats["by_key"]["sk-k2"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_ip_from_a_trusted_proxy_and_cidr_budgets() {
    let mock = Mock::start();
    let body = |trusted: &str| {
        format!(
            r#"providers:
  - name: mock
    type: openai-compatible
    base_url: "{url}"
    api_keys: ["sk-provider"]
{trusted}
rate_limits:
  - {{name: per-ip, key: ip, window: minute, requests: 1}}
  - {{name: office, key: cidr, cidrs: ["192.0.2.0/24"], window: minute, requests: 2}}
routes:
  - name: default
    forward_headers: ["x-mock-*"]
    models:
      - model: "mock-*"
        targets: [{{provider: mock}}]
"#,
            url = mock.url()
        )
    };
    let send = |gw: &Gateway, xff: &str| {
        client()
            .post(gw.url("/v1/chat/completions"))
            .header("x-forwarded-for", xff.to_string())
            .json(&json!({"model": "mock-x", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
    };
    let gw = Gateway::start(&body("trusted_proxies: [\"127.0.0.1\"]"));
    // The client-supplied left-most entry is not believed; the right-most untrusted hop is.
    assert_eq!(
        send(&gw, "6.6.6.6, 198.51.100.1").await.unwrap().status(),
        200
    );
    assert_eq!(
        send(&gw, "7.7.7.7, 198.51.100.1").await.unwrap().status(),
        429
    );
    assert_eq!(send(&gw, "198.51.100.2").await.unwrap().status(), 200);
    // The office block shares one budget of 2 (each address also has its own 1).
    assert_eq!(send(&gw, "192.0.2.1").await.unwrap().status(), 200);
    assert_eq!(send(&gw, "192.0.2.2").await.unwrap().status(), 200);
    let resp = send(&gw, "192.0.2.3").await.unwrap();
    assert_eq!(resp.status(), 429);
    let v: Value = resp.json().await.unwrap();
    assert!(v["error"]["message"].as_str().unwrap().contains("office"));

    // Without trusted proxies the header is ignored: every request is 127.0.0.1.
    let gw = Gateway::start(&body(""));
    assert_eq!(send(&gw, "198.51.100.1").await.unwrap().status(), 200);
    assert_eq!(send(&gw, "198.51.100.2").await.unwrap().status(), 429);
}

/// `GET /admin/api/v1/rate_limits/{name}/usage`: what each rule has counted now, read from
/// memory (minute windows) and from the embedded store (hour windows), without counting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_shows_what_each_rule_has_counted() {
    let mock = Mock::start();
    let body = Body::mock(&mock.url())
        .consumers(&["alice", "bob"])
        .section(
            "store: {path: \"@DIR@/state.db\"}
rate_limits:
  - {name: rpm, key: consumer, window: minute, requests: 100}
  - {name: tph, key: consumer, window: hour, tokens: 100000}
  - {name: per-user, key: \"header:x-user\", window: minute, requests: 10}",
        )
        .build();
    let gw = Gateway::start(&body);
    let mut tokens = 0;
    for _ in 0..3 {
        let resp = client()
            .post(gw.url("/v1/chat/completions"))
            .bearer_auth("sk-alice")
            .header("x-user", "u1")
            .json(
                &json!({"model": "mock-x", "messages": [{"role": "user", "content": "hi there"}]}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let v: Value = resp.json().await.unwrap();
        tokens += v["usage"]["total_tokens"].as_u64().unwrap();
    }
    let usage = |rule: &str, query: &str| {
        let url = gw.admin_url(&format!("/admin/api/v1/rate_limits/{rule}/usage{query}"));
        async move { get_json(&url, None).await }
    };
    let of = |v: &Value, key: &str| -> u64 {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["key"] == key)
            .map(|i| i["limits"][0]["used"].as_u64().unwrap())
            .unwrap_or(u64::MAX)
    };
    // Settled at the end of each request; read twice: reading counts nothing.
    for _ in 0..2 {
        let rpm = usage("rpm", "").await;
        assert_eq!(rpm["window"], "minute", "{rpm}");
        assert_eq!((of(&rpm, "alice"), of(&rpm, "bob")), (3, 0), "{rpm}");
        assert_eq!(rpm["items"][0]["limits"][0]["limit"], 100);
        let tph = usage("tph", "").await;
        assert_eq!(of(&tph, "alice"), tokens, "{tph}");
    }
    let one = usage("per-user", "?key=u1").await;
    assert_eq!(of(&one, "u1"), 3, "{one}");
    let r = client()
        .get(gw.admin_url("/admin/api/v1/rate_limits/per-user/usage"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "a header rule needs ?key=");
    let r = client()
        .get(gw.admin_url("/admin/api/v1/rate_limits/nope/usage"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}
