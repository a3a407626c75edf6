//! Output moderation (`routes[].moderation.output`) against real processes: the mock parrots
//! the last user message back (`x-mock-reply-parrot`), here a route decorator's, which the
//! input check never sees, so the answer alone carries the flagged word; mock-llm's
//! `/moderations` flags `flagme`, and a scripted hook fails the answer's check.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use common::{metric_sum, Gateway, Mock, RawUpstream};
use serde_json::{json, Value};

/// The answer of the `flag` route: a first window (100 characters) of clean text, then the
/// flagged word.
const FLAGGED: &str = "This first part of the answer is clean and long enough to fill one whole window of a hundred characters. Then the word flagme comes, and more text after it.";
const CLEAN: &str = "A clean answer, with nothing in it that any check would flag, told in several small pieces: 完全没有问题.";

fn config(mock: &Mock, hook: &str) -> String {
    let flag_text = FLAGGED;
    format!(
        r#"providers:
  - name: mock
    type: openai-compatible
    base_url: "{url}"
    api_keys: ["sk-provider"]
routes:
  - name: flag
    path_prefix: /flag/v1
    forward_headers: ["x-mock-*"]
    decorators:
      append: [{{role: user, content: "{flag_text}"}}]
    moderation: {{via: route_model, model: omni-moderation-latest, route: clean, output: {{window: 100}}}}
    models:
      - model: "mock-*"
        targets: [{{provider: mock}}]
  - name: clean
    path_prefix: /clean/v1
    forward_headers: ["x-mock-*"]
    moderation: {{via: route_model, model: omni-moderation-latest, output: {{window: 100}}}}
    models:
      - model: "mock-*"
        targets: [{{provider: mock}}]
      - model: omni-moderation-latest
        targets: [{{provider: mock}}]
  - name: open
    path_prefix: /open/v1
    forward_headers: ["x-mock-*"]
    decorators:
      append: [{{role: user, content: "{CLEAN}"}}]
    moderation: {{via: hook, url: "http://{hook}/check", timeout: 500ms, output: {{}}}}
    models:
      - model: "mock-*"
        targets: [{{provider: mock}}]
  - name: closed
    path_prefix: /closed/v1
    forward_headers: ["x-mock-*"]
    decorators:
      append: [{{role: user, content: "{CLEAN}"}}]
    moderation: {{via: hook, url: "http://{hook}/check", timeout: 500ms, on_error: fail_closed, output: {{window: 100}}}}
    models:
      - model: "mock-*"
        targets: [{{provider: mock}}]
"#,
        url = mock.url()
    )
}

