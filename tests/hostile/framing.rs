//! Connection-level defects: framing errors must close the connection (no request
//! smuggling), `Expect: 100-continue` is answered, pipelined requests are served in order,
//! and idle or slow clients are cut off by deadlines and a connection cap.

use crate::common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const CHAT: &str = r#"{"model":"mock-a","messages":[{"role":"user","content":"hi"}]}"#;

fn chat_request(extra_headers: &str) -> String {
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra_headers}\r\n{CHAT}",
        CHAT.len()
    )
}

/// A normal chat request over a fresh connection succeeds.
async fn served(gw: &Gateway) {
    let resp = client()
        .post(gw.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(CHAT)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

/// Small client deadlines so the deadline tests are quick.
const FAST: &str = r#"client:
  keepalive_timeout: 1s
  header_timeout: 2s
  body_timeout: 2s
"#;

fn start(mock: &Mock, client_block: &str) -> Gateway {
    Gateway::start(&format!("{client_block}{}", mock_provider(&mock.url(), "")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_chunk_closes_the_connection_and_nothing_is_smuggled() {
    let mock = Mock::start();
    let gw = start(&mock, "");
    let smuggled = "GET /v1/models HTTP/1.1\r\nHost: gw\r\nx-request-id: smuggled-1\r\n\r\n";
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{{}}\r\n0\r\n\r\n{smuggled}"
    );
    let (out, closed) = raw_exchange(gw.port, req.as_bytes(), Duration::from_secs(5));
    assert_eq!(count(&out, "HTTP/1.1 "), 1, "exactly one response: {out}");
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    assert!(
        out.to_ascii_lowercase().contains("connection: close"),
        "{out}"
    );
    assert!(closed, "connection closed after the framing error");

    // The admin listener: a body that cannot be framed never turns into a second request.
    let smuggled = "GET /metrics HTTP/1.1\r\nHost: gw\r\n\r\n";
    let req = format!(
        "POST /admin/quotas/x HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{{}}\r\n0\r\n\r\n{smuggled}"
    );
    let (out, closed) = raw_exchange_at(&gw.admin_addr, req.as_bytes(), Duration::from_secs(5));
    assert!(count(&out, "HTTP/1.1 ") <= 1, "at most one response: {out}");
    assert!(!out.contains("# HELP"), "the smuggled request was served");
    assert!(closed, "admin connection closed after the framing error");

    served(&gw).await;
    let resp = client()
        .get(gw.url("/v1/models"))
        .header("x-request-id", "after-1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    gw.log_line("after-1");
    assert!(
        !gw.access_log_text().contains("smuggled-1"),
        "the bytes after the bad chunk were served as a request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_100_continue_is_answered_and_others_refused() {
    let mock = Mock::start();
    let gw = start(&mock, "");
    let mut s = TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
        CHAT.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    // The interim response comes before any body byte is sent.
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut buf).expect("100 Continue before the body");
        assert!(n > 0, "closed before 100 Continue");
        got.extend_from_slice(&buf[..n]);
    }
    let interim = String::from_utf8_lossy(&got).into_owned();
    assert!(interim.starts_with("HTTP/1.1 100"), "{interim}");
    s.write_all(CHAT.as_bytes()).unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    let all = format!("{interim}{}", String::from_utf8_lossy(&rest));
    assert!(all.contains("HTTP/1.1 200"), "{all}");

    let req = chat_request("Expect: something-else\r\n");
    let (out, _) = raw_exchange(gw.port, req.as_bytes(), Duration::from_secs(3));
    assert!(out.starts_with("HTTP/1.1 417"), "{out}");
    assert!(out.contains("expectation_failed"), "{out}");
    served(&gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_served_in_order() {
    let mock = Mock::start();
    let gw = start(&mock, "");
    let req = format!(
        "{}{}GET /v1/models HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n",
        chat_request("x-request-id: pipe-1\r\n"),
        chat_request("x-request-id: pipe-2\r\n"),
    );
    let (out, closed) = raw_exchange(gw.port, req.as_bytes(), Duration::from_secs(10));
    assert_eq!(count(&out, "HTTP/1.1 200"), 3, "{out}");
    let first = out.find("pipe-1").expect("first answered");
    let second = out.find("pipe-2").expect("second answered");
    let third = out.find("\"object\":\"list\"").expect("third answered");
    assert!(first < second && second < third, "in order: {out}");
    assert!(closed);
    served(&gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keepalive_connection_is_closed() {
    let mock = Mock::start();
    let gw = start(&mock, FAST);
    let mut s = TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    s.write_all(b"GET /v1/models HTTP/1.1\r\nHost: gw\r\n\r\n")
        .unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    // Read the response, then wait for the gateway to close the idle connection.
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "idle connection kept {:?}",
        start.elapsed()
    );
    served(&gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_header_is_cut_off() {
    let mock = Mock::start();
    let gw = start(&mock, FAST);
    let mut s = TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let header =
        b"GET /v1/models HTTP/1.1\r\nHost: gw\r\nx-pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let start = Instant::now();
    let mut closed = false;
    // One byte every 300 ms: each read is well inside every per-read timeout, but the
    // whole header would take about 25 s.
    for b in header.iter() {
        if s.write_all(&[*b]).is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 1024];
        match s.read(&mut buf) {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(n) => {
                let text = String::from_utf8_lossy(&buf[..n]);
                assert!(text.starts_with("HTTP/1.1 408"), "{text}");
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => {
                closed = true;
                break;
            }
        }
        if start.elapsed() > Duration::from_secs(15) {
            break;
        }
    }
    assert!(closed, "slow header not cut off");
    assert!(start.elapsed() < Duration::from_secs(15));
    served(&gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickled_body_gets_408_and_close() {
    let mock = Mock::start();
    let gw = start(&mock, FAST);
    let mut s = TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        CHAT.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(400)))
        .unwrap();
    let start = Instant::now();
    let mut got = Vec::new();
    let mut closed = false;
    let mut sent = 0;
    // Four bytes every 400 ms.
    while start.elapsed() < Duration::from_secs(15) {
        if sent < CHAT.len() {
            let end = (sent + 4).min(CHAT.len());
            if s.write_all(&CHAT.as_bytes()[sent..end]).is_err() {
                closed = true;
                break;
            }
            sent = end;
        }
        let mut buf = [0u8; 4096];
        if !read_some(&mut s, &mut buf, &mut got) {
            closed = true;
            break;
        }
    }
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("request_timeout"), "{text}");
    assert!(
        text.to_ascii_lowercase().contains("connection: close"),
        "{text}"
    );
    assert!(closed, "connection closed after the body deadline");
    assert!(sent < CHAT.len(), "the whole body was accepted");
    served(&gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_does_not_block_service_and_is_shed() {
    let mock = Mock::start();
    let gw = start(&mock, FAST);
    // 400 connections, each with a partial request header.
    let mut held: Vec<TcpStream> = (0..400)
        .filter_map(|_| TcpStream::connect(("127.0.0.1", gw.port)).ok())
        .collect();
    for s in &mut held {
        let _ = s.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nx-slow: ");
    }
    assert!(held.len() >= 300);
    // A normal request is served while they hang.
    served(&gw).await;
    // And the gateway sheds them by the header deadline.
    let start = Instant::now();
    for s in &mut held {
        s.set_read_timeout(Some(DEADLINE)).unwrap();
        let mut buf = [0u8; 256];
        // Closed (0 or reset) or answered with an error; never left hanging.
        let _ = s.read(&mut buf);
    }
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "slow connections were not shed: {:?}",
        start.elapsed()
    );
    served(&gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_cap_refuses_the_extra_connection() {
    let mock = Mock::start();
    let gw = start(
        &mock,
        "client:\n  max_connections: 4\n  keepalive_timeout: 30s\n",
    );
    // Four keep-alive connections, each having completed a request.
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
        s.write_all(b"GET /v1/models HTTP/1.1\r\nHost: gw\r\n\r\n")
            .unwrap();
        s.set_read_timeout(Some(DEADLINE)).unwrap();
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        held.push(s);
    }
    // The fifth is closed without an answer.
    let (out, closed) = raw_exchange(
        gw.port,
        b"GET /v1/models HTTP/1.1\r\nHost: gw\r\n\r\n",
        Duration::from_secs(5),
    );
    assert!(closed && out.is_empty(), "fifth connection served: {out}");
    // A slot frees when one of them goes away.
    drop(held.pop());
    eventually("a freed slot serves a request", || async {
        let (out, _) = raw_exchange(
            gw.port,
            b"GET /v1/models HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n",
            Duration::from_secs(2),
        );
        out.starts_with("HTTP/1.1 200")
    })
    .await;
    // The slots free as the gateway notices the closed connections, not at once.
    drop(held);
    eventually(
        "a normal request once the held connections are closed",
        || async {
            client()
                .post(gw.url("/v1/chat/completions"))
                .header("content-type", "application/json")
                .body(CHAT)
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        },
    )
    .await;
}
