//! OpenAI's Responses API (`POST /v1/responses`): passed through to providers that have it
//! (OpenAI-compatible with `responses_api: true`, Azure), translated through chat completions
//! for the others (Anthropic, chat-only OpenAI-compatible); the official SDK against both;
//! failover before the first byte of a stream; the usage in the access log.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use common::*;
use serde_json::{json, Value};

fn config(mock: &Mock) -> String {
    format!(
        r#"providers:
  - name: native
    type: openai-compatible
    base_url: "{url}"
    responses_api: true
    api_keys:
      - {{name: one, key: sk-one}}
      - {{name: two, key: sk-two}}
  - name: other
    type: openai-compatible
    base_url: "{url}"
    responses_api: true
    api_keys:
      - {{name: other, key: sk-other}}
  - name: chatonly
    type: openai-compatible
    base_url: "{url}"
    api_keys: ["sk-chat"]
  - name: claude
    type: anthropic
    base_url: "{url}"
    api_keys: ["sk-ant"]
  - name: az
    type: azure
    base_url: "http://{addr}"
    api_keys: ["sk-az"]
consumers:
  - name: alice
    credentials: ["sk-alice"]
  - name: bob
    credentials: ["sk-bob"]
routes:
  - name: private
    path_prefix: /private/v1
    auth: {{required: true}}
    forward_headers: ["x-mock-*"]
    models:
      - model: "*"
        targets: [{{provider: other}}]
  - name: default
    forward_headers: ["x-mock-*"]
    models:
      - model: "mock-*"
        targets: [{{provider: native}}]
      - model: "chat-*"
        targets: [{{provider: chatonly}}]
      - model: "claude-*"
        targets: [{{provider: claude}}]
      - model: "az-*"
        targets: [{{provider: az}}]
      - model: "other-*"
        targets: [{{provider: other}}]
"#,
        url = mock.url(),
        addr = mock.addr
    )
}

/// The events of an SSE body: (event name, data).
fn events(text: &str) -> Vec<(String, Value)> {
    text.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let mut name = String::new();
            let mut data = String::new();
            for line in e.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = n.to_string();
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data.push_str(d);
                }
            }
            (name, serde_json::from_str(&data).unwrap_or(Value::Null))
        })
        .collect()
}

