//! Client headers and provider secrets: only an allow-list of client headers reaches the
//! provider (never a credential, never the consumer's own key); a client cannot change any
//! key's state by what it sends; provider keys echoed back never reach a client; upstream
//! text is quoted only as a short excerpt.

use crate::common::*;
use serde_json::{json, Value};
use std::time::Duration;

const TENANT_SECRET: &str = "tenant-secret-0042";
const SECOND_KEY: &str = "sk-second-provider-key-98765";

/// A chat completion the gateway accepts as a 200 answer.
const CHAT_OK: &str = r#"{"id":"c1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#;

fn chat() -> Value {
    json!({"model": "mock-a", "messages": [{"role": "user", "content": "hi"}]})
}

/// Providers, consumers and one route; `route_extra` is added to the route.
fn config(base_url: &str, keys: &str, route_extra: &str) -> String {
    format!(
        r#"providers:
  - name: mock
    type: openai-compatible
    base_url: "{base_url}"
    api_keys: [{keys}]
consumers:
  - name: tenant
    credentials: ["{TENANT_SECRET}"]
auth:
  sources: [bearer, "header:x-tenant-key"]
routes:
  - name: default
{route_extra}
    models:
      - model: "mock-*"
        targets: [{{provider: mock}}]
"#
    )
}

async fn admin_keys(gw: &Gateway) -> Vec<Value> {
    let v = get_json(&gw.admin_url("/admin/keys"), None).await;
    v["providers"][0]["keys"].as_array().unwrap().clone()
}

