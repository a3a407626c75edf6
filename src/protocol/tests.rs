//! Every registered protocol answers the trait's questions as the gateway did before the
//! trait existed (table-driven), and the registry is consistent.
#![allow(clippy::unwrap_used)]

use super::*;
use crate::translate::TranslateError;

fn key() -> ApiKey {
    ApiKey::new("k".into(), "sk-test".into()).unwrap()
}

fn call(endpoint: Endpoint, stream: bool) -> Call<'static> {
    Call {
        base_path: "/base",
        api_version: None,
        endpoint,
        model: "m-1",
        stream,
    }
}

/// The headers `authenticate` sets on an empty request.
fn auth_headers(p: Protocol) -> Vec<(String, String)> {
    let mut req = RequestHeader::build("POST", b"/", None).unwrap();
    p.authenticate(&mut req, &key()).unwrap();
    let mut h: Vec<(String, String)> = req
        .headers
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_string()))
        .collect();
    h.sort();
    h
}

#[test]
fn path_and_authentication_per_family() {
    use Endpoint::*;
    /// (protocol, endpoint, stream, path, authentication headers)
    type Row = (
        Protocol,
        Endpoint,
        bool,
        &'static str,
        &'static [(&'static str, &'static str)],
    );
    let table: &[Row] = &[
        (
            OPENAI,
            ChatCompletions,
            false,
            "/base/chat/completions",
            &[("authorization", "Bearer sk-test")],
        ),
        (
            OPENAI,
            Completions,
            true,
            "/base/completions",
            &[("authorization", "Bearer sk-test")],
        ),
        (
            OPENAI,
            Embeddings,
            false,
            "/base/embeddings",
            &[("authorization", "Bearer sk-test")],
        ),
        (
            AZURE,
            ChatCompletions,
            true,
            "/base/openai/deployments/m-1/chat/completions?api-version=2024-10-21",
            &[("api-key", "sk-test")],
        ),
        (
            AZURE,
            Embeddings,
            false,
            "/base/openai/deployments/m-1/embeddings?api-version=2024-10-21",
            &[("api-key", "sk-test")],
        ),
        (
            ANTHROPIC,
            Messages,
            true,
            "/base/messages",
            &[
                ("anthropic-version", "2023-06-01"),
                ("x-api-key", "sk-test"),
            ],
        ),
        (
            GEMINI,
            ChatCompletions,
            false,
            "/base/v1beta/models/m-1:generateContent",
            &[("x-goog-api-key", "sk-test")],
        ),
        (
            GEMINI,
            ChatCompletions,
            true,
            "/base/v1beta/models/m-1:streamGenerateContent?alt=sse",
            &[("x-goog-api-key", "sk-test")],
        ),
        (
            GEMINI,
            Embeddings,
            false,
            "/base/v1beta/models/m-1:batchEmbedContents",
            &[("x-goog-api-key", "sk-test")],
        ),
    ];
    for (p, endpoint, stream, path, headers) in table {
        assert_eq!(
            p.path(&call(*endpoint, *stream)),
            *path,
            "{p:?} {endpoint:?}"
        );
        let want: Vec<(String, String)> = headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        assert_eq!(auth_headers(*p), want, "{p:?}");
    }
}

#[test]
fn azure_api_version_and_deployment_name() {
    let c = Call {
        api_version: Some("2025-01-01"),
        model: "gpt/4o?x",
        ..call(Endpoint::ChatCompletions, false)
    };
    assert_eq!(
        AZURE.path(&c),
        "/base/openai/deployments/gpt4ox/chat/completions?api-version=2025-01-01"
    );
    assert!(AZURE.takes_api_version());
    for p in [OPENAI, ANTHROPIC, GEMINI] {
        assert!(!p.takes_api_version(), "{p:?}");
    }
}

#[test]
fn anthropic_keeps_a_client_version() {
    let mut req = RequestHeader::build("POST", b"/", None).unwrap();
    req.insert_header("anthropic-version", "2099-01-01")
        .unwrap();
    ANTHROPIC.authenticate(&mut req, &key()).unwrap();
    assert_eq!(req.headers["anthropic-version"], "2099-01-01");
}

#[test]
fn native_clients_and_forwarded_headers() {
    let table = [
        (OPENAI, Some(ClientProtocol::OpenAi)),
        (AZURE, Some(ClientProtocol::OpenAi)),
        (ANTHROPIC, Some(ClientProtocol::Anthropic)),
        (GEMINI, None),
    ];
    for (p, native) in table {
        assert_eq!(p.native_client(), native, "{p:?}");
    }
    assert_eq!(ClientProtocol::OpenAi.own_headers(), ["openai-beta"]);
    assert_eq!(
        ClientProtocol::Anthropic.own_headers(),
        ["anthropic-version", "anthropic-beta"]
    );
    assert_eq!(
        ClientProtocol::for_endpoint(Endpoint::Messages),
        ClientProtocol::Anthropic
    );
    for e in [
        Endpoint::ChatCompletions,
        Endpoint::Completions,
        Endpoint::Embeddings,
        Endpoint::Models,
    ] {
        assert_eq!(ClientProtocol::for_endpoint(e), ClientProtocol::OpenAi);
    }
}

