//! Tests of the stream meter, usage extraction and estimation (moved
//! unchanged from the single-file module).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::sse::{SseEvent, SseParser};
use bytes::Bytes;

const CHAT_EVENTS: &[&str] = &[
    r#"data: {"id":"chatcmpl-AbC123","object":"chat.completion.chunk","created":1727000000,"model":"gpt-4o-2024-08-06","system_fingerprint":"fp_5f20662549","choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}],"usage":null}"#,
    r#"data: {"id":"chatcmpl-AbC123","object":"chat.completion.chunk","created":1727000000,"model":"gpt-4o-2024-08-06","system_fingerprint":"fp_5f20662549","choices":[{"index":0,"delta":{"content":"Hello"},"logprobs":null,"finish_reason":null}],"usage":null}"#,
    r#"data: {"id":"chatcmpl-AbC123","object":"chat.completion.chunk","created":1727000000,"model":"gpt-4o-2024-08-06","system_fingerprint":"fp_5f20662549","choices":[{"index":0,"delta":{"content":" wörld"},"logprobs":null,"finish_reason":null}],"usage":null}"#,
    r#"data: {"id":"chatcmpl-AbC123","object":"chat.completion.chunk","created":1727000000,"model":"gpt-4o-2024-08-06","system_fingerprint":"fp_5f20662549","choices":[{"index":0,"delta":{"content":", 世界"},"logprobs":null,"finish_reason":null}],"usage":null}"#,
    r#"data: {"id":"chatcmpl-AbC123","object":"chat.completion.chunk","created":1727000000,"model":"gpt-4o-2024-08-06","system_fingerprint":"fp_5f20662549","choices":[{"index":0,"delta":{"content":" 🚀\n\"caf\u00e9\""},"logprobs":null,"finish_reason":null}],"usage":null}"#,
    r#"data: {"id":"chatcmpl-AbC123","object":"chat.completion.chunk","created":1727000000,"model":"gpt-4o-2024-08-06","system_fingerprint":"fp_5f20662549","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],"usage":null}"#,
    r#"data: {"id":"chatcmpl-AbC123","object":"chat.completion.chunk","created":1727000000,"model":"gpt-4o-2024-08-06","system_fingerprint":"fp_5f20662549","choices":[],"usage":{"prompt_tokens":25,"completion_tokens":12,"total_tokens":37,"prompt_tokens_details":{"cached_tokens":8,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":3,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}}"#,
    "data: [DONE]",
];
const USAGE_EVENT: usize = 6;
const CONTENT: &str = "Hello wörld, 世界 🚀\n\"café\"";
const REPORTED: Usage = Usage {
    input_tokens: 25,
    output_tokens: 12,
    cached_input_tokens: 8,
    cache_write_tokens: 0,
    reasoning_tokens: 3,
    estimated: false,
    units: crate::usage::Units::NONE,
};

fn build(events: &[&str], skip: Option<usize>, eol: &str) -> Vec<u8> {
    let mut s = String::new();
    for (i, e) in events.iter().enumerate() {
        if Some(i) != skip {
            s.push_str(e);
            s.push_str(eol);
            s.push_str(eol);
        }
    }
    s.into_bytes()
}

struct Run {
    out: Vec<u8>,
    usage: Usage,
    saw_done: bool,
    first: bool,
    events: u64,
}

fn run(strip: bool, chunks: &[&[u8]]) -> Run {
    let mut m = StreamMeter::new(strip);
    let mut out = Vec::new();
    for c in chunks {
        let input = Bytes::copy_from_slice(c);
        let got = m.feed(input.clone());
        if !strip {
            assert_eq!(got.as_ptr(), input.as_ptr(), "pass-through must not copy");
            assert_eq!(got.len(), input.len());
        }
        out.extend_from_slice(&got);
    }
    out.extend_from_slice(&m.finish());
    Run {
        out,
        usage: m.usage(),
        saw_done: m.saw_done(),
        first: m.first_content_seen(),
        events: m.events(),
    }
}

