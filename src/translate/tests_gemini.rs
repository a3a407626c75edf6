//! Tests of the Gemini translations against the fixtures in `tests/fixtures/gemini/`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{json, Value};

use super::gemini_response::usage_from_gemini;
use super::json::Json;
use super::test_support::*;
use super::*;
use crate::usage::{estimate_tokens, Usage};

macro_rules! fixture {
    ($name:literal) => {
        include_str!(concat!("../../tests/fixtures/gemini/", $name))
    };
}

fn to_openai(include_usage: bool) -> Box<dyn StreamTranslator> {
    let mut t = GeminiStreamToOpenAi::new("gemini-flash", include_usage);
    t.w.created = 0;
    t.w.id = "chatcmpl-test".into();
    Box::new(t)
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

#[test]
fn paths() {
    assert_eq!(
        gemini_path("gemini-2.5-flash", false),
        "/v1beta/models/gemini-2.5-flash:generateContent"
    );
    assert_eq!(
        gemini_path("models/gemini-2.5-flash", true),
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    );
    assert_eq!(
        gemini_path("../x:y?z/é", false),
        "/v1beta/models/..%2Fx%3Ay%3Fz%2F%C3%A9:generateContent"
    );
    assert_eq!(
        gemini_embed_path("text-embedding-004"),
        "/v1beta/models/text-embedding-004:batchEmbedContents"
    );
}

#[test]
fn request_fixture() {
    let t = openai_chat_to_gemini(fixture!("client_request.json").as_bytes()).unwrap();
    assert_json(&t.body, fixture!("expected_upstream_request.json"));
    assert!(!t.stream && !t.include_usage);
}

#[test]
fn response_fixture() {
    let (body, u) = gemini_to_openai_chat_response(
        fixture!("upstream_response.json").as_bytes(),
        "gemini-flash",
    )
    .unwrap();
    assert_json(&body, fixture!("expected_client_response.json"));
    assert_eq!(u, usage(270, 256, 111, 100));
}

#[test]
fn stream_fixture() {
    let input = fixture!("upstream_stream.sse").as_bytes();
    assert!(input.windows(4).any(|w| w == b"\r\n\r\n"));
    let (out, u) = check_rechunking(&|| to_openai(true), input);
    assert_sse(&out, fixture!("expected_client_stream.sse"));
    assert_eq!(u, usage(9, 0, 42, 24));
    let lf = fixture!("upstream_stream.sse").replace("\r\n", "\n");
    let (lf_out, _) = check_rechunking_light(&|| to_openai(true), lf.as_bytes());
    assert_eq!(lf_out, out);
}

#[test]
fn tool_request_fixture() {
    let t = openai_chat_to_gemini(fixture!("tool_client_request.json").as_bytes()).unwrap();
    assert_json(&t.body, fixture!("tool_expected_upstream_request.json"));
    assert!(t.stream && !t.include_usage);
    // Schema property order survives.
    let text = String::from_utf8(t.body).unwrap();
    assert!(text.find("\"brightness\"").unwrap() < text.find("\"color_temp\"").unwrap());
}

#[test]
fn tool_response_fixture() {
    let (body, u) = gemini_to_openai_chat_response(
        fixture!("tool_upstream_response.json").as_bytes(),
        "gemini-flash",
    )
    .unwrap();
    assert_json(&body, fixture!("tool_expected_client_response.json"));
    assert_eq!(u, usage(120, 0, 30, 0));
}

#[test]
fn tool_stream_fixture() {
    let input = fixture!("tool_upstream_stream.sse").as_bytes();
    let (out, u) = check_rechunking(&|| to_openai(false), input);
    assert_sse(&out, fixture!("tool_expected_client_stream.sse"));
    assert_eq!(u, usage(120, 64, 35, 15));
}

#[test]
fn tool_round_trip_through_the_client() {
    // The tool calls the client got back (with their thought signature) are accepted in
    // the follow-up request and reach Gemini as functionCall / functionResponse parts.
    let (body, _) = gemini_to_openai_chat_response(
        fixture!("tool_upstream_response.json").as_bytes(),
        "gemini-flash",
    )
    .unwrap();
    let msg = value(&body)["choices"][0]["message"].clone();
    let calls = msg["tool_calls"].as_array().unwrap().clone();
    let mut messages = vec![json!({"role": "user", "content": "go"}), msg];
    for c in &calls {
        messages.push(json!({"role": "tool", "tool_call_id": c["id"], "content": "done"}));
    }
    let req = json!({"messages": messages});
    let t = openai_chat_to_gemini(req.to_string().as_bytes()).unwrap();
    let v = value(&t.body);
    assert_eq!(
        v["contents"][1]["parts"][0],
        json!({"functionCall": {"name": "set_light_values", "args": {"brightness": 50, "color_temp": "cool"}}, "thoughtSignature": "EjQKMgEM"})
    );
    assert_eq!(
        v["contents"][2],
        json!({"role": "user", "parts": [
            {"functionResponse": {"name": "set_light_values", "response": {"output": "done"}}},
            {"functionResponse": {"name": "get_time", "response": {"output": "done"}}},
        ]})
    );
}

#[test]
fn finish_reasons_and_blocked_prompts() {
    for (reason, want) in [
        ("STOP", "stop"),
        ("MAX_TOKENS", "length"),
        ("SAFETY", "content_filter"),
        ("RECITATION", "content_filter"),
        ("PROHIBITED_CONTENT", "content_filter"),
        ("OTHER", "stop"),
    ] {
        let body = json!({"candidates": [{"content": {"parts": [{"text": "x"}, {"text": "why", "thought": true}]}, "finishReason": reason}]});
        let (out, _) = gemini_to_openai_chat_response(body.to_string().as_bytes(), "m").unwrap();
        let v = value(&out);
        assert_eq!(v["choices"][0]["finish_reason"], want);
        assert_eq!(v["choices"][0]["message"]["content"], "x");
        assert_eq!(v["choices"][0]["message"]["reasoning_content"], "why");
    }
    // Two candidates → two choices.
    let body = json!({"candidates": [
        {"content": {"parts": [{"text": "a"}]}, "finishReason": "STOP", "index": 0},
        {"content": {"parts": [{"text": "b"}]}, "finishReason": "MAX_TOKENS", "index": 1},
    ]});
    let v = value(
        &gemini_to_openai_chat_response(body.to_string().as_bytes(), "m")
            .unwrap()
            .0,
    );
    assert_eq!(v["choices"][1]["index"], 1);
    assert_eq!(v["choices"][1]["message"]["content"], "b");
    assert_eq!(v["choices"][1]["finish_reason"], "length");
    // Blocked prompt.
    let body = json!({"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 8, "totalTokenCount": 8}});
    let (out, u) = gemini_to_openai_chat_response(body.to_string().as_bytes(), "m").unwrap();
    let v = value(&out);
    assert_eq!(v["choices"][0]["finish_reason"], "content_filter");
    assert_eq!(v["choices"][0]["message"]["content"], Value::Null);
    assert_eq!(u.input_tokens, 8);
    let sse = "data: {\"promptFeedback\": {\"blockReason\": \"SAFETY\"}, \"usageMetadata\": {\"promptTokenCount\": 8}}\n\n";
    let (out, _) = check_rechunking(&|| to_openai(false), sse.as_bytes());
    let evs = sse_values(&out);
    assert_eq!(evs[1].1["choices"][0]["finish_reason"], "content_filter");
    assert_eq!(evs[2].1, "[DONE]");
}

#[test]
fn stream_multiple_candidates() {
    let sse = concat!(
        "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"a\"}]}, \"index\": 0}, {\"content\": {\"parts\": [{\"text\": \"b\"}]}, \"index\": 1}]}\n\n",
        "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"c\"}]}, \"index\": 1, \"finishReason\": \"MAX_TOKENS\"}, {\"content\": {\"parts\": [{\"text\": \"d\"}]}, \"index\": 0, \"finishReason\": \"STOP\"}], \"usageMetadata\": {\"promptTokenCount\": 3, \"candidatesTokenCount\": 4}}\n\n",
    );
    let (out, u) = check_rechunking(&|| to_openai(true), sse.as_bytes());
    let evs = sse_values(&out);
    let finishes: Vec<(u64, &str)> = evs
        .iter()
        .filter_map(|(_, v)| {
            let c = &v["choices"][0];
            c["finish_reason"]
                .as_str()
                .map(|f| (c["index"].as_u64().unwrap(), f))
        })
        .collect();
    assert_eq!(finishes, vec![(0, "stop"), (1, "length")]);
    assert_eq!(u, usage(3, 0, 4, 0));
}

#[test]
fn stream_errors_and_truncation() {
    let sse = concat!(
        "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"partial\"}]}}]}\n\n",
        "data: {\"error\": {\"code\": 503, \"message\": \"The model is overloaded.\", \"status\": \"UNAVAILABLE\"}}\n\n",
    );
    let (out, u) = check_rechunking(&|| to_openai(true), sse.as_bytes());
    let evs = sse_values(&out);
    assert_eq!(
        evs.last().unwrap().1,
        json!({"error": {"message": "The model is overloaded.", "type": "server_error", "param": null, "code": "UNAVAILABLE"}})
    );
    assert!(!evs.iter().any(|(_, v)| v == "[DONE]"));
    assert_eq!(
        u,
        Usage {
            output_tokens: estimate_tokens("partial"),
            estimated: true,
            ..Usage::default()
        }
    );

    // Every prefix without the finishing chunk ends with an error, not [DONE].
    let input = fixture!("upstream_stream.sse");
    let last = input.rfind("data:").unwrap();
    for i in 0..last {
        let mut t = to_openai(true);
        let out = run(&mut *t, &[&input.as_bytes()[..i]]);
        let evs = sse_values(&out);
        assert!(!evs.iter().any(|(_, v)| v == "[DONE]"), "prefix {i}");
        assert_eq!(
            evs.last().unwrap().1["error"]["code"],
            "upstream_incomplete",
            "prefix {i}"
        );
    }
}

#[test]
fn request_mapping_details() {
    let req = json!({
        "messages": [
            {"role": "developer", "content": "be brief"},
            {"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.JPG?x=1"}},
                {"type": "image_url", "image_url": "https://example.com/noext"},
                {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0="}},
                {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
            ]},
        ],
        "max_completion_tokens": 64,
        "stop": "END",
        "presence_penalty": 0.1,
        "frequency_penalty": 0.2,
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object", "additionalProperties": false}}},
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {"a": {"const": "x", "format": "uri"}, "b": {"type": "array", "items": {"type": "string", "format": "date-time", "title": "t", "examples": ["e"]}}, "c": {"anyOf": [{"type": "string"}, {"type": "null"}]}}}}}],
        "tool_choice": {"type": "function", "function": {"name": "f"}},
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    let t = openai_chat_to_gemini(req.to_string().as_bytes()).unwrap();
    assert!(t.stream && t.include_usage);
    assert_eq!(
        value(&t.body),
        json!({
            "contents": [{"role": "user", "parts": [
                {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://example.com/cat.JPG?x=1"}},
                {"fileData": {"fileUri": "https://example.com/noext"}},
                {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0="}},
                {"inlineData": {"mimeType": "audio/wav", "data": "UklGRg=="}},
            ]}],
            "systemInstruction": {"parts": [{"text": "be brief"}]},
            "tools": [{"functionDeclarations": [{"name": "f", "parameters": {"type": "object", "properties": {
                "a": {"enum": ["x"]},
                "b": {"type": "array", "items": {"type": "string", "format": "date-time", "title": "t"}},
                "c": {"anyOf": [{"type": "string"}, {"type": "null"}]},
            }}}]}],
            "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["f"]}},
            "generationConfig": {
                "presencePenalty": 0.1,
                "frequencyPenalty": 0.2,
                "maxOutputTokens": 64,
                "stopSequences": ["END"],
                "responseMimeType": "application/json",
                "responseJsonSchema": {"type": "object", "additionalProperties": false},
            },
        })
    );
    for (choice, mode) in [("auto", "AUTO"), ("none", "NONE"), ("required", "ANY")] {
        let req = json!({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": choice});
        let v = value(
            &openai_chat_to_gemini(req.to_string().as_bytes())
                .unwrap()
                .body,
        );
        assert_eq!(v["toolConfig"]["functionCallingConfig"]["mode"], mode);
    }
}

#[test]
fn invalid_requests_are_errors() {
    let cases: Vec<(Value, &str)> = vec![
        (json!("x"), "object"),
        (json!({"messages": {}}), "`messages` must be an array"),
        (json!({"messages": []}), "at least one"),
        (
            json!({"messages": [{"role": "tool", "tool_call_id": "nope", "content": "x"}]}),
            "does not match",
        ),
        (
            json!({"messages": [{"role": "tool", "content": "x"}]}),
            "tool_call_id",
        ),
        (
            json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x"}}]}]}),
            "http(s) URL",
        ),
        (
            json!({"messages": [{"role": "user", "content": [{"type": "video"}]}]}),
            "video",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"}], "n": 0}),
            "`n`",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"}], "seed": "7"}),
            "seed",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"}], "top_p": []}),
            "top_p",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"}], "stop": [1]}),
            "stop",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "file_search"}]}),
            "file_search",
        ),
        (
            json!({"messages": [{"role": "assistant", "tool_calls": [{"id": "a", "function": {"name": "f", "arguments": "nope"}}]}]}),
            "not valid JSON",
        ),
    ];
    for (req, want) in cases {
        let err = openai_chat_to_gemini(req.to_string().as_bytes()).unwrap_err();
        assert!(err.to_string().contains(want), "{req}: {err}");
        assert_eq!(err.status(), 400);
    }
    for body in [&b"[]"[..], b"{}", b"{\"error\":{\"code\":400}}", b"\xff"] {
        let err = gemini_to_openai_chat_response(body, "m").unwrap_err();
        assert_eq!(err.status(), 502);
    }
}

