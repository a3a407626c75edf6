//! `tollgate -t`: every shipped config validates; broken ones fail naming the field.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

fn check(path: &std::path::Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .arg("-t")
        .arg("-c")
        .arg(path)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// `text` with each listener `address: HOST:PORT` on port 0 of its own loopback address
/// (`-t` binds every listener: the shipped ports may be in use on this machine).
fn on_run_time_ports(text: &str) -> String {
    let mut n = 0;
    text.lines()
        .map(|line| match line.split_once("address: ") {
            Some((head, addr)) if addr.trim().parse::<std::net::SocketAddr>().is_ok() => {
                n += 1;
                format!("{head}address: 127.0.0.{n}:0\n")
            }
            _ => format!("{line}\n"),
        })
        .collect()
}

#[test]
fn shipped_configs_are_valid() {
    let conf = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("conf");
    let dir = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for entry in std::fs::read_dir(conf).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            let text = std::fs::read_to_string(&path).unwrap();
            let local = on_run_time_ports(&text);
            assert_ne!(local, text, "{}: no listener address", path.display());
            let copy = dir.path().join(path.file_name().unwrap());
            std::fs::write(&copy, local).unwrap();
            let (ok, text) = check(&copy);
            assert!(ok, "{}: {text}", path.display());
            checked += 1;
        }
    }
    assert!(checked >= 1);
}

