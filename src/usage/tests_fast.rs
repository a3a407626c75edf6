//! Property tests of the fast paths: on generated chunks, `usage` objects and
//! response bodies (random key order, whitespace, escapes, unicode, unknown
//! and nested fields, number forms, nulls, missing, repeated and mistyped
//! fields, plus random corruption), whenever the scanner gives a result it
//! must be exactly serde_json's, and it must give one for the common shapes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::json::Bail;
use super::memo::{self, Memo};
use super::tests_gen::{override_text, Gen, XorShift};
use super::*;

/// Estimators in a non-trivial state, so that the order of feeding shows.
fn estimators() -> (TokenEstimator, TokenEstimator) {
    let mut content = TokenEstimator::new();
    content.feed("ab");
    let mut reasoning = TokenEstimator::new();
    reasoning.feed("xyz");
    (content, reasoning)
}

/// Both paths on one chunk: equal whenever the scanner answers. Returns
/// whether it answered.
fn same_chunk(data: &str) -> bool {
    same_chunk_bytes(data.as_bytes())
}

/// [`same_chunk`] for bytes that may not be UTF-8 (the serde_json path gets
/// them lossily decoded, as in the meter). Read twice: with nothing
/// remembered, then with what the first read remembered.
fn same_chunk_bytes(bytes: &[u8]) -> bool {
    let mut memo = Memo::default();
    let answered = same_chunk_memo(bytes, &mut memo);
    assert_eq!(same_chunk_memo(bytes, &mut memo), answered);
    answered
}

/// Both paths on one chunk of a stream, `memo` carried from the previous
/// chunks.
fn same_chunk_memo(bytes: &[u8], memo: &mut Memo) -> bool {
    let data = &*String::from_utf8_lossy(bytes);
    let (mut c1, mut r1) = estimators();
    let (mut c2, mut r2) = estimators();
    let fast = memo::chunk(
        bytes,
        &mut Estimators {
            content: &mut c1,
            reasoning: &mut r1,
        },
        memo,
    );
    let slow = slow::parse_chunk(
        data,
        Estimators {
            content: &mut c2,
            reasoning: &mut r2,
        },
    );
    let Ok(fast) = fast else {
        return false;
    };
    let slow =
        slow.unwrap_or_else(|e| panic!("serde_json refuses ({e}) what the scanner read: {data}"));
    assert_eq!(fast, slow, "{data}");
    assert_eq!((c1, r1), (c2, r2), "{data}");
    if let Some(u) = fast.usage {
        same_usage(u);
    }
    true
}

/// Both paths on one `usage` object; returns whether the scanner answered.
fn same_usage(raw: &str) -> bool {
    let slow = slow::parse_usage(raw);
    assert_eq!(parse_usage(raw), slow, "{raw}");
    match usage_scan::usage(raw.as_bytes()) {
        Ok(fast) => {
            assert_eq!(fast, slow, "{raw}");
            true
        }
        Err(Bail) => false,
    }
}

/// Both paths on one response body; returns whether the scanner answered.
fn same_body(body: &[u8]) -> bool {
    assert_eq!(
        usage_from_json(body),
        slow::usage_from_json(body),
        "{}",
        String::from_utf8_lossy(body)
    );
    matches!(
        usage_scan::body_usage(body, |_, _| Ok(false)),
        Ok(usage_scan::BodyUsage::None | usage_scan::BodyUsage::Parsed(_))
    )
}

#[test]
fn generated_chunks_match_serde_json() {
    let mut answered = 0;
    let mut accepted_by_serde = 0;
    const N: usize = 20_000;
    for seed in 0..N as u64 {
        let mut g = Gen::new(
            0x9E37_79B9_7F4A_7C15 ^ seed.wrapping_mul(0x2545_F491_4F6C_DD1D),
            12,
        );
        g.chunk();
        if same_chunk(&g.out) {
            answered += 1;
        }
        let (mut c, mut r) = estimators();
        let est = Estimators {
            content: &mut c,
            reasoning: &mut r,
        };
        if slow::parse_chunk(&g.out, est).is_ok() {
            accepted_by_serde += 1;
        }
        same_body(g.out.as_bytes());
        // Invalid UTF-8 somewhere (mostly inside strings).
        let mut bytes = g.out.clone().into_bytes();
        let at = g.rng.below(bytes.len() + 1);
        let bad: &[u8] = [&b"\xff"[..], b"\xc3", b"\xe4\xb8", b"\xed\xa0\x80"][g.rng.below(4)];
        bytes.splice(at..at, bad.iter().copied());
        same_chunk_bytes(&bytes);
        same_body(&bytes);
        // Corrupted variants: mostly invalid JSON.
        for _ in 0..2 {
            g.corrupt();
            same_chunk(&g.out);
            same_body(g.out.as_bytes());
        }
    }
    eprintln!("chunks: answered {answered}, serde accepted {accepted_by_serde} of {N}");
    // The scanner answers (nearly) everything serde_json accepts here; the
    // rest are the odd shapes it leaves to serde_json.
    assert!(
        answered * 100 >= accepted_by_serde * 85,
        "scanner answered {answered} of {accepted_by_serde}"
    );
    assert!(accepted_by_serde > N / 3, "{accepted_by_serde}");
}

