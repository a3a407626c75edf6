//! The semantic cache: a question asked again in other words, in the same context, is
//! answered with the exact cache's entry for the first wording.
//!
//! - The context ([`context`]): SHA-256 of the route, the scope and the whole request in
//!   canonical form except the last user message's text (and `stream`, `stream_options`):
//!   the client's model, system prompt, tools and `tool_choice`, sampling parameters, every
//!   message before (and after) the last user message. Only entries of the same context are
//!   candidates, so an answer is never served to another consumer (scope), another model,
//!   another system prompt or tool set, or a conversation that went differently before.
//! - What is compared: the embedding of the last user message's text ([`last_user_text`]),
//!   made by the embeddings model the route names (`crate::proxy::cache` sends that request
//!   through the gateway's own proxy listener), unit length, so cosine similarity is a dot
//!   product.
//! - The index ([`SemanticIndex`], one per route): partitions by context, each a list of
//!   points (the vector, the exact cache key its answer is kept under, when it expires,
//!   whether the answer calls tools). A lookup is an exact search over the request's
//!   partition only. Why not an approximate (HNSW) index: the partition is the unit of search,
//!   and it is small (one system prompt, one conversation prefix, one scope; a single-turn
//!   assistant's partition is at most the route's `max_entries`); entries expire with the
//!   exact cache's TTL and are evicted oldest first, which the HNSW crates for Rust either
//!   cannot do (`hnsw_rs`, `instant-distance`: no removal, the latter not even insertion) or
//!   do through a C++ build (`usearch`); and an exact search has no recall to tune. Its
//!   cost is bounded: at the default bound, 10,000 points of 1,536 dimensions, one lookup
//!   is at most 15 million multiply-adds (a few milliseconds), and usually a handful.
//! - Bounds: `max_entries` points and `max_bytes` (the vectors and keys) per route; the
//!   oldest point goes first. A point holds no answer: it names the exact cache's entry, so
//!   the answers' memory is the exact cache's (bounded by `cache.max_bytes`); a point whose
//!   entry is gone is a miss and is dropped.

use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, VecDeque};
use std::sync::RwLock;

/// Default least similarity served.
pub const DEFAULT_THRESHOLD: f64 = 0.9;
/// Default most points per route.
pub const DEFAULT_MAX_ENTRIES: u64 = 10_000;
/// Default most memory for a route's points.
pub const DEFAULT_MAX_BYTES: u64 = 64 << 20;
/// Longest embedding accepted (values).
pub const MAX_DIMENSIONS: usize = 8192;

/// A route's semantic cache, built from `routes[].cache.semantic`.
#[derive(Debug, Clone, PartialEq)]
pub struct Semantic {
    /// The embeddings model (the client-side name the gateway routes).
    pub model: String,
    /// The route serving the embedding request (`None`: the same route).
    pub route: Option<String>,
    pub threshold: f32,
    pub max_entries: usize,
    pub max_bytes: usize,
    /// Answers that call tools are served to paraphrases too.
    pub tool_calls: bool,
}

impl Semantic {
    /// Build and check what needs no other route (`threshold` in (0, 1]).
    pub fn build(s: &crate::settings::SemanticCacheSection) -> Result<Semantic, String> {
        let threshold = s.threshold.unwrap_or(DEFAULT_THRESHOLD);
        if !(threshold > 0.0 && threshold <= 1.0) {
            return Err(format!("threshold {threshold}: must be in (0, 1]"));
        }
        if s.model.is_empty() {
            return Err("model: an embeddings model is required".into());
        }
        let size = |v: Option<u64>, d: u64| usize::try_from(v.unwrap_or(d)).unwrap_or(usize::MAX);
        #[expect(
            clippy::cast_possible_truncation,
            reason = "a similarity in (0, 1] fits an f32"
        )]
        let threshold = threshold as f32;
        Ok(Semantic {
            model: s.model.clone(),
            route: s.route.clone(),
            threshold,
            max_entries: size(s.max_entries, DEFAULT_MAX_ENTRIES).max(1),
            max_bytes: size(s.max_bytes, DEFAULT_MAX_BYTES),
            tool_calls: s.tool_calls.unwrap_or(false),
        })
    }
}

/// The text of the last user message (its text parts joined by newlines); `None` when the
/// body has no user message or its last one holds anything but text (an image, audio).
pub fn last_user_text(body: &Value) -> Option<String> {
    let messages = body["messages"].as_array()?;
    let last = messages.iter().rev().find(|m| m["role"] == "user")?;
    match &last["content"] {
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => {
            let mut texts = Vec::new();
            for p in parts {
                if p["type"] != "text" {
                    return None;
                }
                texts.push(p["text"].as_str()?);
            }
            Some(texts.join("\n"))
        }
        _ => None,
    }
    .filter(|t| !t.trim().is_empty())
}

