//! Requests the gateway makes to its own proxy listener over loopback, as the request's
//! consumer (a short-lived internal credential, `crate::auth::mint_playground`): the
//! semantic cache's embeddings and input moderation through a route's model. Routing, keys,
//! failover, limits and metering apply to them as to any request, and each is its own
//! request in the access log.

use crate::route::Route;
use crate::runtime::Gateway;
use pingora_proxy::Session;
use std::time::Duration;

/// The request a loopback call is made for.
pub struct Asked<'a> {
    pub session: &'a Session,
    pub config: &'a Gateway,
    pub route: &'a Route,
    pub consumer: Option<&'a str>,
}

/// Who a loopback call is made for, without the session: the request's `Host`.
pub struct Origin<'a> {
    pub config: &'a Gateway,
    pub route: &'a Route,
    pub consumer: Option<&'a str>,
    pub host: &'a str,
}

impl Asked<'_> {
    pub fn origin(&self) -> Origin<'_> {
        let (host, _) = super::routing::host_and_path(self.session);
        Origin {
            config: self.config,
            route: self.route,
            consumer: self.consumer,
            host,
        }
    }
}

fn loopback_client() -> Result<&'static reqwest::Client, String> {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    if let Some(c) = CLIENT.get() {
        return Ok(c);
    }
    let client = reqwest::Client::builder()
        // Only ever this gateway's own listener on loopback, whose certificate may name
        // the public host instead.
        .danger_accept_invalid_certs(true)
        .no_proxy()
        .build()
        .map_err(|e| e.to_string())?;
    Ok(CLIENT.get_or_init(|| client))
}

/// `POST {prefix}{suffix}` with `body` on the route named `serving` (default: the
/// request's), within `timeout`: the answer's JSON when it is a success.
pub async fn post_json(
    asked: &Asked<'_>,
    serving: Option<&str>,
    suffix: &str,
    body: &serde_json::Value,
    timeout: Duration,
) -> Result<serde_json::Value, String> {
    post_json_from(&asked.origin(), serving, suffix, body, timeout).await
}

/// `post_json` for a request known by its `Origin`.
pub async fn post_json_from(
    asked: &Origin<'_>,
    serving: Option<&str>,
    suffix: &str,
    body: &serde_json::Value,
    timeout: Duration,
) -> Result<serde_json::Value, String> {
    let config = asked.config;
    let serving = match serving {
        None => asked.route,
        Some(name) => config
            .routes
            .iter()
            .find(|r| r.name == *name)
            .ok_or_else(|| format!("no route `{name}`"))?,
    };
    let base = crate::lifecycle::proxy_loopback_url().ok_or("no proxy listener is bound yet")?;
    let path = format!("{}{suffix}", serving.path_prefix);
    let host = serving_host(asked, serving, &path)?;
    let credential = match asked.consumer {
        Some(c) => Some(crate::auth::mint_playground(c).map_err(|e| e.to_string())?),
        None => None,
    };
    let mut url = format!("{base}{path}");
    let mut headers = http::HeaderMap::new();
    if let Some(cred) = &credential {
        url = present(config, cred, &mut headers, url)?;
    }
    if !host.is_empty() {
        let host = http::HeaderValue::from_str(&host).map_err(|e| e.to_string())?;
        headers.insert(http::header::HOST, host);
    }
    let request = loopback_client()?
        .post(&url)
        .headers(headers)
        .timeout(timeout);
    let result = async {
        let resp = request
            .json(body)
            .send()
            .await
            .map_err(|e| format!("the proxy listener: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("status {}", resp.status().as_u16()));
        }
        resp.json::<serde_json::Value>()
            .await
            .map_err(|e| e.to_string())
    }
    .await;
    if let Some(cred) = &credential {
        crate::auth::revoke_playground(cred);
    }
    result
}

/// The `Host` for the serving route: the request's own when that route serves it, else the
/// route's first exact host.
fn serving_host(asked: &Origin<'_>, serving: &Route, path: &str) -> Result<String, String> {
    let host = asked.host;
    if serving.match_request(host, path).is_some() {
        return Ok(host.to_string());
    }
    serving
        .hosts
        .iter()
        .find_map(|h| match h {
            crate::route::HostPattern::Exact(h) => Some(h.clone()),
            crate::route::HostPattern::Suffix(_) => None,
        })
        .ok_or_else(|| format!("route `{}` names no exact host", serving.name))
}

/// Put the credential where the gateway reads credentials (its headers, or the query of
/// `url`); the URL to call.
fn present(
    config: &Gateway,
    cred: &str,
    headers: &mut http::HeaderMap,
    url: String,
) -> Result<String, String> {
    let value = |v: String| http::HeaderValue::from_str(&v).map_err(|e| e.to_string());
    let mut query = Vec::new();
    for source in &config.consumers.sources {
        match source {
            crate::auth::Source::Bearer => {
                headers.insert(
                    http::header::AUTHORIZATION,
                    value(format!("Bearer {cred}"))?,
                );
            }
            crate::auth::Source::Header(name) => {
                headers.insert(name.clone(), value(cred.to_string())?);
            }
            crate::auth::Source::Query(name) => query.push(format!("{name}={cred}")),
        }
    }
    if query.is_empty() {
        return Ok(url);
    }
    Ok(format!("{url}?{}", query.join("&")))
}
