//! The value types the settings are written with: closed sets of words (`word_enum!`),
//! values with a string form (`text_serde!`), durations in humantime form and secrets.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// A closed set of words: the enum, `ALL`, `as_str`, `from_word`, `Display`.
macro_rules! word_enum {
    ($(#[$m:meta])* pub enum $name:ident { $($(#[$vm:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$vm])* $variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The word as written in the config.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            pub fn from_word(word: &str) -> Option<Self> {
                match word { $($text => Some($name::$variant),)+ _ => None }
            }

            /// Every word, comma-separated, for error messages.
            pub fn words() -> String {
                Self::ALL.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(", ")
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl schemars::JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }

            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({"type": "string", "enum": [$($text),+]})
            }
        }
    };
}
pub(crate) use word_enum;

/// Serde for a type with a string form (`Display` out, `FromStr` in). A plain YAML number is
/// read as its text, as a string field always read it.
macro_rules! text_serde {
    ($name:ty) => {
        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_str($crate::settings::text::ParseVisitor::<$name>::new())
            }
        }
    };
}
pub(crate) use text_serde;

/// Reads a scalar as text (a string, or a number as written) and parses it. Parsing inside
/// the visitor lets the YAML reader name the field and line of a bad value.
pub(crate) struct ParseVisitor<T>(std::marker::PhantomData<T>);

impl<T> ParseVisitor<T> {
    pub(crate) fn new() -> Self {
        ParseVisitor(std::marker::PhantomData)
    }
}

impl<T: std::str::FromStr> serde::de::Visitor<'_> for ParseVisitor<T>
where
    T::Err: fmt::Display,
{
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<T, E> {
        v.parse().map_err(E::custom)
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<T, E> {
        self.visit_str(&v.to_string())
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<T, E> {
        self.visit_str(&v.to_string())
    }
}

/// A duration written in humantime form: `500ms`, `5s`, `2m`, `1h 30m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct HumanDuration(pub std::time::Duration);

impl HumanDuration {
    pub const fn from_secs(secs: u64) -> Self {
        HumanDuration(std::time::Duration::from_secs(secs))
    }

    pub const fn from_millis(ms: u64) -> Self {
        HumanDuration(std::time::Duration::from_millis(ms))
    }
}

impl From<HumanDuration> for std::time::Duration {
    fn from(d: HumanDuration) -> Self {
        d.0
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_zero() {
            return f.write_str("0s");
        }
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl std::str::FromStr for HumanDuration {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        humantime::parse_duration(s)
            .map(HumanDuration)
            .map_err(|e| format!("`{s}` is not a duration: {e}"))
    }
}

text_serde!(HumanDuration);

/// A secret as written: a `${VAR}` reference (the usual form) or a literal. Only the text
/// written in the file is held and serialised; the value of a variable is read when the
/// runtime is built and lives there alone. `Debug` never shows a literal.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(pub String);

impl Secret {
    /// The text as written (`${VAR}` references unexpanded).
    pub fn as_written(&self) -> &str {
        &self.0
    }

    /// Written as a reference to a variable rather than the secret itself.
    pub fn is_reference(&self) -> bool {
        self.0.contains("${")
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Secret(s.to_string())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_reference() {
            write!(f, "Secret({:?})", self.0)
        } else {
            f.write_str("Secret(<literal>)")
        }
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(ParseVisitor::<String>::new()).map(Secret)
    }
}

/// For `skip_serializing_if`: a section left at its default is not written.
pub(crate) fn is_default<T: Default + PartialEq>(t: &T) -> bool {
    *t == T::default()
}

pub(crate) fn is_false(b: &bool) -> bool {
    !*b
}

pub(crate) fn is_true(b: &bool) -> bool {
    *b
}