#[test]
fn broken_configs_are_rejected_with_the_field_named() {
    let good = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/tollgate.yaml"),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(String, &[&str])> = vec![
        (
            good.replace(
                "targets: [{provider: deepseek}]",
                "targets: [{provider: deepsick}]",
            ),
            &["unknown provider `deepsick`", "targets[0].provider"],
        ),
        (
            good.replace("type: moonshot", "type: moonshine"),
            &["unknown provider type `moonshine`"],
        ),
        (
            good.replace("grace_period_seconds", "grace_period_second"),
            &["grace_period_second"],
        ),
        (
            good.replace("127.0.0.1:8080", "127.0.0.1:http"),
            &["listeners.proxy[0].address"],
        ),
        (
            good.replace("\"deepseek-*\"", "\"deep*seek\""),
            &[
                "routes[1] (default).models[1].model",
                "allowed only at the end",
            ],
        ),
        ("listeners: [".to_string(), &["broken-5.yaml", "listeners"]),
        (
            format!("{good}\nredis: {{url: \"http://127.0.0.1:6379\"}}\n"),
            &["redis.url", "redis://"],
        ),
        (
            format!("{good}\nredis: {{url: \"redis://127.0.0.1:6379\", on_error: maybe}}\n"),
            &["redis.on_error", "open or closed"],
        ),
        (
            format!("{good}\nredis: {{url: \"rediss://127.0.0.1:6379\", ca_file: /nonexistent/ca.pem}}\n"),
            &["redis.ca_file", "/nonexistent/ca.pem"],
        ),
        (
            format!("{good}\nredis: {{url: \"redis://127.0.0.1:6379\", ca_file: /nonexistent/ca.pem}}\n"),
            &["redis.ca_file", "rediss://"],
        ),
        (
            format!("{good}\nredis: {{url: \"redis://127.0.0.1:6379\", nodes: [\"redis://127.0.0.1:6380\"]}}\n"),
            &["redis.nodes", "cluster: true"],
        ),
        (
            format!("{good}\nredis: {{url: \"redis://127.0.0.1:6379\", cluster: true, nodes: [\"rediss://127.0.0.1:6380\"]}}\n"),
            &["redis.nodes[0]", "same scheme"],
        ),
        (
            format!("{good}\nredis: {{url: \"redis://127.0.0.1:6379\", cluster: true, prefix: \"{{t}}\"}}\n"),
            &["redis.prefix", "hash tag"],
        ),
        (
            format!("{good}\nredis: {{url: \"redis://:s3cret@127.0.0.1:6379/2\", cluster: true}}\n"),
            &["redis", "database 0"],
        ),
        (
            format!("{good}\nredis: {{url: \"rediss://:s3cret@127.0.0.1:6379/0#insecure\"}}\n"),
            &["redis", "#insecure", "ca_file"],
        ),
        (
            format!("{good}\nquota: {{consumers: [nobody]}}\n"),
            &["quota.consumers", "unknown consumer `nobody`"],
        ),
        (
            format!("{good}\nrate_limits: [{{name: a, key: cidr, window: minute, requests: 1}}]\n"),
            &["rate_limits[0] (a).cidrs"],
        ),
        (
            format!("{good}\nrate_limits: [{{name: a, key: ip, cidrs: [\"10.0.0.0/33\"], window: minute, requests: 1}}]\n"),
            &["rate_limits[0] (a).cidrs", "10.0.0.0/33"],
        ),
        (
            format!("{good}\ntrusted_proxies: [\"not-an-ip\"]\n"),
            &["trusted_proxies[0]"],
        ),
        (
            format!("{good}\nrate_limits: [{{name: a, key: consumer, window: minute}}]\n"),
            &["rate_limits[0] (a).tokens", "input_tokens"],
        ),
        (
            format!("{good}\npricing: {{prices: [{{provider: nope, model: x, input: 1}}]}}\n"),
            &["pricing.prices[0].provider", "no provider `nope`"],
        ),
        (
            format!("{good}\nbudgets: [{{name: b, consumer: nobody, amount: 1}}]\n"),
            &["budgets[0] (b).consumer", "no consumer `nobody`"],
        ),
        (
            format!("{good}\nbudgets: [{{name: b, route: '*', amount: 1, time_zone: Moon/Base}}]\n"),
            &["budgets[0] (b).time_zone", "Moon/Base"],
        ),
        (
            format!("{good}\nbudgets: [{{name: b, key: 'p/k9', amount: 1}}]\n"),
            &["budgets[0] (b).key"],
        ),
        (
            format!("{good}\nbudgets: [{{name: b, team: red, amount: 1}}]\n"),
            &["budgets[0] (b).team", "`red`"],
        ),
        (
            format!("{good}\nbudgets: [{{name: b, route: '*', amount: 1, period: custom}}]\n"),
            &["budgets[0] (b).anchor"],
        ),
        (
            format!("{good}\npricing: {{prices: [{{provider_type: openia, model: x, input: 1}}]}}\n"),
            &["pricing.prices[0].provider_type", "`openia`"],
        ),
        (
            format!("{good}\npricing: {{prices: [{{model: x, input: 1, hours: \"9-17\"}}]}}\n"),
            &["pricing.prices[0].hours"],
        ),
        (
            good.replace(
                "  - name: demo\n    path_prefix: /v1\n",
                "  - name: demo\n    path_prefix: /v1\n    decorators: {prepend: [{role: system, content: 'Hi ${user}'}]}\n",
            ),
            &["routes[0] (demo).decorators.prepend[0].content", "${user}"],
        ),
        (
            good.replace(
                "  - name: demo\n    path_prefix: /v1\n",
                "  - name: demo\n    path_prefix: /v1\n    pii: {custom: [{name: ticket, regex: \"TCK-(\"}]}\n",
            ),
            &["routes[0] (demo).pii.custom[0].regex"],
        ),
        (
            good.replace(
                "  - name: demo\n    path_prefix: /v1\n",
                "  - name: demo\n    path_prefix: /v1\n    moderation: {via: hook}\n",
            ),
            &["routes[0] (demo).moderation.url"],
        ),
        (
            good.replace(
                "  - name: demo\n    path_prefix: /v1\n",
                "  - name: demo\n    path_prefix: /v1\n    pii: {detectors: [email, passport]}\n",
            ),
            &["detectors", "`passport`"],
        ),
        (
            good.replace(
                "  - name: demo\n    path_prefix: /v1\n",
                "  - name: demo\n    path_prefix: /v1\n    moderation: {via: route_model, model: m, on_error: maybe}\n",
            ),
            &["on_error", "fail_open, fail_closed"],
        ),
        (
            format!("{good}\ntemplates: [{{name: t, model: m, messages: [{{role: user, content: '{{{{x}}}}'}}]}}]\n"),
            &["templates[0] (t).messages[0].content", "`{{x}}`"],
        ),
        (
            format!("{good}\ntemplates: [{{name: t, model: m, messages: [{{role: user, content: a}}], variables: {{x: {{type: enum}}}}}}]\n"),
            &["templates[0] (t).variables.x.values"],
        ),
        (
            good.replace(
                "  - name: demo\n    path_prefix: /v1\n",
                "  - name: demo\n    path_prefix: /v1\n    deny: {output: {regex: [\"[a-\"]}}\n",
            ),
            &["routes[0] (demo).deny.output.regex[0]"],
        ),
        (
            good.replace(
                "  - name: demo\n    path_prefix: /v1\n",
                "  - name: demo\n    path_prefix: /v1\n    deny: {holdback: 0, input: {keywords: [x]}}\n",
            ),
            &["routes[0] (demo).deny.holdback", "1 to 4096"],
        ),
    ];
    for (i, (text, needles)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("broken-{i}.yaml"));
        std::fs::write(&path, text).unwrap();
        let (ok, out) = check(&path);
        assert!(!ok, "case {i} accepted");
        for n in *needles {
            assert!(out.contains(n), "case {i}: `{n}` not in: {out}");
        }
        assert!(!out.contains("s3cret"), "case {i}: password shown: {out}");
    }
    let (ok, out) = check(&dir.path().join("missing.yaml"));
    assert!(!ok && out.contains("missing.yaml"), "{out}");
}

