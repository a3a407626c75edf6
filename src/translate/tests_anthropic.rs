//! Tests of the Anthropic translations against the fixtures in `tests/fixtures/anthropic/`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{json, Value};

use super::anthropic::usage_of;
use super::json::Json;
use super::test_support::*;
use super::*;
use crate::usage::Usage;

macro_rules! fixture {
    ($name:literal) => {
        include_str!(concat!("../../tests/fixtures/anthropic/", $name))
    };
}

const UPSTREAM_MODEL: &str = "claude-sonnet-4-5-20250929";

fn to_openai(include_usage: bool) -> Box<dyn StreamTranslator> {
    let mut t = AnthropicStreamToOpenAi::new("claude-sonnet", include_usage);
    t.w.created = 0;
    t.w.id = "chatcmpl-test".into();
    Box::new(t)
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
// OpenAI client → Anthropic upstream
// ---------------------------------------------------------------------------

#[test]
fn request_fixture() {
    let t = openai_chat_to_anthropic(fixture!("client_request.json").as_bytes(), UPSTREAM_MODEL)
        .unwrap();
    assert_json(&t.body, fixture!("expected_upstream_request.json"));
    assert!(!t.stream);
    assert!(!t.include_usage);
}

#[test]
fn response_fixture() {
    let (body, u) = anthropic_to_openai_chat_response(
        fixture!("upstream_response.json").as_bytes(),
        "claude-sonnet",
    )
    .unwrap();
    assert_json(&body, fixture!("expected_client_response.json"));
    assert_eq!(
        u,
        Usage {
            cache_write_tokens: 20,
            ..usage(60, 30, 25, 0)
        }
    );
    assert!(value(&body)["created"].as_u64().unwrap() > 1_600_000_000);
}

#[test]
fn stream_fixture() {
    let input = fixture!("upstream_stream.sse").as_bytes();
    let (out, u) = check_rechunking(&|| to_openai(true), input);
    assert_sse(&out, fixture!("expected_client_stream.sse"));
    assert_eq!(u, usage(25, 0, 15, 0));
    let mut t = AnthropicStreamToOpenAi::new("claude-sonnet", true);
    assert!(!t.first_content_seen());
    t.push(input);
    assert!(t.first_content_seen());
    // Same with CRLF line ends.
    let (crlf_out, crlf_usage) =
        check_rechunking_light(&|| to_openai(true), &crlf(fixture!("upstream_stream.sse")));
    assert_eq!(crlf_out, out);
    assert_eq!(crlf_usage, u);
}

#[test]
fn thinking_stream_fixture_without_usage_chunk() {
    let input = fixture!("thinking_upstream_stream.sse").as_bytes();
    let (out, u) = check_rechunking(&|| to_openai(false), input);
    assert_sse(&out, fixture!("thinking_expected_client_stream.sse"));
    assert_eq!(u, usage(45, 0, 112, 0));
}

// Tool calls -----------------------------------------------------------------

#[test]
fn tool_request_fixture_keeps_schema_key_order() {
    let t = openai_chat_to_anthropic(
        fixture!("tool_client_request.json").as_bytes(),
        UPSTREAM_MODEL,
    )
    .unwrap();
    assert_json(&t.body, fixture!("tool_expected_upstream_request.json"));
    assert!(t.stream);
    assert!(t.include_usage);
    let text = String::from_utf8(t.body).unwrap();
    let loc = text.find("\"location\"").unwrap();
    let unit = text.find("\"unit\"").unwrap();
    let desc = text.find("The unit of temperature").unwrap();
    let enum_ = text.find("\"enum\"").unwrap();
    assert!(loc < unit && enum_ < desc, "schema keys reordered: {text}");
}

#[test]
fn tool_response_fixture() {
    let (body, u) = anthropic_to_openai_chat_response(
        fixture!("tool_upstream_response.json").as_bytes(),
        "claude-sonnet",
    )
    .unwrap();
    assert_json(&body, fixture!("tool_expected_client_response.json"));
    assert_eq!(u, usage(472, 0, 89, 0));
}

#[test]
fn tool_stream_fixture() {
    let input = fixture!("tool_upstream_stream.sse").as_bytes();
    let (out, u) = check_rechunking(&|| to_openai(true), input);
    assert_sse(&out, fixture!("tool_expected_client_stream.sse"));
    // message_delta's cumulative counts replace message_start's.
    assert_eq!(u, usage(1496, 1024, 89, 0));
    // The streamed arguments assemble into the tool input.
    let args: String = sse_values(&out)
        .iter()
        .filter_map(|(_, v)| {
            v["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str()
        })
        .collect::<Vec<_>>()
        .concat();
    assert_eq!(
        value(args.as_bytes()),
        json!({"location": "San Francisco, CA", "unit": "fahrenheit"})
    );
}

#[test]
fn tool_followup_request_fixture() {
    let t = openai_chat_to_anthropic(
        fixture!("tool_followup_client_request.json").as_bytes(),
        UPSTREAM_MODEL,
    )
    .unwrap();
    assert_json(
        &t.body,
        fixture!("tool_followup_expected_upstream_request.json"),
    );
    assert_eq!(value(&t.body)["max_tokens"], json!(DEFAULT_MAX_TOKENS));
    assert_eq!(DEFAULT_MAX_TOKENS, 4096);
}

#[test]
fn tool_choice_variants() {
    let base = json!({
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"type": "function", "function": {"name": "f"}}],
    });
    let cases = [
        (json!("auto"), json!({"type": "auto"})),
        (json!("none"), json!({"type": "none"})),
        (json!("required"), json!({"type": "any"})),
        (
            json!({"type": "function", "function": {"name": "f"}}),
            json!({"type": "tool", "name": "f"}),
        ),
    ];
    for (choice, want) in cases {
        let mut req = base.clone();
        req["tool_choice"] = choice;
        let t = openai_chat_to_anthropic(req.to_string().as_bytes(), "m").unwrap();
        let v = value(&t.body);
        assert_eq!(v["tool_choice"], want);
        // No parameters → an empty object schema.
        assert_eq!(
            v["tools"][0]["input_schema"],
            json!({"type": "object", "properties": {}})
        );
    }
    // No tools: tool_choice is dropped.
    let req = json!({"messages": [{"role": "user", "content": "hi"}], "tool_choice": "required"});
    let v = value(
        &openai_chat_to_anthropic(req.to_string().as_bytes(), "m")
            .unwrap()
            .body,
    );
    assert!(v.get("tool_choice").is_none() && v.get("tools").is_none());
}

