//! The fast path for token counts: a `usage` object ([`usage`]) and the raw
//! `usage` value of a whole response body ([`body_usage`]), read with the
//! scanner of [`super::json`].
//!
//! Like every fast path here, each gives exactly the result of its
//! serde_json counterpart in [`super::slow`] or returns [`Bail`] and the
//! caller runs that counterpart. Counts that are not plain non-negative
//! integers (floats, negatives, strings, beyond `u64`), a repeated field or
//! an alias given with its name (serde's derive fails on those), a `usage`
//! that is not an object, all bail.

use super::json::{once_value, Bail, Cursor, Key, Scan};
use super::Usage;

/// A `usage` object; see [`super::slow::parse_usage`].
pub(super) fn usage(raw: &[u8]) -> Scan<Option<Usage>> {
    let mut c = Cursor::new(raw);
    let usage = usage_at(&mut c)?;
    c.end()?;
    Ok(usage)
}

/// The `usage` object at the cursor.
fn usage_at(c: &mut Cursor<'_>) -> Scan<Option<Usage>> {
    let (mut prompt, mut completion, mut total) = (None, None, None);
    let (mut prompt_details, mut completion_details) = (None, None);
    c.members(|c, key| {
        if key.is(b"prompt_tokens") || key.is(b"input_tokens") {
            once_value(&mut prompt, c.count()?)
        } else if key.is(b"completion_tokens") || key.is(b"output_tokens") {
            once_value(&mut completion, c.count()?)
        } else if key.is(b"total_tokens") {
            once_value(&mut total, c.count()?)
        } else if key.is(b"prompt_tokens_details") || key.is(b"input_tokens_details") {
            once_value(&mut prompt_details, details(c)?)
        } else if key.is(b"completion_tokens_details") || key.is(b"output_tokens_details") {
            once_value(&mut completion_details, details(c)?)
        } else {
            c.skip_value()
        }
    })?;
    let (prompt, completion, total) = (prompt.flatten(), completion.flatten(), total.flatten());
    if prompt.is_none() && completion.is_none() && total.is_none() {
        return Ok(None);
    }
    let input =
        prompt.unwrap_or_else(|| total.unwrap_or(0).saturating_sub(completion.unwrap_or(0)));
    let output = completion.unwrap_or_else(|| total.unwrap_or(0).saturating_sub(input));
    let detail = |d: Option<Option<Details>>, pick: fn(&Details) -> Option<u64>| {
        d.flatten().as_ref().and_then(pick).unwrap_or(0)
    };
    Ok(Some(Usage {
        input_tokens: input,
        output_tokens: output,
        cached_input_tokens: detail(prompt_details, |d| d.cached.flatten()),
        cache_write_tokens: 0,
        reasoning_tokens: detail(completion_details, |d| d.reasoning.flatten()),
        estimated: false,
        units: crate::usage::Units::NONE,
    }))
}

/// A `*_tokens_details` object (`None` for null).
struct Details {
    cached: Option<Option<u64>>,
    reasoning: Option<Option<u64>>,
}

fn details(c: &mut Cursor<'_>) -> Scan<Option<Details>> {
    if c.null()? {
        return Ok(None);
    }
    let mut d = Details {
        cached: None,
        reasoning: None,
    };
    c.members(|c, key| {
        if key.is(b"cached_tokens") {
            once_value(&mut d.cached, c.count()?)
        } else if key.is(b"reasoning_tokens") {
            once_value(&mut d.reasoning, c.count()?)
        } else {
            c.skip_value()
        }
    })?;
    Ok(Some(d))
}

/// The `usage` of a whole response body.
pub(super) enum BodyUsage<'a> {
    /// Absent or null.
    None,
    /// Read here.
    Parsed(Option<Usage>),
    /// A raw value [`usage`] bailed on.
    Raw(&'a str),
}

/// The `usage` of a whole response body; see
/// [`super::slow::usage_from_json`]. Keys, and the `usage` value, are
/// checked to be UTF-8 like serde_json does (string values it skips are
/// not). `other` is handed every other top-level member first: `Ok(true)`
/// when it read the value, `Ok(false)` to have it skipped.
pub(super) fn body_usage<'a>(
    body: &'a [u8],
    mut other: impl FnMut(&mut Cursor<'a>, &Key<'a>) -> Scan<bool>,
) -> Scan<BodyUsage<'a>> {
    let mut c = Cursor::new(body);
    let mut usage = None;
    c.members(|c, key| {
        if !key.raw.is_ascii() && std::str::from_utf8(key.raw).is_err() {
            return Err(Bail);
        }
        if !key.is(b"usage") {
            return if other(c, &key)? {
                Ok(())
            } else {
                c.skip_value()
            };
        }
        let found = if c.null()? {
            BodyUsage::None
        } else {
            let start = c.pos();
            let mut probe = c.clone();
            let parsed = match usage_at(&mut probe) {
                Ok(u) => {
                    *c = probe;
                    Some(u)
                }
                Err(Bail) => {
                    c.skip_value()?;
                    None
                }
            };
            let raw = body.get(start..c.pos()).ok_or(Bail)?;
            let raw = std::str::from_utf8(raw).map_err(|_| Bail)?;
            match parsed {
                Some(u) => BodyUsage::Parsed(u),
                None => BodyUsage::Raw(raw),
            }
        };
        once_value(&mut usage, found)
    })?;
    c.end()?;
    Ok(usage.unwrap_or(BodyUsage::None))
}
