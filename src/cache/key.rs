//! The exact cache's key: a digest of the route, the scope and the request body in
//! canonical form (object keys sorted, strings and numbers written one way, no
//! insignificant whitespace), without the top level's `stream` and `stream_options`. Keys
//! shared through Redis are BLAKE3 digests; keys kept in one gateway's memory are a keyed
//! hash under the process's secret when the text is short ([`Hashing`], `super::keyed`).
//!
//! The canonical text is written in one pass over the body on the usage meter's scanner
//! (`crate::usage::json`), without a JSON tree: members are written as they are read, and
//! an object whose keys did not come sorted is put in order at its end (a stable sort, so
//! repeated keys keep their order and still count). Reordering moves bytes already written,
//! so the moves are bounded (twice the body, plus 4 KiB): past that, as on anything the
//! scanner does not model exactly (an escaped key, an integer beyond 64 bits, `-0`, a
//! fraction of more than 15 digits or a far exponent, nesting past 48 levels, invalid JSON),
//! the body is parsed into a serde_json tree and written from it (linear in the body; a
//! repeated key keeps only its last value there). BLAKE3 rather than SHA-256: as
//! collision-resistant, and several times cheaper where the CPU has no SHA instructions.

use super::keyed::KEYED;
use super::long;
use crate::body::Utf8;
use crate::usage::json::{Bail, Cursor, Scan};
use smallvec::SmallVec;
use std::borrow::Cow;

/// A key: the digest itself (32 bytes, hashed and compared as they are in memory; see
/// [`Hashing`]),
/// written as hex where it leaves the process (Redis).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key(pub [u8; 32]);

impl Key {
    /// The 64 hex digits.
    pub fn hex(&self) -> String {
        blake3::Hash::from_bytes(self.0).to_hex().to_string()
    }

    /// From its 64 hex digits (the inverse of [`Key::hex`], for the tests: nothing reads a
    /// key back).
    #[cfg(test)]
    pub fn from_hex(hex: &str) -> Option<Key> {
        blake3::Hash::from_hex(hex).ok().map(|h| Key(*h.as_bytes()))
    }
}

/// How a key's text is hashed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hashing {
    /// BLAKE3: the same key in every gateway, for entries shared through Redis.
    Shared,
    /// For entries in this gateway's memory only: a text of at most [`KEYED_UP_TO`] bytes
    /// by a keyed PRF of 128 bits under a secret drawn from the OS when the process starts
    /// (AES-CMAC where the CPU has AES instructions, else SipHash-2-4: `super::keyed`;
    /// without the secret nobody can compute a key, let alone make two requests collide;
    /// several times cheaper than BLAKE3 on a short text, which costs BLAKE3 a whole
    /// compression per 64 bytes), a longer one by BLAKE3 (whose SIMD is faster on long
    /// texts). Without OS randomness, BLAKE3 throughout.
    Local,
}

/// The longest text `Hashing::Local` hashes with its keyed hash.
pub const KEYED_UP_TO: usize = 4096;

/// The key of `text` (route, scope and canonical body) by `hashing`.
fn digest(hashing: Hashing, text: &[u8]) -> Key {
    match (hashing, KEYED.as_ref()) {
        (Hashing::Local, Some(keyed)) if text.len() <= KEYED_UP_TO => Key(keyed.key(text)),
        _ => Key(*blake3::hash(text).as_bytes()),
    }
}

/// The key of a request body on `route` in `scope`; `None` when the body is not a JSON
/// object.
pub fn key(hashing: Hashing, route: &str, scope: &str, body: Utf8<'_>) -> Option<Key> {
    key_in(hashing, route, scope, "", body)
}

