//! Prompt decorators, templates and input moderation against real processes: the exact body
//! a provider receives (mock-llm's `x-mock-echo`), refusals before anything goes upstream
//! (mock-llm's `/mock/stats`), and a moderation hook that flags, fails or never answers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use common::{fnv64, metric_sum, mock_stats, Gateway, Mock, RawUpstream};
use serde_json::{json, Value};

fn config(mock: &Mock, routes: &str, extra: &str) -> String {
    format!(
        r#"providers:
  - name: mock
    type: openai-compatible
    base_url: "{}"
    api_keys: ["sk-provider"]
consumers:
  - name: ann
    credentials: ["sk-ann"]
    decorators:
      append: [{{role: user, content: "(asked by ${{consumer}})"}}]
{extra}
routes:
{routes}"#,
        mock.url()
    )
}

/// A route at `prefix` for `mock-*` and `omni-moderation-latest`, with `more` YAML.
fn route(name: &str, prefix: &str, more: &str) -> String {
    format!(
        r#"  - name: {name}
    path_prefix: {prefix}
    forward_headers: ["x-mock-*"]
    models:
      - model: "mock-*"
        targets: [{{provider: mock}}]
      - model: omni-moderation-latest
        targets: [{{provider: mock}}]
{more}"#
    )
}

async fn post(gw: &Gateway, path: &str, key: Option<&str>, body: &str) -> (u16, Value, String) {
    let mut req = common::client()
        .post(gw.url(path))
        .header("content-type", "application/json")
        .header("x-mock-echo", "1")
        .body(body.to_string());
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    (status, resp.json().await.unwrap(), id)
}

/// The body the provider received, checked byte for byte by its FNV-64.
fn assert_sent(answer: &Value, expected: &str) {
    let echo = &answer["mock_echo"];
    assert_eq!(echo["body_len"], expected.len(), "{echo}");
    assert_eq!(
        echo["body_fnv64"],
        fnv64(expected.as_bytes()),
        "{echo}\n{expected}"
    );
}

const DECORATORS: &str = r#"    decorators:
      prepend: [{role: system, content: "Route ${route}; model ${model}; say \"hi\"."}]
"#;

const TEMPLATES: &str = r#"templates:
  - name: greet
    model: mock-greeter
    messages:
      - {role: user, content: "Greet {{name}} {{times}} times."}
    variables:
      name: {type: string}
      times: {type: number, default: 1}
"#;

#[tokio::test]
async fn decorators_and_templates_reach_the_provider_byte_for_byte() {
    let mock = Mock::start();
    let routes = route("deco", "/v1", DECORATORS);
    let gw = Gateway::start(&config(&mock, &routes, TEMPLATES));
    // Decorators of the route and of the consumer around the client's messages.
    let body = r#"{"model":"mock-a","messages":[{"role":"user","content":"hello"}]}"#;
    let (status, answer, id) = post(&gw, "/v1/chat/completions", Some("sk-ann"), body).await;
    assert_eq!(status, 200, "{answer}");
    assert_sent(
        &answer,
        r#"{"model":"mock-a","messages":[{"role":"system","content":"Route deco; model mock-a; say \"hi\"."},{"role":"user","content":"hello"},{"role":"user","content":"(asked by ann)"}]}"#,
    );
    assert_eq!(gw.log_line(&id)["policies"], json!(["decorator:applied"]));
    // A template, its variable JSON-escaped, then routed by the template's model.
    let body = r#"{"model":"template:greet","variables":{"name":"Zoë \"Z\"\n"},"temperature":0}"#;
    let (status, answer, id) = post(&gw, "/v1/chat/completions", None, body).await;
    assert_eq!(status, 200, "{answer}");
    assert_sent(
        &answer,
        r#"{"model":"mock-greeter","messages":[{"role":"system","content":"Route deco; model mock-greeter; say \"hi\"."},{"role":"user","content":"Greet Zoë \"Z\"\n 1 times."}],"temperature":0}"#,
    );
    assert_eq!(
        gw.log_line(&id)["policies"],
        json!(["template:expanded", "decorator:applied"])
    );
    let metrics = gw.metrics().await;
    let count = |p: &str, a: &str| {
        metric_sum(
            &metrics,
            "tollgate_policy_actions_total",
            &[("route", "deco"), ("policy", p), ("action", a)],
        )
    };
    assert_eq!(count("decorator", "applied"), 2.0);
    assert_eq!(count("template", "expanded"), 1.0);
}