/// `server.user`/`group` must exist: an error for a daemon (Pingora switches to them after
/// the fork), a warning from `-t` for a config that does not daemonise.
#[test]
fn unknown_user_and_group_are_named() {
    let good = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/tollgate.yaml"),
    )
    .unwrap();
    let good = on_run_time_ports(&good);
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, server: &str| {
        let path = dir.path().join(name);
        std::fs::write(
            &path,
            good.replace("server:\n", &format!("server:\n{server}")),
        )
        .unwrap();
        path
    };
    let daemon = write(
        "daemon.yaml",
        "  daemon: true\n  user: no-such-user-tollgate\n  group: no-such-group-tollgate\n",
    );
    let (ok, text) = check(&daemon);
    assert!(!ok, "{text}");
    assert!(
        text.contains("server.user") && text.contains("no-such-user-tollgate"),
        "{text}"
    );
    let foreground = write("fg.yaml", "  group: no-such-group-tollgate\n");
    let (ok, text) = check(&foreground);
    assert!(ok, "{text}");
    assert!(
        text.contains("warning") && text.contains("server.group"),
        "{text}"
    );
    let existing = write("root.yaml", "  daemon: true\n  user: root\n  group: root\n");
    let (ok, text) = check(&existing);
    assert!(
        ok || !text.contains("server.user") && !text.contains("server.group"),
        "{text}"
    );
}

/// A TLS Redis with a private CA, and a Redis Cluster over TLS, are valid settings (`-t`
/// does not connect).
#[test]
fn redis_tls_and_cluster_settings_are_valid() {
    let good = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/tollgate.yaml"),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let cert = params
        .self_signed(&rcgen::KeyPair::generate().unwrap())
        .unwrap();
    std::fs::write(&ca, cert.pem()).unwrap();
    let ca = ca.display();
    for redis in [
        format!("{{url: \"rediss://:pw@127.0.0.1:6379/0\", ca_file: \"{ca}\"}}"),
        "{url: \"rediss://127.0.0.1:6379\"}".to_string(),
        format!(
            "{{url: \"rediss://127.0.0.1:7000\", cluster: true, ca_file: \"{ca}\", \
             nodes: [\"rediss://127.0.0.1:7001\", \"rediss://127.0.0.1:7002\"]}}"
        ),
        "{url: \"redis://127.0.0.1:7000\", cluster: true, prefix: gw1}".to_string(),
    ] {
        let path = dir.path().join("redis.yaml");
        std::fs::write(
            &path,
            on_run_time_ports(&format!("{good}\nredis: {redis}\n")),
        )
        .unwrap();
        let (ok, out) = check(&path);
        assert!(ok, "{redis}: {out}");
    }
}
