//! Anthropic-format clients in front of OpenAI-compatible upstreams: the Anthropic Messages
//! request → OpenAI chat request, the OpenAI `chat.completion` → Anthropic message, and
//! OpenAI error bodies → Anthropic error bodies. The streaming response is
//! [`super::anthropic_stream::OpenAiStreamToAnthropic`].

use super::anthropic::stream_flag;
use super::common::{invalid, parse_request, parse_upstream, random_id, short, usage_from_openai};
use super::json::{jobj, put_opt, str_field, Json, Obj};
use super::{TranslateError, Translated};
use crate::usage::Usage;

type Result<T> = std::result::Result<T, TranslateError>;

/// Anthropic Messages request → OpenAI chat request for `upstream_model`.
///
/// `system` becomes a system message; text, image (base64 and URL), document (base64 and
/// text), `tool_use` and `tool_result` blocks become OpenAI content parts, `tool_calls` and
/// `tool` messages (tool results first, then the rest of the user turn); thinking blocks
/// are dropped. `tools`, `tool_choice` (with `disable_parallel_tool_use` →
/// `parallel_tool_calls: false`), `max_tokens`, `stop_sequences` → `stop`, `temperature`,
/// `top_p` and `metadata.user_id` → `user` are mapped; a streamed request also gets
/// `stream_options.include_usage: true`. Anthropic server tools are an error.
pub fn anthropic_to_openai_chat_request(body: &[u8], upstream_model: &str) -> Result<Translated> {
    let req = parse_request(body)?;
    let messages = chat_messages(&req)?;

    let mut out = Obj::new();
    out.insert("model".into(), upstream_model.into());
    out.insert("messages".into(), messages.into());
    sampling(&req, &mut out)?;
    if let Some(t) = req.get("tools") {
        let tools = tools(t)?;
        if !tools.is_empty() {
            out.insert("tools".into(), tools.into());
            if let Some(c) = req.get("tool_choice") {
                let (choice, parallel) = tool_choice(c)?;
                out.insert("tool_choice".into(), choice);
                if parallel == Some(false) {
                    out.insert("parallel_tool_calls".into(), false.into());
                }
            }
        }
    }
    let stream = stream_flag(&req)?;
    if stream {
        out.insert("stream".into(), true.into());
        out.insert("stream_options".into(), jobj! { "include_usage" => true });
    }
    Ok(Translated {
        body: Json::Obj(out).to_vec(),
        stream,
        include_usage: true,
    })
}

/// The OpenAI messages of an Anthropic request: `system` first, then each message.
fn chat_messages(req: &Json) -> Result<Vec<Json>> {
    let input = req
        .get("messages")
        .and_then(Json::as_array)
        .ok_or_else(|| invalid("`messages` must be an array"))?;

    let mut messages = Vec::with_capacity(input.len() + 1);
    if let Some(system) = req.get("system") {
        let text = blocks_text(system, "system")?;
        if !text.is_empty() {
            messages.push(jobj! { "role" => "system", "content" => text });
        }
    }
    for (i, m) in input.iter().enumerate() {
        let what = format!("messages[{i}]");
        match str_field(m, "role") {
            Some("user") => user_message(m.get("content"), &what, &mut messages)?,
            Some("assistant") => {
                if let Some(msg) = assistant_message(m.get("content"), &what)? {
                    messages.push(msg);
                }
            }
            Some(other) => {
                return Err(invalid(format!(
                    "`{what}.role` must be user or assistant, not `{}`",
                    short(other)
                )))
            }
            None => return Err(invalid(format!("`{what}.role` must be a string"))),
        }
    }
    Ok(messages)
}

