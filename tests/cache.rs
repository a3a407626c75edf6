//! The response cache, black box: hits for the same request (fields reordered), misses for
//! any change or another consumer, streams replayed and kept, client bypass and refresh,
//! the access log, metrics and the admin API, two gateways sharing hits through Redis (which
//! fails if a key of one process's own hashing reached Redis), the official openai SDK
//! reading a replayed stream, Anthropic clients answered from the cache in their protocol
//! (Anthropic's SDK reading replays), answers beyond the meter's 32 MiB charged their usage (and kept
//! when the cache's entries may be that long), and an answer that is not UTF-8.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::Value;

const TOKEN: &str = "admin-token-cache-1";
const PRICES: &str = "pricing:
  defaults: false
  prices:
    - {provider: mock, model: mock-a, input: 1000, output: 2000}";

fn config(mock: &Mock, extra: &str) -> String {
    let body = Body::mock(&mock.url())
        .consumers(&["alice", "bob"])
        .section(PRICES)
        .section(extra)
        .route("chat", "mock-*", Some("{required: true}"))
        .build();
    body.replace(
        "    forward_headers: [\"x-mock-*\"]\n",
        "    forward_headers: [\"x-mock-*\"]\n    cache: {ttl: 10m}\n",
    )
}

/// A request as `consumer` with `body` (raw text, to control field order) and headers.
async fn send(
    gw: &Gateway,
    consumer: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> (String, String, String) {
    let mut req = client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(format!("sk-{consumer}"))
        .header("content-type", "application/json")
        .body(body.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let h = |n: &str| {
        resp.headers()
            .get(n)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    let (cache, id) = (h("x-tollgate-cache"), h("x-request-id"));
    (cache, id, resp.text().await.unwrap())
}

async fn upstream_requests(mock: &Mock) -> u64 {
    mock_stats(mock).await["requests_total"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_requests_hit_and_any_change_misses() {
    let mock = Mock::start();
    let gw = Gateway::start_opts(&config(&mock, ""), None, Some(TOKEN), &[]);
    let a = r#"{"model":"mock-a","messages":[{"role":"user","content":"hello cache"}],"temperature":0.5}"#;
    let reordered = r#"{ "temperature": 0.5,
        "messages": [ {"content": "hello cache", "role": "user"} ], "model": "mock-a" }"#;
    let (c1, id1, first) = send(&gw, "alice", a, &[]).await;
    assert_eq!(c1, "miss");
    let (c2, id2, second) = send(&gw, "alice", reordered, &[]).await;
    assert_eq!(c2, "hit-exact");
    assert_eq!(first, second, "the same answer");
    assert_eq!(
        upstream_requests(&mock).await,
        1,
        "a hit never goes upstream"
    );
    // The access log: the hit with its tokens and cache field.
    let hit = gw.log_line(&id2);
    assert_eq!(hit["cache"], "hit-exact", "{hit}");
    assert_eq!(gw.log_line(&id1)["cache"], "miss");
    assert_eq!(hit["input_tokens"], gw.log_line(&id1)["input_tokens"]);
    assert!(hit["key"].is_null(), "no key served a hit: {hit}");

    // Any change misses: the text, the model, tools, temperature, the consumer.
    for (consumer, body) in [
        ("alice", a.replace("hello cache", "hello cache!")),
        ("alice", a.replace("mock-a", "mock-b")),
        ("alice", a.replace("0.5", "0.7")),
        ("alice", a.replace("}],", "}],\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"parameters\":{}}}],")),
        ("bob", a.to_string()),
    ] {
        let (c, _, _) = send(&gw, consumer, &body, &[]).await;
        assert_eq!(c, "miss", "{consumer}: {body}");
    }
    let upstream = upstream_requests(&mock).await;
    assert_eq!(upstream, 6);

    // The client decides: no-store bypasses (and keeps nothing), no-cache refreshes.
    let fresh = a.replace("hello cache", "bypass me");
    let (c, _, _) = send(&gw, "alice", &fresh, &[("cache-control", "no-store")]).await;
    assert_eq!(c, "bypass");
    let (c, _, _) = send(&gw, "alice", &fresh, &[]).await;
    assert_eq!(c, "miss", "a bypassed answer was not kept");
    let (c, _, _) = send(&gw, "alice", a, &[("cache-control", "no-cache")]).await;
    assert_eq!(c, "refresh");
    let (c, _, _) = send(&gw, "alice", a, &[("x-tollgate-cache", "bypass")]).await;
    assert_eq!(c, "bypass");
    assert_eq!(upstream_requests(&mock).await, upstream + 4);

    // A streamed request is answered from a whole answer, and the reverse.
    let streamed = a.replace(
        "\"temperature\":0.5",
        "\"temperature\":0.5,\"stream\":true,\"stream_options\":{\"include_usage\":true}",
    );
    let (c, _, sse) = send(&gw, "alice", &streamed, &[]).await;
    assert_eq!(c, "hit-exact");
    let events = sse_data(&sse);
    assert_eq!(events.last().unwrap(), "[DONE]");
    let text = delta_text(&events);
    let whole: Value = serde_json::from_str(&first).unwrap();
    assert_eq!(text, whole["choices"][0]["message"]["content"]);
    assert!(
        events.iter().any(|e| e.contains("\"usage\"")),
        "asked for usage"
    );
    let s2 = r#"{"model":"mock-a","stream":true,"messages":[{"role":"user","content":"streamed first"}]}"#;
    let (c, _, _) = send(&gw, "alice", s2, &[]).await;
    assert_eq!(c, "miss");
    let (c, _, body) = send(&gw, "alice", &s2.replace("\"stream\":true,", ""), &[]).await;
    assert_eq!(c, "hit-exact");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");

    // A cut stream is not kept.
    let cut = r#"{"model":"mock-a","stream":true,"messages":[{"role":"user","content":"cut me"}]}"#;
    let resp = client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth("sk-alice")
        .header("x-mock-drop-after", "2")
        .body(cut)
        .send()
        .await
        .unwrap();
    let _ = resp.text().await;
    let (c, _, _) = send(&gw, "alice", cut, &[]).await;
    assert_eq!(c, "miss", "a cut stream was not kept");

    // A whole answer cut by `max_tokens` (`finish_reason: length`) is not kept; the same
    // question answered in full is.
    let short =
        r#"{"model":"mock-a","max_tokens":2,"messages":[{"role":"user","content":"be brief"}]}"#;
    for expected in ["miss", "miss"] {
        let (c, _, body) = send(&gw, "alice", short, &[]).await;
        assert_eq!(c, expected, "a truncated answer was not kept: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["choices"][0]["finish_reason"], "length");
    }
    let full =
        r#"{"model":"mock-a","max_tokens":64,"messages":[{"role":"user","content":"be brief"}]}"#;
    for expected in ["miss", "hit-exact"] {
        let (c, _, _) = send(&gw, "alice", full, &[]).await;
        assert_eq!(c, expected);
    }

    // Metrics, stats and purge.
    let m = gw.metrics().await;
    assert!(
        metric_sum(
            &m,
            "tollgate_cache_lookups_total",
            &[("result", "hit-exact")]
        ) >= 3.0
    );
    assert!(
        metric_sum(
            &m,
            "tollgate_cache_saved_tokens_total",
            &[("route", "chat")]
        ) > 0.0
    );
    assert!(
        metric_sum(
            &m,
            "tollgate_cache_saved_cost_total",
            &[("currency", "USD")]
        ) > 0.0
    );
    let mut api = Api::new(&gw, Some(TOKEN));
    let (status, stats) = api.call(Method::GET, "/cache", None).await;
    assert_eq!(status, StatusCode::OK, "{stats}");
    assert!(stats["entries"].as_u64().unwrap() >= 3, "{stats}");
    let m = gw.metrics().await;
    assert!(
        metric_sum(&m, "tollgate_cache_bytes", &[]) > 0.0,
        "counted by the stats"
    );
    let (status, v) = api.call(Method::DELETE, "/cache", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    let (status, v) = api
        .call(Method::DELETE, "/cache?scope=consumer:alice", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert!(v["purged"]["memory"].as_u64().unwrap() >= 3, "{v}");
    let (c, _, _) = send(&gw, "alice", a, &[]).await;
    assert_eq!(c, "miss", "purged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hit_charges_the_consumer_unless_the_route_says_not() {
    let mock = Mock::start();
    let budgets = "budgets:\n  - {name: alice-b, consumer: alice, amount: 100}";
    let gw = Gateway::start_opts(&config(&mock, budgets), None, Some(TOKEN), &[]);
    let mut api = Api::new(&gw, Some(TOKEN));
    let a = r#"{"model":"mock-a","messages":[{"role":"user","content":"charge me"}]}"#;
    let (_, id1, _) = send(&gw, "alice", a, &[]).await;
    let (c, id2, _) = send(&gw, "alice", a, &[]).await;
    assert_eq!(c, "hit-exact");
    let cost = |id: &str| gw.log_line(id)["cost"].as_str().unwrap().to_string();
    assert_eq!(
        cost(&id1),
        cost(&id2),
        "the hit is charged what the answer cost"
    );
    let spent = eventually_some("both charged", || {
        let mut api = Api::new(&gw, Some(TOKEN));
        async move {
            let (_, v) = api
                .call(Method::GET, "/budgets/alice-b/spend?subject=alice", None)
                .await;
            let s = &v["items"][0];
            (s["reserved"] == "0").then(|| s["spent"].as_str().unwrap().to_string())
        }
    })
    .await;
    let one: f64 = cost(&id1).parse().unwrap();
    let both: f64 = spent.parse().unwrap();
    assert!((both - 2.0 * one).abs() < 1e-9, "{both} vs 2 × {one}");
    // The usage rollups mark the hit: its tokens are counted (charged), what it would have
    // cost is saved, not spent.
    let totals = eventually_some("the hit in the rollups", || {
        let mut api = Api::new(&gw, Some(TOKEN));
        async move {
            let (_, v) = api.call(Method::GET, "/usage?from=0", None).await;
            let t = v["totals"].clone();
            (t["requests"] == 2).then_some(t)
        }
    })
    .await;
    assert_eq!(totals["cache_hits"], 1, "{totals}");
    let hit_tokens = gw.log_line(&id2)["input_tokens"].as_u64().unwrap()
        + gw.log_line(&id2)["output_tokens"].as_u64().unwrap();
    assert_eq!(totals["cache_hit_tokens"], hit_tokens, "{totals}");
    assert_eq!(
        totals["cost"]["USD"],
        cost(&id1),
        "only the miss spent: {totals}"
    );
    assert_eq!(totals["cache_saved"]["USD"], cost(&id2), "{totals}");
    // Not charged: the route says so.
    let free =
        config(&mock, budgets).replace("cache: {ttl: 10m}", "cache: {ttl: 10m, charge: false}");
    gw.rewrite_config_as(PROXY_LISTEN, Some(TOKEN), &free);
    signal(gw.pid(), "-HUP");
    eventually("the reload", || async {
        let (_, v) = Api::new(&gw, Some(TOKEN))
            .call(Method::GET, "/cache", None)
            .await;
        v["routes"][0]["charge"] == false
    })
    .await;
    let (c, _, _) = send(&gw, "alice", a, &[]).await;
    assert_eq!(c, "hit-exact");
    let (_, v) = api
        .call(Method::GET, "/budgets/alice-b/spend?subject=alice", None)
        .await;
    assert_eq!(
        v["items"][0]["spent"].as_str().unwrap(),
        spent,
        "an uncharged hit"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_share_hits_through_redis() {
    if skip_without_redis_server() {
        return;
    }
    let mock = Mock::start();
    let redis = Redis::start();
    let store = format!("redis: {{url: \"{}\", timeout: 500ms}}", redis.url());
    let a = Gateway::start_opts(&config(&mock, &store), None, Some(TOKEN), &[]);
    let b = Gateway::start_opts(&config(&mock, &store), None, Some(TOKEN), &[]);
    let body = r#"{"model":"mock-a","messages":[{"role":"user","content":"shared"}]}"#;
    assert_eq!(send(&a, "alice", body, &[]).await.0, "miss");
    let (c, _, _) = send(&b, "alice", body, &[]).await;
    assert_eq!(c, "hit-exact", "b serves what a kept");
    assert_eq!(upstream_requests(&mock).await, 1);
    assert_eq!(
        send(&b, "bob", body, &[]).await.0,
        "miss",
        "another consumer"
    );
    // A purge on a reaches Redis and, once its own copy is gone (5 s at most), b.
    let (status, v) = Api::new(&a, Some(TOKEN))
        .call(Method::DELETE, "/cache?route=chat", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(v["purged"]["redis"].as_u64().unwrap() >= 2, "{v}");
    eventually("the purge reaches b", || async {
        send(&b, "alice", body, &[]).await.0 == "miss"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_openai_sdk_reads_replayed_streams() {
    let Some(python) = openai_python() else {
        return;
    };
    let mock = Mock::start();
    let gw = Gateway::start(&config(&mock, ""));
    run_sdk_script(python, "openai_cache_stream.py", gw.url("/v1")).await;
    assert_eq!(
        upstream_requests(&mock).await,
        2,
        "two answers made, two served from the cache"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_clients_are_answered_from_the_cache_in_their_protocol() {
    let Some(python) = openai_python() else {
        return;
    };
    let mock = Mock::start();
    let gw = Gateway::start(&config(&mock, ""));
    run_sdk_script(python, "anthropic_cache.py", gw.url("")).await;
    assert_eq!(
        upstream_requests(&mock).await,
        2,
        "two answers made, four served from the cache"
    );
    // The same JSON is a request in both protocols, with two meanings: two keys.
    let body =
        r#"{"model":"mock-a","max_tokens":20,"messages":[{"role":"user","content":"both"}]}"#;
    let anthropic = |body: &str| {
        client()
            .post(gw.url("/v1/messages"))
            .header("x-api-key", "sk-alice")
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
    };
    let first = anthropic(body).await.unwrap();
    assert_eq!(first.headers()["x-tollgate-cache"], "miss");
    assert_eq!(first.json::<Value>().await.unwrap()["type"], "message");
    let (verdict, _, answer) = send(&gw, "alice", body, &[]).await;
    assert_eq!(
        verdict, "miss",
        "an Anthropic entry never answers an OpenAI client"
    );
    assert_eq!(
        serde_json::from_str::<Value>(&answer).unwrap()["object"],
        "chat.completion"
    );
    let again = anthropic(body).await.unwrap();
    assert_eq!(again.headers()["x-tollgate-cache"], "hit-exact");
    assert_eq!(upstream_requests(&mock).await, 4);
}

/// A route whose cache is semantic too: chat on `mock` (key `sk-provider`), the embeddings
/// model `text-embedding-3-small` on `emb` (the same mock, key `sk-emb`) through the same
/// route. The mock's embeddings are hashed bags of words: "capital city of France" against
/// "capital of France" is 2/√6 ≈ 0.82, against "capital of Germany" 0.5.
fn semantic_config(mock: &Mock) -> String {
    let url = mock.url();
    format!(
        "providers:
  - name: mock
    type: openai-compatible
    base_url: \"{url}\"
    api_keys: [\"sk-provider\"]
  - name: emb
    type: openai-compatible
    base_url: \"{url}\"
    api_keys: [\"sk-emb\"]
consumers:
  - name: alice
    credentials: [\"sk-alice\"]
  - name: bob
    credentials: [\"sk-bob\"]
{PRICES}
routes:
  - name: chat
    auth: {{required: true}}
    cache:
      ttl: 10m
      semantic: {{model: text-embedding-3-small, threshold: 0.8}}
    models:
      - model: \"mock-*\"
        targets: [{{provider: mock}}]
      - model: text-embedding-3-small
        targets: [{{provider: emb}}]
"
    )
}

/// A chat request with `messages` (the last one the user's `question`).
fn asking(earlier: &[(&str, &str)], question: &str) -> String {
    let mut messages: Vec<Value> = earlier
        .iter()
        .map(|(role, content)| serde_json::json!({"role": role, "content": content}))
        .collect();
    messages.push(serde_json::json!({"role": "user", "content": question}));
    serde_json::json!({"model": "mock-a", "messages": messages}).to_string()
}

fn chat_requests(stats: &Value) -> u64 {
    stats["by_path"]["/v1/chat/completions"]
        .as_u64()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn semantic_cache_serves_paraphrases_in_the_same_context_only() {
    let mock = Mock::start();
    let gw = Gateway::start_opts(&semantic_config(&mock), None, Some(TOKEN), &[]);
    let q = asking(&[], "What is the capital of France?");
    let (c, id1, first) = send(&gw, "alice", &q, &[]).await;
    assert_eq!(c, "miss");
    // A paraphrase: the same answer, said with its score.
    let paraphrase = asking(&[], "Tell me: the capital city of France, please");
    let (c, id2, second) = send(&gw, "alice", &paraphrase, &[]).await;
    let score: f64 = c
        .strip_prefix("hit-semantic;score=")
        .unwrap_or_else(|| panic!("{c}"))
        .parse()
        .unwrap();
    assert!((0.8..0.84).contains(&score), "{c}");
    assert_eq!(first, second, "the kept answer");
    let stats = mock_stats(&mock).await;
    assert_eq!(
        chat_requests(&stats),
        1,
        "a hit never goes upstream: {stats}"
    );
    assert_eq!(
        stats["by_key"]["sk-emb"], 2,
        "one embedding a lookup: {stats}"
    );
    let hit = gw.log_line(&id2);
    assert_eq!(hit["cache"], "hit-semantic", "{hit}");
    assert_eq!(hit["input_tokens"], gw.log_line(&id1)["input_tokens"]);
    // The exact repeat is an exact hit (no embedding).
    let (c, _, _) = send(&gw, "alice", &q, &[]).await;
    assert_eq!(c, "hit-exact");
    assert_eq!(mock_stats(&mock).await["by_key"]["sk-emb"], 2);

    // Misses: another question; the same question after another conversation, with a
    // system prompt, or from another consumer.
    let earlier = [
        ("user", "I am planning a trip."),
        ("assistant", "Where to?"),
    ];
    for (consumer, body) in [
        ("alice", asking(&[], "What is the capital of Germany?")),
        ("alice", asking(&earlier, "What is the capital of France?")),
        (
            "alice",
            asking(
                &[("system", "Answer in French.")],
                "What is the capital of France?",
            ),
        ),
        ("bob", paraphrase.clone()),
    ] {
        let (c, _, _) = send(&gw, consumer, &body, &[]).await;
        assert_eq!(c, "miss", "{consumer}: {body}");
    }
    // Within that other conversation a paraphrase hits its own answer.
    let (c, _, _) = send(
        &gw,
        "alice",
        &asking(&earlier, "the capital city of France?"),
        &[],
    )
    .await;
    assert!(c.starts_with("hit-semantic;score="), "{c}");
    assert_eq!(chat_requests(&mock_stats(&mock).await), 5);

    // The embedding requests are requests of their own: logged, metered, as the consumer.
    let embeddings = eventually_some("the embedding requests logged", || async {
        let lines: Vec<Value> = gw
            .access_log_text()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|l| l["endpoint"] == "embeddings")
            .collect();
        (lines.len() >= 7).then_some(lines)
    })
    .await;
    let e = &embeddings[0];
    assert_eq!(e["consumer"], "alice", "{e}");
    assert_eq!(e["provider"], "emb", "{e}");
    assert_eq!(e["status"], 200, "{e}");
    assert!(e["input_tokens"].as_u64().unwrap() > 0, "{e}");
    assert!(embeddings.iter().any(|l| l["consumer"] == "bob"));
    let m = gw.metrics().await;
    assert_eq!(
        metric_sum(
            &m,
            "tollgate_cache_lookups_total",
            &[("route", "chat"), ("result", "hit-semantic")]
        ),
        2.0
    );
}

/// A question of four words of its own (`zeta{i} alpha{i} beta{i} gamma{i}`): the mock's
/// bag-of-words embeddings put different questions far apart.
fn nth_question(i: usize) -> String {
    format!("zeta{i} alpha{i} beta{i} gamma{i}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_of_many_questions_is_searched_through_its_graph() {
    let mock = Mock::start();
    let gw = Gateway::start_opts(&semantic_config(&mock), None, Some(TOKEN), &[]);
    let n = 270;
    for i in 0..n {
        let (c, _, _) = send(&gw, "alice", &asking(&[], &nth_question(i)), &[]).await;
        assert_eq!(c, "miss", "question {i}");
    }
    let mut api = Api::new(&gw, Some(TOKEN));
    // One context's questions move into a graph (built off the proxy's threads).
    eventually_some("every question indexed, in a graph", || async {
        let (_, v) = Api::new(&gw, Some(TOKEN))
            .call(Method::GET, "/cache", None)
            .await;
        let s = v["routes"][0]["semantic"].clone();
        (s["entries"] == n && s["graphed"].as_u64() >= Some(256)).then_some(s)
    })
    .await;
    // Paraphrases (reordered, a word more) of questions in the graph hit their own answers.
    for i in [0, 7, 150, 269] {
        let (c, _, _) = send(
            &gw,
            "alice",
            &asking(&[], &format!("gamma{i} alpha{i} please zeta{i} beta{i}")),
            &[],
        )
        .await;
        assert!(c.starts_with("hit-semantic;score="), "question {i}: {c}");
    }
    let (c, _, _) = send(&gw, "alice", &asking(&[], &nth_question(n)), &[]).await;
    assert_eq!(c, "miss", "a new question");
    assert_eq!(chat_requests(&mock_stats(&mock).await), n as u64 + 1);
    // Purging the route empties its graph too.
    let (status, _) = api.call(Method::DELETE, "/cache?route=chat", None).await;
    assert_eq!(status, StatusCode::OK);
    let (_, v) = api.call(Method::GET, "/cache", None).await;
    assert_eq!(v["routes"][0]["semantic"]["graphed"], 0, "{v}");
    let (c, _, _) = send(&gw, "alice", &asking(&[], "gamma7 alpha7 zeta7 beta7"), &[]).await;
    assert_eq!(c, "miss", "purged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embeddings_failure_is_a_miss_not_an_error() {
    let mock = Mock::start();
    let gw = Gateway::start_opts(&semantic_config(&mock), None, Some(TOKEN), &[]);
    let faults = format!("http://{}/mock/faults", mock.addr);
    let resp = client()
        .post(&faults)
        .json(&serde_json::json!({"key": "sk-emb", "status": 500}))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    let q = asking(&[], "What is the capital of Italy?");
    let paraphrase = asking(&[], "the capital city of Italy?");
    let (c, _, _) = send(&gw, "alice", &q, &[]).await;
    assert_eq!(c, "miss");
    let (c, _, _) = send(&gw, "alice", &paraphrase, &[]).await;
    assert_eq!(c, "miss", "no embedding, no semantic hit, no error");
    let (c, _, _) = send(&gw, "alice", &q, &[]).await;
    assert_eq!(c, "hit-exact", "the exact cache still serves");
    let m = gw.metrics().await;
    assert!(metric_sum(&m, "tollgate_cache_errors_total", &[]) >= 2.0);
    // Once the embeddings provider answers again, paraphrases hit.
    client().delete(&faults).send().await.unwrap();
    let q = asking(&[], "What is the capital of Spain?");
    assert_eq!(send(&gw, "alice", &q, &[]).await.0, "miss");
    let (c, _, _) = send(&gw, "alice", &asking(&[], "capital city of Spain"), &[]).await;
    assert!(c.starts_with("hit-semantic;score="), "{c}");
}

/// The access log's line for request `id`, which charged the usage `answer` reports (not
/// an estimate).
fn charged_as_reported(gw: &Gateway, id: &str, answer: &Value) -> Value {
    let logged = gw.log_line(id);
    let usage = &answer["usage"];
    assert_eq!(logged["input_tokens"], usage["prompt_tokens"], "{logged}");
    assert_eq!(
        logged["output_tokens"], usage["completion_tokens"],
        "{logged}"
    );
    assert_eq!(logged["usage_estimated"], false, "{logged}");
    logged
}

/// A 33 MiB answer (the parrot's) twice, on a gateway with `extra` settings: each time
/// delivered whole and charged the usage it reports (not an estimate); the cache's verdicts.
async fn long_answer_twice(extra: &str) -> (String, String, Mock) {
    let mock = Mock::start();
    let big = 48 << 20;
    let sizes = format!("limits: {{max_body_bytes: {big}}}\n{extra}");
    let gw = Gateway::start_opts(&config(&mock, &sizes), None, Some(TOKEN), &[]);
    let question = "word ".repeat((33 << 20) / 5);
    let body = serde_json::json!({
        "model": "mock-a",
        "messages": [{"role": "user", "content": question}],
    })
    .to_string();
    let parrot = [("x-mock-reply-parrot", "1")];
    let mut verdicts = Vec::new();
    let mut charged = Vec::new();
    for _ in 0..2 {
        let (verdict, id, answer) = send(&gw, "alice", &body, &parrot).await;
        assert!(
            answer.len() > 33 << 20,
            "an answer of {} bytes",
            answer.len()
        );
        let v: Value = serde_json::from_str(&answer).unwrap();
        let said = v["choices"][0]["message"]["content"].as_str().unwrap();
        assert!(said == question, "the parrot said {} bytes", said.len());
        let logged = charged_as_reported(&gw, &id, &v);
        charged.push((
            logged["input_tokens"].clone(),
            logged["output_tokens"].clone(),
        ));
        verdicts.push(verdict);
    }
    assert_eq!(charged[0], charged[1]);
    (verdicts.remove(0), verdicts.remove(0), mock)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_longer_than_the_meter_keeps_is_charged_its_usage() {
    // The meter keeps a whole JSON answer of up to 32 MiB to read its usage; past that
    // (the cache's entries being smaller) it reads the usage as the answer goes by.
    let (first, second, mock) = long_answer_twice("").await;
    assert_eq!(
        (&first[..], &second[..]),
        ("miss", "miss"),
        "too long to keep"
    );
    assert_eq!(upstream_requests(&mock).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_answer_the_cache_may_keep_is_charged_its_usage_and_kept() {
    // With `cache.max_entry_bytes` above 32 MiB, the meter keeps the answer up to it (the
    // cache takes those bytes, not a copy): the hit is the same answer, charged the same.
    let (first, second, mock) =
        long_answer_twice(&format!("cache: {{max_entry_bytes: {}}}", 48 << 20)).await;
    assert_eq!((&first[..], &second[..]), ("miss", "hit-exact"));
    assert_eq!(upstream_requests(&mock).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_not_in_utf8_is_passed_on_as_it_came_and_replayed_whole_only() {
    // A provider's answer that is not UTF-8 (the mock's Latin-1) reaches the client byte for
    // byte, is charged the usage it reports, and is kept: a whole request hits with the same
    // bytes; a streamed one is not answered from it (a replay is text), it goes upstream.
    let mock = Mock::start();
    let gw = Gateway::start_opts(&config(&mock, ""), None, Some(TOKEN), &[]);
    let ask = |stream: bool| {
        serde_json::json!({
            "model": "mock-a",
            "messages": [{"role": "user", "content": "un café"}],
            "stream": stream,
        })
        .to_string()
    };
    let send_bytes = |body: String| {
        let gw = &gw;
        async move {
            let resp = client()
                .post(gw.url("/v1/chat/completions"))
                .bearer_auth("sk-alice")
                .header("content-type", "application/json")
                .header("x-mock-reply-parrot", "1")
                .header("x-mock-reply-latin1", "1")
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            let h = |n: &str| resp.headers()[n].to_str().unwrap().to_string();
            let (cache, id) = (h("x-tollgate-cache"), h("x-request-id"));
            (cache, id, resp.bytes().await.unwrap().to_vec())
        }
    };
    let (first, id, answer) = send_bytes(ask(false)).await;
    assert_eq!(first, "miss");
    assert!(std::str::from_utf8(&answer).is_err(), "not UTF-8");
    assert!(
        answer.windows(4).any(|w| w == b"caf\xE9"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    let v: Value = serde_json::from_str(&String::from_utf8_lossy(&answer)).unwrap();
    charged_as_reported(&gw, &id, &v);
    let (second, _, again) = send_bytes(ask(false)).await;
    assert_eq!(second, "hit-exact");
    assert_eq!(again, answer, "the same bytes");
    let (streamed, _, events) = send_bytes(ask(true)).await;
    assert_eq!(
        streamed, "miss",
        "a stream is not replayed from bytes that are not text"
    );
    let events = String::from_utf8(events).unwrap();
    let said = delta_text(&sse_data(&events));
    assert_eq!(said, "un café", "{events}");
    assert!(events.trim_end().ends_with("data: [DONE]"), "{events}");
    assert_eq!(upstream_requests(&mock).await, 2);
}
