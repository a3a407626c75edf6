//! Providers: where a provider lives (URL, TLS, resolved address), how to authenticate to
//! it, and which protocol family it speaks (`crate::protocol`).
//!
//! A `Provider` is built once at config load. Its upstream address is resolved off the hot
//! path (at load and by the `resolve` background service) into a ready `HttpPeer`
//! template, so a request only clones a peer: no DNS, no parsing.

pub mod resolve;

use crate::health::HealthSettings;
use crate::keys::KeyPool;
use crate::pattern::ModelMap;
use arc_swap::ArcSwapOption;
use http::HeaderValue;
use pingora_core::protocols::tls::{CaType, ALPN};
use pingora_core::upstreams::peer::HttpPeer;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use crate::protocol::PRESETS;

/// The `User-Agent` the gateway sends providers (unless a route forwards the client's).
pub const USER_AGENT: &str = concat!("tollgate/", env!("CARGO_PKG_VERSION"));

/// Point `req` at the provider's endpoint for `model` and authenticate with `key`.
pub fn prepare_request(
    req: &mut pingora_http::RequestHeader,
    provider: &Provider,
    key: &crate::keys::ApiKey,
    endpoint: crate::protocol::Endpoint,
    model: &str,
    stream: bool,
) -> pingora_error::Result<()> {
    let path = provider.protocol.path(&crate::protocol::Call {
        base_path: &provider.upstream.base_path,
        api_version: provider.api_version.as_deref(),
        endpoint,
        model,
        stream,
    });
    let uri: http::Uri = path.parse().map_err(|_| {
        pingora_error::Error::explain(
            pingora_error::ErrorType::InternalError,
            "building the upstream path",
        )
    })?;
    req.set_uri(uri);
    req.set_method(http::Method::POST);
    req.insert_header(http::header::HOST, provider.upstream.host_header.clone())?;
    // `req` holds only headers of the allow-list (`forward`): no client credential and no
    // `Accept-Encoding` (bodies must come back uncompressed for the usage parser).
    if !req.headers.contains_key(http::header::USER_AGENT) {
        req.insert_header(http::header::USER_AGENT, USER_AGENT)?;
    }
    provider.protocol.authenticate(req, key)
}

#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    pub read: Duration,
    pub write: Duration,
    pub idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(10),
            read: Duration::from_secs(300),
            write: Duration::from_secs(60),
            idle: Duration::from_secs(90),
        }
    }
}

/// Where the provider is: parsed from its base URL at load time.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Path of the base URL without a trailing slash, e.g. `/v1` or `/compatible-mode/v1`.
    pub base_path: String,
    pub sni: String,
    pub host_header: HeaderValue,
}

impl Upstream {
    pub fn parse(url: &str, sni: Option<&str>) -> Result<Self, String> {
        let uri: http::Uri = url
            .parse()
            .map_err(|e| format!("invalid URL `{url}`: {e}"))?;
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(format!("URL `{url}` must start with http:// or https://")),
        };
        let host = uri
            .host()
            .ok_or_else(|| format!("URL `{url}` has no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        if uri.query().is_some() {
            return Err(format!("URL `{url}` must not have a query"));
        }
        let base_path = uri.path().trim_end_matches('/').to_string();
        let authority = uri.authority().map(|a| a.as_str()).unwrap_or(host.as_str());
        let host_header = HeaderValue::from_str(authority)
            .map_err(|_| format!("URL `{url}` has an invalid host"))?;
        Ok(Upstream {
            tls,
            sni: sni.unwrap_or(&host).to_string(),
            host,
            port,
            base_path,
            host_header,
        })
    }
}

/// A provider: its validated settings (`ProviderSpec`, reached through `Deref`) and the
/// peer for its resolved address.
pub struct Provider {
    spec: ProviderSpec,
    /// Ready-to-clone peer for the resolved address; `None` until resolution succeeds.
    peer: ArcSwapOption<HttpPeer>,
}

impl std::ops::Deref for Provider {
    type Target = ProviderSpec;

    fn deref(&self) -> &ProviderSpec {
        &self.spec
    }
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("host", &self.upstream.host)
            .field("keys", &self.keys)
            .finish()
    }
}

