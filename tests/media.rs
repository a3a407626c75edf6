//! The media endpoints (images, audio, rerank, moderations): routed by model like chat,
//! uploads passed whole (failover included), each answer metered in its provider's unit
//! and priced by the unit prices; the official SDK against all of them; errors in OpenAI's
//! shape.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use common::*;
use serde_json::{json, Value};

fn config(mock: &Mock) -> String {
    format!(
        r#"providers:
  - name: media
    type: openai-compatible
    base_url: "{url}"
    api_keys:
      - {{name: one, key: sk-one}}
      - {{name: two, key: sk-two}}
    model_mapping: {{audio-alias: whisper-1}}
  - name: claude
    type: anthropic
    base_url: "{url}"
    api_keys: ["sk-ant"]
  - name: az
    type: azure
    base_url: "http://{addr}"
    api_keys: ["sk-az"]
routes:
  - name: policed
    path_prefix: /policed/v1
    deny:
      input: {{keywords: ["forbidden"]}}
    models:
      - model: "*"
        targets: [{{provider: media}}]
  - name: default
    forward_headers: ["x-mock-*"]
    models:
      - model: "claude-*"
        targets: [{{provider: claude}}]
      - model: "az-*"
        targets: [{{provider: az}}]
      - model: "*"
        targets: [{{provider: media}}]
pricing:
  defaults: false
  prices:
    - {{provider: media, model: dall-e-3, image: 0.04}}
    - {{provider: media, model: whisper-1, audio_minute: 0.006}}
    - {{provider: media, model: tts-1, characters: 15}}
    - {{provider: media, model: "rerank-*", search_units: 2}}
    - {{provider: media, model: gpt-image-1, input: 5, output: 40}}
"#,
        url = mock.url(),
        addr = mock.addr
    )
}

