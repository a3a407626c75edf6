//! The exact cache's key: a BLAKE3 digest of the route, the scope and the request body in
//! canonical form (object keys sorted, strings and numbers written one way, no
//! insignificant whitespace), without the top level's `stream` and `stream_options`.
//!
//! The canonical text is written in one pass over the body, without a JSON tree: each
//! object's values are written as they are read and put in key order at the object's end
//! (a stable sort, so repeated keys keep their order and still count). The pass runs on
//! the usage meter's scanner (`crate::usage::json`), which bails on what it does not model
//! exactly (an escaped key, an integer beyond 64 bits, `-0`, a fraction of more than 15
//! digits or a far exponent, nesting past 48 levels, invalid JSON); serde_json then writes the same text through a visitor (nesting bounded
//! at 128 levels). BLAKE3 rather than SHA-256: as collision-resistant, and several times
//! cheaper where the CPU has no SHA instructions.

use crate::usage::json::{Bail, Cursor, Scan};
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use std::borrow::Cow;
use std::fmt;

/// The key of a request body on `route` in `scope`; `None` when the body is not a JSON
/// object.
pub fn key(route: &str, scope: &str, body: &[u8]) -> Option<String> {
    // Hashed in one piece: route, scope, then the canonical text.
    let mut text = Vec::with_capacity(route.len() + scope.len() + body.len() + 18);
    for part in [route.as_bytes(), b"\0", scope.as_bytes(), b"\0"] {
        text.extend_from_slice(part);
    }
    canonical(body, &mut text)?;
    Some(blake3::hash(&text).to_hex().to_string())
}

/// Append the canonical text of a request body to `text`; `None` when the body is not one
/// JSON object.
fn canonical(body: &[u8], text: &mut Vec<u8>) -> Option<()> {
    let from = text.len();
    let mut c = Cursor::new(body);
    let fast = object(&mut c, text, true, 0).and_then(|()| c.end());
    if fast.is_ok() {
        return Some(());
    }
    text.truncate(from);
    let mut de = serde_json::Deserializer::from_slice(body);
    de.deserialize_map(Canonical {
        out: text,
        top: true,
    })
    .ok()?;
    de.end().ok()
}

/// Deepest nesting the fast path follows.
const MAX_DEPTH: u32 = 48;

/// The fast path: the value at the cursor, in canonical form.
fn value(c: &mut Cursor<'_>, out: &mut Vec<u8>, depth: u32) -> Scan<()> {
    let b = c.bytes();
    match c.ws() {
        Some(b'"') => {
            let s = c.string()?;
            if s.escaped {
                // Decoded and written again the one way (the literal with its quotes).
                let literal = b.get(s.start.saturating_sub(1)..s.end + 1).ok_or(Bail)?;
                let text: Cow<'_, str> = serde_json::from_slice(literal).map_err(|_| Bail)?;
                write(out, text.as_ref());
                return Ok(());
            }
            // Without escapes, and valid UTF-8, a string is written as it came.
            let text = b.get(s.start..s.end).ok_or(Bail)?;
            if !text.is_ascii() && std::str::from_utf8(text).is_err() {
                return Err(Bail);
            }
            out.push(b'"');
            out.extend_from_slice(text);
            out.push(b'"');
        }
        Some(b'{') => object(c, out, false, depth + 1)?,
        Some(b'[') => {
            if depth + 1 > MAX_DEPTH {
                return Err(Bail);
            }
            out.push(b'[');
            let mut first = true;
            c.elements(|c| {
                if !first {
                    out.push(b',');
                }
                first = false;
                value(c, out, depth + 1)
            })?;
            out.push(b']');
        }
        Some(b'-' | b'0'..=b'9') => number(c, out)?,
        Some(b't' | b'f' | b'n') => {
            // A literal is written as it came.
            let from = c.pos();
            c.skip_value()?;
            out.extend_from_slice(b.get(from..c.pos()).ok_or(Bail)?);
        }
        _ => return Err(Bail),
    }
    Ok(())
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

/// The fast path: the object at the cursor, its members in key order.
fn object(c: &mut Cursor<'_>, out: &mut Vec<u8>, top: bool, depth: u32) -> Scan<()> {
    if depth > MAX_DEPTH {
        return Err(Bail);
    }
    let start = out.len();
    let mut fields: Vec<(&[u8], usize, usize)> = Vec::new();
    c.members(|c, k| {
        if k.escaped() || (!k.raw.is_ascii() && std::str::from_utf8(k.raw).is_err()) {
            return Err(Bail);
        }
        if top && (k.raw == b"stream" || k.raw == b"stream_options") {
            return c.skip_value();
        }
        let from = out.len();
        value(c, out, depth)?;
        fields.push((k.raw, from - start, out.len() - start));
        Ok(())
    })?;
    fields.sort_by(|a, b| a.0.cmp(b.0));
    let values = out.split_off(start);
    out.push(b'{');
    for (i, (k, from, to)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'"');
        out.extend_from_slice(k);
        out.extend_from_slice(b"\":");
        out.extend_from_slice(values.get(*from..*to).ok_or(Bail)?);
    }
    out.push(b'}');
    Ok(())
}

