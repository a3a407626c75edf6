//! OpenAI-format clients in front of Anthropic: the OpenAI chat request → Anthropic
//! Messages request (`POST /v1/messages`, `anthropic-version: 2023-06-01`), the Anthropic
//! message → OpenAI `chat.completion`, and Anthropic error bodies → OpenAI error bodies.
//! The streaming response is in [`super::anthropic_stream`]; the reverse direction
//! (Anthropic-format clients) in [`super::anthropic_reverse`].

use super::common::{
    function_tools, invalid, is_http_url, openai_error, openai_text_content, openai_usage_json,
    parse_data_url, parse_request, parse_upstream, random_id, short, unix_now,
};
use super::json::{jobj, put_opt, str_field, Json, Obj};
use super::{TranslateError, Translated};
use crate::usage::Usage;

/// The `anthropic-version` header value these translations follow.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// `max_tokens` sent to Anthropic (where it is required) when the OpenAI request has
/// neither `max_completion_tokens` nor `max_tokens`.
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

type Result<T> = std::result::Result<T, TranslateError>;

/// OpenAI chat request → Anthropic Messages request for `upstream_model`.
///
/// System and developer messages become the top-level `system` (joined with a blank line);
/// consecutive messages of the same role are merged (tool results become `tool_result`
/// blocks of a user turn); content parts, tool calls, tools, `tool_choice`,
/// `parallel_tool_calls`, `max_completion_tokens`/`max_tokens` (default
/// [`DEFAULT_MAX_TOKENS`]), `stop`, `temperature` (clamped to Anthropic's 0–1), `top_p`,
/// `stream` and `user` are mapped; other OpenAI fields are dropped. `n` > 1 is an error.
pub fn openai_chat_to_anthropic(body: &[u8], upstream_model: &str) -> Result<Translated> {
    let req = parse_request(body)?;
    let messages = req
        .get("messages")
        .and_then(Json::as_array)
        .ok_or_else(|| invalid("`messages` must be an array"))?;

    let mut system: Vec<String> = Vec::new();
    let mut turns: Vec<(&'static str, Vec<Json>)> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let role = str_field(m, "role")
            .ok_or_else(|| invalid(format!("`messages[{i}].role` must be a string")))?;
        let what = format!("messages[{i}]");
        match role {
            "system" | "developer" => {
                let text = openai_text_content(m.get("content"), &what)?;
                if !text.is_empty() {
                    system.push(text);
                }
            }
            "user" => push_turn(&mut turns, "user", user_blocks(m.get("content"), &what)?),
            "assistant" => push_turn(&mut turns, "assistant", assistant_blocks(m, &what)?),
            "tool" => push_turn(&mut turns, "user", vec![tool_result_block(m, &what)?]),
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
    if turns.is_empty() {
        return Err(invalid(
            "`messages` must contain at least one user or assistant message with content",
        ));
    }

    if let Some(n) = req.get("n") {
        if n.as_u64() != Some(1) {
            return Err(TranslateError::Unsupported("`n` other than 1".into()));
        }
    }

    let mut out = Obj::new();
    out.insert("model".into(), upstream_model.into());
    out.insert("max_tokens".into(), max_tokens(&req)?.into());
    if !system.is_empty() {
        out.insert("system".into(), system.join("\n\n").into());
    }
    let messages: Vec<Json> = turns
        .into_iter()
        .map(|(role, content)| jobj! { "role" => role, "content" => content })
        .collect();
    out.insert("messages".into(), messages.into());

    insert_tools(&req, &mut out)?;
    insert_sampling(&req, &mut out)?;
    if let Some(user) = str_field(&req, "user") {
        out.insert("metadata".into(), jobj! { "user_id" => user });
    }
    let stream = stream_flag(&req)?;
    if stream {
        out.insert("stream".into(), true.into());
    }
    Ok(Translated {
        body: Json::Obj(out).to_vec(),
        stream,
        include_usage: stream && include_usage(&req),
    })
}

/// `tools`, and `tool_choice` with `parallel_tool_calls: false` as
/// `disable_parallel_tool_use`.
fn insert_tools(req: &Json, out: &mut Obj) -> Result<()> {
    let tools = match req.get("tools") {
        Some(t) => Some(tools(t)?),
        None => None,
    };
    let parallel = req.get("parallel_tool_calls").and_then(Json::as_bool);
    if let Some(tools) = tools.filter(|t| !t.is_empty()) {
        out.insert("tools".into(), tools.into());
        let mut choice = match req.get("tool_choice") {
            Some(c) => tool_choice(c)?,
            None => jobj! { "type" => "auto" },
        };
        if parallel == Some(false) {
            if let Json::Obj(c) = &mut choice {
                if c.get("type").and_then(Json::as_str) != Some("none") {
                    c.insert("disable_parallel_tool_use".into(), true.into());
                }
            }
        }
        if req.get("tool_choice").is_some() || parallel == Some(false) {
            out.insert("tool_choice".into(), choice);
        }
    }

    Ok(())
}

/// `stop` → `stop_sequences`, `temperature` (clamped to 0–1) and `top_p`.
fn insert_sampling(req: &Json, out: &mut Obj) -> Result<()> {
    match req.get("stop") {
        None => {}
        Some(Json::Str(s)) => {
            out.insert("stop_sequences".into(), vec![Json::from(s)].into());
        }
        Some(Json::Arr(a)) => {
            let mut seqs = Vec::with_capacity(a.len());
            for s in a {
                let s = s
                    .as_str()
                    .ok_or_else(|| invalid("`stop` must be a string or an array of strings"))?;
                seqs.push(Json::from(s));
            }
            if !seqs.is_empty() {
                out.insert("stop_sequences".into(), seqs.into());
            }
        }
        Some(_) => return Err(invalid("`stop` must be a string or an array of strings")),
    }
    if let Some(t) = req.get("temperature") {
        let t = t
            .as_f64()
            .ok_or_else(|| invalid("`temperature` must be a number"))?;
        out.insert("temperature".into(), t.clamp(0.0, 1.0).into());
    }
    if let Some(p) = req.get("top_p") {
        if p.as_f64().is_none() {
            return Err(invalid("`top_p` must be a number"));
        }
        out.insert("top_p".into(), p.clone());
    }
    Ok(())
}

pub(crate) fn stream_flag(req: &Json) -> Result<bool> {
    match req.get("stream") {
        None => Ok(false),
        Some(Json::Bool(b)) => Ok(*b),
        Some(_) => Err(invalid("`stream` must be a boolean")),
    }
}

pub(crate) fn include_usage(req: &Json) -> bool {
    req.get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Json::as_bool)
        .unwrap_or(false)
}

/// `max_completion_tokens`, else `max_tokens`, else `None`.
pub(crate) fn openai_max_tokens(req: &Json) -> Result<Option<u64>> {
    for key in ["max_completion_tokens", "max_tokens"] {
        if let Some(v) = req.get(key) {
            return match v.as_u64() {
                Some(n) if n > 0 => Ok(Some(n)),
                _ => Err(invalid(format!("`{key}` must be a positive integer"))),
            };
        }
    }
    Ok(None)
}

fn max_tokens(req: &Json) -> Result<u64> {
    Ok(openai_max_tokens(req)?.unwrap_or(DEFAULT_MAX_TOKENS))
}

/// Append blocks to the last turn when it has the same role, else start a new turn.
/// Empty block lists add nothing.
fn push_turn(turns: &mut Vec<(&'static str, Vec<Json>)>, role: &'static str, blocks: Vec<Json>) {
    if blocks.is_empty() {
        return;
    }
    match turns.last_mut() {
        Some((r, content)) if *r == role => content.extend(blocks),
        _ => turns.push((role, blocks)),
    }
}

fn text_block(text: &str, part: Option<&Json>) -> Json {
    let mut b = jobj! { "type" => "text", "text" => text };
    copy_cache_control(&mut b, part);
    b
}

/// Keep a client's Anthropic-style `cache_control` marker on a content part.
fn copy_cache_control(block: &mut Json, part: Option<&Json>) {
    if let (Json::Obj(b), Some(cc)) = (block, part.and_then(|p| p.get("cache_control"))) {
        b.insert("cache_control".into(), cc.clone());
    }
}

/// Blocks of a user message `content` (string or parts).
fn user_blocks(content: Option<&Json>, what: &str) -> Result<Vec<Json>> {
    match content {
        None => Ok(Vec::new()),
        Some(Json::Str(s)) if s.is_empty() => Ok(Vec::new()),
        Some(Json::Str(s)) => Ok(vec![text_block(s, None)]),
        Some(Json::Arr(parts)) => {
            let mut blocks = Vec::with_capacity(parts.len());
            for p in parts {
                if let Some(b) = content_part(p, what)? {
                    blocks.push(b);
                }
            }
            Ok(blocks)
        }
        Some(_) => Err(invalid(format!(
            "the content of {what} must be a string or an array of content parts"
        ))),
    }
}

/// One OpenAI content part → an Anthropic block (`None` for empty text).
fn content_part(p: &Json, what: &str) -> Result<Option<Json>> {
    let kind = str_field(p, "type").unwrap_or("text");
    match kind {
        "text" => {
            let text = str_field(p, "text")
                .ok_or_else(|| invalid(format!("a text part of {what} has no `text` string")))?;
            Ok((!text.is_empty()).then(|| text_block(text, Some(p))))
        }
        "image_url" => {
            let url = match p.get("image_url") {
                Some(Json::Str(u)) => u.as_str(),
                Some(o) => str_field(o, "url").unwrap_or_default(),
                None => "",
            };
            let mut b = jobj! { "type" => "image", "source" => image_source(url, what)? };
            copy_cache_control(&mut b, Some(p));
            Ok(Some(b))
        }
        "file" => {
            let file = p.get("file");
            let data = file.and_then(|f| str_field(f, "file_data"));
            let Some((media, data)) = data.and_then(parse_data_url) else {
                return Err(TranslateError::Unsupported(format!(
                    "file parts without base64 `file_data` in {what}"
                )));
            };
            let mut b = jobj! { "type" => "document", "source" => jobj! {
                "type" => "base64", "media_type" => media, "data" => data,
            }};
            copy_cache_control(&mut b, Some(p));
            Ok(Some(b))
        }
        other => Err(TranslateError::Unsupported(format!(
            "content part type `{}` in {what}",
            short(other)
        ))),
    }
}

fn image_source(url: &str, what: &str) -> Result<Json> {
    if let Some((media, data)) = parse_data_url(url) {
        Ok(jobj! { "type" => "base64", "media_type" => media, "data" => data })
    } else if is_http_url(url) {
        Ok(jobj! { "type" => "url", "url" => url })
    } else {
        Err(invalid(format!(
            "an image in {what} must be an http(s) URL or a base64 data: URL"
        )))
    }
}

/// Text blocks and `tool_use` blocks of an assistant message.
fn assistant_blocks(m: &Json, what: &str) -> Result<Vec<Json>> {
    let mut blocks = Vec::new();
    match m.get("content") {
        Some(Json::Arr(parts)) => {
            for p in parts {
                match str_field(p, "type").unwrap_or("text") {
                    // A refusal the model produced earlier is replayed as text.
                    "text" | "refusal" => {
                        let t = str_field(p, "text")
                            .or_else(|| str_field(p, "refusal"))
                            .unwrap_or_default();
                        if !t.is_empty() {
                            blocks.push(text_block(t, Some(p)));
                        }
                    }
                    other => {
                        return Err(TranslateError::Unsupported(format!(
                            "content part type `{}` in {what}",
                            short(other)
                        )))
                    }
                }
            }
        }
        other => {
            let text = openai_text_content(other, what)?;
            if !text.is_empty() {
                blocks.push(text_block(&text, None));
            }
        }
    }
    if let Some(calls) = m.get("tool_calls") {
        let calls = calls
            .as_array()
            .ok_or_else(|| invalid(format!("`{what}.tool_calls` must be an array")))?;
        for (j, call) in calls.iter().enumerate() {
            let (id, name, input) = openai_tool_call(call, &format!("{what}.tool_calls[{j}]"))?;
            blocks
                .push(jobj! { "type" => "tool_use", "id" => id, "name" => name, "input" => input });
        }
    }
    Ok(blocks)
}

/// `(id, name, arguments as a JSON object)` of an OpenAI tool call.
pub(crate) fn openai_tool_call<'a>(call: &'a Json, what: &str) -> Result<(&'a str, &'a str, Json)> {
    let id = str_field(call, "id").ok_or_else(|| invalid(format!("`{what}.id` is missing")))?;
    let f = call
        .get("function")
        .ok_or_else(|| invalid(format!("`{what}.function` is missing")))?;
    let name = str_field(f, "name")
        .ok_or_else(|| invalid(format!("`{what}.function.name` is missing")))?;
    let args = str_field(f, "arguments").unwrap_or_default();
    let input = if args.trim().is_empty() {
        Json::Obj(Obj::new())
    } else {
        Json::parse_str(args)
            .map_err(|_| invalid(format!("`{what}.function.arguments` is not valid JSON")))?
    };
    if input.as_object().is_none() {
        return Err(invalid(format!(
            "`{what}.function.arguments` must be a JSON object"
        )));
    }
    Ok((id, name, input))
}

fn tool_result_block(m: &Json, what: &str) -> Result<Json> {
    let id = str_field(m, "tool_call_id")
        .ok_or_else(|| invalid(format!("`{what}.tool_call_id` is missing")))?;
    let mut b = jobj! { "type" => "tool_result", "tool_use_id" => id };
    let content = match m.get("content") {
        None => None,
        Some(Json::Str(s)) => (!s.is_empty()).then(|| Json::from(s)),
        Some(c @ Json::Arr(_)) => {
            let blocks = user_blocks(Some(c), what)?;
            (!blocks.is_empty()).then(|| Json::from(blocks))
        }
        Some(_) => {
            return Err(invalid(format!(
                "the content of {what} must be a string or an array of content parts"
            )))
        }
    };
    if let (Json::Obj(o), Some(c)) = (&mut b, content) {
        o.insert("content".into(), c);
    }
    Ok(b)
}

fn tools(t: &Json) -> Result<Vec<Json>> {
    let list = function_tools(t)?;
    let mut out = Vec::with_capacity(list.len());
    for (i, f, name) in list {
        let mut o = Obj::new();
        o.insert("name".into(), name.into());
        put_opt(&mut o, "description", str_field(f, "description"));
        let schema = match f.get("parameters") {
            Some(p @ Json::Obj(_)) => p.clone(),
            Some(_) => {
                return Err(invalid(format!(
                    "`tools[{i}].function.parameters` must be an object"
                )))
            }
            None => jobj! { "type" => "object", "properties" => Obj::new() },
        };
        o.insert("input_schema".into(), schema);
        out.push(Json::Obj(o));
    }
    Ok(out)
}

fn tool_choice(c: &Json) -> Result<Json> {
    match c {
        Json::Str(s) => match s.as_str() {
            "auto" => Ok(jobj! { "type" => "auto" }),
            "none" => Ok(jobj! { "type" => "none" }),
            "required" => Ok(jobj! { "type" => "any" }),
            other => Err(invalid(format!(
                "`tool_choice` `{}` is not auto, none or required",
                short(other)
            ))),
        },
        Json::Obj(_) => {
            let name = c
                .get("function")
                .and_then(|f| str_field(f, "name"))
                .ok_or_else(|| invalid("`tool_choice.function.name` is missing"))?;
            Ok(jobj! { "type" => "tool", "name" => name })
        }
        _ => Err(invalid("`tool_choice` must be a string or an object")),
    }
}

/// Anthropic `stop_reason` → OpenAI `finish_reason`.
pub(crate) fn finish_reason(stop_reason: Option<&str>) -> &'static str {
    match stop_reason {
        Some("max_tokens") | Some("model_context_window_exceeded") => "length",
        Some("tool_use") => "tool_calls",
        Some("refusal") => "content_filter",
        // end_turn, stop_sequence, pause_turn, unknown.
        _ => "stop",
    }
}

