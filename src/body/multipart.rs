//! A `multipart/form-data` request body (image edits and variations, audio transcriptions
//! and translations): the few text fields the gateway routes and meters by, found in the
//! body held whole, without copying its parts (RFC 7578, RFC 2046 §5.1.1).
//!
//! The body is forwarded as it came, except the `model` value when the route maps the model
//! (spliced at [`Form::model_span`]). Work is bounded: at most [`MAX_PARTS`] parts and
//! [`MAX_PART_HEADER`] bytes of headers per part; the boundary is searched with `memchr`.

use memchr::memmem;
use std::ops::Range;

/// Most parts a form may have.
pub const MAX_PARTS: usize = 256;
/// Largest header block of one part.
pub const MAX_PART_HEADER: usize = 8 * 1024;
/// Largest text field read (the prompt of an image edit; a longer one is an error).
pub const MAX_TEXT_FIELD: usize = 256 * 1024;

/// What the gateway reads of a form.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Form {
    /// The `model` field and where its value is.
    pub model: Option<(String, Range<usize>)>,
    /// `stream=true` (streamed transcriptions).
    pub stream: bool,
    /// `response_format` (`json`, `text`, `srt`, `verbose_json`, `vtt`, …).
    pub response_format: Option<String>,
    /// `n` (images asked for).
    pub n: Option<u64>,
    /// Bytes of text in the fields that are not files (`prompt` and the like).
    pub text_bytes: usize,
    /// The text of the `prompt` field, if any (for the token estimate).
    pub prompt: Option<String>,
    /// Files in the form.
    pub files: usize,
}

/// The boundary of a `multipart/form-data` content type, if it is one.
pub fn boundary(content_type: &str) -> Option<&str> {
    let mut params = content_type.split(';');
    let kind = params.next()?.trim();
    if !kind.eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    params.find_map(|p| {
        let (name, value) = p.split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("boundary") {
            return None;
        }
        let value = value.trim().trim_matches('"');
        // RFC 2046: 1 to 70 characters.
        (1..=70).contains(&value.len()).then_some(value)
    })
}

/// Read the form in `body` delimited by `boundary`.
pub fn parse(body: &[u8], boundary: &str) -> Result<Form, String> {
    let delimiter = format!("--{boundary}");
    let close = format!("\r\n--{boundary}");
    let finder = memmem::Finder::new(close.as_bytes());
    // The first delimiter: at the start, or after a preamble ending in CRLF.
    let mut at = if body.starts_with(delimiter.as_bytes()) {
        delimiter.len()
    } else {
        finder
            .find(body)
            .map(|i| i + close.len())
            .ok_or("no part begins with the boundary of its content type")?
    };
    let mut form = Form::default();
    for _ in 0..=MAX_PARTS {
        let rest = &body[at..];
        if rest.starts_with(b"--") {
            return Ok(form);
        }
        let rest = skip_padding(rest).ok_or("a boundary line is not followed by CRLF")?;
        let head_start = body.len() - rest.len();
        let head_len = memmem::find(&rest[..rest.len().min(MAX_PART_HEADER + 4)], b"\r\n\r\n")
            .ok_or("a part's headers do not end (or are longer than 8 KiB)")?;
        let value_start = head_start + head_len + 4;
        let value_len = finder
            .find(&body[value_start..])
            .ok_or("the form does not end with its closing boundary")?;
        let value = value_start..value_start + value_len;
        let head = std::str::from_utf8(&body[head_start..head_start + head_len])
            .map_err(|_| "a part's headers are not UTF-8")?;
        field(&mut form, head, body, value)?;
        at = value_start + value_len + close.len();
    }
    Err(format!("the form has more than {MAX_PARTS} parts"))
}

/// After a boundary: optional transport padding (spaces, tabs), then CRLF.
fn skip_padding(rest: &[u8]) -> Option<&[u8]> {
    let start = rest.iter().position(|b| !matches!(b, b' ' | b'\t'))?;
    rest[start..].strip_prefix(b"\r\n")
}

