//! What OpenAI's SDKs expect of the gateway: default retries that reach a healthy key, the
//! status and code of authentication errors (401 `AuthenticationError`, 403
//! `PermissionDeniedError`), `GET /models` and `GET /models/{id}`, `Retry-After` on every
//! 429 and 503, and the quota API's answers and body formats.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use common::*;
use serde_json::{json, Value};

fn chat_body(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})
}

async fn post_chat(
    gw: &Gateway,
    prefix: &str,
    model: &str,
    bearer: Option<&str>,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut req = client()
        .post(gw.url(&format!("{prefix}/chat/completions")))
        .json(&chat_body(model));
    if let Some(b) = bearer {
        req = req.bearer_auth(b);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

/// Status, `Retry-After` (if any) and JSON body.
async fn parts(resp: reqwest::Response) -> (u16, Option<String>, Value) {
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    let body = resp.json().await.unwrap_or(Value::Null);
    (status, retry_after, body)
}

async fn get(gw: &Gateway, path: &str, bearer: Option<&str>) -> (u16, Value) {
    let mut req = client().get(gw.url(path));
    if let Some(b) = bearer {
        req = req.bearer_auth(b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn ids(list: &Value) -> Vec<String> {
    assert_eq!(list["object"], "list", "{list}");
    let mut ids: Vec<String> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            assert_eq!(m["object"], "model");
            m["id"].as_str().unwrap().to_string()
        })
        .collect();
    ids.sort();
    ids
}

async fn add_fault(mock: &Mock, rule: Value) {
    let resp = client()
        .post(format!("http://{}/mock/faults", mock.addr))
        .json(&rule)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

/// Three keys on one provider, one refused (401) and one failing (500): with the default
/// retry settings every request reaches the healthy third key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_retries_reach_the_healthy_key() {
    let mock = Mock::start();
    add_fault(&mock, json!({"key": "sk-revoked", "status": 401})).await;
    add_fault(&mock, json!({"key": "sk-failing", "status": 500})).await;
    let gw = Gateway::start(&format!(
        r#"providers:
  - name: mock
    type: openai-compatible
    base_url: "{url}"
    api_keys:
      - {{name: revoked, key: sk-revoked}}
      - {{name: failing, key: sk-failing}}
      - {{name: good, key: sk-good}}
routes:
  - name: default
    models:
      - model: "mock-*"
        targets: [{{provider: mock}}]
"#,
        url = mock.url()
    ));
    for i in 0..6 {
        let (status, _, body) = parts(post_chat(&gw, "/v1", "mock-a", None, &[]).await).await;
        assert_eq!(status, 200, "request {i}: {body}");
    }
    let stats = mock_stats(&mock).await;
    assert!(stats["by_key"]["sk-good"].as_u64().unwrap() >= 6, "{stats}");
}

fn auth_config(mock: &Mock) -> String {
    Body::mock(&mock.url())
        .consumers(&["alice", "bob"])
        .route("members", "paid-*", Some("{required: true}"))
        .route(
            "alice-only",
            "vip-*",
            Some("{required: true, allow: [alice]}"),
        )
        .build()
}

/// An unknown credential is 401 `invalid_api_key` (the SDK's `AuthenticationError`); 403
/// (`PermissionDeniedError`) is for a known consumer the route does not allow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication_errors_have_openai_statuses() {
    let mock = Mock::start();
    let gw = Gateway::start(&auth_config(&mock));
    let cases = [
        ("paid-1", None, 401, "missing_api_key"),
        ("paid-1", Some("sk-unknown"), 401, "invalid_api_key"),
        ("vip-1", Some("sk-unknown"), 401, "invalid_api_key"),
        ("vip-1", Some("sk-bob"), 403, "permission_denied"),
    ];
    for (model, bearer, status, code) in cases {
        let (s, _, body) = parts(post_chat(&gw, "/v1", model, bearer, &[]).await).await;
        assert_eq!((s, body["error"]["code"].as_str()), (status, Some(code)));
        assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
    }
    // The Anthropic shape says the same.
    let resp = client()
        .post(gw.url("/v1/messages"))
        .header("x-api-key", "sk-unknown")
        .json(&json!({"model": "paid-1", "max_tokens": 5,
            "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    let (s, _, body) = parts(resp).await;
    assert_eq!(s, 401);
    assert_eq!(body["error"]["type"], "authentication_error", "{body}");
    // Allowed consumers are served.
    let (s, _, _) = parts(post_chat(&gw, "/v1", "vip-1", Some("sk-alice"), &[]).await).await;
    assert_eq!(s, 200);
    let (s, _, _) = parts(post_chat(&gw, "/v1", "paid-1", Some("sk-bob"), &[]).await).await;
    assert_eq!(s, 200);
}

fn models_config(mock: &Mock) -> String {
    format!(
        r#"providers:
  - name: keyed
    type: openai-compatible
    base_url: "{url}"
    api_keys: ["sk-provider"]
    models: [keyed-extra, other-name]
  - name: keyless
    type: openai-compatible
    base_url: "{url}"
    api_keys: ["${{TOLLGATE_TEST_UNSET_KEY}}"]
    models: [keyless-extra]
  - name: shown
    type: openai-compatible
    base_url: "{url}"
    api_keys: ["${{TOLLGATE_TEST_UNSET_KEY}}"]
    list_unconfigured: true
consumers:
  - name: alice
    credentials: ["sk-alice"]
  - name: bob
    credentials: ["sk-bob"]
routes:
  - name: open
    models:
      - model: open-a
        targets: [{{provider: keyed}}]
      - model: "keyed-*"
        targets: [{{provider: keyed}}]
      - model: "keyless-*"
        targets: [{{provider: keyless}}]
      - model: shown-a
        targets: [{{provider: shown}}]
      - model: org/model-1
        targets: [{{provider: keyless}}, {{provider: keyed}}]
  - name: alice-only
    auth: {{required: true, allow: [alice]}}
    models:
      - model: alice-a
        targets: [{{provider: keyed}}]
  - name: bob-only
    auth: {{required: true, allow: [bob]}}
    models:
      - model: bob-a
        targets: [{{provider: keyed}}]
  - name: private
    path_prefix: /private
    auth: {{required: true, allow: [alice]}}
    models:
      - model: "*"
        targets: [{{provider: keyed}}]
  - name: everything
    path_prefix: /all
    list_unconfigured: true
    models:
      - model: nokey-b
        targets: [{{provider: keyless}}]
"#,
        url = mock.url()
    )
}

/// `GET /models` lists what the caller can use: providers with a key (or
/// `list_unconfigured`), and only the routes the caller may use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_lists_what_the_caller_can_use() {
    let mock = Mock::start();
    let gw = Gateway::start(&models_config(&mock));
    let open = ["keyed-extra", "open-a", "org/model-1", "shown-a"];
    let with = |extra: &str| {
        let mut v: Vec<String> = open.iter().map(|s| s.to_string()).collect();
        v.push(extra.to_string());
        v.sort();
        v
    };
    let (s, list) = get(&gw, "/v1/models", None).await;
    assert_eq!(s, 200);
    assert_eq!(ids(&list), open, "anonymous: the open route only");
    let (_, list) = get(&gw, "/v1/models", Some("sk-alice")).await;
    assert_eq!(ids(&list), with("alice-a"));
    let (_, list) = get(&gw, "/v1/models", Some("sk-bob")).await;
    assert_eq!(ids(&list), with("bob-a"));
    let owner = |list: &Value, id: &str| {
        list["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"] == id)
            .map(|m| m["owned_by"].clone())
    };
    assert_eq!(owner(&list, "org/model-1"), Some(json!("keyed")));
    assert_eq!(owner(&list, "shown-a"), Some(json!("shown")));
    // A route with `list_unconfigured: true` lists its keyless providers.
    let (s, list) = get(&gw, "/all/models", None).await;
    assert_eq!(s, 200);
    assert_eq!(ids(&list), ["nokey-b"]);
    // A route that requires a consumer answers like its other endpoints.
    let (s, body) = get(&gw, "/private/models", None).await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (401, Some("missing_api_key"))
    );
    let (s, body) = get(&gw, "/private/models", Some("sk-nobody")).await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (401, Some("invalid_api_key"))
    );
    let (s, body) = get(&gw, "/private/models", Some("sk-bob")).await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (403, Some("permission_denied"))
    );
    let (s, list) = get(&gw, "/private/models", Some("sk-alice")).await;
    assert_eq!(s, 200);
    assert_eq!(ids(&list), ["keyed-extra", "other-name"]);
    // Still serving.
    let (s, _, _) = parts(post_chat(&gw, "/v1", "open-a", None, &[]).await).await;
    assert_eq!(s, 200);
}

