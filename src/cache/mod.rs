//! The response cache (exact): answers to chat-completion requests kept by a hash of the
//! normalised request and its scope, and served again without going upstream.
//!
//! - The key ([`key()`]): a digest of the route, the scope and the request body in
//!   canonical form (object keys sorted, no insignificant whitespace), without `stream` and
//!   `stream_options` (they change how an answer is sent, not what it says), written in one
//!   pass without a JSON tree. Everything else the client sent counts: model, messages,
//!   tools, temperature, seed, … BLAKE3 when Redis shares the entries; in one gateway's
//!   memory, AES-CMAC (or SipHash-2-4 without AES instructions) under a secret of the
//!   process for a short text ([`Hashing`], [`keyed`]).
//! - An entry ([`Entry`]) is the answer as a whole `chat.completion` object with its usage,
//!   the provider and model that produced it (an Anthropic client's answer translated into
//!   one, keyed in its own dialect: [`key_in`]; see the proxy's cache stage). A streamed answer is assembled from its
//!   chunks ([`assemble`]); either kind answers both kinds of request ([`replay_sse`]
//!   sends an entry as a stream with the chunk structure of OpenAI's, `[DONE]` last, the
//!   usage chunk only when asked for).
//! - Only complete, successful answers are kept: status 200, every choice finished with
//!   `stop` or `tool_calls` (`length` too with `store_truncated`), no larger than
//!   `cache.max_entry_bytes`. Entries come only from providers' answers to what was sent
//!   upstream, keyed by the request: a client cannot plant one.
//! - [`store::ResponseCache`] keeps entries in memory (`moka`, bounded by bytes, expiring per
//!   entry) and, with `redis:`, in Redis too so every gateway shares them.
//! - [`door`]: while the memory is full, only a key offered before is let in (moka's
//!   admission would refuse a one-off request's answer after inserting it).
//! - [`keyed`]: the keyed hash of in-memory keys (AES-CMAC, or SipHash-2-4).
//! - [`long`]: in the key, a long string value is its BLAKE3 digest, remembered for the
//!   long strings seen lately (a system prompt sent again is compared, not hashed again).
//! - [`semantic`]: paraphrases of a kept question in the same context, found by the
//!   similarity of their embeddings, are answered with its entry (`routes[].cache.semantic`).
//! - [`graph`]: the HNSW graph a large semantic partition is searched through.

pub mod door;
pub mod entry;
pub mod graph;
pub mod key;
pub mod keyed;
pub mod long;
pub mod semantic;
pub mod store;
pub(crate) mod whole;

pub use entry::{Entry, Names};
#[cfg(any(test, feature = "fuzzing"))]
pub use key::key_bytes;
pub use key::{key, key_in, Hashing, Key};
pub use whole::{keepable_whole, usage_and_keepable};

use crate::settings::{CacheScope, RouteCacheSection};
use serde_json::{json, Map, Value};
use std::time::Duration;

/// Default time an entry is served.
pub const DEFAULT_TTL: Duration = Duration::from_secs(300);

/// A route's cache settings, built from `routes[].cache`.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteCache {
    pub ttl: Duration,
    pub scope: CacheScope,
    /// A hit charges the consumer's limits, quota and budgets with the answer's usage.
    pub charge: bool,
    pub store_truncated: bool,
    /// The semantic cache (`None`: exact matches only).
    pub semantic: Option<semantic::Semantic>,
}

impl RouteCache {
    /// Build; an error names the field (`semantic.threshold`, …) and what is wrong.
    pub fn build(s: &RouteCacheSection) -> Result<RouteCache, (String, String)> {
        let semantic = match &s.semantic {
            None => None,
            Some(sem) => {
                Some(semantic::Semantic::build(sem).map_err(|e| ("semantic".to_string(), e))?)
            }
        };
        Ok(RouteCache {
            ttl: s.ttl.map_or(DEFAULT_TTL, Into::into),
            scope: s.scope.unwrap_or_default(),
            charge: s.charge.unwrap_or(true),
            store_truncated: s.store_truncated.unwrap_or(false),
            semantic,
        })
    }
}

