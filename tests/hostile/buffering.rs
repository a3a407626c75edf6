//! Unbounded buffering: a provider that never ends an SSE line, clients that declare huge
//! bodies and stall, and many large bodies at once. Memory must stay bounded, the client
//! must get a clean error, and a normal request must be served afterwards.

use crate::common::*;
use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

const OK_JSON: &str = r#"{"id":"c1","object":"chat.completion","model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#;

fn chat_body(content: &str, stream: bool) -> String {
    serde_json::json!({
        "model": "mock-a",
        "stream": stream,
        "messages": [{"role": "user", "content": content}],
    })
    .to_string()
}

async fn post(gw: &Gateway, body: String) -> reqwest::Response {
    client()
        .post(gw.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_sse_line_ends_the_stream_with_an_error() {
    // Streams: `data: ` then up to 400 MB without a line end. Anything else: a normal answer.
    let raw = RawUpstream::start(|req, conn| {
        if !String::from_utf8_lossy(&req.body).contains("\"stream\":true") {
            let _ = conn.write_all(&http_json(200, OK_JSON));
            return;
        }
        let _ = conn.write_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\ndata: ",
        );
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..(400 * 16) {
            if conn.write_all(&chunk).is_err() {
                break;
            }
        }
    });
    let gw = Gateway::start(&mock_provider(&raw.url(), ""));
    assert_eq!(post(&gw, chat_body("warm up", false)).await.status(), 200);
    let before = rss_kib(gw.pid());

    let mut resp = post(&gw, chat_body("endless", true)).await;
    assert_eq!(resp.status(), 200);
    let mut got: Vec<u8> = Vec::new();
    let mut broken = false;
    loop {
        match resp.chunk().await {
            Ok(Some(c)) => {
                // Keep only the tail: the error event comes last.
                got.extend_from_slice(&c);
                if got.len() > 64 * 1024 {
                    got.drain(..got.len() - 64 * 1024);
                }
            }
            Ok(None) => break,
            Err(_) => {
                broken = true;
                break;
            }
        }
    }
    let tail = String::from_utf8_lossy(&got);
    assert!(tail.contains("\"code\":\"upstream_error\""), "{tail}");
    assert!(tail.contains("larger than 1048576 bytes"), "{tail}");
    assert!(broken, "the stream must not end as if complete");
    let grown_mb = rss_kib(gw.pid()).saturating_sub(before) / 1024;
    assert!(grown_mb < 200, "RSS grew {grown_mb} MB");

    assert_eq!(post(&gw, chat_body("after", false)).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_huge_content_length_reserves_nothing() {
    let mock = Mock::start();
    let gw = Gateway::start(&format!(
        "limits:\n  max_body_bytes: 209715200\nclient:\n  body_timeout: 30s\n  max_body_memory_bytes: 268435456\n{}",
        mock_provider(&mock.url(), "")
    ));
    assert_eq!(post(&gw, chat_body("warm up", false)).await.status(), 200);
    let (rss_before, vm_before) = (rss_kib(gw.pid()), proc_status_kib(gw.pid(), "VmSize"));
    let mut held = Vec::new();
    for _ in 0..50 {
        let mut s = TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
        s.write_all(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: 100000000\r\n\r\n{\"model\":",
        )
        .unwrap();
        held.push(s);
    }
    // Every stalled request has reached its body read before memory is measured: the
    // gateway has read all the bytes of the 50 connections (their header and body start).
    eventually("the 50 stalled requests read", || async {
        drained_connections(gw.port) >= 50
    })
    .await;
    assert_eq!(post(&gw, chat_body("during", false)).await.status(), 200);
    let rss_mb = rss_kib(gw.pid()).saturating_sub(rss_before) / 1024;
    let vm_mb = proc_status_kib(gw.pid(), "VmSize").saturating_sub(vm_before) / 1024;
    assert!(rss_mb < 100, "RSS grew {rss_mb} MB");
    assert!(vm_mb < 1024, "address space grew {vm_mb} MB");
    drop(held);
    assert_eq!(post(&gw, chat_body("after", false)).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_memory_budget_answers_503_server_busy() {
    let mock = Mock::start();
    let gw = Gateway::start(&format!(
        "limits:\n  max_body_bytes: 1048576\nclient:\n  body_timeout: 30s\n  max_body_memory_bytes: 1048576\n{}",
        mock_provider(&mock.url(), "")
    ));
    // One request holds 800 KB of its body in memory and stalls.
    let mut stalled = TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    stalled
        .write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: 900000\r\n\r\n")
        .unwrap();
    stalled.write_all(&vec![b' '; 800_000]).unwrap();
    let big = chat_body(&"y".repeat(600_000), false);
    // Poll until the stalled body has been read: then the next large body is refused.
    let start = std::time::Instant::now();
    let (retry_after, v) = loop {
        let resp = post(&gw, big.clone()).await;
        if resp.status() == 503 {
            let retry_after = resp
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string());
            let v: serde_json::Value = resp.json().await.unwrap();
            break (retry_after, v);
        }
        assert!(
            start.elapsed() < DEADLINE,
            "never refused: {}",
            resp.status()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert_eq!(retry_after.as_deref(), Some("1"));
    assert_eq!(v["error"]["code"], "server_busy");
    // The stalled request goes away; its share of the budget comes back.
    drop(stalled);
    eventually("the budget is released", || {
        let body = big.clone();
        let gw = &gw;
        async move { post(gw, body).await.status() == 200 }
    })
    .await;
    assert_eq!(post(&gw, chat_body("after", false)).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_body_held_for_translation_is_cut() {
    // An Anthropic provider whose JSON answer never ends: the gateway holds such a body to
    // translate it, and must stop at its bound instead of holding all of it.
    let raw = RawUpstream::start(|_, conn| {
        let _ = conn.write_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n{\"content\":\"",
        );
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..(400 * 16) {
            if conn.write_all(&chunk).is_err() {
                break;
            }
        }
    });
    let mock = Mock::start();
    let gw = Gateway::start(&format!(
        r#"providers:
  - name: claude
    type: anthropic
    base_url: "{}"
    api_keys: ["sk-ant-test"]
  - name: mock
    type: openai-compatible
    base_url: "{}"
    api_keys: ["sk-provider-secret-1234"]
routes:
  - name: default
    models:
      - model: "claude-*"
        targets: [{{provider: claude}}]
      - model: "*"
        targets: [{{provider: mock}}]
"#,
        raw.url(),
        mock.url()
    ));
    assert_eq!(post(&gw, chat_body("warm up", false)).await.status(), 200);
    let before = rss_kib(gw.pid());
    let body = serde_json::json!({
        "model": "claude-x",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": "endless"}],
    })
    .to_string();
    let resp = post(&gw, body).await;
    // The header went out before the body; the body is cut, never completed.
    assert!(
        resp.bytes().await.is_err(),
        "a cut body must not look complete"
    );
    let grown_mb = rss_kib(gw.pid()).saturating_sub(before) / 1024;
    assert!(grown_mb < 200, "RSS grew {grown_mb} MB");
    assert_eq!(post(&gw, chat_body("after", false)).await.status(), 200);
}
