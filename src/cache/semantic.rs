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
//! - The index ([`SemanticIndex`], one per route): partitions by context, each a set of
//!   points (the vector, the exact cache key its answer is kept under, when it expires,
//!   whether the answer calls tools). A lookup searches the request's partition only. A
//!   partition starts as a list scanned exactly (no recall to tune, and as fast as a graph
//!   for a few hundred points); once it holds [`GRAPH_FROM`] points of one dimension they
//!   move into an HNSW graph ([`super::graph`], the `usearch` crate; built from a copy of
//!   their vectors off the proxy's threads and outside the index's lock, [`GraphJob`],
//!   while lookups go on scanning the list), which removes points
//!   (expired, evicted, replaced) and searches with a filter. Partitions hold only entries of
//!   the same context, so the graph is needed only where one context gathers many
//!   questions: a single-turn assistant with one system prompt and scope, up to the route's
//!   `max_entries` (10,000 points of 1,536 dimensions: 15 million multiply-adds a lookup
//!   scanned, a few thousand through the graph).
//! - Bounds: `max_entries` points and `max_bytes` (the vectors and keys) per route; the
//!   oldest point goes first. A point holds no answer: it names the exact cache's entry, so
//!   the answers' memory is the exact cache's (bounded by `cache.max_bytes`); a point whose
//!   entry is gone is a miss and is dropped.

use super::graph::{self, Graph, GRAPH_FROM, LINK_BYTES};
use super::Key;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
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
    /// Its vector; empty when its partition's graph holds it.
    vector: Box<[f32]>,
    /// The length of its vector.
    dims: usize,
    /// The exact cache's key of the answer.
    key: Key,
    expires_ms: u64,
    tool_calls: bool,
}

impl Point {
    /// What it costs: its vector (in the list or the graph), its key (twice: the point and
    /// the partition's map by key) and the maps' overhead.
    fn bytes(&self) -> usize {
        let graph = if self.vector.is_empty() {
            LINK_BYTES
        } else {
            0
        };
        self.dims * 4 + graph + 2 * std::mem::size_of::<Key>() + 128
    }

    fn serves(&self, tool_calls: bool, now_ms: u64) -> bool {
        self.expires_ms > now_ms && (tool_calls || !self.tool_calls)
    }
}

/// The points of one context.
#[derive(Default)]
struct Partition {
    /// Every point, by id.
    points: HashMap<u64, Point>,
    /// Points by their answer's key (a key names at most one point).
    ids: HashMap<Key, u64>,
    /// Points holding their vector, scanned exactly.
    listed: Vec<u64>,
    /// The graph of the rest, once [`GRAPH_FROM`] points had one dimension.
    graph: Option<Graph>,
    /// The ticket of the graph being built for it, outside the index's lock ([`GraphJob`]).
    building: Option<u64>,
}

impl Partition {
    /// Drop a point; its bytes (0 when it is not here).
    fn remove(&mut self, id: u64) -> usize {
        let Some(p) = self.points.remove(&id) else {
            return 0;
        };
        self.ids.remove(&p.key);
        if p.vector.is_empty() {
            if let Some(g) = &self.graph {
                g.remove(id);
            }
        } else if let Some(i) = self.listed.iter().position(|&l| l == id) {
            self.listed.swap_remove(i);
        }
        p.bytes()
    }

    /// Add a point (into the graph when one of its dimension exists); its bytes.
    fn add(&mut self, id: u64, mut point: Point) -> usize {
        // The caller removed the point this key named, if any.
        self.ids.insert(point.key, id);
        if self
            .graph
            .as_ref()
            .is_some_and(|g| g.add(id, &point.vector))
        {
            point.vector = Box::default();
        } else {
            self.listed.push(id);
        }
        let bytes = point.bytes();
        self.points.insert(id, point);
        bytes
    }

    /// Once [`GRAPH_FROM`] listed points have `dims` values (and no graph is built or being
    /// built): a copy of their vectors, to build a graph from outside the index's lock.
    fn graph_due(&mut self, dims: usize) -> Option<Vec<(u64, Box<[f32]>)>> {
        if self.graph.is_some() || self.building.is_some() || self.listed.len() < GRAPH_FROM {
            return None;
        }
        let points = &self.points;
        let same: Vec<(u64, Box<[f32]>)> = self
            .listed
            .iter()
            .filter_map(|id| Some((*id, points.get(id).filter(|p| p.dims == dims)?)))
            .map(|(id, p)| (id, p.vector.clone()))
            .collect();
        (same.len() >= GRAPH_FROM).then_some(same)
    }