/// [`key()`] of a request in another protocol than OpenAI's chat completions: `dialect`
/// names it (`"anthropic"`, with what else of the request changes its answer), so that the
/// same JSON sent to two protocols' endpoints (where it means different things) has two
/// keys. Route, scope and dialect are each written after their length: no two triples of
/// names write the same text, whatever bytes the names hold.
pub fn key_in(
    hashing: Hashing,
    route: &str,
    scope: &str,
    dialect: &str,
    body: Utf8<'_>,
) -> Option<Key> {
    let body = body.bytes();
    // Hashed in one piece: route, scope, then the canonical text, written into this
    // thread's buffer (no allocation per request once it has grown to the bodies seen).
    TEXT.with(|cell| {
        let mut text = cell.take();
        text.clear();
        // The text is about as long as the body (long strings shorter); reordering within
        // the buffer (`Writer::object`) grows it as it needs, and the thread keeps the room.
        text.reserve(route.len() + scope.len() + dialect.len() + body.len() + 88);
        for part in [route, scope, dialect] {
            let len = u64::try_from(part.len()).unwrap_or(u64::MAX);
            text.extend_from_slice(&len.to_le_bytes());
            text.extend_from_slice(part.as_bytes());
        }
        let key = canonical(scope, body, &mut text).map(|()| digest(hashing, &text));
        if text.capacity() <= MAX_KEPT_TEXT {
            cell.set(text);
        }
        key
    })
}

/// [`key()`] of bytes not yet known to be UTF-8 (`None` when they are not).
#[cfg(any(test, feature = "fuzzing"))]
pub fn key_bytes(hashing: Hashing, route: &str, scope: &str, body: &[u8]) -> Option<Key> {
    key(hashing, route, scope, Utf8::check(body)?)
}

/// The largest key buffer a thread keeps between requests.
const MAX_KEPT_TEXT: usize = 64 << 10;

thread_local! {
    /// The key's canonical text, reused by the requests this thread serves.
    static TEXT: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Append the canonical text of a request body to `text`; `None` when the body is not one
/// JSON object.
fn canonical(scope: &str, body: &[u8], text: &mut Vec<u8>) -> Option<()> {
    let from = text.len();
    if fast(scope, body, text).is_ok() {
        return Some(());
    }
    text.truncate(from);
    by_tree(scope, body, text)
}

/// The fast path: the canonical text, or [`Bail`]. `body` is UTF-8 (the caller's
/// [`Utf8`]), so every string and key within is too (a quote cannot fall inside a
/// character).
fn fast(scope: &str, body: &[u8], out: &mut Vec<u8>) -> Scan<()> {
    let mut c = Cursor::new(body);
    let mut w = Writer {
        scope: scope.as_bytes(),
        out,
        moves_left: body.len().saturating_mul(2).saturating_add(4096),
        members: SmallVec::new(),
    };
    w.object(&mut c, true, 0)?;
    c.end()
}

/// The slow path: serde_json's tree, written with sorted keys.
fn by_tree(scope: &str, body: &[u8], out: &mut Vec<u8>) -> Option<()> {
    let mut v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let members = v.as_object_mut()?;
    members.remove("stream");
    members.remove("stream_options");
    super::canonical_bytes(&v, out, Some(scope.as_bytes()));
    Some(())
}

/// A JSON string or number written the one way serde_json writes it.
fn write<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, v: &T) {
    // Writing to a Vec cannot fail; a float is never NaN or infinite in parsed JSON.
    let _ = serde_json::to_writer(out, v);
}

/// Deepest nesting the fast path follows.
const MAX_DEPTH: u32 = 48;

