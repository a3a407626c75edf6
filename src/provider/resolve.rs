//! Upstream host-name resolution, kept off the request path.
//!
//! `resolve_now` runs once at startup and on each reload (bounded wait, in parallel); the
//! `Resolver` background service then re-resolves every provider host every `dns.refresh`
//! (30 s by default) and installs changed addresses. A host that does not resolve leaves its
//! provider without a peer: requests to it fail fast with a 502 that names the host, and the
//! next successful lookup heals it.
//!
//! Only providers that can be used are resolved: a provider without any API key (its key
//! variables unset) answers 503 without connecting anywhere, so its host is not looked up;
//! that is said once per provider, when it is first seen. A lookup failure is logged once,
//! when a provider's host stops resolving, and its recovery once, not at every refresh.

use crate::provider::Provider;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// Providers whose host does not resolve right now, and providers already reported as
/// keyless (by name). Touched by the resolver only, never on the request path.
static FAILING: Mutex<Option<HashSet<String>>> = Mutex::new(None);
static KEYLESS: Mutex<Option<HashSet<String>>> = Mutex::new(None);

/// Add `name` to `set`; true when it was not there.
fn note(set: &Mutex<Option<HashSet<String>>>, name: &str) -> bool {
    match set.lock() {
        Ok(mut g) => g.get_or_insert_with(HashSet::new).insert(name.to_string()),
        Err(_) => true,
    }
}

/// Remove `name` from `set`; true when it was there.
fn forget(set: &Mutex<Option<HashSet<String>>>, name: &str) -> bool {
    match set.lock() {
        Ok(mut g) => g.as_mut().is_some_and(|s| s.remove(name)),
        Err(_) => false,
    }
}

/// Whether requests can reach `provider` at all (it has at least one key).
fn usable(provider: &Provider) -> bool {
    if !provider.keys.is_empty() {
        return true;
    }
    if note(&KEYLESS, &provider.name) {
        let vars = provider.keys.missing_vars();
        let why = match vars.is_empty() {
            true => "no API key is configured".to_string(),
            false => format!("{} not set", vars.join(", ")),
        };
        log::warn!(
            "provider {}: {why}; requests to it get 503 (its host is not resolved)",
            provider.name
        );
    }
    false
}

pub async fn resolve_one(provider: &Provider) {
    if provider.upstream.host.parse::<std::net::IpAddr>().is_ok()
        || provider.connect_to.is_some()
        || !usable(provider)
    {
        return;
    }
    let host = provider.upstream.host.as_str();
    let failure = match tokio::time::timeout(
        LOOKUP_TIMEOUT,
        tokio::net::lookup_host((host, provider.upstream.port)),
    )
    .await
    {
        Ok(Ok(mut addrs)) => {
            let all: Vec<_> = addrs.by_ref().collect();
            // Prefer IPv4: loopback services often listen on 127.0.0.1 only.
            match all.iter().find(|a| a.is_ipv4()).or(all.first()) {
                Some(addr) => {
                    provider.set_addr(*addr);
                    None
                }
                None => Some("no address".to_string()),
            }
        }
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some(format!("timed out after {LOOKUP_TIMEOUT:?}")),
    };
    match failure {
        Some(e) => {
            log::debug!("provider {}: lookup of {host} failed: {e}", provider.name);
            if note(&FAILING, &provider.name) {
                log::warn!(
                    "provider {}: cannot resolve {host}: {e} (retried every refresh; logged again when it resolves)",
                    provider.name
                );
            }
        }
        None => {
            if forget(&FAILING, &provider.name) {
                log::info!("provider {}: {host} resolves again", provider.name);
            }
        }
    }
}

/// Resolve every provider of a freshly loaded config, waiting at most `LOOKUP_TIMEOUT`.
pub fn resolve_now(providers: &[Arc<Provider>]) {
    let providers: Vec<Arc<Provider>> = providers.to_vec();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    match runtime {
        Ok(rt) => rt.block_on(async {
            let tasks = providers.iter().map(|p| resolve_one(p));
            futures_util::future::join_all(tasks).await;
        }),
        Err(e) => log::warn!("cannot start resolver runtime: {e}"),
    }
}
