//! The serde_json paths: the reference semantics of usage extraction, and
//! the fallback of the fast paths in [`super::fast`] whenever they bail. Also
//! [`remove_usage_key`], used only for the rare chunk that carries both
//! content and the usage the gateway strips.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use super::estimate::TokenEstimator;
use super::{ChunkSummary, Estimators, Usage};

/// A token count that tolerates non-integer JSON: negative numbers become 0,
/// floats are truncated (saturating at `u64::MAX`), numeric strings are
/// parsed (0 if unparsable).
struct Count(u64);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Count;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a token count")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Count, E> {
                Ok(Count(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Count, E> {
                Ok(Count(u64::try_from(v).unwrap_or(0)))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Count, E> {
                // `as` saturates; NaN and negatives become 0.
                Ok(Count(if v > 0.0 { v as u64 } else { 0 }))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Count, E> {
                Ok(Count(v.trim().parse().unwrap_or(0)))
            }
        }
        d.deserialize_any(V)
    }
}

fn count(c: &Option<Count>) -> Option<u64> {
    c.as_ref().map(|c| c.0)
}

#[derive(Deserialize)]
struct UsageDetails {
    #[serde(default)]
    cached_tokens: Option<Count>,
    #[serde(default)]
    reasoning_tokens: Option<Count>,
}

/// OpenAI `usage` object; the Responses API names are accepted as aliases.
#[derive(Deserialize)]
struct UsageView {
    #[serde(default, alias = "input_tokens")]
    prompt_tokens: Option<Count>,
    #[serde(default, alias = "output_tokens")]
    completion_tokens: Option<Count>,
    #[serde(default)]
    total_tokens: Option<Count>,
    #[serde(default, alias = "input_tokens_details")]
    prompt_tokens_details: Option<UsageDetails>,
    #[serde(default, alias = "output_tokens_details")]
    completion_tokens_details: Option<UsageDetails>,
}

/// Parse a `usage` object. `None` unless it has at least one of
/// `prompt_tokens`, `completion_tokens`, `total_tokens`.
pub(super) fn parse_usage(raw: &str) -> Option<Usage> {
    let u: UsageView = serde_json::from_str(raw).ok()?;
    let prompt = count(&u.prompt_tokens);
    let completion = count(&u.completion_tokens);
    let total = count(&u.total_tokens);
    if prompt.is_none() && completion.is_none() && total.is_none() {
        return None;
    }
    let input =
        prompt.unwrap_or_else(|| total.unwrap_or(0).saturating_sub(completion.unwrap_or(0)));
    // Embeddings report only prompt_tokens + total_tokens: output is 0.
    let output = completion.unwrap_or_else(|| total.unwrap_or(0).saturating_sub(input));
    let detail = |d: &Option<UsageDetails>, pick: fn(&UsageDetails) -> &Option<Count>| {
        d.as_ref().and_then(|d| count(pick(d))).unwrap_or(0)
    };
    Some(Usage {
        input_tokens: input,
        output_tokens: output,
        cached_input_tokens: detail(&u.prompt_tokens_details, |d| &d.cached_tokens),
        cache_write_tokens: 0,
        reasoning_tokens: detail(&u.completion_tokens_details, |d| &d.reasoning_tokens),
        estimated: false,
        units: crate::usage::Units::NONE,
    })
}

/// [`super::usage_from_json`] with serde_json.
pub(super) fn usage_from_json(body: &[u8]) -> Option<Usage> {
    #[derive(Deserialize)]
    struct Body<'a> {
        #[serde(borrow, default)]
        usage: Option<&'a RawValue>,
    }
    let body: Body<'_> = serde_json::from_slice(body).ok()?;
    parse_usage(body.usage?.get())
}

/// A string field that may also be null or of another type (ignored).
struct Text<'a>(Option<Cow<'a, str>>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Text<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Text<'a>, E> {
                Ok(Text(Some(Cow::Borrowed(v))))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text<'a>, E> {
                Ok(Text(Some(Cow::Owned(v.to_owned()))))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Text<'a>, E> {
                Ok(Text(Some(Cow::Owned(v))))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Text<'a>, E> {
                Ok(Text(None))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Text<'a>, E> {
                Ok(Text(None))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Text<'a>, E> {
                Ok(Text(None))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Text<'a>, E> {
                Ok(Text(None))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Text<'a>, E> {
                Ok(Text(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Text<'a>, A::Error> {
                while s.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Text(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Text<'a>, A::Error> {
                while m.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Text(None))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

impl Text<'_> {
    fn get(&self) -> &str {
        self.0.as_deref().unwrap_or_default()
    }
}

#[derive(Deserialize)]
struct FunctionView<'a> {
    #[serde(borrow, default)]
    arguments: Option<Text<'a>>,
}

