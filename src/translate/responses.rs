//! OpenAI's Responses API (`POST /v1/responses`) in front of providers that have only chat
//! completions: a Responses request → an OpenAI chat request (the chat → provider
//! translators then apply), and a chat completion → a `response` object.
//!
//! Translated: `input` (a string, or items: messages whose content is a string or
//! `input_text` / `output_text` / `input_image` parts, `function_call` and
//! `function_call_output` items), `instructions` (a system message first), `tools` of type
//! `function`, `tool_choice`, `max_output_tokens`, `temperature`, `top_p`,
//! `parallel_tool_calls`, `user`, `text.format` (JSON schema or object) and `stream` (with
//! the usage asked for). Ignored: `metadata`, `store: false`, `include`, `truncation`,
//! `reasoning`, `service_tier` and the like. Refused with a 400 naming the field: state kept
//! by the provider (`previous_response_id`, `conversation`, `store: true`, `prompt`),
//! `background`, built-in tools (`web_search`, `file_search`, `computer_use`, ...), input
//! items and parts of other types (files, item references, reasoning items).
//!
//! The `response` object: `id` (`resp_` + the chat id), `status` (`completed`, or
//! `incomplete` with `incomplete_details.reason: max_output_tokens` when the output was cut),
//! `output` (a `message` item with one `output_text` part, then a `function_call` item per
//! tool call) and `usage` (`input_tokens`, `input_tokens_details.cached_tokens`,
//! `output_tokens`, `output_tokens_details.reasoning_tokens`, `total_tokens`).

use super::common::{invalid, parse_request, parse_upstream, random_id, short, unix_now};
use super::json::{jobj, str_field, Json, Obj};
use super::{TranslateError, Translated};
use crate::usage::Usage;

/// Request fields that need state or tools only the provider's own Responses API has.
const REFUSED_FIELDS: &[&str] = &["previous_response_id", "conversation", "prompt"];

/// Request fields copied to the chat request as they are.
const COPIED_FIELDS: &[&str] = &["temperature", "top_p", "parallel_tool_calls", "user"];

/// A Responses request as an OpenAI chat request for `upstream_model`.
pub fn responses_to_openai_chat_request(
    body: &[u8],
    upstream_model: &str,
) -> Result<Translated, TranslateError> {
    let req = parse_request(body)?;
    refuse_stateful(&req)?;
    let stream = req.get("stream").and_then(Json::as_bool).unwrap_or(false);
    let mut chat = Obj::new();
    chat.insert("model".into(), upstream_model.into());
    chat.insert("messages".into(), Json::Arr(messages(&req)?));
    if let Some(tools) = req.get("tools") {
        chat.insert("tools".into(), Json::Arr(tools_to_chat(tools)?));
    }
    if let Some(choice) = req.get("tool_choice") {
        chat.insert("tool_choice".into(), tool_choice_to_chat(choice)?);
    }
    if let Some(max) = req.get("max_output_tokens") {
        chat.insert("max_tokens".into(), max.clone());
    }
    for field in COPIED_FIELDS {
        if let Some(v) = req.get(field) {
            chat.insert((*field).into(), v.clone());
        }
    }
    if let Some(format) = req.get("text").and_then(|t| t.get("format")) {
        if let Some(rf) = response_format(format)? {
            chat.insert("response_format".into(), rf);
        }
    }
    if stream {
        chat.insert("stream".into(), true.into());
        chat.insert("stream_options".into(), jobj! { "include_usage" => true });
    }
    Ok(Translated {
        body: Json::Obj(chat).to_vec(),
        stream,
        include_usage: true,
    })
}

/// Refuse what only the provider's own Responses API can do.
fn refuse_stateful(req: &Json) -> Result<(), TranslateError> {
    if let Some(field) = REFUSED_FIELDS.iter().find(|f| req.get(f).is_some()) {
        return Err(unsupported(format!(
            "`{field}` (state kept by a provider's Responses API)"
        )));
    }
    if req.get("store").and_then(Json::as_bool) == Some(true) {
        return Err(unsupported(
            "`store: true` (state kept by a provider's Responses API)".into(),
        ));
    }
    if req.get("background").and_then(Json::as_bool) == Some(true) {
        return Err(unsupported("`background: true`".into()));
    }
    Ok(())
}

fn unsupported(what: String) -> TranslateError {
    TranslateError::Unsupported(what)
}