/// Note one part: a file is counted, a text field the gateway reads is kept.
fn field(form: &mut Form, head: &str, body: &[u8], value: Range<usize>) -> Result<(), String> {
    let disposition = head
        .split("\r\n")
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-disposition"))
        .map(|(_, v)| v)
        .ok_or("a part has no Content-Disposition")?;
    let name = param(disposition, "name").ok_or("a part has no name")?;
    if param(disposition, "filename").is_some() {
        form.files += 1;
        return Ok(());
    }
    if value.len() > MAX_TEXT_FIELD {
        return Err(format!("the field `{name}` is longer than 256 KiB"));
    }
    let text = std::str::from_utf8(&body[value.clone()])
        .map_err(|_| format!("the field `{name}` is not UTF-8 text"))?;
    form.text_bytes += text.len();
    match name {
        "model" if form.model.is_some() => return Err("the field `model` is repeated".into()),
        "model" => form.model = Some((text.to_string(), value)),
        "stream" => form.stream = text.trim().eq_ignore_ascii_case("true"),
        "response_format" => form.response_format = Some(text.trim().to_string()),
        "n" => {
            let n = text
                .trim()
                .parse()
                .map_err(|_| "the field `n` is not a number")?;
            form.n = Some(n);
        }
        "prompt" => form.prompt = Some(text.to_string()),
        _ => {}
    }
    Ok(())
}

/// A parameter of a Content-Disposition value (`name="model"`), unquoted.
fn param<'a>(disposition: &'a str, wanted: &str) -> Option<&'a str> {
    disposition.split(';').skip(1).find_map(|p| {
        let (name, value) = p.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case(wanted)
            .then(|| value.trim().trim_matches('"'))
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn form(parts: &[(&str, Option<&str>, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, file, value) in parts {
            out.extend_from_slice(b"--XyZ\r\n");
            let disposition = match file {
                Some(f) => format!("Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\nContent-Type: application/octet-stream\r\n\r\n"),
                None => format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n"),
            };
            out.extend_from_slice(disposition.as_bytes());
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"--XyZ--\r\n");
        out
    }

    #[test]
    fn boundaries_of_content_types() {
        assert_eq!(boundary("multipart/form-data; boundary=XyZ"), Some("XyZ"));
        assert_eq!(
            boundary("Multipart/Form-Data;charset=utf-8; boundary=\"a b\""),
            Some("a b")
        );
        assert_eq!(boundary("application/json"), None);
        assert_eq!(boundary("multipart/form-data"), None);
        assert_eq!(boundary("multipart/form-data; boundary="), None);
    }

    #[test]
    fn the_fields_and_the_model_span() {
        // A file that contains the boundary's text without the CRLF before it.
        let file: &[u8] = b"RIFF\x00\xff--XyZ not a delimiter\r\n-XyZ";
        let body = form(&[
            ("file", Some("a.wav"), file),
            ("model", None, b"whisper-1"),
            ("response_format", None, b"verbose_json"),
            ("stream", None, b"true"),
            ("n", None, b"2"),
            ("prompt", None, "héllo".as_bytes()),
        ]);
        let f = parse(&body, "XyZ").unwrap();
        let (model, span) = f.model.clone().unwrap();
        assert_eq!(model, "whisper-1");
        assert_eq!(&body[span], b"whisper-1");
        assert!(f.stream);
        assert_eq!(f.response_format.as_deref(), Some("verbose_json"));
        assert_eq!((f.n, f.files), (Some(2), 1));
        assert_eq!(f.prompt.as_deref(), Some("héllo"));
    }

    #[test]
    fn a_preamble_and_padding_are_allowed() {
        let mut body = b"preamble\r\n".to_vec();
        body.extend(form(&[("model", None, b"m")]));
        let body = String::from_utf8(body)
            .unwrap()
            .replace("--XyZ\r\n", "--XyZ  \r\n");
        assert_eq!(parse(body.as_bytes(), "XyZ").unwrap().model.unwrap().0, "m");
    }

    #[test]
    fn bad_forms_are_errors_not_panics() {
        let good = form(&[("model", None, b"m"), ("file", Some("x"), b"abc")]);
        // Every truncation of a good form is an error or a form, never a panic.
        for cut in 0..good.len() {
            let _ = parse(&good[..cut], "XyZ");
        }
        assert!(parse(b"", "XyZ").is_err());
        assert!(parse(
            &form(&[("model", None, b"a"), ("model", None, b"b")]),
            "XyZ"
        )
        .is_err());
        assert!(parse(&form(&[("n", None, b"x")]), "XyZ").is_err());
        let no_name = b"--XyZ\r\nContent-Disposition: form-data\r\n\r\nv\r\n--XyZ--";
        assert!(parse(no_name, "XyZ").is_err());
        let many: Vec<_> = (0..=MAX_PARTS).map(|_| ("x", None, &b"1"[..])).collect();
        assert!(parse(&form(&many), "XyZ").is_err());
        let long = vec![b'a'; MAX_TEXT_FIELD + 1];
        assert!(parse(&form(&[("prompt", None, &long)]), "XyZ").is_err());
    }
}
