//! The operator assets in `conf/` against the real tools: `promtool` checks and unit-tests the
//! alert rules and the example scrape config; a real `prometheus` scrapes a gateway that served
//! a known mix of requests, and its totals must equal the `usage` the mock returned; every
//! dashboard query must be valid PromQL over metrics the gateway exposes (or that are
//! announced, allow-listed below) and return data.
//!
//! `prometheus` and `promtool` come from Debian's `prometheus` package, which
//! `tests/deps.sh` installs; without them these tests fail rather than pass vacuously.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use common::*;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const DASHBOARD: &str = "conf/grafana/tollgate-dashboard.json";
const ALERTS: &str = "conf/prometheus/tollgate-alerts.yml";
const PROM_CONFIG: &str = "conf/prometheus/prometheus.yml";

/// Metrics the dashboard and alerts may use before the gateway exports them (none now: the
/// test config has consumers, a rate limit and a quota, and the traffic touches all of them).
const ANNOUNCED: &[&str] = &[];

/// Series Prometheus itself creates for every target.
const SYNTHETIC: &[&str] = &["up"];

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// `name` on PATH, or a failure that says how to get it.
fn tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{name}` is not on PATH: run `bash tests/deps.sh` (installs Debian's \
                 `prometheus` package, which provides `prometheus` and `promtool`)"
            )
        })
}

fn promtool(args: &[&str]) -> String {
    let out = Command::new(tool("promtool")).args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "promtool {args:?} failed ({}):\n{text}",
        out.status
    );
    text
}

fn read_yaml(path: &str) -> serde_yaml::Value {
    serde_yaml::from_str(&std::fs::read_to_string(repo(path)).unwrap()).unwrap()
}

fn read_dashboard() -> Value {
    serde_json::from_str(&std::fs::read_to_string(repo(DASHBOARD)).unwrap())
        .unwrap_or_else(|e| panic!("{DASHBOARD} is not valid JSON: {e}"))
}

/// Every alerting rule of the rule file (name -> rule).
fn alert_rules() -> BTreeMap<String, serde_yaml::Value> {
    let doc = read_yaml(ALERTS);
    let mut rules = BTreeMap::new();
    for group in doc["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            let name = rule["alert"]
                .as_str()
                .expect("only alerting rules")
                .to_string();
            assert!(
                rules.insert(name.clone(), rule.clone()).is_none(),
                "duplicate alert {name}"
            );
        }
    }
    rules
}

// ----------------------------------------------------------------------------- PromQL lexing

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// Index just past the string literal starting at `i`.
fn skip_string(c: &[char], i: usize) -> usize {
    let quote = c[i];
    let mut j = i + 1;
    while j < c.len() && c[j] != quote {
        if c[j] == '\\' && quote != '`' {
            j += 1;
        }
        j += 1;
    }
    j + 1
}

/// Index just past the `close` matching the opener at `i`, skipping string literals.
fn skip_group(c: &[char], i: usize, close: char) -> usize {
    let open = c[i];
    let mut depth = 0;
    let mut j = i;
    while j < c.len() {
        match c[j] {
            '"' | '\'' | '`' => {
                j = skip_string(c, j);
                continue;
            }
            x if x == open => depth += 1,
            x if x == close => {
                depth -= 1;
                if depth == 0 {
                    return j + 1;
                }
            }
            _ => {}
        }
        j += 1;
    }
    panic!("unbalanced {open:?} in {:?}", c.iter().collect::<String>());
}