/// Streams: chunks generated from one seed (so with the same structure)
/// with different texts, read in sequence with the memory carried, as the
/// meter reads them — mostly through the remembered template.
#[test]
fn generated_streams_match_serde_json() {
    let mut from_template = 0;
    for n in 0..4000u64 {
        let seed = 0xA076_1D64_78BD_642F ^ n.wrapping_mul(0xE703_7ED1_A0B4_28DB);
        let mut texts = XorShift(seed ^ 0x8EBC_6AF0_9C88_C6E3);
        let mut memo = Memo::default();
        for step in 0..6 {
            let mut g = Gen::new(seed, 40);
            if step > 0 {
                g.text_override = Some(override_text(&mut texts));
                // Other strings and numbers change too, sometimes.
                if n % 3 == 0 {
                    g.vary = Some(XorShift(texts.next() | 1));
                }
            }
            if n % 2 == 0 {
                g.chunk();
            } else {
                g.stream_chunk();
            }
            if texts.one_in(8) {
                g.corrupt();
            }
            let mut bytes = g.out.into_bytes();
            if texts.one_in(2) {
                for b in bytes.iter_mut().filter(|b| **b == b'~') {
                    *b = 0xff;
                }
            }
            let answered = same_chunk_memo(&bytes, &mut memo);
            // Whatever was remembered, the answer is the one of a fresh read.
            let mut fresh = Memo::default();
            assert_eq!(same_chunk_memo(&bytes, &mut fresh), answered);
        }
        from_template += memo.reused();
    }
    eprintln!("streams: {from_template} chunks read from the template");
    assert!(from_template > 3000, "{from_template}");
}

#[test]
fn generated_usage_objects_match_serde_json() {
    let mut answered = 0;
    let mut usable = 0;
    const N: usize = 20_000;
    for seed in 0..N as u64 {
        let mut g = Gen::new(
            0xD1B5_4A32_D192_ED03 ^ seed.wrapping_mul(0x9E37_79B9_7F4A_7C15),
            15,
        );
        g.ws();
        g.usage();
        g.ws();
        if same_usage(&g.out) {
            answered += 1;
        }
        if slow::parse_usage(&g.out).is_some() {
            usable += 1;
        }
        let body = format!("{{\"id\": \"x\", \"usage\" :{}}}", g.out);
        same_body(body.as_bytes());
        g.corrupt();
        same_usage(&g.out);
    }
    eprintln!("usage: answered {answered}, usable {usable} of {N}");
    assert!(answered * 100 >= usable * 80, "{answered}");
    assert!(usable > N / 2, "{usable}");
}

