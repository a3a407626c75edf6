//! An order-preserving JSON value for the translators.
//!
//! `serde_json::Value` sorts object keys (the crate is built without `preserve_order`), which
//! would reorder JSON Schemas and tool arguments on their way through the gateway. [`Json`]
//! keeps keys in input order (`IndexMap`), keeps numbers as `serde_json::Number` (so values
//! are re-emitted exactly as parsed), and treats `null` like an absent field in the
//! accessors. Parsing goes through `serde_json`, whose recursion limit bounds nesting.

use std::fmt;

use indexmap::IndexMap;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::Number;

/// An object with keys in insertion order.
pub(crate) type Obj = IndexMap<String, Json>;

/// A JSON value; see the module docs.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) enum Json {
    #[default]
    Null,
    Bool(bool),
    Num(Number),
    Str(String),
    Arr(Vec<Json>),
    Obj(Obj),
}

impl Json {
    pub(crate) fn parse(bytes: &[u8]) -> Result<Json, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    pub(crate) fn parse_str(text: &str) -> Result<Json, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// Compact serialisation.
    pub(crate) fn to_vec(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Compact serialisation as a string.
    pub(crate) fn to_json_string(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Field `key` of an object; `None` when absent, `null`, or `self` is not an object.
    pub(crate) fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Obj(m) => m.get(key).filter(|v| !v.is_null()),
            _ => None,
        }
    }

    pub(crate) fn is_null(&self) -> bool {
        matches!(self, Json::Null)
    }

    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Json::Str(s) => Some(s),
            _ => None,
        }
    }

    pub(crate) fn as_array(&self) -> Option<&[Json]> {
        match self {
            Json::Arr(a) => Some(a),
            _ => None,
        }
    }

    pub(crate) fn as_object(&self) -> Option<&Obj> {
        match self {
            Json::Obj(m) => Some(m),
            _ => None,
        }
    }

    pub(crate) fn as_bool(&self) -> Option<bool> {
        match self {
            Json::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub(crate) fn as_f64(&self) -> Option<f64> {
        match self {
            Json::Num(n) => n.as_f64(),
            _ => None,
        }
    }

    /// A non-negative integer (an integral float such as `1024.0` is accepted too).
    pub(crate) fn as_u64(&self) -> Option<u64> {
        match self {
            Json::Num(n) => n.as_u64().or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= u64::MAX as f64)
                    .map(|f| f as u64)
            }),
            _ => None,
        }
    }

    /// A token count, tolerant like the gateway's usage parser: negative numbers are 0,
    /// floats are truncated (saturating), numeric strings are parsed, anything else is 0.
    pub(crate) fn count(&self) -> u64 {
        match self {
            Json::Num(n) => n.as_u64().unwrap_or_else(|| match n.as_f64() {
                Some(f) if f > 0.0 => f as u64,
                _ => 0,
            }),
            Json::Str(s) => s.trim().parse().unwrap_or(0),
            _ => 0,
        }
    }
}

/// `get(key)` as a string.
pub(crate) fn str_field<'a>(v: &'a Json, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Json::as_str)
}

/// `get(key)` as a token count (0 when absent).
pub(crate) fn count_field(v: &Json, key: &str) -> u64 {
    v.get(key).map_or(0, Json::count)
}

impl From<&str> for Json {
    fn from(s: &str) -> Self {
        Json::Str(s.to_owned())
    }
}

impl From<String> for Json {
    fn from(s: String) -> Self {
        Json::Str(s)
    }
}

impl From<&String> for Json {
    fn from(s: &String) -> Self {
        Json::Str(s.clone())
    }
}

impl From<bool> for Json {
    fn from(b: bool) -> Self {
        Json::Bool(b)
    }
}

impl From<u64> for Json {
    fn from(n: u64) -> Self {
        Json::Num(n.into())
    }
}

impl From<usize> for Json {
    fn from(n: usize) -> Self {
        Json::Num((n as u64).into())
    }
}

impl From<f64> for Json {
    fn from(f: f64) -> Self {
        Number::from_f64(f).map_or(Json::Null, Json::Num)
    }
}

