//! Consumers: who is calling. A consumer has a name and one or more credentials; a request's
//! credential is read from the configured sources (bearer token, a header, a query
//! parameter), in order. Routes may require a consumer and list the allowed ones.
//!
//! Lookup is a keyed hash (random key per process) to find the candidate, then a
//! constant-time comparison of the whole credential, so response timing says nothing about
//! how much of a guess was right. A credential the management API generated is known only
//! by its SHA-256 digest (`hashed_credentials`): the presented credential is hashed (only
//! when such digests exist) and looked up by digest. Credentials are never logged; only
//! consumer names travel with the request. A consumer-identity header sent by the client is
//! never read.
//!
//! The console's playground sends requests as a chosen consumer without knowing its
//! credential: the admin listener mints a credential (`tgp_` and 32 random bytes,
//! kept as its digest for at most `PLAYGROUND_TTL`, at most `PLAYGROUND_MAX` at a time) that
//! stands for the consumer by name. It is looked at only when a presented credential matches
//! no consumer and starts with `tgp_`, so other requests never pay for it. The semantic cache
//! sends its embedding requests the same way (`crate::proxy::cache`), revoking each
//! credential once its request is answered.

use crate::settings::CredentialSource;
use http::HeaderMap;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};

/// Where a credential may be found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `Authorization: Bearer <credential>`.
    Bearer,
    Header(http::HeaderName),
    Query(String),
}

impl Source {
    /// The source an `auth.sources` entry names.
    pub fn from_settings(s: &CredentialSource) -> Result<Self, String> {
        Ok(match s {
            CredentialSource::Bearer => Source::Bearer,
            CredentialSource::Header(h) => http::HeaderName::from_bytes(h.as_bytes())
                .map(Source::Header)
                .map_err(|_| format!("`{h}` is not a header name"))?,
            CredentialSource::Query(q) => Source::Query(q.clone()),
        })
    }

    /// The source written as in `auth.sources` (`bearer`, `header:NAME`, `query:NAME`).
    pub fn parse(s: &str) -> Result<Self, String> {
        Self::from_settings(&s.parse()?)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    /// No credential in any source: 401.
    Missing,
    /// A credential that names no consumer: 401 (`invalid_api_key`, what OpenAI answers).
    Invalid,
    /// A known consumer this route does not allow: 403.
    NotAllowed,
}

pub struct Consumers {
    names: Vec<String>,
    by_hash: HashMap<u64, Vec<(String, usize)>>,
    /// SHA-256 digests of credentials held only as digests.
    by_digest: HashMap<[u8; 32], usize>,
    hasher: std::collections::hash_map::RandomState,
    pub sources: Vec<Source>,
}

impl std::fmt::Debug for Consumers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumers")
            .field("names", &self.names)
            .finish()
    }
}

impl Default for Consumers {
    fn default() -> Self {
        Consumers::new(vec![
            Source::Bearer,
            Source::Header(http::HeaderName::from_static("x-api-key")),
        ])
    }
}

impl Consumers {
    pub fn new(sources: Vec<Source>) -> Self {
        Consumers {
            names: vec![],
            by_hash: HashMap::new(),
            by_digest: HashMap::new(),
            hasher: Default::default(),
            sources,
        }
    }

    fn hash(&self, credential: &str) -> u64 {
        let mut h = self.hasher.build_hasher();
        h.write(credential.as_bytes());
        h.finish()
    }

    /// Add a consumer; errors on a duplicate name or credential.
    pub fn add(&mut self, name: String, credentials: Vec<String>) -> Result<(), String> {
        if self.names.contains(&name) {
            return Err(format!("duplicate consumer `{name}`"));
        }
        let index = self.names.len();
        for c in credentials {
            if c.is_empty() {
                return Err(format!("consumer `{name}` has an empty credential"));
            }
            if self.lookup(&c).is_some() {
                return Err(format!(
                    "consumer `{name}` reuses another consumer's credential"
                ));
            }
            let h = self.hash(&c);
            self.by_hash.entry(h).or_default().push((c, index));
        }
        self.names.push(name);
        Ok(())
    }

