//! Tokens are charged whatever the provider reports and however the client leaves: a JSON
//! answer without `usage` is estimated from the request and the delivered text, a stream the
//! client abandons is charged for what it was sent, and absurd reported usage is clamped to
//! the per-request maximum instead of wrapping a balance or a counter.

use crate::common::*;
use serde_json::{json, Value};
use std::io::Write;
use std::net::TcpStream;

/// The documented per-request maximum of each token count.
const MAX_TOKENS_PER_REQUEST: u64 = 10_000_000;
const START_BALANCE: i64 = 1_000_000_000;

/// Text of a chat answer or stream chunk.
fn sentence() -> String {
    "lorem ipsum dolor sit amet, consectetur adipiscing elit ".repeat(18)
}

/// A scripted provider: what it answers depends on a marker in the request body.
fn upstream() -> RawUpstream {
    RawUpstream::start(|req, conn| {
        let body = String::from_utf8_lossy(&req.body);
        if body.contains("answer-without-usage") {
            let answer = json!({
                "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
                "choices": [{"index": 0, "finish_reason": "stop",
                    "message": {"role": "assistant", "content": sentence()}}]
            });
            let _ = conn.write_all(&http_json(200, &answer.to_string()));
        } else if body.contains("endless-stream") {
            endless_stream(conn, false);
        } else if body.contains("early-usage-stream") {
            endless_stream(conn, true);
        } else if body.contains("endless-json") {
            endless_json(conn);
        } else if body.contains("absurd-usage") {
            let answer = r#"{"id":"chatcmpl-2","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"finish_reason":"stop","message":{"role":"assistant","content":"ok"}}],"usage":{"prompt_tokens":18446744073709551615,"completion_tokens":5,"total_tokens":18446744073709551615}}"#;
            let _ = conn.write_all(&http_json(200, answer));
        } else {
            let answer = json!({
                "id": "chatcmpl-3", "object": "chat.completion", "created": 1, "model": "m",
                "choices": [{"index": 0, "finish_reason": "stop",
                    "message": {"role": "assistant", "content": "fine"}}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}
            });
            let _ = conn.write_all(&http_json(200, &answer.to_string()));
        }
    })
}

/// SSE chunks of about 1 KB until the gateway stops reading (at most 256 MB); `early_usage`:
/// the first chunk reports usage (12 prompt tokens, no output yet), as providers with
/// continuous usage statistics do.
fn endless_stream(conn: &mut TcpStream, early_usage: bool) {
    let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n";
    if conn.write_all(head.as_bytes()).is_err() {
        return;
    }
    if early_usage {
        let first = json!({
            "id": "chatcmpl-4", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [],
            "usage": {"prompt_tokens": 12, "completion_tokens": 0, "total_tokens": 12}
        });
        if conn
            .write_all(format!("data: {first}\n\n").as_bytes())
            .is_err()
        {
            return;
        }
    }
    let chunk = json!({
        "id": "chatcmpl-4", "object": "chat.completion.chunk", "created": 1, "model": "m",
        "choices": [{"index": 0, "delta": {"content": sentence()}, "finish_reason": null}]
    });
    let event = format!("data: {chunk}\n\n");
    let mut sent = 0;
    while sent < 256 << 20 {
        if conn.write_all(event.as_bytes()).is_err() {
            return;
        }
        sent += event.len();
    }
}

/// A JSON answer declaring 256 MB whose text goes on until the gateway stops reading.
fn endless_json(conn: &mut TcpStream) {
    let total = 256 << 20;
    let head = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {total}\r\n\r\n"
    );
    let start = r#"{"id":"chatcmpl-5","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"finish_reason":"stop","message":{"role":"assistant","content":""#;
    if conn.write_all(head.as_bytes()).is_err() || conn.write_all(start.as_bytes()).is_err() {
        return;
    }
    let text = sentence();
    let mut sent = start.len();
    while sent + text.len() < total {
        if conn.write_all(text.as_bytes()).is_err() {
            return;
        }
        sent += text.len();
    }
}

fn config(up: &RawUpstream) -> String {
    format!(
        r#"providers:
  - name: raw
    type: openai-compatible
    base_url: "{url}"
    api_keys: ["{PROVIDER_KEY}"]
consumers:
  - name: alice
    credentials: ["sk-alice"]
  - name: boss
    credentials: ["sk-boss"]
quota:
  consumers: [alice]
  admin_consumer: boss
store: {{path: "@DIR@/state.db"}}
rate_limits:
  - {{name: alice-tpd, key: consumer, window: day, tokens: 4000000000000}}
routes:
  - name: default
    auth: {{required: true}}
    models:
      - model: "*"
        targets: [{{provider: raw}}]
"#,
        url = up.url()
    )
}

async fn balance(gw: &Gateway) -> i64 {
    let url = gw.url("/v1/chat/completions/quota?consumer=alice");
    let v = get_json(&url, Some("sk-boss")).await;
    v["quota"].as_i64().unwrap()
}