fn check_run(r: &Run, expected_out: &[u8], usage: Usage, events: u64) {
    assert_eq!(
        String::from_utf8_lossy(&r.out),
        String::from_utf8_lossy(expected_out)
    );
    assert_eq!(r.usage, usage);
    assert!(r.saw_done);
    assert!(r.first);
    assert_eq!(r.events, events);
}

fn parse_events(chunks: &[&[u8]]) -> Vec<SseEvent> {
    let mut p = SseParser::new();
    let mut events = Vec::new();
    for c in chunks {
        p.push_bytes(&Bytes::copy_from_slice(c), |e| events.push(e));
    }
    assert!(p.finish(|e| events.push(e)).is_empty());
    events
}

#[test]
fn chat_fixture_every_split_point() {
    for eol in ["\n", "\r\n"] {
        let input = build(CHAT_EVENTS, None, eol);
        let stripped = build(CHAT_EVENTS, Some(USAGE_EVENT), eol);
        let reference = parse_events(&[&input]);
        assert_eq!(reference.len(), CHAT_EVENTS.len());
        for (ev, src) in reference.iter().zip(CHAT_EVENTS) {
            assert_eq!(Some(ev.data.as_str()), src.strip_prefix("data: "));
        }
        for i in 0..=input.len() {
            assert_eq!(parse_events(&[&input[..i], &input[i..]]), reference);
        }
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(parse_events(&bytes), reference);
        for strip in [false, true] {
            let expected: &[u8] = if strip { &stripped } else { &input };
            check_run(&run(strip, &[&input]), expected, REPORTED, 8);
            for i in 0..=input.len() {
                let r = run(strip, &[&input[..i], &input[i..]]);
                check_run(&r, expected, REPORTED, 8);
            }
            let bytes: Vec<&[u8]> = input.chunks(1).collect();
            check_run(&run(strip, &bytes), expected, REPORTED, 8);
        }
    }
}

#[test]
fn short_fixture_three_way_splits() {
    let events = [
        r#"data: {"choices":[{"delta":{"content":"wö世🚀"}}],"usage":null}"#,
        r#"data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4}}"#,
        "data: [DONE]",
    ];
    let usage = Usage {
        input_tokens: 3,
        output_tokens: 4,
        ..Usage::default()
    };
    for eol in ["\n", "\r\n", "\r"] {
        let input = build(&events, None, eol);
        let stripped = build(&events, Some(1), eol);
        for strip in [false, true] {
            let expected: &[u8] = if strip { &stripped } else { &input };
            for i in 0..=input.len() {
                for j in i..=input.len() {
                    let r = run(strip, &[&input[..i], &input[i..j], &input[j..]]);
                    check_run(&r, expected, usage, 3);
                }
            }
        }
    }
}

#[test]
fn strip_output_holds_back_partial_events() {
    let input = build(CHAT_EVENTS, None, "\n");
    let mut m = StreamMeter::new(true);
    let cut = CHAT_EVENTS[0].len() + 2 + 10;
    let first = m.feed(Bytes::copy_from_slice(&input[..cut]));
    assert_eq!(&first[..], &input[..CHAT_EVENTS[0].len() + 2]);
    // A whole-event chunk with nothing carried over is returned as is.
    let mut m = StreamMeter::new(true);
    let chunk = Bytes::copy_from_slice(&input[..CHAT_EVENTS[0].len() + 2]);
    let got = m.feed(chunk.clone());
    assert_eq!(got.as_ptr(), chunk.as_ptr());
    assert_eq!(got.len(), chunk.len());
}