#[test]
fn request_parameter_mapping() {
    let req = json!({
        "model": "x",
        "messages": [
            {"role": "user", "content": "a"},
            {"role": "user", "content": [{"type": "text", "text": "b", "cache_control": {"type": "ephemeral"}}]},
            {"role": "assistant", "content": ""},
            {"role": "assistant", "content": [{"type": "text", "text": "c"}]},
        ],
        "max_tokens": 10,
        "max_completion_tokens": 20,
        "temperature": 1.7,
        "stop": ["x", "y"],
        "stream": true,
        "n": 1,
        "response_format": {"type": "json_object"},
    });
    let t = openai_chat_to_anthropic(req.to_string().as_bytes(), "m").unwrap();
    assert!(t.stream && !t.include_usage);
    assert_eq!(
        value(&t.body),
        json!({
            "model": "m",
            "max_tokens": 20,
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "a"},
                    {"type": "text", "text": "b", "cache_control": {"type": "ephemeral"}},
                ]},
                {"role": "assistant", "content": [{"type": "text", "text": "c"}]},
            ],
            "stop_sequences": ["x", "y"],
            "temperature": 1.0,
            "stream": true,
        })
    );
}

#[test]
fn invalid_requests_are_errors() {
    let cases: Vec<(Value, &str)> = vec![
        (json!([]), "object"),
        (json!({"messages": "hi"}), "`messages` must be an array"),
        (json!({"messages": []}), "at least one"),
        (
            json!({"messages": [{"role": "system", "content": "only system"}]}),
            "at least one",
        ),
        (
            json!({"messages": [{"role": "wizard", "content": "x"}]}),
            "`wizard` is not a chat role",
        ),
        (json!({"messages": [{"content": "x"}]}), "role"),
        (
            json!({"messages": [{"role": "function", "content": "x", "name": "f"}]}),
            "legacy",
        ),
        (
            json!({"messages": [{"role": "assistant", "tool_calls": [{"id": "1", "type": "function", "function": {"name": "f", "arguments": "{not json"}}]}]}),
            "not valid JSON",
        ),
        (
            json!({"messages": [{"role": "assistant", "tool_calls": [{"id": "1", "type": "function", "function": {"name": "f", "arguments": "[1]"}}]}]}),
            "must be a JSON object",
        ),
        (
            json!({"messages": [{"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "f"}}]}]}),
            "id` is missing",
        ),
        (
            json!({"messages": [{"role": "tool", "content": "x"}]}),
            "tool_call_id",
        ),
        (
            json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}]}]}),
            "http(s) URL",
        ),
        (
            json!({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}]}]}),
            "input_audio",
        ),
        (
            json!({"messages": [{"role": "user", "content": 5}]}),
            "string or an array",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"}], "n": 2}),
            "`n`",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}),
            "positive integer",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"}], "max_tokens": "9"}),
            "positive integer",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"}], "stop": 5}),
            "`stop`",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"}], "temperature": "hot"}),
            "temperature",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"}], "stream": "yes"}),
            "stream",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "web_search"}]}),
            "web_search",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "sometimes"}),
            "sometimes",
        ),
    ];
    for (req, want) in cases {
        let err = openai_chat_to_anthropic(req.to_string().as_bytes(), "m").unwrap_err();
        assert!(err.to_string().contains(want), "{req}: {err}");
        assert_eq!(err.status(), 400);
        // Rendered by the one error map, in both shapes.
        let err = crate::error::GatewayError::from(err);
        let body = value(&err.body_for(crate::protocol::ClientProtocol::OpenAi));
        assert_eq!(body["error"]["type"], "invalid_request_error");
        let body = value(&err.body_for(crate::protocol::ClientProtocol::Anthropic));
        assert_eq!(body["type"], "error");
    }
    let err = openai_chat_to_anthropic(b"{\"messages\":", "m").unwrap_err();
    assert!(matches!(err, TranslateError::InvalidJson(_)));
}

