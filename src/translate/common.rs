//! Pieces shared by the translators: OpenAI-format builders (chat chunks, usage objects,
//! error bodies), SSE framing, `data:` URL parsing, ids and timestamps, and base64.

use std::time::{SystemTime, UNIX_EPOCH};

use super::json::{jobj, Json, Obj};
use super::TranslateError;
use crate::usage::Usage;

/// A request the translator refuses as malformed.
pub(crate) fn invalid(msg: impl Into<String>) -> TranslateError {
    TranslateError::InvalidRequest(msg.into())
}

/// An OpenAI `tools` list checked for what every target needs: each entry a `function` tool
/// with a name. Yields `(index, function object, name)`.
pub(crate) fn function_tools(t: &Json) -> Result<Vec<(usize, &Json, &str)>, TranslateError> {
    let list = t
        .as_array()
        .ok_or_else(|| invalid("`tools` must be an array"))?;
    let mut out = Vec::with_capacity(list.len());
    for (i, tool) in list.iter().enumerate() {
        let kind = super::json::str_field(tool, "type").unwrap_or("function");
        if kind != "function" {
            return Err(TranslateError::Unsupported(format!(
                "tool type `{}`",
                short(kind)
            )));
        }
        let f = tool
            .get("function")
            .ok_or_else(|| invalid(format!("`tools[{i}].function` is missing")))?;
        let name = super::json::str_field(f, "name")
            .ok_or_else(|| invalid(format!("`tools[{i}].function.name` is missing")))?;
        out.push((i, f, name));
    }
    Ok(out)
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A random id: `prefix` followed by 24 ASCII alphanumerics.
pub(crate) fn random_id(prefix: &str) -> String {
    let mut s = String::with_capacity(prefix.len() + 24);
    s.push_str(prefix);
    for _ in 0..24 {
        s.push(fastrand::alphanumeric());
    }
    s
}

/// Parse a request body that must be a JSON object.
pub(crate) fn parse_request(body: &[u8]) -> Result<Json, TranslateError> {
    let v = Json::parse(body).map_err(|e| TranslateError::InvalidJson(e.to_string()))?;
    if v.as_object().is_none() {
        return Err(TranslateError::NotAnObject);
    }
    Ok(v)
}

/// Parse an upstream response body that must be a JSON object.
pub(crate) fn parse_upstream(body: &[u8]) -> Result<Json, TranslateError> {
    match Json::parse(body) {
        Ok(v) if v.as_object().is_some() => Ok(v),
        Ok(_) => Err(TranslateError::UpstreamResponse("not a JSON object")),
        Err(_) => Err(TranslateError::UpstreamResponse("not valid JSON")),
    }
}

/// A client-supplied name shortened for an error message.
pub(crate) fn short(s: &str) -> String {
    let mut out: String = s.chars().take(64).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

/// The OpenAI `usage` object for `u`.
pub(crate) fn openai_usage_json(u: &Usage) -> Json {
    jobj! {
        "prompt_tokens" => u.input_tokens,
        "completion_tokens" => u.output_tokens,
        "total_tokens" => u.input_tokens.saturating_add(u.output_tokens),
        "prompt_tokens_details" => jobj! { "cached_tokens" => u.cached_input_tokens },
        "completion_tokens_details" => jobj! { "reasoning_tokens" => u.reasoning_tokens },
    }
}

/// Usage read from an OpenAI `usage` object (see the table in the module docs).
pub(crate) fn usage_from_openai(u: &Json) -> Usage {
    use super::json::count_field;
    Usage {
        input_tokens: count_field(u, "prompt_tokens"),
        output_tokens: count_field(u, "completion_tokens"),
        cached_input_tokens: u
            .get("prompt_tokens_details")
            .map_or(0, |d| count_field(d, "cached_tokens")),
        cache_write_tokens: 0,
        reasoning_tokens: u
            .get("completion_tokens_details")
            .map_or(0, |d| count_field(d, "reasoning_tokens")),
        estimated: false,
        units: crate::usage::Units::NONE,
    }
}

/// An OpenAI error body `{"error":{"message","type","code"}}`.
pub(crate) fn openai_error(message: &str, kind: &str, code: Option<&str>) -> Json {
    jobj! { "error" => jobj! {
        "message" => message,
        "type" => kind,
        "param" => Json::Null,
        "code" => code,
    }}
}

/// `data: <json>\n\n`.
pub(crate) fn sse_data(out: &mut Vec<u8>, v: &Json) {
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(&v.to_vec());
    out.extend_from_slice(b"\n\n");
}

/// `event: <name>\ndata: <json>\n\n`.
pub(crate) fn sse_named(out: &mut Vec<u8>, name: &str, v: &Json) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\n");
    sse_data(out, v);
}

pub(crate) const SSE_DONE: &[u8] = b"data: [DONE]\n\n";

/// Builds OpenAI `chat.completion.chunk` events for one stream.
#[derive(Debug, Clone)]
pub(crate) struct ChunkWriter {
    pub(crate) id: String,
    pub(crate) model: String,
    pub(crate) created: u64,
}

impl ChunkWriter {
    pub(crate) fn new(model: &str) -> Self {
        ChunkWriter {
            id: random_id("chatcmpl-"),
            model: model.to_owned(),
            created: unix_now(),
        }
    }

    fn envelope(&self, choices: Vec<Json>) -> Obj {
        let mut m = Obj::new();
        m.insert("id".into(), self.id.as_str().into());
        m.insert("object".into(), "chat.completion.chunk".into());
        m.insert("created".into(), self.created.into());
        m.insert("model".into(), self.model.as_str().into());
        m.insert("choices".into(), choices.into());
        m
    }

    /// One choice with `delta` and `finish_reason`.
    pub(crate) fn choice(&self, out: &mut Vec<u8>, index: u64, delta: Json, finish: Option<&str>) {
        let choice = jobj! {
            "index" => index,
            "delta" => delta,
            "logprobs" => Json::Null,
            "finish_reason" => finish,
        };
        sse_data(out, &Json::Obj(self.envelope(vec![choice])));
    }

    /// The final `choices: []` chunk carrying usage.
    pub(crate) fn usage(&self, out: &mut Vec<u8>, u: &Usage) {
        let mut m = self.envelope(Vec::new());
        m.insert("usage".to_owned(), openai_usage_json(u));
        sse_data(out, &Json::Obj(m));
    }
}

/// An OpenAI error SSE event for a stream that cannot continue.
pub(crate) fn openai_stream_error(out: &mut Vec<u8>, message: &str, kind: &str, code: &str) {
    sse_data(out, &openai_error(message, kind, Some(code)));
}

pub(crate) const INCOMPLETE_STREAM: &str =
    "The upstream provider ended the stream before the response was complete.";

/// A `data:` URL split into media type and base64 payload. Only base64 URLs are accepted.
pub(crate) fn parse_data_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("data:")?;
    let (meta, data) = rest.split_once(',')?;
    let media = meta.strip_suffix(";base64")?;
    // Parameters such as `;charset=utf-8` before `;base64` are not part of the media type.
    let media = media.split(';').next().unwrap_or_default();
    Some((
        if media.is_empty() {
            "text/plain"
        } else {
            media
        },
        data,
    ))
}