/// A `multipart/form-data` body of text `fields` and one file; (content type, body).
fn form(fields: &[(&str, &str)], file: &[u8]) -> (String, Vec<u8>) {
    let boundary = "tollgate-test-7MA4YWxkTrZu0gW";
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n")
                .as_bytes(),
        );
    }
    body.extend(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\nContent-Type: audio/wav\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(file);
    body.extend(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// Audio bytes that contain CRLF and dashes (but not the boundary line).
fn audio(len: usize) -> Vec<u8> {
    (0..len).map(|i| b"RIFF\r\n--\x00\xff"[i % 10]).collect()
}

async fn upload(
    gw: &Gateway,
    path: &str,
    fields: &[(&str, &str)],
    file: &[u8],
) -> reqwest::Response {
    let (content_type, body) = form(fields, file);
    client()
        .post(gw.url(path))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap()
}

fn request_id(resp: &reqwest::Response) -> String {
    resp.headers()["x-request-id"].to_str().unwrap().to_string()
}

/// The official SDK: images (URLs, tokens, an edit upload), a 3 MiB transcription, a
/// translation, a streamed transcription, speech, moderation, and an error; each call's
/// units and cost in the access log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_sdk_calls_every_media_endpoint_and_each_is_metered() {
    let Some(python) = openai_python() else {
        return;
    };
    let mock = Mock::start();
    let gw = Gateway::start(&config(&mock));
    let out = run_sdk_script(python, "openai_media.py", gw.url("/v1")).await;
    let ids: Value = serde_json::from_str(&out).unwrap();
    let line = |name: &str| gw.log_line(ids[name].as_str().unwrap());

    let images = line("images");
    assert_eq!(
        (images["endpoint"].as_str(), images["images"].as_u64()),
        (Some("images"), Some(2)),
        "{images}"
    );
    assert_eq!(images["cost"], "0.08", "{images}");
    let gpt_image = line("gpt_image");
    assert_eq!(gpt_image["output_tokens"], 272, "{gpt_image}");
    assert!(gpt_image.get("images").is_none(), "{gpt_image}");
    let edit = line("image_edit");
    assert_eq!(edit["endpoint"], "image_edits", "{edit}");
    assert_eq!(edit["output_tokens"], 272, "{edit}");

    // 3 MiB at 16,000 bytes a second: 197 s, at $0.006 a minute.
    let t = line("transcription");
    assert_eq!(
        (t["endpoint"].as_str(), t["audio_ms"].as_u64()),
        (Some("transcriptions"), Some(197_000)),
        "{t}"
    );
    assert_eq!(t["cost"], "0.0197", "{t}");
    assert_eq!(t["input_tokens"], 0, "{t}");
    let tr = line("translation");
    assert_eq!(
        (tr["endpoint"].as_str(), tr["audio_ms"].as_u64()),
        (Some("translations"), Some(4_000)),
        "{tr}"
    );

    let speech = line("speech");
    let chars = "Hello there, world".chars().count() as u64;
    assert_eq!(speech["characters"].as_u64(), Some(chars), "{speech}");
    assert_eq!(speech["cost"], "0.00027", "{speech}");
    let m = line("moderation");
    assert_eq!(
        (m["endpoint"].as_str(), m["input_tokens"].as_u64()),
        (Some("moderations"), Some(0)),
        "{m}"
    );
    assert_eq!(m["usage_estimated"], false, "{m}");

    let metrics = gw.metrics().await;
    let units = |unit: &str| metric_sum(&metrics, "tollgate_media_units_total", &[("unit", unit)]);
    assert!(units("images") >= 2.0, "{metrics}");
    assert!(units("audio_ms") >= 201_000.0, "{metrics}");
    assert!(units("characters") >= chars as f64, "{metrics}");

    // The usage rollups count the units too.
    let url = gw.admin_url("/admin/api/v1/usage?from=0");
    eventually("the media units in the rollups", || {
        let url = url.clone();
        async move {
            let t = get_json(&url, None).await["totals"].clone();
            t["images"] == 2 && t["audio_ms"] == 201_000 && t["characters"] == chars
        }
    })
    .await;
}

/// A multi-megabyte upload reaches the provider byte for byte, also on the second key after
/// the first failed; the model is mapped inside the form.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_fails_over_whole_and_its_model_is_mapped() {
    let mock = Mock::start();
    let gw = Gateway::start(&config(&mock));
    let file = audio(5 * 1024 * 1024 + 3);
    let fields = [("model", "whisper-1"), ("response_format", "json")];
    let (_, sent) = form(&fields, &file);
    let mut failed_over = false;
    for attempt in 0..20 {
        client()
            .delete(format!("http://{}/mock/faults", mock.addr))
            .send()
            .await
            .unwrap();
        let rule = json!({"key": "sk-one", "status": 503, "count": 1});
        client()
            .post(format!("http://{}/mock/faults", mock.addr))
            .json(&rule)
            .send()
            .await
            .unwrap();
        let resp = upload(&gw, "/v1/audio/transcriptions", &fields, &file).await;
        assert_eq!(resp.status(), 200, "attempt {attempt}");
        let h = resp.headers();
        assert_eq!(
            h["x-mock-file-bytes"].to_str().unwrap(),
            file.len().to_string()
        );
        assert_eq!(h["x-mock-body-fnv64"].to_str().unwrap(), fnv64(&sent));
        let id = request_id(&resp);
        let text = resp.text().await.unwrap();
        assert!(
            serde_json::from_str::<Value>(&text).unwrap()["text"].is_string(),
            "{text}"
        );
        let line = gw.log_line(&id);
        assert_eq!(line["audio_ms"], 328_000, "{line}");
        if line["retries"] == 1 {
            assert_eq!(line["key"], "two", "{line}");
            failed_over = true;
            break;
        }
    }
    assert!(failed_over, "no request met the failing key first");

    // `audio-alias` is sent as `whisper-1`: the form's model value is replaced in place.
    let small = audio(32_000);
    let resp = upload(
        &gw,
        "/v1/audio/transcriptions",
        &[("model", "audio-alias")],
        &small,
    )
    .await;
    assert_eq!(resp.status(), 200);
    let (_, expected) = form(&[("model", "whisper-1")], &small);
    assert_eq!(
        resp.headers()["x-mock-body-fnv64"].to_str().unwrap(),
        fnv64(&expected)
    );
    let line = gw.log_line(&request_id(&resp));
    assert_eq!(
        (line["model"].as_str(), line["upstream_model"].as_str()),
        (Some("audio-alias"), Some("whisper-1")),
        "{line}"
    );
    assert_eq!(line["audio_ms"], 2_000, "{line}");
}