    /// Add credentials known by their digest (`sha256:` and 64 hex digits) to the consumer
    /// added last under `name`.
    pub fn add_digests(&mut self, name: &str, digests: &[String]) -> Result<(), String> {
        let Some(index) = self.names.iter().position(|n| n == name) else {
            return Err(format!("no consumer `{name}`"));
        };
        for d in digests {
            let digest = parse_digest(d)?;
            if self.by_digest.insert(digest, index).is_some() {
                return Err(format!(
                    "consumer `{name}` reuses a hashed credential (`{d}`)"
                ));
            }
        }
        Ok(())
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    fn lookup(&self, credential: &str) -> Option<usize> {
        if !self.by_digest.is_empty() {
            if let Some(i) = self.by_digest.get(&sha256(credential)) {
                return Some(*i);
            }
        }
        let mut found = None;
        for (c, i) in self
            .by_hash
            .get(&self.hash(credential))
            .into_iter()
            .flatten()
        {
            if same_secret(c.as_bytes(), credential.as_bytes()) {
                found = Some(*i);
            }
        }
        if found.is_none() && credential.starts_with(PLAYGROUND_PREFIX) {
            // Only when no consumer has it: other requests never take the playground's lock.
            let name = playground_consumer(credential)?;
            return self.names.iter().position(|n| *n == name);
        }
        found
    }

    /// The credential a request carries, from the first source that has one.
    pub fn credential<'a>(
        &self,
        headers: &'a HeaderMap,
        query: Option<&'a str>,
    ) -> Option<&'a str> {
        self.sources.iter().find_map(|s| match s {
            Source::Bearer => headers
                .get(http::header::AUTHORIZATION)?
                .to_str()
                .ok()?
                .strip_prefix("Bearer ")
                .map(str::trim)
                .filter(|c| !c.is_empty()),
            Source::Header(name) => headers.get(name)?.to_str().ok().filter(|c| !c.is_empty()),
            Source::Query(name) => query?
                .split('&')
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| k == name)
                .map(|(_, v)| v)
                .filter(|c| !c.is_empty()),
        })
    }

    /// The consumer for this request, checked against `allowed` (empty = any consumer).
    /// `Ok(None)` when no credential was sent and none is required.
    pub fn identify(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
        required: bool,
        allowed: &[String],
    ) -> Result<Option<&str>, AuthError> {
        let Some(credential) = self.credential(headers, query) else {
            return if required {
                Err(AuthError::Missing)
            } else {
                Ok(None)
            };
        };
        let Some(index) = self.lookup(credential) else {
            // On an open route an unknown key is just an anonymous caller: SDKs always send
            // some key, and the route asks for none.
            return if required {
                Err(AuthError::Invalid)
            } else {
                Ok(None)
            };
        };
        let name = self.names[index].as_str();
        if !allowed.is_empty() && !allowed.iter().any(|a| a == name) {
            return Err(AuthError::NotAllowed);
        }
        Ok(Some(name))
    }
}

const PLAYGROUND_PREFIX: &str = "tgp_";
/// How long a playground credential stands for its consumer.
pub const PLAYGROUND_TTL: std::time::Duration = std::time::Duration::from_secs(120);
/// Playground credentials alive at once, at most (the oldest are dropped).
pub const PLAYGROUND_MAX: usize = 1000;

/// The live playground credentials: digest → (consumer, minted at).
static PLAYGROUND: std::sync::Mutex<Vec<([u8; 32], String, std::time::Instant)>> =
    std::sync::Mutex::new(Vec::new());

/// A playground credential for `consumer` (it never leaves the gateway: the admin listener
/// sends it to the proxy listener over loopback, and the proxy never forwards it).
pub fn mint_playground(consumer: &str) -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let credential = format!("{PLAYGROUND_PREFIX}{hex}");
    let mut live = PLAYGROUND
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    live.retain(|(_, _, at)| at.elapsed() < PLAYGROUND_TTL);
    if live.len() >= PLAYGROUND_MAX {
        live.remove(0);
    }
    live.push((
        sha256(&credential),
        consumer.to_string(),
        std::time::Instant::now(),
    ));
    Ok(credential)
}

/// Forget a playground credential before its time (its one request has been answered).
pub fn revoke_playground(credential: &str) {
    let digest = sha256(credential);
    let mut live = PLAYGROUND
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    live.retain(|(d, _, _)| !same_secret(d, &digest));
}

/// The consumer a live playground credential stands for.
fn playground_consumer(credential: &str) -> Option<String> {
    let digest = sha256(credential);
    let live = PLAYGROUND
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let i = live
        .iter()
        .position(|(d, _, at)| same_secret(d, &digest) && at.elapsed() < PLAYGROUND_TTL)?;
    Some(live[i].1.clone())
}

/// The SHA-256 digest of a credential.
pub fn sha256(credential: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(credential.as_bytes()).into()
}

/// A credential's digest as stored in `hashed_credentials`: `sha256:` and 64 hex digits.
pub fn digest_text(credential: &str) -> String {
    let hex: String = sha256(credential)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}