pub(crate) fn is_http_url(url: &str) -> bool {
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    lower.starts_with("http://") || lower.starts_with("https://")
}

/// The text of an OpenAI message `content`: a string, or an array of parts whose `text`
/// parts are concatenated. Other part types are an error naming `what`.
pub(crate) fn openai_text_content(
    content: Option<&Json>,
    what: &str,
) -> Result<String, TranslateError> {
    match content {
        None => Ok(String::new()),
        Some(Json::Str(s)) => Ok(s.clone()),
        Some(Json::Arr(parts)) => {
            let mut s = String::new();
            for p in parts {
                match p.get("type").and_then(Json::as_str) {
                    Some("text") | None => {
                        if let Some(t) = p.get("text").and_then(Json::as_str) {
                            s.push_str(t);
                        } else if let Some(t) = p.as_str() {
                            s.push_str(t);
                        }
                    }
                    Some(other) => {
                        return Err(TranslateError::Unsupported(format!(
                            "content part type `{}` in {what}",
                            short(other)
                        )))
                    }
                }
            }
            Ok(s)
        }
        Some(_) => Err(TranslateError::InvalidRequest(format!(
            "the content of {what} must be a string or an array of content parts"
        ))),
    }
}

/// Standard base64 with padding.
pub(crate) fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_known_vectors() {
        for (raw, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64_encode(raw.as_bytes()), enc);
        }
        assert_eq!(base64_encode(&[0xff, 0xfe, 0xfd]), "//79");
    }

    #[test]
    fn data_urls() {
        assert_eq!(
            parse_data_url("data:image/png;base64,iVBOR"),
            Some(("image/png", "iVBOR"))
        );
        assert_eq!(
            parse_data_url("data:text/plain;charset=utf-8;base64,aGk="),
            Some(("text/plain", "aGk="))
        );
        assert_eq!(
            parse_data_url("data:;base64,aGk="),
            Some(("text/plain", "aGk="))
        );
        assert_eq!(parse_data_url("data:image/png,raw"), None);
        assert_eq!(parse_data_url("https://x/y.png"), None);
        assert!(is_http_url("HTTPS://example.com/a.png"));
        assert!(!is_http_url("ftp://example.com"));
        assert!(!is_http_url("h"));
    }
}