async fn normal_request_served(gw: &Gateway) {
    let resp = client()
        .post(gw.url("/v1/chat/completions"))
        .header("x-tenant-key", TENANT_SECRET)
        .json(&chat())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

/// Every hostile header a client might try, credentials included.
fn hostile_headers(i: usize) -> Vec<(&'static str, String)> {
    let mut h = vec![
        ("openai-organization", format!("org-evil-{i}")),
        ("openai-project", "proj-evil".into()),
        ("x-api-key", "sk-evil".into()),
        ("api-key", "sk-evil".into()),
        ("x-goog-api-key", "sk-evil".into()),
        ("cookie", "session=evil".into()),
        ("x-tenant-key", TENANT_SECRET.into()),
        ("proxy-authorization", "Basic ZXZpbDpldmls".into()),
        ("x-forwarded-host", "evil.example".into()),
    ];
    h.push(match i % 4 {
        0 => ("authorization", "Bearer sk-evil".into()),
        1 => ("authorization", "Basic ZXZpbDpldmls".into()),
        2 => ("authorization", "bearer".into()),
        _ => ("x-huge", "h".repeat(16 * 1024)),
    });
    h
}

/// A client cannot change any key's state, whatever it sends: hostile headers are not
/// forwarded (mock-llm refuses any `openai-organization` with 401, as OpenAI does for a
/// foreign organization), and a 401/403 the provider gives because of what a client sent (here
/// a header the route chose to forward) only makes the key suspect until the gateway's own
/// health check clears it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_never_change_key_state() {
    let mock = Mock::start();
    let keys = r#"{name: k1, key: "sk-key-one-0001"}, {name: k2, key: "sk-key-two-0002"}, {name: k3, key: "sk-key-three-0003"}"#;
    let gw = Gateway::start(&config(
        &mock.url(),
        keys,
        "    forward_headers: [x-mock-status]\n    retry: {attempts: 3, per_target: 3}",
    ));
    let c = client();
    for i in 0..24 {
        let mut req = c.post(gw.url("/v1/chat/completions")).json(&chat());
        for (name, value) in hostile_headers(i) {
            req = req.header(name, value);
        }
        // Every third request makes the provider refuse whichever key it is sent with.
        let refused = i % 3 == 2;
        if refused {
            req = req.header("x-mock-status", if i % 2 == 0 { "401" } else { "403" });
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        if refused {
            assert_eq!(status, 502, "request {i}");
        } else if i % 4 != 3 {
            assert_eq!(status, 200, "request {i}: {}", resp.text().await.unwrap());
        }
    }
    // No key ever changed state; suspicion is cleared by the gateway's own checks.
    eventually("every key healthy and cleared", || async {
        admin_keys(&gw)
            .await
            .iter()
            .all(|k| k["state"] == "healthy" && k["suspect"] == false)
    })
    .await;
    for k in admin_keys(&gw).await {
        assert!(k["changed_at_ms"].is_null(), "key changed state: {k}");
    }
    let metrics = gw.metrics().await;
    assert!(
        metric_sum(
            &metrics,
            "tollgate_health_checks_total",
            &[("outcome", "ok")]
        ) >= 1.0,
        "suspect keys were checked"
    );
    normal_request_served(&gw).await;
}

/// A scripted provider records what it receives: only the allow-list and the route's
/// `forward_headers` arrive, with the gateway's own key, and never the consumer credential.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_allow_listed_headers_reach_the_provider() {
    let up = RawUpstream::fixed(http_json(200, CHAT_OK));
    let gw = Gateway::start(&config(
        &up.url(),
        &format!("\"{PROVIDER_KEY}\""),
        "    forward_headers: [X-Custom-Trace, OpenAI-Organization]",
    ));
    let resp = client()
        .post(gw.url("/v1/chat/completions"))
        .header("x-tenant-key", TENANT_SECRET)
        .header("x-request-id", "trace-me-1")
        .header("accept", "application/json")
        .header("openai-beta", "assistants=v2")
        .header("anthropic-beta", "not-for-openai")
        .header("x-custom-trace", "t-1")
        .header("openai-organization", "org-listed")
        .header("openai-project", "proj-not-listed")
        .header("cookie", "session=abc")
        .header("x-api-key", "sk-client")
        .header("x-forwarded-for", "203.0.113.9")
        .header("user-agent", "evil-agent/1.0")
        .header("accept-encoding", "gzip")
        .header("x-stainless-os", "Linux")
        .header("te", "trailers")
        .json(&chat())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let received = up.received();
    assert_eq!(received.len(), 1);
    let req = &received[0];
    let names: std::collections::BTreeSet<String> = req
        .head
        .lines()
        .skip(1)
        .filter_map(|l| {
            l.split_once(':')
                .map(|(k, _)| k.trim().to_ascii_lowercase())
        })
        .collect();
    let allowed = [
        "host",
        "content-type",
        "content-length",
        "authorization",
        "user-agent",
        "x-request-id",
        "accept",
        "openai-beta",
        "x-custom-trace",
        "openai-organization",
    ];
    for n in &names {
        assert!(
            allowed.contains(&n.as_str()),
            "`{n}` forwarded:\n{}",
            req.head
        );
    }
    assert_eq!(
        req.header("authorization").unwrap(),
        format!("Bearer {PROVIDER_KEY}")
    );
    assert_eq!(req.header("x-custom-trace").unwrap(), "t-1");
    assert_eq!(req.header("openai-organization").unwrap(), "org-listed");
    assert_eq!(req.header("openai-beta").unwrap(), "assistants=v2");
    assert_eq!(req.header("x-request-id").unwrap(), "trace-me-1");
    assert!(req.header("user-agent").unwrap().starts_with("tollgate/"));
    assert!(req.header("x-tenant-key").is_none());
    assert!(!req.head.contains(TENANT_SECRET), "{}", req.head);
    assert!(!req.head.contains("sk-client"), "{}", req.head);

    // A route may not forward a credential header, the consumer's included: refused at load.
    for (entry, says) in [
        ("x-tenant-key", "auth.sources"),
        ("Authorization", "credential"),
        ("cookie", "credential"),
        ("x-api-*", "credential"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.yaml");
        let body = config(
            &up.url(),
            &format!("\"{PROVIDER_KEY}\""),
            &format!("    forward_headers: [\"{entry}\"]"),
        );
        let text = config_text(dir.path(), PROXY_LISTEN, ADMIN_LISTEN, None, None, &body);
        std::fs::write(&path, text).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args(["-t", "-c"])
            .arg(&path)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{entry} accepted");
        assert!(
            text.contains("routes[0] (default).forward_headers[0]") && text.contains(says),
            "{entry}: {text}"
        );
    }
    normal_request_served(&gw).await;
}

/// What a client receives, headers and body, as one string.
async fn everything(resp: reqwest::Response) -> (u16, String) {
    let status = resp.status().as_u16();
    let mut all = String::new();
    for (k, v) in resp.headers() {
        all.push_str(&format!("{k}: {}\n", String::from_utf8_lossy(v.as_bytes())));
    }
    all.push_str(&resp.text().await.unwrap());
    (status, all)
}

/// A provider that echoes keys (its own and the pool's other one) in headers and in error
/// bodies: no key value ever reaches the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_keys_never_reach_the_client() {
    let up = RawUpstream::start(|req, conn| {
        use std::io::Write;
        let key = req.header("authorization").unwrap_or_default();
        let scenario = req.header("x-scenario").unwrap_or_default();
        let echo = format!("x-echo: {key}\r\nx-echo-other: {SECOND_KEY}\r\n");
        let msg = format!("Incorrect API key provided: {key} (also {SECOND_KEY})");
        let error = json!({"error": {"message": msg, "type": "invalid_request_error"}}).to_string();
        let out = match scenario.as_str() {
            "ok" => format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n{echo}content-length: {}\r\nconnection: close\r\n\r\n{CHAT_OK}",
                CHAT_OK.len()
            ),
            "400" => format!(
                "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n{echo}content-length: {}\r\nconnection: close\r\n\r\n{error}",
                error.len()
            ),
            // The key split across two chunks of a chunked error body.
            "404" => {
                let (a, b) = error.split_at(error.find("sk-").unwrap() + 6);
                format!(
                    "HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\n{echo}transfer-encoding: chunked\r\nconnection: close\r\n\r\n{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
                    a.len(),
                    b.len()
                )
            }
            // Retried, then quoted in the gateway's own message.
            "500" => format!(
                "HTTP/1.1 500 Oops\r\ncontent-type: application/json\r\n{echo}content-length: {}\r\nconnection: close\r\n\r\n{error}",
                error.len()
            ),
            _ => String::from_utf8(http_json(200, CHAT_OK)).unwrap(),
        };
        let _ = conn.write_all(out.as_bytes());
    });
    let gw = Gateway::start(&config(
        &up.url(),
        &format!("\"{PROVIDER_KEY}\", \"{SECOND_KEY}\""),
        "    forward_headers: [x-scenario]",
    ));
    for (scenario, want) in [("ok", 200), ("400", 400), ("404", 404), ("500", 500)] {
        let resp = client()
            .post(gw.url("/v1/chat/completions"))
            .header("x-scenario", scenario)
            .json(&chat())
            .send()
            .await
            .unwrap();
        let (status, all) = everything(resp).await;
        assert_eq!(status, want, "{scenario}: {all}");
        assert!(!all.contains(PROVIDER_KEY), "{scenario}: {all}");
        assert!(!all.contains(SECOND_KEY), "{scenario}: {all}");
        assert!(!all.contains("sk-provider"), "{scenario}: {all}");
        if scenario != "500" {
            assert!(
                all.contains("x-echo: Bearer [redacted]"),
                "{scenario}: {all}"
            );
        }
        if scenario == "400" || scenario == "404" {
            assert!(all.contains("Incorrect API key provided: Bearer [redacted] (also [redacted])"));
        }
    }
    normal_request_served(&gw).await;
}

