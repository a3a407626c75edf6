//! The client's JSON request body: the few top-level fields the gateway needs, read once,
//! and the rewrite sent upstream.
//!
//! Parsing borrows raw values from the body and records byte spans; a rewrite splices new
//! bytes into those spans and copies everything else verbatim. Messages, images and tools are
//! never re-serialised, and a body that needs no change is sent as the same `Bytes`.
//!
//! A file upload (`multipart/form-data`, `multipart`) is read for its text fields and
//! forwarded as it came, the model's value spliced when the route maps it.

pub mod multipart;

use crate::error::GatewayError;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::ops::Range;

#[derive(Deserialize)]
struct TopLevel<'a> {
    #[serde(borrow, default)]
    model: Option<&'a RawValue>,
    #[serde(borrow, default)]
    stream: Option<&'a RawValue>,
    #[serde(borrow, default)]
    stream_options: Option<&'a RawValue>,
    #[serde(borrow, default)]
    max_tokens: Option<&'a RawValue>,
    #[serde(borrow, default)]
    max_completion_tokens: Option<&'a RawValue>,
    /// The Responses API's output limit.
    #[serde(borrow, default)]
    max_output_tokens: Option<&'a RawValue>,
    /// `null` included (a plain `Option` would read it as absent).
    #[serde(borrow, default, deserialize_with = "present")]
    messages: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    system: Option<&'a RawValue>,
}

/// A field that is present, whatever its value (`null` too).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

#[derive(Debug, Clone)]
pub struct RequestBody {
    /// Set only by [`RequestBody::parse`] (checked as UTF-8) and
    /// [`RequestBody::parse_form`]: [`RequestBody::json_text`] and the spans rely on it
    /// (read through [`RequestBody::bytes`]).
    bytes: Bytes,
    pub model: String,
    pub stream: bool,
    /// The client itself asked for `stream_options.include_usage: true`.
    pub client_wants_usage: bool,
    /// `max_completion_tokens`, else `max_tokens`, else `max_output_tokens` (the Responses
    /// API's), when given as a number.
    pub max_tokens: Option<u64>,
    model_span: Range<usize>,
    stream_options_span: Option<Range<usize>>,
    /// Where the `messages` value is (its `[`…`]` when it is an array).
    pub messages_span: Option<Range<usize>>,
    /// Where Anthropic's `system` value is.
    pub system_span: Option<Range<usize>>,
    /// Offset of the closing `}` of the top-level object.
    close_brace: usize,
    /// A `multipart/form-data` body: its content type (with the boundary) and form fields.
    pub form: Option<Box<FormBody>>,
}

/// What a multipart body carries beside the model.
#[derive(Debug, Clone)]
pub struct FormBody {
    /// The client's `Content-Type` (with its boundary), sent upstream as it came.
    pub content_type: String,
    pub form: multipart::Form,
}

fn span(body: &[u8], raw: &RawValue) -> Range<usize> {
    let start = raw.get().as_ptr() as usize - body.as_ptr() as usize;
    start..start + raw.get().len()
}

/// A set of splices to apply to a body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rewrite {
    /// Non-overlapping, sorted by start: replace `range` with `bytes`.
    edits: Vec<(Range<usize>, Vec<u8>)>,
}

impl Rewrite {
    /// Splices given as (range, new bytes); they must not overlap. Edits at the same offset
    /// are applied in the order given.
    pub fn from_edits(mut edits: Vec<(Range<usize>, Vec<u8>)>) -> Self {
        edits.sort_by_key(|(r, _)| r.start);
        Rewrite { edits }
    }

    pub fn is_empty(&self) -> bool {
        self.edits.is_empty()
    }

    /// Length of the rewritten body, known before the rewrite is done.
    pub fn output_len(&self, input_len: usize) -> usize {
        self.edits
            .iter()
            .fold(input_len, |n, (r, b)| n - r.len() + b.len())
    }

    pub fn apply(&self, input: &Bytes) -> Bytes {
        if self.edits.is_empty() {
            return input.clone();
        }
        let mut out = Vec::with_capacity(self.output_len(input.len()));
        let mut at = 0;
        for (range, bytes) in &self.edits {
            out.extend_from_slice(&input[at..range.start]);
            out.extend_from_slice(bytes);
            at = range.end;
        }
        out.extend_from_slice(&input[at..]);
        out.into()
    }
}

/// Bytes known to be UTF-8: a JSON body [`RequestBody::parse`] checked, or bytes checked
/// here.
#[derive(Debug, Clone, Copy)]
pub struct Utf8<'a>(&'a [u8]);

impl<'a> Utf8<'a> {
    pub fn check(bytes: &'a [u8]) -> Option<Self> {
        std::str::from_utf8(bytes).ok().map(|_| Utf8(bytes))
    }

