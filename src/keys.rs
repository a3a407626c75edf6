//! A provider's pool of API keys: selection, and (later) health.
//!
//! Keys are named everywhere by `name` (given in the config, or `<provider>#<n>`), never by
//! their value. The value is kept as a sensitive `HeaderValue` built once at load time so the
//! hot path only clones it.

use http::HeaderValue;
use std::sync::atomic::{AtomicUsize, Ordering};

pub struct ApiKey {
    pub name: String,
    /// The secret; never logged, never returned to a client.
    value: String,
    /// `Bearer <secret>`, ready for the `Authorization` header.
    bearer: HeaderValue,
    plain: HeaderValue,
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKey({})", self.name)
    }
}

impl ApiKey {
    pub fn new(name: String, value: String) -> Result<Self, String> {
        let mut bearer = HeaderValue::from_str(&format!("Bearer {value}"))
            .map_err(|_| format!("key `{name}` contains characters not allowed in a header"))?;
        bearer.set_sensitive(true);
        let mut plain = HeaderValue::from_str(&value)
            .map_err(|_| format!("key `{name}` contains characters not allowed in a header"))?;
        plain.set_sensitive(true);
        Ok(ApiKey {
            name,
            value,
            bearer,
            plain,
        })
    }

    pub fn bearer(&self) -> &HeaderValue {
        &self.bearer
    }

    pub fn plain(&self) -> &HeaderValue {
        &self.plain
    }

    /// The secret itself, for code that must scrub it from text.
    pub fn secret(&self) -> &str {
        &self.value
    }
}

/// Keys of one provider, chosen round-robin.
#[derive(Debug, Default)]
pub struct KeyPool {
    keys: Vec<ApiKey>,
    /// Environment variables named by `${VAR}` keys that were unset or empty at load.
    missing_vars: Vec<String>,
    next: AtomicUsize,
}

impl KeyPool {
    pub fn new(keys: Vec<ApiKey>, missing_vars: Vec<String>) -> Self {
        KeyPool {
            keys,
            missing_vars,
            next: AtomicUsize::new(0),
        }
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn missing_vars(&self) -> &[String] {
        &self.missing_vars
    }

    /// The index of the next key, round-robin; `None` when the pool is empty.
    pub fn pick(&self) -> Option<usize> {
        if self.keys.is_empty() {
            return None;
        }
        Some(self.next.fetch_add(1, Ordering::Relaxed) % self.keys.len())
    }

    pub fn get(&self, index: usize) -> Option<&ApiKey> {
        self.keys.get(index)
    }

    pub fn iter(&self) -> impl Iterator<Item = &ApiKey> {
        self.keys.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_and_debug_hides_secret() {
        let pool = KeyPool::new(
            vec![
                ApiKey::new("a".into(), "sk-1".into()).unwrap(),
                ApiKey::new("b".into(), "sk-2".into()).unwrap(),
            ],
            vec![],
        );
        let picks: Vec<usize> = (0..4).filter_map(|_| pool.pick()).collect();
        assert_eq!(picks, vec![0, 1, 0, 1]);
        assert!(!format!("{pool:?}").contains("sk-1"));
        assert_eq!(pool.get(0).unwrap().bearer(), "Bearer sk-1");
        assert!(KeyPool::default().pick().is_none());
        assert!(ApiKey::new("bad".into(), "a\nb".into()).is_err());
    }
}