/// `GET /models/{id}` answers OpenAI's model object, or 404 `model_not_found`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_retrieve_answers_like_openai() {
    let mock = Mock::start();
    let gw = Gateway::start(&models_config(&mock));
    let (s, m) = get(&gw, "/v1/models/open-a", None).await;
    assert_eq!(s, 200, "{m}");
    assert_eq!(m["id"], "open-a");
    assert_eq!(m["object"], "model");
    assert!(m["created"].is_i64(), "{m}");
    assert_eq!(m["owned_by"], "keyed");
    // Ids with a slash, as sent or percent-encoded.
    for path in ["/v1/models/org/model-1", "/v1/models/org%2Fmodel-1"] {
        let (s, m) = get(&gw, path, None).await;
        assert_eq!((s, m["id"].as_str()), (200, Some("org/model-1")), "{path}");
    }
    // A model a pattern rule serves, not listed by name.
    let (s, m) = get(&gw, "/v1/models/keyed-anything", None).await;
    assert_eq!((s, m["owned_by"].as_str()), (200, Some("keyed")));
    for path in [
        "/v1/models/no-such-model",
        "/v1/models/keyless-extra", // its provider has no key
        "/v1/models/alice-a",       // the caller may not use its route
    ] {
        let (s, body) = get(&gw, path, None).await;
        assert_eq!(s, 404, "{path}: {body}");
        assert_eq!(body["error"]["code"], "model_not_found");
    }
    let (s, m) = get(&gw, "/v1/models/alice-a", Some("sk-alice")).await;
    assert_eq!((s, m["id"].as_str()), (200, Some("alice-a")));
    let (s, body) = get(&gw, "/private/models/x", Some("sk-bob")).await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (403, Some("permission_denied"))
    );
    let (s, _, _) = parts(post_chat(&gw, "/v1", "open-a", None, &[]).await).await;
    assert_eq!(s, 200);
}

