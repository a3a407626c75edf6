//! OpenAI-format clients in front of Google Gemini (Generative Language API, `v1beta`): the
//! OpenAI chat request → `generateContent` body and its path. The rest of the Gemini
//! translations live next to it and are re-exported here: the `GenerateContentResponse` and
//! error bodies in [`super::gemini_response`], the stream in [`super::gemini_stream`],
//! embeddings in [`super::gemini_embed`].

use super::anthropic::{include_usage, openai_max_tokens, openai_tool_call, stream_flag};
use super::common::{
    function_tools, invalid, is_http_url, openai_text_content, parse_data_url, parse_request, short,
};
use super::json::{jobj, put_opt, str_field, Json, Obj};
use super::{TranslateError, Translated};

type Result<T> = std::result::Result<T, TranslateError>;

/// The model path segment: a leading `models/` is dropped, everything but RFC 3986
/// unreserved characters is percent-encoded (so `/`, `:`, `?` cannot change the path).
pub(crate) fn model_segment(model: &str) -> String {
    let model = model.strip_prefix("models/").unwrap_or(model);
    let mut s = String::with_capacity(model.len());
    for b in model.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            s.push(char::from(b));
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

/// `/v1beta/models/{model}:generateContent`, or `:streamGenerateContent?alt=sse`.
pub fn gemini_path(model: &str, stream: bool) -> String {
    let m = model_segment(model);
    if stream {
        format!("/v1beta/models/{m}:streamGenerateContent?alt=sse")
    } else {
        format!("/v1beta/models/{m}:generateContent")
    }
}

/// OpenAI chat request → Gemini `generateContent` request body (the model goes in the
/// path, see [`gemini_path`]).
///
/// System/developer messages → `systemInstruction`; user → `user` and assistant → `model`
/// contents (consecutive same-role turns merged); text parts, images and files as
/// `inlineData` (base64 `data:` URLs) or `fileData` (http(s) URLs), audio as `inlineData`;
/// assistant tool calls → `functionCall` parts; tool messages → `functionResponse` parts
/// (the function name is taken from the matching earlier tool call; a JSON-object result
/// is sent as is, anything else as `{"output": text}`). `temperature`, `top_p`,
/// `max_completion_tokens`/`max_tokens`, `stop`, `n`, `seed`, `presence_penalty`,
/// `frequency_penalty` and `response_format` → `generationConfig`; `tools` →
/// `functionDeclarations` (schemas reduced to the subset Gemini accepts); `tool_choice` →
/// `toolConfig.functionCallingConfig`. Other fields are dropped.
pub fn openai_chat_to_gemini(body: &[u8]) -> Result<Translated> {
    let req = parse_request(body)?;
    let messages = req
        .get("messages")
        .and_then(Json::as_array)
        .ok_or_else(|| invalid("`messages` must be an array"))?;

    let (system_parts, contents) = gemini_contents(messages)?;

    let mut out = Obj::new();
    out.insert("contents".into(), contents.into());
    if !system_parts.is_empty() {
        out.insert(
            "systemInstruction".into(),
            jobj! { "parts" => system_parts },
        );
    }
    if let Some(t) = req.get("tools") {
        let decls = function_declarations(t)?;
        if !decls.is_empty() {
            out.insert(
                "tools".into(),
                vec![jobj! { "functionDeclarations" => decls }].into(),
            );
            if let Some(c) = req.get("tool_choice") {
                out.insert("toolConfig".into(), tool_config(c)?);
            }
        }
    }
    let config = generation_config(&req)?;
    if !config.is_empty() {
        out.insert("generationConfig".into(), config.into());
    }
    let stream = stream_flag(&req)?;
    Ok(Translated {
        body: Json::Obj(out).to_vec(),
        stream,
        include_usage: stream && include_usage(&req),
    })
}

/// The system instruction's parts and the contents (`role`, `parts`) of OpenAI chat
/// `messages`: consecutive turns of one role merged, tool results given their call's name.
fn gemini_contents(messages: &[Json]) -> Result<(Vec<Json>, Vec<Json>)> {
    let mut system_parts: Vec<Json> = Vec::new();
    let mut contents: Vec<(&'static str, Vec<Json>)> = Vec::new();
    // (tool call id, function name) of the assistant tool calls so far.
    let mut calls: Vec<(String, String)> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let what = format!("messages[{i}]");
        let role = str_field(m, "role")
            .ok_or_else(|| invalid(format!("`{what}.role` must be a string")))?;
        match role {
            "system" | "developer" => {
                let text = openai_text_content(m.get("content"), &what)?;
                if !text.is_empty() {
                    system_parts.push(jobj! { "text" => text });
                }
            }
            "user" => push_content(&mut contents, "user", user_parts(m.get("content"), &what)?),
            "assistant" => {
                let parts = assistant_parts(m, &what, &mut calls)?;
                push_content(&mut contents, "model", parts);
            }
            "tool" => {
                let part = tool_result_part(m, &what, &calls)?;
                push_content(&mut contents, "user", vec![part]);
            }
            "function" => {
                return Err(TranslateError::Unsupported(
                    "the legacy `function` role (use `tool`)".into(),
                ))
            }
            other => {
                return Err(invalid(format!(
                    "`{what}.role` `{}` is not a chat role",
                    short(other)
                )))
            }
        }
    }
    if contents.is_empty() {
        return Err(invalid(
            "`messages` must contain at least one user or assistant message with content",
        ));
    }
    let contents = contents
        .into_iter()
        .map(|(role, parts)| jobj! { "role" => role, "parts" => parts })
        .collect();
    Ok((system_parts, contents))
}

/// An assistant message's parts: its text, and each tool call as a `functionCall` (noted in
/// `calls` so a later tool message can name its function).
fn assistant_parts(m: &Json, what: &str, calls: &mut Vec<(String, String)>) -> Result<Vec<Json>> {
    let mut parts = Vec::new();
    let text = match m.get("content") {
        Some(Json::Arr(ps)) => ps
            .iter()
            .filter_map(|p| str_field(p, "text").or_else(|| str_field(p, "refusal")))
            .collect::<String>(),
        other => openai_text_content(other, what)?,
    };
    if !text.is_empty() {
        parts.push(jobj! { "text" => text });
    }
    if let Some(tc) = m.get("tool_calls") {
        let tc = tc
            .as_array()
            .ok_or_else(|| invalid(format!("`{what}.tool_calls` must be an array")))?;
        for (j, call) in tc.iter().enumerate() {
            let (id, name, args) = openai_tool_call(call, &format!("{what}.tool_calls[{j}]"))?;
            calls.push((id.to_owned(), name.to_owned()));
            let mut part = Obj::new();
            part.insert(
                "functionCall".into(),
                jobj! { "name" => name, "args" => args },
            );
            // Gemini's thought signature, if the client kept it where the response put it
            // (`extra_content.google.thought_signature`).
            let sig = call
                .get("extra_content")
                .and_then(|e| e.get("google"))
                .and_then(|g| str_field(g, "thought_signature"));
            put_opt(&mut part, "thoughtSignature", sig);
            parts.push(Json::Obj(part));
        }
    }
    Ok(parts)
}

/// A tool message as a `functionResponse` part, named after the earlier tool call it
/// answers; a JSON-object result as is, anything else as `{"output": text}`.
fn tool_result_part(m: &Json, what: &str, calls: &[(String, String)]) -> Result<Json> {
    let id = str_field(m, "tool_call_id")
        .ok_or_else(|| invalid(format!("`{what}.tool_call_id` is missing")))?;
    let name = calls
        .iter()
        .rev()
        .find(|(c, _)| c == id)
        .map(|(_, n)| n.clone())
        .ok_or_else(|| {
            invalid(format!(
                "`{what}.tool_call_id` does not match an earlier assistant tool call"
            ))
        })?;
    let text = openai_text_content(m.get("content"), what)?;
    let response = match Json::parse_str(&text) {
        Ok(v @ Json::Obj(_)) => v,
        _ => jobj! { "output" => text },
    };
    Ok(jobj! { "functionResponse" => jobj! { "name" => name, "response" => response } })
}

fn push_content(
    contents: &mut Vec<(&'static str, Vec<Json>)>,
    role: &'static str,
    parts: Vec<Json>,
) {
    if parts.is_empty() {
        return;
    }
    match contents.last_mut() {
        Some((r, p)) if *r == role => p.extend(parts),
        _ => contents.push((role, parts)),
    }
}

fn user_parts(content: Option<&Json>, what: &str) -> Result<Vec<Json>> {
    match content {
        None => Ok(Vec::new()),
        Some(Json::Str(s)) if s.is_empty() => Ok(Vec::new()),
        Some(Json::Str(s)) => Ok(vec![jobj! { "text" => s.as_str() }]),
        Some(Json::Arr(parts)) => {
            let mut out = Vec::with_capacity(parts.len());
            for p in parts {
                if let Some(part) = user_part(p, what)? {
                    out.push(part);
                }
            }
            Ok(out)
        }
        Some(_) => Err(invalid(format!(
            "the content of {what} must be a string or an array of content parts"
        ))),
    }
}

/// A best-effort media type for a URL without one, from its file extension.
fn media_type_from_url(url: &str) -> Option<&'static str> {
    let path = url.split(['?', '#']).next().unwrap_or_default();
    let ext = path.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase())?;
    Some(match ext.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        "gif" => "image/gif",
        "heic" => "image/heic",
        "heif" => "image/heif",
        "pdf" => "application/pdf",
        _ => return None,
    })
}

