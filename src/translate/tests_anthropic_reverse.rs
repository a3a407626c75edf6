//! Tests of the Anthropic-client ⇄ OpenAI-upstream translations against the `reverse_*`
//! fixtures in `tests/fixtures/anthropic/`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{json, Value};

use super::test_support::*;
use super::*;
use crate::usage::Usage;

macro_rules! fixture {
    ($name:literal) => {
        include_str!(concat!("../../tests/fixtures/anthropic/", $name))
    };
}

fn to_anthropic() -> Box<dyn StreamTranslator> {
    Box::new(OpenAiStreamToAnthropic::new("claude-sonnet-4-5"))
}

fn usage(input: u64, cached: u64, output: u64, reasoning: u64) -> Usage {
    Usage {
        input_tokens: input,
        output_tokens: output,
        cached_input_tokens: cached,
        cache_write_tokens: 0,
        reasoning_tokens: reasoning,
        estimated: false,
        units: crate::usage::Units::NONE,
    }
}

// ---------------------------------------------------------------------------
// Anthropic client → OpenAI upstream
// ---------------------------------------------------------------------------

#[test]
fn reverse_request_fixture() {
    let t = anthropic_to_openai_chat_request(
        fixture!("reverse_client_request.json").as_bytes(),
        "gpt-4o-mini",
    )
    .unwrap();
    assert_json(&t.body, fixture!("reverse_expected_upstream_request.json"));
    assert!(t.stream && t.include_usage);
}

#[test]
fn reverse_response_fixture() {
    let (body, u) = openai_chat_response_to_anthropic(
        fixture!("reverse_upstream_response.json").as_bytes(),
        "claude-sonnet-4-5",
    )
    .unwrap();
    assert_json(&body, fixture!("reverse_expected_client_response.json"));
    assert_eq!(u, usage(2006, 1920, 300, 0));
}

/// Checks the Anthropic event grammar: message_start, then content blocks started,
/// delta'd and stopped in index order, one at a time, then message_delta, message_stop;
/// every event's name equals its data's `type`.
fn assert_anthropic_sequence(out: &[u8]) -> Vec<(Option<String>, Value)> {
    let evs = sse_values(out);
    for (name, v) in &evs {
        assert_eq!(name.as_deref(), v["type"].as_str(), "{v}");
    }
    let types: Vec<&str> = evs
        .iter()
        .map(|(_, v)| v["type"].as_str().unwrap())
        .collect();
    assert_eq!(types.first(), Some(&"message_start"));
    assert_eq!(
        &types[types.len() - 2..],
        &["message_delta", "message_stop"]
    );
    let mut open: Option<u64> = None;
    let mut next = 0;
    for (_, v) in &evs[1..evs.len() - 2] {
        let index = v["index"].as_u64().unwrap();
        match v["type"].as_str().unwrap() {
            "content_block_start" => {
                assert_eq!(open, None);
                assert_eq!(index, next);
                open = Some(index);
                next += 1;
            }
            "content_block_delta" => assert_eq!(open, Some(index)),
            "content_block_stop" => {
                assert_eq!(open, Some(index));
                open = None;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(open, None);
    evs
}

#[test]
fn reverse_stream_fixture() {
    let input = fixture!("reverse_upstream_stream.sse").as_bytes();
    let (out, u) = check_rechunking(&to_anthropic, input);
    assert_sse(&out, fixture!("reverse_expected_client_stream.sse"));
    assert_anthropic_sequence(&out);
    assert_eq!(u, usage(100, 64, 40, 12));
    let (crlf_out, _) = check_rechunking_light(
        &to_anthropic,
        &crlf(fixture!("reverse_upstream_stream.sse")),
    );
    assert_eq!(crlf_out, out);
}

#[test]
fn reverse_stream_without_usage_or_done() {
    // No usage chunk and no [DONE]: completed from the finish reason, output estimated.
    let input = concat!(
        "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Hello there\"}}]}\n\n",
        "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"length\"}]}\n\n",
    );
    let (out, u) = check_rechunking(&to_anthropic, input.as_bytes());
    let evs = assert_anthropic_sequence(&out);
    let delta = &evs[evs.len() - 2].1;
    assert_eq!(delta["delta"]["stop_reason"], "max_tokens");
    assert_eq!(delta["usage"]["output_tokens"], 3);
    assert_eq!(
        u,
        Usage {
            output_tokens: 3,
            estimated: true,
            ..Usage::default()
        }
    );

    // Cut before any finish: an Anthropic error event.
    let (out, _) = check_rechunking(
        &to_anthropic,
        &input.as_bytes()[..input
            .find("data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{},")
            .unwrap()],
    );
    let evs = sse_values(&out);
    assert_eq!(evs.last().unwrap().0.as_deref(), Some("error"));
    assert_eq!(evs.last().unwrap().1["error"]["type"], "api_error");

    // An upstream error event.
    let input = "data: {\"error\":{\"message\":\"Rate limit reached\",\"type\":\"requests\",\"code\":\"rate_limit_exceeded\"}}\n\n";
    let (out, _) = check_rechunking(&to_anthropic, input.as_bytes());
    assert_eq!(
        sse_values(&out),
        vec![(
            Some("error".to_owned()),
            json!({"type": "error", "error": {"type": "rate_limit_error", "message": "Rate limit reached"}})
        )]
    );
}

#[test]
fn reverse_invalid_inputs() {
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"messages": [{"role": "system", "content": "x"}]}),
            "user or assistant",
        ),
        (
            json!({"messages": [{"role": "user", "content": [{"type": "server_tool_use"}]}]}),
            "server_tool_use",
        ),
        (
            json!({"messages": [{"role": "user", "content": 3}]}),
            "string or an array",
        ),
        (
            json!({"messages": [{"role": "user", "content": [{"type": "tool_result"}]}]}),
            "tool_use_id",
        ),
        (
            json!({"messages": [{"role": "assistant", "content": [{"type": "tool_use", "name": "f"}]}]}),
            "`id`",
        ),
        (
            json!({"messages": [], "tools": [{"type": "web_search_20250305", "name": "web_search"}]}),
            "server tool",
        ),
        (json!({"messages": [], "max_tokens": -1}), "max_tokens"),
        (
            json!({"messages": [], "stop_sequences": "x"}),
            "stop_sequences",
        ),
        (
            json!({"messages": [], "tools": [{"name": "f"}], "tool_choice": {"type": "sometimes"}}),
            "tool_choice",
        ),
        (json!({"messages": [], "system": 5}), "system"),
    ];
    for (req, want) in cases {
        let err = anthropic_to_openai_chat_request(req.to_string().as_bytes(), "m").unwrap_err();
        assert!(err.to_string().contains(want), "{req}: {err}");
    }
    for body in [
        &b"{}"[..],
        b"{\"choices\":[]}",
        b"{\"error\":{\"message\":\"x\"}}",
        b"nope",
    ] {
        assert!(openai_chat_response_to_anthropic(body, "m").is_err());
    }
    let bad_args = json!({"choices": [{"message": {"tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{oops"}}]}}]});
    assert!(openai_chat_response_to_anthropic(bad_args.to_string().as_bytes(), "m").is_err());
}