/// The context of a request: what must be equal for an answer to be served to a paraphrase
/// (everything but the last user message's text); `None` without a last user message.
pub fn context(route: &str, scope: &str, body: &Value) -> Option<[u8; 32]> {
    let mut v = body.clone();
    let m = v.as_object_mut()?;
    m.remove("stream");
    m.remove("stream_options");
    let messages = m.get_mut("messages")?.as_array_mut()?;
    let last = messages.iter_mut().rev().find(|m| m["role"] == "user")?;
    last.as_object_mut()?.remove("content");
    let mut text = String::new();
    super::canonical(&v, &mut text);
    let mut h = Sha256::new();
    for part in [
        b"semantic\0".as_slice(),
        route.as_bytes(),
        b"\0",
        scope.as_bytes(),
        b"\0",
        text.as_bytes(),
    ] {
        h.update(part);
    }
    Some(h.finalize().into())
}

/// `values` as unit-length f32s; `None` when empty, too long, not finite or all zero.
pub fn unit(values: &[f64]) -> Option<Vec<f32>> {
    if values.is_empty() || values.len() > MAX_DIMENSIONS {
        return None;
    }
    let norm = values.iter().map(|v| v * v).sum::<f64>().sqrt();
    if !norm.is_finite() || norm == 0.0 {
        return None;
    }
    #[expect(
        clippy::cast_possible_truncation,
        reason = "unit components fit an f32"
    )]
    Some(values.iter().map(|v| (v / norm) as f32).collect())
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

struct Point {
    id: u64,
    vector: Box<[f32]>,
    /// The exact cache's key of the answer.
    key: String,
    expires_ms: u64,
    tool_calls: bool,
}

impl Point {
    fn bytes(&self) -> usize {
        self.vector.len() * 4 + self.key.len() + 96
    }
}

#[derive(Default)]
struct Inner {
    partitions: HashMap<[u8; 32], Vec<Point>>,
    /// Every point, oldest first: (its partition, its id).
    order: VecDeque<([u8; 32], u64)>,
    entries: usize,
    bytes: usize,
    next: u64,
}

impl Inner {
    fn remove(&mut self, context: &[u8; 32], id: u64) {
        let Some(points) = self.partitions.get_mut(context) else {
            return;
        };
        if let Some(i) = points.iter().position(|p| p.id == id) {
            let p = points.swap_remove(i);
            self.entries -= 1;
            self.bytes -= p.bytes();
        }
        if points.is_empty() {
            self.partitions.remove(context);
        }
    }
}

/// The best point found for a request: the exact cache's key and the similarity.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    pub key: String,
    pub score: f32,
}

/// One route's points, partitioned by context (see the module's doc).
#[derive(Default)]
pub struct SemanticIndex {
    inner: RwLock<Inner>,
}