/// Running Anthropic usage counters (see the table in the module docs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct AnthropicUsage {
    pub(crate) input: u64,
    pub(crate) cache_read: u64,
    pub(crate) cache_creation: u64,
    pub(crate) output: u64,
}

impl AnthropicUsage {
    /// Replace the counters present in an Anthropic `usage` object. Returns whether
    /// `output_tokens` was present.
    pub(crate) fn update(&mut self, u: &Json) -> bool {
        if let Some(v) = u.get("input_tokens") {
            self.input = v.count();
        }
        if let Some(v) = u.get("cache_read_input_tokens") {
            self.cache_read = v.count();
        }
        if let Some(v) = u.get("cache_creation_input_tokens") {
            self.cache_creation = v.count();
        }
        match u.get("output_tokens") {
            Some(v) => {
                self.output = v.count();
                true
            }
            None => false,
        }
    }

    pub(crate) fn to_usage(self) -> Usage {
        Usage {
            input_tokens: self
                .input
                .saturating_add(self.cache_read)
                .saturating_add(self.cache_creation),
            output_tokens: self.output,
            cached_input_tokens: self.cache_read,
            cache_write_tokens: self.cache_creation,
            reasoning_tokens: 0,
            estimated: false,
            units: crate::usage::Units::NONE,
        }
    }
}