/// POST a Responses request; (status, request id, body text).
async fn post(gw: &Gateway, body: Value, headers: &[(&str, &str)]) -> (u16, String, String) {
    let mut req = client().post(gw.url("/v1/responses")).json(&body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    (status, id, resp.text().await.unwrap())
}

/// The official SDK: whole answers, streams and function calling, natively (OpenAI-compatible
/// and Azure) and translated (Anthropic, chat-only OpenAI-compatible).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_sdk_native_and_translated() {
    let Some(python) = openai_python() else {
        return;
    };
    let mock = Mock::start();
    let gw = Gateway::start(&config(&mock));
    let models = "mock-a+tools,az-a+tools,claude-a+tools,chat-a".to_string();
    let script = "openai_responses.py";
    let out = tokio::task::spawn_blocking({
        let url = gw.url("/v1");
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/sdk")
            .join(script);
        move || {
            std::process::Command::new(python)
                .arg(script)
                .arg(url)
                .arg(models)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        gw.stderr()
    );
    let stats = mock_stats(&mock).await;
    let paths = &stats["by_path"];
    assert!(paths["/v1/responses"].as_u64().unwrap() > 0, "{stats}");
    assert!(paths["/openai/responses"].as_u64().unwrap() > 0, "{stats}");
    assert!(paths["/v1/messages"].as_u64().unwrap() > 0, "{stats}");
    assert!(
        paths["/v1/chat/completions"].as_u64().unwrap() > 0,
        "{stats}"
    );
}

/// The usage the access log records is the one the provider reported, streamed or not,
/// native or translated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_usage_is_the_reported_usage() {
    let mock = Mock::start();
    let gw = Gateway::start(&config(&mock));
    let headers = [
        ("x-mock-chunks", "13"),
        ("x-mock-cached-tokens", "2"),
        ("x-mock-reasoning-tokens", "5"),
    ];
    for model in ["mock-a", "claude-a", "chat-a"] {
        for stream in [false, true] {
            let body = json!({"model": model, "input": "count my tokens please", "stream": stream});
            let (status, id, text) = post(&gw, body, &headers).await;
            assert_eq!(status, 200, "{model} {stream}: {text}");
            let response = if stream {
                let evs = events(&text);
                let (name, last) = evs.last().unwrap();
                assert_eq!(name, "response.completed", "{model}: {text}");
                last["response"].clone()
            } else {
                serde_json::from_str(&text).unwrap()
            };
            let usage = &response["usage"];
            let line = gw.log_line(&id);
            let what = format!("{model} stream={stream}: {usage} vs {line}");
            assert_eq!(line["endpoint"], "responses", "{what}");
            assert_eq!(line["input_tokens"], usage["input_tokens"], "{what}");
            assert_eq!(line["output_tokens"], usage["output_tokens"], "{what}");
            assert_eq!(line["usage_estimated"], false, "{what}");
            if model == "mock-a" {
                // The native answer is the mock's own: 13 tokens + 5 reasoning.
                assert_eq!(usage["output_tokens"], 18, "{what}");
                assert_eq!(line["cached_tokens"], 2, "{what}");
                assert_eq!(line["reasoning_tokens"], 5, "{what}");
            }
        }
    }
}

/// A 429 or 503 before the first byte of a Responses stream moves to the provider's next key;
/// the client sees one complete stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_fails_over_to_the_next_key_before_the_first_byte() {
    let mock = Mock::start();
    let gw = Gateway::start(&config(&mock));
    for status in [429, 503] {
        client()
            .delete(format!("http://{}/mock/faults", mock.addr))
            .send()
            .await
            .unwrap();
        let rule = json!({"key": "sk-one", "status": status, "count": 1});
        let resp = client()
            .post(format!("http://{}/mock/faults", mock.addr))
            .json(&rule)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        // Until a request meets the faulty key first (the key order is the pool's).
        let mut failed_over = false;
        for _ in 0..40 {
            let body = json!({"model": "mock-a", "input": "hi", "stream": true});
            let (code, id, text) = post(&gw, body, &[]).await;
            assert_eq!(code, 200, "{text}");
            let evs = events(&text);
            assert_eq!(evs[0].0, "response.created", "{text}");
            assert_eq!(evs.last().unwrap().0, "response.completed", "{text}");
            let line = gw.log_line(&id);
            if line["retries"] == 1 {
                assert_eq!(line["key"], "two", "{line}");
                assert_eq!(line["output_tokens"], 8, "{line}");
                failed_over = true;
                break;
            }
        }
        assert!(failed_over, "no request met the {status} of key one");
    }
}

/// What needs the provider's own Responses API is refused, in OpenAI's error shape, when the
/// request is translated; the same field goes through to a provider that has the API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untranslatable_fields_are_refused_by_name() {
    let mock = Mock::start();
    let gw = Gateway::start(&config(&mock));
    let cases = [
        (
            json!({"previous_response_id": "resp_1"}),
            "previous_response_id",
        ),
        (json!({"tools": [{"type": "web_search"}]}), "web_search"),
        (json!({"background": true}), "background"),
    ];
    for (extra, field) in cases {
        let mut body = json!({"model": "claude-a", "input": "hi"});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let (status, _, text) = post(&gw, body.clone(), &[]).await;
        assert_eq!(status, 400, "{text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(field),
            "{v}"
        );
        body["model"] = json!("mock-a");
        let (status, _, text) = post(&gw, body, &[]).await;
        assert_eq!(status, 200, "native {field}: {text}");
    }
}

