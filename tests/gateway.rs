//! The gateway core end to end: mock-llm upstream, the gateway on run-time ports, real sockets.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use common::*;
use serde_json::{json, Value};

fn chat(model: &str, stream: bool) -> Value {
    json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "Say hello to the wörld"}]})
}

async fn post(gw: &Gateway, body: &Value, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = client().post(gw.url("/v1/chat/completions")).json(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

fn request_id(resp: &reqwest::Response) -> String {
    resp.headers()["x-request-id"].to_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_streaming_and_streaming_usage_match_upstream() {
    let mock = Mock::start();
    let gw = Gateway::start(&mock_provider(&mock.url(), ""));

    // Non-streaming: the usage the client sees is the usage the gateway logs.
    let resp = post(
        &gw,
        &chat("mock-a", false),
        &[
            ("x-mock-chunks", "5"),
            ("x-mock-cached-tokens", "2"),
            ("x-mock-reasoning-tokens", "3"),
        ],
    )
    .await;
    assert_eq!(resp.status(), 200);
    let id = request_id(&resp);
    let body: Value = resp.json().await.unwrap();
    let usage = &body["usage"];
    assert_eq!(usage["completion_tokens"], 8);
    let line = gw.log_line(&id);
    assert_eq!(line["input_tokens"], usage["prompt_tokens"]);
    assert_eq!(line["output_tokens"], usage["completion_tokens"]);
    assert_eq!(line["cached_tokens"], 2);
    assert_eq!(line["reasoning_tokens"], 3);
    assert_eq!(line["usage_estimated"], false);
    assert_eq!(line["status"], 200);
    assert_eq!(line["route"], "default");
    assert_eq!(line["provider"], "mock");
    let (input_ns, output_ns) = (usage["prompt_tokens"].as_u64().unwrap(), 8u64);

    // Streaming with usage asked by the client: the usage chunk reaches the client and the log.
    let mut body = chat("mock-a", true);
    body["stream_options"] = json!({"include_usage": true});
    let resp = post(&gw, &body, &[("x-mock-chunks", "6")]).await;
    let id = request_id(&resp);
    let text = resp.text().await.unwrap();
    let events = sse_data(&text);
    assert_eq!(events.last().unwrap(), "[DONE]");
    let usage_chunk: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(usage_chunk["usage"]["completion_tokens"], 6);
    let line = gw.log_line(&id);
    assert_eq!(line["input_tokens"], usage_chunk["usage"]["prompt_tokens"]);
    assert_eq!(line["output_tokens"], 6);
    assert!(line["ttft_ms"].as_f64().unwrap() > 0.0);
    let (input_s1, output_s1) = (
        usage_chunk["usage"]["prompt_tokens"].as_u64().unwrap(),
        6u64,
    );

    // Streaming without usage: the gateway asked for it, metered it, and hid it.
    let resp = post(&gw, &chat("mock-a", true), &[("x-mock-chunks", "7")]).await;
    let id = request_id(&resp);
    let text = resp.text().await.unwrap();
    for data in sse_data(&text) {
        if data != "[DONE]" {
            let v: Value = serde_json::from_str(&data).unwrap();
            assert!(
                v["usage"].is_null(),
                "usage leaked to a client that did not ask: {data}"
            );
            assert!(!v["choices"].as_array().unwrap().is_empty());
        }
    }
    let line = gw.log_line(&id);
    assert_eq!(line["output_tokens"], 7);
    assert_eq!(line["input_tokens"], input_s1);
    assert_eq!(line["usage_estimated"], false);

    // /metrics agrees with the sum of the three requests.
    let metrics = gw.metrics().await;
    let labels = [
        ("route", "default"),
        ("provider", "mock"),
        ("model", "mock-*"),
    ];
    assert_eq!(
        metric_sum(&metrics, "tollgate_input_tokens_total", &labels) as u64,
        input_ns + 2 * input_s1
    );
    assert_eq!(
        metric_sum(&metrics, "tollgate_output_tokens_total", &labels) as u64,
        output_ns + output_s1 + 7
    );
    assert_eq!(
        metric_sum(&metrics, "tollgate_requests_total", &labels) as u64,
        3
    );
    assert_eq!(
        metric_sum(&metrics, "tollgate_reasoning_tokens_total", &labels) as u64,
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_without_usage_is_estimated() {
    let mock = Mock::start();
    let gw = Gateway::start(&mock_provider(&mock.url(), ""));
    let resp = post(&gw, &chat("mock-a", true), &[("x-mock-no-usage", "1")]).await;
    let id = request_id(&resp);
    let text = resp.text().await.unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"));
    let line = gw.log_line(&id);
    assert_eq!(line["usage_estimated"], true);
    // "Hello wörld 世界 from mock 🚀 llm." by the documented estimate.
    assert_eq!(
        line["output_tokens"],
        tollgate::usage::estimate_tokens("Hello wörld 世界 from mock 🚀 llm.")
    );
    assert!(line["input_tokens"].as_u64().unwrap() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_mapping_rewrites_upstream_model() {
    let mock = Mock::start();
    let gw = Gateway::start(&mock_provider(&mock.url(), ""));
    let resp = post(&gw, &chat("mock-mapped", false), &[("x-mock-echo", "1")]).await;
    let id = request_id(&resp);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["mock_echo"]["body"]["model"], "upstream-model-x");
    assert_eq!(
        body["mock_echo"]["body"]["messages"],
        chat("x", false)["messages"]
    );
    let line = gw.log_line(&id);
    assert_eq!(line["model"], "mock-mapped");
    assert_eq!(line["upstream_model"], "upstream-model-x");

    // Streaming: mapped model upstream, include_usage added upstream, hidden from the client.
    let resp = post(&gw, &chat("mock-mapped", true), &[("x-mock-echo", "1")]).await;
    let text = resp.text().await.unwrap();
    let events = sse_data(&text);
    let echo: Value = serde_json::from_str(&events[0]).unwrap();
    assert_eq!(echo["mock_echo"]["body"]["model"], "upstream-model-x");
    assert_eq!(
        echo["mock_echo"]["body"]["stream_options"]["include_usage"],
        true
    );
    for data in &events[1..events.len() - 1] {
        let v: Value = serde_json::from_str(data).unwrap();
        assert_eq!(v["model"], "upstream-model-x");
        assert!(v["usage"].is_null());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_stay_where_they_belong() {
    let mock = Mock::start();
    let gw = Gateway::start(&mock_provider(&mock.url(), ""));
    let client_secret = "client-credential-5678";
    let headers = [
        ("authorization", "Bearer client-credential-5678"),
        ("x-api-key", client_secret),
        ("api-key", client_secret),
    ];
    let resp = post(
        &gw,
        &chat("mock-a", false),
        &[&headers[..], &[("x-mock-echo", "1")]].concat(),
    )
    .await;
    let body: Value = resp.json().await.unwrap();
    let seen = &body["mock_echo"]["headers"];
    assert_eq!(seen["authorization"], format!("Bearer {PROVIDER_KEY}"));
    assert!(
        !seen.to_string().contains(client_secret),
        "client credential forwarded: {seen}"
    );

    // Without echo, nothing the client or an operator sees holds the provider key.
    let mut seen_by_client = String::new();
    for (body, extra) in [
        (chat("mock-a", false), vec![]),
        (chat("mock-a", true), vec![]),
        (chat("mock-a", false), vec![("x-mock-status", "401")]),
        (chat("mock-a", false), vec![("x-mock-status", "500")]),
    ] {
        let resp = post(&gw, &body, &[&headers[..], &extra[..]].concat()).await;
        seen_by_client.push_str(&format!("{:?}", resp.headers()));
        seen_by_client.push_str(&resp.text().await.unwrap());
    }
    let resp = post(&gw, &chat("mock-a", false), &[]).await;
    let last = request_id(&resp);
    gw.log_line(&last);
    let metrics = gw.metrics().await;
    for (what, text) in [
        ("responses", seen_by_client),
        ("access log", gw.access_log_text()),
        ("metrics", metrics),
    ] {
        assert!(!text.contains(PROVIDER_KEY), "provider key in {what}");
        assert!(
            !text.contains("provider-secret"),
            "part of the provider key in {what}"
        );
    }
}

fn big_body(model: &str, size: usize) -> Vec<u8> {
    let filler: String = "lorem ipsum dolor sit amet, wörld 世界 "
        .chars()
        .cycle()
        .take(size)
        .collect();
    serde_json::to_vec(&json!({"model": model, "messages": [{"role": "user", "content": filler}]}))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_mib_body_arrives_intact() {
    let mock = Mock::start();
    let gw = Gateway::start(&mock_provider(&mock.url(), ""));

    // Unchanged body: byte for byte.
    let body = big_body("mock-a", 4 * 1024 * 1024);
    assert!(body.len() > 4 * 1024 * 1024);
    let resp = client()
        .post(gw.url("/v1/chat/completions"))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["x-mock-body-len"],
        body.len().to_string().as_str()
    );
    assert_eq!(resp.headers()["x-mock-body-fnv64"], fnv64(&body).as_str());

    // Rewritten body: exactly the client's bytes with the model swapped.
    let body = big_body("mock-mapped", 4 * 1024 * 1024);
    let text = String::from_utf8(body.clone()).unwrap();
    let expected = text.replacen(
        "\"model\":\"mock-mapped\"",
        "\"model\":\"upstream-model-x\"",
        1,
    );
    let resp = client()
        .post(gw.url("/v1/chat/completions"))
        .body(body)
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

    // Chunked upload (no Content-Length) of a big body.
    let body = big_body("mock-a", 5 * 1024 * 1024);
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        body.chunks(100_000).map(|c| Ok(c.to_vec())).collect();
    let stream = futures_util::stream::iter(chunks);
    let resp = client()
        .post(gw.url("/v1/chat/completions"))
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-mock-body-fnv64"], fnv64(&body).as_str());
}

async fn expect_error(resp: reqwest::Response, status: u16, code: &str) -> String {
    assert_eq!(resp.status(), status);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["type"].is_string());
    body["error"]["message"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_and_upstream_errors() {
    let mock = Mock::start();
    // Nothing listens there: connections are refused.
    let closed = closed_port();
    let extra = format!(
        r#"    timeouts: {{read: 300ms}}
  - name: dead
    type: openai-compatible
    base_url: "http://127.0.0.1:{closed}/v1"
    api_keys: ["k"]
  - name: keyless
    type: openai
    api_keys: ["${{TOLLGATE_TEST_MISSING_KEY}}"]"#
    );
    let body = mock_provider(&mock.url(), &extra)
        + r#"      - model: "dead-*"
        targets: [{provider: dead}]
      - model: "keyless-*"
        targets: [{provider: keyless}]
limits:
  max_body_bytes: 100000
"#;
    let gw = Gateway::start(&body);
    let c = client();
    let url = gw.url("/v1/chat/completions");

    expect_error(
        c.post(&url).body("{\"model\":").send().await.unwrap(),
        400,
        "invalid_json",
    )
    .await;
    expect_error(
        c.post(&url).body("[1,2]").send().await.unwrap(),
        400,
        "invalid_body",
    )
    .await;
    expect_error(
        c.post(&url)
            .json(&json!({"messages": []}))
            .send()
            .await
            .unwrap(),
        400,
        "missing_model",
    )
    .await;
    let msg = expect_error(
        post(&gw, &chat("nobody-serves-this", false), &[]).await,
        404,
        "model_not_found",
    )
    .await;
    assert!(msg.contains("nobody-serves-this"));
    expect_error(
        c.post(gw.url("/v2/chat"))
            .json(&chat("mock-a", false))
            .send()
            .await
            .unwrap(),
        404,
        "not_found",
    )
    .await;
    expect_error(c.get(&url).send().await.unwrap(), 405, "method_not_allowed").await;
    let msg = expect_error(
        c.post(&url)
            .body(big_body("mock-a", 200_000))
            .send()
            .await
            .unwrap(),
        413,
        "request_too_large",
    )
    .await;
    assert!(msg.contains("100000"));
    let msg = expect_error(
        post(&gw, &chat("keyless-1", false), &[]).await,
        503,
        "provider_key_missing",
    )
    .await;
    assert!(
        msg.contains("TOLLGATE_TEST_MISSING_KEY") && msg.contains("keyless"),
        "{msg}"
    );
    let msg = expect_error(
        post(&gw, &chat("dead-1", false), &[]).await,
        502,
        "upstream_connect_error",
    )
    .await;
    assert!(msg.contains("dead"), "{msg}");
    let msg = expect_error(
        post(&gw, &chat("mock-a", false), &[("x-mock-delay-ms", "3000")]).await,
        504,
        "upstream_timeout",
    )
    .await;
    assert!(msg.contains("mock"), "{msg}");
    // Upstream errors pass through with their own status and body.
    let resp = post(&gw, &chat("mock-a", false), &[("x-mock-status", "429")]).await;
    assert_eq!(resp.status(), 429);

    // Still serving, on a fresh connection and after every error above.
    let resp = post(&gw, &chat("mock-a", false), &[]).await;
    assert_eq!(resp.status(), 200);
    let models: Value = c
        .get(gw.url("/v1/models"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"mock-mapped"), "{ids:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_cut_midway_ends_with_an_error_event() {
    let mock = Mock::start();
    let gw = Gateway::start(&mock_provider(&mock.url(), ""));
    let mut resp = post(
        &gw,
        &chat("mock-a", true),
        &[("x-mock-drop-after", "3"), ("x-mock-chunks", "8")],
    )
    .await;
    assert_eq!(resp.status(), 200);
    let id = request_id(&resp);
    let mut text = Vec::new();
    let mut failed = false;
    loop {
        match resp.chunk().await {
            Ok(Some(c)) => text.extend_from_slice(&c),
            Ok(None) => break,
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    assert!(failed, "a cut stream must not end cleanly");
    let events = sse_data(&String::from_utf8(text).unwrap());
    assert!(!events.iter().any(|e| e == "[DONE]"));
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert!(last["error"]["message"].is_string(), "{last}");
    // The mock cuts after 3 chunks; the client saw those it managed to send (3, or fewer
    // when the abort overtook the last write).
    let content = delta_text(&events);
    assert!(
        !content.is_empty() && "Hello wörld 世界".starts_with(&content),
        "{content}"
    );
    let line = gw.log_line(&id);
    // No usage chunk came: the delivered text is metered by the documented estimate.
    assert_eq!(line["usage_estimated"], true, "{line}");
    assert_eq!(
        line["output_tokens"],
        tollgate::usage::estimate_tokens(&content),
        "{line}"
    );
    assert_eq!(line["error"], "upstream_error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_and_embeddings_are_metered() {
    let mock = Mock::start();
    let gw = Gateway::start(&mock_provider(&mock.url(), ""));
    let c = client();
    let resp = c
        .post(gw.url("/v1/embeddings"))
        .json(&json!({"model": "mock-e", "input": ["one two three four", "five"]}))
        .send()
        .await
        .unwrap();
    let id = request_id(&resp);
    let body: Value = resp.json().await.unwrap();
    let line = gw.log_line(&id);
    assert_eq!(line["input_tokens"], body["usage"]["prompt_tokens"]);
    assert_eq!(line["endpoint"], "embeddings");

    let resp = c
        .post(gw.url("/v1/completions"))
        .json(&json!({"model": "mock-c", "prompt": "Once upon", "stream": true}))
        .send()
        .await
        .unwrap();
    let id = request_id(&resp);
    let text = resp.text().await.unwrap();
    assert!(sse_data(&text).iter().all(|d| !d.contains("\"usage\":{")));
    let line = gw.log_line(&id);
    assert_eq!(line["output_tokens"], 8);
    assert_eq!(line["usage_estimated"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_key_from_the_environment_reaches_the_provider() {
    let mock = Mock::start();
    let body =
        mock_provider(&mock.url(), "").replace(PROVIDER_KEY, "${TOLLGATE_TEST_PROVIDER_KEY}");
    let gw = Gateway::start_full(
        &body,
        None,
        &[("TOLLGATE_TEST_PROVIDER_KEY", "sk-from-env-42")],
    );
    let resp = post(&gw, &chat("mock-a", false), &[("x-mock-echo", "1")]).await;
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body["mock_echo"]["headers"]["authorization"],
        "Bearer sk-from-env-42"
    );
    assert_eq!(body["mock_echo"]["path"], "/v1/chat/completions");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overhead_excludes_time_waiting_on_the_provider() {
    let mock = Mock::start();
    let gw = Gateway::start(&mock_provider(&mock.url(), ""));
    let resp = post(&gw, &chat("mock-a", false), &[("x-mock-delay-ms", "300")]).await;
    let id = request_id(&resp);
    resp.text().await.unwrap();
    let line = gw.log_line(&id);
    let (duration, overhead) = (
        line["duration_ms"].as_f64().unwrap(),
        line["overhead_ms"].as_f64().unwrap(),
    );
    assert!(duration >= 300.0, "{line}");
    assert!(
        overhead >= 0.0 && overhead < duration - 250.0,
        "the provider's 300 ms are not overhead: {line}"
    );
    let metrics = gw.metrics().await;
    assert_eq!(
        metric_sum(
            &metrics,
            "tollgate_gateway_overhead_seconds_count",
            &[("provider", "mock")]
        ),
        1.0
    );
    assert!(metric_sum(&metrics, "process_resident_memory_bytes", &[]) > 0.0);
    assert!(metrics.contains("tollgate_active_streams 0"));
}
