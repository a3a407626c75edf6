//! Provider protocols end to end through the gateway against mock-llm: Anthropic, Gemini and
//! Azure upstreams for OpenAI clients, Anthropic-format clients, and every preset's URL and
//! auth header.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use common::*;
use serde_json::{json, Value};

fn config(mock: &Mock) -> String {
    let base = format!("http://{}", mock.addr);
    format!(
        r#"providers:
  - name: claude
    type: anthropic
    base_url: "{base}/v1"
    api_keys: ["sk-ant-test"]
    model_mapping: {{claude-x: claude-upstream}}
  - name: gem
    type: gemini
    base_url: "{base}"
    api_keys: ["g-key-test"]
  - name: az
    type: azure
    base_url: "{base}"
    api_version: "2024-10-21"
    api_keys: ["az-key-test"]
    model_mapping: {{az-gpt: my-deployment}}
  - name: oai
    type: openai-compatible
    base_url: "{base}/v1"
    api_keys: ["sk-oai-test"]
routes:
  - name: default
    forward_headers: ["x-mock-*"]
    models:
      - model: "claude-*"
        targets: [{{provider: claude}}]
      - model: "gemini-*"
        targets: [{{provider: gem}}]
      - model: "az-*"
        targets: [{{provider: az}}]
      - model: "*"
        targets: [{{provider: oai}}]
"#
    )
}