/// What a client asked of the cache (`cache-control`, `x-tollgate-cache`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wish {
    /// Look up, store on a miss.
    Use,
    /// Do not look up, store the fresh answer (`no-cache`, `refresh`).
    Refresh,
    /// Neither look up nor store (`no-store`, `bypass`).
    Bypass,
}

impl Wish {
    pub fn of(headers: &http::HeaderMap) -> Wish {
        // One walk over the request's few headers rather than a lookup of each name.
        let mut wish = Wish::Use;
        for (name, value) in headers {
            if name != http::header::CACHE_CONTROL && name != X_TOLLGATE_CACHE {
                continue;
            }
            let Ok(value) = value.to_str() else {
                continue;
            };
            for w in value.split(',').map(str::trim) {
                if w.eq_ignore_ascii_case("no-store") || w.eq_ignore_ascii_case("bypass") {
                    return Wish::Bypass;
                }
                if w.eq_ignore_ascii_case("no-cache") || w.eq_ignore_ascii_case("refresh") {
                    wish = Wish::Refresh;
                }
            }
        }
        wish
    }
}

/// Request and response header: what the cache should do, and what it did.
pub const X_TOLLGATE_CACHE: http::HeaderName = http::HeaderName::from_static(CACHE_HEADER);

/// `x-tollgate-cache` as a response is given it (static text: pingora copies a
/// `HeaderName`).
pub const CACHE_HEADER: &str = "x-tollgate-cache";

/// What the cache did for a request (the response header, the access log's `cache`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Hit,
    /// A paraphrase's answer (the semantic cache).
    HitSemantic,
    Miss,
    Refresh,
    Bypass,
}

impl Verdict {
    /// Every verdict, in declaration order (`v as usize` is its place here).
    pub const ALL: [Verdict; 5] = [
        Verdict::Hit,
        Verdict::HitSemantic,
        Verdict::Miss,
        Verdict::Refresh,
        Verdict::Bypass,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Hit => "hit-exact",
            Verdict::HitSemantic => "hit-semantic",
            Verdict::Miss => "miss",
            Verdict::Refresh => "refresh",
            Verdict::Bypass => "bypass",
        }
    }
}

/// A route's cache counters (`tollgate_cache_lookups_total` by verdict,
/// `tollgate_cache_stored_total`), resolved from their families once when the route is
/// built rather than by label on every request.
#[derive(Debug, Clone)]
pub struct Counters {
    /// By [`Verdict`], in the order of [`Verdict::ALL`].
    lookups: [prometheus::IntCounter; 5],
    stored: prometheus::IntCounter,
}

impl Counters {
    pub fn new(route: &str) -> Counters {
        let m = &crate::metrics::METRICS;
        let lookup = |v: Verdict| m.cache_lookups.with_label_values(&[route, v.as_str()]);
        Counters {
            lookups: Verdict::ALL.map(lookup),
            stored: m.cache_stored.with_label_values(&[route]),
        }
    }

    /// Count a lookup's verdict.
    pub fn looked_up(&self, v: Verdict) {
        if let Some(c) = self.lookups.get(v as usize) {
            c.inc();
        }
    }

    /// Count an answer kept.
    pub fn stored(&self) {
        self.stored.inc();
    }
}

