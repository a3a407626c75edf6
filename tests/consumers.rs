//! Consumers: credentials from bearer, header and query; 401 (no or unknown credential) and
//! 403 (a consumer not allowed); allowed lists; the
//! consumer's name in the access log and metrics; routes chosen by model across routes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use common::*;
use serde_json::{json, Value};

fn config(mock: &Mock) -> String {
    format!(
        r#"providers:
  - name: mock
    type: openai-compatible
    base_url: "{url}"
    api_keys: ["sk-provider"]
consumers:
  - name: alice
    credentials: ["sk-alice"]
  - name: bob
    credentials: ["sk-bob", "${{TOLLGATE_TEST_UNSET_CREDENTIAL}}"]
auth:
  sources: [bearer, "header:x-api-key", "query:api_key"]
routes:
  - name: open
    forward_headers: ["x-mock-*"]
    models:
      - model: "free-*"
        targets: [{{provider: mock}}]
  - name: private
    forward_headers: ["x-mock-*"]
    auth: {{required: true}}
    models:
      - model: "paid-*"
        targets: [{{provider: mock}}]
  - name: alice-only
    auth: {{required: true, allow: [alice]}}
    models:
      - model: "vip-*"
        targets: [{{provider: mock}}]
"#,
        url = mock.url()
    )
}

async fn call(
    gw: &Gateway,
    model: &str,
    auth: Option<(&str, &str)>,
    query: &str,
) -> (u16, Value, String) {
    let mut req = client()
        .post(gw.url(&format!("/v1/chat/completions{query}")))
        .json(&json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}));
    if let Some((k, v)) = auth {
        req = req.header(k, v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    (status, resp.json().await.unwrap(), id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_and_route_access() {
    let mock = Mock::start();
    let gw = Gateway::start(&config(&mock));

    // Open route: no credential needed, a known one is recorded, an unknown one is anonymous.
    assert_eq!(call(&gw, "free-1", None, "").await.0, 200);
    let (status, _, id) = call(&gw, "free-1", Some(("authorization", "Bearer sk-bob")), "").await;
    assert_eq!(status, 200);
    assert_eq!(gw.log_line(&id)["consumer"], "bob");
    let (status, _, id) = call(
        &gw,
        "free-1",
        Some(("authorization", "Bearer sk-nobody")),
        "",
    )
    .await;
    assert_eq!(status, 200);
    assert!(gw.log_line(&id)["consumer"].is_null());

    // Required: 401 without, 401 unknown, 200 from each source.
    let (status, body, _) = call(&gw, "paid-1", None, "").await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "missing_api_key");
    let (status, body, _) = call(&gw, "paid-1", Some(("x-api-key", "sk-wrong")), "").await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "invalid_api_key");
    for (auth, query) in [
        (Some(("authorization", "Bearer sk-alice")), ""),
        (Some(("x-api-key", "sk-alice")), ""),
        (None, "?api_key=sk-alice"),
    ] {
        let (status, _, id) = call(&gw, "paid-1", auth, query).await;
        assert_eq!(status, 200, "{auth:?} {query}");
        assert_eq!(gw.log_line(&id)["consumer"], "alice");
    }

    // Allowed list.
    assert_eq!(
        call(&gw, "vip-1", Some(("authorization", "Bearer sk-bob")), "")
            .await
            .0,
        403
    );
    assert_eq!(
        call(&gw, "vip-1", Some(("authorization", "Bearer sk-alice")), "")
            .await
            .0,
        200
    );

    // The client's credential never goes upstream; a spoofed identity header is ignored.
    let resp = client()
        .post(gw.url("/v1/chat/completions"))
        .header("authorization", "Bearer sk-bob")
        .header("x-tollgate-consumer", "alice")
        .header("x-mock-echo", "1")
        .json(&json!({"model": "paid-1", "messages": []}))
        .send()
        .await
        .unwrap();
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body["mock_echo"]["headers"]["authorization"],
        "Bearer sk-provider"
    );
    assert!(!body["mock_echo"].to_string().contains("sk-bob"));
    assert_eq!(gw.log_line(&id)["consumer"], "bob");

    let metrics = gw.metrics().await;
    assert!(
        metric_sum(
            &metrics,
            "tollgate_consumer_output_tokens_total",
            &[("consumer", "alice")]
        ) >= 24.0,
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("consumer"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        !gw.access_log_text().contains("sk-alice"),
        "credentials never logged"
    );
}
