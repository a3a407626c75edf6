//! OpenAI's files and batches APIs passed through (`/v1/files`, `/v1/batches`): each object
//! reached later on the provider and key that made it (mock-llm answers 404 to any other
//! key, as OpenAI does for another project's objects); uploads byte for byte; unknown ids
//! and other consumers' ids not found; lists filtered per consumer; the map kept across a
//! restart; provider keys never in an answer; the official openai SDK.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use common::*;
use serde_json::{json, Value};

const FIRST: &str = "sk-first-key-0000001";
const SECOND_A: &str = "sk-second-key-aaaa01";
const SECOND_B: &str = "sk-second-key-bbbb02";
const AZURE: &str = "sk-azure-key-zzzz03";
const CLAUDE: &str = "sk-claude-key-cccc04";
const KEYS: [&str; 5] = [FIRST, SECOND_A, SECOND_B, AZURE, CLAUDE];

/// Two OpenAI-compatible providers (the second with two keys), Azure and Anthropic on one
/// mock; `/v1` open, `/private/v1` for consumers. The first rule's target is Anthropic's,
/// which has no files API: creations go to `first`.
fn config(mock: &Mock) -> String {
    format!(
        r#"providers:
  - name: first
    type: openai-compatible
    base_url: "{url}"
    api_keys: [{{name: f1, key: {FIRST}}}]
  - name: second
    type: openai-compatible
    base_url: "{url}"
    api_keys:
      - {{name: a, key: {SECOND_A}}}
      - {{name: b, key: {SECOND_B}}}
  - name: az
    type: azure
    base_url: "http://{addr}"
    api_keys: ["{AZURE}"]
  - name: claude
    type: anthropic
    base_url: "{url}"
    api_keys: ["{CLAUDE}"]
limits:
  max_body_bytes: 65536
consumers:
  - {{name: alice, credentials: ["sk-alice"]}}
  - {{name: bob, credentials: ["sk-bob"]}}
routes:
  - name: private
    path_prefix: /private/v1
    forward_headers: ["x-mock-*"]
    auth: {{required: true}}
    models:
      - model: "*"
        targets: [{{provider: second}}]
  - name: open
    forward_headers: ["x-mock-*"]
    models:
      - model: "claude-*"
        targets: [{{provider: claude}}]
      - model: "first-*"
        targets: [{{provider: first}}]
      - model: "second-*"
        targets: [{{provider: second}}]
      - model: "*"
        targets: [{{provider: first}}, {{provider: second}}, {{provider: az}}]
"#,
        url = mock.url(),
        addr = mock.addr
    )
}

const BOUNDARY: &str = "tollgate-test-7MA4YWxkTrZu0gW";
const INPUT: &str = "{\"custom_id\":\"r1\",\"method\":\"POST\",\"url\":\"/v1/chat/completions\",\"body\":{\"model\":\"gpt-4o-mini\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}}\n{\"custom_id\":\"r2\",\"method\":\"POST\",\"url\":\"/v1/chat/completions\",\"body\":{\"model\":\"gpt-4o-mini\",\"messages\":[{\"role\":\"user\",\"content\":\"wörld\"}]}}\n";

/// A multipart upload body (`purpose`, `file`) with a boundary of our own.
fn multipart(purpose: &str, filename: &str, data: &[u8]) -> Vec<u8> {
    let b = BOUNDARY;
    let mut body = format!(
        "--{b}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\n{purpose}\r\n\
         --{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n\
         Content-Type: application/jsonl\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(data);
    body.extend_from_slice(format!("\r\n--{b}--\r\n").as_bytes());
    body
}

/// Every answer's text, to check no provider key is in any.
#[derive(Default)]
struct Seen(Vec<String>);

impl Seen {
    fn check_no_key(&self) {
        for text in &self.0 {
            for key in KEYS {
                assert!(!text.contains(key), "a provider key in an answer: {text}");
            }
        }
    }
}

struct Client<'a> {
    gw: &'a Gateway,
    prefix: &'static str,
    bearer: Option<&'static str>,
}