async fn chat(gw: &Gateway, body: Value, headers: &[(&str, &str)]) -> (u16, String, String) {
    let mut req = client().post(gw.url("/v1/chat/completions")).json(&body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    (status, id, resp.text().await.unwrap())
}

fn tools() -> Value {
    json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}}])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_upstream_for_openai_clients() {
    let mock = Mock::start();
    let gw = Gateway::start(&config(&mock));

    // Non-streaming: translated request (system, max_tokens default, key headers) and response.
    let body = json!({"model": "claude-x", "messages": [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}]});
    let (status, id, text) = chat(
        &gw,
        body,
        &[
            ("x-mock-echo", "1"),
            ("authorization", "Bearer client-secret"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "Hello wörld 世界 from mock 🚀 llm."
    );
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    let line = gw.log_line(&id);
    assert_eq!(line["input_tokens"], v["usage"]["prompt_tokens"]);
    assert_eq!(line["output_tokens"], 8);
    assert_eq!(line["upstream_model"], "claude-upstream");

    // What Anthropic received.
    let stats: Value = client()
        .get(format!("http://{}/mock/stats", mock.addr))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["by_key"]["sk-ant-test"], 1);
    assert_eq!(stats["by_path"]["/v1/messages"], 1);
    assert!(stats["by_key"].get("client-secret").is_none());

    // Streaming, with usage asked: OpenAI chunks, a usage chunk, [DONE].
    let body = json!({"model": "claude-x", "stream": true, "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": "Hello"}]});
    let (status, id, text) = chat(&gw, body, &[("x-mock-chunks", "5")]).await;
    assert_eq!(status, 200);
    let events = sse_data(&text);
    assert_eq!(events.last().unwrap(), "[DONE]");
    let content = delta_text(&events);
    assert_eq!(content, "Hello wörld 世界 from mock");
    let usage: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(usage["usage"]["completion_tokens"], 5);
    let line = gw.log_line(&id);
    assert_eq!(line["output_tokens"], 5);
    assert_eq!(line["input_tokens"], usage["usage"]["prompt_tokens"]);

    // Tool calls, non-streaming and streaming.
    let body = json!({"model": "claude-x", "tools": tools(), "messages": [{"role": "user", "content": "Weather in Paris?"}]});
    let (_, _, text) = chat(&gw, body.clone(), &[("x-mock-tool-call", "get_weather")]).await;
    let v: Value = serde_json::from_str(&text).unwrap();
    let call = &v["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather");
    assert_eq!(
        serde_json::from_str::<Value>(call["function"]["arguments"].as_str().unwrap()).unwrap(),
        json!({"location": "Paris"})
    );
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    let mut streaming = body.clone();
    streaming["stream"] = json!(true);
    let (_, _, text) = chat(&gw, streaming, &[("x-mock-tool-call", "get_weather")]).await;
    let args: String = sse_data(&text)
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&args).unwrap(),
        json!({"location": "Paris"})
    );

    // The follow-up with the tool result is translated back (tool_use / tool_result blocks).
    let follow = json!({"model": "claude-x", "tools": tools(), "messages": [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "toolu_1", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"location\":\"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "Sunny, 21 C"}]});
    let (status, _, text) = chat(&gw, follow.clone(), &[]).await;
    assert_eq!(status, 200, "{text}");
    let with_result: Value = serde_json::from_str(&text).unwrap();
    // The mock counts the text of tool_result blocks as prompt: drop the result and the
    // prompt shrinks by exactly that message (ceil(11/4) + 3 tokens).
    let mut without = follow;
    without["messages"].as_array_mut().unwrap().pop();
    without["messages"].as_array_mut().unwrap().pop();
    let (_, _, text) = chat(&gw, without, &[]).await;
    let v: Value = serde_json::from_str(&text).unwrap();
    let (a, b) = (
        with_result["usage"]["prompt_tokens"].as_u64().unwrap(),
        v["usage"]["prompt_tokens"].as_u64().unwrap(),
    );
    assert!(
        a > b,
        "tool_use/tool_result reached the provider: {a} vs {b}"
    );

    // Provider errors come back in OpenAI's shape.
    let (status, _, text) = chat(
        &gw,
        json!({"model": "claude-x", "messages": [{"role": "user", "content": "x"}]}),
        &[("x-mock-status", "400")],
    )
    .await;
    assert_eq!(status, 400);
    let v: Value = serde_json::from_str(&text).unwrap();
    assert!(v["error"]["message"].is_string(), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_and_azure_upstreams() {
    let mock = Mock::start();
    let gw = Gateway::start(&config(&mock));
    let (status, id, text) = chat(
        &gw,
        json!({"model": "gemini-2.0-flash", "messages": [{"role": "user", "content": "Hello"}]}),
        &[],
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "Hello wörld 世界 from mock 🚀 llm."
    );
    let line = gw.log_line(&id);
    assert_eq!(line["output_tokens"], 8);
    assert_eq!(line["input_tokens"], v["usage"]["prompt_tokens"]);

    let body = json!({"model": "gemini-2.0-flash", "stream": true, "messages": [{"role": "user", "content": "Hello"}]});
    let (_, id, text) = chat(
        &gw,
        body,
        &[("x-mock-chunks", "4"), ("x-mock-reasoning-tokens", "2")],
    )
    .await;
    let events = sse_data(&text);
    assert_eq!(events.last().unwrap(), "[DONE]");
    assert!(
        events.iter().all(|e| !e.contains("\"usage\":{")),
        "no usage chunk unless asked"
    );
    let line = gw.log_line(&id);
    assert_eq!(line["output_tokens"], 6);
    assert_eq!(line["reasoning_tokens"], 2);

    let resp = client()
        .post(gw.url("/v1/embeddings"))
        .json(&json!({"model": "gemini-embedding-001", "input": ["one", "two"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    let stats: Value = client()
        .get(format!("http://{}/mock/stats", mock.addr))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["by_key"]["g-key-test"], 3);
    assert_eq!(
        stats["by_path"]["/v1beta/models/gemini-embedding-001:batchEmbedContents"],
        1
    );

    // Azure: deployment path, api-version, api-key header.
    let (status, _, text) = chat(
        &gw,
        json!({"model": "az-gpt", "messages": [{"role": "user", "content": "Hello"}]}),
        &[("x-mock-echo", "1")],
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    let echo = &v["mock_echo"];
    assert_eq!(
        echo["path"],
        "/openai/deployments/my-deployment/chat/completions"
    );
    assert_eq!(echo["query"], "api-version=2024-10-21");
    assert_eq!(echo["headers"]["api-key"], "az-key-test");
    assert!(echo["headers"].get("authorization").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_clients_reach_any_provider() {
    let mock = Mock::start();
    let gw = Gateway::start(&config(&mock));
    let messages = |model: &str, stream: bool| {
        json!({"model": model, "max_tokens": 100, "stream": stream, "system": "Be brief.",
            "messages": [{"role": "user", "content": [{"type": "text", "text": "Hello"}]}]})
    };
    let post = |body: Value| {
        client()
            .post(gw.url("/v1/messages"))
            .header("x-api-key", "client-key")
            .header("anthropic-version", "2023-06-01")
            .json(&body)
            .send()
    };

    // To an OpenAI-protocol provider, not streaming.
    let resp = post(messages("gpt-4o", false)).await.unwrap();
    assert_eq!(resp.status(), 200);
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["type"], "message");
    assert_eq!(
        v["content"][0]["text"],
        "Hello wörld 世界 from mock 🚀 llm."
    );
    assert_eq!(v["usage"]["output_tokens"], 8);
    assert_eq!(gw.log_line(&id)["output_tokens"], 8);

    // Streaming: a valid Anthropic event sequence with the right usage.
    let resp = post(messages("gpt-4o", true)).await.unwrap();
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let text = resp.text().await.unwrap();
    let kinds: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("event: ").map(str::to_string))
        .collect();
    assert_eq!(kinds.first().map(String::as_str), Some("message_start"));
    assert_eq!(kinds.last().map(String::as_str), Some("message_stop"));
    assert!(kinds.iter().any(|k| k == "content_block_delta"));
    let delta: Value = sse_data(&text)
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .find(|v| v["type"] == "message_delta")
        .unwrap();
    assert_eq!(delta["usage"]["output_tokens"], 8);
    let line = gw.log_line(&id);
    assert_eq!(line["output_tokens"], 8);
    assert_eq!(line["endpoint"], "messages");

    // To Anthropic itself: native, the provider key replaces the client's.
    let resp = post(messages("claude-x", true)).await.unwrap();
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let text = resp.text().await.unwrap();
    assert!(text.contains("event: message_stop"), "{text}");
    assert_eq!(gw.log_line(&id)["output_tokens"], 8);
    let stats: Value = client()
        .get(format!("http://{}/mock/stats", mock.addr))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(stats["by_key"].get("client-key").is_none());

    // Errors in Anthropic's shape.
    let resp = client()
        .post(gw.url("/v1/messages"))
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "invalid_request_error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_token_counting_goes_to_anthropic_targets_or_is_estimated() {
    let mock = Mock::start();
    let gw = Gateway::start(&config(&mock));
    let body =
        json!({"model": "claude-x", "messages": [{"role": "user", "content": "Count me, please"}]});
    let count = |body: Value| {
        let gw = &gw;
        async move {
            let resp = client()
                .post(gw.url("/v1/messages/count_tokens"))
                .header("anthropic-version", "2023-06-01")
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            let estimate = resp.headers().get("x-tollgate-token-count").cloned();
            let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
            (status, estimate, id, resp.json::<Value>().await.unwrap())
        }
    };
    // An Anthropic target: the mock counts (its rule: ceil(chars / 4) + 3 per message).
    let (status, estimate, id, v) = count(body.clone()).await;
    assert_eq!((status, estimate), (200, None), "{v}");
    assert_eq!(v["input_tokens"], 4 + 3, "{v}");
    let stats = mock_stats(&mock).await;
    assert_eq!(stats["by_path"]["/v1/messages/count_tokens"], 1, "{stats}");
    assert_eq!(
        stats["by_key"]["sk-ant-test"], 1,
        "the Anthropic key: {stats}"
    );
    let line = gw.log_line(&id);
    assert_eq!(line["endpoint"], "count_tokens", "{line}");
    assert_eq!(line["provider"], "claude", "{line}");
    assert_eq!(
        (
            line["input_tokens"].as_u64(),
            line["output_tokens"].as_u64()
        ),
        (Some(0), Some(0)),
        "counting uses no tokens: {line}"
    );
    // No Anthropic target: the gateway's estimate, said so, and no upstream request.
    let mut other = body.clone();
    other["model"] = json!("gpt-x");
    let (status, estimate, _, v) = count(other).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(estimate.unwrap(), "estimate");
    assert!(v["input_tokens"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(mock_stats(&mock).await["requests_total"], 1);
    // The official SDK, both ways.
    if let Some(python) = openai_python() {
        run_sdk_script(python, "anthropic_count_tokens.py", gw.url("")).await;
    }
}
