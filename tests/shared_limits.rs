//! Limits that outlive one process: shared through Redis by several gateways (with
//! fail-open when Redis dies), and day windows kept in the embedded store across restarts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use common::*;
use serde_json::json;
use std::time::{Duration, Instant};

fn config(mock: &Mock, rule: &str, store: &str) -> String {
    Body::mock(&mock.url())
        .consumers(&["alice", "bob", "carol"])
        .section(&format!("rate_limits:\n{rule}"))
        .section(store)
        .build()
}

const FIVE_PER_MINUTE: &str = "  - {name: alice-rpm, key: consumer, window: minute, requests: 5}";

fn redis_store(r: &Redis, on_error: &str) -> String {
    format!(
        "redis: {{url: \"{}\", timeout: 300ms, on_error: {on_error}, prefix: \"t{}\"}}",
        r.url(),
        r.port
    )
}

/// A consumer per attempt of `in_one_window`: each run counts from zero.
const CONSUMERS: [&str; 3] = ["sk-alice", "sk-bob", "sk-carol"];
const MINUTE: Duration = Duration::from_secs(60);

async fn status(gw: &Gateway) -> u16 {
    status_as(gw, "sk-alice").await
}

async fn status_as(gw: &Gateway, key: &str) -> u16 {
    client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(key)
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
    // Redis's windows are aligned to the clock: a run across a minute boundary is redone.
    let statuses = in_one_window(MINUTE, |attempt| {
        let (a, b) = (&a, &b);
        async move {
            let mut statuses = Vec::new();
            for i in 0..12 {
                let gw = if i % 2 == 0 { a } else { b };
                statuses.push(status_as(gw, CONSUMERS[attempt]).await);
            }
            statuses
        }
    })
    .await;
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429),
        "{statuses:?}"
    );
    let admitted = statuses.iter().filter(|s| **s == 200).count();
    assert_eq!(admitted, 5, "one budget across both gateways: {statuses:?}");
    // Either gateway's API reads the shared count (twice: reading counts nothing).
    for gw in [&a, &b, &a] {
        let v = get_json(
            &gw.admin_url("/admin/api/v1/rate_limits/alice-rpm/usage"),
            None,
        )
        .await;
        let used: Vec<u64> = v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["limits"][0]["used"].as_u64().unwrap())
            .collect();
        assert!(used.contains(&5), "{v}");
    }
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
    let (key, statuses) = in_one_window(MINUTE, |attempt| {
        let gw = &gw;
        async move {
            let key = CONSUMERS[attempt];
            let mut statuses = Vec::new();
            for _ in 0..6 {
                statuses.push(status_as(gw, key).await);
            }
            (key, statuses)
        }
    })
    .await;
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429]);

    redis.kill();
    for _ in 0..10 {
        assert_eq!(
            status_as(&gw, key).await,
            200,
            "fail-open while Redis is down"
        );
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
        if status_as(&gw, key).await == 429 {
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
    // Holds across midnight UTC too: the embedded store's estimate is not rounded, so three
    // requests just before the boundary still count 3 x (1 - tiny) + 1 > 3 just after it.
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

/// Two gateways share one limit through a Redis that speaks only TLS (`rediss://`), trusting
/// its private CA through `ca_file`. A gateway without that CA (the platform's roots) refuses
/// the server's certificate, so with `on_error: closed` it refuses requests with 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_share_a_limit_through_redis_over_tls() {
    if skip_without_redis_server() {
        return;
    }
    let mock = Mock::start();
    let redis = RedisTls::start();
    let store = |ca: bool| {
        let ca = match ca {
            true => format!("ca_file: \"{}\", ", redis.ca_file.display()),
            false => String::new(),
        };
        format!(
            "redis: {{url: \"{}\", {ca}timeout: 300ms, on_error: closed, prefix: \"t{}\"}}",
            redis.url(),
            redis.port
        )
    };
    let body = config(&mock, FIVE_PER_MINUTE, &store(true));
    let a = Gateway::start(&body);
    let b = Gateway::start(&body);
    // Connected (fail closed answers 503 until then); carol is the spare consumer.
    for gw in [&a, &b] {
        eventually("the gateway reaches redis over TLS", || async {
            status_as(gw, "sk-carol").await == 200
        })
        .await;
    }
    let statuses = in_one_window(MINUTE, |attempt| {
        let (a, b) = (&a, &b);
        async move {
            let mut statuses = Vec::new();
            for i in 0..12 {
                let gw = if i % 2 == 0 { a } else { b };
                statuses.push(status_as(gw, CONSUMERS[attempt]).await);
            }
            statuses
        }
    })
    .await;
    let admitted = statuses.iter().filter(|s| **s == 200).count();
    assert_eq!(admitted, 5, "one budget across both gateways: {statuses:?}");
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429),
        "{statuses:?}"
    );

    let untrusting = Gateway::start(&config(&mock, FIVE_PER_MINUTE, &store(false)));
    let resp = client()
        .post(untrusting.url("/v1/chat/completions"))
        .bearer_auth("sk-bob")
        .json(&json!({"model": "mock-x", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "store_unavailable");
    let m = untrusting.metrics().await;
    assert!(metric_sum(&m, "tollgate_redis_errors_total", &[]) >= 1.0);
}