async fn set_balance(gw: &Gateway, n: i64) {
    let resp = client()
        .post(gw.url("/v1/chat/completions/quota/refresh"))
        .bearer_auth("sk-boss")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("consumer=alice&quota={n}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

fn chat(marker: &str, stream: bool) -> Value {
    json!({"model": "gpt-x", "stream": stream, "messages": [
        {"role": "user", "content": format!("{marker}: please count the tokens of this prompt")}
    ]})
}

async fn post(gw: &Gateway, body: &Value) -> reqwest::Response {
    client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth("sk-alice")
        .json(body)
        .send()
        .await
        .unwrap()
}

fn request_id(resp: &reqwest::Response) -> String {
    resp.headers()["x-request-id"].to_str().unwrap().to_string()
}

fn remaining_tokens(resp: &reqwest::Response) -> u64 {
    resp.headers()["x-ratelimit-remaining-tokens"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

fn tokens(line: &Value) -> (u64, u64) {
    (
        line["input_tokens"].as_u64().unwrap(),
        line["output_tokens"].as_u64().unwrap(),
    )
}

/// A normal request is still served and charged exactly what the provider reported.
async fn still_served(gw: &Gateway) {
    let before = balance(gw).await;
    let resp = post(gw, &chat("normal", false)).await;
    assert_eq!(resp.status(), 200);
    let id = request_id(&resp);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "fine");
    let line = gw.log_line(&id);
    assert_eq!(tokens(&line), (10, 2));
    assert_eq!(line["usage_estimated"], false);
    assert_eq!(balance(gw).await, before - 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_answer_without_usage_is_estimated_and_charged() {
    let up = upstream();
    let gw = Gateway::start(&config(&up));
    set_balance(&gw, START_BALANCE).await;

    let resp = post(&gw, &chat("answer-without-usage", false)).await;
    assert_eq!(resp.status(), 200);
    let id = request_id(&resp);
    let remaining_first = remaining_tokens(&resp);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], sentence());

    let line = gw.log_line(&id);
    assert_eq!(line["usage_estimated"], true, "{line}");
    let (input, output) = tokens(&line);
    assert!(input > 0, "no input estimate: {line}");
    // The answer's text by the documented estimate: ⌈len/4⌉ per run of ASCII characters.
    assert_eq!(output, sentence().len().div_ceil(4) as u64, "{line}");
    assert_eq!(balance(&gw).await, START_BALANCE - (input + output) as i64);

    // The rate limit was charged the estimate too: the same request now finds that much
    // less of its budget left.
    let resp = post(&gw, &chat("answer-without-usage", false)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(remaining_first - remaining_tokens(&resp), input + output);
    let _ = resp.bytes().await;

    still_served(&gw).await;
}

/// Send `marker`'s request, read 2 MB of the answer and leave; the access-log line once the
/// gateway has charged the request, and what the balance lost.
async fn abandon(gw: &Gateway, marker: &str, stream: bool) -> (Value, i64) {
    let before = balance(gw).await;
    let mut resp = post(gw, &chat(marker, stream)).await;
    assert_eq!(resp.status(), 200);
    let id = request_id(&resp);
    let mut read = 0;
    while read < 2 << 20 {
        let chunk = resp.chunk().await.unwrap().expect("the answer goes on");
        read += chunk.len();
    }
    drop(resp);
    let line = gw.log_line(&id);
    (line, before - balance(gw).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_answers_are_charged_for_what_was_delivered() {
    let up = upstream();
    let gw = Gateway::start(&config(&up));
    set_balance(&gw, START_BALANCE).await;
    // At least the text of the 2 MB the client read: about 1 KB of JSON per event of 1 KB
    // of text, ⌈len/4⌉ tokens for each event's text.
    let events = (2 << 20) / (sentence().len() + 120);
    let at_least = (events * sentence().len().div_ceil(4)) as u64;

    // A stream without usage so far.
    let (line, charged) = abandon(&gw, "endless-stream", true).await;
    assert_eq!(line["usage_estimated"], true, "{line}");
    let (input, output) = tokens(&line);
    assert!(input > 0, "no input estimate: {line}");
    assert!(
        (at_least..=MAX_TOKENS_PER_REQUEST).contains(&output),
        "output {output}, expected at least {at_least}: {line}"
    );
    assert_eq!(charged, (input + output) as i64);

    // A stream whose provider reported usage before the text: the text after the report
    // is estimated on top of it.
    let (line, charged) = abandon(&gw, "early-usage-stream", true).await;
    assert_eq!(line["usage_estimated"], true, "{line}");
    let (input, output) = tokens(&line);
    assert_eq!(input, 12, "the reported prompt: {line}");
    assert!(
        (at_least..=MAX_TOKENS_PER_REQUEST).contains(&output),
        "output {output}, expected at least {at_least}: {line}"
    );
    assert_eq!(charged, (input + output) as i64);

    // A (long) JSON answer: its delivered text.
    let (line, charged) = abandon(&gw, "endless-json", false).await;
    assert_eq!(line["usage_estimated"], true, "{line}");
    let (input, output) = tokens(&line);
    assert!(input > 0, "no input estimate: {line}");
    assert!(
        ((2 << 20) / 4..=MAX_TOKENS_PER_REQUEST).contains(&output),
        "output {output}: {line}"
    );
    assert_eq!(charged, (input + output) as i64);

    still_served(&gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absurd_reported_usage_is_clamped_not_wrapped() {
    let up = upstream();
    let gw = Gateway::start(&config(&up));
    set_balance(&gw, START_BALANCE).await;

    for round in 1..=3u64 {
        let resp = post(&gw, &chat("absurd-usage", false)).await;
        assert_eq!(resp.status(), 200);
        let id = request_id(&resp);
        let _ = resp.bytes().await;
        let line = gw.log_line(&id);
        assert_eq!(tokens(&line), (MAX_TOKENS_PER_REQUEST, 5), "{line}");
        let charged = round * (MAX_TOKENS_PER_REQUEST + 5);
        assert_eq!(balance(&gw).await, START_BALANCE - charged as i64);
        // Counters neither wrapped nor jumped.
        let metrics = gw.metrics().await;
        let input = metric_sum(&metrics, "tollgate_input_tokens_total", &[]);
        assert_eq!(input, (round * MAX_TOKENS_PER_REQUEST) as f64);
        let consumer = metric_sum(
            &metrics,
            "tollgate_quota_charged_tokens_total",
            &[("consumer", "alice")],
        );
        assert_eq!(consumer, charged as f64);
    }
    still_served(&gw).await;
}