fn media_part(url: &str, what: &str) -> Result<Json> {
    if let Some((media, data)) = parse_data_url(url) {
        Ok(jobj! { "inlineData" => jobj! { "mimeType" => media, "data" => data } })
    } else if is_http_url(url) {
        let mut fd = Obj::new();
        put_opt(&mut fd, "mimeType", media_type_from_url(url));
        fd.insert("fileUri".into(), url.into());
        Ok(jobj! { "fileData" => fd })
    } else {
        Err(invalid(format!(
            "media in {what} must be an http(s) URL or a base64 data: URL"
        )))
    }
}

fn user_part(p: &Json, what: &str) -> Result<Option<Json>> {
    match str_field(p, "type").unwrap_or("text") {
        "text" => {
            let text = str_field(p, "text")
                .ok_or_else(|| invalid(format!("a text part of {what} has no `text` string")))?;
            Ok((!text.is_empty()).then(|| jobj! { "text" => text }))
        }
        "image_url" => {
            let url = match p.get("image_url") {
                Some(Json::Str(u)) => u.as_str(),
                Some(o) => str_field(o, "url").unwrap_or_default(),
                None => "",
            };
            media_part(url, what).map(Some)
        }
        "file" => {
            let data = p.get("file").and_then(|f| str_field(f, "file_data"));
            match data {
                Some(d) if parse_data_url(d).is_some() => media_part(d, what).map(Some),
                _ => Err(TranslateError::Unsupported(format!(
                    "file parts without base64 `file_data` in {what}"
                ))),
            }
        }
        "input_audio" => {
            let audio = p.get("input_audio");
            let data = audio.and_then(|a| str_field(a, "data")).unwrap_or_default();
            let media = match audio.and_then(|a| str_field(a, "format")) {
                Some("mp3") => "audio/mp3",
                _ => "audio/wav",
            };
            Ok(Some(
                jobj! { "inlineData" => jobj! { "mimeType" => media, "data" => data } },
            ))
        }
        other => Err(TranslateError::Unsupported(format!(
            "content part type `{}` in {what}",
            short(other)
        ))),
    }
}

