//! Which client request headers reach a provider: an allow-list, built once per route at
//! config load.
//!
//! The upstream request header is built fresh, never copied from the client's: the gateway
//! sets method, path, `Host`, the provider key, `Content-Type`, `Content-Length` and
//! `x-request-id` itself, and `User-Agent: tollgate/VERSION` unless the route forwards the
//! client's, and copies only these client headers:
//! - `accept`;
//! - the provider protocol's own version and beta headers, when the client speaks that
//!   protocol (no translation): `openai-beta` (OpenAI, Azure), `anthropic-version` and
//!   `anthropic-beta` (Anthropic);
//! - what the route lists in `forward_headers` (exact names, or a prefix ending in `*`).
//!
//! Never forwarded, and refused in `forward_headers` at load: credentials (`authorization`,
//! `x-api-key`, `api-key`, `x-goog-api-key`, `proxy-authorization`, `cookie`, and every
//! header named in `auth.sources`), hop-by-hop and framing headers, and `host`.
//! `accept-encoding` is not forwarded either: the gateway reads (meters, translates)
//! provider bodies and asks for them uncompressed.

use crate::auth::Source;
use crate::protocol::ClientProtocol;
use http::HeaderName;
use std::collections::HashSet;

/// Forwarded on every route, to every provider.
const BASE: &[&str] = &["accept"];

/// Credentials a client may send: never forwarded, refused in `forward_headers`.
const CREDENTIALS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "x-api-key",
    "api-key",
    "x-goog-api-key",
];

/// Hop-by-hop, framing and addressing headers the gateway sets or drops itself.
const GATEWAY_OWNED: &[&str] = &[
    "connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "expect",
    "host",
    "content-length",
    "content-type",
    "accept-encoding",
    "keep-alive",
    "proxy-connection",
    "x-request-id",
];

