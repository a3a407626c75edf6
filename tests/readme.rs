//! Every YAML block in the README is checked with `tollgate -t`, so the documentation cannot
//! drift from what the gateway accepts. A block fenced as ```` ```yaml ```` is a complete
//! config; one fenced as ```` ```yaml fragment ```` is shown inside a minimal complete config
//! (its top-level keys replace the base's). The files a block names (certificates, CA files,
//! logs, stores) are created by the test under a temporary directory, and its listener
//! addresses are moved to free ports, so the check does not depend on this machine.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use std::path::Path;
use std::process::Command;

struct Block {
    line: usize,
    fragment: bool,
    text: String,
}

fn readme_blocks() -> Vec<Block> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let mut blocks = Vec::new();
    let mut current: Option<Block> = None;
    for (i, line) in readme.lines().enumerate() {
        let fence = line.trim_start().strip_prefix("```");
        match (&mut current, fence) {
            (None, Some(info)) if info.split_whitespace().next() == Some("yaml") => {
                current = Some(Block {
                    line: i + 1,
                    fragment: info.split_whitespace().any(|w| w == "fragment"),
                    text: String::new(),
                });
            }
            (Some(_), Some(_)) => blocks.extend(current.take()),
            (Some(b), None) => {
                b.text.push_str(line);
                b.text.push('\n');
            }
            (None, None) => {}
            (None, Some(_)) => {}
        }
    }
    blocks
}

const BASE: &str = r#"
listeners:
  proxy:
    - address: 127.0.0.1:8080
access_log:
  path: off
providers:
  - name: mock
    type: openai-compatible
    base_url: http://127.0.0.1:8090/v1
    api_keys: ["${MOCK_KEY}"]
routes:
  - name: default
    models:
      - model: "*"
        targets: [{provider: mock}]
"#;

/// The fragment inside the base config: its top-level keys replace the base's.
fn complete(fragment: &str) -> String {
    let mut base: serde_yaml::Mapping = serde_yaml::from_str(BASE).unwrap();
    let part: serde_yaml::Mapping = serde_yaml::from_str(fragment).unwrap();
    for (k, v) in part {
        base.insert(k, v);
    }
    serde_yaml::to_string(&base).unwrap()
}

/// A self-signed certificate and its key, written where a block expects them.
fn write_pki(dir: &Path) -> (String, String) {
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    (
        cert_path.display().to_string(),
        key_path.display().to_string(),
    )
}

/// The block with its system paths under `dir` (each `*.pem` a real certificate or key)
/// and every `host:port` listener address on port 0 of its own loopback address
/// (127.0.0.1, 127.0.0.2, ...: `-t` binds each, and two listeners need distinct addresses).
fn localise(text: &str, dir: &Path) -> String {
    let (cert, key) = write_pki(dir);
    let mut out = String::new();
    let mut loopback = 0;
    for word in text.split_inclusive(|c: char| c.is_whitespace() || c == ',' || c == '}') {
        let (token, tail) = word.split_at(word.trim_end_matches([' ', '\n', ',', '}']).len());
        let token_clean = token.trim_matches('"');
        let replaced = if token_clean.starts_with('/') && token_clean.ends_with(".pem") {
            if token_clean.contains("key") {
                key.clone()
            } else {
                cert.clone()
            }
        } else if let Some(rest) = ["/var/", "/etc/", "/path/", "/run/"]
            .iter()
            .find_map(|p| token_clean.strip_prefix(p))
        {
            let path = dir.join(rest);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            path.display().to_string()
        } else if let Some((host, port)) = token_clean.rsplit_once(':') {
            let is_addr = port.parse::<u16>().is_ok()
                && (host == "localhost" || host.parse::<std::net::IpAddr>().is_ok());
            if is_addr && !text.contains(&format!("//{token_clean}")) {
                loopback += 1;
                format!("127.0.0.{loopback}:0")
            } else {
                token.to_string()
            }
        } else {
            token.to_string()
        };
        out.push_str(&replaced);
        out.push_str(tail);
    }
    out
}

#[test]
fn every_readme_yaml_block_is_a_valid_config() {
    let blocks = readme_blocks();
    assert!(blocks.len() >= 3, "found {} yaml blocks", blocks.len());
    let mut failures = Vec::new();
    for block in &blocks {
        let dir = tempfile::tempdir().unwrap();
        let text = if block.fragment {
            complete(&block.text)
        } else {
            block.text.clone()
        };
        let text = localise(&text, dir.path());
        let path = dir.path().join("block.yaml");
        std::fs::write(&path, &text).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .arg("-t")
            .arg("-c")
            .arg(&path)
            .env("MOCK_KEY", "sk-readme-1")
            .env("MOCK_KEY_2", "sk-readme-2")
            .env("ALICE_KEY", "sk-readme-alice")
            .env("BOB_KEY", "sk-readme-bob")
            .env("BOSS_KEY", "sk-readme-boss")
            .output()
            .unwrap();
        if !out.status.success() {
            failures.push(format!(
                "README.md line {} ({}): {}{}\n{text}",
                block.line,
                if block.fragment {
                    "fragment"
                } else {
                    "complete"
                },
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