/// The scope an entry is kept for: whose requests may be answered with it.
pub fn scope(s: CacheScope, consumer: Option<&str>, team: Option<&str>, route: &str) -> String {
    let (kind, name) = match (s, consumer) {
        (CacheScope::Consumer, Some(c)) => ("consumer:", c),
        (CacheScope::Consumer, None) => ("anonymous:", route),
        (CacheScope::Team, _) => match (team, consumer) {
            (Some(t), _) => ("team:", t),
            (None, Some(c)) => ("consumer:", c),
            (None, None) => ("anonymous:", route),
        },
        (CacheScope::Route, _) => ("route:", route),
        (CacheScope::Global, _) => return "global".into(),
    };
    // Two pieces, one allocation (no formatting machinery on every request).
    let mut scope = String::with_capacity(kind.len() + name.len());
    scope.push_str(kind);
    scope.push_str(name);
    scope
}

/// Write `v` with object keys sorted and no whitespace.
fn canonical(v: &Value, out: &mut String) {
    let mut bytes = std::mem::take(out).into_bytes();
    canonical_bytes(v, &mut bytes, None);
    // Only JSON text was written: valid UTF-8.
    *out = String::from_utf8(bytes).unwrap_or_default();
}

/// `canonical` into bytes, without an allocation per key or value; `long`: long string
/// values as tokens, remembered for this scope (`long`, for the exact key: not UTF-8 text
/// then).
fn canonical_bytes(v: &Value, out: &mut Vec<u8>, long: Option<&[u8]>) {
    match v {
        Value::Object(m) => {
            // serde_json's map is a BTreeMap (no `preserve_order`): its keys come sorted.
            out.push(b'{');
            for (i, (k, v)) in m.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                let _ = serde_json::to_writer(&mut *out, k);
                out.push(b':');
                canonical_bytes(v, out, long);
            }
            out.push(b'}');
        }
        Value::Array(a) => {
            out.push(b'[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical_bytes(x, out, long);
            }
            out.push(b']');
        }
        other => {
            let from = out.len();
            let _ = serde_json::to_writer(&mut *out, other);
            if let (Some(scope), true) = (long, other.is_string()) {
                long::shorten(scope, out, from);
            }
        }
    }
}

/// Whether a complete answer may be kept: every choice finished well.
pub fn keepable(completion: &Value, store_truncated: bool) -> bool {
    let Some(choices) = completion["choices"].as_array().filter(|c| !c.is_empty()) else {
        return false;
    };
    choices
        .iter()
        .all(|c| whole::finished_well(c["finish_reason"].as_str(), store_truncated))
}

/// A streamed answer's SSE bytes (OpenAI chunks) as one `chat.completion`; `None` when the
/// stream is not a complete chat-completion stream (no `[DONE]`, an error event, bad JSON).
pub fn assemble(sse: &[u8]) -> Option<Value> {
    let text = std::str::from_utf8(sse).ok()?;
    let mut head = Map::new();
    let mut choices: Vec<Value> = Vec::new();
    let mut usage = Value::Null;
    let mut done = false;
    for line in text.lines() {
        let Some(data) = line.strip_prefix("data:") else {
            continue;
        };
        let data = data.trim();
        if data == "[DONE]" {
            done = true;
            continue;
        }
        let chunk: Value = serde_json::from_str(data).ok()?;
        if chunk.get("error").is_some() || chunk["object"] != "chat.completion.chunk" {
            return None;
        }
        for k in ["id", "created", "model", "system_fingerprint"] {
            if let Some(v) = chunk.get(k).filter(|v| !v.is_null()) {
                head.entry(k).or_insert_with(|| v.clone());
            }
        }
        if chunk["usage"].is_object() {
            usage = chunk["usage"].clone();
        }
        for c in chunk["choices"].as_array().into_iter().flatten() {
            let i = usize::try_from(c["index"].as_u64()?).ok()?;
            if i > 128 {
                return None;
            }
            while choices.len() <= i {
                let n = choices.len();
                choices.push(
                    json!({"index": n, "message": {"role": "assistant", "content": null},
                    "logprobs": null, "finish_reason": null}),
                );
            }
            merge_delta(&mut choices[i], &c["delta"])?;
            if let Some(f) = c["finish_reason"].as_str() {
                choices[i]["finish_reason"] = json!(f);
            }
        }
    }
    if !done {
        return None;
    }
    let mut out = head;
    out.insert("object".into(), json!("chat.completion"));
    out.insert("choices".into(), Value::Array(choices));
    if !usage.is_null() {
        out.insert("usage".into(), usage);
    }
    Some(Value::Object(out))
}