/// The metric names a PromQL expression (Grafana variables allowed) selects. A small lexer:
/// string literals, label matchers `{..}`, ranges `[..]`, numbers and durations, `$variables`,
/// function and aggregation names, keywords and the label lists after `by`, `without`, `on`,
/// `ignoring`, `group_left`, `group_right` are skipped; every other identifier is a metric.
fn metric_names(expr: &str) -> Vec<String> {
    const AGGREGATIONS: &[&str] = &[
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
    ];
    const LABEL_LISTS: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    const KEYWORDS: &[&str] = &["offset", "bool", "and", "or", "unless", "inf", "nan"];
    let c: Vec<char> = expr.chars().collect();
    let mut names = Vec::new();
    let mut i = 0;
    while i < c.len() {
        match c[i] {
            '"' | '\'' | '`' => i = skip_string(&c, i),
            '{' => i = skip_group(&c, i, '}'),
            '[' => i = skip_group(&c, i, ']'),
            '$' => {
                i += 1;
                if c.get(i) == Some(&'{') {
                    i = skip_group(&c, i, '}');
                } else {
                    while i < c.len() && is_ident(c[i]) {
                        i += 1;
                    }
                }
            }
            x if x.is_ascii_digit() || x == '.' => {
                while i < c.len() && (is_ident(c[i]) || c[i] == '.') {
                    i += 1;
                }
            }
            x if x.is_ascii_alphabetic() || x == '_' || x == ':' => {
                let start = i;
                while i < c.len() && is_ident(c[i]) {
                    i += 1;
                }
                let word: String = c[start..i].iter().collect();
                let lower = word.to_ascii_lowercase();
                let mut next = i;
                while next < c.len() && c[next].is_whitespace() {
                    next += 1;
                }
                let call = c.get(next) == Some(&'(');
                if LABEL_LISTS.contains(&lower.as_str()) {
                    if call {
                        i = skip_group(&c, next, ')');
                    }
                } else if !(call
                    || KEYWORDS.contains(&lower.as_str())
                    || AGGREGATIONS.contains(&lower.as_str()))
                {
                    names.push(word);
                }
            }
            _ => i += 1,
        }
    }
    names
}

#[test]
fn metric_name_lexer() {
    assert_eq!(
        metric_names(
            r#"histogram_quantile(0.99, sum by (route, le) (rate(a_bucket{x=~"$v", y="}"}[$__rate_interval] offset 1h))) > 3 * on (p) group_left (q) b and sum without(z) (c) unless count(d[5m:1m]) or e_total{k=`v`} > bool 1e3"#
        ),
        ["a_bucket", "b", "c", "d", "e_total"]
    );
}