/// Schema keywords Gemini's `Schema` (an OpenAPI 3.0 subset) accepts.
const SCHEMA_KEYS: &[&str] = &[
    "type",
    "format",
    "title",
    "description",
    "nullable",
    "enum",
    "maxItems",
    "minItems",
    "properties",
    "required",
    "minProperties",
    "maxProperties",
    "minLength",
    "maxLength",
    "pattern",
    "example",
    "anyOf",
    "propertyOrdering",
    "default",
    "items",
    "minimum",
    "maximum",
];

/// Reduce a JSON Schema to what Gemini accepts: unknown keywords (`additionalProperties`,
/// `$schema`, `strict`, …) are dropped, `type: [T, "null"]` becomes `type: T` +
/// `nullable`, `const` becomes a one-value `enum`, and string formats other than `enum` and
/// `date-time` are dropped. Key order is kept.
fn gemini_schema(s: &Json) -> Json {
    let Json::Obj(m) = s else {
        return s.clone();
    };
    let mut out = Obj::new();
    for (k, v) in m {
        match k.as_str() {
            "type" => match v {
                Json::Arr(types) => {
                    let mut non_null = types.iter().filter(|t| t.as_str() != Some("null"));
                    if let Some(t) = non_null.next() {
                        out.insert("type".into(), t.clone());
                    }
                    if types.iter().any(|t| t.as_str() == Some("null")) {
                        out.insert("nullable".into(), true.into());
                    }
                }
                _ => {
                    out.insert(k.clone(), v.clone());
                }
            },
            "const" => {
                out.insert("enum".into(), vec![v.clone()].into());
            }
            "format" => {
                let keep = matches!(
                    v.as_str(),
                    Some("enum" | "date-time" | "int32" | "int64" | "float" | "double")
                );
                if keep {
                    out.insert(k.clone(), v.clone());
                }
            }
            "properties" => {
                if let Json::Obj(props) = v {
                    let props: Obj = props
                        .iter()
                        .map(|(name, p)| (name.clone(), gemini_schema(p)))
                        .collect();
                    out.insert(k.clone(), props.into());
                }
            }
            "items" => {
                out.insert(k.clone(), gemini_schema(v));
            }
            "anyOf" => {
                if let Json::Arr(a) = v {
                    let a: Vec<Json> = a.iter().map(gemini_schema).collect();
                    out.insert(k.clone(), a.into());
                }
            }
            key if SCHEMA_KEYS.contains(&key) => {
                out.insert(k.clone(), v.clone());
            }
            _ => {}
        }
    }
    Json::Obj(out)
}