#[test]
fn response_stop_reasons_and_thinking() {
    for (stop, finish) in [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("pause_turn", "stop"),
    ] {
        let body = json!({
            "id": "msg_1", "type": "message", "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "s"},
                {"type": "redacted_thinking", "data": "xx"},
                {"type": "text", "text": "a"},
                {"type": "text", "text": "b"},
            ],
            "stop_reason": stop,
            "usage": {"input_tokens": 1, "output_tokens": 2},
        });
        let (out, _) = anthropic_to_openai_chat_response(body.to_string().as_bytes(), "m").unwrap();
        let v = value(&out);
        assert_eq!(v["choices"][0]["finish_reason"], finish);
        assert_eq!(v["choices"][0]["message"]["content"], "ab");
        assert_eq!(v["choices"][0]["message"]["reasoning_content"], "hmm");
    }
    // Only tool calls: content is null.
    let body = json!({"content": [{"type": "tool_use", "id": "t", "name": "f", "input": {"a": [1, 2]}}], "stop_reason": "tool_use"});
    let (out, u) = anthropic_to_openai_chat_response(body.to_string().as_bytes(), "m").unwrap();
    let v = value(&out);
    assert_eq!(v["choices"][0]["message"]["content"], Value::Null);
    assert_eq!(
        v["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
        "{\"a\":[1,2]}"
    );
    assert_eq!(u, Usage::default());
}

#[test]
fn invalid_responses_are_errors() {
    for body in [
        &b""[..],
        b"not json",
        b"[]",
        b"{}",
        br#"{"content":"text"}"#,
        br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
    ] {
        let err = anthropic_to_openai_chat_response(body, "m").unwrap_err();
        assert_eq!(err.status(), 502, "{err}");
        assert!(matches!(err, TranslateError::UpstreamResponse(_)));
    }
}

