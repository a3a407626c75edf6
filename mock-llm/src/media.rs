//! OpenAI's media endpoints and rerank, deterministic:
//!
//! * `POST …/images/generations` (JSON), `…/images/edits` and `…/images/variations`
//!   (multipart): `n` images (default 1), as `url`s, or `b64_json` for `gpt-image*` models,
//!   which also report token `usage` (input: the prompt's tokens; output: 272 per image).
//! * `POST …/audio/speech` (JSON): `4 × characters of input` bytes of `audio/mpeg`; with
//!   `stream_format: "sse"`, `speech.audio.delta` events and a `speech.audio.done` with
//!   token usage (input: the text's tokens; output: 10 per character).
//! * `POST …/audio/transcriptions` and `…/audio/translations` (multipart): the audio is
//!   taken to last one second per 16,000 bytes of the `file` part (rounded up). `whisper*`
//!   models report `usage: {type: "duration", seconds}`, other models token usage (input:
//!   10 per second; output: the text's). `response_format` `text`, `srt`, `vtt` and
//!   `verbose_json` (with `duration`) are honoured; `stream=true` sends
//!   `transcript.text.delta` events and a `transcript.text.done` with the usage.
//! * `POST …/rerank` (Jina/Cohere style): `query` and `documents` (strings or `{text}`),
//!   scored by shared words; `rerank-*` models answer Cohere's way
//!   (`meta.billed_units.search_units: 1`), others Jina's (`usage.total_tokens`).
//!
//! Every answer names the bytes of the file it received (`x-mock-file-bytes`), so tests can
//! check an upload arrived whole.

use bytes::Bytes;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Response, StatusCode};
use serde_json::{json, Map, Value};

use crate::body::RespBody;
use crate::reply::Ctx;
use crate::stream::{self, Event, Step};
use crate::util::{content, text_tokens};

/// The media endpoint at `path`, if it is one.
pub fn dispatch(ctx: &Ctx<'_>, path: &str) -> Option<Response<RespBody>> {
    if ctx.parts.method != Method::POST {
        return None;
    }
    let resp = if path.ends_with("/images/generations") {
        match ctx.parse_object() {
            Ok(req) => images(ctx, &Fields::from_json(&req), 0),
            Err(msg) => ctx.error(StatusCode::BAD_REQUEST, &msg),
        }
    } else if path.ends_with("/images/edits") || path.ends_with("/images/variations") {
        with_form(ctx, |f| images(ctx, f, f.file_bytes))
    } else if path.ends_with("/audio/speech") {
        match ctx.parse_object() {
            Ok(req) => speech(ctx, &req),
            Err(msg) => ctx.error(StatusCode::BAD_REQUEST, &msg),
        }
    } else if path.ends_with("/audio/transcriptions") || path.ends_with("/audio/translations") {
        with_form(ctx, |f| transcription(ctx, f))
    } else if path.ends_with("/rerank") {
        match ctx.parse_object() {
            Ok(req) => rerank(ctx, &req),
            Err(msg) => ctx.error(StatusCode::BAD_REQUEST, &msg),
        }
    } else {
        return None;
    };
    Some(resp)
}

/// The text fields of a request and the size of its file.
#[derive(Debug, Default)]
struct Fields {
    model: String,
    prompt: String,
    n: u64,
    response_format: Option<String>,
    stream: bool,
    file_bytes: usize,
}

impl Fields {
    fn from_json(req: &Map<String, Value>) -> Self {
        let text = |k: &str| req.get(k).and_then(Value::as_str).map(str::to_string);
        Fields {
            model: text("model").unwrap_or_default(),
            prompt: text("prompt").unwrap_or_default(),
            n: req.get("n").and_then(Value::as_u64).unwrap_or(1),
            response_format: text("response_format"),
            stream: req.get("stream").and_then(Value::as_bool).unwrap_or(false),
            file_bytes: 0,
        }
    }
}

/// Read the multipart body, then answer with `f`; a 400 for a body that is not a form.
fn with_form(ctx: &Ctx<'_>, f: impl FnOnce(&Fields) -> Response<RespBody>) -> Response<RespBody> {
    let content_type = ctx
        .parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    match parse_form(ctx.body, content_type) {
        Ok(fields) if fields.file_bytes > 0 => {
            let mut resp = f(&fields);
            resp.headers_mut()
                .insert("x-mock-file-bytes", HeaderValue::from(fields.file_bytes));
            resp
        }
        Ok(_) => ctx.error(StatusCode::BAD_REQUEST, "The form has no file."),
        Err(msg) => ctx.error(StatusCode::BAD_REQUEST, &msg),
    }
}

