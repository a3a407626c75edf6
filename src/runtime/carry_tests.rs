//! What a reload carries over from the running snapshot, by the identities the settings
//! state (README "Config hot reload"): a key's health by provider name + key name (and the
//! same secret), a rate limit's counters by rule name (and the same window), a provider's
//! resolved address by provider name (and the same host and port). A rename starts afresh.

use super::parse;
use crate::keys::{KeyOutcome, KeyState};
use crate::limits::{Demand, Refusal, Who};
use crate::store::Stores;

const BASE: &str = r#"
listeners:
  proxy: [{address: "127.0.0.1:8080"}]
providers:
  - name: mock
    type: openai-compatible
    base_url: http://127.0.0.1:8090/v1
    api_keys: [{name: main, key: "k1"}, "k2"]
routes:
  - name: default
    models:
      - model: "mock-*"
        targets: [{provider: mock}]
rate_limits:
  - {name: per-route, key: route, window: minute, requests: 1}
"#;

fn key_state(gw: &super::Gateway, provider: &str, index: usize) -> KeyState {
    gw.provider(provider)
        .unwrap()
        .keys
        .get(index)
        .unwrap()
        .state()
}

fn take_down(gw: &super::Gateway) {
    let p = gw.provider("mock").unwrap();
    for i in 0..2 {
        let key = p.keys.get(i).unwrap();
        for _ in 0..p.health.policy.failure_threshold {
            key.report(KeyOutcome::Failure, &p.health.policy);
        }
        assert_eq!(key.state(), KeyState::Unhealthy);
    }
}

/// Whether the `route` rule still admits one request of this snapshot.
async fn admits(gw: &super::Gateway, stores: &Stores) -> bool {
    let headers = http::HeaderMap::new();
    let who = Who {
        route: "default",
        consumer: None,
        ip: None,
        headers: &headers,
        provider_key: None,
    };
    let demand = Demand {
        prompt: 1,
        max_tokens: 0,
    };
    match gw.limits.admit(stores, &who, demand).await {
        Ok(_) => true,
        Err(Refusal::Limited(_)) => false,
        Err(Refusal::StoreUnavailable) => panic!("in-memory store failed"),
    }
}

#[tokio::test]
async fn unchanged_identities_keep_their_state_and_renames_start_afresh() {
    let stores = Stores::default();
    let first = parse(BASE, "t.yaml", None).unwrap();
    take_down(&first);
    assert!(admits(&first, &stores).await);
    assert!(!admits(&first, &stores).await, "the one request is used");

    // The same file again: key health and the rule's counter are carried over.
    let same = parse(BASE, "t.yaml", Some(&first)).unwrap();
    assert_eq!(key_state(&same, "mock", 0), KeyState::Unhealthy);
    assert_eq!(key_state(&same, "mock", 1), KeyState::Unhealthy);
    assert!(
        !admits(&same, &stores).await,
        "the counter survived the reload"
    );

    // Renaming the named key starts it afresh; the plain key (`mock#1`) keeps its state.
    let text = BASE.replace("name: main", "name: primary");
    let renamed_key = parse(&text, "t.yaml", Some(&same)).unwrap();
    assert_eq!(key_state(&renamed_key, "mock", 0), KeyState::Healthy);
    assert_eq!(key_state(&renamed_key, "mock", 1), KeyState::Unhealthy);

    // A new secret under the same name is a new key.
    let text = BASE.replace("key: \"k1\"", "key: \"k9\"");
    let new_secret = parse(&text, "t.yaml", Some(&same)).unwrap();
    assert_eq!(key_state(&new_secret, "mock", 0), KeyState::Healthy);

    // Renaming the provider starts every key of it afresh (plain keys are named after it).
    let text = BASE
        .replace("name: mock", "name: mock2")
        .replace("provider: mock}", "provider: mock2}");
    let renamed_provider = parse(&text, "t.yaml", Some(&same)).unwrap();
    assert_eq!(key_state(&renamed_provider, "mock2", 0), KeyState::Healthy);
    assert_eq!(key_state(&renamed_provider, "mock2", 1), KeyState::Healthy);

    // Renaming the rule starts its counters afresh; so does changing its window.
    let text = BASE.replace("name: per-route", "name: route-cap");
    let renamed_rule = parse(&text, "t.yaml", Some(&same)).unwrap();
    assert!(
        admits(&renamed_rule, &stores).await,
        "a renamed rule counts afresh"
    );
    let text = BASE.replace("window: minute", "window: second");
    let new_window = parse(&text, "t.yaml", Some(&same)).unwrap();
    assert!(
        admits(&new_window, &stores).await,
        "a new window counts afresh"
    );
}

#[test]
fn a_resolved_address_is_kept_by_provider_name_and_host() {
    let text = BASE.replace(
        "http://127.0.0.1:8090/v1",
        "http://llm.example.invalid:8090/v1",
    );
    let first = parse(&text, "t.yaml", None).unwrap();
    let addr: std::net::SocketAddr = "192.0.2.7:8090".parse().unwrap();
    first.provider("mock").unwrap().set_addr(addr);
    let same = parse(&text, "t.yaml", Some(&first)).unwrap();
    assert_eq!(same.provider("mock").unwrap().resolved_addr(), Some(addr));
    let other_port = parse(&text.replace(":8090", ":8091"), "t.yaml", Some(&first)).unwrap();
    assert_eq!(other_port.provider("mock").unwrap().resolved_addr(), None);
    let renamed = text
        .replace("name: mock", "name: mock2")
        .replace("provider: mock}", "provider: mock2}");
    let renamed = parse(&renamed, "t.yaml", Some(&first)).unwrap();
    assert_eq!(renamed.provider("mock2").unwrap().resolved_addr(), None);
}
