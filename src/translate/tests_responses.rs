//! Tests of the Responses API translation: requests, whole answers, streams (at every
//! chunking), and the usage of native Responses streams.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::test_support::{check_rechunking, sse_values, value};
use super::{
    openai_chat_response_to_responses, responses_to_openai_chat_request, OpenAiStreamToResponses,
    ResponsesStreamUsage, StreamTranslator, TranslateError,
};
use crate::usage::Usage;
use serde_json::{json, Value};

fn chat_of(req: Value) -> Value {
    let t = responses_to_openai_chat_request(req.to_string().as_bytes(), "up-model").unwrap();
    assert!(t.include_usage);
    value(&t.body)
}

#[test]
fn request_with_items_tools_and_limits() {
    let req = json!({
        "model": "gpt-x",
        "instructions": "Be brief.",
        "input": [
            {"role": "user", "content": [
                {"type": "input_text", "text": "What is in "},
                {"type": "input_image", "image_url": "https://x/y.png", "detail": "low"}
            ]},
            {"type": "message", "role": "assistant",
             "content": [{"type": "output_text", "text": "Let me check."}]},
            {"type": "function_call", "call_id": "call_1", "name": "get_weather",
             "arguments": "{\"city\":\"Paris\"}"},
            {"type": "function_call", "call_id": "call_2", "name": "get_time", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
            {"type": "function_call_output", "call_id": "call_2",
             "output": [{"type": "input_text", "text": "noon"}]},
            {"role": "developer", "content": "Answer in French."}
        ],
        "tools": [{"type": "function", "name": "get_weather", "description": "Weather",
                   "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                   "strict": true}],
        "tool_choice": {"type": "function", "name": "get_weather"},
        "max_output_tokens": 50,
        "temperature": 0.5,
        "top_p": 0.9,
        "store": false,
        "metadata": {"a": "b"},
        "stream": true
    });
    let expected = json!({
        "model": "up-model",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [
                {"type": "text", "text": "What is in "},
                {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "low"}}
            ]},
            {"role": "assistant", "content": "Let me check.", "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_2", "type": "function",
                 "function": {"name": "get_time", "arguments": "{}"}}
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
            {"role": "tool", "tool_call_id": "call_2", "content": "noon"},
            {"role": "system", "content": "Answer in French."}
        ],
        "tools": [{"type": "function", "function": {"name": "get_weather",
            "description": "Weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            "strict": true}}],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "max_tokens": 50,
        "temperature": 0.5,
        "top_p": 0.9,
        "stream": true,
        "stream_options": {"include_usage": true}
    });
    assert_eq!(chat_of(req), expected);
}

#[test]
fn request_with_string_input_and_json_schema() {
    let chat = chat_of(json!({
        "model": "m", "input": "hi", "tool_choice": "required",
        "text": {"format": {"type": "json_schema", "name": "r", "schema": {"type": "object"},
                            "strict": true}}
    }));
    assert_eq!(
        chat,
        json!({
            "model": "up-model",
            "messages": [{"role": "user", "content": "hi"}],
            "tool_choice": "required",
            "response_format": {"type": "json_schema", "json_schema":
                {"name": "r", "schema": {"type": "object"}, "strict": true}}
        })
    );
}

/// What needs the provider's own Responses API is refused with a 400 naming the field.
#[test]
fn untranslatable_requests_are_refused_by_name() {
    let cases = [
        (
            json!({"previous_response_id": "resp_1"}),
            "previous_response_id",
        ),
        (json!({"store": true}), "store"),
        (json!({"background": true}), "background"),
        (json!({"conversation": "conv_1"}), "conversation"),
        (json!({"tools": [{"type": "web_search"}]}), "web_search"),
        (
            json!({"tools": [{"type": "file_search", "vector_store_ids": []}]}),
            "file_search",
        ),
        (
            json!({"tools": [{"type": "computer_use_preview"}]}),
            "computer_use_preview",
        ),
        (
            json!({"input": [{"type": "item_reference", "id": "x"}]}),
            "item_reference",
        ),
        (
            json!({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]}),
            "input_file",
        ),
    ];
    for (extra, name) in cases {
        let mut req = json!({"model": "m", "input": "hi"});
        for (k, v) in extra.as_object().unwrap() {
            req[k] = v.clone();
        }
        let err = responses_to_openai_chat_request(req.to_string().as_bytes(), "m").unwrap_err();
        assert!(
            matches!(&err, TranslateError::Unsupported(m) if m.contains(name)),
            "{name}: {err:?}"
        );
        let e = crate::error::GatewayError::from(err);
        assert_eq!(e.status(), 400);
        let body = value(&e.body_for(crate::protocol::ClientProtocol::Responses));
        assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
        assert!(body["error"]["message"].as_str().unwrap().contains(name));
    }
    let err = responses_to_openai_chat_request(br#"{"model":"m"}"#, "m").unwrap_err();
    assert!(matches!(err, TranslateError::InvalidRequest(_)), "{err:?}");
}

#[test]
fn whole_answer_with_text_and_a_tool_call() {
    let chat = json!({
        "id": "chatcmpl-abc", "object": "chat.completion", "created": 1700000000u64,
        "model": "up-model",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": "Checking.",
            "tool_calls": [{"id": "call_9", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]}}],
        "usage": {"prompt_tokens": 20, "completion_tokens": 7, "total_tokens": 27,
            "prompt_tokens_details": {"cached_tokens": 4},
            "completion_tokens_details": {"reasoning_tokens": 2}}
    });
    let out = openai_chat_response_to_responses(chat.to_string().as_bytes(), "m").unwrap();
    let r = value(&out);
    assert_eq!(r["id"], "resp_abc");
    assert_eq!(r["object"], "response");
    assert_eq!(r["status"], "completed");
    assert_eq!(r["created_at"], 1700000000u64);
    assert_eq!(r["model"], "up-model");
    assert_eq!(
        r["output"],
        json!([
            {"id": "msg_abc", "type": "message", "status": "completed", "role": "assistant",
             "content": [{"type": "output_text", "text": "Checking.", "annotations": [],
                          "logprobs": []}]},
            {"id": "fc_9", "type": "function_call", "status": "completed", "call_id": "call_9",
             "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}
        ])
    );
    assert_eq!(
        r["usage"],
        json!({"input_tokens": 20, "input_tokens_details": {"cached_tokens": 4},
               "output_tokens": 7, "output_tokens_details": {"reasoning_tokens": 2},
               "total_tokens": 27})
    );
    // The gateway reads the same usage from the Responses body (a native answer).
    assert_eq!(
        crate::usage::usage_from_json(&out),
        Some(Usage {
            input_tokens: 20,
            output_tokens: 7,
            cached_input_tokens: 4,
            reasoning_tokens: 2,
            ..Usage::default()
        })
    );
    let cut = json!({"id": "x", "choices": [{"finish_reason": "length",
        "message": {"role": "assistant", "content": "Hel"}}]});
    let r = value(&openai_chat_response_to_responses(cut.to_string().as_bytes(), "m").unwrap());
    assert_eq!(r["status"], "incomplete");
    assert_eq!(r["incomplete_details"]["reason"], "max_output_tokens");
}

fn chat_chunk(delta: Value, finish: Option<&str>) -> String {
    let v = json!({"id": "chatcmpl-s1", "object": "chat.completion.chunk", "created": 1,
        "model": "up", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
    format!("data: {v}\n\n")
}

fn chat_stream(tool: bool) -> Vec<u8> {
    let mut s = chat_chunk(json!({"role": "assistant", "content": ""}), None);
    s += &chat_chunk(json!({"content": "Hello"}), None);
    s += &chat_chunk(json!({"content": " wörld 🚀"}), None);
    if tool {
        s += &chat_chunk(
            json!({"tool_calls": [{"index": 0, "id": "call_7", "type": "function",
                "function": {"name": "get_weather", "arguments": ""}}]}),
            None,
        );
        s += &chat_chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\":"}}]}),
            None,
        );
        s += &chat_chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"Paris\"}"}}]}),
            None,
        );
    }
    s += &chat_chunk(json!({}), Some(if tool { "tool_calls" } else { "stop" }));
    s += r#"data: {"id":"chatcmpl-s1","object":"chat.completion.chunk","created":1,"model":"up","choices":[],"usage":{"prompt_tokens":11,"completion_tokens":5,"total_tokens":16,"prompt_tokens_details":{"cached_tokens":3}}}"#;
    s += "\n\ndata: [DONE]\n\n";
    s.into_bytes()
}