#[tokio::test]
async fn bad_template_invocations_are_400_before_anything_goes_upstream() {
    let mock = Mock::start();
    let gw = Gateway::start(&config(&mock, &route("plain", "/v1", ""), TEMPLATES));
    for (body, needle) in [
        (r#"{"model":"template:nope"}"#, "`nope`"),
        (r#"{"model":"template:greet"}"#, "`name`"),
        (
            r#"{"model":"template:greet","variables":{"name":"x","times":"two"}}"#,
            "`times`",
        ),
        (
            r#"{"template":"greet","variables":{"name":"x","extra":1}}"#,
            "`extra`",
        ),
    ] {
        let (status, answer, _) = post(&gw, "/v1/chat/completions", None, body).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["error"]["type"], "invalid_request_error", "{answer}");
        assert_eq!(answer["error"]["code"], "invalid_template", "{answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(needle), "{body}: {message}");
    }
    assert_eq!(mock_stats(&mock).await["requests_total"], 0);
}

#[tokio::test]
async fn moderation_through_the_gateways_own_route_blocks_flagged_input() {
    let mock = Mock::start();
    let moderated = "    moderation: {via: route_model, model: omni-moderation-latest}\n";
    let gw = Gateway::start(&config(&mock, &route("mod", "/v1", moderated), ""));
    let flagged =
        r#"{"model":"mock-a","messages":[{"role":"user","content":"please FLAGME now"}]}"#;
    let (status, answer, id) = post(&gw, "/v1/chat/completions", Some("sk-ann"), flagged).await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(
        answer["error"]["code"], "content_policy_violation",
        "{answer}"
    );
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("harassment"),
        "{answer}"
    );
    assert_eq!(
        gw.log_line(&id)["policies"],
        json!(["moderation_input:flagged"])
    );
    let stats = mock_stats(&mock).await;
    assert_eq!(stats["by_path"]["/v1/moderations"], 1, "{stats}");
    assert!(
        stats["by_path"].get("/v1/chat/completions").is_none(),
        "{stats}"
    );
    // Anthropic clients are answered in their own protocol.
    let flagged =
        r#"{"model":"mock-a","max_tokens":5,"messages":[{"role":"user","content":"flagme"}]}"#;
    let (status, answer, _) = post(&gw, "/v1/messages", None, flagged).await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["type"], "error", "{answer}");
    // Clean input goes on.
    let clean = r#"{"model":"mock-a","messages":[{"role":"user","content":"hello"}]}"#;
    let (status, answer, _) = post(&gw, "/v1/chat/completions", None, clean).await;
    assert_eq!(status, 200, "{answer}");
    let stats = mock_stats(&mock).await;
    assert_eq!(stats["by_path"]["/v1/chat/completions"], 1, "{stats}");
    assert_eq!(stats["by_path"]["/v1/moderations"], 3, "{stats}");
}

