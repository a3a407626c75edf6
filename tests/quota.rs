//! Consumer quotas: exhaustion, exact charges under concurrency, durability across kill -9
//! and upgrades, the Higress-compatible API and the admin JSON API, shared Redis balances.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use common::*;
use serde_json::{json, Value};
use std::sync::Arc;

fn config(mock: &Mock, store: &str) -> String {
    Body::mock(&mock.url())
        .consumers(&["alice", "bob", "boss"])
        .section("quota:\n  consumers: [alice, bob]\n  admin_consumer: boss")
        .section(store)
        .route("default", "mock-*", Some("{required: true}"))
        .build()
}

const LOCAL: &str = "store: {path: \"@DIR@/state.db\"}";

fn redis_store(r: &Redis) -> String {
    format!("redis: {{url: \"{}\", timeout: 500ms}}", r.url())
}

/// `GET …/quota?consumer=NAME` on the proxy listener as the admin consumer.
async fn balance(gw: &Gateway, consumer: &str) -> i64 {
    let url = gw.url(&format!("/v1/chat/completions/quota?consumer={consumer}"));
    let v = get_json(&url, Some("sk-boss")).await;
    assert_eq!(v["consumer"], consumer);
    v["quota"].as_i64().unwrap()
}

async fn form_post(gw: &Gateway, path: &str, key: &str, body: &str) -> (u16, Value) {
    let resp = client()
        .post(gw.url(path))
        .bearer_auth(key)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn set_quota(gw: &Gateway, consumer: &str, n: i64) {
    let (status, v) = form_post(
        gw,
        "/v1/chat/completions/quota/refresh",
        "sk-boss",
        &format!("consumer={consumer}&quota={n}"),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["quota"], n);
}

/// One chat request as `key`; the status and the total tokens it reported.
async fn chat(url: String, key: &'static str, stream: bool) -> (u16, u64, Value) {
    let resp = client()
        .post(url)
        .bearer_auth(key)
        .json(
            &json!({"model": "mock-x", "stream": stream, "max_tokens": 20,
            "stream_options": {"include_usage": true},
            "messages": [{"role": "user", "content": "count the tokens of this request"}]}),
        )
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    if status != 200 {
        return (
            status,
            0,
            serde_json::from_str(&text).unwrap_or(Value::Null),
        );
    }
    let usage = if stream {
        sse_data(&text)
            .iter()
            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
            .find(|v| v["usage"].is_object())
            .map(|v| v["usage"].clone())
            .unwrap()
    } else {
        serde_json::from_str::<Value>(&text).unwrap()["usage"].clone()
    };
    (status, usage["total_tokens"].as_u64().unwrap(), usage)
}

/// `n` concurrent requests split over `urls`, alternating streaming; the tokens served.
async fn concurrent(urls: &[String], n: usize) -> u64 {
    let gate = Arc::new(tokio::sync::Barrier::new(n));
    let mut tasks = Vec::new();
    for i in 0..n {
        let url = urls[i % urls.len()].clone();
        let gate = gate.clone();
        tasks.push(tokio::spawn(async move {
            gate.wait().await;
            chat(url, "sk-bob", i % 2 == 0).await
        }));
    }
    let mut used = 0;
    for t in tasks {
        let (status, tokens, body) = t.await.unwrap();
        assert_eq!(status, 200, "{body}");
        used += tokens;
    }
    used
}

/// Poll until the balance equals `want` (charges land when each request's logging ends).
async fn settled(gw: &Gateway, consumer: &str, want: i64) {
    let start = std::time::Instant::now();
    loop {
        let got = balance(gw, consumer).await;
        if got == want {
            return;
        }
        assert!(start.elapsed() < DEADLINE, "balance {got}, expected {want}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_balance_gets_insufficient_quota() {
    let mock = Mock::start();
    let gw = Gateway::start(&config(&mock, LOCAL));
    set_quota(&gw, "alice", 1000).await;
    let url = gw.url("/v1/chat/completions");
    let mut spent = 0u64;
    let mut served = 0;
    let last = loop {
        let (status, tokens, body) = chat(url.clone(), "sk-alice", served % 2 == 0).await;
        if status != 200 {
            break (status, body);
        }
        served += 1;
        spent += tokens;
        // Each charge is committed before the next request is admitted on it.
        settled(&gw, "alice", 1000 - spent as i64).await;
        assert!(served < 1000, "never refused");
    };
    // Refused only once what is left cannot cover a request's reservation.
    assert!(
        1000 - (spent as i64) < 60,
        "served only {spent} of 1000 tokens"
    );
    assert_eq!(last.0, 429, "{}", last.1);
    assert_eq!(last.1["error"]["code"], "insufficient_quota");
    assert_eq!(last.1["error"]["type"], "insufficient_quota");
    // Another consumer is unaffected by alice's balance but has none of its own.
    let (status, _, body) = chat(url.clone(), "sk-bob", false).await;
    assert_eq!(status, 429, "bob has no balance: {body}");
    // A top-up lets alice in again.
    let (status, v) = form_post(
        &gw,
        "/v1/chat/completions/quota/delta",
        "sk-boss",
        "consumer=alice&value=500",
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["quota"], 1000 - spent as i64 + 500);
    assert_eq!(chat(url, "sk-alice", false).await.0, 200);

    let start = std::time::Instant::now();
    loop {
        let m = gw.metrics().await;
        let rejected = metric_sum(
            &m,
            "tollgate_quota_rejections_total",
            &[("consumer", "alice")],
        );
        let charged = metric_sum(
            &m,
            "tollgate_quota_charged_tokens_total",
            &[("consumer", "alice")],
        );
        let gauge = metric_sum(
            &m,
            "tollgate_quota_remaining_tokens",
            &[("consumer", "alice")],
        );
        if rejected == 1.0 && charged > spent as f64 && gauge == balance(&gw, "alice").await as f64
        {
            break;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "quota metrics: {rejected} {charged} {gauge}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn charges_are_exact_and_survive_kill_and_upgrade() {
    let mock = Mock::start();
    let mut gw = Gateway::start(&config(&mock, LOCAL));
    let start_balance = 1_000_000_000i64;
    set_quota(&gw, "bob", start_balance).await;
    let used = concurrent(&[gw.url("/v1/chat/completions")], 500).await;
    let expected = start_balance - used as i64;
    settled(&gw, "bob", expected).await;

    // What was acknowledged survives a kill -9.
    gw.signal_and_wait("-KILL");
    gw.respawn();
    assert_eq!(balance(&gw, "bob").await, expected);

    // Requests in flight across a graceful upgrade are all charged.
    let url = gw.url("/v1/chat/completions");
    let traffic = tokio::spawn(async move { concurrent(&[url], 60).await });
    let upgrade = tokio::task::spawn_blocking(move || {
        gw.upgrade();
        gw
    });
    let used_during = traffic.await.unwrap();
    let gw = upgrade.await.unwrap();
    settled(&gw, "bob", expected - used_during as i64).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_api_on_the_proxy_listener() {
    let mock = Mock::start();
    let gw = Gateway::start(&config(&mock, LOCAL));
    set_quota(&gw, "alice", 100).await;
    assert_eq!(balance(&gw, "alice").await, 100);
    let (s, v) = form_post(
        &gw,
        "/v1/chat/completions/quota/delta",
        "sk-boss",
        "consumer=alice&value=-30",
    )
    .await;
    assert_eq!((s, v["quota"].as_i64()), (200, Some(70)));
    // Bad input: 400, nothing changes.
    let bad = [
        ("/v1/chat/completions/quota/refresh", "quota=5"),
        (
            "/v1/chat/completions/quota/refresh",
            "consumer=alice&quota=abc",
        ),
        (
            "/v1/chat/completions/quota/refresh",
            "consumer=alice&quota=1.5",
        ),
        (
            "/v1/chat/completions/quota/refresh",
            "consumer=alice&quota=-1",
        ),
        (
            "/v1/chat/completions/quota/refresh",
            "consumer=alice&quota=99999999999999999999",
        ),
        (
            "/v1/chat/completions/quota/refresh",
            "consumer=nobody&quota=5",
        ),
        ("/v1/chat/completions/quota/delta", "consumer=alice"),
        (
            "/v1/chat/completions/quota/delta",
            "consumer=alice&value=9223372036854775807",
        ),
        (
            "/v1/chat/completions/quota/delta",
            "consumer=alice&value=ten",
        ),
    ];
    for (path, body) in bad {
        let (s, v) = form_post(&gw, path, "sk-boss", body).await;
        assert_eq!(s, 400, "{path} {body}: {v}");
        assert_eq!(v["error"]["code"], "invalid_quota_request", "{v}");
        assert!(v["error"]["message"].as_str().unwrap().len() > 5);
    }
    assert_eq!(balance(&gw, "alice").await, 70);
    // Wrong methods, and a GET without a consumer.
    let c = client();
    let calls = [
        c.post(gw.url("/v1/chat/completions/quota?consumer=alice")),
        c.get(gw.url("/v1/chat/completions/quota/refresh?consumer=alice&quota=5")),
        c.get(gw.url("/v1/chat/completions/quota")),
    ];
    for req in calls {
        let resp = req.bearer_auth("sk-boss").send().await.unwrap();
        assert_eq!(resp.status(), 400, "{:?}", resp.url());
    }
    // Not the admin consumer: 403; an unknown credential or none: 401; nothing changes.
    let (s, v) = form_post(
        &gw,
        "/v1/chat/completions/quota/refresh",
        "sk-alice",
        "consumer=alice&quota=999999",
    )
    .await;
    assert_eq!(s, 403, "{v}");
    let (s, _) = form_post(
        &gw,
        "/v1/chat/completions/quota/refresh",
        "sk-unknown",
        "consumer=alice&quota=999999",
    )
    .await;
    assert_eq!(s, 401);
    let s = client()
        .get(gw.url("/v1/chat/completions/quota?consumer=alice"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(s, 401);
    assert_eq!(balance(&gw, "alice").await, 70);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_api_on_the_admin_listener() {
    let mock = Mock::start();
    let gw = Gateway::start_opts(&config(&mock, LOCAL), None, Some("admin-token"), &[]);
    let c = client();
    let url = gw.admin_url("/admin/quotas/alice");
    let send = |req: reqwest::RequestBuilder| async move {
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json::<Value>().await.unwrap_or(Value::Null))
    };
    // The admin token is required.
    assert_eq!(send(c.get(&url)).await.0, 401);
    let (s, v) = send(
        c.put(&url)
            .bearer_auth("admin-token")
            .json(&json!({"quota": 250})),
    )
    .await;
    assert_eq!(
        (s, v.clone()),
        (200, json!({"consumer": "alice", "quota": 250})),
        "{v}"
    );
    let (s, v) = send(
        c.post(format!("{url}/delta"))
            .bearer_auth("admin-token")
            .json(&json!({"value": -50})),
    )
    .await;
    assert_eq!((s, v["quota"].as_i64()), (200, Some(200)));
    let (s, v) = send(c.get(&url).bearer_auth("admin-token")).await;
    assert_eq!((s, v["quota"].as_i64()), (200, Some(200)));
    // Bad input: 400 and no change.
    let bad: Vec<reqwest::RequestBuilder> = vec![
        c.put(&url)
            .bearer_auth("admin-token")
            .json(&json!({"quota": "lots"})),
        c.put(&url)
            .bearer_auth("admin-token")
            .json(&json!({"quota": 1.5})),
        c.put(&url)
            .bearer_auth("admin-token")
            .json(&json!({"quota": -5})),
        c.put(&url)
            .bearer_auth("admin-token")
            .json(&json!({"quota": 18446744073709551615u64})),
        c.put(&url).bearer_auth("admin-token").body("not json"),
        c.put(&url).bearer_auth("admin-token").json(&json!({})),
        c.post(format!("{url}/delta"))
            .bearer_auth("admin-token")
            .json(&json!({"value": i64::MAX})),
        c.put(gw.admin_url("/admin/quotas/nobody"))
            .bearer_auth("admin-token")
            .json(&json!({"quota": 5})),
        c.delete(&url).bearer_auth("admin-token"),
        c.post(&url)
            .bearer_auth("admin-token")
            .json(&json!({"quota": 5})),
    ];
    for req in bad {
        let (s, v) = send(req).await;
        assert_eq!(s, 400, "{v}");
        assert!(v["error"]["message"].is_string(), "{v}");
    }
    assert_eq!(
        send(c.get(&url).bearer_auth("admin-token")).await.1["quota"],
        200
    );
    // The proxy listener sees the same balance.
    assert_eq!(balance(&gw, "alice").await, 200);
    // /admin/status lists every charged consumer's balance (bob never set: 0).
    let (s, status) = send(
        c.get(gw.admin_url("/admin/status"))
            .bearer_auth("admin-token"),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(
        status["quotas"],
        json!({"alice": 200, "bob": 0}),
        "{status}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_share_a_redis_balance_exactly() {
    let mock = Mock::start();
    let redis = Redis::start();
    let a = Gateway::start(&config(&mock, &redis_store(&redis)));
    let b = Gateway::start(&config(&mock, &redis_store(&redis)));
    set_quota(&a, "bob", 1_000_000_000).await;
    assert_eq!(balance(&b, "bob").await, 1_000_000_000);
    let urls = [a.url("/v1/chat/completions"), b.url("/v1/chat/completions")];
    let used = concurrent(&urls, 500).await;
    settled(&b, "bob", 1_000_000_000 - used as i64).await;
    settled(&a, "bob", 1_000_000_000 - used as i64).await;

    // Exhaustion across both: 1000 tokens, then 429 insufficient_quota from either.
    set_quota(&b, "alice", 1000).await;
    let mut spent = 0;
    let mut i = 0;
    loop {
        let url = urls[i % 2].clone();
        i += 1;
        let (status, tokens, body) = chat(url, "sk-alice", false).await;
        if status != 200 {
            assert_eq!(status, 429);
            assert_eq!(body["error"]["code"], "insufficient_quota");
            break;
        }
        spent += tokens;
        settled(&a, "alice", 1000 - spent as i64).await;
        assert!(i < 1000);
    }
    assert!(
        1000 - (spent as i64) < 60,
        "served only {spent} of 1000 tokens"
    );
}