impl SemanticIndex {
    fn lock(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Lookups share the index: only inserts and removals wait for one another.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The most similar live point of `context` at or above `threshold` (points whose
    /// answer calls tools only with `tool_calls`).
    pub fn nearest(
        &self,
        context: &[u8; 32],
        vector: &[f32],
        threshold: f32,
        tool_calls: bool,
        now_ms: u64,
    ) -> Option<Found> {
        let inner = self.read();
        let best = inner
            .partitions
            .get(context)?
            .iter()
            .filter(|p| {
                p.expires_ms > now_ms
                    && p.vector.len() == vector.len()
                    && (tool_calls || !p.tool_calls)
            })
            .map(|p| (p, dot(&p.vector, vector)))
            .max_by(|a, b| a.1.total_cmp(&b.1))?;
        (best.1 >= threshold).then(|| Found {
            key: best.0.key.clone(),
            score: best.1.min(1.0),
        })
    }

    /// Keep a point (replacing one of the same context and key), then drop expired and
    /// oldest points until the bounds hold.
    #[expect(clippy::too_many_arguments, reason = "a point's fields and the bounds")]
    pub fn insert(
        &self,
        context: [u8; 32],
        vector: Vec<f32>,
        key: String,
        expires_ms: u64,
        tool_calls: bool,
        max_entries: usize,
        max_bytes: usize,
        now_ms: u64,
    ) {
        let mut inner = self.lock();
        let old = inner
            .partitions
            .get(&context)
            .and_then(|ps| ps.iter().find(|p| p.key == key).map(|p| p.id));
        if let Some(id) = old {
            inner.remove(&context, id);
        }
        let id = inner.next;
        inner.next += 1;
        let point = Point {
            id,
            vector: vector.into_boxed_slice(),
            key,
            expires_ms,
            tool_calls,
        };
        inner.entries += 1;
        inner.bytes += point.bytes();
        inner.partitions.entry(context).or_default().push(point);
        inner.order.push_back((context, id));
        // The order may name points already gone (replaced, dropped as stale): skip them.
        while inner.entries > max_entries || inner.bytes > max_bytes {
            let Some((c, id)) = inner.order.pop_front() else {
                break;
            };
            inner.remove(&c, id);
        }
        // Names of replaced and forgotten points wait in the order until they reach its
        // front: rebuild it before they outnumber the points.
        if inner.order.len() > 2 * inner.entries + 64 {
            let mut ids: Vec<(u64, [u8; 32])> = inner
                .partitions
                .iter()
                .flat_map(|(c, ps)| ps.iter().map(|p| (p.id, *c)))
                .collect();
            ids.sort_unstable_by_key(|(id, _)| *id);
            inner.order = ids.into_iter().map(|(id, c)| (c, id)).collect();
        }
        // Expired points at the front go too.
        while let Some(&(c, id)) = inner.order.front() {
            let live = inner
                .partitions
                .get(&c)
                .and_then(|ps| ps.iter().find(|p| p.id == id))
                .map(|p| p.expires_ms > now_ms);
            match live {
                Some(true) => break,
                Some(false) => inner.remove(&c, id),
                None => {}
            }
            inner.order.pop_front();
        }
    }

    /// Drop the point naming `key` in `context` (its answer is gone from the exact cache).
    pub fn forget(&self, context: &[u8; 32], key: &str) {
        let mut inner = self.lock();
        let id = inner
            .partitions
            .get(context)
            .and_then(|ps| ps.iter().find(|p| p.key == key).map(|p| p.id));
        if let Some(id) = id {
            inner.remove(context, id);
        }
    }

    /// Drop every point.
    pub fn clear(&self) {
        *self.lock() = Inner::default();
    }

    /// Points and their bytes.
    pub fn stats(&self) -> (usize, usize) {
        let inner = self.read();
        (inner.entries, inner.bytes)
    }
}

/// Whether a kept answer calls tools.
pub fn calls_tools(completion: &Value) -> bool {
    completion["choices"].as_array().is_some_and(|cs| {
        cs.iter().any(|c| {
            c["message"]["tool_calls"]
                .as_array()
                .is_some_and(|t| !t.is_empty())
                || c["message"]["function_call"].is_object()
        })
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn v(xs: &[f64]) -> Vec<f32> {
        unit(xs).unwrap()
    }

    #[test]
    fn context_ignores_only_the_last_user_text() {
        let a = json!({"model": "m", "temperature": 0.5, "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
            {"role": "user", "content": "what is the capital of France?"}]});
        let c = |b: &Value| context("r", "consumer:a", b).unwrap();
        let mut same = a.clone();
        same["messages"][3]["content"] = json!("capital of france");
        same["stream"] = json!(true);
        assert_eq!(c(&a), c(&same));
        for change in [
            json!({"model": "n"}),
            json!({"temperature": 0.7}),
            json!({"tools": [{"type": "function", "function": {"name": "f"}}]}),
        ] {
            let mut b = a.clone();
            for (k, x) in change.as_object().unwrap() {
                b[k] = x.clone();
            }
            assert_ne!(c(&a), c(&b), "{change}");
        }
        let mut earlier = a.clone();
        earlier["messages"][1]["content"] = json!("hey");
        assert_ne!(c(&a), c(&earlier), "another conversation before");
        let mut system = a.clone();
        system["messages"][0]["content"] = json!("be long");
        assert_ne!(c(&a), c(&system), "another system prompt");
        assert_ne!(c(&a), context("r", "consumer:b", &a).unwrap(), "scope");
        assert_ne!(c(&a), context("s", "consumer:a", &a).unwrap(), "route");
        assert!(context("r", "s", &json!({"messages": []})).is_none());
    }

    #[test]
    fn the_last_user_text() {
        let b = json!({"messages": [{"role": "user", "content": "one"},
            {"role": "assistant", "content": "x"},
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]});
        assert_eq!(last_user_text(&b).unwrap(), "a\nb");
        let image = json!({"messages": [{"role": "user", "content": [
            {"type": "text", "text": "a"}, {"type": "image_url", "image_url": {"url": "x"}}]}]});
        assert_eq!(last_user_text(&image), None);
        assert_eq!(
            last_user_text(&json!({"messages": [{"role": "system", "content": "s"}]})),
            None
        );
    }

    #[test]
    fn nearest_in_the_partition_above_the_threshold() {
        let idx = SemanticIndex::default();
        let (a, b) = ([1u8; 32], [2u8; 32]);
        idx.insert(a, v(&[1.0, 0.0]), "k1".into(), 100, false, 10, 1 << 20, 0);
        idx.insert(a, v(&[0.0, 1.0]), "k2".into(), 100, true, 10, 1 << 20, 0);
        let near = idx.nearest(&a, &v(&[0.95, 0.1]), 0.9, false, 0).unwrap();
        assert_eq!(near.key, "k1");
        assert!(near.score > 0.99);
        assert!(
            idx.nearest(&b, &v(&[1.0, 0.0]), 0.9, false, 0).is_none(),
            "another context"
        );
        assert!(
            idx.nearest(&a, &v(&[1.0, 1.0]), 0.9, false, 0).is_none(),
            "too far"
        );
        assert!(
            idx.nearest(&a, &v(&[0.0, 1.0]), 0.9, false, 0).is_none(),
            "tool calls"
        );
        assert_eq!(
            idx.nearest(&a, &v(&[0.0, 1.0]), 0.9, true, 0).unwrap().key,
            "k2"
        );
        assert!(
            idx.nearest(&a, &v(&[1.0, 0.0]), 0.9, false, 100).is_none(),
            "expired"
        );
        assert!(
            idx.nearest(&a, &v(&[1.0, 0.0, 0.0]), 0.9, false, 0)
                .is_none(),
            "dimensions"
        );
        idx.forget(&a, "k1");
        assert!(
            idx.nearest(&a, &v(&[1.0, 0.0]), 0.9, false, 0).is_none(),
            "forgotten"
        );
        assert_eq!(idx.stats().0, 1);
    }

    #[test]
    fn bounded_by_entries_and_bytes_oldest_first() {
        let idx = SemanticIndex::default();
        let c = [0u8; 32];
        for i in 0..10 {
            idx.insert(
                c,
                v(&[1.0, f64::from(i)]),
                format!("k{i}"),
                100,
                false,
                3,
                1 << 20,
                0,
            );
        }
        assert_eq!(idx.stats().0, 3);
        assert_eq!(
            idx.nearest(&c, &v(&[1.0, 9.0]), 0.999, false, 0)
                .unwrap()
                .key,
            "k9"
        );
        assert!(
            idx.nearest(&c, &v(&[1.0, 0.0]), 0.999, false, 0).is_none(),
            "evicted"
        );
        // Replacing a key keeps one point.
        idx.insert(c, v(&[1.0, 9.0]), "k9".into(), 100, false, 3, 1 << 20, 0);
        assert_eq!(idx.stats().0, 3);
        // Bytes: each point is 2 × 4 + 2 + 96 bytes.
        let small = SemanticIndex::default();
        for i in 0..10 {
            small.insert(
                c,
                v(&[1.0, f64::from(i)]),
                format!("k{i}"),
                100,
                false,
                100,
                250,
                0,
            );
        }
        let (n, bytes) = small.stats();
        assert_eq!(n, 2);
        assert!(bytes <= 250);
        // Expired points at the front are dropped by the next insert.
        let e = SemanticIndex::default();
        e.insert(c, v(&[1.0, 0.0]), "old".into(), 5, false, 100, 1 << 20, 0);
        e.insert(
            c,
            v(&[0.0, 1.0]),
            "new".into(),
            100,
            false,
            100,
            1 << 20,
            10,
        );
        assert_eq!(e.stats().0, 1);
    }

    #[test]
    fn unit_vectors_and_tool_calls() {
        assert!(unit(&[]).is_none());
        assert!(unit(&[0.0, 0.0]).is_none());
        assert!(unit(&[f64::NAN]).is_none());
        let u = unit(&[3.0, 4.0]).unwrap();
        assert!((u[0] - 0.6).abs() < 1e-6 && (u[1] - 0.8).abs() < 1e-6);
        assert!(calls_tools(
            &json!({"choices": [{"message": {"tool_calls": [{"id": "x"}]}}]})
        ));
        assert!(!calls_tools(
            &json!({"choices": [{"message": {"content": "x"}}]})
        ));
    }
}
