//! Whether a whole (non-streamed) answer may be kept, read off its bytes without a JSON tree:
//! a `chat.completion` whose every choice finished well, and whether it calls tools.
//!
//! A fast path on the usage meter's scanner (`crate::usage::json`) reads only what the
//! check needs and skips the rest; on anything it does not model exactly (a repeated field,
//! an escaped string, a value of an unexpected kind, invalid JSON) it bails, and serde_json
//! decides, as it always did. Both give the same answer (tested at every truncation and on
//! generated variations); neither checks the UTF-8 of strings they skip, which the caller
//! does when it keeps the text.

use crate::usage::json::{once_value, Bail, Cursor, Key, Scan};
use crate::usage::{usage_from_json_with, Usage};
use serde::Deserialize;

/// A whole answer's bytes: `Some(calls tools)` when it is a `chat.completion` that may be
/// kept (every choice finished well).
pub fn keepable_whole(bytes: &[u8], store_truncated: bool) -> Option<bool> {
    match scan(bytes, store_truncated) {
        Ok(kept) => kept,
        Err(Bail) => by_serde(bytes, store_truncated),
    }
}

/// The fast path's answer (`None`: it bailed) and serde_json's: they must agree whenever the
/// fast path decides and the bytes are UTF-8 (the unit tests and the `cache_json` fuzz
/// target).
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn both_paths(
    bytes: &[u8],
    store_truncated: bool,
) -> (Option<Option<bool>>, Option<bool>) {
    (
        scan(bytes, store_truncated).ok(),
        by_serde(bytes, store_truncated),
    )
}

/// A choice's `finish_reason` that lets its answer be kept.
pub(super) fn finished_well(reason: Option<&str>, store_truncated: bool) -> bool {
    match reason {
        Some("stop" | "tool_calls" | "function_call") => true,
        Some("length") => store_truncated,
        _ => false,
    }
}

/// The fast path: [`by_serde`]'s answer, or [`Bail`].
fn scan(bytes: &[u8], store_truncated: bool) -> Scan<Option<bool>> {
    let mut c = Cursor::new(bytes);
    let mut check = Check::new(store_truncated);
    c.members(|c, key| {
        if check.member(c, &key)? {
            Ok(())
        } else {
            c.skip_value()
        }
    })?;
    c.end()?;
    Ok(check.verdict())
}

/// A whole answer's usage (`usage::usage_from_json`) and [`keepable_whole`]'s verdict, read
/// in one pass over the bytes where the scanner decides both.
pub fn usage_and_keepable(bytes: &[u8], store_truncated: bool) -> (Option<Usage>, Option<bool>) {
    let mut check = Check::new(store_truncated);
    let (usage, scanned) = usage_from_json_with(bytes, |c, key| check.member(c, key));
    let keep = if scanned {
        check.verdict()
    } else {
        by_serde(bytes, store_truncated)
    };
    (usage, keep)
}

/// What the fast path gathers from an answer's top-level members.
struct Check {
    store_truncated: bool,
    /// `object` is `chat.completion`.
    object: Option<bool>,
    /// [`scan_choices`]'s answer.
    choices: Option<Option<(bool, bool)>>,
}

impl Check {
    fn new(store_truncated: bool) -> Self {
        Check {
            store_truncated,
            object: None,
            choices: None,
        }
    }

    /// Read the member's value if the check needs it (`Ok(false)`: not read).
    fn member<'a>(&mut self, c: &mut Cursor<'a>, key: &Key<'a>) -> Scan<bool> {
        if key.is(b"object") {
            let o = !c.null()? && plain_string(c)? == b"chat.completion";
            once_value(&mut self.object, o)?;
        } else if key.is(b"choices") {
            let choices = scan_choices(c, self.store_truncated)?;
            once_value(&mut self.choices, choices)?;
        } else {
            return Ok(false);
        }
        Ok(true)
    }

    /// `Some(calls tools)` when the answer may be kept.
    fn verdict(&self) -> Option<bool> {
        match (self.object, self.choices) {
            (Some(true), Some(Some((finished, tools)))) => finished.then_some(tools),
            _ => None,
        }
    }
}