/// `instructions` and `input` as chat messages.
fn messages(req: &Json) -> Result<Vec<Json>, TranslateError> {
    let mut out = Vec::new();
    match req.get("instructions") {
        None => {}
        Some(Json::Str(s)) => out.push(jobj! { "role" => "system", "content" => s.as_str() }),
        Some(_) => return Err(invalid("`instructions` must be a string")),
    }
    match req.get("input") {
        None => return Err(invalid("`input` is required")),
        Some(Json::Str(s)) => out.push(jobj! { "role" => "user", "content" => s.as_str() }),
        Some(Json::Arr(items)) => {
            for (i, item) in items.iter().enumerate() {
                input_item(item, i, &mut out)?;
            }
        }
        Some(_) => return Err(invalid("`input` must be a string or an array of items")),
    }
    Ok(out)
}

/// One input item, appended to the chat messages (function calls join the assistant
/// message before them when it has calls already).
fn input_item(item: &Json, i: usize, out: &mut Vec<Json>) -> Result<(), TranslateError> {
    let kind = str_field(item, "type").unwrap_or("message");
    match kind {
        "message" => out.push(message_item(item, i)?),
        "function_call" => {
            let call = jobj! {
                "id" => required_str(item, "call_id", i)?,
                "type" => "function",
                "function" => jobj! {
                    "name" => required_str(item, "name", i)?,
                    "arguments" => str_field(item, "arguments").unwrap_or("{}"),
                },
            };
            push_tool_call(out, call);
        }
        "function_call_output" => {
            let output = match item.get("output") {
                Some(Json::Str(s)) => s.clone(),
                Some(Json::Arr(parts)) => parts_text(parts, i)?,
                _ => return Err(invalid(format!("`input[{i}].output` must be a string"))),
            };
            out.push(jobj! {
                "role" => "tool",
                "tool_call_id" => required_str(item, "call_id", i)?,
                "content" => output,
            });
        }
        other => {
            return Err(unsupported(format!(
                "input item type `{}` (`input[{i}]`)",
                short(other)
            )))
        }
    }
    Ok(())
}

fn required_str<'a>(item: &'a Json, key: &str, i: usize) -> Result<&'a str, TranslateError> {
    str_field(item, key).ok_or_else(|| invalid(format!("`input[{i}].{key}` is missing")))
}

/// Append a tool call to the last assistant message that carries calls, or start one.
fn push_tool_call(out: &mut Vec<Json>, call: Json) {
    if let Some(Json::Obj(last)) = out.last_mut() {
        let is_assistant = last.get("role").and_then(Json::as_str) == Some("assistant");
        if is_assistant {
            if let Some(Json::Arr(calls)) = last.get_mut("tool_calls") {
                calls.push(call);
                return;
            }
            if last
                .get("content")
                .is_none_or(|c| matches!(c, Json::Str(_) | Json::Null))
            {
                last.insert("tool_calls".into(), Json::Arr(vec![call]));
                return;
            }
        }
    }
    out.push(jobj! {
        "role" => "assistant",
        "content" => Json::Null,
        "tool_calls" => Json::Arr(vec![call]),
    });
}

/// A `message` item as a chat message.
fn message_item(item: &Json, i: usize) -> Result<Json, TranslateError> {
    let role = match str_field(item, "role") {
        Some(r @ ("user" | "assistant" | "system")) => r,
        Some("developer") => "system",
        Some(other) => {
            return Err(invalid(format!(
                "`input[{i}].role` `{}` is not a message role",
                short(other)
            )))
        }
        None => return Err(invalid(format!("`input[{i}].role` is missing"))),
    };
    let content = match item.get("content") {
        Some(Json::Str(s)) => Json::Str(s.clone()),
        Some(Json::Arr(parts)) if role == "user" => Json::Arr(user_parts(parts, i)?),
        Some(Json::Arr(parts)) => Json::Str(parts_text(parts, i)?),
        _ => return Err(invalid(format!("`input[{i}].content` is missing"))),
    };
    Ok(jobj! { "role" => role, "content" => content })
}

/// The text of text parts (`input_text`, `output_text`, `text`, `refusal`).
fn parts_text(parts: &[Json], i: usize) -> Result<String, TranslateError> {
    let mut text = String::new();
    for part in parts {
        match part_type(part) {
            "input_text" | "output_text" | "text" => {
                text.push_str(str_field(part, "text").unwrap_or(""));
            }
            "refusal" => text.push_str(str_field(part, "refusal").unwrap_or("")),
            other => return Err(unsupported_part(other, i)),
        }
    }
    Ok(text)
}

fn part_type(part: &Json) -> &str {
    str_field(part, "type").unwrap_or("")
}

fn unsupported_part(kind: &str, i: usize) -> TranslateError {
    unsupported(format!(
        "content part type `{}` (`input[{i}].content`)",
        short(kind)
    ))
}