#[test]
fn error_bodies() {
    let cases = [
        ("INVALID_ARGUMENT", "invalid_request_error"),
        ("FAILED_PRECONDITION", "invalid_request_error"),
        ("UNAUTHENTICATED", "authentication_error"),
        ("PERMISSION_DENIED", "permission_error"),
        ("NOT_FOUND", "not_found_error"),
        ("RESOURCE_EXHAUSTED", "rate_limit_error"),
        ("INTERNAL", "server_error"),
        ("UNAVAILABLE", "server_error"),
    ];
    for (status, want) in cases {
        let body = json!({"error": {"code": 400, "message": "API key not valid. Please pass a valid API key.", "status": status}});
        let v = value(&gemini_error_to_openai(body.to_string().as_bytes()));
        assert_eq!(
            v,
            json!({"error": {"message": "API key not valid. Please pass a valid API key.", "type": want, "param": null, "code": status}})
        );
        let wrapped = json!([body]);
        assert_eq!(
            value(&gemini_error_to_openai(wrapped.to_string().as_bytes())),
            v
        );
    }
    let v = value(&gemini_error_to_openai(b"Service Unavailable"));
    assert_eq!(v["error"]["code"], "upstream_error");
    assert_eq!(v["error"]["type"], "server_error");
}

#[test]
fn embeddings_fixtures() {
    let (body, ctx) = openai_embeddings_to_gemini_batch(
        fixture!("embeddings_client_request.json").as_bytes(),
        "text-embedding-004",
    )
    .unwrap();
    assert_json(&body, fixture!("embeddings_expected_upstream_request.json"));
    let texts = [
        "The food was delicious and the waiter was friendly.",
        "世界",
    ];
    let estimate: u64 = texts.iter().map(|t| estimate_tokens(t)).sum();
    assert_eq!(estimate, 15);
    assert_eq!(
        ctx,
        EmbeddingsContext {
            inputs: 2,
            prompt_tokens_estimate: estimate,
            base64: false
        }
    );
    let (out, u) = gemini_batch_to_openai_embeddings(
        fixture!("embeddings_upstream_response.json").as_bytes(),
        "text-embedding-004",
        ctx,
    )
    .unwrap();
    assert_json(&out, fixture!("embeddings_expected_client_response.json"));
    assert_eq!(
        u,
        Usage {
            input_tokens: 15,
            estimated: true,
            ..Usage::default()
        }
    );
    // The values are re-emitted exactly as received.
    assert!(String::from_utf8(out)
        .unwrap()
        .contains("[0.0123,-0.0456,0.0789]"));
}