#[tokio::test]
async fn a_failing_hook_fails_open_or_closed_as_configured() {
    let mock = Mock::start();
    let broken = RawUpstream::fixed(common::http_json(500, r#"{"error":"down"}"#));
    // A hook that never answers: its connection is held until the test process ends.
    let silent = RawUpstream::start(|_, conn| {
        let mut buf = [0u8; 1];
        let _ = std::io::Read::read(conn, &mut buf);
    });
    let flagging = RawUpstream::fixed(common::http_json(
        200,
        r#"{"flagged":true,"categories":["test-category"]}"#,
    ));
    let hook = |addr: &str, more: &str| {
        format!(
            "    moderation: {{via: hook, url: \"http://{addr}/check\", timeout: 300ms{more}}}\n"
        )
    };
    let routes = [
        route(
            "closed",
            "/closed/v1",
            &hook(&broken.addr, ", on_error: fail_closed"),
        ),
        route("open", "/open/v1", &hook(&silent.addr, "")),
        route("flag", "/flag/v1", &hook(&flagging.addr, "")),
    ]
    .concat();
    let gw = Gateway::start(&config(&mock, &routes, ""));
    let body = r#"{"model":"mock-a","messages":[{"role":"user","content":"hello"}]}"#;
    let (status, answer, _) = post(&gw, "/closed/v1/chat/completions", Some("sk-ann"), body).await;
    assert_eq!(status, 503, "{answer}");
    assert_eq!(
        answer["error"]["code"], "moderation_unavailable",
        "{answer}"
    );
    assert_eq!(mock_stats(&mock).await["requests_total"], 0);
    // The hook's contract: the texts, the route and the consumer.
    let sent: Value = serde_json::from_slice(&broken.received()[0].body).unwrap();
    assert_eq!(
        sent,
        json!({"input": ["hello"], "route": "closed", "consumer": "ann"})
    );
    let (status, answer, id) = post(&gw, "/open/v1/chat/completions", None, body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        gw.log_line(&id)["policies"],
        json!(["moderation_input:failed_open"])
    );
    let (status, answer, _) = post(&gw, "/flag/v1/chat/completions", None, body).await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["error"]["code"], "content_policy_violation");
    assert!(answer["error"]["message"]
        .as_str()
        .unwrap()
        .contains("test-category"));
    assert_eq!(mock_stats(&mock).await["requests_total"], 1);
    let metrics = gw.metrics().await;
    for (route, action) in [
        ("closed", "failed_closed"),
        ("open", "failed_open"),
        ("flag", "flagged"),
    ] {
        let labels = [
            ("route", route),
            ("policy", "moderation_input"),
            ("action", action),
        ];
        assert_eq!(
            metric_sum(&metrics, "tollgate_policy_actions_total", &labels),
            1.0,
            "{route}"
        );
    }
    assert_eq!(
        gw.stderr().matches("moderation on route").count(),
        1,
        "failures are logged once a minute"
    );
}

#[tokio::test]
async fn anthropic_clients_get_system_decorators_in_system() {
    let mock = Mock::start();
    let text = format!(
        r#"providers:
  - name: claude
    type: anthropic
    base_url: "http://{}/v1"
    api_keys: ["sk-ant-test"]
routes:
  - name: anth
    forward_headers: ["x-mock-*"]
    decorators:
      prepend: [{{role: system, content: "Be terse (${{route}})."}}]
      append: [{{role: user, content: "Thanks."}}]
    models:
      - model: "claude-*"
        targets: [{{provider: claude}}]
"#,
        mock.addr
    );
    let gw = Gateway::start(&text);
    let body = r#"{"model":"claude-x","max_tokens":5,"system":"You are Claude.","messages":[{"role":"user","content":"hi"}]}"#;
    let resp = common::client()
        .post(gw.url("/v1/messages"))
        .header("content-type", "application/json")
        .header("anthropic-version", "2023-06-01")
        .header("x-mock-echo", "1")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let answer: Value = resp.json().await.unwrap();
    assert_sent(
        &answer,
        r#"{"model":"claude-x","max_tokens":5,"system":[{"type":"text","text":"Be terse (anth)."},{"type":"text","text":"You are Claude."}],"messages":[{"role":"user","content":"hi"},{"role":"user","content":"Thanks."}]}"#,
    );
}