#[test]
fn hand_written_cases() {
    // (chunk, whether the scanner must answer)
    let cases: &[(&str, bool)] = &[
        (r#"{"choices":[{"delta":{"content":"hi"}}]}"#, true),
        (
            r#" {"choices" : [ { "delta" : { "content" : "h\u00e9\ud83d\ude80\n" } } ] } "#,
            true,
        ),
        (
            r#"{"\u0063hoices":[{"d\u0065lta":{"cont\u0065nt":"x"}}],"us\u0061ge":{"total_tokens":3}}"#,
            true,
        ),
        // `text` before `delta`, tool calls before content: still fed in serde's order.
        (
            r#"{"choices":[{"text":"abc","delta":{"tool_calls":[{"function":{"arguments":"{\"a\":1}"}},{"function":null},{}],"content":"d é"}}]}"#,
            true,
        ),
        // reasoning_content wins over reasoning unless null; a number counts as "".
        (
            r#"{"choices":[{"delta":{"reasoning":"r1","reasoning_content":"r2"}}]}"#,
            true,
        ),
        (
            r#"{"choices":[{"delta":{"reasoning":"r1","reasoning_content":null}}]}"#,
            true,
        ),
        (
            r#"{"choices":[{"delta":{"reasoning":"r1","reasoning_content":5}}]}"#,
            true,
        ),
        (
            r#"{"choices":[{"delta":{"content":[1,{"a":"b"}],"reasoning":true}}]}"#,
            true,
        ),
        // Top-level repeats: the last usage wins, choices are fed twice.
        (
            r#"{"usage":{"prompt_tokens":1},"usage":null,"choices":[{"text":"a"}],"choices":[]}"#,
            true,
        ),
        (
            r#"{"usage":null,"usage":{"prompt_tokens":1,"prompt_tokens_details":{"cached_tokens":1}}}"#,
            true,
        ),
        (r#"{"choices":null,"usage":[1,2,3]}"#, true),
        (r#"{}"#, true),
        (
            r#"{"error":{"message":"overloaded","type":"server_error"}}"#,
            true,
        ),
        (
            r#"{"choices":[{"delta":{"content":"a","content":"b"}}]}"#,
            false,
        ),
        (r#"{"choices":[{"delta":{"content":1e400}}]}"#, false),
        (r#"{"choices":[{"delta":{"content":"\ud800"}}]}"#, false),
        (r#"{"choices":[["delta"]]}"#, false),
        (r#"{"choices":[{"delta":[{"content":"x"}]}]}"#, false),
        (r#"{"choices":5}"#, false),
        (r#"{"choices":[],}"#, false),
        (r#"{"a":01}"#, false),
        ("{\"a\":\"\u{1}\"}", false),
        (r#"[DONE]"#, false),
        (r#"{"a":1} x"#, false),
    ];
    for &(data, answers) in cases {
        assert_eq!(same_chunk(data), answers, "{data}");
    }
    let usages: &[(&str, bool)] = &[
        (
            r#"{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}"#,
            true,
        ),
        (r#"{"total_tokens":8,"prompt_tokens":8}"#, true),
        (
            r#"{"input_tokens":3,"output_tokens":4,"input_tokens_details":{"cached_tokens":1},"output_tokens_details":{"reasoning_tokens":2}}"#,
            true,
        ),
        (
            r#"{"prompt_tokens":null,"completion_tokens":3,"prompt_tokens_details":null}"#,
            true,
        ),
        (r#"{"prompt_tokens":18446744073709551615}"#, true),
        (r#"{}"#, true),
        (r#"{"prompt_tokens":1,"input_tokens":2}"#, false),
        (r#"{"prompt_tokens":18446744073709551616}"#, false),
        (
            r#"{"prompt_tokens":1e30,"completion_tokens":-4,"total_tokens":"12"}"#,
            false,
        ),
        (r#"[1,2,3]"#, false),
    ];
    for &(raw, answers) in usages {
        assert_eq!(same_usage(raw), answers, "{raw}");
    }
    for body in [
        &br#"{"usage":{"prompt_tokens":1},"usage":null}"#[..],
        br#"[{"prompt_tokens":1}]"#,
        b"{\"choices\":[\"\xff\"],\"usage\":{\"prompt_tokens\":2}}",
        b"{\"\xff\":1,\"usage\":{\"prompt_tokens\":2}}",
        b"{\"usage\":{\"prompt_tokens\":2,\"x\":\"\xff\"}}",
        b"{\"usage\":{\"prompt_tokens\":2}} \n",
    ] {
        same_body(body);
    }
}

/// [`TokenEstimator`] as first written, one character at a time: the
/// reference for the run-at-a-time version.
fn reference_tokens(text: &str) -> u64 {
    let (mut whole, mut ascii_run, mut halves) = (0u64, 0u64, 0u64);
    for c in text.chars() {
        if c.is_ascii() {
            ascii_run += 1;
            continue;
        }
        whole += ascii_run.div_ceil(4);
        ascii_run = 0;
        if super::estimate::is_cjk(c) {
            whole += 1;
        } else {
            halves += 1;
        }
    }
    whole + ascii_run.div_ceil(4) + halves.div_ceil(2)
}

#[test]
fn estimator_matches_the_character_rule() {
    let pieces = [
        "a",
        "Hello",
        " world, this is a longer ASCII run",
        "\n",
        "\"",
        "é",
        "ö",
        "世",
        "界",
        "こ",
        "한",
        "🚀",
        "ß",
        "Ж",
        "\u{1100}",
        "\u{10FF}",
        "\u{FFEF}",
        "\u{FFF0}",
        "\u{20000}",
    ];
    let mut rng = XorShift(0x5851_F42D_4C95_7F2D);
    for _ in 0..20_000 {
        let text: String = (0..rng.below(12)).map(|_| rng.pick(&pieces)).collect();
        let at = text
            .char_indices()
            .map(|(i, _)| i)
            .nth(rng.below(text.chars().count() + 1))
            .unwrap_or(text.len());
        let mut e = TokenEstimator::new();
        e.feed(&text[..at]);
        e.feed(&text[at..]);
        assert_eq!(e.tokens(), reference_tokens(&text), "{text:?}");
    }
}