/// A user message's parts as chat parts: text and images (by URL or `data:` URL).
fn user_parts(parts: &[Json], i: usize) -> Result<Vec<Json>, TranslateError> {
    parts
        .iter()
        .map(|part| match part_type(part) {
            "input_text" | "text" => Ok(jobj! {
                "type" => "text",
                "text" => str_field(part, "text").unwrap_or(""),
            }),
            "input_image" => {
                let url = str_field(part, "image_url").ok_or_else(|| {
                    unsupported(format!(
                        "an `input_image` without `image_url` (`input[{i}]`)"
                    ))
                })?;
                let mut image = jobj! { "url" => url };
                if let (Json::Obj(m), Some(detail)) = (&mut image, str_field(part, "detail")) {
                    m.insert("detail".into(), detail.into());
                }
                Ok(jobj! { "type" => "image_url", "image_url" => image })
            }
            other => Err(unsupported_part(other, i)),
        })
        .collect()
}

/// Responses `tools` (flat function tools) as chat tools.
fn tools_to_chat(tools: &Json) -> Result<Vec<Json>, TranslateError> {
    let list = tools
        .as_array()
        .ok_or_else(|| invalid("`tools` must be an array"))?;
    list.iter()
        .enumerate()
        .map(|(i, tool)| {
            let kind = str_field(tool, "type").unwrap_or("");
            if kind != "function" {
                return Err(unsupported(format!(
                    "tool type `{}` (`tools[{i}]`; only `function` tools are translated)",
                    short(kind)
                )));
            }
            let name = str_field(tool, "name")
                .ok_or_else(|| invalid(format!("`tools[{i}].name` is missing")))?;
            let mut f = Obj::new();
            f.insert("name".into(), name.into());
            for key in ["description", "parameters", "strict"] {
                if let Some(v) = tool.get(key) {
                    f.insert(key.into(), v.clone());
                }
            }
            Ok(jobj! { "type" => "function", "function" => Json::Obj(f) })
        })
        .collect()
}

/// `tool_choice`: `auto` / `none` / `required`, or one function.
fn tool_choice_to_chat(choice: &Json) -> Result<Json, TranslateError> {
    match choice {
        Json::Str(s) if matches!(s.as_str(), "auto" | "none" | "required") => Ok(choice.clone()),
        Json::Obj(_) if str_field(choice, "type") == Some("function") => {
            let name = str_field(choice, "name")
                .ok_or_else(|| invalid("`tool_choice.name` is missing"))?;
            Ok(jobj! { "type" => "function", "function" => jobj! { "name" => name } })
        }
        _ => Err(unsupported(
            "`tool_choice` other than auto, none, required or a function".into(),
        )),
    }
}

/// `text.format` as a chat `response_format` (`None`: plain text).
fn response_format(format: &Json) -> Result<Option<Json>, TranslateError> {
    match str_field(format, "type") {
        None | Some("text") => Ok(None),
        Some("json_object") => Ok(Some(jobj! { "type" => "json_object" })),
        Some("json_schema") => {
            let mut schema = Obj::new();
            for key in ["name", "description", "schema", "strict"] {
                if let Some(v) = format.get(key) {
                    schema.insert(key.into(), v.clone());
                }
            }
            Ok(Some(jobj! {
                "type" => "json_schema",
                "json_schema" => Json::Obj(schema),
            }))
        }
        Some(other) => Err(unsupported(format!(
            "`text.format.type` `{}`",
            short(other)
        ))),
    }
}

/// A chat completion (2xx body) as a `response` object.
pub fn openai_chat_response_to_responses(
    body: &[u8],
    model: &str,
) -> Result<Vec<u8>, TranslateError> {
    let chat = parse_upstream(body)?;
    let choice = chat
        .get("choices")
        .and_then(Json::as_array)
        .and_then(<[Json]>::first)
        .ok_or(TranslateError::UpstreamResponse("no choices"))?;
    let message = choice.get("message").cloned().unwrap_or_default();
    let id = response_id(str_field(&chat, "id"));
    let mut output = Vec::new();
    if let Some(text) = str_field(&message, "content").filter(|t| !t.is_empty()) {
        output.push(message_output(&message_id(&id), text, "completed"));
    }
    for call in message
        .get("tool_calls")
        .and_then(Json::as_array)
        .unwrap_or(&[])
    {
        let f = call.get("function").cloned().unwrap_or_default();
        output.push(function_call_output(
            str_field(call, "id").unwrap_or(""),
            str_field(&f, "name").unwrap_or(""),
            str_field(&f, "arguments").unwrap_or(""),
            "completed",
        ));
    }
    let usage = chat
        .get("usage")
        .map(super::common::usage_from_openai)
        .unwrap_or_default();
    let head = ResponseHead {
        id,
        model: str_field(&chat, "model").unwrap_or(model).to_string(),
        created_at: chat
            .get("created")
            .and_then(Json::as_u64)
            .unwrap_or_else(unix_now),
    };
    let cut = str_field(choice, "finish_reason") == Some("length");
    Ok(head
        .object(Status::done(cut), output, Some(&usage))
        .to_vec())
}