#[test]
fn usage_on_last_content_chunk_is_removed_but_content_kept() {
    let input = concat!(
        "data: {\"id\":\"x\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\n",
        "data: {\"id\":\"x\", \"choices\": [{\"index\":0,\"delta\":{\"content\":\"!\"},\"finish_reason\":\"stop\"}], ",
        "\"usage\": {\"prompt_tokens\": 5, \"completion_tokens\": 2, \"total_tokens\": 7}, \"model\": \"m\"}\n\n",
        "data: [DONE]\n\n"
    );
    let expected = concat!(
        "data: {\"id\":\"x\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\n",
        "data: {\"id\":\"x\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"!\"},\"finish_reason\":\"stop\"}],\"model\":\"m\"}\n\n",
        "data: [DONE]\n\n"
    );
    let usage = Usage {
        input_tokens: 5,
        output_tokens: 2,
        ..Usage::default()
    };
    let input = input.as_bytes();
    for i in 0..=input.len() {
        let r = run(true, &[&input[..i], &input[i..]]);
        check_run(&r, expected.as_bytes(), usage, 3);
        let r = run(false, &[&input[..i], &input[i..]]);
        check_run(&r, input, usage, 3);
    }
}

#[test]
fn rewrite_keeps_other_lines_and_multiline_data() {
    let input = b"\xEF\xBB\xBF: hi\r\nevent: chunk\r\ndata: {\"choices\":[{\"text\":\"a\"}],\r\nid: 1\r\ndata: \"usage\":{\"prompt_tokens\":1},\r\ndata: \"x\":\r\ndata: [1,\r\ndata:  2]}\r\n\r\n";
    let expected = b"\xEF\xBB\xBF: hi\r\nevent: chunk\r\ndata: {\"choices\":[{\"text\":\"a\"}],\"x\":[1,\r\ndata:  2]}\r\nid: 1\r\n\r\n";
    let r = run(true, &[input]);
    assert_eq!(
        String::from_utf8_lossy(&r.out),
        String::from_utf8_lossy(expected)
    );
    // Re-parsing the rewritten event gives the same JSON minus usage.
    let mut p = SseParser::new();
    let mut evs = Vec::new();
    p.push(&r.out, |e| evs.push(e));
    let v: serde_json::Value = serde_json::from_str(&evs[0].data).unwrap();
    assert_eq!(v, serde_json::json!({"choices":[{"text":"a"}],"x":[1,2]}));
    assert_eq!(r.usage.input_tokens, 1);
}

#[test]
fn bom_data_line_at_stream_start_rewritten() {
    let input =
        b"\xEF\xBB\xBFdata: {\"choices\":[{\"text\":\"a\"}],\"usage\":{\"total_tokens\":2}}\n\n";
    let r = run(true, &[input]);
    assert_eq!(
        &r.out[..],
        &b"\xEF\xBB\xBFdata: {\"choices\":[{\"text\":\"a\"}]}\n\n"[..]
    );
    assert_eq!(r.usage.input_tokens, 2);
}

#[test]
fn usage_null_events_errors_and_non_json_forwarded() {
    let input = concat!(
        ": comment\n\n",
        "data: {\"choices\":[],\"usage\":null}\n\n",
        "data: not json {\n\n",
        "data: [1,2]\n\n",
        "event: error\ndata: {\"error\":{\"message\":\"overloaded\",\"type\":\"server_error\"}}\n\n",
        "data: {\"choices\":null,\"usage\":{\"prompt_tokens\":4}}\n\n",
        "data: [DONE]\n\n"
    );
    let expected = concat!(
        ": comment\n\n",
        "data: {\"choices\":[],\"usage\":null}\n\n",
        "data: not json {\n\n",
        "data: [1,2]\n\n",
        "event: error\ndata: {\"error\":{\"message\":\"overloaded\",\"type\":\"server_error\"}}\n\n",
        "data: [DONE]\n\n"
    );
    let r = run(true, &[input.as_bytes()]);
    assert_eq!(String::from_utf8_lossy(&r.out), expected);
    assert!(r.saw_done);
    assert!(!r.first);
    assert_eq!(r.events, 6);
    assert_eq!(r.usage.input_tokens, 4);
    assert!(!r.usage.estimated);
}