/// `choices`: `Some((every one finished well, any calls tools))`, `None` when empty.
fn scan_choices(c: &mut Cursor<'_>, store_truncated: bool) -> Scan<Option<(bool, bool)>> {
    let (mut finished, mut tools) = (true, false);
    let n = c.elements(|c| {
        let (reason, calls) = scan_choice(c)?;
        finished &= finished_well(reason, store_truncated);
        tools |= calls;
        Ok(())
    })?;
    Ok((n > 0).then_some((finished, tools)))
}

/// One choice: its `finish_reason` and whether its message calls tools.
fn scan_choice<'a>(c: &mut Cursor<'a>) -> Scan<(Option<&'a str>, bool)> {
    let (mut reason, mut calls) = (None, None);
    c.members(|c, key| {
        if key.is(b"finish_reason") {
            let r = if c.null()? {
                None
            } else {
                Some(std::str::from_utf8(plain_string(c)?).map_err(|_| Bail)?)
            };
            once_value(&mut reason, r)
        } else if key.is(b"message") {
            once_value(&mut calls, scan_message(c)?)
        } else {
            c.skip_value()
        }
    })?;
    Ok((reason.flatten(), calls.unwrap_or(false)))
}

/// A message object: whether it calls tools (`tool_calls` not empty, or `function_call`).
fn scan_message(c: &mut Cursor<'_>) -> Scan<bool> {
    let (mut tool_calls, mut function_call) = (None, None);
    c.members(|c, key| {
        if key.is(b"tool_calls") {
            let calls = !c.null()? && c.elements(Cursor::skip_value)? > 0;
            once_value(&mut tool_calls, calls)
        } else if key.is(b"function_call") {
            let call = !c.null()?;
            if call {
                c.skip_value()?;
            }
            once_value(&mut function_call, call)
        } else {
            c.skip_value()
        }
    })?;
    Ok(tool_calls.unwrap_or(false) || function_call.unwrap_or(false))
}

/// A string value without escapes, as written.
fn plain_string<'a>(c: &mut Cursor<'a>) -> Scan<&'a [u8]> {
    let s = c.string()?;
    if s.escaped {
        return Err(Bail);
    }
    c.bytes().get(s.start..s.end).ok_or(Bail)
}

/// A whole `chat.completion` as keeping it needs to see it (borrowed, nothing else parsed).
#[derive(Deserialize)]
struct Whole<'a> {
    #[serde(borrow, default)]
    object: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    choices: Vec<WholeChoice<'a>>,
}

#[derive(Deserialize)]
struct WholeChoice<'a> {
    #[serde(borrow, default)]
    finish_reason: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    message: WholeMessage,
}

#[derive(Deserialize, Default)]
struct WholeMessage {
    #[serde(default)]
    tool_calls: Option<Vec<serde::de::IgnoredAny>>,
    #[serde(default)]
    function_call: Option<serde::de::IgnoredAny>,
}