/// `resp_` + the upstream id (a random one when there is none).
pub(crate) fn response_id(upstream: Option<&str>) -> String {
    match upstream.filter(|s| !s.is_empty()) {
        Some(id) => format!("resp_{}", id.trim_start_matches("chatcmpl-")),
        None => random_id("resp_"),
    }
}

/// The id of the message item of the response `id`.
fn message_id(id: &str) -> String {
    format!("msg_{}", id.trim_start_matches("resp_"))
}

/// A response's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    InProgress,
    Completed,
    /// Cut at `max_output_tokens`.
    Incomplete,
}

impl Status {
    pub(crate) fn done(cut: bool) -> Self {
        if cut {
            Status::Incomplete
        } else {
            Status::Completed
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Status::InProgress => "in_progress",
            Status::Completed => "completed",
            Status::Incomplete => "incomplete",
        }
    }
}

/// What every rendering of one response shares.
#[derive(Debug, Clone)]
pub(crate) struct ResponseHead {
    pub id: String,
    pub model: String,
    pub created_at: u64,
}

impl ResponseHead {
    /// The id of the response's message item.
    pub(crate) fn message_id(&self) -> String {
        message_id(&self.id)
    }

    /// The `response` object.
    pub(crate) fn object(&self, status: Status, output: Vec<Json>, usage: Option<&Usage>) -> Json {
        let incomplete =
            (status == Status::Incomplete).then(|| jobj! { "reason" => "max_output_tokens" });
        jobj! {
            "id" => self.id.as_str(),
            "object" => "response",
            "created_at" => self.created_at,
            "status" => status.as_str(),
            "error" => Json::Null,
            "incomplete_details" => incomplete,
            "instructions" => Json::Null,
            "max_output_tokens" => Json::Null,
            "model" => self.model.as_str(),
            "output" => Json::Arr(output),
            "parallel_tool_calls" => true,
            "previous_response_id" => Json::Null,
            "reasoning" => jobj! { "effort" => Json::Null, "summary" => Json::Null },
            "store" => false,
            "temperature" => Json::Null,
            "text" => jobj! { "format" => jobj! { "type" => "text" } },
            "tool_choice" => "auto",
            "tools" => Json::Arr(Vec::new()),
            "top_p" => Json::Null,
            "truncation" => "disabled",
            "usage" => usage.map(responses_usage_json),
            "metadata" => Json::Obj(Obj::new()),
        }
    }
}

/// The Responses `usage` object for `u`.
pub(crate) fn responses_usage_json(u: &Usage) -> Json {
    jobj! {
        "input_tokens" => u.input_tokens,
        "input_tokens_details" => jobj! { "cached_tokens" => u.cached_input_tokens },
        "output_tokens" => u.output_tokens,
        "output_tokens_details" => jobj! { "reasoning_tokens" => u.reasoning_tokens },
        "total_tokens" => u.input_tokens.saturating_add(u.output_tokens),
    }
}

/// An output `message` item with one `output_text` part (none while `text` is empty and the
/// item in progress).
pub(crate) fn message_output(id: &str, text: &str, status: &str) -> Json {
    let content = if status == "in_progress" && text.is_empty() {
        Vec::new()
    } else {
        vec![output_text_part(text)]
    };
    jobj! {
        "id" => id,
        "type" => "message",
        "status" => status,
        "role" => "assistant",
        "content" => Json::Arr(content),
    }
}

/// An `output_text` content part.
pub(crate) fn output_text_part(text: &str) -> Json {
    jobj! {
        "type" => "output_text",
        "text" => text,
        "annotations" => Json::Arr(Vec::new()),
        "logprobs" => Json::Arr(Vec::new()),
    }
}

/// An output `function_call` item.
pub(crate) fn function_call_output(
    call_id: &str,
    name: &str,
    arguments: &str,
    status: &str,
) -> Json {
    jobj! {
        "id" => format!("fc_{}", call_id.trim_start_matches("call_")),
        "type" => "function_call",
        "status" => status,
        "call_id" => call_id,
        "name" => name,
        "arguments" => arguments,
    }
}
