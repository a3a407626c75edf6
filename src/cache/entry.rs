//! A kept answer ([`Entry`]): the `chat.completion` as the provider sent it (or assembled
//! from its stream), its usage, who answered and what it is kept under ([`Names`]). Made on
//! every miss that is kept, so it costs two allocations (the answer's bytes are the ones
//! the client was sent, not a copy); in Redis it travels as JSON with the answer as a
//! string.

use crate::usage::Usage;
use serde::{Deserialize, Serialize};

/// A kept answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(into = "Wire", from = "Wire")]
pub struct Entry {
    /// The `chat.completion` object, as JSON text. Bytes, so a hit sends it without a copy.
    /// Not checked for UTF-8 when kept: a whole answer is served as the provider sent it,
    /// a replayed stream parses it first (`super::lookup` of the proxy's stage).
    pub completion: bytes::Bytes,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_tokens: u64,
    pub reasoning_tokens: u64,
    pub names: Names,
}

impl Entry {
    pub fn usage(&self) -> Usage {
        Usage {
            input_tokens: self.input_tokens,
            output_tokens: self.output_tokens,
            cached_input_tokens: self.cached_tokens,
            reasoning_tokens: self.reasoning_tokens,
            ..Usage::default()
        }
    }

    /// Bytes it takes in memory (about).
    pub fn weight(&self) -> u32 {
        let n = self.completion.len() + self.names.text.len() + 128;
        u32::try_from(n).unwrap_or(u32::MAX)
    }
}

/// Who answered (the provider's name and the model asked of it) and what an entry is kept
/// under for purges (route, the client's model, scope): one string.
#[derive(Clone, PartialEq, Eq)]
pub struct Names {
    text: Box<str>,
    /// Where each of the first four ends in `text`.
    ends: [usize; 4],
}

impl Names {
    pub fn new(
        provider: &str,
        upstream_model: &str,
        route: &str,
        model: &str,
        scope: &str,
    ) -> Self {
        let parts = [provider, upstream_model, route, model, scope];
        let mut text = String::with_capacity(parts.iter().map(|p| p.len()).sum());
        let mut ends = [0; 4];
        for (i, p) in parts.iter().enumerate() {
            text.push_str(p);
            if let Some(end) = ends.get_mut(i) {
                *end = text.len();
            }
        }
        Names {
            text: text.into_boxed_str(),
            ends,
        }
    }

    fn part(&self, i: usize) -> &str {
        let start = match i {
            0 => 0,
            i => self.ends.get(i - 1).copied().unwrap_or(self.text.len()),
        };
        let end = self.ends.get(i).copied().unwrap_or(self.text.len());
        self.text.get(start..end).unwrap_or_default()
    }

    pub fn provider(&self) -> &str {
        self.part(0)
    }

    pub fn upstream_model(&self) -> &str {
        self.part(1)
    }

    pub fn route(&self) -> &str {
        self.part(2)
    }

    pub fn model(&self) -> &str {
        self.part(3)
    }

    pub fn scope(&self) -> &str {
        self.part(4)
    }
}

impl std::fmt::Debug for Names {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Names")
            .field("provider", &self.provider())
            .field("upstream_model", &self.upstream_model())
            .field("route", &self.route())
            .field("model", &self.model())
            .field("scope", &self.scope())
            .finish()
    }
}

/// An entry as Redis keeps it (the shape every gateway version reads).
#[derive(Serialize, Deserialize)]
struct Wire {
    completion: String,
    input_tokens: u64,
    output_tokens: u64,
    cached_tokens: u64,
    reasoning_tokens: u64,
    provider: String,
    upstream_model: String,
    route: String,
    model: String,
    scope: String,
}

impl From<Entry> for Wire {
    fn from(e: Entry) -> Wire {
        let n = &e.names;
        Wire {
            // Only text reaches Redis (`store::ResponseCache::put` checks).
            completion: String::from_utf8_lossy(&e.completion).into_owned(),
            input_tokens: e.input_tokens,
            output_tokens: e.output_tokens,
            cached_tokens: e.cached_tokens,
            reasoning_tokens: e.reasoning_tokens,
            provider: n.provider().to_string(),
            upstream_model: n.upstream_model().to_string(),
            route: n.route().to_string(),
            model: n.model().to_string(),
            scope: n.scope().to_string(),
        }
    }
}

impl From<Wire> for Entry {
    fn from(w: Wire) -> Entry {
        Entry {
            completion: bytes::Bytes::from(w.completion),
            input_tokens: w.input_tokens,
            output_tokens: w.output_tokens,
            cached_tokens: w.cached_tokens,
            reasoning_tokens: w.reasoning_tokens,
            names: Names::new(&w.provider, &w.upstream_model, &w.route, &w.model, &w.scope),
        }
    }
}
