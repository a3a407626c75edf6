//! The response cache, black box: hits for the same request (fields reordered), misses for
//! any change or another consumer, streams replayed and kept, client bypass and refresh,
//! the access log, metrics and the admin API, two gateways sharing hits through Redis, and
//! the official openai SDK reading a replayed stream.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::Value;

const TOKEN: &str = "admin-token-cache-1";
const PRICES: &str = "pricing:
  defaults: false
  prices:
    - {provider: mock, model: mock-a, input: 1000, output: 2000}";

fn config(mock: &Mock, extra: &str) -> String {
    let body = Body::mock(&mock.url())
        .consumers(&["alice", "bob"])
        .section(PRICES)
        .section(extra)
        .route("chat", "mock-*", Some("{required: true}"))
        .build();
    body.replace(
        "    forward_headers: [\"x-mock-*\"]\n",
        "    forward_headers: [\"x-mock-*\"]\n    cache: {ttl: 10m}\n",
    )
}

/// A request as `consumer` with `body` (raw text, to control field order) and headers.
async fn send(
    gw: &Gateway,
    consumer: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> (String, String, String) {
    let mut req = client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(format!("sk-{consumer}"))
        .header("content-type", "application/json")
        .body(body.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let h = |n: &str| {
        resp.headers()
            .get(n)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    let (cache, id) = (h("x-tollgate-cache"), h("x-request-id"));
    (cache, id, resp.text().await.unwrap())
}

async fn upstream_requests(mock: &Mock) -> u64 {
    mock_stats(mock).await["requests_total"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_requests_hit_and_any_change_misses() {
    let mock = Mock::start();
    let gw = Gateway::start_opts(&config(&mock, ""), None, Some(TOKEN), &[]);
    let a = r#"{"model":"mock-a","messages":[{"role":"user","content":"hello cache"}],"temperature":0.5}"#;
    let reordered = r#"{ "temperature": 0.5,
        "messages": [ {"content": "hello cache", "role": "user"} ], "model": "mock-a" }"#;
    let (c1, id1, first) = send(&gw, "alice", a, &[]).await;
    assert_eq!(c1, "miss");
    let (c2, id2, second) = send(&gw, "alice", reordered, &[]).await;
    assert_eq!(c2, "hit-exact");
    assert_eq!(first, second, "the same answer");
    assert_eq!(
        upstream_requests(&mock).await,
        1,
        "a hit never goes upstream"
    );
    // The access log: the hit with its tokens and cache field.
    let hit = gw.log_line(&id2);
    assert_eq!(hit["cache"], "hit-exact", "{hit}");
    assert_eq!(gw.log_line(&id1)["cache"], "miss");
    assert_eq!(hit["input_tokens"], gw.log_line(&id1)["input_tokens"]);
    assert!(hit["key"].is_null(), "no key served a hit: {hit}");

    // Any change misses: the text, the model, tools, temperature, the consumer.
    for (consumer, body) in [
        ("alice", a.replace("hello cache", "hello cache!")),
        ("alice", a.replace("mock-a", "mock-b")),
        ("alice", a.replace("0.5", "0.7")),
        ("alice", a.replace("}],", "}],\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"parameters\":{}}}],")),
        ("bob", a.to_string()),
    ] {
        let (c, _, _) = send(&gw, consumer, &body, &[]).await;
        assert_eq!(c, "miss", "{consumer}: {body}");
    }
    let upstream = upstream_requests(&mock).await;
    assert_eq!(upstream, 6);

    // The client decides: no-store bypasses (and keeps nothing), no-cache refreshes.
    let fresh = a.replace("hello cache", "bypass me");
    let (c, _, _) = send(&gw, "alice", &fresh, &[("cache-control", "no-store")]).await;
    assert_eq!(c, "bypass");
    let (c, _, _) = send(&gw, "alice", &fresh, &[]).await;
    assert_eq!(c, "miss", "a bypassed answer was not kept");
    let (c, _, _) = send(&gw, "alice", a, &[("cache-control", "no-cache")]).await;
    assert_eq!(c, "refresh");
    let (c, _, _) = send(&gw, "alice", a, &[("x-tollgate-cache", "bypass")]).await;
    assert_eq!(c, "bypass");
    assert_eq!(upstream_requests(&mock).await, upstream + 4);

    // A streamed request is answered from a whole answer, and the reverse.
    let streamed = a.replace(
        "\"temperature\":0.5",
        "\"temperature\":0.5,\"stream\":true,\"stream_options\":{\"include_usage\":true}",
    );
    let (c, _, sse) = send(&gw, "alice", &streamed, &[]).await;
    assert_eq!(c, "hit-exact");
    let events = sse_data(&sse);
    assert_eq!(events.last().unwrap(), "[DONE]");
    let text: String = events
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    let whole: Value = serde_json::from_str(&first).unwrap();
    assert_eq!(text, whole["choices"][0]["message"]["content"]);
    assert!(
        events.iter().any(|e| e.contains("\"usage\"")),
        "asked for usage"
    );
    let s2 = r#"{"model":"mock-a","stream":true,"messages":[{"role":"user","content":"streamed first"}]}"#;
    let (c, _, _) = send(&gw, "alice", s2, &[]).await;
    assert_eq!(c, "miss");
    let (c, _, body) = send(&gw, "alice", &s2.replace("\"stream\":true,", ""), &[]).await;
    assert_eq!(c, "hit-exact");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");

    // A cut stream is not kept.
    let cut = r#"{"model":"mock-a","stream":true,"messages":[{"role":"user","content":"cut me"}]}"#;
    let resp = client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth("sk-alice")
        .header("x-mock-drop-after", "2")
        .body(cut)
        .send()
        .await
        .unwrap();
    let _ = resp.text().await;
    let (c, _, _) = send(&gw, "alice", cut, &[]).await;
    assert_eq!(c, "miss", "a cut stream was not kept");

    // Metrics, stats and purge.
    let m = gw.metrics().await;
    assert!(
        metric_sum(
            &m,
            "tollgate_cache_lookups_total",
            &[("result", "hit-exact")]
        ) >= 3.0
    );
    assert!(
        metric_sum(
            &m,
            "tollgate_cache_saved_tokens_total",
            &[("route", "chat")]
        ) > 0.0
    );
    assert!(
        metric_sum(
            &m,
            "tollgate_cache_saved_cost_total",
            &[("currency", "USD")]
        ) > 0.0
    );
    let mut api = Api::new(&gw, Some(TOKEN));
    let (status, stats) = api.call(Method::GET, "/cache", None).await;
    assert_eq!(status, StatusCode::OK, "{stats}");
    assert!(stats["entries"].as_u64().unwrap() >= 3, "{stats}");
    let (status, v) = api.call(Method::DELETE, "/cache", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    let (status, v) = api
        .call(Method::DELETE, "/cache?scope=consumer:alice", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert!(v["purged"]["memory"].as_u64().unwrap() >= 3, "{v}");
    let (c, _, _) = send(&gw, "alice", a, &[]).await;
    assert_eq!(c, "miss", "purged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hit_charges_the_consumer_unless_the_route_says_not() {
    let mock = Mock::start();
    let budgets = "budgets:\n  - {name: alice-b, consumer: alice, amount: 100}";
    let gw = Gateway::start_opts(&config(&mock, budgets), None, Some(TOKEN), &[]);
    let mut api = Api::new(&gw, Some(TOKEN));
    let a = r#"{"model":"mock-a","messages":[{"role":"user","content":"charge me"}]}"#;
    let (_, id1, _) = send(&gw, "alice", a, &[]).await;
    let (c, id2, _) = send(&gw, "alice", a, &[]).await;
    assert_eq!(c, "hit-exact");
    let cost = |id: &str| gw.log_line(id)["cost"].as_str().unwrap().to_string();
    assert_eq!(
        cost(&id1),
        cost(&id2),
        "the hit is charged what the answer cost"
    );
    let spent = eventually_some("both charged", || {
        let mut api = Api::new(&gw, Some(TOKEN));
        async move {
            let (_, v) = api
                .call(Method::GET, "/budgets/alice-b/spend?subject=alice", None)
                .await;
            let s = &v["items"][0];
            (s["reserved"] == "0").then(|| s["spent"].as_str().unwrap().to_string())
        }
    })
    .await;
    let one: f64 = cost(&id1).parse().unwrap();
    let both: f64 = spent.parse().unwrap();
    assert!((both - 2.0 * one).abs() < 1e-9, "{both} vs 2 × {one}");
    // Not charged: the route says so.
    let free =
        config(&mock, budgets).replace("cache: {ttl: 10m}", "cache: {ttl: 10m, charge: false}");
    gw.rewrite_config_as(PROXY_LISTEN, Some(TOKEN), &free);
    signal(gw.pid(), "-HUP");
    eventually("the reload", || async {
        let (_, v) = Api::new(&gw, Some(TOKEN))
            .call(Method::GET, "/cache", None)
            .await;
        v["routes"][0]["charge"] == false
    })
    .await;
    let (c, _, _) = send(&gw, "alice", a, &[]).await;
    assert_eq!(c, "hit-exact");
    let (_, v) = api
        .call(Method::GET, "/budgets/alice-b/spend?subject=alice", None)
        .await;
    assert_eq!(
        v["items"][0]["spent"].as_str().unwrap(),
        spent,
        "an uncharged hit"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_share_hits_through_redis() {
    if skip_without_redis_server() {
        return;
    }
    let mock = Mock::start();
    let redis = Redis::start();
    let store = format!("redis: {{url: \"{}\", timeout: 500ms}}", redis.url());
    let a = Gateway::start_opts(&config(&mock, &store), None, Some(TOKEN), &[]);
    let b = Gateway::start_opts(&config(&mock, &store), None, Some(TOKEN), &[]);
    let body = r#"{"model":"mock-a","messages":[{"role":"user","content":"shared"}]}"#;
    assert_eq!(send(&a, "alice", body, &[]).await.0, "miss");
    let (c, _, _) = send(&b, "alice", body, &[]).await;
    assert_eq!(c, "hit-exact", "b serves what a kept");
    assert_eq!(upstream_requests(&mock).await, 1);
    assert_eq!(
        send(&b, "bob", body, &[]).await.0,
        "miss",
        "another consumer"
    );
    // A purge on a reaches Redis and, once its own copy is gone (5 s at most), b.
    let (status, v) = Api::new(&a, Some(TOKEN))
        .call(Method::DELETE, "/cache?route=chat", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(v["purged"]["redis"].as_u64().unwrap() >= 2, "{v}");
    eventually("the purge reaches b", || async {
        send(&b, "alice", body, &[]).await.0 == "miss"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_openai_sdk_reads_replayed_streams() {
    let Some(python) = openai_python() else {
        return;
    };
    let mock = Mock::start();
    let gw = Gateway::start(&config(&mock, ""));
    run_sdk_script(python, "openai_cache_stream.py", gw.url("/v1")).await;
    assert_eq!(
        upstream_requests(&mock).await,
        2,
        "two answers made, two served from the cache"
    );
}