/// `max_tokens`, `stop_sequences` → `stop`, `temperature`, `top_p` and `metadata.user_id` →
/// `user`, checked, into `out`.
fn sampling(req: &Json, out: &mut Obj) -> Result<()> {
    if let Some(v) = req.get("max_tokens") {
        let n = v
            .as_u64()
            .ok_or_else(|| invalid("`max_tokens` must be a non-negative integer"))?;
        out.insert("max_tokens".into(), n.into());
    }
    if let Some(seqs) = req.get("stop_sequences") {
        let seqs = seqs
            .as_array()
            .filter(|a| a.iter().all(|s| s.as_str().is_some()))
            .ok_or_else(|| invalid("`stop_sequences` must be an array of strings"))?;
        if !seqs.is_empty() {
            out.insert("stop".into(), seqs.to_vec().into());
        }
    }
    for key in ["temperature", "top_p"] {
        if let Some(v) = req.get(key) {
            if v.as_f64().is_none() {
                return Err(invalid(format!("`{key}` must be a number")));
            }
            out.insert(key.into(), v.clone());
        }
    }
    if let Some(user) = req.get("metadata").and_then(|m| str_field(m, "user_id")) {
        out.insert("user".into(), user.into());
    }
    Ok(())
}

/// The text of a string or an array of text blocks, blocks joined with a blank line.
fn blocks_text(v: &Json, what: &str) -> Result<String> {
    match v {
        Json::Str(s) => Ok(s.clone()),
        Json::Arr(blocks) => {
            let mut parts = Vec::with_capacity(blocks.len());
            for b in blocks {
                match str_field(b, "type") {
                    Some("text") => parts.push(str_field(b, "text").unwrap_or_default()),
                    other => {
                        return Err(TranslateError::Unsupported(format!(
                            "block type `{}` in {what}",
                            short(other.unwrap_or("?"))
                        )))
                    }
                }
            }
            Ok(parts.join("\n\n"))
        }
        _ => Err(invalid(format!(
            "`{what}` must be a string or an array of text blocks"
        ))),
    }
}

/// An image or document block → an OpenAI content part.
fn media_part(b: &Json, what: &str) -> Result<Json> {
    let kind = str_field(b, "type").unwrap_or_default();
    let source = b
        .get("source")
        .ok_or_else(|| invalid(format!("a `{kind}` block in {what} has no `source`")))?;
    match (kind, str_field(source, "type")) {
        ("image", Some("base64")) => {
            let media = str_field(source, "media_type").unwrap_or("image/png");
            let data = str_field(source, "data").unwrap_or_default();
            Ok(jobj! { "type" => "image_url", "image_url" => jobj! {
                "url" => format!("data:{media};base64,{data}"),
            }})
        }
        ("image", Some("url")) => Ok(jobj! { "type" => "image_url", "image_url" => jobj! {
            "url" => str_field(source, "url").unwrap_or_default(),
        }}),
        ("document", Some("base64")) => {
            let media = str_field(source, "media_type").unwrap_or("application/pdf");
            let data = str_field(source, "data").unwrap_or_default();
            let mut file = Obj::new();
            put_opt(&mut file, "filename", str_field(b, "title"));
            file.insert(
                "file_data".into(),
                format!("data:{media};base64,{data}").into(),
            );
            Ok(jobj! { "type" => "file", "file" => file })
        }
        ("document", Some("text")) => Ok(jobj! {
            "type" => "text",
            "text" => str_field(source, "data").unwrap_or_default(),
        }),
        (_, source_kind) => Err(TranslateError::Unsupported(format!(
            "`{}` blocks with source type `{}` in {what}",
            short(kind),
            short(source_kind.unwrap_or("?"))
        ))),
    }
}