impl Client<'_> {
    /// One call; (status, body as JSON or `Null`, body text).
    async fn call(
        &self,
        seen: &mut Seen,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<(String, Vec<u8>)>,
    ) -> (u16, Value, String) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let url = self.gw.url(&format!("{}{path}", self.prefix));
        let mut req = client().request(method, url);
        if let Some(b) = self.bearer {
            req = req.bearer_auth(b);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some((ct, bytes)) = body {
            req = req.header("content-type", ct).body(bytes);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let mut text = String::new();
        for (name, value) in resp.headers() {
            text.push_str(&format!(
                "{name}: {}\n",
                String::from_utf8_lossy(value.as_bytes())
            ));
        }
        let body = resp.text().await.unwrap();
        text.push_str(&body);
        seen.0.push(text);
        (
            status,
            serde_json::from_str(&body).unwrap_or(Value::Null),
            body,
        )
    }

    async fn upload(&self, seen: &mut Seen, headers: &[(&str, &str)], data: &[u8]) -> Value {
        let ct = format!("multipart/form-data; boundary={BOUNDARY}");
        let body = Some((ct, multipart("batch", "in.jsonl", data)));
        let (status, v, text) = self.call(seen, "POST", "/files", headers, body).await;
        assert_eq!(status, 200, "{text}");
        assert_eq!(v["object"], "file", "{text}");
        v
    }

    async fn get(&self, seen: &mut Seen, path: &str) -> (u16, Value, String) {
        self.call(seen, "GET", path, &[], None).await
    }

    async fn batch(&self, seen: &mut Seen, file: &str) -> (u16, Value, String) {
        let body = json!({"input_file_id": file, "endpoint": "/v1/chat/completions",
                          "completion_window": "24h", "metadata": {"run": "test"}});
        let body = Some(("application/json".into(), body.to_string().into_bytes()));
        self.call(seen, "POST", "/batches", &[], body).await
    }
}

/// Put `key` of provider `second` out of rotation for a minute: a chat request whose first
/// attempt on it gets a 429 with `Retry-After: 60` (and fails over to the next key).
async fn rest(mock: &Mock, gw: &Gateway, key: &str) {
    let fault = json!({"key": key, "status": 429, "retry_after": 60, "count": 1});
    let resp = client()
        .post(format!("http://{}/mock/faults", mock.addr))
        .json(&fault)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let chat = json!({"model": "second-x", "messages": [{"role": "user", "content": "hi"}]});
    let resp = client()
        .post(gw.url("/v1/chat/completions"))
        .json(&chat)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "failed over to the next key");
}

/// OpenAI's error shape with the gateway's `not_found`.
fn assert_not_found(status: u16, v: &Value, text: &str) {
    assert_eq!(status, 404, "{text}");
    assert_eq!(v["error"]["code"], "not_found", "{text}");
    assert!(
        v["error"]["message"].is_string() && v["error"]["type"].is_string(),
        "{text}"
    );
}

