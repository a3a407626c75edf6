//! The upstream side of an attempt: pooled keep-alive connections, a pooled connection the
//! provider had already closed, and a client that leaves mid-stream.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use common::*;
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const ANSWER: &str = r#"{"id":"chatcmpl-raw","object":"chat.completion","created":1,"model":"raw","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#;

/// A minimal HTTP/1.1 provider on a raw socket, so the test sees every connection.
/// With `answers_per_connection = Some(n)` it answers n requests on a connection, then
/// closes it when the next request arrives, without a word: what a provider does when its
/// idle timeout fires just as the gateway reuses the connection.
struct RawUpstream {
    port: u16,
    connections: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
}

impl RawUpstream {
    async fn start(answers_per_connection: Option<usize>) -> RawUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let (c, r) = (connections.clone(), requests.clone());
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                c.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(sock, answers_per_connection, r.clone()));
            }
        });
        RawUpstream {
            port,
            connections,
            requests,
        }
    }
}

/// Read one request (header and `Content-Length` body); false at end of stream.
async fn read_request(sock: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map(|v| v.trim().parse().unwrap())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                buf.drain(..end + 4 + len);
                return true;
            }
        }
        match sock.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

async fn serve(mut sock: TcpStream, answers: Option<usize>, requests: Arc<AtomicUsize>) {
    let mut buf = Vec::new();
    let mut answered = 0;
    while read_request(&mut sock, &mut buf).await {
        requests.fetch_add(1, Ordering::SeqCst);
        if answers.is_some_and(|n| answered >= n) {
            return; // drop: closed without an answer
        }
        let resp = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{ANSWER}",
            ANSWER.len()
        );
        if sock.write_all(resp.as_bytes()).await.is_err() {
            return;
        }
        answered += 1;
    }
}

/// One provider at `port`, one attempt per request: any failure reaches the client.
fn raw_config(port: u16) -> String {
    format!(
        r#"providers:
  - name: raw
    type: openai-compatible
    base_url: "http://127.0.0.1:{port}/v1"
    api_keys: ["sk-raw-secret"]
routes:
  - name: default
    forward_headers: ["x-mock-*"]
    retry: {{attempts: 1}}
    models:
      - model: "*"
        targets: [{{provider: raw}}]
"#
    )
}

async fn chat(gw: &Gateway) -> (u16, String) {
    let resp = client()
        .post(gw.url("/v1/chat/completions"))
        .json(&json!({"model": "m", "messages": [{"role": "user", "content": "hello"}]}))
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_are_kept_alive_and_reused() {
    let up = RawUpstream::start(None).await;
    let gw = Gateway::start(&raw_config(up.port));
    for _ in 0..20 {
        let (status, body) = chat(&gw).await;
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("chatcmpl-raw"), "{body}");
    }
    assert_eq!(up.requests.load(Ordering::SeqCst), 20);
    // One connection per gateway worker thread at most, not one per request.
    let conns = up.connections.load(Ordering::SeqCst);
    assert!(conns <= 2, "{conns} upstream connections for 20 requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_connection_closed_by_the_provider_is_replaced() {
    let up = RawUpstream::start(Some(1)).await;
    let gw = Gateway::start(&raw_config(up.port));
    for i in 0..5 {
        let (status, body) = chat(&gw).await;
        assert_eq!(status, 200, "request {i}: {body}");
    }
    // Every request after the first met a dead pooled connection and went on a new one.
    assert!(up.requests.load(Ordering::SeqCst) > 5);
    let metrics = gw.metrics().await;
    assert_eq!(
        metric_sum(&metrics, "tollgate_attempt_failures_total", &[]),
        0.0,
        "a stale pooled connection is not the key's failure"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_mid_stream_stops_the_provider() {
    let mock = Mock::start();
    let gw = Gateway::start(&mock_provider(&mock.url(), ""));
    let body = json!({"model": "mock-x", "stream": true,
        "messages": [{"role": "user", "content": "hello"}]});
    let mut resp = client()
        .post(gw.url("/v1/chat/completions"))
        .header("x-mock-chunks", "500")
        .header("x-mock-chunk-delay-ms", "20")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let mut got = 0;
    while got < 3 {
        assert!(resp.chunk().await.unwrap().is_some());
        got += 1;
    }
    drop(resp); // mid-body: the client's connection is closed

    eventually("the provider's stream to stop", || async {
        mock_stats(&mock).await["streams_cancelled"] == 1
    })
    .await;
    let line = gw.log_line(&id);
    assert_eq!(line["status"], 200, "{line}");
    assert_eq!(line["error"], "client_closed_request", "{line}");
    assert!(line["output_tokens"].as_u64().unwrap() > 0, "{line}");
    let metrics = gw.metrics().await;
    assert_eq!(metric_sum(&metrics, "tollgate_active_streams", &[]), 0.0);
    assert_eq!(
        metric_sum(&metrics, "tollgate_attempt_failures_total", &[]),
        0.0,
        "a client leaving is not the key's failure"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_before_the_answer_ends_the_attempt() {
    let mock = Mock::start();
    let gw = Gateway::start(&mock_provider(&mock.url(), ""));
    let body = json!({"model": "mock-x", "messages": [{"role": "user", "content": "hello"}]});
    let pending = tokio::spawn(
        client()
            .post(gw.url("/v1/chat/completions"))
            .header("x-request-id", "leaves-early")
            // Far longer than the harness deadline: only the client leaving ends it in time.
            .header("x-mock-delay-ms", "600000")
            .json(&body)
            .send(),
    );
    eventually("the request to reach the mock", || async {
        mock_stats(&mock).await["requests_total"] == 1
    })
    .await;
    pending.abort(); // drops the client's connection while the provider is still thinking
    let line = gw.log_line("leaves-early");
    assert_eq!(line["error"], "client_closed_request", "{line}");
    assert_eq!(line["status"], 499, "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_to_the_provider_multiplexes_streams() {
    let mock = Mock::start();
    let gw = Gateway::start(&mock_provider(&mock.url(), "    http2: true"));
    let echo: serde_json::Value = client()
        .post(gw.url("/v1/chat/completions"))
        .header("x-mock-echo", "1")
        .json(&json!({"model": "mock-x", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(echo["mock_echo"]["version"], "HTTP/2.0", "{echo}");
    assert!(echo["usage"]["completion_tokens"].as_u64().unwrap() > 0);

    // Streams at once, each answered whole, over HTTP/2.
    let body = json!({"model": "mock-x", "stream": true,
        "messages": [{"role": "user", "content": "hello"}]});
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let req = client()
            .post(gw.url("/v1/chat/completions"))
            .header("x-mock-chunks", "16")
            .header("x-mock-chunk-delay-ms", "5")
            .json(&body);
        tasks.push(tokio::spawn(async move {
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), 200);
            resp.text().await.unwrap()
        }));
    }
    for t in tasks {
        let text = t.await.unwrap();
        let data = sse_data(&text);
        assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{text}");
        let content: usize = data.iter().filter(|d| d.contains("\"content\"")).count();
        assert!(content >= 16, "{text}");
    }
}
