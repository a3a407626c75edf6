//! Money budgets, black box: refusal naming the budget and its reset, the budgets API (spend,
//! top-up, reset, history), no overspend under 500 concurrent requests with the spend equal
//! to the access log's costs, durability across kill -9, two gateways sharing a budget in
//! Redis, provider-key budgets, and the setting for models without a price.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::sync::Arc;

const TOKEN: &str = "admin-token-budgets-1";
/// $1000 per million input tokens, $2000 per million output tokens: a cent or so a request.
const PRICES: &str = "pricing:
  defaults: false
  prices:
    - {provider: mock, model: mock-a, input: 1000, output: 2000}";

fn config(mock: &Mock, budgets: &str, store: &str) -> String {
    Body::mock(&mock.url())
        .consumers(&["alice", "bob"])
        .section(PRICES)
        .section(budgets)
        .section(store)
        .route("chat", "mock-*", Some("{required: true}"))
        .build()
}

const LOCAL: &str = "store: {path: \"@DIR@/state.db\"}";

/// Picounits of a decimal string, exactly.
fn pico(decimal: &str) -> i64 {
    let (whole, frac) = decimal.split_once('.').unwrap_or((decimal, ""));
    whole.parse::<i64>().unwrap() * 1_000_000_000_000
        + format!("{frac:0<12}").parse::<i64>().unwrap()
}

/// One chat request as `consumer` for `model`: status and body.
async fn chat(url: String, consumer: &str, model: &str, stream: bool) -> (u16, Value) {
    let resp = client()
        .post(url)
        .bearer_auth(format!("sk-{consumer}"))
        .json(&json!({"model": model, "stream": stream, "max_tokens": 20,
            "stream_options": {"include_usage": true},
            "messages": [{"role": "user", "content": "count the cost of this request"}]}))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let retry = resp.headers().get("x-should-retry").cloned();
    let text = resp.text().await.unwrap();
    let mut v = serde_json::from_str(&text).unwrap_or(Value::Null);
    if status == 429 {
        assert_eq!(
            retry.unwrap(),
            "false",
            "a spent budget is not retried by SDKs"
        );
    }
    if v.is_null() {
        v = json!({"text": text});
    }
    (status, v)
}

/// The sum of the access log's costs of `consumer`'s requests (every line complete).
async fn logged_cost(gw: &Gateway, consumer: &str, requests: usize) -> i64 {
    eventually_some("every request in the access log", || {
        let text = gw.access_log_text();
        async move {
            let lines: Vec<Value> = text
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .filter(|v: &Value| v["consumer"] == consumer)
                .collect();
            (lines.len() == requests).then(|| {
                lines
                    .iter()
                    .filter_map(|v| v["cost"].as_str())
                    .map(pico)
                    .sum()
            })
        }
    })
    .await
}