/// Uploads to the default provider and to the ones named with `x-tollgate-provider`
/// (OpenAI-compatible on either key, Azure); every later call on a file or batch reaches
/// the key that made it; a batch of a known file goes to the file's key; a batch's output
/// file can be downloaded; uploads arrive byte for byte with their boundary; deletes,
/// unknown ids and bad provider names; no key in any answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_are_reached_on_the_key_that_made_them() {
    let mock = Mock::start();
    let gw = Gateway::start(&config(&mock));
    let mut seen = Seen::default();
    let c = Client {
        gw: &gw,
        prefix: "/v1",
        bearer: Some("sk-client-whatever"),
    };
    // The default: the first OpenAI-family target in rule order (not claude's).
    let echoed = c
        .upload(&mut seen, &[("x-mock-echo", "1")], INPUT.as_bytes())
        .await;
    assert_eq!(echoed["mock_key_fnv"], fnv64(FIRST.as_bytes()));
    let echo = &echoed["mock_echo"];
    let sent = multipart("batch", "in.jsonl", INPUT.as_bytes());
    assert_eq!(echo["body_fnv64"], fnv64(&sent), "the upload byte for byte");
    assert_eq!(echo["path"], "/v1/files");
    let ct = format!("multipart/form-data; boundary={BOUNDARY}");
    assert_eq!(echo["headers"]["content-type"], ct.as_str());
    let auth = echo["headers"]["authorization"].as_str().unwrap();
    assert!(
        !auth.contains(FIRST),
        "the key scrubbed from the echo: {auth}"
    );
    assert!(
        !echo.to_string().contains("sk-client"),
        "the client's credential is not forwarded"
    );
    // An upload over `limits.max_body_bytes`: 413 before anything goes upstream.
    let big = multipart("batch", "big.jsonl", &vec![b'x'; 70_000]);
    let ct = format!("multipart/form-data; boundary={BOUNDARY}");
    let (status, v, text) = c
        .call(&mut seen, "POST", "/files", &[], Some((ct, big)))
        .await;
    assert_eq!(
        (status, v["error"]["type"].is_string()),
        (413, true),
        "{text}"
    );
    // `second`'s first usable key: `a`; once `a` is out of rotation (a 429 on a chat
    // request, which fails over to `b`), `b`. Each file stays on its own key.
    let pick = [("x-tollgate-provider", "second")];
    let b1 = c.upload(&mut seen, &pick, INPUT.as_bytes()).await;
    assert_eq!(b1["mock_key_fnv"], fnv64(SECOND_A.as_bytes()));
    rest(&mock, &gw, SECOND_A).await;
    let b2 = c.upload(&mut seen, &pick, b"{}\n").await;
    assert_eq!(b2["mock_key_fnv"], fnv64(SECOND_B.as_bytes()));
    for f in [&echoed, &b1, &b2] {
        let id = f["id"].as_str().unwrap();
        let (status, v, text) = c.get(&mut seen, &format!("/files/{id}")).await;
        assert_eq!(
            (status, &v["mock_key_fnv"]),
            (200, &f["mock_key_fnv"]),
            "{text}"
        );
    }
    let b1_id = b1["id"].as_str().unwrap();
    let (status, _, content) = c.get(&mut seen, &format!("/files/{b1_id}/content")).await;
    assert_eq!((status, content.as_str()), (200, INPUT));
    // A batch of a known file goes to the file's key (no header needed).
    let (status, batch, text) = c.batch(&mut seen, b1_id).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(batch["status"], "validating");
    assert_eq!(batch["mock_key_fnv"], b1["mock_key_fnv"]);
    let batch_id = batch["id"].as_str().unwrap();
    let (status, done, text) = c.get(&mut seen, &format!("/batches/{batch_id}")).await;
    assert_eq!(
        (status, done["status"].as_str()),
        (200, Some("completed")),
        "{text}"
    );
    let out = done["output_file_id"].as_str().unwrap();
    let (status, _, lines) = c.get(&mut seen, &format!("/files/{out}/content")).await;
    assert_eq!(status, 200, "{lines}");
    let ids: Vec<Value> = lines
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["custom_id"].clone())
        .collect();
    assert_eq!(ids, [json!("r1"), json!("r2")]);
    let (status, cancelled, text) = c
        .call(
            &mut seen,
            "POST",
            &format!("/batches/{batch_id}/cancel"),
            &[],
            None,
        )
        .await;
    assert_eq!((status, &cancelled["id"]), (200, &batch["id"]), "{text}");
    // Lists go to the default target (or the one named), on its first usable key: `second`'s
    // is `b` now, which did not make the batch.
    let (status, list, text) = c.get(&mut seen, "/files").await;
    assert_eq!(
        (status, list["data"].as_array().map(Vec::len)),
        (200, Some(1)),
        "{text}"
    );
    assert_eq!(list["data"][0]["id"], echoed["id"], "{text}");
    let (status, list, text) = c.call(&mut seen, "GET", "/files", &pick, None).await;
    assert_eq!((status, &list["data"][0]["id"]), (200, &b2["id"]), "{text}");
    let (status, list, text) = c.call(&mut seen, "GET", "/batches", &pick, None).await;
    assert_eq!((status, &list["data"]), (200, &json!([])), "{text}");
    // Azure: `/openai/files?api-version=…` with its `api-key`.
    let az = c
        .upload(
            &mut seen,
            &[("x-tollgate-provider", "az"), ("x-mock-echo", "1")],
            b"az\n",
        )
        .await;
    assert_eq!(az["mock_echo"]["path"], "/openai/files");
    assert!(az["mock_echo"]["query"]
        .as_str()
        .unwrap()
        .contains("api-version="));
    assert_eq!(az["mock_key_fnv"], fnv64(AZURE.as_bytes()));
    let az_id = az["id"].as_str().unwrap();
    let (status, _, body) = c.get(&mut seen, &format!("/files/{az_id}/content")).await;
    assert_eq!((status, body.as_str()), (200, "az\n"));
    // Delete: then not found.
    let first_id = echoed["id"].as_str().unwrap();
    let (status, v, text) = c
        .call(
            &mut seen,
            "DELETE",
            &format!("/files/{first_id}"),
            &[],
            None,
        )
        .await;
    assert_eq!((status, &v["deleted"]), (200, &json!(true)), "{text}");
    let (status, v, text) = c.get(&mut seen, &format!("/files/{first_id}")).await;
    assert_not_found(status, &v, &text);
    for unknown in [
        "/files/file-nope",
        "/files/file-nope/content",
        "/batches/batch_nope",
    ] {
        let (status, v, text) = c.get(&mut seen, unknown).await;
        assert_not_found(status, &v, &text);
    }
    let (status, _, text) = c.batch(&mut seen, first_id).await;
    assert_eq!(
        status, 404,
        "a deleted file is unknown to the provider: {text}"
    );
    // Providers named wrongly.
    for (provider, code) in [
        ("nope", "invalid_request"),
        ("claude", "unsupported_endpoint"),
    ] {
        let (status, v, text) = c
            .call(
                &mut seen,
                "GET",
                "/files",
                &[("x-tollgate-provider", provider)],
                None,
            )
            .await;
        assert_eq!(
            (status, &v["error"]["code"]),
            (400, &json!(code)),
            "{provider}: {text}"
        );
    }
    let (status, _, text) = c.call(&mut seen, "PUT", "/files", &[], None).await;
    assert_eq!(status, 405, "{text}");
    seen.check_no_key();
}