fn make() -> Box<dyn StreamTranslator> {
    Box::new(OpenAiStreamToResponses::new("m"))
}

fn types(out: &[u8]) -> Vec<String> {
    let evs = sse_values(out);
    for (i, (name, data)) in evs.iter().enumerate() {
        assert_eq!(name.as_deref(), data["type"].as_str(), "event name = type");
        assert_eq!(data["sequence_number"], i, "sequence numbers");
    }
    evs.into_iter()
        .map(|(n, _)| n.unwrap_or_default())
        .collect()
}

#[test]
fn stream_of_text_at_every_chunking() {
    let (out, usage) = check_rechunking(&make, &chat_stream(false));
    assert_eq!(
        types(&out),
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    let expected = Usage {
        input_tokens: 11,
        output_tokens: 5,
        cached_input_tokens: 3,
        ..Usage::default()
    };
    assert_eq!(usage, expected);
    let evs = sse_values(&out);
    assert_eq!(evs[4].1["delta"], "Hello");
    assert_eq!(evs[6].1["text"], "Hello wörld 🚀");
    let done = &evs[9].1["response"];
    assert_eq!(done["status"], "completed");
    assert_eq!(done["id"], "resp_s1");
    assert_eq!(done["output"][0]["content"][0]["text"], "Hello wörld 🚀");
    assert_eq!(done["usage"]["input_tokens"], 11);
    assert_eq!(done["usage"]["output_tokens"], 5);
    assert_eq!(done["usage"]["input_tokens_details"]["cached_tokens"], 3);
    assert_eq!(done["usage"]["total_tokens"], 16);
}

#[test]
fn stream_with_a_tool_call() {
    let (out, _) = check_rechunking(&make, &chat_stream(true));
    let t = types(&out);
    assert_eq!(
        t[6..],
        [
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    let evs = sse_values(&out);
    assert_eq!(evs[9].1["output_index"], 1);
    assert_eq!(evs[9].1["item"]["type"], "function_call");
    assert_eq!(evs[12].1["arguments"], "{\"city\":\"Paris\"}");
    let output = &evs[14].1["response"]["output"];
    assert_eq!(output[1]["call_id"], "call_7");
    assert_eq!(output[1]["name"], "get_weather");
    assert_eq!(output[1]["arguments"], "{\"city\":\"Paris\"}");
}

#[test]
fn stream_cut_short_or_failed_ends_with_an_error_event() {
    let full = chat_stream(false);
    let cut = &full[..full.len() / 3];
    let mut t = make();
    let out = super::test_support::run(&mut *t, &[cut]);
    let evs = sse_values(&out);
    let (name, last) = evs.last().unwrap();
    assert_eq!(name.as_deref(), Some("error"));
    assert_eq!(last["code"], "stream_incomplete");
    assert!(t.usage().estimated);
    let failed = b"data: {\"error\":{\"message\":\"boom\",\"type\":\"server_error\"}}\n\n";
    let out = super::test_support::run(&mut *make(), &[failed]);
    assert_eq!(types(&out), ["error"]);
}

/// A native Responses stream as the mock (and OpenAI) sends it.
fn native_stream() -> Vec<u8> {
    let resp = |status: &str, usage: Value| {
        json!({"id": "resp_1", "object": "response", "status": status, "output": [],
               "usage": usage})
    };
    let mut s = String::new();
    let mut ev = |kind: &str, mut v: Value| {
        v["type"] = json!(kind);
        s += &format!("event: {kind}\ndata: {v}\n\n");
    };
    ev(
        "response.created",
        json!({"response": resp("in_progress", Value::Null)}),
    );
    for d in ["Hello", " wörld", " 世界"] {
        ev(
            "response.output_text.delta",
            json!({"item_id": "msg_1", "output_index": 0, "content_index": 0, "delta": d}),
        );
    }
    ev(
        "response.completed",
        json!({"response": resp("completed", json!({"input_tokens": 12,
            "input_tokens_details": {"cached_tokens": 2}, "output_tokens": 9,
            "output_tokens_details": {"reasoning_tokens": 6}, "total_tokens": 21}))}),
    );
    s.into_bytes()
}

/// The usage of a native Responses stream, exact whatever its chunking.
#[test]
fn native_stream_usage_at_every_chunking() {
    let make = || -> Box<dyn StreamTranslator> { Box::new(ResponsesStreamUsage::new()) };
    let (out, usage) = check_rechunking(&make, &native_stream());
    assert!(out.is_empty());
    assert_eq!(
        usage,
        Usage {
            input_tokens: 12,
            output_tokens: 9,
            cached_input_tokens: 2,
            reasoning_tokens: 6,
            ..Usage::default()
        }
    );
    let crlf = super::test_support::crlf(std::str::from_utf8(&native_stream()).unwrap());
    assert_eq!(check_rechunking(&make, &crlf).1, usage);
    // Cut before `response.completed`: the output is estimated.
    let full = native_stream();
    let mut t = make();
    t.push(&full[..full.len() / 2]);
    t.finish();
    assert!(t.usage().estimated && t.usage().output_tokens > 0);
    assert!(t.first_content_seen());
}

/// Every prefix and random damage of each input: no panic, whatever comes in.
#[test]
fn damaged_inputs_never_panic() {
    use super::test_support::{fuzz, stream_no_panic};
    let req = json!({"model": "m", "instructions": "x", "input": [
        {"role": "user", "content": [{"type": "input_text", "text": "hi"},
            {"type": "input_image", "image_url": "data:image/png;base64,AA=="}]},
        {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c", "output": "ok"}],
        "tools": [{"type": "function", "name": "f", "parameters": {}}],
        "tool_choice": {"type": "function", "name": "f"}, "stream": true})
    .to_string();
    fuzz(&[req.as_bytes()], &|b| {
        let _ = responses_to_openai_chat_request(b, "m");
    });
    let chat = json!({"id": "x", "choices": [{"finish_reason": "stop", "message":
        {"content": "hi", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{}"}}]}}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 2}})
    .to_string();
    fuzz(&[chat.as_bytes()], &|b| {
        let _ = openai_chat_response_to_responses(b, "m");
    });
    fuzz(&[&chat_stream(true)], &|b| stream_no_panic(&make, b));
    let observer = || -> Box<dyn StreamTranslator> { Box::new(ResponsesStreamUsage::new()) };
    fuzz(&[&native_stream()], &|b| stream_no_panic(&observer, b));
}