/// `sha256:` and 64 hex digits, as bytes.
pub fn parse_digest(text: &str) -> Result<[u8; 32], String> {
    let bad = || format!("`{text}`: expected `sha256:` and 64 hex digits");
    let hex = text.strip_prefix("sha256:").ok_or_else(bad)?;
    if hex.len() != 64 || !hex.is_ascii() {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(out)
}

/// A new consumer credential: `tg-` and 43 characters (32 bytes from the OS's random source,
/// base64url).
pub fn generate_credential() -> Result<String, String> {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| format!("no random bytes: {e}"))?;
    Ok(format!(
        "tg-{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    ))
}

/// Constant-time equality for secrets.
pub fn same_secret(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn consumers() -> Consumers {
        let mut c = Consumers::new(vec![
            Source::Bearer,
            Source::parse("header:x-api-key").unwrap(),
            Source::parse("query:key").unwrap(),
        ]);
        c.add("alice".into(), vec!["sk-alice".into(), "sk-alice-2".into()])
            .unwrap();
        c.add("bob".into(), vec!["sk-bob".into()]).unwrap();
        c
    }

    #[test]
    fn a_playground_credential_stands_for_its_consumer_only() {
        let c = consumers();
        let minted = mint_playground("bob").unwrap();
        assert!(minted.starts_with("tgp_") && minted.len() == 68);
        let h = headers(&[("authorization", &format!("Bearer {minted}"))]);
        assert_eq!(c.identify(&h, None, true, &[]).unwrap(), Some("bob"));
        assert_eq!(
            c.identify(&h, None, true, &[]).unwrap(),
            Some("bob"),
            "reusable"
        );
        assert!(matches!(
            c.identify(&h, None, true, &["alice".to_string()]),
            Err(AuthError::NotAllowed)
        ));
        let guess = format!("tgp_{}", "0".repeat(64));
        let h = headers(&[("authorization", &format!("Bearer {guess}"))]);
        assert!(matches!(
            c.identify(&h, None, true, &[]),
            Err(AuthError::Invalid)
        ));
        // A consumer the config no longer has: nobody.
        let gone = mint_playground("carol").unwrap();
        let h = headers(&[("authorization", &format!("Bearer {gone}"))]);
        assert!(matches!(
            c.identify(&h, None, true, &[]),
            Err(AuthError::Invalid)
        ));
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn sources_and_decisions() {
        let c = consumers();
        let none = headers(&[]);
        assert_eq!(c.identify(&none, None, true, &[]), Err(AuthError::Missing));
        assert_eq!(c.identify(&none, None, false, &[]), Ok(None));
        let bearer = headers(&[("authorization", "Bearer sk-alice-2")]);
        assert_eq!(c.identify(&bearer, None, true, &[]), Ok(Some("alice")));
        let header = headers(&[("x-api-key", "sk-bob")]);
        assert_eq!(c.identify(&header, None, true, &[]), Ok(Some("bob")));
        assert_eq!(
            c.identify(&none, Some("a=1&key=sk-bob"), true, &[]),
            Ok(Some("bob"))
        );
        assert_eq!(
            c.identify(&header, None, true, &["alice".into()]),
            Err(AuthError::NotAllowed)
        );
        let wrong = headers(&[("authorization", "Bearer sk-alicf")]);
        assert_eq!(c.identify(&wrong, None, false, &[]), Ok(None));
        assert_eq!(c.identify(&wrong, None, true, &[]), Err(AuthError::Invalid));
        let mut dup = consumers();
        assert!(dup.add("carol".into(), vec!["sk-bob".into()]).is_err());
        assert!(dup.add("alice".into(), vec!["x".into()]).is_err());
        assert!(Source::parse("cookie:x").is_err());
        assert!(!format!("{c:?}").contains("sk-"));
    }

    #[test]
    fn hashed_credentials_identify_their_consumer() {
        let mut c = consumers();
        let key = generate_credential().unwrap();
        assert!(key.starts_with("tg-") && key.len() == 46, "{key}");
        assert_ne!(key, generate_credential().unwrap());
        c.add("dave".into(), vec![]).unwrap();
        c.add_digests("dave", &[digest_text(&key)]).unwrap();
        let h = headers(&[("authorization", &format!("Bearer {key}"))]);
        assert_eq!(c.identify(&h, None, true, &[]), Ok(Some("dave")));
        let bob = headers(&[("x-api-key", "sk-bob")]);
        assert_eq!(c.identify(&bob, None, true, &[]), Ok(Some("bob")));
        let wrong = headers(&[("authorization", &format!("Bearer {key}x"))]);
        assert_eq!(c.identify(&wrong, None, true, &[]), Err(AuthError::Invalid));
        assert!(c.add_digests("dave", &[digest_text(&key)]).is_err());
        assert!(c.add_digests("dave", &["sha256:zz".into()]).is_err());
        assert!(parse_digest(&format!("sha256:{}", "é".repeat(32))).is_err());
    }
}