fn names(list: &[&'static str]) -> HashSet<HeaderName> {
    list.iter().map(|n| HeaderName::from_static(n)).collect()
}

/// Index of the allow-set: a translated request, or the client protocol the provider speaks
/// natively.
fn slot(native: Option<ClientProtocol>) -> usize {
    match native {
        None => 0,
        Some(ClientProtocol::OpenAi | ClientProtocol::Responses) => 1,
        Some(ClientProtocol::Anthropic) => 2,
    }
}

/// A route's forwarding rule, precomputed: one request costs a hash lookup per client
/// header (and a prefix comparison per configured prefix), no allocation or lowercasing.
#[derive(Debug, Clone, Default)]
pub struct ForwardHeaders {
    /// By `slot`: translated; OpenAI native; Anthropic native.
    allow: [HashSet<HeaderName>; 3],
    /// Lowercase prefixes from `x-name-*` entries.
    prefixes: Vec<Box<str>>,
    /// Never forwarded, whatever a prefix says.
    never: HashSet<HeaderName>,
}

impl ForwardHeaders {
    /// Build from a route's `forward_headers` and the config's credential sources. The error
    /// names the offending entry; the caller adds the field path.
    pub fn build(entries: &[String], sources: &[Source]) -> Result<Self, (usize, String)> {
        let credentials = names(CREDENTIALS);
        let owned = names(GATEWAY_OWNED);
        let mut never: HashSet<HeaderName> = credentials.union(&owned).cloned().collect();
        let consumer: HashSet<HeaderName> = sources
            .iter()
            .filter_map(|s| match s {
                Source::Header(h) => Some(h.clone()),
                _ => None,
            })
            .collect();
        never.extend(consumer.iter().cloned());
        let mut listed = Vec::new();
        let mut prefixes: Vec<Box<str>> = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            let lower = entry.trim().to_ascii_lowercase();
            let (text, prefix) = match lower.strip_suffix('*') {
                Some(p) => (p, true),
                None => (lower.as_str(), false),
            };
            let refused = |h: &HeaderName| -> Option<String> {
                if credentials.contains(h) {
                    Some(format!(
                        "`{entry}` would forward the credential header `{h}`: credentials never go to a provider"
                    ))
                } else if consumer.contains(h) {
                    Some(format!(
                        "`{entry}` would forward `{h}`, which carries consumer credentials (auth.sources): it never goes to a provider"
                    ))
                } else if owned.contains(h) {
                    Some(format!(
                        "`{entry}` would forward `{h}`, which the gateway sets or drops itself"
                    ))
                } else {
                    None
                }
            };
            if prefix {
                // A prefix needs a name-like start (`x-`), never `*` alone.
                if text.len() < 2 || HeaderName::from_bytes(text.as_bytes()).is_err() {
                    return Err((
                        i,
                        format!("`{entry}`: a prefix needs at least 2 header-name characters before `*`"),
                    ));
                }
                if let Some(why) = never
                    .iter()
                    .filter(|h| h.as_str().starts_with(text))
                    .find_map(refused)
                {
                    return Err((i, why));
                }
                prefixes.push(text.into());
            } else {
                let h = HeaderName::from_bytes(text.as_bytes())
                    .map_err(|_| (i, format!("`{entry}` is not a header name")))?;
                if let Some(why) = refused(&h) {
                    return Err((i, why));
                }
                listed.push(h);
            }
        }
        let set = |own: &[&'static str]| -> HashSet<HeaderName> {
            names(BASE)
                .into_iter()
                .chain(names(own))
                .chain(listed.iter().cloned())
                .filter(|h| !never.contains(h))
                .collect()
        };
        Ok(ForwardHeaders {
            allow: [
                set(&[]),
                set(ClientProtocol::OpenAi.own_headers()),
                set(ClientProtocol::Anthropic.own_headers()),
            ],
            prefixes,
            never,
        })
    }

    /// Whether the client header `name` goes to the provider (`native`: the client's
    /// protocol, when the provider speaks it; `None` for a translated request).
    pub fn allows(&self, name: &HeaderName, native: Option<ClientProtocol>) -> bool {
        if self.allow[slot(native)].contains(name) {
            return true;
        }
        !self.prefixes.is_empty()
            && self
                .prefixes
                .iter()
                .any(|p| name.as_str().starts_with(&**p))
            && !self.never.contains(name)
    }

    /// Copy the allowed client headers into `req`.
    pub fn copy(
        &self,
        client: &http::HeaderMap,
        req: &mut pingora_http::RequestHeader,
        native: Option<ClientProtocol>,
    ) -> pingora_error::Result<()> {
        for (name, value) in client {
            if self.allows(name, native) {
                req.append_header(name, value.clone())?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &'static str) -> HeaderName {
        HeaderName::from_static(s)
    }

    #[test]
    fn allow_list() {
        let sources = vec![Source::Bearer, Source::Header(h("x-tenant-key"))];
        let f = ForwardHeaders::build(&["OpenAI-Organization".into(), "x-mock-*".into()], &sources)
            .unwrap();
        let fam = Some(ClientProtocol::OpenAi);
        assert!(f.allows(&h("accept"), fam));
        assert!(f.allows(&h("openai-beta"), fam));
        assert!(!f.allows(&h("openai-beta"), None), "translated");
        assert!(!f.allows(&h("anthropic-beta"), fam));
        assert!(f.allows(&h("anthropic-beta"), Some(ClientProtocol::Anthropic)));
        assert!(f.allows(&h("openai-organization"), fam));
        assert!(f.allows(&h("openai-organization"), None));
        assert!(f.allows(&h("x-mock-status"), fam));
        for n in [
            "authorization",
            "x-api-key",
            "cookie",
            "x-tenant-key",
            "host",
            "connection",
            "openai-project",
            "x-forwarded-for",
            "user-agent",
            "accept-encoding",
        ] {
            assert!(
                !f.allows(&HeaderName::from_bytes(n.as_bytes()).unwrap(), fam),
                "{n}"
            );
        }
        let none = ForwardHeaders::build(&[], &[]).unwrap();
        assert!(!none.allows(&h("x-mock-status"), fam));
    }

    #[test]
    fn refused_entries() {
        let sources = vec![Source::Header(h("x-tenant-key"))];
        for (entry, what) in [
            ("Authorization", "credential"),
            ("x-api-key", "credential"),
            ("cookie", "credential"),
            ("x-tenant-key", "auth.sources"),
            ("x-tenant-*", "auth.sources"),
            ("x-api-*", "credential"),
            ("host", "gateway"),
            ("transfer-encoding", "gateway"),
            ("bad header", "not a header name"),
            ("*", "prefix"),
        ] {
            let (i, msg) =
                ForwardHeaders::build(&["accept".into(), entry.into()], &sources).unwrap_err();
            assert_eq!(i, 1);
            assert!(msg.contains(what), "{entry}: {msg}");
        }
    }
}
