//! Who may go ahead: the client IP (through trusted proxies), rate limits at admission and
//! per provider key, and the consumer's quota.

use super::client::ClientRequest;
use crate::body::RequestBody;
use crate::config::Gateway;
use crate::error::GatewayError;
use crate::limits::{Demand, Limited, Refusal, Used, Who};
use crate::metrics::METRICS;
use crate::usage::{estimate_tokens, MAX_TOKENS_PER_REQUEST};
use ipnet::IpNet;
use pingora_proxy::Session;
use std::net::IpAddr;

/// The client's address: the peer, or, when the peer is a trusted proxy, the right-most
/// `X-Forwarded-For` address that is not one.
pub fn client_ip(session: &Session, trusted: &[IpNet]) -> Option<IpAddr> {
    let peer = session.client_addr()?.as_inet()?.ip();
    forwarded_for(peer, &session.req_header().headers, trusted)
}

fn forwarded_for(peer: IpAddr, headers: &http::HeaderMap, trusted: &[IpNet]) -> Option<IpAddr> {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return Some(peer);
    }
    let mut ip = peer;
    for value in headers.get_all("x-forwarded-for").iter().rev() {
        let Ok(text) = value.to_str() else {
            return Some(ip);
        };
        for part in text.rsplit(',') {
            let Ok(addr) = part.trim().parse::<IpAddr>() else {
                return Some(ip);
            };
            ip = addr;
            if !is_trusted(&addr) {
                return Some(addr);
            }
        }
    }
    Some(ip)
}

/// The request's demand: estimated prompt tokens and its `max_tokens`, each at most
/// `MAX_TOKENS_PER_REQUEST` (no request is charged more, and a client's `max_tokens` cannot
/// push a counter towards overflow).
pub fn demand(body: &RequestBody) -> Demand {
    let prompt = std::str::from_utf8(&body.bytes)
        .map(estimate_tokens)
        .unwrap_or(body.bytes.len() as u64 / 4);
    Demand {
        prompt: prompt.min(MAX_TOKENS_PER_REQUEST),
        max_tokens: body.max_tokens.unwrap_or(0).min(MAX_TOKENS_PER_REQUEST),
    }
}

pub fn rate_limited(limited: &Limited) -> GatewayError {
    GatewayError::RateLimited {
        rule: limited.rule.clone(),
        what: limited.what,
        window: limited.window.as_str(),
        retry_after_ms: limited.retry_after.as_millis() as u64,
    }
}

impl ClientRequest {
    fn who<'a>(&'a self, session: &'a Session, route: &'a str, key: Option<&'a str>) -> Who<'a> {
        Who {
            route,
            consumer: self.consumer.as_deref(),
            ip: self.client_ip,
            headers: &session.req_header().headers,
            provider_key: key,
        }
    }

    /// Reserve this request's tokens under every rate limit that applies.
    pub async fn admit_limits(
        &mut self,
        session: &Session,
        config: &Gateway,
        route: &str,
        demand: Demand,
    ) -> Result<(), GatewayError> {
        if config.limits.rules.is_empty() {
            return Ok(());
        }
        let who = self.who(session, route, None);
        let result = config
            .limits
            .admit(self.backends.stores(), &who, demand)
            .await;
        match result {
            Ok((holds, headroom)) => {
                self.holds = holds;
                self.extra_headers = headroom.headers();
                Ok(())
            }
            Err(Refusal::Limited(limited)) => {
                METRICS
                    .ratelimit_rejections
                    .with_label_values(&[
                        route,
                        self.consumer.as_deref().unwrap_or(""),
                        limited.rule.as_str(),
                    ])
                    .inc();
                self.extra_headers = limited.headroom.headers();
                let secs = limited.retry_after.as_secs_f64().ceil().max(1.0) as u64;
                self.extra_headers
                    .push((http::header::RETRY_AFTER, secs.to_string()));
                Err(rate_limited(&limited))
            }
            Err(Refusal::StoreUnavailable) => Err(GatewayError::StoreUnavailable("rate limits")),
        }
    }

    /// Reserve on the provider key's own budget: `Ok(Err(limited))` when the key is over it
    /// (try another key); `Err` when the store fails closed.
    pub async fn admit_key(
        &mut self,
        session: &Session,
        config: &Gateway,
        route: &str,
        provider: &str,
        key_name: &str,
        demand: Demand,
    ) -> Result<Result<(), Box<Limited>>, GatewayError> {
        if !config.limits.has_key_rules() {
            return Ok(Ok(()));
        }
        let key = format!("{provider}/{key_name}");
        let who = self.who(session, route, Some(&key));
        match config
            .limits
            .admit(self.backends.stores(), &who, demand)
            .await
        {
            Ok((holds, _)) => {
                self.key_holds = holds;
                Ok(Ok(()))
            }
            Err(Refusal::Limited(l)) => Ok(Err(l)),
            Err(Refusal::StoreUnavailable) => Err(GatewayError::StoreUnavailable("rate limits")),
        }
    }

    /// Release a failed attempt's hold on its key (it used nothing).
    pub async fn release_key(&mut self, config: &Gateway) {
        let holds = std::mem::take(&mut self.key_holds);
        if !holds.is_empty() {
            config
                .limits
                .reconcile(self.backends.stores(), &holds, Used::default())
                .await;
        }
    }

    /// Admit the consumer on its quota, reserving the request's estimate.
    pub async fn admit_quota(
        &mut self,
        config: &Gateway,
        demand: Demand,
    ) -> Result<(), GatewayError> {
        let (Some(settings), Some(consumer)) = (&config.quota, self.consumer.as_deref()) else {
            return Ok(());
        };
        let reserve = demand.prompt
            + if settings.reserve_max_tokens {
                demand.max_tokens
            } else {
                0
            };
        self.quota_hold = self
            .backends
            .quotas()
            .admit(settings, consumer, reserve)
            .await?;
        Ok(())
    }

    /// When the request has ended: replace reservations with the real usage and charge it.
    pub async fn settle(&self, used: Used) {
        let stores = self.backends.stores();
        for holds in [&self.holds, &self.key_holds] {
            if !holds.is_empty() {
                self.config.limits.reconcile(stores, holds, used).await;
            }
        }
        if let Some(hold) = &self.quota_hold {
            self.backends
                .quotas()
                .charge(hold, used.input.saturating_add(used.output))
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trusted_hops_are_skipped_from_the_right() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let mut h = http::HeaderMap::new();
        h.append("x-forwarded-for", "1.1.1.1, 2.2.2.2".parse().unwrap());
        h.append("x-forwarded-for", "10.0.0.5".parse().unwrap());
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(
            forwarded_for(peer, &h, &trusted),
            Some("2.2.2.2".parse().unwrap()),
            "the right-most untrusted hop, not the client-supplied left-most"
        );
        // An untrusted peer's header is ignored.
        let outsider: IpAddr = "3.3.3.3".parse().unwrap();
        assert_eq!(forwarded_for(outsider, &h, &trusted), Some(outsider));
        // No trusted proxies: the peer.
        assert_eq!(forwarded_for(peer, &h, &[]), Some(peer));
        // Garbage stops the walk at the last good hop.
        let mut bad = http::HeaderMap::new();
        bad.insert("x-forwarded-for", "nonsense, 10.0.0.9".parse().unwrap());
        assert_eq!(
            forwarded_for(peer, &bad, &trusted),
            Some("10.0.0.9".parse().unwrap())
        );
    }
}