#[derive(Deserialize)]
struct ToolCallView<'a> {
    #[serde(borrow, default)]
    function: Option<FunctionView<'a>>,
}

#[derive(Deserialize)]
struct DeltaView<'a> {
    #[serde(borrow, default)]
    content: Option<Text<'a>>,
    #[serde(borrow, default)]
    reasoning_content: Option<Text<'a>>,
    /// OpenRouter-style name; used only when `reasoning_content` is absent.
    #[serde(borrow, default)]
    reasoning: Option<Text<'a>>,
    #[serde(borrow, default)]
    tool_calls: Option<Vec<ToolCallView<'a>>>,
}

#[derive(Deserialize)]
struct ChoiceView<'a> {
    #[serde(borrow, default)]
    delta: Option<DeltaView<'a>>,
    /// Legacy completions.
    #[serde(borrow, default)]
    text: Option<Text<'a>>,
}

fn text_of<'t>(t: &'t Option<Text<'_>>) -> &'t str {
    t.as_ref().map(Text::get).unwrap_or_default()
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
enum TopField {
    Choices,
    Usage,
    #[serde(other)]
    Other,
}

struct ChoicesSeed<'s, 'e>(&'s mut Estimators<'e>);

impl<'de> DeserializeSeed<'de> for ChoicesSeed<'_, '_> {
    /// (number of choices, any text)
    type Value = (usize, bool);
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ChoicesSeed<'_, '_> {
    type Value = (usize, bool);
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of choices")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok((0, false))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut n = 0usize;
        let mut any_text = false;
        while let Some(choice) = seq.next_element::<ChoiceView<'de>>()? {
            n = n.saturating_add(1);
            let mut feed = |est: &mut TokenEstimator, s: &str| {
                if !s.is_empty() {
                    est.feed(s);
                    any_text = true;
                }
            };
            if let Some(delta) = &choice.delta {
                let reasoning = match &delta.reasoning_content {
                    Some(r) => r.get(),
                    None => text_of(&delta.reasoning),
                };
                feed(self.0.reasoning, reasoning);
                feed(self.0.content, text_of(&delta.content));
                for call in delta.tool_calls.iter().flatten() {
                    if let Some(func) = &call.function {
                        feed(self.0.content, text_of(&func.arguments));
                    }
                }
            }
            feed(self.0.content, text_of(&choice.text));
        }
        Ok((n, any_text))
    }
}

struct ChunkSeed<'e>(Estimators<'e>);

impl<'de> Visitor<'de> for ChunkSeed<'_> {
    type Value = ChunkSummary<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut s = ChunkSummary::default();
        while let Some(key) = map.next_key::<TopField>()? {
            match key {
                TopField::Choices => {
                    let (n, text) = map.next_value_seed(ChoicesSeed(&mut self.0))?;
                    s.has_choices = n > 0;
                    s.has_text |= text;
                }
                TopField::Usage => {
                    s.usage = map
                        .next_value::<Option<&'de RawValue>>()?
                        .map(RawValue::get)
                }
                TopField::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(s)
    }
}

/// Summary of one chunk's JSON (an object), feeding the estimators.
pub(super) fn parse_chunk<'a>(
    data: &'a str,
    est: Estimators<'_>,
) -> serde_json::Result<ChunkSummary<'a>> {
    let mut de = serde_json::Deserializer::from_str(data);
    let summary = de.deserialize_map(ChunkSeed(est))?;
    de.end()?;
    Ok(summary)
}

/// A JSON object key, borrowed when it has no escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Key<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Key<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'a>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'a>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V(std::marker::PhantomData))
    }
}

/// A top-level JSON object as an ordered list of (key, raw value).
struct OrderedObject<'a>(Vec<(Key<'a>, &'a RawValue)>);

impl<'de> Deserialize<'de> for OrderedObject<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OrderedObject<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(entry) = map.next_entry::<Key<'de>, &'de RawValue>()? {
                    entries.push(entry);
                }
                Ok(OrderedObject(entries))
            }
        }
        d.deserialize_map(V)
    }
}

/// `data` (a JSON object) with every top-level `usage` key removed; other
/// keys and their raw values are kept byte for byte and in order (only the
/// whitespace between top-level tokens is dropped, and escaped keys are
/// re-escaped canonically).
pub(super) fn remove_usage_key(data: &str) -> Option<Vec<u8>> {
    let obj: OrderedObject<'_> = serde_json::from_str(data).ok()?;
    let mut out = Vec::with_capacity(data.len());
    out.push(b'{');
    let mut first = true;
    for (key, value) in &obj.0 {
        if key.0 == "usage" {
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        serde_json::to_writer(&mut out, &*key.0).ok()?;
        out.push(b':');
        out.extend_from_slice(value.get().as_bytes());
    }
    out.push(b'}');
    Some(out)
}