/// Writes the value it reads to `out` in canonical form (`top`: the request object, whose
/// `stream` and `stream_options` are left out).
struct Canonical<'o> {
    out: &'o mut Vec<u8>,
    top: bool,
}

impl<'de> DeserializeSeed<'de> for Canonical<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

/// A JSON string or number written the one way serde_json writes it.
fn write<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, v: &T) {
    // Writing to a Vec cannot fail; a float is never NaN or infinite in parsed JSON.
    let _ = serde_json::to_writer(out, v);
}

impl<'de> Visitor<'de> for Canonical<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(if self.top { "a JSON object" } else { "JSON" })
    }

    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        self.out
            .extend_from_slice(if v { b"true" } else { b"false" });
        Ok(())
    }

    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        write(self.out, &v);
        Ok(())
    }

    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        write(self.out, &v);
        Ok(())
    }

    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        write(self.out, &v);
        Ok(())
    }

    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        write(self.out, v);
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        self.out.extend_from_slice(b"null");
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.out.push(b'[');
        let mut first = true;
        loop {
            let at = self.out.len();
            if !first {
                self.out.push(b',');
            }
            let next = Canonical {
                out: self.out,
                top: false,
            };
            if seq.next_element_seed(next)?.is_none() {
                self.out.truncate(at);
                break;
            }
            first = false;
        }
        self.out.push(b']');
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        // The values are written from `start` as they come; `fields` says where each is.
        let start = self.out.len();
        let mut fields: Vec<(Cow<'de, str>, usize, usize)> = Vec::new();
        while let Some(k) = map.next_key_seed(Key)? {
            if self.top && (k == "stream" || k == "stream_options") {
                map.next_value::<serde::de::IgnoredAny>()?;
                continue;
            }
            let from = self.out.len();
            map.next_value_seed(Canonical {
                out: self.out,
                top: false,
            })?;
            fields.push((k, from - start, self.out.len() - start));
        }
        fields.sort_by(|a, b| a.0.cmp(&b.0));
        let values = self.out.split_off(start);
        self.out.push(b'{');
        for (i, (k, from, to)) in fields.iter().enumerate() {
            if i > 0 {
                self.out.push(b',');
            }
            write(self.out, k.as_ref());
            self.out.push(b':');
            self.out.extend_from_slice(&values[*from..*to]);
        }
        self.out.push(b'}');
        Ok(())
    }
}

/// An object's key, borrowed from the body when it has no escapes.
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_string()))
    }
}

/// The canonical text of `body` by the fast path (`None`: it bailed) and by serde_json
/// (`None`: not one JSON object): the fast path must agree whenever it decides (the unit
/// tests and the `cache_json` fuzz target).
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn both_paths(body: &[u8]) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
    let mut fast = Vec::new();
    let mut c = Cursor::new(body);
    let decided = object(&mut c, &mut fast, true, 0).and_then(|()| c.end());
    let mut slow = Vec::new();
    let mut de = serde_json::Deserializer::from_slice(body);
    let read = de
        .deserialize_map(Canonical {
            out: &mut slow,
            top: true,
        })
        .and_then(|()| de.end());
    (decided.ok().map(|()| fast), read.ok().map(|()| slow))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(body: &str) -> String {
        let mut out = b"prefix".to_vec();
        canonical(body.as_bytes(), &mut out).unwrap();
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
            key("r", "s", br#"{"a":1,"a":2}"#),
            key("r", "s", br#"{"a":2,"a":1}"#)
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
                if let Some(text) = fast {
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
                key("r", "s", bad).is_none(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(key("r", "s", b" {} ").is_some());
        let deep = format!("{}1{}", "{\"a\":".repeat(200), "}".repeat(200));
        assert!(key("r", "s", deep.as_bytes()).is_none(), "too deep");
        let deep = format!("{{\"a\":{}1{}}}", "[".repeat(100), "]".repeat(100));
        assert!(
            key("r", "s", deep.as_bytes()).is_some(),
            "deep, within serde_json's limit"
        );
    }
}