    /// Take `graph`, built from the points `built` while the lock was free: the listed points
    /// of its dimension move into it (their vectors dropped: those added since too), the
    /// points gone since leave it. The bytes this adds.
    fn install(&mut self, graph: Graph, built: &[u64]) -> usize {
        let listed: HashSet<u64> = self.listed.iter().copied().collect();
        for id in built {
            if !listed.contains(id) {
                graph.remove(*id);
            }
        }
        let built: HashSet<u64> = built.iter().copied().collect();
        let mut moved = HashSet::new();
        for id in &self.listed {
            let Some(p) = self.points.get_mut(id) else {
                continue;
            };
            if p.dims == graph.dims() && (built.contains(id) || graph.add(*id, &p.vector)) {
                p.vector = Box::default();
                moved.insert(*id);
            }
        }
        self.listed.retain(|id| !moved.contains(id));
        let bytes = graph::base_bytes(graph.dims()) + moved.len() * LINK_BYTES;
        self.graph = Some(graph);
        bytes
    }

    /// The most similar point that serves, listed or in the graph.
    fn nearest(&self, vector: &[f32], tool_calls: bool, now_ms: u64) -> Option<(&Point, f32)> {
        let serves = |id: &u64| self.points.get(id).filter(|p| p.serves(tool_calls, now_ms));
        let listed = self
            .listed
            .iter()
            .filter_map(serves)
            .filter(|p| p.dims == vector.len())
            .map(|p| (p, dot(&p.vector, vector)));
        let graphed = self
            .graph
            .as_ref()
            .and_then(|g| g.nearest(vector, |id| serves(&id).is_some()))
            .and_then(|(id, score)| Some((self.points.get(&id)?, score)));
        listed.chain(graphed).max_by(|a, b| a.1.total_cmp(&b.1))
    }
}

#[derive(Default)]
struct Inner {
    partitions: HashMap<[u8; 32], Partition>,
    /// Every point, oldest first: (its partition, its id).
    order: VecDeque<([u8; 32], u64)>,
    entries: usize,
    bytes: usize,
    next: u64,
}

impl Inner {
    fn remove(&mut self, context: &[u8; 32], id: u64) {
        let Some(part) = self.partitions.get_mut(context) else {
            return;
        };
        let bytes = part.remove(id);
        if bytes > 0 {
            self.entries -= 1;
            self.bytes -= bytes;
        }
        if part.points.is_empty() {
            let graph = part
                .graph
                .as_ref()
                .map_or(0, |g| graph::base_bytes(g.dims()));
            self.bytes = self.bytes.saturating_sub(graph);
            self.partitions.remove(context);
        }
    }

    fn expires_ms(&self, context: &[u8; 32], id: u64) -> Option<u64> {
        Some(self.partitions.get(context)?.points.get(&id)?.expires_ms)
    }
}

/// The best point found for a request: the exact cache's key and the similarity.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    pub key: Key,
    pub score: f32,
}

/// What a route's index holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    pub entries: usize,
    pub bytes: usize,
    /// Points in partitions' graphs (the rest are scanned exactly).
    pub graphed: usize,
}

/// A graph to build for a partition's points outside the index's lock
/// ([`SemanticIndex::build`]).
#[must_use = "the graph is built by SemanticIndex::build"]
pub struct GraphJob {
    context: [u8; 32],
    dims: usize,
    /// Which job: a partition takes the graph of the job it started only (not one started
    /// before it was emptied and made again).
    ticket: u64,
    points: Vec<(u64, Box<[f32]>)>,
    /// The route's `max_entries` and `max_bytes`, held again once the graph is in, and the
    /// time the job was made (what is past it is dropped then).
    bounds: (usize, usize, u64),
}

impl std::fmt::Debug for GraphJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphJob")
            .field("dims", &self.dims)
            .field("points", &self.points.len())
            .finish_non_exhaustive()
    }
}