/// A small `multipart/form-data` reader (the mock's own, simpler than the gateway's).
fn parse_form(body: &[u8], content_type: &str) -> Result<Fields, String> {
    let boundary = content_type
        .split(';')
        .find_map(|p| p.trim().strip_prefix("boundary="))
        .map(|b| b.trim_matches('"'))
        .ok_or("Expected multipart/form-data with a boundary.")?;
    let delimiter = format!("\r\n--{boundary}");
    let mut body = body
        .strip_prefix(format!("--{boundary}").as_bytes())
        .ok_or("The form does not start with its boundary.")?;
    let mut fields = Fields {
        n: 1,
        ..Fields::default()
    };
    while let Some(rest) = body.strip_prefix(b"\r\n") {
        let head_end = find(rest, b"\r\n\r\n").ok_or("A part's headers do not end.")?;
        let head = String::from_utf8_lossy(&rest[..head_end]).to_string();
        let value_start = head_end + 4;
        let value_len =
            find(&rest[value_start..], delimiter.as_bytes()).ok_or("The form does not end.")?;
        let value = &rest[value_start..value_start + value_len];
        let name = head
            .split(';')
            .find_map(|p| p.trim().strip_prefix("name="))
            .map(|n| n.trim_matches('"').to_string())
            .unwrap_or_default();
        let text = String::from_utf8_lossy(value).to_string();
        if head.contains("filename=") {
            fields.file_bytes += value.len();
        } else {
            match name.as_str() {
                "model" => fields.model = text,
                "prompt" => fields.prompt = text,
                "n" => fields.n = text.trim().parse().map_err(|_| "`n` is not a number.")?,
                "response_format" => fields.response_format = Some(text),
                "stream" => fields.stream = text == "true",
                _ => {}
            }
        }
        body = &rest[value_start + value_len + delimiter.len()..];
    }
    if body.starts_with(b"--") {
        Ok(fields)
    } else {
        Err("The form does not end with its closing boundary.".into())
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Images: `n` of them; `gpt-image*` models as `b64_json` with token usage.
fn images(ctx: &Ctx<'_>, f: &Fields, file_bytes: usize) -> Response<RespBody> {
    let tokens_model = f.model.starts_with("gpt-image");
    let data: Vec<Value> = (0..f.n.clamp(1, 10))
        .map(
            |i| match tokens_model || f.response_format.as_deref() == Some("b64_json") {
                true => json!({ "b64_json": "iVBORw0KGgo=" }),
                false => json!({ "url": format!("https://mock.invalid/image/{i}.png") }),
            },
        )
        .collect();
    let mut answer = json!({ "created": crate::util::now_secs(), "data": data });
    if tokens_model {
        let input = text_tokens(&f.prompt) + (file_bytes as u64).div_ceil(1000);
        let output = 272 * data.len() as u64;
        answer["usage"] = json!({
            "input_tokens": input, "output_tokens": output, "total_tokens": input + output,
            "input_tokens_details": { "text_tokens": text_tokens(&f.prompt), "image_tokens": input - text_tokens(&f.prompt) },
        });
    }
    ctx.json(answer)
}

/// Speech: audio bytes, or an SSE stream of audio deltas with usage at its end.
fn speech(ctx: &Ctx<'_>, req: &Map<String, Value>) -> Response<RespBody> {
    let input = req.get("input").and_then(Value::as_str).unwrap_or("");
    let chars = input.chars().count();
    if req.get("stream_format").and_then(Value::as_str) == Some("sse") {
        let (i, o) = (text_tokens(input), 10 * chars as u64);
        let done = json!({
            "type": "speech.audio.done",
            "usage": { "input_tokens": i, "output_tokens": o, "total_tokens": i + o },
        });
        let events = (0..chars.div_ceil(8))
            .map(|_| {
                Step::Content(Event::data(
                    json!({"type": "speech.audio.delta", "audio": "SUQzAAAA"}).to_string(),
                ))
            })
            .chain([
                Step::EndOfContent,
                Step::Frame(Event::data(done.to_string())),
            ]);
        let crlf = ctx.opts.crlf.unwrap_or(false);
        return ctx.stream("text/event-stream", stream::sse(events, crlf));
    }
    let audio: Vec<u8> = (0..chars * 4).map(|i| (i % 251) as u8).collect();
    let mut resp = Response::new(crate::body::full(Bytes::from(audio)));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("audio/mpeg"));
    resp
}

/// Transcriptions and translations.
fn transcription(ctx: &Ctx<'_>, f: &Fields) -> Response<RespBody> {
    let seconds = (f.file_bytes as u64).div_ceil(16_000);
    let text = content(seconds.clamp(1, 64));
    let usage = match f.model.starts_with("whisper") {
        true => json!({ "type": "duration", "seconds": seconds }),
        false => {
            let (i, o) = (10 * seconds, text_tokens(&text));
            json!({ "type": "tokens", "input_tokens": i, "output_tokens": o, "total_tokens": i + o,
                    "input_token_details": { "text_tokens": 0, "audio_tokens": i } })
        }
    };
    if f.stream {
        let done = json!({ "type": "transcript.text.done", "text": text, "usage": usage });
        let words: Vec<String> = text.split_inclusive(' ').map(str::to_string).collect();
        let events = words
            .into_iter()
            .map(|w| {
                let delta = json!({ "type": "transcript.text.delta", "delta": w });
                Step::Content(Event::data(delta.to_string()))
            })
            .chain([
                Step::EndOfContent,
                Step::Frame(Event::data(done.to_string())),
            ]);
        let crlf = ctx.opts.crlf.unwrap_or(false);
        return ctx.stream("text/event-stream", stream::sse(events, crlf));
    }
    let plain = |body: String| {
        let mut resp = Response::new(crate::body::full(Bytes::from(body)));
        resp.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        resp
    };
    match f.response_format.as_deref() {
        Some("text") => plain(text),
        Some("srt") => plain(format!(
            "1\n00:00:00,000 --> {}\n{text}\n",
            clock(seconds, ',')
        )),
        Some("vtt") => plain(format!(
            "WEBVTT\n\n00:00.000 --> {}\n{text}\n",
            clock(seconds, '.')
        )),
        Some("verbose_json") => ctx.json(json!({
            "task": "transcribe", "language": "english", "duration": seconds as f64, "text": text,
            "segments": [],
        })),
        _ => ctx.json(json!({ "text": text, "usage": usage })),
    }
}

/// `HH:MM:SS,000` of `seconds`.
fn clock(seconds: u64, sep: char) -> String {
    format!(
        "{:02}:{:02}:{:02}{sep}000",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    )
}

/// Rerank, Jina's or Cohere's way.
fn rerank(ctx: &Ctx<'_>, req: &Map<String, Value>) -> Response<RespBody> {
    let query = req.get("query").and_then(Value::as_str).unwrap_or("");
    let docs: Vec<String> = req
        .get("documents")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|d| match d {
                    Value::String(s) => s.clone(),
                    d => d["text"].as_str().unwrap_or("").to_string(),
                })
                .collect()
        })
        .unwrap_or_default();
    let words: Vec<String> = query.split_whitespace().map(str::to_lowercase).collect();
    let mut results: Vec<(usize, f64)> = docs
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let d = d.to_lowercase();
            let shared = words.iter().filter(|w| d.contains(w.as_str())).count();
            (i, shared as f64 / words.len().max(1) as f64)
        })
        .collect();
    results.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let top = req
        .get("top_n")
        .and_then(Value::as_u64)
        .map_or(results.len(), |n| n as usize);
    let results: Vec<Value> = results
        .iter()
        .take(top)
        .map(|(i, s)| json!({ "index": i, "relevance_score": s }))
        .collect();
    let model = req.get("model").and_then(Value::as_str).unwrap_or("");
    let id = format!("rerank-mock-{}", ctx.state.next_id());
    if model.starts_with("rerank-") {
        return ctx.json(json!({
            "id": id, "results": results,
            "meta": { "api_version": { "version": "2" }, "billed_units": { "search_units": 1 } },
        }));
    }
    let tokens = text_tokens(query) + docs.iter().map(|d| text_tokens(d)).sum::<u64>();
    ctx.json(json!({
        "id": id, "model": model, "results": results,
        "usage": { "total_tokens": tokens },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_are_read() {
        let body = b"--b\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\n0123456789\r\n--b--\r\n";
        let f = parse_form(body, "multipart/form-data; boundary=b").unwrap();
        assert_eq!((f.model.as_str(), f.file_bytes), ("whisper-1", 10));
        assert!(parse_form(b"x", "multipart/form-data; boundary=b").is_err());
    }

    #[test]
    fn clocks() {
        assert_eq!(clock(3725, ','), "01:02:05,000");
    }
}
