//! Round trips: every shipped config and README block, and a property test over generated
//! settings (parse → `to_yaml` → parse gives an equal value).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::fuzzing::XorShift;
use indexmap::IndexMap;
use std::time::Duration;

fn round_trip(settings: &Settings) -> String {
    let yaml = to_yaml(settings);
    let back = from_yaml(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    assert_eq!(&back, settings, "{yaml}");
    assert_eq!(to_yaml(&back), yaml, "writing is stable");
    yaml
}

#[test]
fn shipped_configs_round_trip() {
    let conf = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("conf");
    let mut checked = 0;
    for entry in std::fs::read_dir(conf).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            let text = std::fs::read_to_string(&path).unwrap();
            let settings = from_yaml(&text).unwrap();
            let yaml = round_trip(&settings);
            // Nothing that was not written comes out: no nulls, no empty lists or sections.
            for absent in [": null", ": []", ": {}", "\n  {}"] {
                assert!(
                    !yaml.contains(absent),
                    "{}: {absent}\n{yaml}",
                    path.display()
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 2);
}

/// Every README block (a fragment inside a minimal config, as `tests/readme.rs` checks it).
#[test]
fn readme_configs_round_trip() {
    let readme = include_str!("../../README.md");
    let mut checked = 0;
    let mut rest = readme;
    while let Some(start) = rest.find("```yaml") {
        let body = &rest[start..];
        let (info, body) = body.split_once('\n').unwrap();
        let end = body.find("```").unwrap();
        let mut text = body[..end].to_string();
        if info.contains("fragment") {
            let minimal = "listeners: {proxy: [{address: \"127.0.0.1:1\"}]}\n";
            let mut doc: serde_yaml::Mapping = serde_yaml::from_str(minimal).unwrap();
            let part: serde_yaml::Mapping = serde_yaml::from_str(&text).unwrap();
            doc.extend(part);
            text = serde_yaml::to_string(&doc).unwrap();
        }
        let settings = from_yaml(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        round_trip(&settings);
        checked += 1;
        rest = &body[end..];
    }
    assert!(checked >= 5, "{checked} README blocks");
}

const BASE: &str = r#"
listeners:
  proxy: [{address: "127.0.0.1:8080"}]
  admin: {address: "127.0.0.1:9090", token: "${ADMIN_TOKEN}"}
providers:
  - name: openai
    type: openai
    api_keys: ["${OPENAI_KEY}", {name: b, key: "sk-literal", weight: 2}]
    health: {failures: [connect, 429, 5xx], check_interval: 1500ms}
routes:
  - name: default
    all_keys_down: try_anyway
    models: [{model: "mock-*", targets: [{provider: openai}]}]
consumers: [{name: alice, credentials: ["${ALICE_KEY}"]}]
auth: {sources: [bearer, "header: X-Team", "query:key"]}
rate_limits:
  - {name: teams, key: "header:x-team", window: minute, requests: 5}
redis: {url: "redis://:${REDIS_PASSWORD}@127.0.0.1:6379", on_error: closed, timeout: 1s}
access_log: {path: "-"}
"#;

#[test]
fn text_is_kept_as_written() {
    let settings = from_yaml(BASE).unwrap();
    let yaml = round_trip(&settings);
    for reference in [
        "${OPENAI_KEY}",
        "${ADMIN_TOKEN}",
        "${ALICE_KEY}",
        "${REDIS_PASSWORD}",
    ] {
        assert!(yaml.contains(reference), "{reference} in\n{yaml}");
    }
    let p = &settings.providers[0];
    assert_eq!(p.kind, ProviderType::OpenAi);
    assert_eq!(
        p.health.failures.as_deref(),
        Some(
            &[
                HealthFailure::Connect,
                HealthFailure::Status(429),
                HealthFailure::Class(5)
            ][..]
        )
    );
    assert_eq!(
        p.health.check_interval,
        Some(HumanDuration::from_millis(1500))
    );
    assert!(yaml.contains("check_interval: 1s 500ms"), "{yaml}");
    assert_eq!(
        settings.rate_limits[0].key,
        RateKey::Header("x-team".into())
    );
    assert_eq!(settings.rate_limits[0].window, Window::Minute);
    assert_eq!(
        settings.auth.sources.as_deref().unwrap()[1],
        CredentialSource::Header("X-Team".into())
    );
    assert_eq!(settings.access_log.path, Some(AccessLogPath::Stdout));
    assert_eq!(
        settings.routes[0].all_keys_down,
        Some(AllKeysDown::TryAnyway)
    );
    // A literal secret is written back (it is the file's text) but never shown by `Debug`.
    assert!(yaml.contains("sk-literal"));
    assert!(!format!("{settings:?}").contains("sk-literal"));
    assert!(format!("{settings:?}").contains("${OPENAI_KEY}"));
}

#[test]
fn closed_sets_reject_other_words_naming_the_entry() {
    let bad = |from: &str, to: &str| from_yaml(&BASE.replace(from, to)).unwrap_err();
    let cases = [
        (
            "type: openai",
            "type: openia",
            "providers[0] (openai).type",
            "unknown provider type `openia`",
        ),
        (
            "window: minute",
            "window: fortnight",
            "rate_limits[0] (teams).window",
            "expected second, minute, hour or day",
        ),
        (
            "\"header:x-team\"",
            "\"header:bad header\"",
            "rate_limits[0] (teams).key",
            "is not a header name",
        ),
        (
            "\"header:x-team\"",
            "team",
            "rate_limits[0] (teams).key",
            "header:NAME",
        ),
        (
            "on_error: closed",
            "on_error: maybe",
            "redis.on_error",
            "expected open or closed",
        ),
        (
            "try_anyway",
            "try_harder",
            "routes[0] (default).all_keys_down",
            "fail_fast or try_anyway",
        ),
        (
            "5xx]",
            "3xx]",
            "providers[0] (openai).health.failures[2]",
            "only 4xx and 5xx",
        ),
        (
            "429,",
            "200,",
            "providers[0] (openai).health.failures[1]",
            "a 4xx/5xx status",
        ),
        (
            "\"query:key\"",
            "\"cookie:k\"",
            "auth.sources[2]",
            "expected bearer",
        ),
        (
            "1500ms",
            "soon",
            "providers[0] (openai).health.check_interval",
            "is not a duration",
        ),
        (
            "timeout: 1s",
            "timeout: 1",
            "redis.timeout",
            "is not a duration",
        ),
        (
            "weight: 2}",
            "weight: 2, wieght: 3}",
            "providers[0] (openai).api_keys",
            "did not match",
        ),
        (
            "all_keys_down",
            "all_key_down",
            "routes[0] (default)",
            "all_key_down",
        ),
    ];
    for (from, to, field, message) in cases {
        let e = bad(from, to);
        assert!(e.contains(field) && e.contains(message), "{to}: {e}");
    }
}

// ---- generated settings -------------------------------------------------------------

/// Strings that YAML might read as something else, or that need quoting or escapes.
const TRICKY: &[&str] = &[
    "a",
    "mock-*",
    "${OPENAI_KEY}",
    "sk-${A}x${B}",
    "$$literal",
    "yes",
    "no",
    "true",
    "False",
    "null",
    "~",
    "123",
    "-7",
    "0x10",
    "0o7",
    "1e3",
    "1.5",
    ".inf",
    ".nan",
    "",
    " lead",
    "trail ",
    "a: b",
    "- x",
    "#hash",
    "x #y",
    "'q'",
    "\"dq\"",
    "multi\nline",
    "two\n\nlines\n",
    "tab\there",
    "ünïcödé",
    "*",
    "~^gpt-(4|5).*$",
    "[x]",
    "{y}",
    "&anchor",
    "*alias",
    "!tag",
    "%p",
    "@at",
    "`bt`",
    "x,y",
    "-",
    "on",
    "off",
    "Y",
    "=",
    "<<",
    "---",
    "...",
    "?",
    ":",
    "back\\slash",
    "\u{7f}del",
    "nul\u{0}byte",
    "cr\rlf",
];

fn s(rng: &mut XorShift) -> String {
    if rng.one_in(3) {
        format!("{}{}", rng.pick(TRICKY), rng.below(100))
    } else {
        rng.pick(TRICKY).to_string()
    }
}

fn opt<T>(rng: &mut XorShift, f: impl FnOnce(&mut XorShift) -> T) -> Option<T> {
    (!rng.one_in(2)).then(|| f(rng))
}

fn list<T>(rng: &mut XorShift, max: usize, mut f: impl FnMut(&mut XorShift) -> T) -> Vec<T> {
    let n = rng.below(max + 1);
    (0..n).map(|_| f(rng)).collect()
}

fn num(rng: &mut XorShift) -> u64 {
    match rng.below(4) {
        0 => 0,
        1 => rng.below(10) as u64,
        2 => u64::MAX - rng.below(3) as u64,
        _ => rng.next(),
    }
}

fn small(rng: &mut XorShift) -> u32 {
    if rng.one_in(5) {
        u32::MAX
    } else {
        rng.below(20) as u32
    }
}

fn duration(rng: &mut XorShift) -> HumanDuration {
    HumanDuration(match rng.below(5) {
        0 => Duration::ZERO,
        1 => Duration::from_millis(rng.below(100_000) as u64),
        2 => Duration::from_secs(rng.below(1_000_000) as u64),
        3 => Duration::new(rng.below(100_000) as u64, rng.below(1_000_000_000) as u32),
        _ => Duration::from_nanos(rng.below(5_000) as u64),
    })
}

fn secret(rng: &mut XorShift) -> Secret {
    Secret(s(rng))
}

fn header(rng: &mut XorShift) -> String {
    rng.pick(&["x-team", "X-Api-Key", "authorization", "x_under", "a"])
        .to_string()
}

fn listener(rng: &mut XorShift) -> ListenerSection {
    ListenerSection {
        address: s(rng),
        tls: opt(rng, |rng| TlsSection {
            cert: s(rng),
            key: s(rng),
            http2: rng.one_in(2),
        }),
        token: opt(rng, secret),
        console: opt(rng, |r| r.one_in(2)),
    }
}

fn server(rng: &mut XorShift) -> ServerSection {
    ServerSection {
        threads: opt(rng, |r| num(r) as usize),
        work_stealing: opt(rng, |r| r.one_in(2)),
        pid_file: opt(rng, s),
        upgrade_sock: opt(rng, s),
        error_log: opt(rng, s),
        user: opt(rng, s),
        group: opt(rng, s),
        daemon: opt(rng, |r| r.one_in(2)),
        grace_period_seconds: opt(rng, num),
        graceful_shutdown_timeout_seconds: opt(rng, num),
        upstream_keepalive_pool_size: opt(rng, |r| num(r) as usize),
        ca_file: opt(rng, s),
    }
}

fn health_failure(rng: &mut XorShift) -> HealthFailure {
    match rng.below(4) {
        0 => HealthFailure::Connect,
        1 => HealthFailure::Timeout,
        2 => HealthFailure::Status(400 + rng.below(200) as u16),
        _ => HealthFailure::Class(4 + rng.below(2) as u16),
    }
}

fn provider(rng: &mut XorShift) -> ProviderSection {
    ProviderSection {
        name: s(rng),
        kind: ProviderType::ALL[rng.below(ProviderType::ALL.len())],
        base_url: opt(rng, s),
        api_keys: list(rng, 3, |rng| {
            if rng.one_in(2) {
                KeyEntry::Plain(secret(rng))
            } else {
                KeyEntry::Named(NamedKey {
                    name: s(rng),
                    key: secret(rng),
                    weight: opt(rng, small),
                    disabled: rng.one_in(2),
                })
            }
        }),
        model_mapping: list(rng, 3, |rng| (s(rng), s(rng)))
            .into_iter()
            .collect::<IndexMap<_, _>>(),
        models: list(rng, 3, s),
        list_unconfigured: rng.one_in(2),
        timeouts: TimeoutSection {
            connect: opt(rng, duration),
            read: opt(rng, duration),
            write: opt(rng, duration),
            idle: opt(rng, duration),
        },
        ca_file: opt(rng, s),
        sni: opt(rng, s),
        http2: opt(rng, |r| r.one_in(2)),
        health: HealthSection {
            failure_threshold: opt(rng, small),
            success_threshold: opt(rng, small),
            check_interval: opt(rng, duration),
            check_timeout: opt(rng, duration),
            check_model: opt(rng, s),
            failures: opt(rng, |rng| list(rng, 4, health_failure)),
        },
        api_version: opt(rng, s),
        connect_to: opt(rng, s),
        responses_api: None,
    }
}

fn route(rng: &mut XorShift) -> RouteSection {
    RouteSection {
        name: s(rng),
        hosts: list(rng, 2, s),
        path_prefix: opt(rng, s),
        models: list(rng, 3, |rng| ModelRuleSection {
            model: s(rng),
            targets: list(rng, 3, |rng| TargetSection {
                provider: s(rng),
                model: opt(rng, s),
                weight: small(rng),
            }),
        }),
        retry: RetrySection {
            attempts: opt(rng, small),
            per_target: opt(rng, small),
            deadline: opt(rng, duration),
        },
        auth: RouteAuthSection {
            required: rng.one_in(2),
            allow: list(rng, 2, s),
        },
        all_keys_down: opt(rng, |r| AllKeysDown::ALL[r.below(2)]),
        forward_headers: list(rng, 2, s),
        list_unconfigured: rng.one_in(2),
        cache: opt(rng, |rng| RouteCacheSection {
            ttl: opt(rng, duration),
            scope: opt(rng, |r| CacheScope::ALL[r.below(CacheScope::ALL.len())]),
            charge: opt(rng, |r| r.one_in(2)),
            store_truncated: opt(rng, |r| r.one_in(2)),
            semantic: opt(rng, |rng| SemanticCacheSection {
                model: s(rng),
                route: opt(rng, s),
                threshold: opt(rng, |r| num(r) as f64 / 1024.0),
                max_entries: opt(rng, num),
                max_bytes: opt(rng, num),
                tool_calls: opt(rng, |r| r.one_in(2)),
            }),
        }),
        decorators: opt(rng, decorators),
        moderation: opt(rng, |rng| ModerationSection {
            via: ModerationVia::ALL[rng.below(2)],
            model: opt(rng, s),
            route: opt(rng, s),
            url: opt(rng, s),
            timeout: opt(rng, duration),
            on_error: opt(rng, |r| ModerationOnError::ALL[r.below(2)]),
            output: opt(rng, |rng| ModerationOutputSection {
                window: opt(rng, |r| u32::try_from(r.below(200_000)).unwrap_or(1000)),
            }),
        }),
        pii: opt(rng, |rng| PiiSection {
            mode: opt(rng, |r| PiiMode::ALL[r.below(PiiMode::ALL.len())]),
            detectors: opt(rng, |rng| {
                list(rng, 3, |r| {
                    PiiDetector::ALL[r.below(PiiDetector::ALL.len())]
                })
            }),
            custom: list(rng, 2, |rng| CustomDetectorSection {
                name: s(rng),
                regex: s(rng),
            }),
        }),
        deny: opt(rng, |rng| DenySection {
            input: opt(rng, deny_list),
            output: opt(rng, deny_list),
            holdback: opt(rng, |r| r.below(100)),
        }),
    }
}

fn prompt_message(rng: &mut XorShift) -> PromptMessage {
    PromptMessage {
        role: PromptRole::ALL[rng.below(PromptRole::ALL.len())],
        content: s(rng),
    }
}

fn decorators(rng: &mut XorShift) -> DecoratorsSection {
    DecoratorsSection {
        prepend: list(rng, 2, prompt_message),
        append: list(rng, 2, prompt_message),
    }
}

fn template(rng: &mut XorShift) -> TemplateSection {
    TemplateSection {
        name: s(rng),
        model: s(rng),
        messages: list(rng, 2, prompt_message),
        variables: list(rng, 2, |rng| {
            let v = TemplateVariableSection {
                kind: VariableType::ALL[rng.below(VariableType::ALL.len())],
                values: list(rng, 2, s),
                default: opt(rng, |r| serde_json::Value::from(s(r))),
            };
            (s(rng), v)
        })
        .into_iter()
        .collect(),
    }
}

fn deny_list(rng: &mut XorShift) -> DenyListSection {
    DenyListSection {
        keywords: list(rng, 2, s),
        regex: list(rng, 2, s),
        case_insensitive: rng.one_in(2),
    }
}

fn rate_limit(rng: &mut XorShift) -> RateLimitSection {
    RateLimitSection {
        name: s(rng),
        key: match rng.below(6) {
            0 => RateKey::Consumer,
            1 => RateKey::Route,
            2 => RateKey::Ip,
            3 => RateKey::Cidr,
            4 => RateKey::ProviderKey,
            _ => RateKey::Header(header(rng)),
        },
        cidrs: list(rng, 2, s),
        values: list(rng, 2, s),
        window: Window::ALL[rng.below(Window::ALL.len())],
        tokens: opt(rng, num),
        input_tokens: opt(rng, num),
        output_tokens: opt(rng, num),
        requests: opt(rng, num),
        reserve_max_tokens: rng.one_in(2),
        routes: list(rng, 2, s),
    }
}

fn credential_source(rng: &mut XorShift) -> CredentialSource {
    match rng.below(3) {
        0 => CredentialSource::Bearer,
        1 => CredentialSource::Header(header(rng)),
        _ => CredentialSource::Query(s(rng).trim().to_string()),
    }
}

fn access_log_path(rng: &mut XorShift) -> AccessLogPath {
    match rng.below(3) {
        0 => AccessLogPath::Stdout,
        1 => AccessLogPath::Off,
        _ => {
            let path = s(rng);
            match path.as_str() {
                "stdout" | "-" | "off" => AccessLogPath::File(format!("{path}.log")),
                _ => AccessLogPath::File(path),
            }
        }
    }
}

fn settings(rng: &mut XorShift) -> Settings {
    Settings {
        server: if rng.one_in(2) {
            Default::default()
        } else {
            server(rng)
        },
        listeners: ListenersSection {
            proxy: list(rng, 2, listener),
            admin: opt(rng, listener),
        },
        limits: LimitsSection {
            max_body_bytes: opt(rng, |r| num(r) as usize),
        },
        client: ClientSection {
            keepalive_timeout: opt(rng, duration),
            header_timeout: opt(rng, duration),
            body_timeout: opt(rng, duration),
            max_connections: opt(rng, |r| num(r) as usize),
            max_body_memory_bytes: opt(rng, |r| num(r) as usize),
            max_event_bytes: opt(rng, |r| num(r) as usize),
        },
        access_log: AccessLogSection {
            path: opt(rng, access_log_path),
            buffer_lines: opt(rng, |r| num(r) as usize),
        },
        providers: list(rng, 3, provider),
        routes: list(rng, 2, route),
        consumers: list(rng, 3, |rng| ConsumerSection {
            name: s(rng),
            credentials: list(rng, 2, secret),
            hashed_credentials: list(rng, 2, s),
            team: opt(rng, s),
            decorators: opt(rng, decorators),
        }),
        auth: AuthSection {
            sources: opt(rng, |rng| list(rng, 3, credential_source)),
        },
        rate_limits: list(rng, 3, rate_limit),
        metrics: MetricsSection {
            consumer_labels: opt(rng, |r| r.one_in(2)),
            max_consumer_series: opt(rng, |r| num(r) as usize),
        },
        store: StoreSection {
            path: opt(rng, s),
            flush_interval: opt(rng, duration),
        },
        redis: opt(rng, |rng| RedisSection {
            url: secret(rng),
            cluster: opt(rng, |r| r.one_in(2)),
            nodes: list(rng, 2, secret),
            ca_file: opt(rng, s),
            prefix: opt(rng, s),
            timeout: opt(rng, duration),
            on_error: opt(rng, |r| OnError::ALL[r.below(2)]),
        }),
        quota: opt(rng, |rng| QuotaSection {
            consumers: list(rng, 2, s),
            admin_consumer: opt(rng, s),
            reserve_max_tokens: rng.one_in(2),
        }),
        trusted_proxies: list(rng, 2, s),
        dns: DnsSection {
            refresh: opt(rng, duration),
        },
        analytics: AnalyticsSection {
            enabled: opt(rng, |r| r.one_in(2)),
            retention: opt(rng, duration),
            recent_requests: opt(rng, |r| num(r) as usize),
            path: opt(rng, s),
        },
        alerts: AlertsSection {
            interval: opt(rng, duration),
            webhooks: list(rng, 2, |rng| WebhookSection {
                name: s(rng),
                url: secret(rng),
                format: opt(rng, |r| {
                    WebhookFormat::ALL[r.below(WebhookFormat::ALL.len())]
                }),
            }),
            rules: list(rng, 2, |rng| AlertRuleSection {
                name: s(rng),
                kind: AlertKind::ALL[rng.below(AlertKind::ALL.len())],
                window: opt(rng, duration),
                threshold: opt(rng, |r| num(r) as f64 / 4.0),
                baseline: opt(rng, duration),
                filter: list(rng, 2, |rng| (s(rng), s(rng))).into_iter().collect(),
                pending_for: opt(rng, duration),
                repeat: opt(rng, duration),
                webhooks: list(rng, 2, s),
            }),
        },
        tracing: opt(rng, |rng| TracingSection {
            otlp_endpoint: s(rng),
            service_name: opt(rng, s),
            sample_ratio: opt(rng, |r| num(r) as f64 / 4.0),
            queue: opt(rng, |r| num(r) as usize),
            timeout: opt(rng, duration),
            headers: list(rng, 2, |rng| (s(rng), secret(rng)))
                .into_iter()
                .collect(),
        }),
        pricing: PricingSection {
            defaults: opt(rng, |r| r.one_in(2)),
            cost_header: opt(rng, |r| r.one_in(2)),
            prices: list(rng, 2, |rng| PriceSection {
                provider: opt(rng, s),
                provider_type: opt(rng, s),
                model: s(rng),
                currency: opt(rng, |r| Currency::ALL[r.below(Currency::ALL.len())]),
                input: opt(rng, |r| num(r) as f64 / 8.0),
                cached_input: opt(rng, |r| num(r) as f64 / 8.0),
                cache_write: opt(rng, |r| num(r) as f64 / 8.0),
                output: opt(rng, |r| num(r) as f64 / 8.0),
                reasoning: opt(rng, |r| num(r) as f64 / 8.0),
                request: opt(rng, |r| num(r) as f64 / 8.0),
                image: opt(rng, |r| num(r) as f64 / 8.0),
                audio_minute: opt(rng, |r| num(r) as f64 / 8.0),
                characters: opt(rng, |r| num(r) as f64 / 8.0),
                search_units: opt(rng, |r| num(r) as f64 / 8.0),
                from: opt(rng, s),
                hours: opt(rng, s),
                weekdays: opt(rng, s),
                source: opt(rng, s),
                as_of: opt(rng, s),
            }),
            cny_per_usd: opt(rng, |r| num(r) as f64 / 8.0),
        },
        budgets: list(rng, 2, |rng| BudgetSection {
            name: s(rng),
            consumer: opt(rng, s),
            team: opt(rng, s),
            route: opt(rng, s),
            key: opt(rng, s),
            amount: num(rng) as f64 / 8.0,
            currency: opt(rng, |r| Currency::ALL[r.below(Currency::ALL.len())]),
            period: opt(rng, |r| BudgetPeriod::ALL[r.below(BudgetPeriod::ALL.len())]),
            every: opt(rng, duration),
            anchor: opt(rng, s),
            time_zone: opt(rng, s),
            soft: opt(rng, |r| r.one_in(2)),
            unpriced: opt(rng, |r| Unpriced::ALL[r.below(2)]),
            output_allowance: opt(rng, num),
        }),
        cache: CacheSection {
            max_bytes: opt(rng, num),
            max_entry_bytes: opt(rng, num),
        },
        templates: list(rng, 2, template),
    }
}

#[test]
fn generated_settings_round_trip() {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    for case in 0..3000 {
        let before = rng.0;
        let settings = settings(&mut rng);
        let yaml = to_yaml(&settings);
        match from_yaml(&yaml) {
            Ok(back) if back == settings => {}
            Ok(back) => panic!(
                "case {case} (XorShift({before:#x})): differs\n{yaml}\n{settings:#?}\n{back:#?}"
            ),
            Err(e) => panic!("case {case} (XorShift({before:#x})): {e}\n{yaml}"),
        }
    }
}