/// The fast path's output, and how many more bytes its reordering may move.
struct Writer<'o, 'b> {
    /// The request's cache scope: long strings are remembered per scope (`super::long`).
    scope: &'o [u8],
    out: &'o mut Vec<u8>,
    moves_left: usize,
    /// The open objects' members, innermost last: each key and where its `"key":value`
    /// is, from the object's start (one stack for every level, on the call's stack until
    /// it holds more than a small request's).
    members: SmallVec<[(&'b [u8], usize, usize); 16]>,
}

impl<'b> Writer<'_, 'b> {
    /// The value at the cursor.
    fn value(&mut self, c: &mut Cursor<'b>, depth: u32) -> Scan<()> {
        let b = c.bytes();
        match c.ws() {
            Some(b'"') => {
                let from = self.out.len();
                let s = c.string()?;
                if s.escaped {
                    // Decoded and written again the one way (the literal with its quotes).
                    let literal = b.get(s.start.saturating_sub(1)..s.end + 1).ok_or(Bail)?;
                    let text: Cow<'_, str> = serde_json::from_slice(literal).map_err(|_| Bail)?;
                    write(self.out, text.as_ref());
                } else {
                    // Without escapes a string is written as it came, quotes and all (the
                    // body is UTF-8: `fast` checked it whole).
                    let literal = b.get(s.start.saturating_sub(1)..s.end + 1).ok_or(Bail)?;
                    self.out.extend_from_slice(literal);
                }
                if self.out.len() - from >= long::LONG {
                    long::shorten(self.scope, self.out, from);
                }
            }
            Some(b'{') => self.object(c, false, depth + 1)?,
            Some(b'[') => {
                if depth + 1 > MAX_DEPTH {
                    return Err(Bail);
                }
                self.out.push(b'[');
                let mut first = true;
                c.elements(|c| {
                    if !first {
                        self.out.push(b',');
                    }
                    first = false;
                    self.value(c, depth + 1)
                })?;
                self.out.push(b']');
            }
            Some(b'-' | b'0'..=b'9') => number(c, self.out)?,
            Some(b't' | b'f' | b'n') => {
                // A literal is written as it came.
                let from = c.pos();
                c.skip_value()?;
                self.out
                    .extend_from_slice(b.get(from..c.pos()).ok_or(Bail)?);
            }
            _ => return Err(Bail),
        }
        Ok(())
    }

    /// The object at the cursor, its members in key order.
    fn object(&mut self, c: &mut Cursor<'b>, top: bool, depth: u32) -> Scan<()> {
        if depth > MAX_DEPTH {
            return Err(Bail);
        }
        let start = self.out.len();
        self.out.push(b'{');
        // This object's members are `self.members[base..]`.
        let base = self.members.len();
        let mut sorted = true;
        c.members(|c, k| {
            if k.escaped() {
                return Err(Bail);
            }
            if top && (k.raw == b"stream" || k.raw == b"stream_options") {
                return c.skip_value();
            }
            if self.members.len() > base {
                if let Some((last, ..)) = self.members.last() {
                    sorted &= in_order(last, k.raw);
                }
                self.out.push(b',');
            }
            let from = self.out.len() - start;
            self.out.push(b'"');
            self.out.extend_from_slice(k.raw);
            self.out.extend_from_slice(b"\":");
            self.value(c, depth)?;
            self.members.push((k.raw, from, self.out.len() - start));
            Ok(())
        })?;
        if !sorted {
            // Put in order: the members move twice (copied past the end, then back in key
            // order); the budget counts each object once, so the bytes moved stay within
            // twice the budget.
            let len = self.out.len() - start;
            self.moves_left = self.moves_left.checked_sub(len).ok_or(Bail)?;
            let copy = self.out.len();
            self.out.extend_from_within(start..);
            let members = self.members.get_mut(base..).ok_or(Bail)?;
            if let [a, b] = members {
                // Two members, out of order (the commonest case: `role` before `content`).
                std::mem::swap(a, b);
            } else {
                members.sort_by(|a, b| a.0.cmp(b.0));
            }
            // The same members and commas: the sorted text is exactly as long.
            let mut at = start + 1;
            for (i, (_, from, to)) in members.iter().enumerate() {
                if i > 0 {
                    *self.out.get_mut(at).ok_or(Bail)? = b',';
                    at += 1;
                }
                if from > to || copy + to > self.out.len() {
                    return Err(Bail);
                }
                self.out.copy_within(copy + from..copy + to, at);
                at += to - from;
            }
            self.out.truncate(copy);
        }
        self.members.truncate(base);
        self.out.push(b'}');
        Ok(())
    }
}

/// Whether key `a` may come before key `b` (bytewise, as `[u8]`'s order, which is
/// `String`'s, serde_json's map's): a byte at a time, without a call, for short keys that
/// differ early.
#[inline]
fn in_order(a: &[u8], b: &[u8]) -> bool {
    match a.iter().zip(b).find(|(x, y)| x != y) {
        Some((x, y)) => x < y,
        None => a.len() <= b.len(),
    }
}

/// A number as serde_json writes the value it reads: an integer of 64 bits as it came, any
/// other number as the shortest text of the `f64` serde_json reads.
fn number(c: &mut Cursor<'_>, out: &mut Vec<u8>) -> Scan<()> {
    let from = c.pos();
    let n = c.number()?;
    let text = c.bytes().get(from..c.pos()).ok_or(Bail)?;
    let text = std::str::from_utf8(text).map_err(|_| Bail)?;
    if n.frac_digits == 0 && !n.exponent {
        // `-0` reads as the float -0.0; beyond 64 bits as a float: serde_json decides.
        if text == "-0" || (text.parse::<u64>().is_err() && text.parse::<i64>().is_err()) {
            return Err(Bail);
        }
        out.extend_from_slice(text.as_bytes());
        return Ok(());
    }
    // With at most 15 digits and a decimal exponent within ±22, serde_json's reading (one
    // multiplication or division by an exact power of ten) and Rust's correctly rounded one
    // agree; past that serde_json decides.
    let exp: i64 = match text.find(['e', 'E']) {
        Some(at) => text
            .get(at + 1..)
            .and_then(|e| e.parse().ok())
            .ok_or(Bail)?,
        None => 0,
    };
    let digits = n.int.len() + n.frac_digits;
    let scale = exp - i64::try_from(n.frac_digits).map_err(|_| Bail)?;
    if digits > 15 || !(-22..=22).contains(&scale) {
        return Err(Bail);
    }
    let f: f64 = text.parse().map_err(|_| Bail)?;
    write(out, &f);
    Ok(())
}

/// The canonical text of `body` by the fast path (`None`: it bailed) and from serde_json's
/// tree (`None`: not one JSON object): they must agree whenever the fast path decides and no
/// object repeats a key (the unit tests and the `cache_json` fuzz target).
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn both_paths(body: &[u8]) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
    let (mut f, mut t) = (Vec::new(), Vec::new());
    let decided = Utf8::check(body).is_some() && fast("s", body, &mut f).is_ok();
    let read = by_tree("s", body, &mut t).is_some();
    (decided.then_some(f), read.then_some(t))
}