impl From<Number> for Json {
    fn from(n: Number) -> Self {
        Json::Num(n)
    }
}

impl From<Vec<Json>> for Json {
    fn from(a: Vec<Json>) -> Self {
        Json::Arr(a)
    }
}

impl From<Obj> for Json {
    fn from(m: Obj) -> Self {
        Json::Obj(m)
    }
}

impl<T: Into<Json>> From<Option<T>> for Json {
    fn from(o: Option<T>) -> Self {
        o.map_or(Json::Null, Into::into)
    }
}

/// Build a [`Json::Obj`] with keys in the order written:
/// `jobj! { "a" => 1u64, "b" => "x" }`.
macro_rules! jobj {
    ($($k:expr => $v:expr),* $(,)?) => {{
        #[allow(unused_mut)]
        let mut m = $crate::translate::json::Obj::new();
        $( m.insert(::std::string::String::from($k), $crate::translate::json::Json::from($v)); )*
        $crate::translate::json::Json::Obj(m)
    }};
}
pub(crate) use jobj;

/// Insert `key` only when `value` is `Some`.
pub(crate) fn put_opt(m: &mut Obj, key: &str, value: Option<impl Into<Json>>) {
    if let Some(v) = value {
        m.insert(key.to_owned(), v.into());
    }
}

impl Serialize for Json {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Json::Null => s.serialize_unit(),
            Json::Bool(b) => s.serialize_bool(*b),
            Json::Num(n) => n.serialize(s),
            Json::Str(v) => s.serialize_str(v),
            Json::Arr(a) => {
                let mut seq = s.serialize_seq(Some(a.len()))?;
                for v in a {
                    seq.serialize_element(v)?;
                }
                seq.end()
            }
            Json::Obj(m) => {
                let mut map = s.serialize_map(Some(m.len()))?;
                for (k, v) in m {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Json;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Json, E> {
                Ok(Json::Null)
            }
            fn visit_none<E: de::Error>(self) -> Result<Json, E> {
                Ok(Json::Null)
            }
            fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Json, D2::Error> {
                Json::deserialize(d)
            }
            fn visit_bool<E: de::Error>(self, b: bool) -> Result<Json, E> {
                Ok(Json::Bool(b))
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Json, E> {
                Ok(Json::Num(n.into()))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Json, E> {
                Ok(Json::Num(n.into()))
            }
            fn visit_f64<E: de::Error>(self, f: f64) -> Result<Json, E> {
                Ok(Number::from_f64(f).map_or(Json::Null, Json::Num))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Json, E> {
                Ok(Json::Str(s.to_owned()))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<Json, E> {
                Ok(Json::Str(s))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
                while let Some(v) = seq.next_element()? {
                    out.push(v);
                }
                Ok(Json::Arr(out))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
                let mut out = Obj::with_capacity(map.size_hint().unwrap_or(0).min(1024));
                while let Some((k, v)) = map.next_entry::<String, Json>()? {
                    // Last duplicate wins, as with serde_json::Value, at the first position.
                    out.insert(k, v);
                }
                Ok(Json::Obj(out))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_key_order_and_numbers() {
        let text = r#"{"z":1,"a":{"y":2.50,"b":[1e3,-0,18446744073709551615,-5]},"m":null}"#;
        let v = Json::parse(text.as_bytes()).unwrap();
        assert_eq!(
            v.to_json_string(),
            r#"{"z":1,"a":{"y":2.5,"b":[1000.0,-0.0,18446744073709551615,-5]},"m":null}"#
        );
        assert!(v.get("m").is_none());
        assert_eq!(v.get("z").and_then(Json::as_u64), Some(1));
    }

    #[test]
    fn counts_are_tolerant() {
        for (text, want) in [
            ("5", 5),
            ("-3", 0),
            ("2.9", 2),
            ("1e30", u64::MAX),
            ("\" 7 \"", 7),
            ("\"x\"", 0),
            ("true", 0),
        ] {
            assert_eq!(
                Json::parse(text.as_bytes()).unwrap().count(),
                want,
                "{text}"
            );
        }
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let deep = "[".repeat(100_000);
        assert!(Json::parse(deep.as_bytes()).is_err());
    }
}
