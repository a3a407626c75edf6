//! Usage analytics, black box: mixed traffic through the proxy, then the admin API's rollups
//! compared with the access log, exactly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use common::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// One request; `shape` picks streaming, cached/reasoning tokens, a cut stream, no usage
/// (estimated) or an upstream error.
async fn send(gw: &Gateway, consumer: &str, model: &str, shape: usize, chunks: usize) -> u16 {
    let stream = shape % 2 == 1;
    let mut body = json!({"model": model, "messages": [{"role": "user", "content": "count words for me"}], "stream": stream});
    if stream {
        body["stream_options"] = json!({"include_usage": true});
    }
    let mut req = client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(format!("sk-{consumer}"))
        .header("x-mock-chunks", chunks.to_string())
        .json(&body);
    req = match shape % 6 {
        2 => req
            .header("x-mock-cached-tokens", "3")
            .header("x-mock-reasoning-tokens", "2"),
        3 => req.header("x-mock-drop-after", "2"),
        4 => req.header("x-mock-no-usage", "1"),
        5 => req.header("x-mock-status", "500"),
        _ => req,
    };
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let _ = resp.bytes().await;
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollups_equal_the_access_log_exactly() {
    let mock = Mock::start();
    let body = Body::mock(&mock.url())
        .consumers(&["alice", "bob", "carol"])
        .build();
    let gw = Gateway::start_opts(&body, None, Some("adm-an-1"), &[]);
    let consumers = ["alice", "bob", "carol"];
    let models = ["mock-a", "mock-b"];
    let mut n = 0;
    for (i, consumer) in consumers.iter().enumerate() {
        for (j, model) in models.iter().enumerate() {
            for shape in 0..6 {
                send(&gw, consumer, model, shape + i + j, 3 + i * 2 + j + shape).await;
                n += 1;
            }
        }
    }
    // Every access-log line is written before the query below.
    let log = |gw: &Gateway| {
        let text = gw.access_log_text();
        text.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .collect::<Vec<_>>()
    };
    eventually("every request in the access log", || async {
        log(&gw).len() == n
    })
    .await;
    let mut expected: BTreeMap<(String, String), [u64; 6]> = BTreeMap::new();
    for line in log(&gw) {
        let key = (
            line["consumer"].as_str().unwrap().to_string(),
            line["model"].as_str().unwrap().to_string(),
        );
        let e = expected.entry(key).or_default();
        e[0] += 1;
        for (k, field) in [
            "input_tokens",
            "cached_tokens",
            "output_tokens",
            "reasoning_tokens",
        ]
        .iter()
        .enumerate()
        {
            e[k + 1] += line[field].as_u64().unwrap();
        }
        e[5] += u64::from(line["usage_estimated"].as_bool().unwrap());
    }
    assert_eq!(expected.len(), 6);
    let admin = |path: &str| gw.admin_url(&format!("/admin/api/v1{path}"));
    let usage = get_json(
        &admin("/usage?from=0&group_by=consumer,model"),
        Some("adm-an-1"),
    )
    .await;
    let mut got: BTreeMap<(String, String), [u64; 6]> = BTreeMap::new();
    for g in usage["groups"].as_array().unwrap() {
        let key = (
            g["group"]["consumer"].as_str().unwrap().to_string(),
            g["group"]["model"].as_str().unwrap().to_string(),
        );
        let t = &g["totals"];
        let fields = [
            "requests",
            "input_tokens",
            "cached_tokens",
            "output_tokens",
            "reasoning_tokens",
            "estimated",
        ];
        got.insert(key, fields.map(|f| t[f].as_u64().unwrap()));
    }
    assert_eq!(got, expected, "{usage}");
    assert_eq!(usage["totals"]["requests"], n);
    // The Prometheus counters agree.
    let metrics = gw.metrics().await;
    for (metric, field) in [
        ("tollgate_input_tokens_total", "input_tokens"),
        ("tollgate_output_tokens_total", "output_tokens"),
    ] {
        let counted = metric_sum(&metrics, metric, &[]);
        assert_eq!(
            counted as u64,
            usage["totals"][field].as_u64().unwrap(),
            "{metric}"
        );
    }
    assert!(usage["totals"]["latency_ms"]["p50"].is_number(), "{usage}");
    assert!(
        expected.values().any(|e| e[5] > 0),
        "some usage was estimated"
    );
    assert!(
        expected.values().any(|e| e[2] > 0 && e[4] > 0),
        "cached and reasoning tokens counted"
    );

    // CSV is the same numbers.
    let csv = client()
        .get(admin("/usage?from=0&group_by=consumer,model&format=csv"))
        .bearer_auth("adm-an-1")
        .send()
        .await
        .unwrap();
    assert!(csv.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let csv = csv.text().await.unwrap();
    let mut lines = csv.lines();
    let head: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(&head[..4], ["time", "consumer", "model", "requests"]);
    let mut from_csv: BTreeMap<(String, String), [u64; 6]> = BTreeMap::new();
    for line in lines {
        let f: Vec<&str> = line.split(',').collect();
        let nums = [3, 4, 5, 6, 7, 8].map(|i| f[i].parse::<u64>().unwrap());
        let e = from_csv
            .entry((f[1].to_string(), f[2].to_string()))
            .or_default();
        for k in 0..6 {
            e[k] += nums[k];
        }
    }
    assert_eq!(from_csv, expected, "{csv}");

    // A step gives points that add up to the totals; the top consumer by tokens is first.
    let stepped = get_json(
        &admin("/usage?from=0&step=1m&group_by=consumer"),
        Some("adm-an-1"),
    )
    .await;
    for g in stepped["groups"].as_array().unwrap() {
        let sum: u64 = g["points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["input_tokens"].as_u64().unwrap())
            .sum();
        assert_eq!(sum, g["totals"]["input_tokens"].as_u64().unwrap());
    }
    let top = get_json(
        &admin("/usage/top?from=0&by=consumer&n=2"),
        Some("adm-an-1"),
    )
    .await;
    let items = top["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert!(items[0]["tokens"].as_u64() >= items[1]["tokens"].as_u64());
    let bad = client()
        .get(admin("/usage?group_by=prompt"))
        .bearer_auth("adm-an-1")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);

    // Recent requests: metadata by request id, by consumer; never a prompt.
    let last = log(&gw).pop().unwrap();
    let id = last["request_id"].as_str().unwrap();
    let one = get_json(
        &admin(&format!("/requests?request_id={id}")),
        Some("adm-an-1"),
    )
    .await;
    assert_eq!(one["items"].as_array().unwrap().len(), 1, "{one}");
    assert_eq!(one["items"][0]["consumer"], last["consumer"]);
    let bobs = get_json(
        &admin("/requests?consumer=bob&limit=1000"),
        Some("adm-an-1"),
    )
    .await;
    assert_eq!(bobs["items"].as_array().unwrap().len(), n / 3);
    assert!(!bobs.to_string().contains("count words"), "no prompt text");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollups_survive_a_restart() {
    let mock = Mock::start();
    let body = Body::mock(&mock.url()).consumers(&["alice"]).build();
    let mut gw = Gateway::start(&body);
    for _ in 0..3 {
        assert_eq!(send(&gw, "alice", "mock-a", 0, 4).await, 200);
    }
    // An orderly stop writes what the rollups hold.
    gw.signal_and_wait("-TERM");
    gw.respawn();
    let usage = get_json(
        &gw.admin_url("/admin/api/v1/usage?from=0&group_by=consumer"),
        None,
    )
    .await;
    assert_eq!(usage["totals"]["requests"], 3, "{usage}");
}

/// Seconds into the current wall-clock minute.
fn second_of_minute() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        % 60
}

/// Poll `f` until true, for at most `within` (a rollup window ends at a minute boundary).
async fn within(what: &str, within: std::time::Duration, f: impl Fn() -> bool) {
    let start = std::time::Instant::now();
    while !f() {
        assert!(start.elapsed() < within, "timed out waiting for {what}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_fires_on_a_spike_notifies_and_resolves() {
    let mock = Mock::start();
    let hooks = RawUpstream::fixed(http_json(200, "{}"));
    let alerts = format!(
        "alerts:\n  interval: 200ms\n  webhooks:\n    - {{name: ops, url: \"http://{a}/ops\"}}\n    - {{name: chat, url: \"http://{a}/chat\", format: slack}}\n    - {{name: ding, url: \"http://{a}/ding\", format: dingtalk}}\n  rules:\n    - {{name: alice-burst, kind: tokens, window: 1m, threshold: 40, filter: {{consumer: alice}}, repeat: 1h}}\n    - {{name: quiet, kind: tokens, window: 1m, threshold: 1000000}}\n",
        a = hooks.addr
    );
    let body = Body::mock(&mock.url())
        .consumers(&["alice", "bob"])
        .section(&alerts)
        .build();
    let gw = Gateway::start(&body);
    // Start early in a minute, so that the burst and the firing share it.
    within("a new minute", std::time::Duration::from_secs(70), || {
        second_of_minute() < 40
    })
    .await;
    for _ in 0..3 {
        assert_eq!(
            send(&gw, "bob", "mock-a", 0, 30).await,
            200,
            "bob is not watched"
        );
    }
    assert!(posted_json(&hooks, "/ops").is_empty());
    for _ in 0..3 {
        assert_eq!(send(&gw, "alice", "mock-a", 0, 30).await, 200);
    }
    within(
        "the firing notice",
        std::time::Duration::from_secs(20),
        || !posted_json(&hooks, "/ops").is_empty(),
    )
    .await;
    let fired = &posted_json(&hooks, "/ops")[0];
    assert_eq!(fired["alert"], "alice-burst");
    assert_eq!(fired["state"], "firing");
    assert!(fired["value"].as_f64().unwrap() > 40.0, "{fired}");
    within(
        "the chat notices",
        std::time::Duration::from_secs(20),
        || !posted_json(&hooks, "/chat").is_empty() && !posted_json(&hooks, "/ding").is_empty(),
    )
    .await;
    assert!(posted_json(&hooks, "/chat")[0]["text"]
        .as_str()
        .unwrap()
        .contains("FIRING: alice-burst"));
    assert_eq!(posted_json(&hooks, "/ding")[0]["msgtype"], "text");
    let states = get_json(&gw.admin_url("/admin/api/v1/alerts"), None).await;
    assert_eq!(states["items"][0]["state"], "firing", "{states}");
    assert_eq!(states["items"][1]["state"], "ok", "{states}");

    // Traffic stops: at the next minute the window is quiet and the rule resolves.
    within(
        "the resolved notice",
        std::time::Duration::from_secs(90),
        || posted_json(&hooks, "/ops").len() >= 2,
    )
    .await;
    assert_eq!(posted_json(&hooks, "/ops")[1]["state"], "resolved");
    // It flaps: firing again within the repeat interval notifies nobody.
    for _ in 0..3 {
        send(&gw, "alice", "mock-a", 0, 30).await;
    }
    let url = gw.admin_url("/admin/api/v1/alerts");
    eventually("firing again", || {
        let url = url.clone();
        async move { get_json(&url, None).await["items"][0]["state"] == "firing" }
    })
    .await;
    assert_eq!(
        posted_json(&hooks, "/ops").len(),
        2,
        "no second firing notice within `repeat`"
    );
}

/// Per consumer × model: requests, input and output tokens, from access logs.
fn sums_of_logs(logs: &[&Gateway]) -> BTreeMap<(String, String), [u64; 3]> {
    let mut out: BTreeMap<(String, String), [u64; 3]> = BTreeMap::new();
    for gw in logs {
        for line in gw.access_log_text().lines() {
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            let key = (
                v["consumer"].as_str().unwrap().to_string(),
                v["model"].as_str().unwrap().to_string(),
            );
            let e = out.entry(key).or_default();
            e[0] += 1;
            e[1] += v["input_tokens"].as_u64().unwrap();
            e[2] += v["output_tokens"].as_u64().unwrap();
        }
    }
    out
}

/// The same sums from a usage answer.
fn sums_of_usage(usage: &Value) -> BTreeMap<(String, String), [u64; 3]> {
    usage["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|g| {
            let t = &g["totals"];
            (
                (
                    g["group"]["consumer"].as_str().unwrap().to_string(),
                    g["group"]["model"].as_str().unwrap().to_string(),
                ),
                ["requests", "input_tokens", "output_tokens"].map(|f| t[f].as_u64().unwrap()),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_sharing_redis_answer_for_the_fleet() {
    let mock = Mock::start();
    let mut redis = Redis::start();
    let body = Body::mock(&mock.url())
        .consumers(&["alice", "bob"])
        .section(&format!(
            "redis: {{url: \"{}\", timeout: 500ms}}",
            redis.url()
        ))
        .build();
    let (a, b) = (Gateway::start(&body), Gateway::start(&body));
    for shape in 0..4 {
        send(&a, "alice", "mock-a", shape, 3).await;
        send(&b, "bob", "mock-b", shape, 4).await;
    }
    send(&b, "alice", "mock-a", 1, 5).await;
    eventually("both access logs written", || async {
        sums_of_logs(&[&a, &b]).values().map(|s| s[0]).sum::<u64>() == 9
    })
    .await;
    let expected = sums_of_logs(&[&a, &b]);
    assert_eq!(expected.len(), 2, "{expected:?}");
    let query = "/admin/api/v1/usage?group_by=consumer,model";
    // Either gateway answers for both (the other's rollups arrive within a flush).
    for gw in [&a, &b] {
        eventually("the fleet's totals on either gateway", || async {
            let usage = get_json(&gw.admin_url(query), None).await;
            usage["scope"] == "fleet" && sums_of_usage(&usage) == expected
        })
        .await;
    }
    let top = get_json(
        &a.admin_url("/admin/api/v1/usage/top?by=consumer&n=1"),
        None,
    )
    .await;
    let alice: u64 = expected
        .iter()
        .filter(|(k, _)| k.0 == "alice")
        .map(|(_, s)| s[1] + s[2])
        .sum();
    let bob: u64 = expected
        .iter()
        .filter(|(k, _)| k.0 == "bob")
        .map(|(_, s)| s[1] + s[2])
        .sum();
    let first = if alice >= bob { "alice" } else { "bob" };
    assert_eq!(top["items"][0]["consumer"], first, "{top}");
    assert_eq!(top["items"][0]["tokens"], alice.max(bob), "{top}");

    // Redis gone: the rollups wait and are sent once it is back (it comes back empty, so
    // the fleet then holds exactly what was sent meanwhile).
    redis.kill();
    let before = sums_of_logs(&[&a]);
    for shape in 0..3 {
        assert_eq!(send(&a, "bob", "mock-b", shape * 2, 3).await, 200);
    }
    eventually("the access log written", || async {
        sums_of_logs(&[&a]).values().map(|s| s[0]).sum::<u64>() == 7
    })
    .await;
    let mut meanwhile = sums_of_logs(&[&a]);
    for (k, s) in &before {
        let m = meanwhile.get_mut(k).unwrap();
        for i in 0..3 {
            m[i] -= s[i];
        }
    }
    meanwhile.retain(|_, s| s[0] > 0);
    // Meanwhile each gateway answers with its own rollups, and says so.
    let local = get_json(&a.admin_url(query), None).await;
    assert_eq!(local["scope"], "gateway", "{local}");
    assert_eq!(sums_of_usage(&local), sums_of_logs(&[&a]));
    redis.restart();
    eventually("what waited is in the fleet's rollups", || async {
        let usage = get_json(&b.admin_url(query), None).await;
        usage["scope"] == "fleet" && sums_of_usage(&usage) == meanwhile
    })
    .await;
    assert_eq!(send(&a, "alice", "mock-a", 0, 3).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_alert_reads_the_fleets_rollups_and_notifies_once() {
    let mock = Mock::start();
    let redis = Redis::start();
    let hooks = RawUpstream::fixed(http_json(200, "{}"));
    let body = Body::mock(&mock.url())
        .consumers(&["alice"])
        .section(&format!(
            "redis: {{url: \"{}\", timeout: 500ms}}",
            redis.url()
        ))
        .section("alerts:\n  interval: 200ms")
        .build();
    let (a, b) = (Gateway::start(&body), Gateway::start(&body));
    for shape in [0, 2, 4] {
        assert_eq!(send(&a, "alice", "mock-a", shape, 3).await, 200);
    }
    eventually("a's access log", || async {
        sums_of_logs(&[&a]).values().map(|s| s[0]).sum::<u64>() == 3
    })
    .await;
    let tokens: u64 = sums_of_logs(&[&a]).values().map(|s| s[1] + s[2]).sum();
    // Above what either gateway sees alone, below what the fleet sees.
    let threshold = tokens as f64 * 1.5;
    let api = |gw: &Gateway, path: &str| gw.admin_url(&format!("/admin/api/v1{path}"));
    let c = client();
    let r = c
        .post(api(&a, "/alert_webhooks"))
        .json(&json!({"name": "ops", "url": format!("http://{}/ops", hooks.addr)}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let rule =
        json!({"name": "fleet-tokens", "kind": "tokens", "window": "10m", "threshold": threshold});
    let r = c
        .post(api(&a, "/alert_rules"))
        .json(&rule)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let state = |gw: &Gateway| {
        let url = api(gw, "/alerts");
        async move {
            let v = get_json(&url, None).await;
            v["items"]
                .as_array()
                .and_then(|i| i.iter().find(|r| r["rule"] == "fleet-tokens").cloned())
                .unwrap_or(Value::Null)
        }
    };
    // Both gateways evaluate the fleet's tokens (a's alone so far), under the threshold.
    for gw in [&a, &b] {
        eventually("the rule evaluated on the fleet's rollups", || async {
            let s = state(gw).await;
            s["state"] == "ok" && s["value"].as_f64() == Some(tokens as f64)
        })
        .await;
    }
    for shape in [0, 2, 4] {
        assert_eq!(send(&b, "alice", "mock-a", shape, 3).await, 200);
    }
    for gw in [&a, &b] {
        eventually("firing on both gateways", || async {
            state(gw).await["state"] == "firing"
        })
        .await;
    }
    eventually("the notice", || async {
        !posted_json(&hooks, "/ops").is_empty()
    })
    .await;
    // Both fired; one sent. Once each has evaluated again (evaluations run one after the
    // other, so each one's firing evaluation and its notice are done), still one notice.
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for gw in [&a, &b] {
        eventually("a later evaluation", || async {
            state(gw).await["evaluated"].as_u64().unwrap() > t
        })
        .await;
    }
    let sent = posted_json(&hooks, "/ops");
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0]["state"], "firing");
    assert_eq!(send(&a, "alice", "mock-a", 0, 3).await, 200);
}

/// Picounits of a decimal string (`"0.0000425"`), exactly.
fn pico_of(decimal: &str) -> u64 {
    let (whole, frac) = decimal.split_once('.').unwrap_or((decimal, ""));
    let frac = format!("{frac:0<12}");
    whole.parse::<u64>().unwrap() * 1_000_000_000_000 + frac.parse::<u64>().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_is_priced_and_costs_add_up_exactly() {
    let mock = Mock::start();
    let body = Body::mock(&mock.url())
        .consumers(&["alice", "bob"])
        .section(
            "pricing:
  defaults: false
  prices:
    - {provider: mock, model: mock-a, input: 1.5, cached_input: 0.5, output: 4, reasoning: 6}",
        )
        .build();
    let gw = Gateway::start(&body);
    let mut n = 0;
    for (i, consumer) in ["alice", "bob"].iter().enumerate() {
        for shape in 0..6 {
            send(&gw, consumer, "mock-a", shape + i, 3 + shape).await;
            n += 1;
        }
        send(&gw, consumer, "mock-b", 0, 3).await;
        n += 1;
    }
    eventually("every request in the access log", || async {
        let text = gw.access_log_text();
        let whole = text
            .lines()
            .filter(|l| serde_json::from_str::<Value>(l).is_ok())
            .count();
        whole == n
    })
    .await;
    let mut total = 0u64;
    let mut unpriced = 0;
    for line in gw.access_log_text().lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        let (input, cached) = (
            v["input_tokens"].as_u64().unwrap(),
            v["cached_tokens"].as_u64().unwrap(),
        );
        let (output, reasoning) = (
            v["output_tokens"].as_u64().unwrap(),
            v["reasoning_tokens"].as_u64().unwrap(),
        );
        if v["model"] == "mock-b" {
            assert_eq!(v["price_missing"], true, "{v}");
            assert!(v.get("cost").is_none(), "never a guessed 0: {v}");
            unpriced += 1;
            continue;
        }
        if input + output == 0 {
            assert!(v.get("cost").is_none(), "{v}");
            continue;
        }
        // Per token, in picounits: the price per million × 10⁶.
        let want = (input - cached) * 1_500_000
            + cached * 500_000
            + (output - reasoning) * 4_000_000
            + reasoning * 6_000_000;
        assert_eq!(v["currency"], "USD", "{v}");
        assert_eq!(pico_of(v["cost"].as_str().unwrap()), want, "{v}");
        total += want;
    }
    assert_eq!(unpriced, 2);
    assert!(total > 0);
    // The rollups hold the same sum, exactly; so does the CSV.
    let usage = get_json(&gw.admin_url("/admin/api/v1/usage?from=0"), None).await;
    assert_eq!(usage["totals"]["cost_usd_pico"], total, "{usage}");
    assert_eq!(
        pico_of(usage["totals"]["cost"]["USD"].as_str().unwrap()),
        total
    );
    let csv = get_text(&gw.admin_url("/admin/api/v1/usage?from=0&format=csv")).await;
    assert!(
        csv.lines().next().unwrap().contains("cost_usd_pico"),
        "{csv}"
    );
    assert!(csv.contains(&total.to_string()), "{csv}");
    // Prometheus: the cost in USD, and the unpriced requests counted.
    let metrics = gw.metrics().await;
    let usd = metric_sum(&metrics, "tollgate_cost_total", &[("currency", "USD")]);
    assert!(
        (usd - total as f64 / 1e12).abs() < 1e-9,
        "{usd} against {total}"
    );
    assert_eq!(
        metric_sum(&metrics, "tollgate_unpriced_requests_total", &[]),
        2.0
    );
}

/// Providers `mock` (OpenAI-compatible) and `claude` (Anthropic) on one mock-llm, priced
/// (`mock-b` is not), with `pricing.cost_header` as given.
fn cost_config(mock: &Mock, cost_header: bool) -> String {
    format!(
        r#"providers:
  - name: mock
    type: openai-compatible
    base_url: "{url}"
    api_keys: ["sk-provider"]
  - name: claude
    type: anthropic
    base_url: "{url}"
    api_keys: ["sk-ant"]
pricing:
  defaults: false
  cost_header: {cost_header}
  prices:
    - {{provider: mock, model: mock-a, input: 1.5, cached_input: 0.5, output: 4, reasoning: 6}}
    - {{provider: claude, model: claude-a, input: 3, output: 15, request: 0.001}}
routes:
  - name: default
    forward_headers: ["x-mock-*"]
    models:
      - model: "claude-*"
        targets: [{{provider: claude}}]
      - model: "*"
        targets: [{{provider: mock}}]
"#,
        url = mock.url()
    )
}

/// One request: its status, `x-tollgate-cost` header, access-log line and body.
async fn costed(
    gw: &Gateway,
    path: &str,
    body: Value,
    headers: &[(&str, &str)],
) -> (u16, Option<String>, Value, String) {
    let mut req = client()
        .post(gw.url(path))
        .header("anthropic-version", "2023-06-01")
        .json(&body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let cost = resp
        .headers()
        .get("x-tollgate-cost")
        .map(|v| v.to_str().unwrap().to_string());
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let text = resp.text().await.unwrap();
    (status, cost, gw.log_line(&id), text)
}

/// What the access log says the request cost, as the client is told it.
fn logged_cost(line: &Value) -> String {
    if line["price_missing"] == true {
        return "unpriced".into();
    }
    format!(
        "{} {}",
        line["cost"].as_str().expect("a cost"),
        line["currency"].as_str().unwrap()
    )
}

/// The comment ending a stream, if any: the cost it tells.
fn stream_comment(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix(": x-tollgate-cost "))
        .map(str::to_string)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_tell_the_cost_the_access_log_shows() {
    let mock = Mock::start();
    let gw = Gateway::start(&cost_config(&mock, true));
    let chat = |model: &str, stream: bool| {
        json!({"model": model, "stream": stream,
            "messages": [{"role": "user", "content": "count words for me"}]})
    };
    let messages = |model: &str, stream: bool| {
        json!({"model": model, "max_tokens": 100, "stream": stream,
            "messages": [{"role": "user", "content": "count words for me"}]})
    };
    let chats = "/v1/chat/completions";

    // Whole answers carry the header, exactly the logged cost: native, with cached and
    // reasoning tokens, with no usage reported (estimated), translated, Anthropic's own.
    let cases = [
        (chats, chat("mock-a", false), vec![("x-mock-chunks", "5")]),
        (
            chats,
            chat("mock-a", false),
            vec![
                ("x-mock-cached-tokens", "3"),
                ("x-mock-reasoning-tokens", "2"),
            ],
        ),
        (chats, chat("mock-a", false), vec![("x-mock-no-usage", "1")]),
        (chats, chat("claude-a", false), vec![]),
        ("/v1/messages", messages("claude-a", false), vec![]),
        ("/v1/messages", messages("mock-a", false), vec![]),
    ];
    for (path, body, headers) in &cases {
        let (status, cost, line, text) = costed(&gw, path, body.clone(), headers).await;
        assert_eq!(status, 200, "{text}");
        assert!(line["cost"].is_string(), "{line}");
        assert_eq!(
            cost,
            Some(logged_cost(&line)),
            "{path} {body} {headers:?}: {line}"
        );
        assert!(serde_json::from_str::<Value>(&text).is_ok(), "{text}");
        assert_eq!(stream_comment(&text), None);
    }
    // The header is the exact decimal of the tokens at their prices, and the currency.
    let (_, cost, line, _) = costed(&gw, chats, chat("mock-a", false), &[]).await;
    let tokens = |k: &str| line[k].as_u64().unwrap();
    let want = tokens("input_tokens") * 1_500_000 + tokens("output_tokens") * 4_000_000;
    let cost = cost.unwrap();
    let (amount, currency) = cost.split_once(' ').unwrap();
    assert_eq!((pico_of(amount), currency), (want, "USD"), "{line}");

    // A model without a price: `unpriced`, never 0.
    let (status, cost, line, _) = costed(&gw, chats, chat("mock-b", false), &[]).await;
    assert_eq!(status, 200);
    assert_eq!(line["price_missing"], true, "{line}");
    assert_eq!(cost.as_deref(), Some("unpriced"));

    // Streams end with the comment after their last event (`[DONE]`, `message_stop`);
    // their events are unchanged.
    let stream_cases = [
        (chats, chat("mock-a", true), vec![]),
        (chats, chat("mock-b", true), vec![]),
        (chats, chat("claude-a", true), vec![]),
        ("/v1/messages", messages("claude-a", true), vec![]),
        ("/v1/messages", messages("mock-a", true), vec![]),
        (chats, chat("mock-a", true), vec![("x-mock-crlf", "1")]),
    ];
    for (path, mut body, headers) in stream_cases {
        if path == chats && body["model"] == "mock-a" {
            body["stream_options"] = json!({"include_usage": true});
        }
        let (status, cost, line, text) = costed(&gw, path, body.clone(), &headers).await;
        assert_eq!(status, 200, "{text}");
        assert_eq!(cost, None, "headers went before the usage was known");
        let told = stream_comment(&text);
        assert_eq!(told, Some(logged_cost(&line)), "{body}: {text}");
        let last = text.trim_end().lines().last().unwrap();
        assert!(last.starts_with(": x-tollgate-cost "), "{text}");
        let before = text
            .trim_end()
            .rsplit_once("\n: x-tollgate-cost")
            .unwrap()
            .0;
        let end = if path == chats {
            "data: [DONE]"
        } else {
            "\"type\":\"message_stop\"}"
        };
        assert!(before.trim_end().ends_with(end), "{text}");
        assert!(text.ends_with("\n\n"), "{text:?}");
    }

    // An error answer tells nothing.
    let (status, cost, _, _) = costed(
        &gw,
        chats,
        chat("mock-a", false),
        &[("x-mock-status", "400")],
    )
    .await;
    assert_eq!((status, cost), (400, None));

    // A whole answer cut by the provider: its header was still held, so the client gets a
    // proper error instead of a cut connection.
    let (status, cost, line, text) = costed(
        &gw,
        chats,
        chat("mock-a", false),
        &[("x-mock-drop-after", "20")],
    )
    .await;
    assert!(status >= 500, "{status} {text}");
    assert_eq!(cost, None);
    let error: Value = serde_json::from_str(&text).unwrap();
    assert!(error["error"]["message"].is_string(), "{text}");
    assert_eq!(line["status"], status, "{line}");

    // Nor does an answer the gateway gave up on (last: it may take the key out of rotation).
    let (status, cost, _, _) = costed(
        &gw,
        chats,
        chat("mock-a", false),
        &[("x-mock-status", "500")],
    )
    .await;
    assert!(status >= 500);
    assert_eq!(cost, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_setting_answers_tell_no_cost() {
    let mock = Mock::start();
    let gw = Gateway::start(&cost_config(&mock, false));
    for stream in [false, true] {
        let body = json!({"model": "mock-a", "stream": stream,
            "messages": [{"role": "user", "content": "count words for me"}]});
        let (status, cost, line, text) = costed(&gw, "/v1/chat/completions", body, &[]).await;
        assert_eq!(status, 200, "{text}");
        assert!(line["cost"].is_string(), "still priced in the log: {line}");
        assert_eq!(cost, None);
        assert_eq!(stream_comment(&text), None, "{text}");
    }
}