/// On a route that authenticates consumers, another consumer's file or batch is not found
/// (as an unknown id is) and lists show the caller's objects only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_reach_only_their_own_objects() {
    let mock = Mock::start();
    let gw = Gateway::start(&config(&mock));
    let mut seen = Seen::default();
    let as_who = |bearer| Client {
        gw: &gw,
        prefix: "/private/v1",
        bearer: Some(bearer),
    };
    let (alice, bob) = (as_who("sk-alice"), as_who("sk-bob"));
    let hers = alice.upload(&mut seen, &[], INPUT.as_bytes()).await;
    let his = bob.upload(&mut seen, &[], b"{}\n").await;
    let (hers_id, his_id) = (hers["id"].as_str().unwrap(), his["id"].as_str().unwrap());
    let (status, batch, text) = alice.batch(&mut seen, hers_id).await;
    assert_eq!(status, 200, "{text}");
    let batch_id = batch["id"].as_str().unwrap();
    let (status, _, text) = alice.get(&mut seen, &format!("/files/{hers_id}")).await;
    assert_eq!(status, 200, "{text}");
    let (_, unknown, _) = bob.get(&mut seen, "/files/file-unknown").await;
    for path in [
        format!("/files/{hers_id}"),
        format!("/files/{hers_id}/content"),
        format!("/batches/{batch_id}"),
    ] {
        let (status, v, text) = bob.get(&mut seen, &path).await;
        assert_not_found(status, &v, &text);
        assert_eq!(v["error"]["type"], unknown["error"]["type"]);
    }
    let (status, v, text) = bob.batch(&mut seen, hers_id).await;
    assert_not_found(status, &v, &text);
    // The provider lists both on the same key; each consumer sees its own.
    for (who, mine, other) in [(&alice, hers_id, his_id), (&bob, his_id, hers_id)] {
        let (status, list, text) = who.get(&mut seen, "/files").await;
        assert_eq!(status, 200, "{text}");
        let ids: Vec<&str> = list["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|f| f["id"].as_str())
            .collect();
        assert!(ids.contains(&mine) && !ids.contains(&other), "{ids:?}");
        assert_eq!(list["object"], "list");
    }
    let (_, list, text) = bob.get(&mut seen, "/batches").await;
    assert_eq!(list["data"], json!([]), "{text}");
    let (_, list, text) = alice.get(&mut seen, "/batches").await;
    assert_eq!(list["data"][0]["id"], batch["id"], "{text}");
    // Without a credential: 401 before anything else.
    let anonymous = Client {
        gw: &gw,
        prefix: "/private/v1",
        bearer: None,
    };
    let (status, _, text) = anonymous.get(&mut seen, &format!("/files/{hers_id}")).await;
    assert_eq!(status, 401, "{text}");
    seen.check_no_key();
}

