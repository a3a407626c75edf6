//! Limits that outlive one process: shared through Redis by several gateways (with
//! fail-open when Redis dies), and day windows kept in the embedded store across restarts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::json;
use std::time::{Duration, Instant};

fn config(mock: &Mock, rule: &str, store: &str) -> String {
    format!(
        r#"providers:
  - name: mock
    type: openai-compatible
    base_url: "{url}"
    api_keys: ["sk-provider"]
consumers:
  - name: alice
    credentials: ["sk-alice"]
rate_limits:
{rule}
{store}
routes:
  - name: default
    forward_headers: ["x-mock-*"]
    models:
      - model: "mock-*"
        targets: [{{provider: mock}}]
"#,
        url = mock.url()
    )
}

const FIVE_PER_MINUTE: &str = "  - {name: alice-rpm, key: consumer, window: minute, requests: 5}";

fn redis_store(r: &Redis, on_error: &str) -> String {
    format!(
        "redis: {{url: \"{}\", timeout: 300ms, on_error: {on_error}, prefix: \"t{}\"}}",
        r.url(),
        r.port
    )
}

async fn status(gw: &Gateway) -> u16 {
    client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth("sk-alice")
        .json(&json!({"model": "mock-x", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_enforce_one_limit_through_redis() {
    let mock = Mock::start();
    let redis = Redis::start();
    let body = config(&mock, FIVE_PER_MINUTE, &redis_store(&redis, "open"));
    let a = Gateway::start(&body);
    let b = Gateway::start(&body);
    let mut admitted = 0;
    for i in 0..12 {
        let gw = if i % 2 == 0 { &a } else { &b };
        match status(gw).await {
            200 => admitted += 1,
            429 => {}
            s => panic!("unexpected status {s}"),
        }
    }
    assert_eq!(admitted, 5, "one budget across both gateways");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_fails_open_then_limits_resume() {
    let mock = Mock::start();
    let mut redis = Redis::start();
    let gw = Gateway::start(&config(
        &mock,
        FIVE_PER_MINUTE,
        &redis_store(&redis, "open"),
    ));
    for _ in 0..5 {
        assert_eq!(status(&gw).await, 200);
    }
    assert_eq!(status(&gw).await, 429);

    redis.kill();
    for _ in 0..10 {
        assert_eq!(status(&gw).await, 200, "fail-open while Redis is down");
    }
    let m = gw.metrics().await;
    assert!(
        metric_sum(
            &m,
            "tollgate_store_fail_open_total",
            &[("what", "ratelimit")]
        ) >= 10.0
    );
    assert!(metric_sum(&m, "tollgate_redis_errors_total", &[]) >= 1.0);

    // Redis returns (empty): the gateway reconnects and the limit applies again.
    redis.restart();
    let start = Instant::now();
    let mut after = 0;
    loop {
        if status(&gw).await == 429 {
            break;
        }
        after += 1;
        assert!(
            start.elapsed() < DEADLINE,
            "limits did not resume after Redis came back ({after} admitted)"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Failures are logged once per interval, not per request.
    let log = {
        let mut gw = gw;
        gw.stop()
    };
    let lines = log.lines().filter(|l| l.contains("redis")).count();
    assert!(lines < 10, "redis failures logged {lines} times:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_fails_closed_when_configured() {
    let mock = Mock::start();
    let mut redis = Redis::start();
    let gw = Gateway::start(&config(
        &mock,
        FIVE_PER_MINUTE,
        &redis_store(&redis, "closed"),
    ));
    assert_eq!(status(&gw).await, 200);
    redis.kill();
    let resp = client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth("sk-alice")
        .json(&json!({"model": "mock-x", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "store_unavailable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_day_limit_survives_restart_kill_and_upgrade() {
    let mock = Mock::start();
    let rule = "  - {name: alice-rpd, key: consumer, window: day, requests: 3}";
    let mut gw = Gateway::start(&config(
        &mock,
        rule,
        "store: {path: \"@DIR@/state.db\", flush_interval: 10ms}",
    ));
    for _ in 0..3 {
        assert_eq!(status(&gw).await, 200);
    }
    assert_eq!(status(&gw).await, 429);
    // Graceful restart.
    gw.signal_and_wait("-TERM");
    gw.respawn();
    assert_eq!(status(&gw).await, 429, "the day window survived a restart");
    // Zero-downtime upgrade.
    let gw = tokio::task::spawn_blocking(move || {
        gw.upgrade();
        gw
    })
    .await
    .unwrap();
    assert_eq!(status(&gw).await, 429, "the day window survived an upgrade");
}
