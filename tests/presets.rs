//! Every preset works with only its key configured: its URL path, `Host`, TLS name and auth
//! header reach mock-llm, which stands in for the real host through `connect_to` and a test
//! CA (certificates made at run time for every preset's host name).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use common::*;
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use serde_json::{json, Value};
use tollgate::protocol::{Protocol, ANTHROPIC, OPENAI};
use tollgate::provider::PRESETS;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_preset_reaches_its_url_with_its_auth_header() {
    let presets: Vec<(&str, Protocol, http::Uri)> = PRESETS
        .iter()
        .filter_map(|(name, family, url)| {
            Some((*name, *family, url.as_ref()?.parse::<http::Uri>().unwrap()))
        })
        .collect();
    let hosts: Vec<String> = presets
        .iter()
        .map(|(_, _, u)| u.host().unwrap().to_string())
        .collect();

    let dir = tempfile::tempdir().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let mut names = hosts.clone();
    names.push("localhost".into());
    let leaf = CertificateParams::new(names)
        .unwrap()
        .signed_by(&leaf_key, &ca, &ca_key)
        .unwrap();
    let (cert, key, ca_file) = (
        dir.path().join("c.pem"),
        dir.path().join("k.pem"),
        dir.path().join("ca.pem"),
    );
    std::fs::write(&cert, leaf.pem()).unwrap();
    std::fs::write(&key, leaf_key.serialize_pem()).unwrap();
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let tls_mock = Mock::start_tls(&cert, &key);
    let plain_mock = Mock::start();

    let mut providers = String::from("providers:\n");
    let mut routes = String::from(
        "routes:\n  - name: default\n    forward_headers: [\"x-mock-*\"]\n    models:\n",
    );
    for (name, _, uri) in &presets {
        let tls = uri.scheme_str() == Some("https");
        let target = if tls {
            &tls_mock.addr
        } else {
            &plain_mock.addr
        };
        let ca = if tls {
            format!("\n    ca_file: \"{}\"", ca_file.display())
        } else {
            String::new()
        };
        providers.push_str(&format!(
            "  - name: {name}\n    type: {name}\n    api_keys: [\"key-{name}\"]\n    connect_to: \"{target}\"{ca}\n"
        ));
        routes.push_str(&format!(
            "      - model: \"{name}-*\"\n        targets: [{{provider: {name}}}]\n"
        ));
    }
    let gw = Gateway::start(&(providers + &routes));
    let stats_client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap())
        .build()
        .unwrap();

    for (name, family, uri) in &presets {
        let resp = client()
            .post(gw.url("/v1/chat/completions"))
            .header("x-mock-echo", "1")
            .json(&json!({"model": format!("{name}-model"), "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        assert_eq!(status, 200, "{name}: {text}");
        let base = uri.path().trim_end_matches('/');
        let tls = uri.scheme_str() == Some("https");
        let stats_url = if tls {
            format!("https://localhost:{}/mock/stats", tls_mock.port())
        } else {
            format!("http://{}/mock/stats", plain_mock.addr)
        };
        let stats: Value = stats_client
            .get(stats_url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            stats["by_key"][format!("key-{name}")],
            1,
            "{name}: key not received: {stats}"
        );
        if family.name() == OPENAI.name() {
            let v: Value = serde_json::from_str(&text).unwrap();
            let echo = &v["mock_echo"];
            assert_eq!(echo["path"], format!("{base}/chat/completions"), "{name}");
            assert_eq!(
                echo["headers"]["authorization"],
                format!("Bearer key-{name}"),
                "{name}"
            );
            let host = uri.authority().unwrap().as_str();
            assert_eq!(echo["headers"]["host"], host, "{name}");
        } else {
            let path = if family.name() == ANTHROPIC.name() {
                format!("{base}/messages")
            } else {
                format!("{base}/v1beta/models/{name}-model:generateContent")
            };
            assert!(
                stats["by_path"].get(&path).is_some(),
                "{name}: {path} not in {stats}"
            );
        }
    }
}