/// Upstream bytes are quoted in a 5xx message only as a short, single-line excerpt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_text_is_quoted_as_a_short_excerpt() {
    let garbage: String = (0..14_000u32)
        .map(|i| match i % 7 {
            0 => '\u{1b}',
            1 => '\n',
            2 => 'é',
            _ => 'x',
        })
        .collect();
    let json_message = json!({"error": {"message": garbage.clone()}}).to_string();
    let g = garbage.clone();
    let up = RawUpstream::start(move |req, conn| {
        use std::io::Write;
        let out = match req.header("x-scenario").as_deref() {
            Some("json") => format!(
                "HTTP/1.1 500 Oops\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{json_message}",
                json_message.len()
            ),
            Some("text") => format!(
                "HTTP/1.1 503 Oops\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{g}",
                g.len()
            ),
            // Not HTTP at all.
            Some("garbage") => g.clone(),
            _ => String::from_utf8(http_json(200, CHAT_OK)).unwrap(),
        };
        let _ = conn.write_all(out.as_bytes());
    });
    let gw = Gateway::start(&config(
        &up.url(),
        &format!("\"{PROVIDER_KEY}\""),
        "    forward_headers: [x-scenario]\n    retry: {attempts: 1}",
    ));
    for scenario in ["json", "text", "garbage"] {
        let resp = client()
            .post(gw.url("/v1/chat/completions"))
            .header("x-scenario", scenario)
            .timeout(Duration::from_secs(30))
            .json(&chat())
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap();
        assert!(status >= 500, "{scenario}: {status} {body}");
        let msg = body["error"]["message"].as_str().unwrap();
        // The gateway's own words plus an excerpt of at most 256 bytes.
        assert!(msg.len() <= 512, "{scenario}: {} bytes: {msg}", msg.len());
        assert!(!msg.chars().any(char::is_control), "{scenario}: {msg:?}");
    }
    // Three failures took the key out; the gateway's check (a good answer) brings it back.
    eventually("key back in rotation", || async {
        admin_keys(&gw)
            .await
            .iter()
            .all(|k| k["state"] == "healthy")
    })
    .await;
    normal_request_served(&gw).await;
}