/// Tickets of graph jobs, unique in the process.
static TICKETS: AtomicU64 = AtomicU64::new(0);

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
        let (point, score) = inner
            .partitions
            .get(context)?
            .nearest(vector, tool_calls, now_ms)?;
        (score >= threshold).then(|| Found {
            key: point.key,
            score: score.min(1.0),
        })
    }

    /// Keep a point (replacing one of the same context and key), then drop expired and
    /// oldest points until the bounds hold. When its partition now wants a graph, the job
    /// to build it ([`SemanticIndex::build`], off the request's thread).
    #[expect(clippy::too_many_arguments, reason = "a point's fields and the bounds")]
    pub fn insert(
        &self,
        context: [u8; 32],
        vector: Vec<f32>,
        key: Key,
        expires_ms: u64,
        tool_calls: bool,
        max_entries: usize,
        max_bytes: usize,
        now_ms: u64,
    ) -> Option<GraphJob> {
        let mut inner = self.lock();
        let old = inner
            .partitions
            .get(&context)
            .and_then(|p| p.ids.get(&key).copied());
        if let Some(id) = old {
            inner.remove(&context, id);
        }
        let id = inner.next;
        inner.next += 1;
        let dims = vector.len();
        let point = Point {
            vector: vector.into_boxed_slice(),
            dims,
            key,
            expires_ms,
            tool_calls,
        };
        let part = inner.partitions.entry(context).or_default();
        let added = part.add(id, point);
        let due = part.graph_due(dims);
        let ticket = due
            .as_ref()
            .map(|_| TICKETS.fetch_add(1, Ordering::Relaxed));
        part.building = part.building.or(ticket);
        inner.entries += 1;
        inner.bytes += added;
        inner.order.push_back((context, id));
        inner.evict(max_entries, max_bytes, now_ms);
        Some(GraphJob {
            context,
            dims,
            ticket: ticket?,
            points: due?,
            bounds: (max_entries, max_bytes, now_ms),
        })
    }

    /// Build the graph `job` asks for, without the index's lock (lookups and inserts go on
    /// meanwhile: a few hundred points of a thousand dimensions take tens of milliseconds),
    /// then put it in its partition, if the partition is still the one it was built for.
    pub fn build(&self, job: GraphJob) {
        let vectors: Vec<(u64, &[f32])> = job.points.iter().map(|(id, v)| (*id, &v[..])).collect();
        let graph = Graph::build(job.dims, &vectors);
        let ids: Vec<u64> = job.points.iter().map(|(id, _)| *id).collect();
        drop(vectors);
        drop(job.points);
        let mut inner = self.lock();
        let Some(part) = inner.partitions.get_mut(&job.context) else {
            return;
        };
        if part.building != Some(job.ticket) {
            return;
        }
        part.building = None;
        // A graph that could not be made is tried again with the next point.
        let Some(graph) = graph else {
            return;
        };
        let added = part.install(graph, &ids);
        inner.bytes += added;
        let (max_entries, max_bytes, now_ms) = job.bounds;
        inner.evict(max_entries, max_bytes, now_ms);
    }

    /// Drop the point naming `key` in `context` (its answer is gone from the exact cache).
    pub fn forget(&self, context: &[u8; 32], key: &Key) {
        let mut inner = self.lock();
        let id = inner
            .partitions
            .get(context)
            .and_then(|p| p.ids.get(key).copied());
        if let Some(id) = id {
            inner.remove(context, id);
        }
    }

    /// Drop every point.
    pub fn clear(&self) {
        *self.lock() = Inner::default();
    }

    /// Points, their bytes, and how many are in graphs.
    pub fn stats(&self) -> Stats {
        let inner = self.read();
        Stats {
            entries: inner.entries,
            bytes: inner.bytes,
            graphed: inner
                .partitions
                .values()
                .filter_map(|p| p.graph.as_ref())
                .map(Graph::points)
                .sum(),
        }
    }
}