#[test]
fn request_translation_from_openai() {
    let chat = br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true}}"#;
    let embed = br#"{"model":"m","input":["a","b"]}"#;
    use Endpoint::*;
    /// (protocol, endpoint, body, upstream endpoint, translated, include_usage, embeddings)
    type Row = (
        Protocol,
        Endpoint,
        &'static [u8],
        Endpoint,
        bool,
        bool,
        bool,
    );
    let ok: &[Row] = &[
        (
            OPENAI,
            ChatCompletions,
            chat,
            ChatCompletions,
            false,
            false,
            false,
        ),
        (AZURE, Embeddings, embed, Embeddings, false, false, false),
        (
            ANTHROPIC,
            ChatCompletions,
            chat,
            Messages,
            true,
            true,
            false,
        ),
        (
            GEMINI,
            ChatCompletions,
            chat,
            ChatCompletions,
            true,
            true,
            false,
        ),
        (GEMINI, Embeddings, embed, Embeddings, true, false, true),
    ];
    for (p, endpoint, body, upstream, translated, usage, embeddings) in ok {
        let out = p.request_from_openai(*endpoint, body, "up").unwrap();
        assert_eq!(out.endpoint, *upstream, "{p:?} {endpoint:?}");
        assert_eq!(out.body.is_some(), *translated, "{p:?} {endpoint:?}");
        assert_eq!(out.include_usage, *usage, "{p:?} {endpoint:?}");
        assert_eq!(out.embeddings.is_some(), *embeddings, "{p:?} {endpoint:?}");
    }
    for (p, endpoint) in [
        (ANTHROPIC, Embeddings),
        (ANTHROPIC, Completions),
        (GEMINI, Completions),
    ] {
        assert_eq!(
            p.request_from_openai(endpoint, chat, "up").unwrap_err(),
            PlanError::Unsupported {
                endpoint,
                protocol: p.name()
            }
        );
    }
    assert!(matches!(
        ANTHROPIC.request_from_openai(ChatCompletions, b"[1]", "up"),
        Err(PlanError::Translate(TranslateError::NotAnObject))
            | Err(PlanError::Translate(TranslateError::InvalidJson(_)))
    ));
}

#[test]
fn responses_usage_and_errors() {
    let openai = br#"{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#;
    let anthropic = br#"{"id":"msg_1","type":"message","role":"assistant","model":"c","content":[{"type":"text","text":"hi"}],"stop_reason":"end_turn","usage":{"input_tokens":3,"output_tokens":2}}"#;
    let gemini = br#"{"candidates":[{"content":{"role":"model","parts":[{"text":"hi"}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":3,"candidatesTokenCount":2}}"#;
    for (p, body) in [
        (OPENAI, &openai[..]),
        (AZURE, &openai[..]),
        (ANTHROPIC, &anthropic[..]),
        (GEMINI, &gemini[..]),
    ] {
        let (out, usage) = p.response_to_openai(body, "m", None).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["choices"][0]["message"]["content"], "hi", "{p:?}");
        assert_eq!((usage.input_tokens, usage.output_tokens), (3, 2), "{p:?}");
        if p.native_client().is_some() {
            let native = p.usage(body).unwrap();
            assert_eq!((native.input_tokens, native.output_tokens), (3, 2), "{p:?}");
        }
        // OpenAI-family streams need no translator; the others have one.
        assert_eq!(
            p.stream_to_openai("m", true).is_some(),
            p.native_client() != Some(ClientProtocol::OpenAi),
            "{p:?}"
        );
    }
    let errors: [(Protocol, &[u8]); 4] = [
        (
            OPENAI,
            br#"{"error":{"message":"bad","type":"invalid_request_error"}}"#,
        ),
        (
            AZURE,
            br#"{"error":{"message":"bad","type":"invalid_request_error"}}"#,
        ),
        (
            ANTHROPIC,
            br#"{"type":"error","error":{"type":"invalid_request_error","message":"bad"}}"#,
        ),
        (
            GEMINI,
            br#"{"error":{"code":400,"message":"bad","status":"INVALID_ARGUMENT"}}"#,
        ),
    ];
    for (p, body) in errors {
        let v: serde_json::Value = serde_json::from_slice(&p.error_to_openai(body)).unwrap();
        assert_eq!(v["error"]["message"], "bad", "{p:?}");
        let a = ClientProtocol::Anthropic.error_from_openai(p.error_to_openai(body));
        let a: serde_json::Value = serde_json::from_slice(&a).unwrap();
        assert_eq!(a["type"], "error", "{p:?}");
        assert_eq!(a["error"]["message"], "bad", "{p:?}");
    }
}

#[test]
fn registry() {
    let mut names = std::collections::HashSet::new();
    for (name, p, url) in PRESETS {
        assert!(names.insert(*name), "{name} twice");
        assert_eq!(
            preset(name).map(|(q, u)| (q.name(), u)),
            Some((p.name(), *url))
        );
        if let Some(url) = url {
            assert!(
                url.starts_with("http://") || url.starts_with("https://"),
                "{name}"
            );
        }
    }
    let family = |kind: &str| preset(kind).unwrap().0.name();
    assert_eq!(family("openai"), OPENAI.name());
    assert_eq!(family("deepseek"), OPENAI.name());
    assert_eq!(family("openai-compatible"), OPENAI.name());
    assert_eq!(family("azure"), AZURE.name());
    assert_eq!(family("anthropic"), ANTHROPIC.name());
    assert_eq!(family("gemini"), GEMINI.name());
    assert!(preset("nope").is_none());
    assert_eq!(format!("{:?}", GEMINI), "Gemini");
}