/// Anthropic message response → OpenAI `chat.completion` for the client-facing `model`.
/// Returns the body and the usage it reports.
pub fn anthropic_to_openai_chat_response(body: &[u8], model: &str) -> Result<(Vec<u8>, Usage)> {
    let msg = parse_upstream(body)?;
    if str_field(&msg, "type") == Some("error") {
        return Err(TranslateError::UpstreamResponse("an error object"));
    }
    let content = msg
        .get("content")
        .and_then(Json::as_array)
        .ok_or(TranslateError::UpstreamResponse("no `content` array"))?;
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut calls = Vec::new();
    for block in content {
        match str_field(block, "type") {
            Some("text") => text.push_str(str_field(block, "text").unwrap_or_default()),
            Some("thinking") => {
                reasoning.push_str(str_field(block, "thinking").unwrap_or_default())
            }
            Some("tool_use") => {
                let input = block.get("input").cloned().unwrap_or(Json::Obj(Obj::new()));
                calls.push(jobj! {
                    "id" => str_field(block, "id").unwrap_or_default(),
                    "type" => "function",
                    "function" => jobj! {
                        "name" => str_field(block, "name").unwrap_or_default(),
                        "arguments" => input.to_json_string(),
                    },
                });
            }
            // redacted_thinking, server tool blocks and future types have no OpenAI form.
            _ => {}
        }
    }
    let mut usage = AnthropicUsage::default();
    if let Some(u) = msg.get("usage") {
        usage.update(u);
    }
    let usage = usage.to_usage();

    let mut message = Obj::new();
    message.insert("role".into(), "assistant".into());
    let content = if text.is_empty() && !calls.is_empty() {
        Json::Null
    } else {
        text.into()
    };
    message.insert("content".into(), content);
    if !reasoning.is_empty() {
        message.insert("reasoning_content".into(), reasoning.into());
    }
    if !calls.is_empty() {
        message.insert("tool_calls".into(), calls.into());
    }
    message.insert("refusal".into(), Json::Null);

    let id =
        str_field(&msg, "id").map_or_else(|| random_id("chatcmpl-"), |id| format!("chatcmpl-{id}"));
    let out = jobj! {
        "id" => id,
        "object" => "chat.completion",
        "created" => unix_now(),
        "model" => model,
        "choices" => vec![jobj! {
            "index" => 0u64,
            "message" => message,
            "logprobs" => Json::Null,
            "finish_reason" => finish_reason(str_field(&msg, "stop_reason")),
        }],
        "usage" => openai_usage_json(&usage),
    };
    Ok((out.to_vec(), usage))
}