/// Calls on a stored response go to the route's first provider with a Responses API, with
/// the client's method, path and query; no usage is metered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_responses_go_to_the_first_responses_provider() {
    let mock = Mock::start();
    let gw = Gateway::start(&config(&mock));
    let cases = [
        ("GET", "/v1/responses/resp_7", None),
        (
            "GET",
            "/v1/responses/resp_7/input_items",
            Some("limit=1&order=asc"),
        ),
        ("DELETE", "/v1/responses/resp_7", None),
        ("POST", "/v1/responses/resp_7/cancel", None),
    ];
    for (method, path, query) in cases {
        let url = match query {
            Some(q) => gw.url(&format!("{path}?{q}")),
            None => gw.url(path),
        };
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let resp = client()
            .request(method.clone(), url)
            .header("x-mock-echo", "1")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{method} {path}");
        let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
        let body: Value = resp.json().await.unwrap();
        let echo = &body["mock_echo"];
        assert_eq!(echo["method"], method.as_str(), "{body}");
        assert_eq!(echo["path"], path, "{body}");
        assert_eq!(echo["query"].as_str(), query, "{body}");
        let auth = echo["headers"]["authorization"].as_str().unwrap();
        assert!(auth == "Bearer sk-one" || auth == "Bearer sk-two", "{auth}");
        let line = gw.log_line(&id);
        assert_eq!(line["endpoint"], "responses", "{line}");
        assert_eq!(line["provider"], "native", "{line}");
        assert_eq!(
            (
                line["input_tokens"].as_u64(),
                line["output_tokens"].as_u64()
            ),
            (Some(0), Some(0)),
            "{line}"
        );
    }
    let resp = client()
        .put(gw.url("/v1/responses/resp_7"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
}

/// A response made through a provider (and key) other than the route's first is found
/// there: the gateway remembers which made each response it passed through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_responses_go_where_they_were_made() {
    let mock = Mock::start();
    let gw = Gateway::start(&config(&mock));
    for stream in [false, true] {
        let body = json!({"model": "other-a", "input": "hi", "stream": stream});
        let (status, _, text) = post(&gw, body, &[]).await;
        assert_eq!(status, 200, "{text}");
        let id = if stream {
            events(&text)[0].1["response"]["id"]
                .as_str()
                .unwrap()
                .to_string()
        } else {
            let v: Value = serde_json::from_str(&text).unwrap();
            v["id"].as_str().unwrap().to_string()
        };
        for path in [
            format!("/v1/responses/{id}"),
            format!("/v1/responses/{id}/input_items"),
        ] {
            let resp = client()
                .get(gw.url(&path))
                .header("x-mock-echo", "1")
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
            let body: Value = resp.json().await.unwrap();
            let echo = &body["mock_echo"];
            assert_eq!(echo["path"], path.as_str(), "{body}");
            assert_eq!(
                echo["headers"]["authorization"], "Bearer sk-other",
                "{body}"
            );
        }
    }
}

/// Which provider, key and consumer made a response outlives the process (`kill -9`, then a
/// new start on the same state directory); another consumer's response is not found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_responses_outlive_a_restart_and_stay_their_consumers() {
    let mock = Mock::start();
    let mut gw = Gateway::start(&config(&mock));
    let resp = client()
        .post(gw.url("/private/v1/responses"))
        .bearer_auth("sk-alice")
        .json(&json!({"model": "m", "input": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let id = resp.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let get = |gw: &Gateway, who: &str| {
        let req = client()
            .get(gw.url(&format!("/private/v1/responses/{id}")))
            .bearer_auth(who)
            .header("x-mock-echo", "1");
        async move {
            let resp = req.send().await.unwrap();
            (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
        }
    };
    let (status, body) = get(&gw, "sk-alice").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["mock_echo"]["headers"]["authorization"],
        "Bearer sk-other"
    );
    let (status, body) = get(&gw, "sk-bob").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found")),
        "{body}"
    );
    gw.signal_and_wait("-KILL");
    gw.respawn();
    let (status, body) = get(&gw, "sk-alice").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["mock_echo"]["headers"]["authorization"],
        "Bearer sk-other"
    );
    let (status, _) = get(&gw, "sk-bob").await;
    assert_eq!(status, 404);
}
