//! Metric label cardinality: no string a client sends (model name, path, credential) may
//! become a Prometheus label value. Thousands of distinct model names, some of them hundreds
//! of KB long, sent to an unmatched rule, an unknown path, an authenticated route without a
//! credential and a wildcard rule that serves them, leave the number of series unchanged and
//! memory bounded; a normal request is then counted under its configured rule's pattern.

use crate::common::*;
use serde_json::json;
use std::sync::Arc;

fn config(mock: &Mock) -> String {
    format!(
        r#"providers:
  - name: mock
    type: openai-compatible
    base_url: "{url}"
    api_keys: ["{PROVIDER_KEY}"]
consumers:
  - name: alice
    credentials: ["sk-alice"]
routes:
  - name: default
    models:
      - model: "mock-*"
        targets: [{{provider: mock}}]
  - name: secure
    auth: {{required: true}}
    models:
      - model: "secure-*"
        targets: [{{provider: mock}}]
"#,
        url = mock.url()
    )
}

/// The sample lines of the gateway's own metrics (`tollgate_*`): one per series and bucket.
fn series(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| l.starts_with("tollgate_"))
        .map(|l| l.rsplit_once(' ').map(|(s, _)| s).unwrap_or(l))
        .collect()
}

/// What a hostile client sends, with model name `model`.
#[derive(Clone, Copy)]
enum Kind {
    /// A route's path, a model no rule matches: 404 `model_not_found`.
    Unmatched,
    /// A path no route serves: 404 `not_found`.
    UnknownRoute,
    /// A rule of a route that requires a credential, sent without one or with an unknown
    /// one (401 both).
    Unauthenticated,
    /// A wildcard rule that serves it: 200 from the provider.
    Served,
}

async fn send(gw: &Gateway, http: &reqwest::Client, kind: Kind, name: &str) -> u16 {
    let (path, model) = match kind {
        Kind::Unmatched => ("/v1/chat/completions", format!("zzz-{name}")),
        Kind::UnknownRoute => ("/nowhere/chat/completions", format!("mock-{name}")),
        Kind::Unauthenticated => ("/v1/chat/completions", format!("secure-{name}")),
        Kind::Served => ("/v1/chat/completions", format!("mock-{name}")),
    };
    let mut req = http.post(gw.url(path)).json(&json!({
        "model": model,
        "messages": [{"role": "user", "content": "hi"}]
    }));
    if matches!(kind, Kind::Unauthenticated) && name.len() % 2 == 0 {
        req = req.bearer_auth(format!("sk-nobody-{name}"));
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let _ = resp.bytes().await;
    status
}

fn expected(kind: Kind) -> u16 {
    match kind {
        Kind::Unmatched | Kind::UnknownRoute => 404,
        // No credential or an unknown one: 401.
        Kind::Unauthenticated => 401,
        Kind::Served => 200,
    }
}

/// `count` requests of `kind`, each with its own model name (`len` bytes at least), over a
/// few keep-alive connections.
async fn flood(gw: &Arc<Gateway>, kind: Kind, count: usize, len: usize) {
    const WORKERS: usize = 8;
    let mut tasks = Vec::new();
    for w in 0..WORKERS {
        let gw = gw.clone();
        tasks.push(tokio::spawn(async move {
            let http = client();
            for i in (w..count).step_by(WORKERS) {
                let name = format!("{i:06}-{}", "x".repeat(len));
                let status = send(&gw, &http, kind, &name).await;
                assert_eq!(status, expected(kind), "request {i}");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_model_names_never_become_metric_labels() {
    let mock = Mock::start();
    let gw = Arc::new(Gateway::start(&config(&mock)));
    let http = client();
    // One request of each kind first: the series they are counted in exist from now on.
    for kind in [
        Kind::Unmatched,
        Kind::UnknownRoute,
        Kind::Unauthenticated,
        Kind::Served,
    ] {
        for name in ["warm-1", "warm-22"] {
            assert_eq!(send(&gw, &http, kind, name).await, expected(kind));
        }
    }
    let before = gw.metrics().await;
    let before_series = series(&before);
    let rss_before = rss_kib(gw.pid());

    // 10,000 distinct names, then 60 of 200 KB each.
    flood(&gw, Kind::Unmatched, 4000, 0).await;
    flood(&gw, Kind::Unauthenticated, 3000, 0).await;
    flood(&gw, Kind::UnknownRoute, 2000, 0).await;
    flood(&gw, Kind::Served, 1000, 0).await;
    for kind in [
        Kind::Unmatched,
        Kind::Unauthenticated,
        Kind::UnknownRoute,
        Kind::Served,
    ] {
        flood(&gw, kind, 15, 200 * 1024).await;
    }

    let after = gw.metrics().await;
    let after_series = series(&after);
    // A few of the new series, cut short (a label may hold a 200 KB name).
    let new: Vec<String> = after_series
        .iter()
        .filter(|s| !before_series.contains(s))
        .take(5)
        .map(|s| s.chars().take(300).collect())
        .collect();
    assert_eq!(
        after_series.len(),
        before_series.len(),
        "client model names created series, e.g. {new:?}"
    );
    assert!(
        !after.contains("zzz-") && !after.contains("secure-0") && !after.contains("mock-0"),
        "a client's model name is in /metrics"
    );
    assert!(
        after.len() < before.len() + 64 * 1024,
        "/metrics grew from {} to {} bytes",
        before.len(),
        after.len()
    );
    let rss_after = rss_kib(gw.pid());
    assert!(
        rss_after < rss_before + 64 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );

    // The requests were still counted, under labels from the config.
    let count = |labels: &[(&str, &str)]| metric_sum(&after, "tollgate_requests_total", labels);
    assert!(count(&[("route", "default"), ("model", "other"), ("status", "404")]) >= 4000.0);
    assert!(count(&[("route", "secure"), ("model", "secure-*")]) >= 3000.0);
    assert!(count(&[("model", "mock-*"), ("provider", "mock"), ("status", "200")]) >= 1000.0);

    // A normal request is served and counted under its rule's pattern.
    let served = |text: &str| {
        metric_sum(
            text,
            "tollgate_requests_total",
            &[
                ("route", "default"),
                ("provider", "mock"),
                ("model", "mock-*"),
                ("status", "200"),
            ],
        )
    };
    // Every request served so far (2 warm-ups, 1000 + 15 in floods) counted first: the last
    // ones may still be in their logging phase when `after` was read.
    let earlier = 2.0 + 1000.0 + 15.0;
    eventually("the flood's served requests counted", || async {
        served(&gw.metrics().await) >= earlier
    })
    .await;
    let resp = http
        .post(gw.url("/v1/chat/completions"))
        .json(&json!({"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert!(body["choices"][0]["message"]["content"].is_string());
    // The request is counted in its logging phase, just after the answer went out.
    let want = earlier + 1.0;
    eventually("the served request counted", || async {
        served(&gw.metrics().await) >= want
    })
    .await;
    // (`after` may have been read before the last flood requests were counted: at least.)
    let last = gw.metrics().await;
    assert!(
        metric_sum(
            &last,
            "tollgate_output_tokens_total",
            &[("model", "mock-*"), ("provider", "mock")]
        ) > 0.0
    );
}