/// Anthropic error `type` → OpenAI error `type`.
fn openai_error_kind(anthropic_kind: &str) -> &'static str {
    match anthropic_kind {
        "invalid_request_error" | "request_too_large" => "invalid_request_error",
        "authentication_error" => "authentication_error",
        "permission_error" => "permission_error",
        "not_found_error" => "not_found_error",
        "rate_limit_error" => "rate_limit_error",
        _ => "server_error",
    }
}

/// The `(type, message)` of an Anthropic error object `{"type","message"}`.
pub(crate) fn anthropic_error_parts(err: Option<&Json>) -> (String, String) {
    let kind = err
        .and_then(|e| str_field(e, "type"))
        .unwrap_or("api_error");
    let message = err
        .and_then(|e| str_field(e, "message"))
        .filter(|m| !m.is_empty())
        .unwrap_or("The upstream provider returned an error.");
    (kind.to_owned(), message.to_owned())
}

/// Anthropic error body `{"type":"error","error":{"type","message"}}` → OpenAI error body
/// `{"error":{"message","type","code"}}` (`code` is the Anthropic error type). Any other
/// body gives a generic upstream error. Never fails.
pub fn anthropic_error_to_openai(body: &[u8]) -> Vec<u8> {
    let v = Json::parse(body).unwrap_or_default();
    let (kind, message) = anthropic_error_parts(v.get("error"));
    openai_error(&message, openai_error_kind(&kind), Some(&kind)).to_vec()
}

pub(crate) fn anthropic_error_event_to_openai(data: &Json) -> Json {
    let (kind, message) = anthropic_error_parts(data.get("error"));
    openai_error(&message, openai_error_kind(&kind), Some(&kind))
}

/// Count of the Anthropic usage fields, for tests of the table in the module docs.
#[cfg(test)]
pub(crate) fn usage_of(u: &Json) -> Usage {
    let mut a = AnthropicUsage::default();
    a.update(u);
    a.to_usage()
}

pub use super::anthropic_reverse::{
    anthropic_to_openai_chat_request, openai_chat_response_to_anthropic, openai_error_to_anthropic,
};