/// Append the OpenAI messages for one Anthropic user turn: a `tool` message per
/// `tool_result` block, then a user message with the remaining content.
fn user_message(content: Option<&Json>, what: &str, out: &mut Vec<Json>) -> Result<()> {
    let blocks = match content {
        Some(Json::Str(s)) => {
            out.push(jobj! { "role" => "user", "content" => s.as_str() });
            return Ok(());
        }
        Some(Json::Arr(blocks)) => blocks,
        _ => {
            return Err(invalid(format!(
                "the content of {what} must be a string or an array of blocks"
            )))
        }
    };
    let mut parts: Vec<Json> = Vec::new();
    for b in blocks {
        match str_field(b, "type") {
            Some("text") => parts.push(jobj! {
                "type" => "text",
                "text" => str_field(b, "text").unwrap_or_default(),
            }),
            Some("image") | Some("document") => parts.push(media_part(b, what)?),
            Some("tool_result") => out.push(tool_message(b, what, &mut parts)?),
            Some("thinking") | Some("redacted_thinking") => {}
            other => {
                return Err(TranslateError::Unsupported(format!(
                    "block type `{}` in {what}",
                    short(other.unwrap_or("?"))
                )))
            }
        }
    }
    if parts.is_empty() {
        return Ok(());
    }
    let content = match parts.as_slice() {
        [only] if str_field(only, "type") == Some("text") => {
            Json::from(str_field(only, "text").unwrap_or_default())
        }
        _ => parts.into(),
    };
    out.push(jobj! { "role" => "user", "content" => content });
    Ok(())
}

/// The OpenAI `tool` message of a `tool_result` block: its text (media blocks in it go to
/// `parts`, the user message that follows the tool messages: OpenAI tool messages carry
/// text only).
fn tool_message(b: &Json, what: &str, parts: &mut Vec<Json>) -> Result<Json> {
    let id = str_field(b, "tool_use_id")
        .ok_or_else(|| invalid(format!("a tool_result in {what} has no `tool_use_id`")))?;
    let mut texts = Vec::new();
    match b.get("content") {
        None => {}
        Some(Json::Str(s)) => texts.push(s.as_str()),
        Some(Json::Arr(inner)) => {
            for c in inner {
                match str_field(c, "type") {
                    Some("text") => texts.push(str_field(c, "text").unwrap_or_default()),
                    Some("image") | Some("document") => parts.push(media_part(c, what)?),
                    other => {
                        return Err(TranslateError::Unsupported(format!(
                            "block type `{}` in a tool_result in {what}",
                            short(other.unwrap_or("?"))
                        )))
                    }
                }
            }
        }
        Some(_) => {
            return Err(invalid(format!(
                "a tool_result `content` in {what} must be a string or an array"
            )))
        }
    }
    Ok(jobj! {
        "role" => "tool",
        "tool_call_id" => id,
        "content" => texts.join("\n"),
    })
}

fn assistant_message(content: Option<&Json>, what: &str) -> Result<Option<Json>> {
    let mut text = String::new();
    let mut calls = Vec::new();
    match content {
        Some(Json::Str(s)) => text.push_str(s),
        Some(Json::Arr(blocks)) => {
            for b in blocks {
                match str_field(b, "type") {
                    Some("text") => text.push_str(str_field(b, "text").unwrap_or_default()),
                    Some("tool_use") => {
                        let id = str_field(b, "id")
                            .ok_or_else(|| invalid(format!("a tool_use in {what} has no `id`")))?;
                        let name = str_field(b, "name").ok_or_else(|| {
                            invalid(format!("a tool_use in {what} has no `name`"))
                        })?;
                        let input = b.get("input").cloned().unwrap_or(Json::Obj(Obj::new()));
                        calls.push(jobj! {
                            "id" => id,
                            "type" => "function",
                            "function" => jobj! { "name" => name, "arguments" => input.to_json_string() },
                        });
                    }
                    Some("thinking") | Some("redacted_thinking") => {}
                    other => {
                        return Err(TranslateError::Unsupported(format!(
                            "block type `{}` in {what}",
                            short(other.unwrap_or("?"))
                        )))
                    }
                }
            }
        }
        _ => {
            return Err(invalid(format!(
                "the content of {what} must be a string or an array of blocks"
            )))
        }
    }
    if text.is_empty() && calls.is_empty() {
        return Ok(None);
    }
    let mut m = Obj::new();
    m.insert("role".into(), "assistant".into());
    m.insert(
        "content".into(),
        if text.is_empty() {
            Json::Null
        } else {
            text.into()
        },
    );
    if !calls.is_empty() {
        m.insert("tool_calls".into(), calls.into());
    }
    Ok(Some(Json::Obj(m)))
}

