//! TLS end to end, with a CA and certificates made at run time: the gateway verifies a
//! provider against a CA from its config (SNI by host name), refuses an untrusted one, and
//! serves clients over its own TLS listener with HTTP/2 and HTTP/1.1.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use common::*;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

struct Pki {
    ca_pem: String,
    cert: PathBuf,
    key: PathBuf,
    ca: PathBuf,
}

/// A CA and a `localhost` certificate signed by it, written under `dir/name*`.
fn make_pki(dir: &Path, name: &str) -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, format!("Tollgate test CA {name}"));
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let mut leaf_params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = leaf_params.signed_by(&leaf_key, &ca, &ca_key).unwrap();
    let pki = Pki {
        ca_pem: ca.pem(),
        cert: dir.join(format!("{name}-cert.pem")),
        key: dir.join(format!("{name}-key.pem")),
        ca: dir.join(format!("{name}-ca.pem")),
    };
    std::fs::write(&pki.cert, leaf.pem()).unwrap();
    std::fs::write(&pki.key, leaf_key.serialize_pem()).unwrap();
    std::fs::write(&pki.ca, &pki.ca_pem).unwrap();
    pki
}

/// Through the gateway at `url` for `model`: an answer with mock-llm's echo (returned, with
/// the client-side protocol version), a 4 MiB body that must arrive upstream byte for byte,
/// and a stream that must end with `[DONE]`.
async fn exercise(client: &reqwest::Client, url: &str, model: &str) -> (reqwest::Version, Value) {
    let req = json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
    let resp = client
        .post(url)
        .header("x-mock-echo", "1")
        .json(&req)
        .send()
        .await
        .unwrap();
    let version = resp.version();
    let status = resp.status();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(status, 200, "{body}");

    let filler = "x".repeat(4 * 1024 * 1024);
    let big = serde_json::to_vec(
        &json!({"model": model, "messages": [{"role": "user", "content": filler}]}),
    )
    .unwrap();
    let resp = client.post(url).body(big.clone()).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-mock-body-fnv64"], fnv64(&big).as_str());

    let mut stream_req = req;
    stream_req["stream"] = json!(true);
    let text = client
        .post(url)
        .json(&stream_req)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    (version, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_providers_and_from_clients() {
    let dir = tempfile::tempdir().unwrap();
    let trusted = make_pki(dir.path(), "trusted");
    let untrusted = make_pki(dir.path(), "untrusted");
    let mock = Mock::start_tls(&trusted.cert, &trusted.key);
    let rogue = Mock::start_tls(&untrusted.cert, &untrusted.key);

    let body = format!(
        r#"providers:
  - name: secure
    type: openai-compatible
    base_url: "https://localhost:{}/v1"
    api_keys: ["sk-tls"]
    ca_file: "{}"
  - name: secure-h2
    type: openai-compatible
    base_url: "https://localhost:{}/v1"
    api_keys: ["sk-tls"]
    ca_file: "{}"
    http2: true
  - name: rogue
    type: openai-compatible
    base_url: "https://localhost:{}/v1"
    api_keys: ["sk-tls"]
routes:
  - name: default
    forward_headers: ["x-mock-*"]
    models:
      - model: "secure-*"
        targets: [{{provider: secure}}]
      - model: "rogue-*"
        targets: [{{provider: rogue}}]
      - model: "h2-*"
        targets: [{{provider: secure-h2}}]
"#,
        mock.port(),
        trusted.ca.display(),
        mock.port(),
        trusted.ca.display(),
        rogue.port()
    );
    // The gateway's own listener uses the trusted certificate too.
    let gw = Gateway::start_full(&body, Some((&trusted.cert, &trusted.key)), &[]);
    let ca = reqwest::Certificate::from_pem(trusted.ca_pem.as_bytes()).unwrap();
    let url = format!("https://localhost:{}/v1/chat/completions", gw.port);

    for http1 in [false, true] {
        let mut builder = reqwest::Client::builder()
            .add_root_certificate(ca.clone())
            .tls_built_in_root_certs(false);
        if http1 {
            builder = builder.http1_only();
        }
        let client = builder.build().unwrap();
        let (version, body) = exercise(&client, &url, "secure-1").await;
        let expected = if http1 {
            reqwest::Version::HTTP_11
        } else {
            reqwest::Version::HTTP_2
        };
        assert_eq!(version, expected);
        // Reached over TLS with the right Host/SNI name.
        assert_eq!(
            body["mock_echo"]["headers"]["host"],
            format!("localhost:{}", mock.port())
        );
        assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    }

    // HTTP/2 to the provider, negotiated by ALPN: answers, 4 MiB bodies and streams.
    let client = reqwest::Client::builder()
        .add_root_certificate(ca.clone())
        .http1_only()
        .build()
        .unwrap();
    let (_, body) = exercise(&client, &url, "h2-1").await;
    assert_eq!(body["mock_echo"]["version"], "HTTP/2.0", "{body}");

    // A provider whose certificate chains to no trusted root: 502 that says so.
    let client = reqwest::Client::builder()
        .add_root_certificate(ca)
        .build()
        .unwrap();
    let resp = client
        .post(&url)
        .json(&json!({"model": "rogue-1", "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "upstream_tls_error", "{body}");
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("rogue") && msg.to_lowercase().contains("tls"),
        "{msg}"
    );
}