#[test]
fn dropped_event_split_inside_crlf() {
    let input =
        b"data: {\"choices\":[],\"usage\":{\"total_tokens\":1}}\r\n\r\ndata: [DONE]\r\n\r\n";
    let drop_len = input.len() - b"data: [DONE]\r\n\r\n".len();
    let cut = drop_len - 1; // between the final `\r` and `\n` of the dropped event
    let r = run(true, &[&input[..cut], &input[cut..]]);
    assert_eq!(&r.out[..], &input[drop_len..]);
    // Same when the stream ends right there.
    let r = run(true, &[&input[..cut], b"\n"]);
    assert!(r.out.is_empty());
    let r = run(true, &[&input[..cut]]);
    assert!(r.out.is_empty());
    assert_eq!(r.usage.input_tokens, 1);
}

#[test]
fn unterminated_final_event_is_metered_and_forwarded() {
    let tail = "data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":1}}";
    let r = run(false, &[tail.as_bytes()]);
    assert_eq!(r.out, tail.as_bytes());
    assert_eq!(r.usage.input_tokens, 9);
    let r = run(true, &[tail.as_bytes()]);
    assert_eq!(
        String::from_utf8_lossy(&r.out),
        "data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}"
    );
    assert!(!r.saw_done);
    let r = run(true, &[b": just a comment"]);
    assert_eq!(r.out, b": just a comment");
}

#[test]
fn estimation_without_reported_usage() {
    let events: Vec<&str> = CHAT_EVENTS
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != USAGE_EVENT)
        .map(|(_, e)| *e)
        .collect();
    let input = build(&events, None, "\n");
    let expected_tokens = estimate_tokens(CONTENT);
    for i in 0..=input.len() {
        let r = run(true, &[&input[..i], &input[i..]]);
        assert_eq!(r.out, input);
        assert!(r.usage.estimated);
        assert_eq!(r.usage.input_tokens, 0);
        assert_eq!(r.usage.output_tokens, expected_tokens);
        assert_eq!(r.usage.reasoning_tokens, 0);
    }
    // Per-chunk estimates differ from the estimate of the whole text;
    // the meter must match the latter.
    assert_ne!(
        expected_tokens,
        ["Hello", " wörld", ", 世界", " 🚀\n\"café\""]
            .iter()
            .map(|s| estimate_tokens(s))
            .sum::<u64>()
    );
}

#[test]
fn estimation_counts_reasoning_tool_args_and_legacy_text() {
    let input = concat!(
        "data: {\"choices\":[{\"delta\":{\"reasoning_content\":\"think\"}}]}\n\n",
        "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"a\\\":1}\"}}]}}]}\n\n",
        "data: {\"choices\":[{\"text\":\"legacy text\",\"index\":0}]}\n\n",
        "data: {\"choices\":[{\"delta\":{\"content\":[1,2]}}]}\n\n",
    );
    let r = run(false, &[input.as_bytes()]);
    assert!(r.first);
    assert!(!r.saw_done);
    let reasoning = estimate_tokens("think");
    assert_eq!(r.usage.reasoning_tokens, reasoning);
    assert_eq!(
        r.usage.output_tokens,
        reasoning + estimate_tokens("{\"a\":1}legacy text")
    );
    assert!(r.usage.estimated);
}

#[test]
fn first_content_not_set_by_role_chunk() {
    let r = run(false, &[CHAT_EVENTS[0].as_bytes(), b"\n\n"]);
    assert!(!r.first);
    assert_eq!(r.events, 1);
}

#[test]
fn usage_from_json_chat() {
    let body = br#"{"id":"chatcmpl-1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"Hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":19,"completion_tokens":10,"total_tokens":29,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0}}}"#;
    assert_eq!(
        usage_from_json(body),
        Some(Usage {
            input_tokens: 19,
            output_tokens: 10,
            ..Usage::default()
        })
    );
}