async fn spend(api: &mut Api, budget: &str, subject: &str) -> Value {
    let (status, v) = api
        .call(
            Method::GET,
            &format!("/budgets/{budget}/spend?subject={subject}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    v["items"][0].clone()
}

/// Poll the API until `budget`'s spend for `subject` is `want` with nothing reserved.
async fn settled(api: &mut Api, budget: &str, subject: &str, want: i64) {
    let start = std::time::Instant::now();
    loop {
        let s = spend(api, budget, subject).await;
        if pico(s["spent"].as_str().unwrap()) == want && s["reserved"] == "0" {
            return;
        }
        assert!(start.elapsed() < DEADLINE, "spend {s}, expected {want}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_budget_refuses_naming_itself_and_the_api_manages_it() {
    let mock = Mock::start();
    let budgets = "budgets:
  - {name: alice-monthly, consumer: alice, amount: 0.5, period: month, time_zone: Asia/Shanghai}";
    let gw = Gateway::start_opts(&config(&mock, budgets, LOCAL), None, Some(TOKEN), &[]);
    let mut api = Api::new(&gw, Some(TOKEN));
    let url = gw.url("/v1/chat/completions");
    let mut served = 0;
    let refused = loop {
        let (status, body) = chat(url.clone(), "alice", "mock-a", served % 2 == 0).await;
        if status != 200 {
            break (status, body);
        }
        served += 1;
        assert!(served < 500, "never refused");
    };
    assert!(served > 5, "served only {served}");
    assert_eq!(refused.0, 429, "{}", refused.1);
    let e = &refused.1["error"];
    assert_eq!(e["code"], "insufficient_quota");
    assert_eq!(e["type"], "insufficient_quota");
    let msg = e["message"].as_str().unwrap();
    assert!(
        msg.contains("alice-monthly") && msg.contains("resets at"),
        "{msg}"
    );
    assert!(
        msg.contains("+08:00"),
        "the reset in the budget's time zone: {msg}"
    );
    // bob has no budget.
    assert_eq!(chat(url.clone(), "bob", "mock-a", false).await.0, 200);

    // The spend is the access log's costs, to the picounit; never more than the amount.
    // Every request is logged, the refused one too (without a cost).
    let logged = logged_cost(&gw, "alice", served + 1).await;
    settled(&mut api, "alice-monthly", "alice", logged).await;
    let s = spend(&mut api, "alice-monthly", "alice").await;
    assert!(logged <= pico("0.5"), "{s}");
    assert_eq!(s["currency"], "USD");
    assert!(s["resets_at"].as_str().unwrap().ends_with("+08:00"), "{s}");
    assert!(s["percent_used"].as_f64().unwrap() > 80.0, "{s}");

    // A top-up lets alice in again; a reset clears the spend; both are audited.
    let (status, v) = api
        .call(
            Method::POST,
            "/budgets/alice-monthly/top_up",
            Some(json!({"amount": "0.25"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["topup"], "0.25");
    assert_eq!(chat(url.clone(), "alice", "mock-a", false).await.0, 200);
    let (status, v) = api
        .call(
            Method::POST,
            "/budgets/alice-monthly/reset",
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["spent"], "0");
    let (_, audit) = api.call(Method::GET, "/audit", None).await;
    let text = audit.to_string();
    assert!(text.contains("top_up") && text.contains("reset"), "{text}");
    let (status, h) = api
        .call(
            Method::GET,
            "/budgets/alice-monthly/history?subject=alice",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{h}");
    assert_eq!(h["items"][0]["topup"], "0.25", "{h}");

    // Set through the API: a larger amount, a new budget; bad input is a clear 400.
    let (status, v) = api
        .call(
            Method::PATCH,
            "/budgets/alice-monthly",
            Some(json!({"amount": 2})),
        )
        .await;
    assert_eq!(status.as_u16(), 409, "the file's budget is read-only: {v}");
    let (status, v) = api
        .call(
            Method::POST,
            "/budgets",
            Some(json!({"name": "bob-daily", "consumer": "bob", "amount": 0.02, "period": "day"})),
        )
        .await;
    assert!(status.is_success(), "{v}");
    let mut refused = false;
    for _ in 0..20 {
        if chat(url.clone(), "bob", "mock-a", false).await.0 == 429 {
            refused = true;
            break;
        }
    }
    assert!(refused, "bob's new daily budget applies at once");
    let (status, v) = api
        .call(
            Method::POST,
            "/budgets",
            Some(json!({"name": "bad", "consumer": "nobody", "amount": 1})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert!(v.to_string().contains("nobody"), "{v}");
    let (status, v) = api
        .call(
            Method::POST,
            "/budgets/bob-daily/top_up",
            Some(json!({"amount": "x"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");

    let m = gw.metrics().await;
    assert!(
        metric_sum(
            &m,
            "tollgate_budget_rejections_total",
            &[("budget", "alice-monthly")]
        ) >= 1.0
    );
    assert!(
        metric_sum(
            &m,
            "tollgate_budget_spent_total",
            &[("budget", "alice-monthly")]
        ) > 0.0
    );
}

/// `n` concurrent requests as `consumer` over `urls`; how many were served and refused.
async fn concurrent(urls: &[String], consumer: &'static str, n: usize) -> (usize, usize) {
    let gate = Arc::new(tokio::sync::Barrier::new(n));
    let mut tasks = Vec::new();
    for i in 0..n {
        let (url, gate) = (urls[i % urls.len()].clone(), gate.clone());
        tasks.push(tokio::spawn(async move {
            gate.wait().await;
            chat(url, consumer, "mock-a", i % 2 == 0).await
        }));
    }
    let (mut served, mut refused) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            (200, _) => served += 1,
            (429, v) => {
                assert_eq!(v["error"]["code"], "insufficient_quota", "{v}");
                refused += 1;
            }
            (s, v) => panic!("{s}: {v}"),
        }
    }
    (served, refused)
}

/// The dearest single request in the access log (a bound on one reservation's overshoot).
fn dearest(gw: &Gateway) -> i64 {
    gw.access_log_text()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["cost"].as_str().map(pico))
        .max()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_cannot_overspend_and_the_spend_survives_kill() {
    let mock = Mock::start();
    let budgets = "budgets:
  - {name: chat-daily, route: chat, amount: 1, period: day}";
    let mut gw = Gateway::start_opts(&config(&mock, budgets, LOCAL), None, Some(TOKEN), &[]);
    let mut api = Api::new(&gw, Some(TOKEN));
    let (served, refused) = concurrent(&[gw.url("/v1/chat/completions")], "alice", 500).await;
    assert!(
        served > 0 && refused > 0,
        "{served} served, {refused} refused"
    );
    let more = spend_the_rest(&[gw.url("/v1/chat/completions")], "alice").await;
    let logged = logged_cost(&gw, "alice", served + refused + more).await;
    settled(&mut api, "chat-daily", "chat", logged).await;
    assert!(
        logged <= pico("1") + dearest(&gw),
        "overspent by more than one request: {logged}"
    );

    // What was committed survives a kill -9.
    gw.signal_and_wait("-KILL");
    gw.respawn();
    let mut api = Api::new(&gw, Some(TOKEN));
    let s = spend(&mut api, "chat-daily", "chat").await;
    assert_eq!(pico(s["spent"].as_str().unwrap()), logged, "{s}");
    let (status, _) = chat(gw.url("/v1/chat/completions"), "alice", "mock-a", false).await;
    assert_eq!(status, 429, "still spent after the restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_share_a_budget_in_redis() {
    if skip_without_redis_server() {
        return;
    }
    let mock = Mock::start();
    let redis = Redis::start();
    let store = format!("redis: {{url: \"{}\", timeout: 500ms}}", redis.url());
    let budgets = "budgets:
  - {name: each, consumer: '*', amount: 0.5, period: week}";
    let body = config(&mock, budgets, &store);
    let a = Gateway::start_opts(&body, None, Some(TOKEN), &[]);
    let b = Gateway::start_opts(&body, None, Some(TOKEN), &[]);
    let urls = [a.url("/v1/chat/completions"), b.url("/v1/chat/completions")];
    let (served, refused) = concurrent(&urls, "bob", 200).await;
    assert!(
        served > 0 && refused > 0,
        "{served} served, {refused} refused"
    );
    let more = spend_the_rest(&urls, "bob").await;
    eventually("every request in an access log", || async {
        served_on(&a, "bob") + served_on(&b, "bob") == 200 + more
    })
    .await;
    let logged = logged_cost(&a, "bob", served_on(&a, "bob")).await
        + logged_cost(&b, "bob", served_on(&b, "bob")).await;
    let mut api = Api::new(&b, Some(TOKEN));
    settled(&mut api, "each", "bob", logged).await;
    let bound = pico("0.5") + dearest(&a).max(dearest(&b));
    assert!(logged <= bound, "overspent across gateways: {logged}");
    // Both refuse now; alice's budget is her own.
    for url in &urls {
        assert_eq!(chat(url.clone(), "bob", "mock-a", false).await.0, 429);
    }
    assert_eq!(chat(urls[0].clone(), "alice", "mock-a", false).await.0, 200);
    let (_, list) = api.call(Method::GET, "/budgets/each/spend", None).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 2, "{list}");
}

/// After a burst: a refusal in it may have come from reservations still held, and the
/// settled spend may leave room for more. Spend it, one request at a time (through `urls` in
/// turn) until refused; the requests made, the refused one included.
async fn spend_the_rest(urls: &[String], consumer: &str) -> usize {
    let mut made = 0;
    loop {
        let (status, _) = chat(urls[made % urls.len()].clone(), consumer, "mock-a", false).await;
        made += 1;
        if status != 200 {
            assert_eq!(status, 429);
            return made;
        }
        assert!(made < 50, "the budget never ran out");
    }
}

/// How many of `consumer`'s requests `gw` logged (complete lines).
fn served_on(gw: &Gateway, consumer: &str) -> usize {
    gw.access_log_text()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["consumer"] == consumer)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpriced_models_follow_the_budget_setting_and_key_budgets_skip_keys() {
    let mock = Mock::start();
    let budgets = "budgets:
  - {name: strict, consumer: alice, amount: 10}
  - {name: lenient, consumer: bob, amount: 10, unpriced: admit}
  - {name: key-cap, key: 'mock/mock#0', amount: 0.05, period: lifetime, unpriced: admit}";
    let gw = Gateway::start_opts(&config(&mock, budgets, LOCAL), None, Some(TOKEN), &[]);
    let url = gw.url("/v1/chat/completions");
    // mock-b has no price: alice's budget refuses it, bob's admits it.
    let (status, v) = chat(url.clone(), "alice", "mock-b", false).await;
    assert_eq!(status, 403, "{v}");
    assert_eq!(v["error"]["code"], "model_not_priced");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("strict"),
        "{v}"
    );
    let (status, v) = chat(url.clone(), "bob", "mock-b", false).await;
    assert_eq!(status, 200, "{v}");
    let line = gw.log_line(&last_request_id(&gw, "bob"));
    assert_eq!(line["price_missing"], true, "{line}");
    let mut api = Api::new(&gw, Some(TOKEN));
    assert_eq!(spend(&mut api, "lenient", "bob").await["spent"], "0");
    // The provider key's lifetime budget: once spent, its attempts fail over (here to
    // nothing: the one key) and the client gets 429 insufficient_quota.
    let mut last = 200;
    for _ in 0..50 {
        last = chat(url.clone(), "bob", "mock-a", false).await.0;
        if last != 200 {
            break;
        }
    }
    assert_eq!(last, 429);
    let m = gw.metrics().await;
    assert!(
        metric_sum(
            &m,
            "tollgate_budget_rejections_total",
            &[("budget", "key-cap")]
        ) >= 1.0
    );
    assert!(metric_sum(&m, "tollgate_unpriced_requests_total", &[]) >= 1.0);
}

/// The request id of `consumer`'s last logged request.
fn last_request_id(gw: &Gateway, consumer: &str) -> String {
    let start = std::time::Instant::now();
    loop {
        let id = gw
            .access_log_text()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .rfind(|v| v["consumer"] == consumer)
            .and_then(|v| v["request_id"].as_str().map(str::to_string));
        if let Some(id) = id {
            return id;
        }
        assert!(start.elapsed() < DEADLINE, "no line for {consumer}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