/// Transcriptions in `text`, `srt` and `vtt` (no usage in the answer) are metered from the
/// last cue; a streamed one from its final event; Azure takes media per deployment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transcription_formats_streams_and_azure_are_metered() {
    let mock = Mock::start();
    let gw = Gateway::start(&config(&mock));
    let file = audio(48_000); // 3 s
    for (format, ms) in [
        ("srt", 3_000),
        ("vtt", 3_000),
        ("verbose_json", 3_000),
        ("text", 0),
    ] {
        let resp = upload(
            &gw,
            "/v1/audio/transcriptions",
            &[("model", "whisper-1"), ("response_format", format)],
            &file,
        )
        .await;
        assert_eq!(resp.status(), 200, "{format}");
        let line = gw.log_line(&request_id(&resp));
        assert_eq!(
            line["audio_ms"].as_u64().unwrap_or(0),
            ms,
            "{format}: {line}"
        );
    }
    let resp = upload(
        &gw,
        "/v1/audio/transcriptions",
        &[("model", "gpt-4o-transcribe"), ("stream", "true")],
        &file,
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let id = request_id(&resp);
    let text = resp.text().await.unwrap();
    let done: Value = serde_json::from_str(sse_data(&text).last().unwrap()).unwrap();
    assert_eq!(done["type"], "transcript.text.done", "{text}");
    let line = gw.log_line(&id);
    assert_eq!(
        line["input_tokens"], done["usage"]["input_tokens"],
        "{line}"
    );
    assert_eq!(
        line["output_tokens"], done["usage"]["output_tokens"],
        "{line}"
    );
    assert_eq!(line["stream"], true, "{line}");

    let resp = upload(
        &gw,
        "/v1/audio/transcriptions",
        &[("model", "az-whisper")],
        &file,
    )
    .await;
    assert_eq!(resp.status(), 200);
    let stats = mock_stats(&mock).await;
    assert!(
        stats["by_path"]["/openai/deployments/az-whisper/audio/transcriptions"]
            .as_u64()
            .unwrap()
            > 0,
        "{stats}"
    );
    let resp = client()
        .post(gw.url("/v1/images/generations"))
        .json(&json!({"model": "az-dalle", "prompt": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

/// Rerank, Jina's way (tokens) and Cohere's (search units, priced); speech streamed as SSE
/// reports tokens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rerank_and_streamed_speech_are_metered() {
    let mock = Mock::start();
    let gw = Gateway::start(&config(&mock));
    let docs = json!(["the cat sat", "dogs bark loudly", {"text": "a cat and a dog"}]);
    for (model, tokens, units) in [("jina-reranker-v2", true, 0), ("rerank-v3.5", false, 1)] {
        let resp = client()
            .post(gw.url("/v1/rerank"))
            .json(&json!({"model": model, "query": "cat", "documents": docs, "top_n": 2}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let id = request_id(&resp);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["results"].as_array().unwrap().len(), 2, "{body}");
        let line = gw.log_line(&id);
        assert_eq!(line["endpoint"], "rerank", "{line}");
        assert_eq!(line["input_tokens"].as_u64().unwrap() > 0, tokens, "{line}");
        assert_eq!(line["search_units"].as_u64().unwrap_or(0), units, "{line}");
        if units > 0 {
            assert_eq!(line["cost"], "0.002", "{line}");
        }
    }
    let resp = client()
        .post(gw.url("/v1/audio/speech"))
        .json(&json!({"model": "gpt-4o-mini-tts", "voice": "alloy", "input": "sixteen chars!!!", "stream_format": "sse"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let id = request_id(&resp);
    let text = resp.text().await.unwrap();
    assert!(text.contains("speech.audio.done"), "{text}");
    let line = gw.log_line(&id);
    assert_eq!(
        (
            line["input_tokens"].as_u64(),
            line["output_tokens"].as_u64()
        ),
        (Some(4), Some(160)),
        "{line}"
    );
}

/// Bad uploads and unsupported targets are clear errors in OpenAI's shape; a route whose
/// content policies cannot read a media request refuses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_media_requests_are_openai_errors() {
    let mock = Mock::start();
    let gw = Gateway::start(&config(&mock));
    let expect = |status: u16, code: &str, resp: (u16, Value)| {
        assert_eq!(resp.0, status, "{}", resp.1);
        assert_eq!(resp.1["error"]["code"], code, "{}", resp.1);
        assert!(
            resp.1["error"]["message"].as_str().unwrap().len() > 10,
            "{}",
            resp.1
        );
    };
    let send = |path: &str, content_type: &str, body: Vec<u8>| {
        let req = client()
            .post(gw.url(path))
            .header("content-type", content_type)
            .body(body);
        async move {
            let resp = req.send().await.unwrap();
            (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
        }
    };
    // Not multipart, no boundary, cut short, no model.
    expect(
        400,
        "invalid_body",
        send(
            "/v1/audio/transcriptions",
            "application/json",
            b"{\"model\":\"whisper-1\"}".to_vec(),
        )
        .await,
    );
    expect(
        400,
        "invalid_body",
        send(
            "/v1/audio/transcriptions",
            "multipart/form-data",
            b"x".to_vec(),
        )
        .await,
    );
    let (ct, body) = form(&[("model", "whisper-1")], b"abc");
    expect(
        400,
        "invalid_body",
        send(
            "/v1/audio/transcriptions",
            &ct,
            body[..body.len() - 12].to_vec(),
        )
        .await,
    );
    let (ct, body) = form(&[("language", "en")], b"abc");
    expect(
        400,
        "missing_model",
        send("/v1/images/edits", &ct, body).await,
    );
    // An Anthropic target has no media endpoints.
    let (ct, body) = form(&[("model", "claude-x")], b"abc");
    expect(
        400,
        "unsupported_endpoint",
        send("/v1/audio/translations", &ct, body).await,
    );
    expect(
        400,
        "unsupported_endpoint",
        send(
            "/v1/audio/speech",
            "application/json",
            br#"{"model":"claude-x","input":"hi","voice":"a"}"#.to_vec(),
        )
        .await,
    );
    // The policed route cannot check an image prompt: refused, not sent unchecked.
    expect(
        400,
        "unsupported_endpoint",
        send(
            "/policed/v1/images/generations",
            "application/json",
            br#"{"model":"dall-e-3","prompt":"forbidden"}"#.to_vec(),
        )
        .await,
    );
    let stats = mock_stats(&mock).await;
    assert!(
        stats["by_path"].get("/v1/images/generations").is_none(),
        "{stats}"
    );
    assert!(stats["by_path"].get("/v1/messages").is_none(), "{stats}");
}