/// (panel title, expression) for every query of every panel, rows' nested panels included.
fn dashboard_queries(dashboard: &Value) -> Vec<(String, String)> {
    fn walk(panels: &Value, out: &mut Vec<(String, String)>) {
        for p in panels.as_array().into_iter().flatten() {
            walk(&p["panels"], out);
            for t in p["targets"].as_array().into_iter().flatten() {
                let expr = t["expr"].as_str().unwrap_or_default().to_string();
                out.push((p["title"].as_str().unwrap_or_default().to_string(), expr));
            }
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// The metric selector of each `label_values(selector, label)` templating query.
fn variable_selectors(dashboard: &Value) -> Vec<(String, String)> {
    dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["type"] == "query")
        .map(|v| {
            let q = v["definition"].as_str().unwrap();
            let inner = q
                .strip_prefix("label_values(")
                .and_then(|q| q.strip_suffix(')'))
                .and_then(|q| q.rsplit_once(','))
                .unwrap_or_else(|| panic!("variable {}: unexpected query {q}", v["name"]))
                .0;
            (format!("variable {}", v["name"]), inner.to_string())
        })
        .collect()
}

// ----------------------------------------------------------------------------- static checks

#[test]
fn promtool_accepts_alert_rules_and_example_config() {
    let out = promtool(&["check", "rules", repo(ALERTS).to_str().unwrap()]);
    assert!(out.contains("SUCCESS"), "{out}");
    // Also checks the rule file the example config loads (relative to the config).
    let out = promtool(&["check", "config", repo(PROM_CONFIG).to_str().unwrap()]);
    assert!(out.contains("1 rule files found"), "{out}");

    for (name, rule) in alert_rules() {
        let severity = rule["labels"]["severity"].as_str().unwrap_or_default();
        assert!(
            ["critical", "warning"].contains(&severity),
            "{name}: severity {severity:?}"
        );
        for a in ["summary", "description"] {
            assert!(
                rule["annotations"][a]
                    .as_str()
                    .is_some_and(|s| !s.is_empty()),
                "{name}: no {a} annotation"
            );
        }
    }
}

/// promtool unit tests: each alert fires on synthetic series that should trigger it (after its
/// `for`), and not on the neighbouring series that should not. Annotations are stripped from
/// the copy under test (promtool compares them verbatim; their templates are checked above).
const ALERT_UNIT_TESTS: &str = r#"
evaluation_interval: 1m
tests:
  - name: gateway down
    interval: 1m
    input_series:
      - {series: 'up{job="tollgate",instance="gw1:8001"}', values: '0x5'}
      - {series: 'up{job="tollgate",instance="gw2:8001"}', values: '1x5'}
      - {series: 'up{job="other",instance="x:9100"}', values: '0x5'}
    alert_rule_test:
      - {eval_time: 0m, alertname: TollgateDown, exp_alerts: []}
      - eval_time: 2m
        alertname: TollgateDown
        exp_alerts:
          - exp_labels: {severity: critical, job: tollgate, instance: "gw1:8001"}

  - name: token spike against the previous hour
    interval: 1m
    input_series:
      # p: 100 tokens/s for 70 minutes, then 2000/s (spike).
      - {series: 'tollgate_input_tokens_total{route="r",provider="p",model="m"}', values: '0+6000x70 540000+120000x14'}
      - {series: 'tollgate_output_tokens_total{route="r",provider="p",model="m"}', values: '0x85'}
      # q: a steady 1000/s + 200/s.
      - {series: 'tollgate_input_tokens_total{route="r",provider="q",model="m"}', values: '0+60000x85'}
      - {series: 'tollgate_output_tokens_total{route="r",provider="q",model="m"}', values: '0+12000x85'}
      # s: 10/s then 100/s: ten times its baseline, but under the floor.
      - {series: 'tollgate_input_tokens_total{route="r",provider="s",model="m"}', values: '0+600x70 48000+6000x14'}
      - {series: 'tollgate_output_tokens_total{route="r",provider="s",model="m"}', values: '0x85'}
    alert_rule_test:
      - {eval_time: 70m, alertname: TollgateTokenUsageSpike, exp_alerts: []}
      - eval_time: 85m
        alertname: TollgateTokenUsageSpike
        exp_alerts:
          - exp_labels: {severity: warning, provider: p}

  - name: 5xx ratio per route
    interval: 1m
    input_series:
      # r: 10 of 70 requests/min fail (14%).
      - {series: 'tollgate_requests_total{route="r",provider="p",model="m",status="200"}', values: '0+60x20'}
      - {series: 'tollgate_requests_total{route="r",provider="p",model="m",status="502"}', values: '0+10x20'}
      # s: 1 of 601 (0.2%).
      - {series: 'tollgate_requests_total{route="s",provider="p",model="m",status="200"}', values: '0+600x20'}
      - {series: 'tollgate_requests_total{route="s",provider="p",model="m",status="500"}', values: '0+1x20'}
      # t: idle; its single request fails (100%, but one failure).
      - {series: 'tollgate_requests_total{route="t",provider="p",model="m",status="503"}', values: '0x10 1x10'}
      # u: many 4xx, no 5xx.
      - {series: 'tollgate_requests_total{route="u",provider="p",model="m",status="429"}', values: '0+100x20'}
      - {series: 'tollgate_requests_total{route="u",provider="p",model="m",status="200"}', values: '0+1x20'}
    alert_rule_test:
      - {eval_time: 4m, alertname: TollgateHighErrorRate, exp_alerts: []}
      - eval_time: 15m
        alertname: TollgateHighErrorRate
        exp_alerts:
          - exp_labels: {severity: critical, route: r}

  - name: all keys of a provider out of rotation
    interval: 1m
    input_series:
      - {series: 'tollgate_key_healthy{provider="p",key="a",state="unhealthy"}', values: '0x10'}
      - {series: 'tollgate_key_healthy{provider="p",key="b",state="revoked"}', values: '0x10'}
      - {series: 'tollgate_key_healthy{provider="q",key="c",state="healthy"}', values: '1x10'}
      - {series: 'tollgate_key_healthy{provider="q",key="d",state="resting"}', values: '0x10'}
    alert_rule_test:
      - {eval_time: 0m, alertname: TollgateProviderAllKeysOut, exp_alerts: []}
      - eval_time: 2m
        alertname: TollgateProviderAllKeysOut
        exp_alerts:
          - exp_labels: {severity: critical, provider: p}

  - name: consumer quotas
    interval: 1m
    input_series:
      - {series: 'tollgate_quota_remaining_tokens{consumer="alice"}', values: '50000x30'}
      - {series: 'tollgate_quota_remaining_tokens{consumer="bob"}', values: '10000000x30'}
      # carol spends 30k tokens a minute: 400k left at 20m, gone in well under an hour.
      - {series: 'tollgate_quota_remaining_tokens{consumer="carol"}', values: '1000000-30000x30'}
    alert_rule_test:
      - {eval_time: 3m, alertname: TollgateConsumerQuotaLow, exp_alerts: []}
      - eval_time: 20m
        alertname: TollgateConsumerQuotaLow
        exp_alerts:
          - exp_labels: {severity: warning, consumer: alice}
      - {eval_time: 5m, alertname: TollgateConsumerQuotaExhaustionPredicted, exp_alerts: []}
      - eval_time: 20m
        alertname: TollgateConsumerQuotaExhaustionPredicted
        exp_alerts:
          - exp_labels: {severity: warning, consumer: carol}

  - name: p99 time to first token
    interval: 1m
    input_series:
      # slow: every first token between 10 s and 30 s.
      - {series: 'tollgate_time_to_first_token_seconds_bucket{route="r",provider="p",model="slow",le="0.5"}', values: '0x20'}
      - {series: 'tollgate_time_to_first_token_seconds_bucket{route="r",provider="p",model="slow",le="10"}', values: '0x20'}
      - {series: 'tollgate_time_to_first_token_seconds_bucket{route="r",provider="p",model="slow",le="30"}', values: '0+10x20'}
      - {series: 'tollgate_time_to_first_token_seconds_bucket{route="r",provider="p",model="slow",le="+Inf"}', values: '0+10x20'}
      # fast: every first token under 0.5 s.
      - {series: 'tollgate_time_to_first_token_seconds_bucket{route="r",provider="p",model="fast",le="0.5"}', values: '0+10x20'}
      - {series: 'tollgate_time_to_first_token_seconds_bucket{route="r",provider="p",model="fast",le="10"}', values: '0+10x20'}
      - {series: 'tollgate_time_to_first_token_seconds_bucket{route="r",provider="p",model="fast",le="30"}', values: '0+10x20'}
      - {series: 'tollgate_time_to_first_token_seconds_bucket{route="r",provider="p",model="fast",le="+Inf"}', values: '0+10x20'}
    alert_rule_test:
      - {eval_time: 8m, alertname: TollgateSlowTimeToFirstToken, exp_alerts: []}
      - eval_time: 15m
        alertname: TollgateSlowTimeToFirstToken
        exp_alerts:
          - exp_labels: {severity: warning, route: r, provider: p, model: slow}

  - name: access-log drops
    interval: 1m
    input_series:
      - {series: 'tollgate_access_log_dropped_total{job="tollgate",instance="gw1:8001"}', values: '0+10x15'}
      - {series: 'tollgate_access_log_dropped_total{job="tollgate",instance="gw2:8001"}', values: '0x15'}
    alert_rule_test:
      - {eval_time: 3m, alertname: TollgateAccessLogDropping, exp_alerts: []}
      - eval_time: 10m
        alertname: TollgateAccessLogDropping
        exp_alerts:
          - exp_labels: {severity: warning, job: tollgate, instance: "gw1:8001"}
"#;

#[test]
fn alert_rules_fire_on_synthetic_series() {
    let dir = tempfile::tempdir().unwrap();
    let mut doc = read_yaml(ALERTS);
    for group in doc["groups"].as_sequence_mut().unwrap() {
        for rule in group["rules"].as_sequence_mut().unwrap() {
            rule.as_mapping_mut().unwrap().remove("annotations");
        }
    }
    let rules = dir.path().join("rules.yml");
    std::fs::write(&rules, serde_yaml::to_string(&doc).unwrap()).unwrap();

    let mut tests: serde_yaml::Value = serde_yaml::from_str(ALERT_UNIT_TESTS).unwrap();
    tests["rule_files"] = serde_yaml::to_value([rules.to_str().unwrap()]).unwrap();
    // Every alert has a firing case.
    let tested: BTreeSet<String> = tests["tests"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_sequence().unwrap().iter())
        .filter(|c| c["exp_alerts"].as_sequence().is_some_and(|a| !a.is_empty()))
        .map(|c| c["alertname"].as_str().unwrap().to_string())
        .collect();
    let all: BTreeSet<String> = alert_rules().into_keys().collect();
    assert_eq!(tested, all, "every alert needs a firing unit test");

    let file = dir.path().join("tests.yml");
    std::fs::write(&file, serde_yaml::to_string(&tests).unwrap()).unwrap();
    promtool(&["test", "rules", file.to_str().unwrap()]);
}

#[test]
fn dashboard_is_importable_grafana_json() {
    let d = read_dashboard();
    assert!(d["uid"].as_str().is_some_and(|u| !u.is_empty()));
    assert!(d["title"].as_str().is_some_and(|u| !u.is_empty()));
    assert!(d["schemaVersion"].as_u64().unwrap() >= 36);
    assert!(
        d["id"].is_null(),
        "an exported dashboard has no database id"
    );

    let vars = d["templating"]["list"].as_array().unwrap();
    let var = |name: &str| {
        vars.iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no templating variable {name}"))
    };
    let ds = var("DS_PROMETHEUS");
    assert_eq!(ds["type"], "datasource");
    assert_eq!(ds["query"], "prometheus");
    for name in ["job", "instance", "route", "provider", "model"] {
        let v = var(name);
        assert_eq!(v["type"], "query", "{name}");
        assert_eq!(v["datasource"]["uid"], "${DS_PROMETHEUS}", "{name}");
        assert_eq!(v["includeAll"], true, "{name}");
    }

    // Unique ids, every panel on the 24-column grid without overlaps, every query on the
    // templated data source.
    let mut ids = BTreeSet::new();
    let mut cells = BTreeMap::new();
    let mut panels = 0;
    for p in d["panels"].as_array().unwrap() {
        let title = p["title"].as_str().unwrap();
        assert!(
            ids.insert(p["id"].as_u64().unwrap()),
            "duplicate id: {title}"
        );
        let g = &p["gridPos"];
        let (x, y, w, h) = (
            g["x"].as_u64().unwrap(),
            g["y"].as_u64().unwrap(),
            g["w"].as_u64().unwrap(),
            g["h"].as_u64().unwrap(),
        );
        assert!(w > 0 && h > 0 && x + w <= 24, "{title}: gridPos {g}");
        for cx in x..x + w {
            for cy in y..y + h {
                if let Some(other) = cells.insert((cx, cy), title) {
                    panic!("panels {other:?} and {title:?} overlap");
                }
            }
        }
        if p["type"] == "row" {
            assert_eq!(p["collapsed"], false, "{title}: collapsed rows hide panels");
            continue;
        }
        panels += 1;
        assert_eq!(p["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title}: no query");
        for t in targets {
            assert_eq!(t["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
            assert!(t["expr"].as_str().is_some_and(|e| !e.is_empty()), "{title}");
        }
    }
    assert!(panels >= 20, "{panels} panels");
}

// ----------------------------------------------------------------------------- live Prometheus

async fn query_json(url: &str, query: &[(&str, &str)]) -> Option<Value> {
    let resp = client().get(url).query(query).send().await.ok()?;
    resp.json().await.ok()
}

struct Prometheus {
    url: String,
    log: PathBuf,
    proc: Proc,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// The example config, scraping `target` every second and loading the repo's alert rules.
    fn start(target: &str) -> Prometheus {
        let bin = tool("prometheus");
        let dir = tempfile::tempdir().unwrap();
        let mut config = read_yaml(PROM_CONFIG);
        config["global"]["scrape_interval"] = "1s".into();
        config["global"]["scrape_timeout"] = "1s".into();
        config["global"]["evaluation_interval"] = "1s".into();
        config["rule_files"] = serde_yaml::to_value([repo(ALERTS).to_str().unwrap()]).unwrap();
        let job = &mut config["scrape_configs"][0];
        assert_eq!(job["job_name"], "tollgate");
        job["static_configs"][0]["targets"] = serde_yaml::to_value([target]).unwrap();
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, serde_yaml::to_string(&config).unwrap()).unwrap();

        let log = dir.path().join("prometheus.log");
        let log_file = std::fs::File::create(&log).unwrap();
        let child = Command::new(bin)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg("--web.listen-address=127.0.0.1:0")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .expect("spawn prometheus");
        let mut proc = Proc {
            child,
            name: "prometheus",
        };
        // It binds port 0 and logs the address it got: `msg="Listening on" address=...`.
        let read = || std::fs::read_to_string(&log).unwrap_or_default();
        let needle = "msg=\"Listening on\" address=";
        wait_text(needle, read, &mut proc.child);
        let text = read();
        let addr = text
            .split(needle)
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap()
            .to_string();
        Prometheus {
            url: format!("http://{addr}"),
            log,
            proc,
            _dir: dir,
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The result vector of an instant query, or why the query failed.
    async fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let v = query_json(&format!("{}/api/v1/query", self.url), &[("query", expr)])
            .await
            .ok_or("no answer")?;
        if v["status"] != "success" {
            return Err(format!("{expr}: {v}"));
        }
        Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
    }

    /// The single value of a query, waiting until it has one.
    async fn value(&self, expr: &str) -> f64 {
        let result = eventually_some(&format!("a value for {expr}"), || async {
            self.query(expr).await.ok().filter(|r| !r.is_empty())
        })
        .await;
        assert_eq!(result.len(), 1, "{expr}: {result:?}");
        result[0]["value"][1].as_str().unwrap().parse().unwrap()
    }
}

type Headers<'a> = &'a [(&'a str, &'a str)];

fn chat(content: &str, stream: bool) -> Value {
    let mut body = json!({"model": "mock-a", "stream": stream, "messages": [{"role": "user", "content": content}]});
    if stream {
        body["stream_options"] = json!({"include_usage": true});
    }
    body
}

/// Sends a request the mock answers with usage; returns (prompt_tokens, completion_tokens) of
/// the `usage` object the client received.
async fn metered_request(gw: &Gateway, body: &Value, headers: Headers<'_>) -> (u64, u64) {
    let mut req = client().post(gw.url("/v1/chat/completions")).json(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let usage = if body["stream"] == true {
        let events = sse_data(&resp.text().await.unwrap());
        assert_eq!(events.last().unwrap(), "[DONE]");
        let chunk: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
        chunk["usage"].clone()
    } else {
        resp.json::<Value>().await.unwrap()["usage"].clone()
    };
    (
        usage["prompt_tokens"].as_u64().unwrap(),
        usage["completion_tokens"].as_u64().unwrap(),
    )
}

/// Two providers: `mock` (keys a, b; one failure takes a key out, checked every 200 ms) and
/// `backup`, the route's fallback, so one failing request exercises attempt failures,
/// retries, a fallback and health checks.
fn gateway_config(mock: &Mock) -> String {
    format!(
        r#"providers:
  - name: mock
    type: openai-compatible
    base_url: "{url}"
    api_keys: [{{name: a, key: sk-a}}, {{name: b, key: sk-b}}]
    health: {{failure_threshold: 1, check_interval: 200ms, check_timeout: 2s}}
  - name: backup
    type: openai-compatible
    base_url: "{url}"
    api_keys: [{{name: z, key: sk-z}}]
consumers:
  - {{name: alice, credentials: [sk-alice]}}
  - {{name: carol, credentials: [sk-carol]}}
  - {{name: boss, credentials: [sk-boss]}}
quota:
  consumers: [alice, carol]
  admin_consumer: boss
store: {{path: "@DIR@/state.db"}}
rate_limits:
  - {{name: carol-rpm, key: consumer, window: minute, requests: 1}}
routes:
  - name: default
    forward_headers: ["x-mock-*"]
    models:
      - model: "mock-*"
        targets: [{{provider: mock}}, {{provider: backup, weight: 0}}]
"#,
        url = mock.url()
    )
}

/// Metric names in a text exposition (histograms and summaries with their series suffixes).
fn exposed_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut parts = rest.split_whitespace();
        let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
        names.insert(name.to_string());
        let suffixes: &[&str] = match kind {
            "histogram" => &["_bucket", "_sum", "_count"],
            "summary" => &["_sum", "_count"],
            _ => &[],
        };
        for s in suffixes {
            names.insert(format!("{name}{s}"));
        }
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_exact_totals_and_evaluates_dashboard_and_alerts() {
    // Fail at once (not after the traffic) when the tools are missing.
    tool("prometheus");
    let started = Instant::now();
    let mock = Mock::start();
    let gw = Gateway::start(&gateway_config(&mock));

    // A known mix: non-streaming and streaming (usage requested, so the client sees it),
    // different prompt lengths, output lengths, cached and reasoning tokens.
    let mut expected = (0u64, 0u64);
    let mix: &[(&str, bool, Headers)] = &[
        ("Hello", false, &[("x-mock-chunks", "5")]),
        (
            "Summarise the wörld in 世界 words, please",
            false,
            &[
                ("x-mock-chunks", "12"),
                ("x-mock-cached-tokens", "3"),
                ("x-mock-reasoning-tokens", "4"),
            ],
        ),
        ("x", false, &[("x-mock-chunks", "1")]),
        ("Stream me a short poem", true, &[("x-mock-chunks", "6")]),
        (
            "Stream a longer answer with some reasoning first",
            true,
            &[("x-mock-chunks", "17"), ("x-mock-reasoning-tokens", "2")],
        ),
        ("Hi", true, &[("x-mock-chunks", "3")]),
    ];
    for (content, stream, headers) in mix {
        let (input, output) = metered_request(&gw, &chat(content, *stream), headers).await;
        expected.0 += input;
        expected.1 += output;
    }
    assert!(expected.0 > 0 && expected.1 > 0);

    // A consumer with a quota is charged; one without balance is refused on its quota, then
    // on its rate limit.
    let topped = client()
        .post(gw.url("/v1/chat/completions/quota/refresh"))
        .bearer_auth("sk-boss")
        .header("content-type", "application/x-www-form-urlencoded")
        .body("consumer=alice&quota=1000000")
        .send()
        .await
        .unwrap();
    assert_eq!(topped.status(), 200);
    let (input, output) = metered_request(
        &gw,
        &chat("charged to alice", false),
        &[("authorization", "Bearer sk-alice")],
    )
    .await;
    expected.0 += input;
    expected.1 += output;
    for want in [429, 429] {
        let resp = client()
            .post(gw.url("/v1/chat/completions"))
            .bearer_auth("sk-carol")
            .json(&chat("no balance", false))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), want);
    }

    // A 4xx from the provider (not retried), and a 5xx on every attempt: key a, retry on key
    // b, fall back to backup; a and b leave rotation and return after a health check.
    for (status, want) in [("400", 400), ("500", 500)] {
        let resp = client()
            .post(gw.url("/v1/chat/completions"))
            .header("x-mock-status", status)
            .json(&chat("fail", false))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), want);
    }
    let metrics = eventually_some("every key back in rotation", || async {
        let text = get_text(&gw.admin_url("/metrics")).await?;
        let back = metric_sum(&text, "tollgate_key_healthy", &[]) == 3.0
            && metric_sum(&text, "tollgate_health_checks_total", &[("outcome", "ok")]) >= 2.0;
        back.then_some(text)
    })
    .await;
    assert_eq!(
        metric_sum(&metrics, "tollgate_input_tokens_total", &[]) as u64,
        expected.0,
        "gateway /metrics input tokens"
    );
    assert_eq!(
        metric_sum(&metrics, "tollgate_output_tokens_total", &[]) as u64,
        expected.1,
        "gateway /metrics output tokens"
    );

    // Dashboard and alert expressions select only metrics the gateway exposes, or announced
    // ones.
    let exposed = exposed_names(&metrics);
    let dashboard = read_dashboard();
    let rules = alert_rules();
    let mut exprs = dashboard_queries(&dashboard);
    exprs.extend(variable_selectors(&dashboard));
    exprs.extend(rules.iter().map(|(name, r)| {
        (
            format!("alert {name}"),
            r["expr"].as_str().unwrap().to_string(),
        )
    }));
    for (what, expr) in &exprs {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "{what}: no metric in {expr}");
        for n in names {
            assert!(
                exposed.contains(&n)
                    || ANNOUNCED.contains(&n.as_str())
                    || SYNTHETIC.contains(&n.as_str()),
                "{what}: unknown metric {n} in {expr}\nexposed: {exposed:?}"
            );
        }
    }

    // A real Prometheus, configured from the example config, scraping the admin listener.
    let target = gw.admin_addr.clone();
    let prom = Prometheus::start(&target);
    let prom_start = Instant::now();
    let mut prom = prom;
    let up = loop {
        if let Some(status) = prom.proc.child.try_wait().unwrap() {
            panic!("prometheus exited ({status}):\n{}", prom.log_text());
        }
        let targets = query_json(&format!("{}/api/v1/targets", prom.url), &[]).await;
        let up = targets.as_ref().and_then(|v| {
            v["data"]["activeTargets"]
                .as_array()?
                .iter()
                .find(|t| t["labels"]["job"] == "tollgate" && t["health"] == "up")
                .cloned()
        });
        if let Some(t) = up {
            break t;
        }
        assert!(
            prom_start.elapsed() < DEADLINE,
            "the gateway target is not up: {targets:?}\n{}",
            prom.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(up["labels"]["instance"], target.as_str());
    let to_up = prom_start.elapsed();

    assert_eq!(
        prom.value("sum(tollgate_output_tokens_total)").await as u64,
        expected.1,
        "output tokens in Prometheus"
    );
    assert_eq!(
        prom.value("sum(tollgate_input_tokens_total)").await as u64,
        expected.0,
        "input tokens in Prometheus"
    );

    // Every dashboard query is valid PromQL and, when it only uses metrics exposed now,
    // returns data (variables set to the values the traffic used, so a wrong label fails).
    let vars = [
        ("$__rate_interval", "1m"),
        ("$__range", "1h"),
        ("$job", "tollgate"),
        ("$instance", target.as_str()),
        ("$route", "default"),
        ("$provider", "mock|backup"),
        // The rule's pattern (the label value), as a PromQL regex.
        ("$model", r"mock-\\*"),
    ];
    let panel_queries: Vec<(String, String, bool)> = dashboard_queries(&dashboard)
        .into_iter()
        .map(|(title, expr)| {
            let mut q = expr.clone();
            for (k, v) in vars {
                q = q.replace(k, v);
            }
            assert!(!q.contains('$'), "{title}: unknown variable in {expr}");
            let announced = metric_names(&expr)
                .iter()
                .any(|n| ANNOUNCED.contains(&n.as_str()));
            (title, q, !announced)
        })
        .collect();
    let mut pending: Vec<&(String, String, bool)> = panel_queries.iter().collect();
    let start = Instant::now();
    loop {
        let mut still = Vec::new();
        for item in pending {
            let (title, q, must_have_data) = item;
            let result = prom
                .query(q)
                .await
                .unwrap_or_else(|e| panic!("panel {title:?}: query failed: {e}"));
            if *must_have_data && result.is_empty() {
                still.push(item);
            }
        }
        pending = still;
        if pending.is_empty() {
            break;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "panel queries without data: {:#?}",
            pending
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // The alert rules loaded and evaluated cleanly against the real series; nothing fires on
    // this healthy gateway, and the keys-out condition sees every provider in rotation.
    let names: BTreeSet<String> = rules.keys().cloned().collect();
    eventually_some("every alert rule evaluated", || async {
        let v = query_json(&format!("{}/api/v1/rules", prom.url), &[]).await?;
        let mut seen = BTreeSet::new();
        for g in v["data"]["groups"].as_array()? {
            for r in g["rules"].as_array()? {
                assert!(r["health"] != "err", "rule failed: {r}");
                if r["health"] == "ok" {
                    seen.insert(r["name"].as_str()?.to_string());
                }
            }
        }
        (seen == names).then_some(())
    })
    .await;
    for (name, rule) in &rules {
        let expr = rule["expr"].as_str().unwrap();
        let result = prom
            .query(expr)
            .await
            .unwrap_or_else(|e| panic!("alert {name}: {e}"));
        if name == "TollgateConsumerQuotaLow" {
            // carol's balance is 0 (refused above); alice has plenty.
            let who: Vec<&str> = result
                .iter()
                .filter_map(|r| r["metric"]["consumer"].as_str())
                .collect();
            assert_eq!(who, ["carol"], "alert {name} matches: {result:?}");
            continue;
        }
        assert!(result.is_empty(), "alert {name} matches: {result:?}");
    }
    let in_rotation = prom
        .query("max by (provider) (tollgate_key_healthy)")
        .await
        .unwrap();
    let mut providers: Vec<(String, String)> = in_rotation
        .iter()
        .map(|s| {
            (
                s["metric"]["provider"].as_str().unwrap().to_string(),
                s["value"][1].as_str().unwrap().to_string(),
            )
        })
        .collect();
    providers.sort();
    assert_eq!(
        providers,
        [("backup".into(), "1".into()), ("mock".into(), "1".into())]
    );
    // Only carol's spent quota alerts (pending or firing), once rules have seen the scrape.
    let want = [("TollgateConsumerQuotaLow".to_string(), "carol".to_string())];
    let alerts_url = format!("{}/api/v1/alerts", prom.url);
    eventually_some("only carol's quota alert is active", || async {
        let alerts = query_json(&alerts_url, &[]).await?;
        let active: Vec<(String, String)> = alerts["data"]["alerts"]
            .as_array()?
            .iter()
            .map(|a| {
                (
                    a["labels"]["alertname"].as_str().unwrap_or("").to_string(),
                    a["labels"]["consumer"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        assert!(
            active.iter().all(|a| want.contains(a)),
            "unexpected alerts: {alerts}"
        );
        (active == want).then_some(())
    })
    .await;

    eprintln!(
        "prometheus: target up after {to_up:?}; whole test {:?}",
        started.elapsed()
    );
}

async fn get_text(url: &str) -> Option<String> {
    client().get(url).send().await.ok()?.text().await.ok()
}