/// Add one chunk's `delta` to a choice's message.
fn merge_delta(choice: &mut Value, delta: &Value) -> Option<()> {
    let msg = choice["message"].as_object_mut()?;
    for field in ["content", "reasoning_content", "refusal"] {
        if let Some(s) = delta[field].as_str() {
            let have = msg.get(field).and_then(Value::as_str).unwrap_or("");
            msg.insert(field.into(), json!(format!("{have}{s}")));
        }
    }
    for call in delta["tool_calls"].as_array().into_iter().flatten() {
        let j = usize::try_from(call["index"].as_u64()?).ok()?;
        let calls = msg
            .entry("tool_calls")
            .or_insert_with(|| json!([]))
            .as_array_mut()?;
        if j > 128 {
            return None;
        }
        while calls.len() <= j {
            calls.push(
                json!({"id": null, "type": "function", "function": {"name": "", "arguments": ""}}),
            );
        }
        let slot = &mut calls[j];
        if let Some(id) = call["id"].as_str() {
            slot["id"] = json!(id);
        }
        if let Some(t) = call["type"].as_str() {
            slot["type"] = json!(t);
        }
        for f in ["name", "arguments"] {
            if let Some(s) = call["function"][f].as_str() {
                let have = slot["function"][f].as_str().unwrap_or("").to_string();
                slot["function"][f] = json!(format!("{have}{s}"));
            }
        }
    }
    Some(())
}

/// An entry as the SSE stream OpenAI would have sent: a first chunk with the role, the
/// content and tool calls, a last chunk with the finish reason, the usage chunk if
/// `include_usage`, then `[DONE]`.
pub fn replay_sse(completion: &Value, include_usage: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let base = |choices: Value| {
        let mut c = json!({"id": completion["id"], "object": "chat.completion.chunk",
            "created": completion["created"], "model": completion["model"], "choices": choices});
        if let Some(fp) = completion
            .get("system_fingerprint")
            .filter(|v| !v.is_null())
        {
            c["system_fingerprint"] = fp.clone();
        }
        c
    };
    let mut event = |v: Value| {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(v.to_string().as_bytes());
        out.extend_from_slice(b"\n\n");
    };
    for c in completion["choices"].as_array().into_iter().flatten() {
        let i = &c["index"];
        let m = &c["message"];
        event(base(
            json!([{"index": i, "delta": {"role": "assistant", "content": ""},
            "logprobs": null, "finish_reason": null}]),
        ));
        let mut delta = Map::new();
        for field in ["content", "reasoning_content", "refusal"] {
            if let Some(s) = m[field].as_str().filter(|s| !s.is_empty()) {
                delta.insert(field.into(), json!(s));
            }
        }
        if let Some(calls) = m["tool_calls"].as_array() {
            let calls: Vec<Value> = calls
                .iter()
                .enumerate()
                .map(|(j, t)| json!({"index": j, "id": t["id"], "type": t["type"], "function": t["function"]}))
                .collect();
            delta.insert("tool_calls".into(), Value::Array(calls));
        }
        if !delta.is_empty() {
            event(base(json!([{"index": i, "delta": delta, "logprobs": null,
                "finish_reason": null}])));
        }
        event(base(json!([{"index": i, "delta": {}, "logprobs": null,
            "finish_reason": c["finish_reason"]}])));
    }
    if include_usage && completion["usage"].is_object() {
        let mut u = base(json!([]));
        u["usage"] = completion["usage"].clone();
        event(u);
    }
    out.extend_from_slice(b"data: [DONE]\n\n");
    out
}

#[cfg(test)]
mod tests;