/// The slow path: serde_json reads the fields into [`Whole`], skipping the rest.
fn by_serde(bytes: &[u8], store_truncated: bool) -> Option<bool> {
    let w: Whole<'_> = serde_json::from_slice(bytes).ok()?;
    if w.object.as_deref() != Some("chat.completion") || w.choices.is_empty() {
        return None;
    }
    let finished = w
        .choices
        .iter()
        .all(|c| finished_well(c.finish_reason.as_deref(), store_truncated));
    let tools = w.choices.iter().any(|c| {
        c.message.tool_calls.as_ref().is_some_and(|t| !t.is_empty())
            || c.message.function_call.is_some()
    });
    finished.then_some(tools)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Answers of many shapes: kept or not, with tools or not, and the unusual forms the
    /// fast path leaves to serde_json.
    const ANSWERS: [&str; 15] = [
        r#"{"id":"x","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hi \"there\"\n","tool_calls":null,"refusal":null},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}"#,
        r#"{"object":"chat.completion","choices":[{"message":{"tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}}]},"finish_reason":"tool_calls"}]}"#,
        r#"{"object":"chat.completion","choices":[{"message":{},"finish_reason":"length"}]}"#,
        r#"{"object":"chat.completion","choices":[{"message":{"function_call":{"name":"f"}},"finish_reason":"function_call"},{"message":{"content":"b"},"finish_reason":"stop"}]}"#,
        r#"{"object":"chat.completion","choices":[{"message":{"tool_calls":[]},"finish_reason":"stop"},{"finish_reason":null}]}"#,
        r#" { "choices" : [ { "finish_reason" : "stop" , "message" : { "content" : "é😀" } } ] , "object" : "chat.completion" } "#,
        r#"{"object":"chat.completion","choices":[]}"#,
        r#"{"object":"error","choices":[{"finish_reason":"stop"}]}"#,
        r#"{"object":null,"choices":null}"#,
        r#"{"object":"chat.completion","object":"chat.completion","choices":[{"finish_reason":"stop"}]}"#,
        r#"{"object":"chat.\u0063ompletion","choices":[{"finish_reason":"st\u006fp"}]}"#,
        r#"{"object":"chat.completion","choices":[{"finish_reason":"stop","message":null}]}"#,
        r#"{"object":"chat.completion","choices":[{"finish_reason":5,"message":{"tool_calls":{}}}]}"#,
        r#"{"object":"chat.completion","choices":[{"message":{"function_call":null},"finish_reason":"content_filter"}],"x":[1,2.5e3,true,false,null,{"y":[]}]}"#,
        r#"{"usage":{"prompt_tokens":7,"completion_tokens":3,"prompt_tokens_details":{"cached_tokens":2}},"choices":[{"finish_reason":"stop","message":{"content":"x"}}],"object":"chat.completion"}"#,
    ];

    /// Every truncation of each answer, and each with one byte replaced at every position.
    fn variations() -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for answer in ANSWERS {
            let a = answer.as_bytes();
            for end in 0..=a.len() {
                out.extend(a.get(..end).map(<[u8]>::to_vec));
            }
            for at in 0..a.len() {
                for b in *b" \"}]0n,:\\" {
                    let mut v = a.to_vec();
                    v[at] = b;
                    out.push(v);
                }
            }
        }
        out
    }

    #[test]
    fn the_fast_path_agrees_with_serde_at_every_truncation_and_change() {
        let mut decided = 0;
        for bytes in variations() {
            if std::str::from_utf8(&bytes).is_err() {
                continue;
            }
            for store_truncated in [false, true] {
                let (fast, slow) = both_paths(&bytes, store_truncated);
                if let Some(fast) = fast {
                    decided += 1;
                    assert_eq!(fast, slow, "{:?}", String::from_utf8_lossy(&bytes));
                }
                assert_eq!(keepable_whole(&bytes, store_truncated), slow);
            }
        }
        assert!(decided > 1000, "the fast path decided only {decided} cases");
    }

    /// The usage meter's pass reads the usage and the verdict the two separate reads give.
    #[test]
    fn one_pass_gives_the_usage_and_the_verdict() {
        for bytes in variations() {
            if std::str::from_utf8(&bytes).is_err() {
                continue;
            }
            for store_truncated in [false, true] {
                assert_eq!(
                    usage_and_keepable(&bytes, store_truncated),
                    (
                        crate::usage::usage_from_json(&bytes),
                        keepable_whole(&bytes, store_truncated)
                    ),
                    "{:?}",
                    String::from_utf8_lossy(&bytes)
                );
            }
        }
    }

    #[test]
    fn whole_answers_kept_or_not() {
        let [ok, tools, cut, two, _, spaced, empty, error, nulls, twice, escaped, ..] = ANSWERS;
        let fast = |a: &str, t: bool| scan(a.as_bytes(), t);
        assert_eq!(fast(ok, false), Ok(Some(false)));
        assert_eq!(fast(tools, false), Ok(Some(true)));
        assert_eq!(fast(cut, false), Ok(None));
        assert_eq!(fast(cut, true), Ok(Some(false)));
        assert_eq!(fast(two, false), Ok(Some(true)));
        assert_eq!(fast(spaced, false), Ok(Some(false)));
        for not_kept in [empty, error, nulls] {
            assert_eq!(
                keepable_whole(not_kept.as_bytes(), true),
                None,
                "{not_kept}"
            );
        }
        // Left to serde_json: a repeated field (refused), escapes (decoded).
        assert_eq!(fast(twice, false), Err(Bail));
        assert_eq!(keepable_whole(twice.as_bytes(), false), None);
        assert_eq!(fast(escaped, false), Err(Bail));
        assert_eq!(keepable_whole(escaped.as_bytes(), false), Some(false));
    }
}