fn function_declarations(t: &Json) -> Result<Vec<Json>> {
    let list = function_tools(t)?;
    let mut out = Vec::with_capacity(list.len());
    for (_, f, name) in list {
        let mut d = Obj::new();
        d.insert("name".into(), name.into());
        put_opt(&mut d, "description", str_field(f, "description"));
        if let Some(p) = f.get("parameters") {
            // Gemini rejects an object schema without properties.
            let empty = p
                .get("properties")
                .and_then(Json::as_object)
                .is_none_or(|props| props.is_empty());
            if !empty {
                d.insert("parameters".into(), gemini_schema(p));
            }
        }
        out.push(Json::Obj(d));
    }
    Ok(out)
}

fn tool_config(c: &Json) -> Result<Json> {
    let fcc = match c {
        Json::Str(s) => match s.as_str() {
            "auto" => jobj! { "mode" => "AUTO" },
            "none" => jobj! { "mode" => "NONE" },
            "required" => jobj! { "mode" => "ANY" },
            other => {
                return Err(invalid(format!(
                    "`tool_choice` `{}` is not auto, none or required",
                    short(other)
                )))
            }
        },
        Json::Obj(_) => {
            let name = c
                .get("function")
                .and_then(|f| str_field(f, "name"))
                .ok_or_else(|| invalid("`tool_choice.function.name` is missing"))?;
            jobj! { "mode" => "ANY", "allowedFunctionNames" => vec![Json::from(name)] }
        }
        _ => return Err(invalid("`tool_choice` must be a string or an object")),
    };
    Ok(jobj! { "functionCallingConfig" => fcc })
}

fn generation_config(req: &Json) -> Result<Obj> {
    let mut g = Obj::new();
    for (from, to) in [
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
    ] {
        if let Some(v) = req.get(from) {
            if v.as_f64().is_none() {
                return Err(invalid(format!("`{from}` must be a number")));
            }
            g.insert(to.into(), v.clone());
        }
    }
    if let Some(n) = openai_max_tokens(req)? {
        g.insert("maxOutputTokens".into(), n.into());
    }
    match req.get("stop") {
        None => {}
        Some(Json::Str(s)) => {
            g.insert("stopSequences".into(), vec![Json::from(s)].into());
        }
        Some(Json::Arr(a)) if a.is_empty() => {}
        Some(Json::Arr(a)) if a.iter().all(|s| s.as_str().is_some()) => {
            g.insert("stopSequences".into(), a.to_vec().into());
        }
        Some(_) => return Err(invalid("`stop` must be a string or an array of strings")),
    }
    if let Some(n) = req.get("n") {
        let n = n
            .as_u64()
            .filter(|n| *n > 0)
            .ok_or_else(|| invalid("`n` must be a positive integer"))?;
        g.insert("candidateCount".into(), n.into());
    }
    if let Some(seed) = req.get("seed") {
        if !matches!(seed, Json::Num(_)) {
            return Err(invalid("`seed` must be an integer"));
        }
        g.insert("seed".into(), seed.clone());
    }
    if let Some(rf) = req.get("response_format") {
        match str_field(rf, "type") {
            Some("json_object") => {
                g.insert("responseMimeType".into(), "application/json".into());
            }
            Some("json_schema") => {
                g.insert("responseMimeType".into(), "application/json".into());
                if let Some(s) = rf.get("json_schema").and_then(|j| j.get("schema")) {
                    g.insert("responseJsonSchema".into(), s.clone());
                }
            }
            _ => {}
        }
    }
    Ok(g)
}

pub use super::gemini_embed::{
    gemini_batch_to_openai_embeddings, gemini_embed_path, openai_embeddings_to_gemini_batch,
    EmbeddingsContext,
};
pub use super::gemini_response::{gemini_error_to_openai, gemini_to_openai_chat_response};
