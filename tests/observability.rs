//! Observability limits: a blocked access log never stalls requests (dropped lines are
//! counted), and per-consumer series are bounded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use common::*;
use serde_json::json;
use std::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_access_log_drops_lines_instead_of_stalling() {
    let mock = Mock::start();
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("access.fifo");
    // A FIFO nobody reads: the writer blocks on it forever.
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let body = mock_provider(&mock.url(), "");
    let gw = Gateway::start(&body);
    let text = std::fs::read_to_string(&gw.config_path).unwrap().replace(
        &format!("path: \"{}\"", gw.access_log.display()),
        &format!("path: \"{}\"\n  buffer_lines: 8", fifo.display()),
    );
    drop(gw);
    let dir2 = tempfile::tempdir().unwrap();
    let config = dir2.path().join("t.yaml");
    std::fs::write(&config, &text).unwrap();
    let mut gw = GatewayProcess::spawn(&config, &[]);
    let ready = gw.wait_ready();
    let (port, admin) = (ready.proxy(), ready.admin().unwrap());
    for _ in 0..100 {
        let resp = client()
            .post(format!("http://{port}/v1/chat/completions"))
            .json(&json!({"model": "mock-a", "messages": []}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    let metrics = get_text(&format!("http://{admin}/metrics")).await;
    let dropped = metric_sum(&metrics, "tollgate_access_log_dropped_total", &[]);
    assert!(
        dropped >= 90.0,
        "lines beyond the 8-line buffer are dropped and counted: {dropped}"
    );
    drop(gw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_series_are_bounded() {
    let mock = Mock::start();
    let mut consumers = String::from("consumers:\n");
    for i in 0..20_000 {
        consumers.push_str(&format!("  - {{name: c{i}, credentials: [\"sk-c{i}\"]}}\n"));
    }
    let body =
        mock_provider(&mock.url(), "") + &consumers + "metrics:\n  max_consumer_series: 10\n";
    let gw = Gateway::start(&body);
    for i in 0..40 {
        let resp = client()
            .post(gw.url("/v1/chat/completions"))
            .bearer_auth(format!("sk-c{}", i * 500))
            .json(&json!({"model": "mock-a", "messages": []}))
            .send()
            .await
            .unwrap();
        let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
        assert_eq!(resp.status(), 200);
        gw.log_line(&id);
    }
    let metrics = gw.metrics().await;
    let series = metrics
        .lines()
        .filter(|l| l.starts_with("tollgate_consumer_output_tokens_total{"))
        .count();
    assert!(series <= 11, "{series} series");
    assert!(
        metric_sum(
            &metrics,
            "tollgate_consumer_output_tokens_total",
            &[("consumer", "other")]
        ) > 0.0
    );
    assert_eq!(
        metric_sum(&metrics, "tollgate_consumer_output_tokens_total", &[]),
        40.0 * 8.0
    );
}
