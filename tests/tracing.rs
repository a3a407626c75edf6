//! OpenTelemetry traces (`tracing:`): spans exported over OTLP/HTTP to a receiver started by
//! the test, W3C trace context honoured and propagated upstream, and a collector that is
//! away never holds up requests (its spans are dropped and counted).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use common::*;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

/// Posts received: header lines and body.
type Posts = Mutex<Vec<(Vec<String>, Vec<u8>)>>;

/// A minimal OTLP/HTTP receiver: `POST /v1/traces` bodies (and their headers) kept as they came.
struct Receiver {
    port: u16,
    posts: Arc<Posts>,
}

impl Receiver {
    fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let posts = Arc::new(Mutex::new(Vec::new()));
        let kept = posts.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let kept = kept.clone();
                std::thread::spawn(move || serve(conn, &kept));
            }
        });
        Receiver { port, posts }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn spans(&self) -> Vec<Span> {
        let posts = self.posts.lock().unwrap();
        posts
            .iter()
            .flat_map(|(_, body)| {
                let req = ExportTraceServiceRequest::decode(&body[..]).unwrap();
                req.resource_spans
                    .into_iter()
                    .flat_map(|r| r.scope_spans)
                    .flat_map(|s| s.spans)
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

/// HTTP/1.1 keep-alive requests with a `Content-Length` body, each answered 200.
fn serve(conn: std::net::TcpStream, kept: &Posts) {
    let mut out = conn.try_clone().unwrap();
    let mut reader = BufReader::new(conn);
    loop {
        let mut head = Vec::new();
        let mut len = 0usize;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end().to_string();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    len = value.trim().parse().unwrap();
                }
            }
            head.push(line);
        }
        let mut body = vec![0; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        assert!(head[0].starts_with("POST /v1/traces "), "{head:?}");
        kept.lock().unwrap().push((head, body));
        let answer =
            "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
        if out.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

fn attr(span: &Span, key: &str) -> Option<String> {
    let kv = span.attributes.iter().find(|kv| kv.key == key)?;
    Some(match kv.value.as_ref()?.value.as_ref()? {
        Any::StringValue(s) => s.clone(),
        Any::IntValue(i) => i.to_string(),
        Any::BoolValue(b) => b.to_string(),
        Any::DoubleValue(d) => d.to_string(),
        other => format!("{other:?}"),
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

const PROMPT: &str = "a prompt that must never reach a span";
const KEY_A: &str = "sk-first-secret-key-0001";
const KEY_B: &str = "sk-second-secret-key-0002";

/// Two providers on the mock: `a` (key `first`), and `b` (key `second`) as `a`'s fallback.
fn providers(mock: &Mock) -> String {
    format!(
        r#"providers:
  - name: a
    type: openai-compatible
    base_url: "{url}"
    api_keys: [{{name: first, key: "{KEY_A}"}}]
  - name: b
    type: openai-compatible
    base_url: "{url}"
    api_keys: [{{name: second, key: "{KEY_B}"}}]
routes:
  - name: default
    forward_headers: ["x-mock-*", "traceparent", "tracestate"]
    models:
      - model: "mock-*"
        targets: [{{provider: a}}, {{provider: b, weight: 0}}]
"#,
        url = mock.url()
    )
}

async fn chat(
    gw: &Gateway,
    id: &str,
    stream: bool,
    traceparent: Option<&str>,
) -> (Value, Vec<Value>) {
    let mut body = json!({"model": "mock-a", "messages": [{"role": "user", "content": PROMPT}]});
    if stream {
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
    }
    let mut req = client()
        .post(gw.url("/v1/chat/completions"))
        .header("x-request-id", id)
        .header("x-mock-echo", "1")
        .header("tracestate", "caller=1")
        .json(&body);
    if let Some(tp) = traceparent {
        req = req.header("traceparent", tp);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    if stream {
        let events: Vec<Value> = sse_data(&text)
            .into_iter()
            .filter(|d| d != "[DONE]")
            .map(|d| serde_json::from_str(&d).unwrap())
            .collect();
        (events[0]["mock_echo"].clone(), events)
    } else {
        let v: Value = serde_json::from_str(&text).unwrap();
        (v["mock_echo"].clone(), vec![v])
    }
}

/// The usage the mock reported: (prompt, completion).
fn usage(answer: &[Value]) -> (u64, u64) {
    let u = answer
        .iter()
        .find(|v| v["usage"].is_object())
        .map(|v| v["usage"].clone())
        .unwrap();
    (
        u["prompt_tokens"].as_u64().unwrap(),
        u["completion_tokens"].as_u64().unwrap(),
    )
}

const KIND_SERVER: i32 = 2;
const KIND_CLIENT: i32 = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_follow_the_callers_trace_and_reach_the_collector() {
    let receiver = Receiver::start();
    let mock = Mock::start();
    let body = format!(
        "{}\ntracing:\n  otlp_endpoint: \"{}\"\n  headers: {{x-collector-token: \"tok-123\"}}\n",
        providers(&mock),
        receiver.url()
    );
    let mut gw = Gateway::start(&body);
    // `tollgate -t` accepts the section.
    let (ok, err) = run_tollgate(&["-t"], &gw.config_path, DEADLINE);
    assert_eq!(ok, Some(true), "{err}");

    let trace_a = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller = "00f067aa0ba902b7";
    let tp = |trace: &str| format!("00-{trace}-{caller}-01");
    let trace_c = "0af7651916cd43dd8448eb211c80319c";
    let trace_d = "11111111111111112222222222222222";
    let (echo_a, answer_a) = chat(&gw, "tr-a", false, Some(&tp(trace_a))).await;
    let (echo_b, answer_b) = chat(&gw, "tr-b", false, None).await;
    let (echo_c, answer_c) = chat(&gw, "tr-c", true, Some(&tp(trace_c))).await;
    // The failover: key `first` of provider a fails once, b answers.
    let fault = client()
        .post(format!("http://{}/mock/faults", mock.addr))
        .json(&json!({"key": KEY_A, "status": 500, "count": 1}))
        .send()
        .await
        .unwrap();
    assert!(fault.status().is_success());
    let (echo_d, answer_d) = chat(&gw, "tr-d", false, Some(&tp(trace_d))).await;

    let ids = ["tr-a", "tr-b", "tr-c", "tr-d"];
    eventually("the four requests' spans at the collector", || async {
        let spans = receiver.spans();
        ids.iter().all(|id| {
            spans
                .iter()
                .any(|s| attr(s, "tollgate.request_id").as_deref() == Some(id))
        })
    })
    .await;
    let spans = receiver.spans();
    let server = |id: &str| {
        let found: Vec<&Span> = spans
            .iter()
            .filter(|s| attr(s, "tollgate.request_id").as_deref() == Some(id))
            .collect();
        assert_eq!(found.len(), 1, "{id}: one request span");
        found[0].clone()
    };
    let children = |parent: &Span| {
        let mut c: Vec<Span> = spans
            .iter()
            .filter(|s| s.parent_span_id == parent.span_id && s.trace_id == parent.trace_id)
            .cloned()
            .collect();
        c.sort_by_key(|s| s.start_time_unix_nano);
        c
    };
    // The traceparent the mock saw: the gateway's, for the delivering attempt.
    let upstream = |echo: &Value| -> (String, String) {
        let tp = echo["headers"]["traceparent"].as_str().unwrap().to_string();
        let parts: Vec<&str> = tp.split('-').collect();
        assert_eq!((parts.len(), parts[0], parts[3]), (4, "00", "01"), "{tp}");
        (parts[1].to_string(), parts[2].to_string())
    };

    for (id, echo, answer, trace, attempts, stream) in [
        ("tr-a", &echo_a, &answer_a, Some(trace_a), 1, false),
        ("tr-b", &echo_b, &answer_b, None, 1, false),
        ("tr-c", &echo_c, &answer_c, Some(trace_c), 1, true),
        ("tr-d", &echo_d, &answer_d, Some(trace_d), 2, false),
    ] {
        let s = server(id);
        assert_eq!(s.kind, KIND_SERVER, "{id}");
        assert_eq!(s.name, "chat mock-a", "{id}");
        match trace {
            Some(t) => {
                assert_eq!(hex(&s.trace_id), t, "{id}: the caller's trace");
                assert_eq!(hex(&s.parent_span_id), caller, "{id}: the caller's span");
                assert_eq!(echo["headers"]["tracestate"], "caller=1", "{id}");
            }
            None => {
                assert!(s.parent_span_id.is_empty(), "{id}: a root span");
                // Without a traceparent, the client's tracestate is not passed on.
                assert!(echo["headers"]["tracestate"].is_null(), "{id}: {echo}");
            }
        }
        let (input, output) = usage(answer);
        for (k, v) in [
            ("gen_ai.operation.name", "chat".to_string()),
            ("gen_ai.request.model", "mock-a".into()),
            ("gen_ai.provider.name", "openai-compatible".into()),
            ("gen_ai.usage.input_tokens", input.to_string()),
            ("gen_ai.usage.output_tokens", output.to_string()),
            ("gen_ai.request.stream", stream.to_string()),
            ("http.response.status_code", "200".into()),
            ("tollgate.route", "default".into()),
            ("tollgate.attempts", attempts.to_string()),
        ] {
            assert_eq!(attr(&s, k).as_deref(), Some(v.as_str()), "{id}: {k}");
        }
        assert!(attr(&s, "error.type").is_none(), "{id}");
        let kids = children(&s);
        assert_eq!(kids.len(), attempts, "{id}: one span per attempt");
        for k in &kids {
            assert_eq!(k.kind, KIND_CLIENT, "{id}");
            assert_eq!(k.name, "chat mock-a", "{id}");
            assert!(k.start_time_unix_nano >= s.start_time_unix_nano, "{id}");
            assert!(k.end_time_unix_nano <= s.end_time_unix_nano, "{id}");
        }
        // The mock saw the delivering attempt's context, not the caller's.
        let last = kids.last().unwrap();
        let (up_trace, up_span) = upstream(echo);
        assert_eq!(up_trace, hex(&s.trace_id), "{id}");
        assert_eq!(up_span, hex(&last.span_id), "{id}");
        assert_ne!(up_span, caller, "{id}");
        assert_eq!(
            attr(last, "http.response.status_code").as_deref(),
            Some("200")
        );
        assert_eq!(
            attr(last, "gen_ai.usage.output_tokens"),
            Some(output.to_string())
        );
        assert!(attr(last, "error.type").is_none(), "{id}");
    }
    let d = children(&server("tr-d"));
    assert_eq!(attr(&d[0], "tollgate.provider").as_deref(), Some("a"));
    assert_eq!(attr(&d[0], "tollgate.key").as_deref(), Some("first"));
    assert_eq!(
        attr(&d[0], "http.response.status_code").as_deref(),
        Some("500")
    );
    assert_eq!(attr(&d[0], "error.type").as_deref(), Some("500"));
    assert_eq!(attr(&d[1], "tollgate.provider").as_deref(), Some("b"));
    assert_eq!(attr(&d[1], "tollgate.key").as_deref(), Some("second"));
    assert_eq!(
        attr(&server("tr-d"), "tollgate.key").as_deref(),
        Some("second")
    );

    // Nothing secret or private was exported; the collector's header came with each post.
    let posts = receiver.posts.lock().unwrap().clone();
    for (head, body) in &posts {
        let raw = String::from_utf8_lossy(body);
        for never in [KEY_A, KEY_B, PROMPT, " wörld"] {
            assert!(!raw.contains(never), "{never:?} exported");
        }
        assert!(
            head.iter().any(|h| h == "x-collector-token: tok-123"),
            "{head:?}"
        );
        assert!(head
            .iter()
            .any(|h| h.eq_ignore_ascii_case("content-type: application/x-protobuf")));
    }
    let metrics = gw.metrics().await;
    assert_eq!(
        metric_sum(&metrics, "tollgate_traces_dropped_total", &[]),
        0.0
    );
    chat(&gw, "tr-e", false, None).await;
    gw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_is_away_costs_requests_nothing_and_drops_are_counted() {
    let mock = Mock::start();
    let body = format!(
        "{}\ntracing:\n  otlp_endpoint: \"http://127.0.0.1:{}\"\n  queue: 4\n  timeout: 1s\n",
        mock_provider(&mock.url(), ""),
        closed_port()
    );
    let gw = Gateway::start(&body);
    eventually("spans dropped and counted", || async {
        for _ in 0..10 {
            let resp = client()
                .post(gw.url("/v1/chat/completions"))
                .json(&json!({"model": "mock-a", "messages": []}))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
        }
        metric_sum(&gw.metrics().await, "tollgate_traces_dropped_total", &[]) > 0.0
    })
    .await;
    let resp = client()
        .post(gw.url("/v1/chat/completions"))
        .json(&json!({"model": "mock-a", "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

async fn reload(gw: &Gateway) -> Value {
    let resp = client()
        .post(gw.admin_url("/admin/reload"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

fn has_request(receiver: &Receiver, id: &str) -> bool {
    receiver
        .spans()
        .iter()
        .any(|s| attr(s, "tollgate.request_id").as_deref() == Some(id))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracing_is_switched_and_redirected_by_a_reload() {
    let (one, two) = (Receiver::start(), Receiver::start());
    let mock = Mock::start();
    let tracing = |r: &Receiver, queue: usize| {
        format!(
            "{}\ntracing: {{otlp_endpoint: \"{}\", queue: {queue}}}\n",
            providers(&mock),
            r.url()
        )
    };
    let caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    // Off: the gateway leaves trace context alone (this route forwards the client's as is).
    let gw = Gateway::start(&providers(&mock));
    let (echo, _) = chat(&gw, "off-1", false, Some(caller)).await;
    assert_eq!(echo["headers"]["traceparent"], caller);
    assert_eq!(echo["headers"]["tracestate"], "caller=1");

    gw.rewrite_config(&tracing(&one, 2048));
    assert_eq!(reload(&gw).await["needs_upgrade"], json!([]));
    let (echo, _) = chat(&gw, "on-1", false, Some(caller)).await;
    assert_ne!(echo["headers"]["traceparent"], caller);
    eventually("spans at the first collector", || async {
        has_request(&one, "on-1")
    })
    .await;

    // Another collector applies at once; the queue size only after a restart.
    gw.rewrite_config(&tracing(&two, 16));
    assert_eq!(reload(&gw).await["needs_upgrade"], json!(["tracing.queue"]));
    chat(&gw, "on-2", false, Some(caller)).await;
    eventually("spans at the second collector", || async {
        has_request(&two, "on-2")
    })
    .await;
    assert!(!has_request(&one, "on-2"));

    gw.rewrite_config(&providers(&mock));
    reload(&gw).await;
    let (echo, _) = chat(&gw, "off-2", false, Some(caller)).await;
    assert_eq!(echo["headers"]["traceparent"], caller);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orderly_stop_exports_what_is_queued() {
    let receiver = Receiver::start();
    let mock = Mock::start();
    let body = format!(
        "{}\ntracing: {{otlp_endpoint: \"{}\"}}\n",
        providers(&mock),
        receiver.url()
    );
    let mut gw = Gateway::start(&body);
    chat(&gw, "last-words", false, None).await;
    // Stopped at once, before the batch is due: the exit flushes it.
    gw.signal_and_wait("-TERM");
    assert!(
        has_request(&receiver, "last-words"),
        "{}",
        gw.access_log_text()
    );
}