impl Inner {
    /// Drop the oldest points until the bounds hold, then expired ones at the front.
    fn evict(&mut self, max_entries: usize, max_bytes: usize, now_ms: u64) {
        // The order may name points already gone (replaced, dropped as stale): skip them.
        while self.entries > max_entries || self.bytes > max_bytes {
            let Some((c, id)) = self.order.pop_front() else {
                break;
            };
            self.remove(&c, id);
        }
        // Names of replaced and forgotten points wait in the order until they reach its
        // front: rebuild it before they outnumber the points.
        if self.order.len() > 2 * self.entries + 64 {
            let mut ids: Vec<(u64, [u8; 32])> = self
                .partitions
                .iter()
                .flat_map(|(c, p)| p.points.keys().map(|id| (*id, *c)))
                .collect();
            ids.sort_unstable_by_key(|(id, _)| *id);
            self.order = ids.into_iter().map(|(id, c)| (c, id)).collect();
        }
        while let Some(&(c, id)) = self.order.front() {
            match self.expires_ms(&c, id) {
                Some(e) if e > now_ms => break,
                Some(_) => self.remove(&c, id),
                None => {}
            }
            self.order.pop_front();
        }
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

    /// A key named for the test.
    fn k(name: &str) -> Key {
        Key(*blake3::hash(name.as_bytes()).as_bytes())
    }

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
        idx.insert(a, v(&[1.0, 0.0]), k("k1"), 100, false, 10, 1 << 20, 0);
        idx.insert(a, v(&[0.0, 1.0]), k("k2"), 100, true, 10, 1 << 20, 0);
        let near = idx.nearest(&a, &v(&[0.95, 0.1]), 0.9, false, 0).unwrap();
        assert_eq!(near.key, k("k1"));
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
            k("k2")
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
        idx.forget(&a, &k("k1"));
        assert!(
            idx.nearest(&a, &v(&[1.0, 0.0]), 0.9, false, 0).is_none(),
            "forgotten"
        );
        assert_eq!(idx.stats().entries, 1);
    }

    #[test]
    fn bounded_by_entries_and_bytes_oldest_first() {
        let idx = SemanticIndex::default();
        let c = [0u8; 32];
        for i in 0..10 {
            idx.insert(
                c,
                v(&[1.0, f64::from(i)]),
                k(&format!("k{i}")),
                100,
                false,
                3,
                1 << 20,
                0,
            );
        }
        assert_eq!(idx.stats().entries, 3);
        assert_eq!(
            idx.nearest(&c, &v(&[1.0, 9.0]), 0.999, false, 0)
                .unwrap()
                .key,
            k("k9")
        );
        assert!(
            idx.nearest(&c, &v(&[1.0, 0.0]), 0.999, false, 0).is_none(),
            "evicted"
        );
        // Replacing a key keeps one point.
        idx.insert(c, v(&[1.0, 9.0]), k("k9"), 100, false, 3, 1 << 20, 0);
        assert_eq!(idx.stats().entries, 3);
        // Bytes: each point is 2 × 4 + 2 × 32 + 128 = 200 bytes.
        let small = SemanticIndex::default();
        for i in 0..10 {
            small.insert(
                c,
                v(&[1.0, f64::from(i)]),
                k(&format!("k{i}")),
                100,
                false,
                100,
                450,
                0,
            );
        }
        let Stats { entries, bytes, .. } = small.stats();
        assert_eq!(entries, 2);
        assert!(bytes <= 450);
        // Expired points at the front are dropped by the next insert.
        let e = SemanticIndex::default();
        e.insert(c, v(&[1.0, 0.0]), k("old"), 5, false, 100, 1 << 20, 0);
        e.insert(c, v(&[0.0, 1.0]), k("new"), 100, false, 100, 1 << 20, 10);
        assert_eq!(e.stats().entries, 1);
    }

    /// A pseudo-random unit vector of `dims` values.
    fn random(seed: u64, dims: usize) -> Vec<f32> {
        let mut rng = fastrand::Rng::with_seed(seed);
        v(&(0..dims).map(|_| rng.f64() - 0.5).collect::<Vec<_>>())
    }