/// Every 429 and 503 the gateway answers carries `Retry-After`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_429_and_503_carries_retry_after() {
    let mock = Mock::start();
    let mut redis = Redis::start();
    let gw = Gateway::start(&format!(
        r#"providers:
  - name: mock
    type: openai-compatible
    base_url: "{url}"
    api_keys: ["sk-one"]
  - name: other
    type: openai-compatible
    base_url: "{url}"
    api_keys: ["sk-two"]
  - name: keyless
    type: openai-compatible
    base_url: "{url}"
    api_keys: ["${{TOLLGATE_TEST_UNSET_KEY}}"]
consumers:
  - name: alice
    credentials: ["sk-alice"]
  - name: boss
    credentials: ["sk-boss"]
quota:
  consumers: [alice]
  admin_consumer: boss
store: {{path: "@DIR@/state.db"}}
redis: {{url: "{redis}", timeout: 300ms, on_error: closed}}
rate_limits:
  - {{name: shared, key: route, window: minute, requests: 1000, routes: [shared]}}
routes:
  - name: metered
    path_prefix: /metered
    auth: {{required: true}}
    models:
      - model: "*"
        targets: [{{provider: other}}]
  - name: shared
    path_prefix: /shared
    models:
      - model: "*"
        targets: [{{provider: other}}]
  - name: default
    forward_headers: ["x-mock-*"]
    models:
      - model: "keyless-*"
        targets: [{{provider: keyless}}]
      - model: "other-*"
        targets: [{{provider: other}}]
      - model: "*"
        targets: [{{provider: mock}}]
"#,
        url = mock.url(),
        redis = redis.url(),
    ));
    let check = |what: &str, got: (u16, Option<String>, Value), status: u16, code: &str| {
        let (s, ra, body) = got;
        assert_eq!(s, status, "{what}: {body}");
        assert_eq!(body["error"]["code"], code, "{what}");
        let secs: u64 = ra
            .unwrap_or_else(|| panic!("{what}: no Retry-After"))
            .parse()
            .unwrap();
        assert!(secs >= 1, "{what}");
        secs
    };
    // A provider's 503 without its own Retry-After.
    let got = parts(post_chat(&gw, "/v1", "other-a", None, &[("x-mock-status", "503")]).await);
    check("upstream 503", got.await, 503, "upstream_error");
    // A provider's 429 with one: passed on, and the key rests that long.
    let headers = [("x-mock-status", "429"), ("x-mock-retry-after", "30")];
    let got = parts(post_chat(&gw, "/v1", "mock-a", None, &headers).await).await;
    assert_eq!(check("upstream 429", got, 429, "rate_limit_exceeded"), 30);
    // Its only key resting: 503 until it comes back.
    let got = parts(post_chat(&gw, "/v1", "mock-a", None, &[]).await).await;
    let secs = check("all keys resting", got, 503, "all_keys_unavailable");
    assert!((20..=30).contains(&secs), "{secs}");
    // No key configured: 503 and an SDK must not retry by itself.
    let resp = post_chat(&gw, "/v1", "keyless-a", None, &[]).await;
    assert_eq!(resp.headers()["x-should-retry"], "false");
    check("no key", parts(resp).await, 503, "provider_key_missing");
    // A spent quota.
    let resp = client()
        .post(gw.url("/v1/chat/completions/quota/refresh"))
        .bearer_auth("sk-boss")
        .json(&json!({"consumer": "alice", "quota": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = post_chat(&gw, "/metered", "m", Some("sk-alice"), &[]).await;
    assert_eq!(resp.headers()["x-should-retry"], "false");
    check("quota", parts(resp).await, 429, "insufficient_quota");
    // The shared store down with `on_error: closed`.
    redis.kill();
    let got = parts(post_chat(&gw, "/shared", "m", None, &[]).await).await;
    check("store down", got, 503, "store_unavailable");
    // Still serving.
    let (s, _, _) = parts(post_chat(&gw, "/v1", "other-a", None, &[]).await).await;
    assert_eq!(s, 200);
}

/// The quota API tells a valid consumer that it is not the administrator, and takes JSON
/// bodies as well as forms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_api_speaks_json_and_says_who_may_call_it() {
    let mock = Mock::start();
    let gw = Gateway::start(
        &Body::mock(&mock.url())
            .consumers(&["alice", "boss"])
            .section("quota:\n  consumers: [alice]\n  admin_consumer: boss")
            .section("store: {path: \"@DIR@/state.db\"}")
            .route("default", "mock-*", Some("{required: true}"))
            .build(),
    );
    let post = |path: &str, key: &str, ctype: Option<&str>, body: String| {
        let mut req = client()
            .post(gw.url(&format!("/v1/chat/completions/quota/{path}")))
            .bearer_auth(key)
            .body(body);
        if let Some(c) = ctype {
            req = req.header("content-type", c);
        }
        async move {
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    // A valid consumer that is not the administrator.
    let (s, body) = post("refresh", "sk-alice", None, "consumer=alice&quota=5".into()).await;
    assert_eq!(s, 403, "{body}");
    assert_eq!(body["error"]["code"], "permission_denied");
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(msg.contains("not the quota administrator"), "{msg}");
    // JSON, by Content-Type and by its leading `{`; forms still work.
    let json_type = Some("application/json");
    let (s, body) = post(
        "refresh",
        "sk-boss",
        json_type,
        json!({"consumer": "alice", "quota": 100}).to_string(),
    )
    .await;
    assert_eq!((s, body["quota"].as_i64()), (200, Some(100)), "{body}");
    let (s, body) = post(
        "delta",
        "sk-boss",
        None,
        " {\"consumer\": \"alice\", \"value\": -30}".into(),
    )
    .await;
    assert_eq!((s, body["quota"].as_i64()), (200, Some(70)), "{body}");
    let form = Some("application/x-www-form-urlencoded");
    let (s, body) = post("delta", "sk-boss", form, "consumer=alice&value=5".into()).await;
    assert_eq!((s, body["quota"].as_i64()), (200, Some(75)), "{body}");
    let (s, body) = post(
        "delta",
        "sk-boss",
        json_type,
        "{\"consumer\": \"alice\"".into(),
    )
    .await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (400, Some("invalid_quota_request"))
    );
    let (s, body) = post(
        "refresh",
        "sk-boss",
        json_type,
        json!({"consumer": "alice", "quota": 1.5}).to_string(),
    )
    .await;
    assert_eq!(s, 400, "{body}");
    let url = gw.url("/v1/chat/completions/quota?consumer=alice");
    assert_eq!(get_json(&url, Some("sk-boss")).await["quota"], 75);
    let (s, _, _) = parts(post_chat(&gw, "/v1", "mock-a", Some("sk-alice"), &[]).await).await;
    assert_eq!(s, 200);
}

/// The official `openai` Python package sees each error as the class OpenAI's own API
/// gives: `AuthenticationError`, `PermissionDeniedError`, `NotFoundError`,
/// `RateLimitError`, `InternalServerError`. Skipped (with a note) where the package is not
/// installed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_openai_sdk_sees_openai_error_classes() {
    let Some(python) = openai_python() else {
        return;
    };
    let mock = Mock::start();
    let gw = Gateway::start(&format!(
        r#"providers:
  - name: mock
    type: openai-compatible
    base_url: "{url}"
    api_keys: ["sk-provider"]
    models: [open-a, vip-a]
consumers:
  - name: alice
    credentials: ["sk-alice"]
  - name: bob
    credentials: ["sk-bob"]
routes:
  - name: open
    forward_headers: ["x-mock-*"]
    models:
      - model: "open-*"
        targets: [{{provider: mock}}]
  - name: members
    auth: {{required: true}}
    models:
      - model: "paid-*"
        targets: [{{provider: mock}}]
  - name: alice-only
    auth: {{required: true, allow: [alice]}}
    models:
      - model: "vip-*"
        targets: [{{provider: mock}}]
"#,
        url = mock.url()
    ));
    run_sdk_script(python, "openai_errors.py", gw.url("/v1")).await;
    let (s, _, _) = parts(post_chat(&gw, "/v1", "open-a", None, &[]).await).await;
    assert_eq!(s, 200);
}