#[test]
fn embeddings_base64_single_input_and_errors() {
    let (body, ctx) = openai_embeddings_to_gemini_batch(
        br#"{"input":"hi","model":"m","encoding_format":"base64"}"#,
        "models/gemini-embedding-001",
    )
    .unwrap();
    assert_eq!(
        value(&body),
        json!({"requests": [{"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "hi"}]}}]})
    );
    assert!(ctx.base64);
    let (out, _) = gemini_batch_to_openai_embeddings(
        br#"{"embeddings":[{"values":[0.5,-0.25,0.125]}]}"#,
        "m",
        ctx,
    )
    .unwrap();
    // Little-endian f32, base64 (as OpenAI encodes it).
    assert_eq!(value(&out)["data"][0]["embedding"], "AAAAPwAAgL4AAAA+");

    for (req, want) in [
        (json!({"input": [1, 2, 3]}), "other than strings"),
        (json!({"input": []}), "must not be empty"),
        (json!({}), "`input`"),
        (json!({"input": "x", "dimensions": 0}), "dimensions"),
        (
            json!({"input": "x", "encoding_format": "int8"}),
            "encoding_format",
        ),
    ] {
        let err = openai_embeddings_to_gemini_batch(req.to_string().as_bytes(), "m").unwrap_err();
        assert!(err.to_string().contains(want), "{req}: {err}");
    }
    let ctx2 = EmbeddingsContext { inputs: 2, ..ctx };
    for body in [
        &br#"{"embeddings":[{"values":[1]}]}"#[..],
        br#"{"embeddings":[{"values":[1]},{"values":["x"]}]}"#,
        br#"{"embeddings":[{"values":[1]},{}]}"#,
        br#"{"error":{"code":429}}"#,
        b"{",
    ] {
        assert!(gemini_batch_to_openai_embeddings(body, "m", ctx2).is_err());
    }
}

#[test]
fn usage_table_gemini() {
    let u = Json::parse(
        br#"{"promptTokenCount":100,"cachedContentTokenCount":60,"candidatesTokenCount":20,"thoughtsTokenCount":7,"toolUsePromptTokenCount":5,"totalTokenCount":132}"#,
    )
    .unwrap();
    assert_eq!(usage_from_gemini(&u), usage(105, 60, 27, 7));
    assert_eq!(
        usage_from_gemini(&Json::parse(b"{}").unwrap()),
        Usage::default()
    );
}

#[test]
fn fuzz_never_panics() {
    let requests: Vec<&[u8]> = vec![
        fixture!("client_request.json").as_bytes(),
        fixture!("tool_client_request.json").as_bytes(),
    ];
    fuzz(&requests, &|b| {
        if let Ok(t) = openai_chat_to_gemini(b) {
            value(&t.body);
        }
    });
    let responses: Vec<&[u8]> = vec![
        fixture!("upstream_response.json").as_bytes(),
        fixture!("tool_upstream_response.json").as_bytes(),
    ];
    fuzz(&responses, &|b| {
        if let Ok((body, _)) = gemini_to_openai_chat_response(b, "m") {
            value(&body);
        }
        value(&gemini_error_to_openai(b));
    });
    fuzz(
        &[fixture!("embeddings_client_request.json").as_bytes()],
        &|b| {
            let _ = openai_embeddings_to_gemini_batch(b, "m");
        },
    );
    let ctx = EmbeddingsContext {
        inputs: 2,
        prompt_tokens_estimate: 1,
        base64: true,
    };
    fuzz(
        &[fixture!("embeddings_upstream_response.json").as_bytes()],
        &|b| {
            let _ = gemini_batch_to_openai_embeddings(b, "m", ctx);
        },
    );
    let streams: Vec<&[u8]> = vec![
        fixture!("upstream_stream.sse").as_bytes(),
        fixture!("tool_upstream_stream.sse").as_bytes(),
    ];
    fuzz(&streams, &|b| stream_no_panic(&|| to_openai(true), b));
}
