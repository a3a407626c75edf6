//! Content policies, black box: PII masked before the provider (the mock echoes what it
//! got) and restored in whole and streamed answers (the mock parrots the user's text back in
//! small chunks, so placeholders arrive split), `mode: block`, input deny rules refused
//! before anything goes upstream (OpenAI and Anthropic error shapes), output deny rules
//! ending a stream with a content filter finish and an error event, a whole answer withheld,
//! the access log and metrics, and the official openai SDK reading a stopped stream.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

fn config(mock: &Mock) -> String {
    let url = mock.url();
    let route = |name: &str, prefix: &str, extra: &str| {
        format!(
            "  - name: {name}\n    path_prefix: {prefix}\n    forward_headers: [\"x-mock-*\"]\n    models:\n      - model: \"*\"\n        targets: [{{provider: mock}}]\n{extra}"
        )
    };
    let masked = route(
        "masked",
        "/masked/v1",
        "    pii: {mode: mask}
    deny:
      input: {keywords: [\"违禁\", \"Forbidden\"], case_insensitive: true}
      output: {keywords: [\"危险\"], regex: [\"launch-code-[0-9]+\"]}
      holdback: 16
",
    );
    let only = route("only", "/only/v1", "    pii: {mode: mask_only}\n");
    let blocked = route(
        "blocked",
        "/blocked/v1",
        "    pii: {mode: block, detectors: [cn_id, bank_card]}\n",
    );
    let cached = route(
        "cached",
        "/cached/v1",
        "    pii: {mode: mask}\n    cache: {ttl: 10m}\n",
    );
    format!(
        "providers:
  - name: mock
    type: openai-compatible
    base_url: \"{url}\"
    api_keys: [\"sk-provider\"]
consumers:
  - name: alice
    credentials: [\"sk-alice\"]
routes:
{masked}{only}{blocked}{cached}"
    )
}

/// Values of several kinds in Chinese and emoji text.
const SECRET_TEXT: &str = "你好🚀，我的邮箱是 alice@example.com，电话13812345678，\
也可以打 +1 415 555 0100；服务器 10.0.0.1，密钥 sk-abcdefghijklmnop1234。再说一次 alice@example.com";
const VALUES: [&str; 5] = [
    "alice@example.com",
    "13812345678",
    "415 555 0100",
    "10.0.0.1",
    "sk-abcdefghijklmnop1234",
];

async fn post(
    gw: &Gateway,
    path: &str,
    body: Value,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut req = client()
        .post(gw.url(path))
        .bearer_auth("sk-alice")
        .json(&body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

fn chat(text: &str, stream: bool) -> Value {
    json!({"model": "mock-a", "stream": stream,
        "messages": [{"role": "system", "content": "be brief"},
                     {"role": "user", "content": text}]})
}

async fn requests(mock: &Mock) -> u64 {
    mock_stats(mock).await["requests_total"].as_u64().unwrap()
}

/// The content of an OpenAI stream's chunks, and its `data:` payloads.
fn stream_content(body: &str) -> (String, Vec<String>) {
    let data = sse_data(body);
    let mut text = String::new();
    for d in &data {
        if let Ok(v) = serde_json::from_str::<Value>(d) {
            for c in v["choices"].as_array().into_iter().flatten() {
                text.push_str(c["delta"]["content"].as_str().unwrap_or(""));
            }
        }
    }
    (text, data)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_provider_never_sees_the_values_and_the_client_gets_them_back() {
    let mock = Mock::start();
    let gw = Gateway::start(&config(&mock));
    let echo = [("x-mock-echo", "1"), ("x-mock-reply-parrot", "1")];
    let resp = post(
        &gw,
        "/masked/v1/chat/completions",
        chat(SECRET_TEXT, false),
        &echo,
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], SECRET_TEXT);
    let upstream = v["mock_echo"]["body"].to_string();
    for value in VALUES {
        assert!(
            !upstream.contains(value),
            "{value} reached the provider: {upstream}"
        );
    }
    let sent = v["mock_echo"]["body"]["messages"][1]["content"]
        .as_str()
        .unwrap();
    assert_eq!(sent.matches("[PII_EMAIL_1]").count(), 2, "{sent}");
    assert!(
        sent.contains("[PII_PHONE_2]") && sent.contains("[PII_IP_1]"),
        "{sent}"
    );
    let line = gw.log_line(&id);
    assert_eq!(
        line["policies"],
        json!(["pii:masked", "pii:restored"]),
        "{line}"
    );
    let metrics = gw.metrics().await;
    let labels = [
        ("route", "masked"),
        ("policy", "pii"),
        ("action", "restored"),
    ];
    assert_eq!(
        metric_sum(&metrics, "tollgate_policy_actions_total", &labels),
        1.0
    );

    // mask_only: the answer keeps the placeholders.
    let resp = post(
        &gw,
        "/only/v1/chat/completions",
        chat(SECRET_TEXT, false),
        &echo,
    )
    .await;
    let v: Value = resp.json().await.unwrap();
    let content = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(
        content.contains("[PII_EMAIL_1]") && !content.contains("alice@"),
        "{content}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_gets_its_values_back_however_it_is_cut() {
    let mock = Mock::start();
    let gw = Gateway::start(&config(&mock));
    let masked_len = 190; // about the masked text's length in characters
    for chunks in ["7", "40", &masked_len.to_string()] {
        let headers = [("x-mock-reply-parrot", "1"), ("x-mock-chunks", chunks)];
        let resp = post(
            &gw,
            "/masked/v1/chat/completions",
            chat(SECRET_TEXT, true),
            &headers,
        )
        .await;
        assert_eq!(resp.status(), StatusCode::OK);
        let body = resp.text().await.unwrap();
        let (text, data) = stream_content(&body);
        assert_eq!(text, SECRET_TEXT, "{chunks} chunks");
        assert!(!body.contains("[PII_"), "{body}");
        assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_mode_and_input_deny_refuse_before_the_provider() {
    let mock = Mock::start();
    let gw = Gateway::start(&config(&mock));
    let before = requests(&mock).await;

    let text = "身份证 11010519491231002X 请记住";
    let resp = post(&gw, "/blocked/v1/chat/completions", chat(text, false), &[]).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let body = resp.text().await.unwrap();
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["code"], "content_policy_violation");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("cn_id"),
        "{body}"
    );
    assert!(!body.contains("11010519491231002X"), "{body}");
    assert_eq!(gw.log_line(&id)["policies"], json!(["pii:blocked"]));
    // An invalid checksum is no ID card: served.
    let resp = post(
        &gw,
        "/blocked/v1/chat/completions",
        chat("11010519491231002Y", false),
        &[],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let before = before + 1;

    // Input deny: a keyword inside Chinese text, another in any case.
    for text in ["这是违禁词吗", "this is FORBIDDEN stuff"] {
        let resp = post(&gw, "/masked/v1/chat/completions", chat(text, true), &[]).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["error"]["code"], "content_policy_violation");
        assert_eq!(v["error"]["type"], "invalid_request_error");
    }
    // The Anthropic shape on /messages.
    let body = json!({"model": "mock-a", "max_tokens": 10,
        "system": "一条违禁的系统提示", "messages": [{"role": "user", "content": "hi"}]});
    let resp = post(&gw, "/masked/v1/messages", body, &[]).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert_eq!(requests(&mock).await, before, "nothing went upstream");
    let metrics = gw.metrics().await;
    let labels = [("policy", "deny_input"), ("action", "blocked")];
    assert_eq!(
        metric_sum(&metrics, "tollgate_policy_actions_total", &labels),
        3.0
    );
}

const DANGER: &str =
    "The first part is fine and long enough. Then the 危险 word comes, and more after it.";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_deny_ends_a_stream_with_a_content_filter_and_an_error_event() {
    let mock = Mock::start();
    let gw = Gateway::start(&config(&mock));
    for chunks in ["3", "20", "80"] {
        let headers = [("x-mock-reply-parrot", "1"), ("x-mock-chunks", chunks)];
        let resp = post(
            &gw,
            "/masked/v1/chat/completions",
            chat(DANGER, true),
            &headers,
        )
        .await;
        assert_eq!(resp.status(), StatusCode::OK);
        let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
        let body = resp.text().await.unwrap();
        let (text, data) = stream_content(&body);
        assert!(
            DANGER.starts_with(&text) && !text.contains('危'),
            "{text:?}"
        );
        let n = data.len();
        assert_eq!(data[n - 1], "[DONE]", "{body}");
        let error: Value = serde_json::from_str(&data[n - 2]).unwrap();
        assert_eq!(error["error"]["code"], "content_policy_violation");
        assert_eq!(error["error"]["type"], "invalid_request_error");
        let finish: Value = serde_json::from_str(&data[n - 3]).unwrap();
        assert_eq!(finish["choices"][0]["finish_reason"], "content_filter");
        assert_eq!(gw.log_line(&id)["policies"], json!(["deny_output:blocked"]));
    }
    // A regex rule, and a clean answer streamed whole.
    let text = "here is launch-code-1234 ok";
    let headers = [("x-mock-reply-parrot", "1"), ("x-mock-chunks", "9")];
    let body = post(
        &gw,
        "/masked/v1/chat/completions",
        chat(text, true),
        &headers,
    )
    .await
    .text()
    .await
    .unwrap();
    assert!(body.contains("content_filter"), "{body}");
    let clean = "nothing to see here, 完全没有问题";
    let body = post(
        &gw,
        "/masked/v1/chat/completions",
        chat(clean, true),
        &headers,
    )
    .await
    .text()
    .await
    .unwrap();
    assert_eq!(stream_content(&body).0, clean);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_answer_with_a_violation_is_withheld() {
    let mock = Mock::start();
    let gw = Gateway::start(&config(&mock));
    let headers = [("x-mock-reply-parrot", "1")];
    let resp = post(
        &gw,
        "/masked/v1/chat/completions",
        chat(DANGER, false),
        &headers,
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["choices"][0]["finish_reason"], "content_filter", "{v}");
    assert!(v["choices"][0]["message"]["content"].is_null(), "{v}");
    assert!(v["usage"]["completion_tokens"].as_u64().is_some(), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_openai_sdk_reads_a_stopped_stream() {
    let Some(python) = openai_python() else {
        return;
    };
    let mock = Mock::start();
    let gw = Gateway::start(&config(&mock));
    run_sdk_script(python, "openai_deny_stream.py", gw.url("/masked/v1")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_answer_keeps_placeholders_and_a_hit_restores_them() {
    let mock = Mock::start();
    let gw = Gateway::start(&config(&mock));
    let headers = [("x-mock-reply-parrot", "1")];
    let path = "/cached/v1/chat/completions";
    let resp = post(&gw, path, chat(SECRET_TEXT, false), &headers).await;
    assert_eq!(resp.headers()["x-tollgate-cache"], "miss");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], SECRET_TEXT);
    // The same values again: the same masked request, a hit, restored whole and streamed.
    let resp = post(&gw, path, chat(SECRET_TEXT, false), &headers).await;
    assert_eq!(resp.headers()["x-tollgate-cache"], "hit-exact");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], SECRET_TEXT);
    let resp = post(&gw, path, chat(SECRET_TEXT, true), &headers).await;
    assert_eq!(resp.headers()["x-tollgate-cache"], "hit-exact");
    let (text, _) = stream_content(&resp.text().await.unwrap());
    assert_eq!(text, SECRET_TEXT);
    assert_eq!(requests(&mock).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_messages_are_masked_and_restored_whole_and_streamed() {
    let mock = Mock::start();
    let gw = Gateway::start(&config(&mock));
    let headers = [("x-mock-reply-parrot", "1"), ("x-mock-chunks", "40")];
    let body = |stream: bool| {
        json!({"model": "mock-a", "max_tokens": 100, "stream": stream,
            "system": "reply to alice@example.com",
            "messages": [{"role": "user", "content": [{"type": "text", "text": SECRET_TEXT}]}]})
    };
    let resp = post(&gw, "/masked/v1/messages", body(false), &headers).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["content"][0]["text"], SECRET_TEXT, "{v}");
    let resp = post(&gw, "/masked/v1/messages", body(true), &headers).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let text: String = sse_data(&resp.text().await.unwrap())
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter(|v| v["delta"]["type"] == "text_delta")
        .map(|v| v["delta"]["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(text, SECRET_TEXT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_responses_request_on_a_policed_route_is_refused_not_sent_unchecked() {
    let mock = Mock::start();
    let gw = Gateway::start(&config(&mock));
    let before = mock_stats(&mock).await["requests_total"].as_u64().unwrap();
    let body = json!({"model": "mock-a", "input": "my email is alice@example.com"});
    let resp = post(&gw, "/masked/v1/responses", body, &[]).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "unsupported_endpoint", "{v}");
    assert_eq!(
        mock_stats(&mock).await["requests_total"].as_u64().unwrap(),
        before,
        "nothing went upstream"
    );
}