fn tools(t: &Json) -> Result<Vec<Json>> {
    let list = t
        .as_array()
        .ok_or_else(|| invalid("`tools` must be an array"))?;
    let mut out = Vec::with_capacity(list.len());
    for (i, tool) in list.iter().enumerate() {
        if let Some(kind) = str_field(tool, "type").filter(|k| *k != "custom") {
            return Err(TranslateError::Unsupported(format!(
                "Anthropic server tool `{}`",
                short(kind)
            )));
        }
        let name = str_field(tool, "name")
            .ok_or_else(|| invalid(format!("`tools[{i}].name` is missing")))?;
        let mut f = Obj::new();
        f.insert("name".into(), name.into());
        put_opt(&mut f, "description", str_field(tool, "description"));
        f.insert(
            "parameters".into(),
            tool.get("input_schema")
                .cloned()
                .unwrap_or_else(|| jobj! { "type" => "object", "properties" => Obj::new() }),
        );
        out.push(jobj! { "type" => "function", "function" => f });
    }
    Ok(out)
}

/// Anthropic `tool_choice` → (OpenAI `tool_choice`, `parallel_tool_calls` if set).
fn tool_choice(c: &Json) -> Result<(Json, Option<bool>)> {
    let parallel = c
        .get("disable_parallel_tool_use")
        .and_then(Json::as_bool)
        .map(|d| !d);
    let choice = match str_field(c, "type") {
        Some("auto") => Json::from("auto"),
        Some("any") => Json::from("required"),
        Some("none") => Json::from("none"),
        Some("tool") => {
            let name =
                str_field(c, "name").ok_or_else(|| invalid("`tool_choice.name` is missing"))?;
            jobj! { "type" => "function", "function" => jobj! { "name" => name } }
        }
        _ => {
            return Err(invalid(
                "`tool_choice.type` must be auto, any, tool or none",
            ))
        }
    };
    Ok((choice, parallel))
}

/// OpenAI `finish_reason` → Anthropic `stop_reason`.
pub(crate) fn stop_reason(finish: &str, has_tool_calls: bool) -> &'static str {
    match finish {
        "length" => "max_tokens",
        "tool_calls" | "function_call" => "tool_use",
        "content_filter" => "refusal",
        _ if has_tool_calls => "tool_use",
        _ => "end_turn",
    }
}

/// The Anthropic `usage` object for gateway usage `u` (see the module docs).
pub(crate) fn anthropic_usage_json(u: &Usage) -> Json {
    jobj! {
        "input_tokens" => u.input_tokens.saturating_sub(u.cached_input_tokens),
        "cache_creation_input_tokens" => 0u64,
        "cache_read_input_tokens" => u.cached_input_tokens,
        "output_tokens" => u.output_tokens,
    }
}

/// The reasoning text of an OpenAI message or delta (`reasoning_content`, or `reasoning`
/// as some OpenAI-compatible servers name it).
pub(crate) fn reasoning_text(m: &Json) -> Option<&str> {
    str_field(m, "reasoning_content").or_else(|| str_field(m, "reasoning"))
}