#[test]
fn error_bodies() {
    let cases = [
        ("overloaded_error", "server_error"),
        ("api_error", "server_error"),
        ("rate_limit_error", "rate_limit_error"),
        ("invalid_request_error", "invalid_request_error"),
        ("request_too_large", "invalid_request_error"),
        ("authentication_error", "authentication_error"),
        ("permission_error", "permission_error"),
        ("not_found_error", "not_found_error"),
    ];
    for (kind, want) in cases {
        let body = json!({"type": "error", "error": {"type": kind, "message": "Overloaded"}});
        let v = value(&anthropic_error_to_openai(body.to_string().as_bytes()));
        assert_eq!(
            v,
            json!({"error": {"message": "Overloaded", "type": want, "param": null, "code": kind}})
        );
    }
    let v = value(&anthropic_error_to_openai(b"<html>502 Bad Gateway</html>"));
    assert_eq!(v["error"]["type"], "server_error");
    assert_eq!(
        v["error"]["message"],
        "The upstream provider returned an error."
    );

    let cases = [
        (
            json!({"type": "invalid_request_error", "code": null}),
            "invalid_request_error",
        ),
        (
            json!({"type": "invalid_request_error", "code": "invalid_api_key"}),
            "authentication_error",
        ),
        (
            json!({"type": "invalid_request_error", "code": "model_not_found"}),
            "not_found_error",
        ),
        (
            json!({"type": "insufficient_quota", "code": "insufficient_quota"}),
            "rate_limit_error",
        ),
        (
            json!({"type": "requests", "code": "rate_limit_exceeded"}),
            "rate_limit_error",
        ),
        (json!({"type": "server_error"}), "api_error"),
    ];
    for (err, want) in cases {
        let mut err = err;
        err["message"] = json!("m");
        let body = json!({ "error": err });
        let v = value(&openai_error_to_anthropic(body.to_string().as_bytes()));
        assert_eq!(
            v,
            json!({"type": "error", "error": {"type": want, "message": "m"}})
        );
    }
    let v = value(&openai_error_to_anthropic(b""));
    assert_eq!(v["error"]["type"], "api_error");
}

#[test]
fn stream_error_event_and_truncation() {
    let head = fixture!("upstream_stream.sse");
    let cut = head.find("event: content_block_delta").unwrap();
    // An error event mid-stream.
    let input = format!(
        "{}event: error\ndata: {{\"type\": \"error\", \"error\": {{\"type\": \"overloaded_error\", \"message\": \"Overloaded\"}}}}\n\n{}",
        &head[..cut],
        &head[cut..]
    );
    let (out, u) = check_rechunking(&|| to_openai(true), input.as_bytes());
    let evs = sse_values(&out);
    assert_eq!(
        evs.last().unwrap().1,
        json!({"error": {"message": "Overloaded", "type": "server_error", "param": null, "code": "overloaded_error"}})
    );
    assert!(!evs.iter().any(|(_, v)| v == "[DONE]"));
    assert_eq!(u.input_tokens, 25);
    assert!(u.estimated);

    // Cut before message_stop: an error event, no [DONE], estimated output.
    let cut = head.find("event: message_delta").unwrap();
    let (out, u) = check_rechunking(&|| to_openai(true), &head.as_bytes()[..cut]);
    let evs = sse_values(&out);
    assert_eq!(
        evs.last().unwrap().1["error"]["code"],
        "upstream_incomplete"
    );
    assert!(!evs.iter().any(|(_, v)| v == "[DONE]"));
    assert_eq!(u.input_tokens, 25);
    assert_eq!(u.output_tokens, 2); // estimate of "Hello!" (1 reported by message_start)
    assert!(u.estimated);

    // Nothing at all.
    let mut t = AnthropicStreamToOpenAi::new("m", false);
    let out = t.finish();
    assert_eq!(
        sse_values(&out)[0].1["error"]["code"],
        "upstream_incomplete"
    );
    assert_eq!(
        t.usage(),
        Usage {
            estimated: true,
            ..Usage::default()
        }
    );
}

// ---------------------------------------------------------------------------
// Usage table (module docs) and robustness
// ---------------------------------------------------------------------------