/// The map of who made what is in the state directory: after a restart (SIGKILL, same
/// directory) the files and batches are still reached on their keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_map_survives_a_restart() {
    let mock = Mock::start();
    let mut gw = Gateway::start(&config(&mock));
    let mut seen = Seen::default();
    let pick = [("x-tollgate-provider", "second")];
    let (one, two, batch) = {
        let c = Client {
            gw: &gw,
            prefix: "/v1",
            bearer: None,
        };
        let one = c.upload(&mut seen, &[], INPUT.as_bytes()).await;
        let two = c.upload(&mut seen, &pick, INPUT.as_bytes()).await;
        let (status, batch, text) = c.batch(&mut seen, two["id"].as_str().unwrap()).await;
        assert_eq!(status, 200, "{text}");
        (one, two, batch)
    };
    assert_eq!(one["mock_key_fnv"], fnv64(FIRST.as_bytes()));
    assert_eq!(two["mock_key_fnv"], fnv64(SECOND_A.as_bytes()));
    gw.signal_and_wait("-KILL");
    gw.respawn();
    let c = Client {
        gw: &gw,
        prefix: "/v1",
        bearer: None,
    };
    for f in [&one, &two] {
        let id = f["id"].as_str().unwrap();
        let (status, v, text) = c.get(&mut seen, &format!("/files/{id}")).await;
        assert_eq!(
            (status, &v["mock_key_fnv"]),
            (200, &f["mock_key_fnv"]),
            "{text}"
        );
    }
    let id = batch["id"].as_str().unwrap();
    let (status, v, text) = c.get(&mut seen, &format!("/batches/{id}")).await;
    assert_eq!(
        (status, v["status"].as_str()),
        (200, Some("completed")),
        "{text}"
    );
    let out = v["output_file_id"].as_str().unwrap();
    let (status, _, text) = c.get(&mut seen, &format!("/files/{out}/content")).await;
    assert_eq!(status, 200, "{text}");
    seen.check_no_key();
}

/// The official openai SDK: `files.create`, `batches.create`, `batches.retrieve`,
/// `files.content`, `files.list`, `files.delete`, and a `NotFoundError` for an unknown id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_sdk_files_and_batches() {
    let Some(python) = openai_python() else {
        return;
    };
    let mock = Mock::start();
    let gw = Gateway::start(&config(&mock));
    run_sdk_script(python, "openai_files.py", gw.url("/private/v1")).await;
}

/// Two gateways sharing a Redis share the map: a file uploaded through one is reached, and
/// batched, through the other, on the key that made it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_sharing_redis_share_the_map() {
    if skip_without_redis_server() {
        return;
    }
    let mock = Mock::start();
    let redis = Redis::start();
    let body = format!(
        "{}redis: {{url: \"{}\", timeout: 300ms, prefix: \"t{}\"}}\n",
        config(&mock),
        redis.url(),
        redis.port
    );
    let (one, two) = (Gateway::start(&body), Gateway::start(&body));
    let mut seen = Seen::default();
    let via = |gw| Client {
        gw,
        prefix: "/private/v1",
        bearer: Some("sk-alice"),
    };
    let (a, b) = (via(&one), via(&two));
    // Both connect to Redis in the background: upload until the other gateway finds one.
    let start = std::time::Instant::now();
    let file = loop {
        let f = a.upload(&mut seen, &[], INPUT.as_bytes()).await;
        let path = format!("/files/{}", f["id"].as_str().unwrap());
        if b.get(&mut seen, &path).await.0 == 200 {
            break f;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "the gateways never shared the map"
        );
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    };
    assert_eq!(file["mock_key_fnv"], fnv64(SECOND_A.as_bytes()));
    let (status, batch, text) = b.batch(&mut seen, file["id"].as_str().unwrap()).await;
    assert_eq!(status, 200, "{text}");
    let path = format!("/batches/{}", batch["id"].as_str().unwrap());
    let (status, done, text) = a.get(&mut seen, &path).await;
    assert_eq!(
        (status, done["status"].as_str()),
        (200, Some("completed")),
        "{text}"
    );
    let (status, v, text) = via(&two).get(&mut seen, "/files/file-unknown").await;
    assert_not_found(status, &v, &text);
    let bob = Client {
        gw: &one,
        prefix: "/private/v1",
        bearer: Some("sk-bob"),
    };
    let (status, v, text) = bob.get(&mut seen, &path).await;
    assert_not_found(status, &v, &text);
    seen.check_no_key();
}