    #[test]
    fn a_large_partition_moves_into_a_graph_that_forgets_and_filters() {
        let (idx, c, dims) = (SemanticIndex::default(), [7u8; 32], 32);
        let n = GRAPH_FROM as u64 + 200;
        let max = usize::try_from(n).unwrap() - 50;
        let insert = |i: u64, expires: u64, tools: bool| {
            let job = idx.insert(
                c,
                random(i, dims),
                k(&format!("k{i}")),
                expires,
                tools,
                max,
                1 << 30,
                0,
            );
            if let Some(job) = job {
                idx.build(job);
            }
        };
        for i in 0..GRAPH_FROM as u64 - 1 {
            insert(i, 100, i % 10 == 3);
        }
        assert_eq!(idx.stats().graphed, 0, "a list below GRAPH_FROM");
        for i in GRAPH_FROM as u64 - 1..n {
            insert(i, if i % 10 == 4 { 5 } else { 100 }, i % 10 == 3);
        }
        let st = idx.stats();
        assert_eq!(
            (st.entries, st.graphed),
            (max, max),
            "oldest evicted, the rest graphed"
        );
        assert!(
            st.bytes >= max * (dims * 4 + LINK_BYTES),
            "the graph's bytes counted"
        );
        let find = |i: u64, tools: bool, now: u64| {
            idx.nearest(&c, &random(i, dims), 0.99, tools, now)
                .map(|f| f.key)
        };
        for i in 0..50 {
            assert_eq!(find(i, true, 0), None, "evicted k{i}");
        }
        for i in 50..n {
            let want = (i % 10 != 3).then(|| k(&format!("k{i}")));
            assert_eq!(find(i, false, 0), want, "k{i} without tool calls");
            assert_eq!(
                find(i, true, 0),
                Some(k(&format!("k{i}"))),
                "k{i} with tool calls"
            );
            if i % 10 == 4 && i >= GRAPH_FROM as u64 - 1 {
                assert_eq!(find(i, true, 10), None, "k{i} expired");
            }
        }
        idx.forget(&c, &k("k100"));
        assert_eq!(find(100, true, 0), None, "forgotten");
        // Replacing a key replaces its point in the graph.
        idx.insert(
            c,
            random(9_000, dims),
            k("k101"),
            100,
            false,
            max,
            1 << 30,
            0,
        );
        assert_eq!(find(101, true, 0), None);
        assert_eq!(
            idx.nearest(&c, &random(9_000, dims), 0.99, false, 0)
                .unwrap()
                .key,
            k("k101")
        );
        // A vector of another dimension stays in the list and is found there.
        idx.insert(c, random(1, 8), k("short"), 100, false, max, 1 << 30, 0);
        assert_eq!(
            idx.nearest(&c, &random(1, 8), 0.99, false, 0).unwrap().key,
            k("short")
        );
        assert_eq!(idx.stats().graphed, max - 1);
        idx.clear();
        assert_eq!(idx.stats(), Stats::default());
    }

    /// Keep point `i` (its key `k{i}`, a random vector of `dims`) in `c`; the graph job.
    fn put(idx: &SemanticIndex, c: [u8; 32], i: u64, dims: usize) -> Option<GraphJob> {
        let key = k(&format!("k{i}"));
        idx.insert(c, random(i, dims), key, 100, false, 10_000, 1 << 30, 0)
    }

    #[test]
    fn a_graph_built_outside_the_lock_takes_the_points_of_the_moment() {
        let (c, dims, last) = ([8u8; 32], 16, GRAPH_FROM as u64 - 1);
        let idx = SemanticIndex::default();
        for i in 0..last {
            assert!(put(&idx, c, i, dims).is_none());
        }
        let job = put(&idx, c, last, dims).expect("a graph is due");
        // While it is built: lookups, a point added (no second job), one forgotten.
        assert!(put(&idx, c, 5_000, dims).is_none(), "one job at a time");
        idx.forget(&c, &k("k3"));
        let found = |idx: &SemanticIndex, i: u64| {
            idx.nearest(&c, &random(i, dims), 0.99, false, 0)
                .map(|f| f.key)
        };
        assert_eq!(found(&idx, 10), Some(k("k10")), "served from the list");
        assert_eq!(idx.stats().graphed, 0);
        idx.build(job);
        let st = idx.stats();
        assert_eq!((st.entries, st.graphed), (GRAPH_FROM, GRAPH_FROM));
        for i in (0..=last).chain([5_000]) {
            let want = (i != 3).then(|| k(&format!("k{i}")));
            assert_eq!(found(&idx, i), want, "k{i}");
        }
        // The same points put in one after another (each job built at once) weigh the same.
        let at_once = SemanticIndex::default();
        for i in 0..=last {
            if let Some(job) = put(&at_once, c, i, dims) {
                at_once.build(job);
            }
        }
        assert!(put(&at_once, c, 5_000, dims).is_none());
        at_once.forget(&c, &k("k3"));
        assert_eq!(at_once.stats(), st);
        // A job whose partition was emptied (a purge) and made again meanwhile is dropped.
        let purged = SemanticIndex::default();
        for i in 0..last {
            assert!(put(&purged, c, i, dims).is_none());
        }
        let job = put(&purged, c, last, dims).expect("a graph is due");
        purged.clear();
        for i in 0..10 {
            assert!(put(&purged, c, i, dims).is_none());
        }
        purged.build(job);
        let st = purged.stats();
        assert_eq!(
            (st.entries, st.graphed),
            (10, 0),
            "the old job's graph is not taken"
        );
        assert_eq!(found(&purged, 4), Some(k("k4")));
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