#[test]
fn usage_from_json_details() {
    let body = br#"{"usage":{"prompt_tokens":2006,"completion_tokens":300,"total_tokens":2306,"prompt_tokens_details":{"cached_tokens":1920},"completion_tokens_details":{"reasoning_tokens":256,"accepted_prediction_tokens":0}}}"#;
    assert_eq!(
        usage_from_json(body),
        Some(Usage {
            input_tokens: 2006,
            output_tokens: 300,
            cached_input_tokens: 1920,
            cache_write_tokens: 0,
            reasoning_tokens: 256,
            estimated: false,
            units: crate::usage::Units::NONE
        })
    );
}

#[test]
fn usage_from_json_completions_and_embeddings() {
    let completions = br#"{"id":"cmpl-1","object":"text_completion","choices":[{"text":"x","index":0,"logprobs":null,"finish_reason":"length"}],"usage":{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12}}"#;
    assert_eq!(
        usage_from_json(completions),
        Some(Usage {
            input_tokens: 5,
            output_tokens: 7,
            ..Usage::default()
        })
    );
    let embeddings = br#"{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.0023,-0.0093]}],"model":"text-embedding-3-small","usage":{"prompt_tokens":8,"total_tokens":8}}"#;
    assert_eq!(
        usage_from_json(embeddings),
        Some(Usage {
            input_tokens: 8,
            output_tokens: 0,
            ..Usage::default()
        })
    );
}

