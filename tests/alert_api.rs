//! Alert rules and webhooks through the management API, black box: created over HTTP, fired
//! by traffic or by quota balances, notices caught by a receiver the test starts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const TOKEN: &str = "admin-token-alerts-1";
/// The secret part of the webhook URL (a chat tool's token).
const HOOK_SECRET: &str = "hook-secret-token-0123456789";

async fn chat(gw: &Gateway, consumer: &str) -> u16 {
    let resp = client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(format!("sk-{consumer}"))
        .json(&json!({"model": "mock-a", "messages": [{"role": "user", "content": "count words for me"}]}))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let _ = resp.bytes().await;
    status
}

/// Wait until `hooks` got `n` notices on `path`.
async fn notices_at_least(hooks: &RawUpstream, path: &str, n: usize) -> Vec<Value> {
    eventually_some(&format!("{n} notice(s) on {path}"), || {
        let got = posted_json(hooks, path);
        async move { (got.len() >= n).then_some(got) }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_rules_and_webhooks_through_the_api() {
    let mock = Mock::start();
    let hooks = RawUpstream::fixed(http_json(200, "{}"));
    let path = format!("/ops/{HOOK_SECRET}");
    // The file has a rule and a webhook of its own: read-only through the API.
    let file_alerts = format!(
        "alerts:\n  interval: 200ms\n  webhooks:\n    - {{name: filed, url: \"http://{a}/filed\"}}\n  rules:\n    - {{name: quiet, kind: tokens, threshold: 1000000000, webhooks: [filed]}}\n",
        a = hooks.addr
    );
    let body = Body::mock(&mock.url())
        .consumers(&["alice", "bob"])
        .section(&file_alerts)
        .build();
    let mut gw = Gateway::start_opts(&body, None, Some(TOKEN), &[]);
    let mut api = Api::new(&gw, Some(TOKEN));

    // A webhook: its URL is shown masked, host kept.
    let url = format!("http://{}{path}", hooks.addr);
    let (status, v) = api
        .call(
            Method::POST,
            "/alert_webhooks",
            Some(json!({"name": "ops", "url": url})),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["source"], "api");
    let masked = v["url"].as_str().unwrap().to_string();
    assert!(
        masked.starts_with(&format!("http://{}/…", hooks.addr)),
        "{masked}"
    );
    let (status, v) = api
        .call(
            Method::POST,
            "/alert_webhooks",
            Some(json!({"name": "bad", "url": "ftp://x/y"})),
        )
        .await;
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains(".url"),
        "{v}"
    );

    // A rule naming an unknown webhook is refused, naming the field.
    let rule = json!({"name": "burst", "kind": "tokens", "window": "5m", "threshold": 10,
                      "filter": {"consumer": "alice"}, "webhooks": ["nope"]});
    let (status, v) = api
        .call(Method::POST, "/alert_rules", Some(rule.clone()))
        .await;
    assert_eq!(status, 400, "{v}");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("(burst).webhooks") && message.contains("nope"),
        "{v}"
    );
    // A quota rule needs the quota section, which this gateway has not.
    let (status, v) = api
        .call(
            Method::POST,
            "/alert_rules",
            Some(json!({"name": "low", "kind": "quota", "threshold": 5})),
        )
        .await;
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("(low).kind"),
        "{v}"
    );
    let mut rule = rule;
    rule["webhooks"] = json!(["ops"]);
    let (status, v) = api.call(Method::POST, "/alert_rules", Some(rule)).await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["source"], "api");

    // The file's objects are listed, and read-only.
    let (_, v) = api.call(Method::GET, "/alert_rules", None).await;
    let items = v["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{v}");
    assert_eq!(
        (&items[0]["name"], &items[0]["source"]),
        (&json!("quiet"), &json!("file"))
    );
    let (status, _) = api
        .call(
            Method::PATCH,
            "/alert_rules/quiet",
            Some(json!({"threshold": 1})),
        )
        .await;
    assert_eq!(status, 409);
    let (status, _) = api
        .call(Method::DELETE, "/alert_webhooks/filed", None)
        .await;
    assert_eq!(status, 409);

    // The masked URL sent back keeps the stored one (the notices below still reach it).
    let (status, v) = api
        .call(
            Method::PUT,
            "/alert_webhooks/ops",
            Some(json!({"url": masked, "format": "json"})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    // The file's rule is evaluated (its first evaluation may come late on a busy machine).
    let deadline = std::time::Instant::now() + DEADLINE;
    let quiet_since = loop {
        let since = api.state("quiet").await["since"].clone();
        if since.is_u64() {
            break since;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the file's rule is evaluated"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };

    // Traffic: the API's rule fires and notifies the API's webhook.
    for _ in 0..3 {
        assert_eq!(chat(&gw, "alice").await, 200);
    }
    let fired = notices_at_least(&hooks, &path, 1).await;
    assert_eq!(fired[0]["alert"], "burst");
    assert_eq!(fired[0]["state"], "firing");
    assert!(fired[0]["value"].as_f64().unwrap() > 10.0, "{}", fired[0]);
    assert_eq!(api.state("burst").await["state"], "firing");

    // A stale If-Match is refused; the rule's own revision is accepted.
    let (_, v) = api.call(Method::GET, "/alert_rules/burst", None).await;
    let revision = v["revision"].as_str().unwrap().to_string();
    let raise = json!({"threshold": 1_000_000_000});
    let (status, _) = api
        .call_if(
            Method::PATCH,
            "/alert_rules/burst",
            Some(raise.clone()),
            Some("stale"),
        )
        .await;
    assert_eq!(status, 409);
    // Raising the threshold: the rule keeps its state and resolves at the next evaluation.
    let (status, v) = api
        .call_if(
            Method::PATCH,
            "/alert_rules/burst",
            Some(raise),
            Some(&revision),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["webhooks"], json!(["ops"]), "a patch keeps the rest");
    let resolved = notices_at_least(&hooks, &path, 2).await;
    assert_eq!(resolved[1]["alert"], "burst");
    assert_eq!(resolved[1]["state"], "resolved");
    assert_eq!(
        api.state("quiet").await["since"],
        quiet_since,
        "an unchanged rule keeps its state"
    );

    // The test button: a test notice in the webhook's format, the receiver's status.
    let (status, v) = api
        .call(Method::POST, "/alert_webhooks/ops/test", None)
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (&v["delivered"], &v["status"]),
        (&json!(true), &json!(200)),
        "{v}"
    );
    let tested = notices_at_least(&hooks, &path, 3).await;
    assert_eq!(tested[2]["state"], "test");
    // A receiver that is not there: the error, without the URL's secret.
    let down = format!("http://127.0.0.1:{}/down/{HOOK_SECRET}", closed_port());
    let (status, _) = api
        .call(
            Method::POST,
            "/alert_webhooks",
            Some(json!({"name": "down", "url": down, "format": "feishu"})),
        )
        .await;
    assert_eq!(status, 201);
    let (status, v) = api
        .call(Method::POST, "/alert_webhooks/down/test", None)
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["delivered"], false, "{v}");
    assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
    let (status, _) = api
        .call(Method::POST, "/alert_webhooks/none/test", None)
        .await;
    assert_eq!(status, 404);

    // A webhook a rule names cannot go; the history has every change; restore brings a
    // deleted rule back.
    let (status, v) = api.call(Method::DELETE, "/alert_webhooks/ops", None).await;
    assert_eq!(status, 400, "{v}");
    let (_, v) = api.call(Method::GET, "/revisions", None).await;
    let with_rule = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["kind"] == "alert rule" && c["action"] == "patch")
        .unwrap()["revision"]
        .clone();
    assert_eq!(
        api.call(Method::DELETE, "/alert_rules/burst", None).await.0,
        204
    );
    assert_eq!(
        api.call(Method::GET, "/alert_rules/burst", None).await.0,
        404
    );
    let (status, v) = api
        .call(
            Method::POST,
            &format!("/revisions/{with_rule}/restore"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = api.call(Method::GET, "/alert_rules/burst", None).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["threshold"], 1_000_000_000.0);

    // They survive a kill -9; `config export` has them, `config diff` shows them masked.
    gw.signal_and_wait("-KILL");
    gw.respawn();
    let mut api2 = Api::new(&gw, Some(TOKEN));
    let (status, v) = api2.call(Method::GET, "/alert_webhooks/ops", None).await;
    assert_eq!(
        (status, v["url"].as_str()),
        (StatusCode::OK, Some(masked.as_str()))
    );
    api.seen.push_str(&api2.seen);
    let run = |args: &[&str]| gw.cli(args);
    let exported = run(&["config", "export"]);
    assert!(
        exported.contains("name: burst") && exported.contains(HOOK_SECRET),
        "{exported}"
    );
    let diff = run(&["config", "diff"]);
    assert!(
        diff.contains("name: burst") && diff.contains("name: ops"),
        "{diff}"
    );
    assert!(!diff.contains(HOOK_SECRET), "{diff}");
    assert!(!run(&["config", "export", "--masked"]).contains(HOOK_SECRET));

    // The URL's secret: in no answer of the API and in no log line.
    assert_eq!(
        chat(&gw, "bob").await,
        200,
        "a normal request is still served"
    );
    let log = gw.stop();
    assert!(!api.seen.contains(HOOK_SECRET), "{}", api.seen);
    assert!(!log.contains(HOOK_SECRET), "{log}");
    assert!(!gw.access_log_text().contains(HOOK_SECRET));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_rule_fires_when_a_balance_runs_low() {
    let mock = Mock::start();
    let hooks = RawUpstream::fixed(http_json(200, "{}"));
    let body = Body::mock(&mock.url())
        .consumers(&["alice", "bob"])
        .section("quota:\n  consumers: [alice, bob]\nalerts:\n  interval: 200ms\n")
        .build();
    let gw = Gateway::start_opts(&body, None, Some(TOKEN), &[]);
    let mut api = Api::new(&gw, Some(TOKEN));
    for (name, n) in [("alice", 1000), ("bob", 1000)] {
        let (status, v) = api
            .call(
                Method::PUT,
                &format!("/quota/balances/{name}"),
                Some(json!({"quota": n})),
            )
            .await;
        assert_eq!(status, 200, "{v}");
    }
    let url = format!("http://{}/low", hooks.addr);
    let (status, v) = api
        .call(
            Method::POST,
            "/alert_webhooks",
            Some(json!({"name": "ops", "url": url})),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    let (status, v) = api
        .call(
            Method::POST,
            "/alert_rules",
            Some(json!({"name": "q", "kind": "quota", "threshold": 10, "filter": {"model": "x"}})),
        )
        .await;
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("(q).filter"),
        "{v}"
    );
    // One rule over every charged consumer, one on alice alone.
    let every =
        json!({"name": "low-balance", "kind": "quota", "threshold": 500, "webhooks": ["ops"]});
    assert_eq!(
        api.call(Method::POST, "/alert_rules", Some(every)).await.0,
        201
    );
    let alice = json!({"name": "alice-low", "kind": "quota", "threshold": 500, "filter": {"consumer": "alice"}});
    assert_eq!(
        api.call(Method::POST, "/alert_rules", Some(alice)).await.0,
        201
    );
    eventually("the quota rules evaluated", || {
        let base = api.base.clone();
        async move {
            let v = get_json(&format!("{base}/alerts"), Some(TOKEN)).await;
            v["items"].as_array().is_some_and(|i| {
                i.len() == 2 && i.iter().all(|s| s["state"] == "ok" && s["value"] == 1000.0)
            })
        }
    })
    .await;
    assert!(posted_json(&hooks, "/low").is_empty());

    // bob's balance is set low: the rule fires, naming bob and his balance.
    let (status, _) = api
        .call(
            Method::PUT,
            "/quota/balances/bob",
            Some(json!({"quota": 120})),
        )
        .await;
    assert_eq!(status, 200);
    let fired = notices_at_least(&hooks, "/low", 1).await;
    assert_eq!(fired[0]["alert"], "low-balance");
    assert_eq!(fired[0]["state"], "firing");
    assert_eq!(fired[0]["value"], 120.0);
    assert_eq!(
        fired[0]["detail"], "consumer bob has 120 tokens left",
        "{}",
        fired[0]
    );
    assert!(
        fired[0]["summary"]
            .as_str()
            .unwrap()
            .contains("bob has 120 tokens left"),
        "{}",
        fired[0]
    );
    assert_eq!(api.state("alice-low").await["state"], "ok");
    // Topped up: resolved.
    api.call(
        Method::POST,
        "/quota/balances/bob/delta",
        Some(json!({"value": 1000})),
    )
    .await;
    let resolved = notices_at_least(&hooks, "/low", 2).await;
    assert_eq!(resolved[1]["state"], "resolved");

    // alice spends her way below the threshold: her rule fires from the charged usage.
    let (status, _) = api
        .call(
            Method::PUT,
            "/quota/balances/alice",
            Some(json!({"quota": 500})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(chat(&gw, "alice").await, 200);
    let base = api.base.clone();
    eventually("alice-low firing", || {
        let base = base.clone();
        async move {
            let v = get_json(&format!("{base}/alerts"), Some(TOKEN)).await;
            v["items"].as_array().unwrap().iter().any(|s| {
                s["rule"] == "alice-low"
                    && s["state"] == "firing"
                    && s["value"].as_f64().is_some_and(|b| b < 500.0)
                    && s["detail"]
                        .as_str()
                        .is_some_and(|d| d.contains("consumer alice"))
            })
        }
    })
    .await;
    assert_eq!(
        chat(&gw, "bob").await,
        200,
        "a normal request is still served"
    );
}