    pub fn bytes(self) -> &'a [u8] {
        self.0
    }
}

impl RequestBody {
    /// The body as the client sent it.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The JSON body, checked as UTF-8 when it was parsed; `None` for a form.
    pub fn json_text(&self) -> Option<Utf8<'_>> {
        self.form.is_none().then_some(Utf8(&self.bytes))
    }

    pub fn parse(bytes: Bytes) -> Result<Self, GatewayError> {
        // JSON is UTF-8, and serde_json does not check the strings of the fields it skips:
        // check the whole body, so that no invalid byte is forwarded as JSON.
        let text = std::str::from_utf8(&bytes)
            .map_err(|e| GatewayError::InvalidJson(format!("the body is not UTF-8 ({e})")))?;
        let top: TopLevel = match serde_json::from_str(text) {
            // serde also accepts a JSON array for a struct: insist on an object.
            Ok(_) if !bytes.trim_ascii_start().starts_with(b"{") => {
                return Err(GatewayError::NotAnObject)
            }
            Ok(t) => t,
            Err(e) if e.classify() == serde_json::error::Category::Data => {
                // Valid JSON of the wrong shape (an array, a number...).
                return match serde_json::from_str::<serde::de::IgnoredAny>(text) {
                    Ok(_) if !bytes.trim_ascii_start().starts_with(b"{") => {
                        Err(GatewayError::NotAnObject)
                    }
                    _ => Err(GatewayError::InvalidJson(e.to_string())),
                };
            }
            Err(e) => return Err(GatewayError::InvalidJson(e.to_string())),
        };
        let model_raw = top.model.ok_or(GatewayError::MissingModel)?;
        if model_raw.get() == "null" {
            return Err(GatewayError::MissingModel);
        }
        let model: String =
            serde_json::from_str(model_raw.get()).map_err(|_| GatewayError::ModelNotString)?;
        if model.is_empty() {
            return Err(GatewayError::MissingModel);
        }
        let stream = top
            .stream
            .and_then(|r| serde_json::from_str::<Option<bool>>(r.get()).ok().flatten())
            .unwrap_or(false);
        let client_wants_usage = top
            .stream_options
            .and_then(|r| serde_json::from_str::<serde_json::Value>(r.get()).ok())
            .and_then(|v| v.get("include_usage").and_then(|u| u.as_bool()))
            .unwrap_or(false);
        let max_tokens = top
            .max_completion_tokens
            .or(top.max_tokens)
            .or(top.max_output_tokens)
            .and_then(|r| serde_json::from_str::<u64>(r.get()).ok());
        let model_span = span(&bytes, model_raw);
        let stream_options_span = top.stream_options.map(|r| span(&bytes, r));
        let messages_span = top.messages.map(|r| span(&bytes, r));
        let system_span = top.system.map(|r| span(&bytes, r));
        let close_brace = bytes
            .iter()
            .rposition(|b| *b == b'}')
            .ok_or(GatewayError::NotAnObject)?;
        Ok(RequestBody {
            model,
            stream,
            client_wants_usage,
            max_tokens,
            model_span,
            stream_options_span,
            messages_span,
            system_span,
            close_brace,
            bytes,
            form: None,
        })
    }

    /// A `multipart/form-data` body with content type `content_type`: its `model` field is
    /// required, `stream=true` streams.
    pub fn parse_form(bytes: Bytes, content_type: &str) -> Result<Self, GatewayError> {
        let boundary = multipart::boundary(content_type).ok_or_else(|| {
            GatewayError::InvalidForm(
                "this endpoint takes `multipart/form-data` with a boundary".into(),
            )
        })?;
        let form = multipart::parse(&bytes, boundary).map_err(GatewayError::InvalidForm)?;
        let (model, model_span) = form.model.clone().ok_or(GatewayError::MissingModel)?;
        if model.is_empty() {
            return Err(GatewayError::MissingModel);
        }
        Ok(RequestBody {
            model,
            stream: form.stream,
            client_wants_usage: false,
            max_tokens: None,
            model_span,
            stream_options_span: None,
            messages_span: None,
            system_span: None,
            close_brace: 0,
            form: Some(Box::new(FormBody {
                content_type: content_type.to_string(),
                form,
            })),
            bytes,
        })
    }

    /// The edits that send `upstream_model` (when it differs) and, for a stream the client
    /// did not ask usage for, `stream_options.include_usage: true`.
    pub fn rewrite(&self, upstream_model: Option<&str>, force_usage: bool) -> Rewrite {
        let mut edits = Vec::new();
        if let Some(m) = upstream_model.filter(|m| *m != self.model) {
            let value = match self.form {
                // A form field's value is its bytes (a model name has no CR or LF).
                Some(_) => m.replace(['\r', '\n'], "").into_bytes(),
                None => serde_json::to_vec(m).unwrap_or_default(),
            };
            edits.push((self.model_span.clone(), value));
            if self.form.is_some() {
                return Rewrite { edits };
            }
        }
        if self.form.is_some() {
            return Rewrite { edits };
        }
        if force_usage && self.stream && !self.client_wants_usage {
            match &self.stream_options_span {
                Some(range) => {
                    let mut options = serde_json::from_slice::<
                        serde_json::Map<String, serde_json::Value>,
                    >(&self.bytes[range.clone()])
                    .unwrap_or_default();
                    options.insert("include_usage".into(), serde_json::Value::Bool(true));
                    edits.push((
                        range.clone(),
                        serde_json::to_vec(&options).unwrap_or_default(),
                    ));
                }
                None => {
                    let at = self.close_brace;
                    let empty = self.bytes[..at]
                        .iter()
                        .rev()
                        .find(|b| !b.is_ascii_whitespace())
                        .is_some_and(|b| *b == b'{');
                    let text: &[u8] = if empty {
                        br#""stream_options":{"include_usage":true}"#
                    } else {
                        br#","stream_options":{"include_usage":true}"#
                    };
                    edits.push((at..at, text.to_vec()));
                }
            }
        }
        edits.sort_by_key(|(r, _)| r.start);
        Rewrite { edits }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn parse(s: &str) -> Result<RequestBody, GatewayError> {
        RequestBody::parse(Bytes::from(s.to_string()))
    }

    fn rewritten(s: &str, model: Option<&str>, usage: bool) -> Value {
        let b = parse(s).unwrap();
        let rw = b.rewrite(model, usage);
        let out = rw.apply(&b.bytes);
        assert_eq!(out.len(), rw.output_len(b.bytes.len()));
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn errors() {
        assert!(matches!(parse("{"), Err(GatewayError::InvalidJson(_))));
        assert!(matches!(parse("[1]"), Err(GatewayError::NotAnObject)));
        assert!(matches!(parse("{}"), Err(GatewayError::MissingModel)));
        assert!(matches!(
            parse(r#"{"model":null}"#),
            Err(GatewayError::MissingModel)
        ));
        assert!(matches!(
            parse(r#"{"model":1}"#),
            Err(GatewayError::ModelNotString)
        ));
        assert!(matches!(
            parse(r#"{"model":"a","model":"b"}"#),
            Err(GatewayError::InvalidJson(_))
        ));
    }

    /// Found by the fuzz target `body`: invalid UTF-8 inside a field the gateway does not
    /// read was accepted (serde_json skips such strings unchecked) and forwarded as JSON.
    #[test]
    fn invalid_utf8_anywhere_is_invalid_json() {
        for body in [
            &b"{\"model\":\"m\",\"tools\":[{\"x\":\"a\xffb\"}]}"[..],
            b"{\"model\":\"m\",\"messages\":\"\xc3\"}",
            b"{\"model\":\"m\",\"\xee\":1}",
        ] {
            let e = RequestBody::parse(Bytes::copy_from_slice(body)).unwrap_err();
            assert!(matches!(e, GatewayError::InvalidJson(_)), "{e:?}");
        }
        assert!(parse(r#"{"model":"m","x":"\u00e9 é"}"#).is_ok());
    }

    #[test]
    fn untouched_body_is_the_same_bytes() {
        let b = parse(r#"{"model":"m","messages":[]}"#).unwrap();
        let rw = b.rewrite(Some("m"), true);
        assert!(rw.is_empty());
        assert_eq!(rw.apply(&b.bytes).as_ptr(), b.bytes.as_ptr());
    }

    #[test]
    fn model_and_usage_rewrites() {
        let v = rewritten(
            r#"{"model":"a\u0062","stream":true,"messages":[{"role":"user","content":"hé"}]}"#,
            Some("up\"x"),
            true,
        );
        assert_eq!(v["model"], "up\"x");
        assert_eq!(v["stream_options"]["include_usage"], true);
        assert_eq!(v["messages"][0]["content"], "hé");
        let v = rewritten(
            r#"{"stream_options":{"x":1},"model":"a","stream":true}"#,
            None,
            true,
        );
        assert_eq!(
            v["stream_options"],
            serde_json::json!({"x":1,"include_usage":true})
        );
        let v = rewritten(r#" { "model" : "a" , "stream" : true } "#, None, true);
        assert_eq!(v["stream_options"]["include_usage"], true);
        // Client already asked, or not streaming: no usage edit.
        let b = parse(r#"{"model":"a","stream":true,"stream_options":{"include_usage":true}}"#)
            .unwrap();
        assert!(b.client_wants_usage);
        assert!(b.rewrite(None, true).is_empty());
        assert!(parse(r#"{"model":"a"}"#)
            .unwrap()
            .rewrite(None, true)
            .is_empty());
    }
}