#[test]
fn usage_from_json_missing_null_and_odd_values() {
    assert_eq!(usage_from_json(br#"{"choices":[]}"#), None);
    assert_eq!(usage_from_json(br#"{"usage":null}"#), None);
    assert_eq!(usage_from_json(br#"{"usage":{}}"#), None);
    assert_eq!(usage_from_json(b"not json"), None);
    assert_eq!(usage_from_json(b"\xff\xfe"), None);
    assert_eq!(usage_from_json(b""), None);
    assert_eq!(usage_from_json(br#""usage""#), None);
    assert_eq!(
        usage_from_json(
            br#"{"usage":{"prompt_tokens":null,"completion_tokens":3,"prompt_tokens_details":null,"completion_tokens_details":{"reasoning_tokens":null}}}"#
        ),
        Some(Usage {
            output_tokens: 3,
            ..Usage::default()
        })
    );
    assert_eq!(
        usage_from_json(
            br#"{"usage":{"prompt_tokens":1e30,"completion_tokens":-4,"total_tokens":"12"}}"#
        ),
        Some(Usage {
            input_tokens: u64::MAX,
            output_tokens: 0,
            ..Usage::default()
        })
    );
    assert_eq!(
        usage_from_json(br#"{"usage":{"prompt_tokens":99999999999999999999999999}}"#)
            .map(|u| u.input_tokens),
        Some(u64::MAX)
    );
    // Responses API names.
    assert_eq!(
        usage_from_json(
            br#"{"usage":{"input_tokens":3,"output_tokens":4,"input_tokens_details":{"cached_tokens":1},"output_tokens_details":{"reasoning_tokens":2}}}"#
        ),
        Some(Usage {
            input_tokens: 3,
            output_tokens: 4,
            cached_input_tokens: 1,
            cache_write_tokens: 0,
            reasoning_tokens: 2,
            estimated: false, units: crate::usage::Units::NONE })
    );
}

#[test]
fn estimate_rule() {
    assert_eq!(estimate_tokens(""), 0);
    assert_eq!(estimate_tokens("a"), 1);
    assert_eq!(estimate_tokens("abcd"), 1);
    assert_eq!(estimate_tokens("hello"), 2);
    assert_eq!(estimate_tokens("世界"), 2);
    assert_eq!(estimate_tokens("こんにちは"), 5);
    assert_eq!(estimate_tokens("안녕"), 2);
    // "w" (1) + ö (½) + "rld" (1) → 2 + ceil(½) = 3
    assert_eq!(estimate_tokens("wörld"), 3);
    assert_eq!(estimate_tokens("éé"), 1);
    assert_eq!(estimate_tokens("🚀🚀🚀"), 2);
    assert_eq!(estimate_tokens("abcdefgh世abc"), 2 + 1 + 1);
}

#[test]
fn estimator_is_incremental() {
    let text = "Hello wörld, 世界 🚀 and more ascii text ééé";
    let whole = estimate_tokens(text);
    for (i, _) in text.char_indices() {
        let mut e = TokenEstimator::new();
        e.feed(&text[..i]);
        e.feed(&text[i..]);
        assert_eq!(e.tokens(), whole);
    }
}

use crate::translate::test_support::XorShift;

/// Random streams mixing fixture events, garbage and line-end variants:
/// never panics; pass-through is exact; stripped output and metering do
/// not depend on how the stream is chunked.
#[test]
fn fuzz_chunking_invariance() {
    let pieces: Vec<&[u8]> = vec![
        CHAT_EVENTS[1].as_bytes(),
        CHAT_EVENTS[4].as_bytes(),
        CHAT_EVENTS[6].as_bytes(),
        br#"data: {"choices":[{"delta":{"content":"x"}}],"usage":{"prompt_tokens":1}}"#,
        b"data: [DONE]",
        b": ping",
        b"data: {\"usage\":",
        b"\n",
        b"\r",
        b"\r\n",
        b"\xEF\xBB\xBF",
        b"\xff\xc3",
        b"data: \"\\ud800\"",
    ];
    let mut rng = XorShift(0x2545_F491_4F6C_DD1D);
    for _ in 0..3000 {
        let mut input = Vec::new();
        for _ in 0..rng.below(12) {
            if rng.below(5) == 0 {
                input.push(rng.next() as u8);
            } else {
                input.extend_from_slice(pieces[rng.below(pieces.len())]);
            }
        }
        let mut chunks = Vec::new();
        let mut at = 0;
        while at < input.len() {
            let end = (at + 1 + rng.below(24)).min(input.len());
            chunks.push(&input[at..end]);
            at = end;
        }
        for strip in [false, true] {
            let whole = run(strip, &[&input]);
            let chunked = run(strip, &chunks);
            assert_eq!(whole.out, chunked.out);
            assert_eq!(whole.usage, chunked.usage);
            assert_eq!(whole.saw_done, chunked.saw_done);
            assert_eq!(whole.first, chunked.first);
            assert_eq!(whole.events, chunked.events);
            if !strip {
                assert_eq!(whole.out, input);
            }
        }
    }
}

#[test]
fn text_after_the_last_usage_report_is_estimated_on_top_of_it() {
    // A provider that reports usage first (continuous usage statistics), then streams text
    // and is cut short.
    let early = concat!(
        "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":0}}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello there\"}}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"reasoning_content\":\"hmm\"}}]}\n\n",
    );
    let mut m = StreamMeter::new(false);
    m.feed(Bytes::from_static(early.as_bytes()));
    let u = m.usage();
    assert_eq!(u.input_tokens, 12);
    assert_eq!(
        u.output_tokens,
        estimate_tokens("Hello there") + estimate_tokens("hmm")
    );
    assert_eq!(u.reasoning_tokens, estimate_tokens("hmm"));
    assert!(u.estimated);

    // The usual order (usage after the text, also in the text's last chunk): as reported.
    let mut m = StreamMeter::new(false);
    m.feed(Bytes::from(build(CHAT_EVENTS, None, "\n")));
    m.finish();
    assert_eq!(m.usage(), REPORTED);
    let last = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"bye\"}}],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1}}\n\n";
    let mut m = StreamMeter::new(false);
    m.feed(Bytes::from_static(last.as_bytes()));
    assert_eq!((m.usage().output_tokens, m.usage().estimated), (1, false));
}
