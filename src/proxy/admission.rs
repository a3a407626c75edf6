//! Admission: who may go ahead. The consumer (the route's auth), the client IP (through
//! trusted proxies), rate limits at admission and per provider key, and the consumer's quota.

use super::exchange::{ExtraHeaders, Reservations};
use crate::body::RequestBody;
use crate::error::GatewayError;
use crate::limits::{Demand, Hold, Limited, Refusal, Used, Who};
use crate::metrics::METRICS;
use crate::route::RouteAuth;
use crate::runtime::Gateway;
use crate::state::Backends;
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
    let prompt = match &body.form {
        // A file upload: its text fields only (the file is audio or an image).
        Some(f) => f.form.prompt.as_deref().map_or(0, estimate_tokens),
        None => std::str::from_utf8(body.bytes())
            .map(estimate_tokens)
            .unwrap_or(body.bytes().len() as u64 / 4),
    };
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

/// Who is calling, as the route requires (`None`: anonymous, where the route allows it).
pub fn authenticate(
    session: &Session,
    config: &Gateway,
    auth: &RouteAuth,
) -> Result<Option<String>, GatewayError> {
    let req = session.req_header();
    let consumer =
        config
            .consumers
            .identify(&req.headers, req.uri.query(), auth.required, &auth.allow)?;
    Ok(consumer.map(str::to_string))
}

/// An admitted request: what the stages after admission need to know about it.
#[derive(Clone, Copy, Debug)]
pub struct Admitted {
    /// Estimated prompt tokens and `max_tokens`.
    pub demand: Demand,
    /// The client's address (through trusted proxies).
    pub client_ip: Option<IpAddr>,
}

/// The caller as the rate limits see it.
pub struct Caller<'a> {
    pub session: &'a Session,
    pub config: &'a Gateway,
    pub backends: &'a Backends,
    pub route: &'a str,
    pub consumer: Option<&'a str>,
}

impl Caller<'_> {
    fn who<'a>(&'a self, ip: Option<IpAddr>, provider_key: Option<&'a str>) -> Who<'a> {
        Who {
            route: self.route,
            consumer: self.consumer,
            ip,
            headers: &self.session.req_header().headers,
            provider_key,
        }
    }
}

/// Rate limits at admission, then the consumer's quota. Each reservation goes to `reserved`
/// as soon as it is made, so accounting settles it whether or not the request goes on;
/// `headers` gets the limits' `x-ratelimit-*` (and `retry-after` on refusal).
pub async fn admit(
    caller: &Caller<'_>,
    body: &RequestBody,
    reserved: &mut Reservations,
    headers: &mut ExtraHeaders,
) -> Result<Admitted, GatewayError> {
    let admitted = Admitted {
        demand: demand(body),
        client_ip: client_ip(caller.session, &caller.config.trusted_proxies),
    };
    admit_limits(caller, &admitted, reserved, headers).await?;
    admit_quota(caller, admitted.demand, reserved).await?;
    Ok(admitted)
}

/// Reserve this request's tokens under every rate limit that applies.
async fn admit_limits(
    caller: &Caller<'_>,
    admitted: &Admitted,
    reserved: &mut Reservations,
    headers: &mut ExtraHeaders,
) -> Result<(), GatewayError> {
    let limits = &caller.config.limits;
    if limits.rules.is_empty() {
        return Ok(());
    }
    let who = caller.who(admitted.client_ip, None);
    match limits
        .admit(caller.backends.stores(), &who, admitted.demand)
        .await
    {
        Ok((holds, headroom)) => {
            reserved.limits = holds;
            *headers = headroom.headers();
            Ok(())
        }
        Err(Refusal::Limited(limited)) => {
            METRICS
                .ratelimit_rejections
                .with_label_values(&[
                    caller.route,
                    caller.consumer.unwrap_or(""),
                    limited.rule.as_str(),
                ])
                .inc();
            *headers = limited.headroom.headers();
            let secs = limited.retry_after.as_secs_f64().ceil().max(1.0) as u64;
            headers.push((super::respond::RETRY_AFTER, secs.into()));
            Err(rate_limited(&limited))
        }
        Err(Refusal::StoreUnavailable) => Err(GatewayError::StoreUnavailable("rate limits")),
    }
}

/// Reserve on a provider key's own budget: `Ok(Err(limited))` when the key is over it (try
/// another key); `Err` when the store fails closed.
pub async fn admit_key(
    caller: &Caller<'_>,
    admitted: &Admitted,
    provider: &str,
    key_name: &str,
) -> Result<Result<Vec<Hold>, Box<Limited>>, GatewayError> {
    let limits = &caller.config.limits;
    if !limits.has_key_rules() {
        return Ok(Ok(Vec::new()));
    }
    let key = format!("{provider}/{key_name}");
    let who = caller.who(admitted.client_ip, Some(&key));
    match limits
        .admit(caller.backends.stores(), &who, admitted.demand)
        .await
    {
        Ok((holds, _)) => Ok(Ok(holds)),
        Err(Refusal::Limited(l)) => Ok(Err(l)),
        Err(Refusal::StoreUnavailable) => Err(GatewayError::StoreUnavailable("rate limits")),
    }
}

/// Give back holds that used nothing (a failed attempt's hold on its key).
pub async fn release(caller: &Caller<'_>, holds: Vec<Hold>) {
    if !holds.is_empty() {
        caller
            .config
            .limits
            .reconcile(caller.backends.stores(), &holds, Used::default())
            .await;
    }
}

/// Admit the consumer on its quota, reserving the request's estimate.
async fn admit_quota(
    caller: &Caller<'_>,
    demand: Demand,
    reserved: &mut Reservations,
) -> Result<(), GatewayError> {
    let (Some(settings), Some(consumer)) = (&caller.config.quota, caller.consumer) else {
        return Ok(());
    };
    let reserve = demand.prompt
        + if settings.reserve_max_tokens {
            demand.max_tokens
        } else {
            0
        };
    reserved.quota = caller
        .backends
        .quotas()
        .admit(settings, consumer, reserve)
        .await?;
    Ok(())
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
