//! Test helpers shared by the translator tests: JSON and SSE comparison ignoring generated
//! fields, re-chunking checks for stream translators, and a deterministic fuzz loop.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;

use super::StreamTranslator;
use crate::sse::SseParser;
use crate::usage::Usage;

pub(crate) fn value(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(bytes)))
}

/// The value without its top-level `created` (a generated timestamp).
pub(crate) fn without_created(mut v: Value) -> Value {
    if let Value::Object(m) = &mut v {
        m.remove("created");
    }
    v
}

/// `actual` and `expected` are the same JSON, `created` aside.
pub(crate) fn assert_json(actual: &[u8], expected: &str) {
    let a = without_created(value(actual));
    let e = without_created(value(expected.as_bytes()));
    assert_eq!(
        a,
        e,
        "\nactual:   {}\nexpected: {}",
        serde_json::to_string(&a).unwrap(),
        serde_json::to_string(&e).unwrap()
    );
}

/// The events of a complete SSE body as (event name, data as JSON — `"[DONE]"` as a string),
/// `created` removed.
pub(crate) fn sse_values(bytes: &[u8]) -> Vec<(Option<String>, Value)> {
    let mut p = SseParser::new();
    let mut evs = Vec::new();
    p.push(bytes, |e| evs.push(e));
    let rest = p.finish(|e| evs.push(e));
    assert!(rest.is_empty(), "unterminated event: {rest:?}");
    evs.into_iter()
        .map(|e| {
            let data = if e.data == "[DONE]" {
                Value::String("[DONE]".into())
            } else {
                without_created(value(e.data.as_bytes()))
            };
            (e.event, data)
        })
        .collect()
}

/// Same events, in order, `created` aside.
pub(crate) fn assert_sse(actual: &[u8], expected: &str) {
    let a = sse_values(actual);
    let e = sse_values(expected.as_bytes());
    for (i, (x, y)) in a.iter().zip(&e).enumerate() {
        assert_eq!(x, y, "event {i}");
    }
    assert_eq!(
        a.len(),
        e.len(),
        "event count; actual:\n{}",
        String::from_utf8_lossy(actual)
    );
}

/// Push `chunks` then finish; all output.
pub(crate) fn run(t: &mut dyn StreamTranslator, chunks: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for c in chunks {
        out.extend(t.push(c));
    }
    out.extend(t.finish());
    out
}

pub(crate) type Make<'a> = &'a dyn Fn() -> Box<dyn StreamTranslator>;

/// The whole input in one chunk, split in two at every position, byte by byte and in
/// random pieces: identical output, usage and first-content flag. Returns the output and
/// usage.
pub(crate) fn check_rechunking(make: Make<'_>, input: &[u8]) -> (Vec<u8>, Usage) {
    rechunking(make, input, true)
}

/// Like [`check_rechunking`] without the split at every position (for variants of an input
/// already checked in full).
pub(crate) fn check_rechunking_light(make: Make<'_>, input: &[u8]) -> (Vec<u8>, Usage) {
    rechunking(make, input, false)
}

fn rechunking(make: Make<'_>, input: &[u8], every_split: bool) -> (Vec<u8>, Usage) {
    let mut t = make();
    let whole = run(&mut *t, &[input]);
    let usage = t.usage();
    let first = t.first_content_seen();
    let check = |t: &dyn StreamTranslator, out: &[u8], how: &str| {
        assert!(
            out == whole.as_slice(),
            "{how}: output differs\n got: {}\nwant: {}",
            String::from_utf8_lossy(out),
            String::from_utf8_lossy(&whole)
        );
        assert_eq!(t.usage(), usage, "{how}: usage");
        assert_eq!(t.first_content_seen(), first, "{how}: first content");
    };
    let splits = if every_split { input.len() + 1 } else { 0 };
    for i in 0..splits {
        let mut t = make();
        let out = run(&mut *t, &[&input[..i], &input[i..]]);
        check(&*t, &out, &format!("split at {i}"));
    }
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    let mut t = make();
    let out = run(&mut *t, &bytes);
    check(&*t, &out, "byte by byte");
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    for round in 0..200 {
        let mut chunks = Vec::new();
        let mut at = 0;
        while at < input.len() {
            let end = (at + 1 + rng.below(40)).min(input.len());
            chunks.push(&input[at..end]);
            at = end;
        }
        let mut t = make();
        let out = run(&mut *t, &chunks);
        check(&*t, &out, &format!("random chunking {round}"));
    }
    (whole, usage)
}

/// The text with every line end made `\r\n`.
pub(crate) fn crlf(text: &str) -> Vec<u8> {
    text.replace("\r\n", "\n")
        .replace('\n', "\r\n")
        .into_bytes()
}

pub(crate) use crate::fuzzing::XorShift;

/// Call `f` on every prefix of every input and on deterministic random mutations of it
/// (byte replaced, removed or a JSON-ish byte inserted). `f` must not panic.
pub(crate) fn fuzz(inputs: &[&[u8]], f: &dyn Fn(&[u8])) {
    let mut rng = XorShift(0x2545_F491_4F6C_DD1D);
    for input in inputs {
        for i in 0..=input.len() {
            f(&input[..i]);
        }
        for _ in 0..100 {
            let mut v = input.to_vec();
            for _ in 0..1 + rng.below(4) {
                if v.is_empty() {
                    break;
                }
                let pos = rng.below(v.len());
                match rng.below(3) {
                    0 => v[pos] = rng.next() as u8,
                    1 => {
                        v.remove(pos);
                    }
                    _ => v.insert(pos, b"{}[]\",:\\0n-"[rng.below(11)]),
                }
            }
            f(&v);
        }
    }
}

/// Run a stream translator over `input` cut in two at `cut`; must not panic.
pub(crate) fn stream_no_panic(make: Make<'_>, input: &[u8]) {
    let mut t = make();
    let cut = input.len() / 2;
    let _ = run(&mut *t, &[&input[..cut], &input[cut..]]);
    let _ = t.usage();
}