/// Everything a provider is made of, as built from the config.
pub struct ProviderSpec {
    pub name: String,
    /// The configured `type` (a preset name).
    pub kind: String,
    /// The protocol family it speaks (from the registry, by `kind`).
    pub protocol: crate::protocol::Protocol,
    pub upstream: Upstream,
    pub keys: KeyPool,
    pub model_map: ModelMap,
    /// Names listed by `GET /v1/models` for this provider.
    pub models: Vec<String>,
    pub timeouts: Timeouts,
    pub ca: Option<Arc<CaType>>,
    pub health: HealthSettings,
    /// Azure's `api-version` query parameter.
    pub api_version: Option<String>,
    /// Connect here instead of the URL's host (TLS name and `Host` stay the URL's).
    pub connect_to: Option<SocketAddr>,
    /// HTTP/2 to the provider (ALPN over TLS, prior knowledge over plain HTTP).
    pub http2: bool,
    /// The provider has OpenAI's Responses API (`providers[].responses_api`).
    pub responses_api: bool,
}

/// Requests in flight on one HTTP/2 connection to a provider before another is opened.
const H2_STREAMS_PER_CONNECTION: usize = 100;

impl Provider {
    pub fn new(spec: ProviderSpec) -> Self {
        let provider = Provider {
            spec,
            peer: ArcSwapOption::empty(),
        };
        // An IP literal (or a fixed address) needs no resolution.
        if let Some(addr) = provider.connect_to {
            provider.set_addr(addr);
        } else if let Ok(ip) = provider.upstream.host.parse::<std::net::IpAddr>() {
            provider.set_addr(SocketAddr::new(ip, provider.upstream.port));
        }
        provider
    }

    /// The peer to connect to (shared, not copied: the hot path takes it per attempt), or
    /// `None` while the host name is unresolved.
    pub fn peer(&self) -> Option<Arc<HttpPeer>> {
        self.peer.load_full()
    }

    pub fn resolved_addr(&self) -> Option<SocketAddr> {
        self.peer.load().as_deref().and_then(|p| match p._address {
            pingora_core::protocols::l4::socket::SocketAddr::Inet(a) => Some(a),
            _ => None,
        })
    }

    /// Keep `previous`'s resolved address (the same provider, by name, in the config being
    /// replaced) when this one is still unresolved and names the same host and port, so a
    /// reload never waits on, or is hurt by, a lookup of an address already known.
    pub fn adopt_address(&self, previous: &Provider) {
        let same_host = previous.upstream.host == self.upstream.host
            && previous.upstream.port == self.upstream.port
            && previous.connect_to.is_none()
            && self.connect_to.is_none();
        if same_host && self.peer.load().is_none() {
            if let Some(addr) = previous.resolved_addr() {
                self.set_addr(addr);
            }
        }
    }

    /// Install a newly resolved address (no-op when unchanged).
    pub fn set_addr(&self, addr: SocketAddr) {
        if self.resolved_addr() == Some(addr) {
            return;
        }
        let mut peer = HttpPeer::new(addr, self.upstream.tls, self.upstream.sni.clone());
        let t = &self.timeouts;
        let o = &mut peer.options;
        o.connection_timeout = Some(t.connect);
        o.total_connection_timeout = Some(t.connect);
        o.read_timeout = Some(t.read);
        o.write_timeout = Some(t.write);
        o.idle_timeout = Some(t.idle);
        o.verify_cert = true;
        o.verify_hostname = true;
        o.ca = self.ca.clone();
        if self.http2 {
            o.alpn = if self.upstream.tls {
                ALPN::H2H1
            } else {
                ALPN::H2
            };
            o.max_h2_streams = H2_STREAMS_PER_CONNECTION;
        }
        self.peer.store(Some(Arc::new(peer)));
    }
}

/// Build the per-provider CA list from a PEM file, checking every certificate parses (the
/// Pingora type panics on bad DER, so it must never see any).
pub fn load_ca(path: &str) -> Result<Arc<CaType>, String> {
    use pingora_core::utils::tls::{parse_x509, WrappedX509};
    let pem = std::fs::read(path).map_err(|e| format!("cannot read CA file `{path}`: {e}"))?;
    let mut certs = Vec::new();
    for item in rustls_pemfile::certs(&mut pem.as_slice()) {
        let der = item.map_err(|e| format!("CA file `{path}`: {e}"))?;
        x509_parser::parse_x509_certificate(der.as_ref())
            .map_err(|e| format!("CA file `{path}`: invalid certificate: {e}"))?;
        certs.push(WrappedX509::new(der.as_ref().to_vec(), parse_x509));
    }
    if certs.is_empty() {
        return Err(format!("CA file `{path}` holds no PEM certificate"));
    }
    Ok(Arc::from(certs.into_boxed_slice()))
}