#[test]
fn usage_table_anthropic_and_openai() {
    let a = Json::parse(
        br#"{"input_tokens":5,"cache_creation_input_tokens":7,"cache_read_input_tokens":11,"output_tokens":13}"#,
    )
    .unwrap();
    assert_eq!(
        usage_of(&a),
        Usage {
            cache_write_tokens: 7,
            ..usage(5 + 7 + 11, 11, 13, 0)
        }
    );
    let o = Json::parse(
        br#"{"prompt_tokens":23,"completion_tokens":13,"prompt_tokens_details":{"cached_tokens":11},"completion_tokens_details":{"reasoning_tokens":3}}"#,
    )
    .unwrap();
    assert_eq!(super::common::usage_from_openai(&o), usage(23, 11, 13, 3));
    // And back to Anthropic's split for an Anthropic-format client.
    assert_eq!(
        super::json::Json::to_json_string(&super::anthropic_reverse::anthropic_usage_json(&usage(
            23, 11, 13, 3
        ))),
        r#"{"input_tokens":12,"cache_creation_input_tokens":0,"cache_read_input_tokens":11,"output_tokens":13}"#
    );
}

#[test]
fn fuzz_requests_and_responses_never_panic() {
    let requests: Vec<&[u8]> = vec![
        fixture!("client_request.json").as_bytes(),
        fixture!("tool_client_request.json").as_bytes(),
        fixture!("tool_followup_client_request.json").as_bytes(),
    ];
    fuzz(&requests, &|b| {
        if let Ok(t) = openai_chat_to_anthropic(b, "m") {
            value(&t.body);
        }
    });
    fuzz(
        &[fixture!("reverse_client_request.json").as_bytes()],
        &|b| {
            if let Ok(t) = anthropic_to_openai_chat_request(b, "m") {
                value(&t.body);
            }
        },
    );
    fuzz(
        &[
            fixture!("upstream_response.json").as_bytes(),
            fixture!("tool_upstream_response.json").as_bytes(),
        ],
        &|b| {
            if let Ok((body, _)) = anthropic_to_openai_chat_response(b, "m") {
                value(&body);
            }
            value(&anthropic_error_to_openai(b));
        },
    );
    fuzz(
        &[fixture!("reverse_upstream_response.json").as_bytes()],
        &|b| {
            if let Ok((body, _)) = openai_chat_response_to_anthropic(b, "m") {
                value(&body);
            }
            value(&openai_error_to_anthropic(b));
        },
    );
}

#[test]
fn fuzz_streams_never_panic() {
    let to_openai_streams: Vec<&[u8]> = vec![
        fixture!("upstream_stream.sse").as_bytes(),
        fixture!("tool_upstream_stream.sse").as_bytes(),
        fixture!("thinking_upstream_stream.sse").as_bytes(),
    ];
    fuzz(&to_openai_streams, &|b| {
        stream_no_panic(&|| to_openai(true), b)
    });
    fuzz(
        &[fixture!("reverse_upstream_stream.sse").as_bytes()],
        &|b| stream_no_panic(&to_anthropic, b),
    );
}

#[test]
fn truncated_streams_never_claim_completion() {
    // Every prefix that stops before the terminal event ends with an error, not [DONE].
    let input = fixture!("tool_upstream_stream.sse");
    let stop = input.find("event: message_stop").unwrap();
    for i in 0..stop {
        let mut t = to_openai(true);
        let out = run(&mut *t, &[&input.as_bytes()[..i]]);
        let evs = sse_values(&out);
        assert!(!evs.iter().any(|(_, v)| v == "[DONE]"), "prefix {i}");
        assert!(evs.last().unwrap().1.get("error").is_some(), "prefix {i}");
    }
    let input = fixture!("reverse_upstream_stream.sse");
    let finish = input.find("\"finish_reason\":\"tool_calls\"").unwrap();
    let finish = input[..finish].rfind("data:").unwrap();
    for i in 0..finish {
        let mut t = to_anthropic();
        let out = run(&mut *t, &[&input.as_bytes()[..i]]);
        let evs = sse_values(&out);
        assert_eq!(
            evs.last().unwrap().0.as_deref(),
            Some("error"),
            "prefix {i}"
        );
        assert!(
            !evs.iter().any(|(_, v)| v["type"] == "message_stop"),
            "prefix {i}"
        );
    }
}