/// A hook that passes the input (the client's text says `question`) and fails every other
/// check (the answer's).
fn hook() -> RawUpstream {
    RawUpstream::start(|req, conn| {
        use std::io::Write;
        let body = String::from_utf8_lossy(&req.body);
        let answer = match body.contains("question") {
            true => common::http_json(200, r#"{"flagged":false,"categories":[]}"#),
            false => common::http_json(500, r#"{"error":"down"}"#),
        };
        let _ = conn.write_all(&answer);
    })
}

async fn post(gw: &Gateway, path: &str, stream: bool, chunks: &str) -> (String, String) {
    let body = json!({"model": "mock-a", "stream": stream,
        "messages": [{"role": "user", "content": "a question"}]});
    let resp = common::client()
        .post(gw.url(path))
        .header("x-mock-reply-parrot", "1")
        .header("x-mock-chunks", chunks)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    (resp.text().await.unwrap(), id)
}

/// A stream's `data:` payloads and the text of its chunks.
fn stream(body: &str) -> (String, Vec<String>) {
    let data: Vec<String> = body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(str::to_string)
        .collect();
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

/// The stream ended by the moderation: closing chunk, error event with `code`, `[DONE]`.
fn assert_stopped(data: &[String], code: &str) {
    let n = data.len();
    assert_eq!(data[n - 1], "[DONE]", "{data:?}");
    let error: Value = serde_json::from_str(&data[n - 2]).unwrap();
    assert_eq!(error["error"]["code"], code, "{error}");
    let finish: Value = serde_json::from_str(&data[n - 3]).unwrap();
    assert_eq!(finish["choices"][0]["finish_reason"], "content_filter");
}

fn policies(gw: &Gateway, id: &str) -> Vec<String> {
    let line = gw.log_line(id);
    line["policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flagged_window_never_reaches_the_client() {
    let mock = Mock::start();
    let hook = hook();
    let gw = Gateway::start(&config(&mock, &hook.addr));
    for chunks in ["40", "7"] {
        let (body, id) = post(&gw, "/flag/v1/chat/completions", true, chunks).await;
        let (text, data) = stream(&body);
        // The first window passed and was sent; the one with the word never was.
        assert!(FLAGGED.starts_with(&text), "{text:?}");
        assert_eq!(
            text.chars().count(),
            100,
            "exactly the first window: {text:?}"
        );
        assert!(!text.contains("flag") && !body.contains("flagme"), "{body}");
        assert_stopped(&data, "content_policy_violation");
        let p = policies(&gw, &id);
        assert!(p.contains(&"moderation_input:passed".to_string()), "{p:?}");
        assert!(p.contains(&"moderation_output:passed".to_string()), "{p:?}");
        assert!(
            p.contains(&"moderation_output:flagged".to_string()),
            "{p:?}"
        );
    }
    // A whole answer: 200, its content withheld.
    let (body, id) = post(&gw, "/flag/v1/chat/completions", false, "8").await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["choices"][0]["finish_reason"], "content_filter", "{v}");
    assert!(v["choices"][0]["message"]["content"].is_null(), "{v}");
    assert!(!body.contains("flagme"));
    assert!(policies(&gw, &id).contains(&"moderation_output:flagged".to_string()));
    let metrics = gw.metrics().await;
    let labels = [
        ("route", "flag"),
        ("policy", "moderation_output"),
        ("action", "flagged"),
    ];
    assert_eq!(
        metric_sum(&metrics, "tollgate_policy_actions_total", &labels),
        3.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_answer_arrives_complete_and_identical() {
    let mock = Mock::start();
    let hook = hook();
    let gw = Gateway::start(&config(&mock, &hook.addr));
    let body = json!({"model": "mock-a", "stream": true,
        "messages": [{"role": "user", "content": CLEAN}]});
    for chunks in ["1", "13", "60"] {
        let resp = common::client()
            .post(gw.url("/clean/v1/chat/completions"))
            .header("x-mock-reply-parrot", "1")
            .header("x-mock-chunks", chunks)
            .json(&body)
            .send()
            .await
            .unwrap();
        let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
        let sent = resp.text().await.unwrap();
        let (text, data) = stream(&sent);
        assert_eq!(text, CLEAN);
        assert_eq!(data.last().unwrap(), "[DONE]");
        assert!(!sent.contains("content_filter"), "{sent}");
        let p = policies(&gw, &id);
        assert!(p.contains(&"moderation_output:passed".to_string()), "{p:?}");
        assert!(!p.iter().any(|a| a.contains("flagged")), "{p:?}");
    }
    let resp = common::client()
        .post(gw.url("/clean/v1/chat/completions"))
        .header("x-mock-reply-parrot", "1")
        .json(&json!({"model": "mock-a", "messages": [{"role": "user", "content": CLEAN}]}))
        .send()
        .await
        .unwrap();
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], CLEAN, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_check_fails_open_or_closed() {
    let mock = Mock::start();
    let hook = hook();
    let gw = Gateway::start(&config(&mock, &hook.addr));
    let (body, id) = post(&gw, "/open/v1/chat/completions", true, "9").await;
    let (text, data) = stream(&body);
    assert_eq!(text, CLEAN, "{body}");
    assert_eq!(data.last().unwrap(), "[DONE]");
    let p = policies(&gw, &id);
    assert!(
        p.contains(&"moderation_output:failed_open".to_string()),
        "{p:?}"
    );
    let (body, id) = post(&gw, "/closed/v1/chat/completions", true, "9").await;
    let (text, data) = stream(&body);
    assert!(
        text.is_empty(),
        "nothing of an unchecked window is sent: {text:?}"
    );
    assert_stopped(&data, "moderation_unavailable");
    let p = policies(&gw, &id);
    assert!(
        p.contains(&"moderation_output:failed_closed".to_string()),
        "{p:?}"
    );
    // The hook saw the answer's text for the output checks.
    let answers = hook
        .received()
        .iter()
        .filter(|r| String::from_utf8_lossy(&r.body).contains("clean answer"))
        .count();
    assert!(answers >= 2, "{answers}");
}