/// OpenAI `chat.completion` → Anthropic message for the client-facing `model`; the first
/// choice is used. Returns the body and the usage it reports.
pub fn openai_chat_response_to_anthropic(body: &[u8], model: &str) -> Result<(Vec<u8>, Usage)> {
    let resp = parse_upstream(body)?;
    if resp.get("error").is_some() {
        return Err(TranslateError::UpstreamResponse("an error object"));
    }
    let choice = resp
        .get("choices")
        .and_then(Json::as_array)
        .and_then(|c| c.first())
        .ok_or(TranslateError::UpstreamResponse("no choices"))?;
    let message = choice
        .get("message")
        .ok_or(TranslateError::UpstreamResponse("no message"))?;

    let mut content = Vec::new();
    if let Some(r) = reasoning_text(message).filter(|r| !r.is_empty()) {
        content.push(jobj! { "type" => "thinking", "thinking" => r, "signature" => "" });
    }
    let text = match message.get("content") {
        Some(Json::Str(s)) => s.clone(),
        Some(Json::Arr(parts)) => parts
            .iter()
            .filter_map(|p| str_field(p, "text"))
            .collect::<String>(),
        _ => String::new(),
    };
    if !text.is_empty() {
        content.push(jobj! { "type" => "text", "text" => text });
    }
    if let Some(refusal) = str_field(message, "refusal").filter(|r| !r.is_empty()) {
        content.push(jobj! { "type" => "text", "text" => refusal });
    }
    let calls = message
        .get("tool_calls")
        .and_then(Json::as_array)
        .unwrap_or_default();
    for call in calls {
        let f = call.get("function");
        let args = f
            .and_then(|f| str_field(f, "arguments"))
            .unwrap_or_default();
        let input = if args.trim().is_empty() {
            Json::Obj(Obj::new())
        } else {
            Json::parse_str(args)
                .ok()
                .filter(|v| v.as_object().is_some())
                .ok_or(TranslateError::UpstreamResponse(
                    "tool call arguments are not a JSON object",
                ))?
        };
        content.push(jobj! {
            "type" => "tool_use",
            "id" => str_field(call, "id").map_or_else(|| random_id("toolu_"), str::to_owned),
            "name" => f.and_then(|f| str_field(f, "name")).unwrap_or_default(),
            "input" => input,
        });
    }

    let usage = resp.get("usage").map(usage_from_openai).unwrap_or_default();
    let finish = str_field(choice, "finish_reason").unwrap_or("stop");
    let id = str_field(&resp, "id").map_or_else(|| random_id("msg_"), |id| format!("msg_{id}"));
    let out = jobj! {
        "id" => id,
        "type" => "message",
        "role" => "assistant",
        "model" => model,
        "content" => content,
        "stop_reason" => stop_reason(finish, !calls.is_empty()),
        "stop_sequence" => Json::Null,
        "usage" => anthropic_usage_json(&usage),
    };
    Ok((out.to_vec(), usage))
}

/// OpenAI error `type`/`code` → Anthropic error `type`.
fn anthropic_error_kind(kind: &str, code: &str) -> &'static str {
    match (kind, code) {
        ("authentication_error", _) | (_, "invalid_api_key") => "authentication_error",
        ("permission_error", _) | ("permission_denied", _) => "permission_error",
        ("not_found_error", _) | (_, "model_not_found") | (_, "not_found") => "not_found_error",
        ("rate_limit_error", _) | ("insufficient_quota", _) | ("requests", _) | ("tokens", _) => {
            "rate_limit_error"
        }
        (_, "request_too_large") => "request_too_large",
        ("invalid_request_error", _) => "invalid_request_error",
        _ => "api_error",
    }
}

pub(crate) fn openai_error_to_anthropic_json(v: &Json) -> Json {
    let err = v.get("error");
    let message = match err {
        Some(Json::Str(s)) => Some(s.as_str()),
        Some(e) => str_field(e, "message"),
        None => None,
    }
    .filter(|m| !m.is_empty())
    .unwrap_or("The upstream provider returned an error.");
    let kind = err.and_then(|e| str_field(e, "type")).unwrap_or_default();
    let code = err.and_then(|e| str_field(e, "code")).unwrap_or_default();
    jobj! {
        "type" => "error",
        "error" => jobj! { "type" => anthropic_error_kind(kind, code), "message" => message },
    }
}

/// OpenAI error body `{"error":{"message","type","code"}}` → Anthropic error body
/// `{"type":"error","error":{"type","message"}}`. Any other body gives a generic
/// `api_error`. Never fails.
pub fn openai_error_to_anthropic(body: &[u8]) -> Vec<u8> {
    openai_error_to_anthropic_json(&Json::parse(body).unwrap_or_default()).to_vec()
}