/// Whether some object of the JSON text repeats a key (a tree keeps only the last).
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn repeats_a_key(input: &[u8]) -> bool {
    struct Probe;
    impl<'de> serde::Deserialize<'de> for Probe {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(ProbeVisitor).map(|()| Probe)
        }
    }
    struct ProbeVisitor;
    impl<'de> serde::de::Visitor<'de> for ProbeVisitor {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("JSON")
        }
        fn visit_bool<E>(self, _: bool) -> Result<(), E> {
            Ok(())
        }
        fn visit_i64<E>(self, _: i64) -> Result<(), E> {
            Ok(())
        }
        fn visit_u64<E>(self, _: u64) -> Result<(), E> {
            Ok(())
        }
        fn visit_f64<E>(self, _: f64) -> Result<(), E> {
            Ok(())
        }
        fn visit_str<E>(self, _: &str) -> Result<(), E> {
            Ok(())
        }
        fn visit_unit<E>(self) -> Result<(), E> {
            Ok(())
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut s: A) -> Result<(), A::Error> {
            while s.next_element::<Probe>()?.is_some() {}
            Ok(())
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<(), A::Error> {
            let mut seen = std::collections::HashSet::new();
            while let Some(k) = m.next_key::<String>()? {
                if !seen.insert(k) {
                    return Err(serde::de::Error::custom("repeated key"));
                }
                m.next_value::<Probe>()?;
            }
            Ok(())
        }
    }
    serde_json::from_slice::<Probe>(input).is_err()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(body: &str) -> String {
        let mut out = b"prefix".to_vec();
        canonical("s", body.as_bytes(), &mut out).unwrap();
        String::from_utf8(out.split_off(6)).unwrap()
    }

    const BODIES: [&str; 6] = [
        r#" { "z": [ {"b": 1, "a": "\u0041\n"}, [], {} ], "a": 1.50, "m": null,
            "stream": true, "stream_options": {"include_usage": true}, "k": -0, "t": false,
            "\u0062": 1e2, "q": {"y": {"d": 2, "c": [true]}, "x": "é"} } "#,
        r#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"hi \"there\""}]}],"temperature":0.7,"seed":42,"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object","properties":{"b":{},"a":{}}}}}]}"#,
        r#"{"émoji":"😀","a\"b":1,"a":[1,-2,3.25e-3,18446744073709551615,-9223372036854775808]}"#,
        r#"{"stream":false,"top_p":0.95,"messages":[{"content":"Hello, how are you today?","role":"user"}],"model":"gpt-4o","max_tokens":100,"temperature":1.0,"n":1,"stop":["\n"],"logit_bias":{"50256":-100},"user":"u"}"#,
        r#"{"b":0,"a":2,"a":1,"c":[1E+2,0.1,-1.5e-7,12345678901234567890,-12,0,123.456e2,[[[]]],{"z":{"y":{}}}],"d":true}"#,
        r#"{"x":{"stream":1},"big":[18446744073709551616,-9223372036854775809]}"#,
    ];

    #[test]
    fn the_canonical_text_sorts_keys_at_every_level_and_writes_values_one_way() {
        assert_eq!(
            text(BODIES[0]),
            r#"{"a":1.5,"b":100.0,"k":-0.0,"m":null,"q":{"x":"é","y":{"c":[true],"d":2}},"t":false,"z":[{"a":"A\n","b":1},[],{}]}"#
        );
        // `stream` is left out at the top only.
        assert_eq!(text(r#"{"x":{"stream":1}}"#), r#"{"x":{"stream":1}}"#);
        // Repeated keys keep their order (a stable sort): both count.
        assert_eq!(text(r#"{"b":0,"a":2,"a":1}"#), r#"{"a":2,"a":1,"b":0}"#);
        assert_ne!(
            key_bytes(Hashing::Shared, "r", "s", br#"{"a":1,"a":2}"#),
            key_bytes(Hashing::Shared, "r", "s", br#"{"a":2,"a":1}"#)
        );
    }

    #[test]
    fn the_text_matches_a_json_tree_written_with_sorted_keys() {
        // The same canonical form as serde_json's tree (a BTreeMap: sorted keys), for
        // bodies without repeated keys.
        for b in [BODIES[1], BODIES[2], BODIES[3], BODIES[5]] {
            let mut tree: serde_json::Value = serde_json::from_str(b).unwrap();
            for k in ["stream", "stream_options"] {
                tree.as_object_mut().unwrap().remove(k);
            }
            assert_eq!(text(b), tree.to_string(), "{b}");
        }
    }

    #[test]
    fn the_fast_path_writes_what_serde_writes_at_every_truncation_and_change() {
        let mut decided = 0;
        for body in BODIES {
            let a = body.as_bytes();
            let mut cases: Vec<Vec<u8>> = (0..=a.len())
                .filter_map(|e| a.get(..e))
                .map(<[u8]>::to_vec)
                .collect();
            for at in 0..a.len() {
                for b in *b" \"}]0n,:\\.e-" {
                    let mut v = a.to_vec();
                    v[at] = b;
                    cases.push(v);
                }
            }
            for case in cases {
                let (fast, slow) = both_paths(&case);
                if let (Some(text), false) = (fast, repeats_a_key(&case)) {
                    decided += 1;
                    assert_eq!(Some(text), slow, "{:?}", String::from_utf8_lossy(&case));
                }
            }
        }
        assert!(decided > 150, "the fast path decided only {decided} cases");
        // The common request takes the fast path.
        assert!(both_paths(BODIES[3].as_bytes()).0.is_some());
    }

    #[test]
    fn keys_are_ordered_as_byte_strings() {
        let keys: [&[u8]; 7] = [b"", b"a", b"ab", b"b", b"role", b"content", b"\xc3\xa9"];
        for a in keys {
            for b in keys {
                assert_eq!(in_order(a, b), a <= b, "{a:?} {b:?}");
            }
        }
    }

    #[test]
    fn reordering_is_bounded_then_the_tree_decides() {
        // Every level's keys out of order, each level with a string just short of a token:
        // putting each level in order would move every level inside it again.
        let text = format!("\"{}\"", "x".repeat(long::LONG - 10));
        let (mut unsorted, mut sorted) = (text.clone(), text.clone());
        for _ in 0..40 {
            unsorted = format!("{{\"b\":{unsorted},\"a\":{text}}}");
            sorted = format!("{{\"a\":{text},\"b\":{sorted}}}");
        }
        let (fast, tree) = both_paths(unsorted.as_bytes());
        assert!(fast.is_none(), "past its budget the fast path bails");
        assert!(
            both_paths(sorted.as_bytes()).0.is_some(),
            "sorted keys move nothing"
        );
        assert_eq!(tree, both_paths(sorted.as_bytes()).1);
        assert_eq!(
            key_bytes(Hashing::Shared, "r", "s", unsorted.as_bytes()),
            key_bytes(Hashing::Shared, "r", "s", sorted.as_bytes())
        );
    }

    #[test]
    fn anything_but_one_json_object_has_no_key() {
        for bad in [
            &b"[1]"[..],
            b"1",
            b"\"x\"",
            b"{",
            b"{}{}",
            b"{\"a\":}",
            b"",
            b"{\"a\":1,}",
            b"{\"a\":\"\xff\"}",
        ] {
            assert!(
                key_bytes(Hashing::Shared, "r", "s", bad).is_none(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(key_bytes(Hashing::Shared, "r", "s", b" {} ").is_some());
        let deep = format!("{}1{}", "{\"a\":".repeat(200), "}".repeat(200));
        assert!(
            key_bytes(Hashing::Shared, "r", "s", deep.as_bytes()).is_none(),
            "too deep"
        );
        let deep = format!("{{\"a\":{}1{}}}", "[".repeat(100), "]".repeat(100));
        assert!(
            key_bytes(Hashing::Shared, "r", "s", deep.as_bytes()).is_some(),
            "deep, within serde_json's limit"
        );
    }

    #[test]
    fn long_strings_are_tokens_alike_on_both_paths() {
        let prompt = "You are a careful assistant. ".repeat(60);
        let escaped = format!("{}\\n\\u00e9 end", "Line one.\\n".repeat(120));
        let bodies = [
            format!(
                r#"{{"model":"m","messages":[{{"role":"system","content":"{prompt}"}},{{"role":"user","content":"hi"}}]}}"#
            ),
            format!(
                r#"{{"messages":[{{"content":"{escaped}","role":"user"}}],"model":"m","stream":true}}"#
            ),
            format!(r#"{{"tools":[{{"d":"{prompt}","a":"{escaped}"}}],"model":"m"}}"#),
        ];
        for body in &bodies {
            let (fast, slow) = both_paths(body.as_bytes());
            let fast = fast.expect("the fast path decides");
            assert_eq!(Some(&fast), slow.as_ref(), "{body}");
            assert!(fast.contains(&long::TOKEN), "a token in {body}");
            // Remembered or not, the same key; and with the spaces a client might add.
            let k = key_bytes(Hashing::Shared, "r", "s", body.as_bytes());
            assert_eq!(k, key_bytes(Hashing::Shared, "r", "s", body.as_bytes()));
            let v: serde_json::Value = serde_json::from_str(body).unwrap();
            let pretty = serde_json::to_string_pretty(&v).unwrap();
            assert_eq!(
                k,
                key_bytes(Hashing::Shared, "r", "s", pretty.as_bytes()),
                "{body}"
            );
        }
        // One character of a long string changes the key.
        let a = &bodies[0];
        let b = a.replacen("careful", "carefree", 1);
        assert_ne!(
            key_bytes(Hashing::Shared, "r", "s", a.as_bytes()),
            key_bytes(Hashing::Shared, "r", "s", b.as_bytes())
        );
        // A short string is written as it is, never as a token.
        assert!(!text(BODIES[3]).as_bytes().contains(&long::TOKEN));
    }
}
