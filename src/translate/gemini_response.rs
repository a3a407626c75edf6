//! Gemini responses back to OpenAI format: the `GenerateContentResponse` → OpenAI
//! `chat.completion`, the usage mapping, finish reasons and tool call ids shared with the
//! stream translator, and Gemini error bodies → OpenAI error bodies.

use super::common::{openai_error, openai_usage_json, parse_upstream, random_id, unix_now};
use super::json::{count_field, jobj, str_field, Json, Obj};
use super::TranslateError;
use crate::usage::Usage;

type Result<T> = std::result::Result<T, TranslateError>;

/// Gateway usage from a Gemini `usageMetadata` object (see the table in the module docs).
pub(crate) fn usage_from_gemini(u: &Json) -> Usage {
    let thoughts = count_field(u, "thoughtsTokenCount");
    Usage {
        input_tokens: count_field(u, "promptTokenCount")
            .saturating_add(count_field(u, "toolUsePromptTokenCount")),
        output_tokens: count_field(u, "candidatesTokenCount").saturating_add(thoughts),
        cached_input_tokens: count_field(u, "cachedContentTokenCount"),
        cache_write_tokens: 0,
        reasoning_tokens: thoughts,
        estimated: false,
        units: crate::usage::Units::NONE,
    }
}

/// Gemini `finishReason` → OpenAI `finish_reason`.
pub(crate) fn finish_reason(reason: &str, has_tool_calls: bool) -> &'static str {
    match reason {
        "MAX_TOKENS" => "length",
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY" => {
            "content_filter"
        }
        _ if has_tool_calls => "tool_calls",
        _ => "stop",
    }
}

/// Hands out tool call ids for calls without a Gemini `id`: `call_<response>_<n>`, unique
/// within the response and the same however the response is chunked.
#[derive(Debug, Clone)]
pub(crate) struct CallIds {
    pub(crate) prefix: Option<String>,
    next: u64,
}

impl CallIds {
    pub(crate) fn new() -> Self {
        CallIds {
            prefix: None,
            next: 0,
        }
    }

    /// Use the response id as prefix (the first one seen wins).
    pub(crate) fn response_id(&mut self, rid: Option<&str>) {
        if self.prefix.is_none() {
            self.prefix = rid.map(|r| {
                r.chars()
                    .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
                    .take(40)
                    .collect()
            });
        }
    }

    pub(crate) fn next(&mut self, given: Option<&str>) -> String {
        if let Some(id) = given.filter(|id| !id.is_empty()) {
            return id.to_owned();
        }
        let prefix = self
            .prefix
            .get_or_insert_with(|| random_id("").chars().take(16).collect());
        let id = format!("call_{prefix}_{}", self.next);
        self.next += 1;
        id
    }
}

/// What one candidate's parts hold.
#[derive(Debug, Default)]
pub(crate) struct Parts {
    pub(crate) text: String,
    pub(crate) reasoning: String,
    pub(crate) calls: Vec<Json>,
}

/// Split a candidate's `content.parts`: text, thought text (`thought: true`) and
/// function calls (as OpenAI tool calls, with indexes from `first_index`).
pub(crate) fn candidate_parts(cand: &Json, ids: &mut CallIds, first_index: usize) -> Parts {
    let mut out = Parts::default();
    let parts = cand
        .get("content")
        .and_then(|c| c.get("parts"))
        .and_then(Json::as_array)
        .unwrap_or_default();
    for p in parts {
        if let Some(fc) = p.get("functionCall") {
            let args = fc.get("args").cloned().unwrap_or(Json::Obj(Obj::new()));
            let mut call = Obj::new();
            call.insert("index".into(), (first_index + out.calls.len()).into());
            call.insert("id".into(), ids.next(str_field(fc, "id")).into());
            call.insert("type".into(), "function".into());
            call.insert(
                "function".into(),
                jobj! {
                    "name" => str_field(fc, "name").unwrap_or_default(),
                    "arguments" => args.to_json_string(),
                },
            );
            if let Some(sig) = str_field(p, "thoughtSignature") {
                call.insert(
                    "extra_content".into(),
                    jobj! { "google" => jobj! { "thought_signature" => sig } },
                );
            }
            out.calls.push(Json::Obj(call));
        } else if let Some(t) = str_field(p, "text") {
            if p.get("thought").and_then(Json::as_bool) == Some(true) {
                out.reasoning.push_str(t);
            } else {
                out.text.push_str(t);
            }
        }
    }
    out
}

/// Gemini `GenerateContentResponse` → OpenAI `chat.completion` for the client-facing
/// `model`. Each candidate becomes a choice; a prompt blocked before any candidate gives
/// one empty choice with `finish_reason: "content_filter"`.
pub fn gemini_to_openai_chat_response(body: &[u8], model: &str) -> Result<(Vec<u8>, Usage)> {
    let resp = parse_upstream(body)?;
    if resp.get("error").is_some() {
        return Err(TranslateError::UpstreamResponse("an error object"));
    }
    let rid = str_field(&resp, "responseId");
    let mut ids = CallIds::new();
    ids.response_id(rid);
    let candidates = resp
        .get("candidates")
        .and_then(Json::as_array)
        .unwrap_or_default();
    let mut choices = Vec::with_capacity(candidates.len().max(1));
    for (i, cand) in candidates.iter().enumerate() {
        let parts = candidate_parts(cand, &mut ids, 0);
        let has_calls = !parts.calls.is_empty();
        let mut message = Obj::new();
        message.insert("role".into(), "assistant".into());
        let content = if parts.text.is_empty() && has_calls {
            Json::Null
        } else {
            parts.text.into()
        };
        message.insert("content".into(), content);
        if !parts.reasoning.is_empty() {
            message.insert("reasoning_content".into(), parts.reasoning.into());
        }
        if has_calls {
            let calls: Vec<Json> = parts
                .calls
                .into_iter()
                .map(|mut c| {
                    if let Json::Obj(o) = &mut c {
                        o.shift_remove("index");
                    }
                    c
                })
                .collect();
            message.insert("tool_calls".into(), calls.into());
        }
        message.insert("refusal".into(), Json::Null);
        let index = cand.get("index").and_then(Json::as_u64).unwrap_or(i as u64);
        let finish = finish_reason(str_field(cand, "finishReason").unwrap_or("STOP"), has_calls);
        choices.push(jobj! {
            "index" => index,
            "message" => message,
            "logprobs" => Json::Null,
            "finish_reason" => finish,
        });
    }
    if choices.is_empty() {
        if resp
            .get("promptFeedback")
            .and_then(|f| f.get("blockReason"))
            .is_none()
        {
            return Err(TranslateError::UpstreamResponse("no candidates"));
        }
        choices.push(jobj! {
            "index" => 0u64,
            "message" => jobj! { "role" => "assistant", "content" => Json::Null, "refusal" => Json::Null },
            "logprobs" => Json::Null,
            "finish_reason" => "content_filter",
        });
    }
    let usage = resp
        .get("usageMetadata")
        .map(usage_from_gemini)
        .unwrap_or_default();
    let id = rid.map_or_else(|| random_id("chatcmpl-"), |r| format!("chatcmpl-{r}"));
    let out = jobj! {
        "id" => id,
        "object" => "chat.completion",
        "created" => unix_now(),
        "model" => model,
        "choices" => choices,
        "usage" => openai_usage_json(&usage),
    };
    Ok((out.to_vec(), usage))
}

/// Google RPC `status` → OpenAI error `type`.
fn openai_error_kind(status: &str) -> &'static str {
    match status {
        "INVALID_ARGUMENT" | "FAILED_PRECONDITION" | "OUT_OF_RANGE" => "invalid_request_error",
        "UNAUTHENTICATED" => "authentication_error",
        "PERMISSION_DENIED" => "permission_error",
        "NOT_FOUND" => "not_found_error",
        "RESOURCE_EXHAUSTED" => "rate_limit_error",
        _ => "server_error",
    }
}

pub(crate) fn gemini_error_json(v: &Json) -> Json {
    // `streamGenerateContent` without `alt=sse` wraps the error in an array.
    let err = match v {
        Json::Arr(a) => a.first().and_then(|e| e.get("error")),
        _ => v.get("error"),
    };
    let message = err
        .and_then(|e| str_field(e, "message"))
        .filter(|m| !m.is_empty())
        .unwrap_or("The upstream provider returned an error.");
    let status = err
        .and_then(|e| str_field(e, "status"))
        .unwrap_or("UNKNOWN");
    let code = if err.is_some() {
        status
    } else {
        "upstream_error"
    };
    openai_error(message, openai_error_kind(status), Some(code))
}

/// Gemini error body `{"error":{"code","message","status"}}` (or an array holding one) →
/// OpenAI error body; `code` is the Google RPC status. Any other body gives a generic
/// upstream error. Never fails.
pub fn gemini_error_to_openai(body: &[u8]) -> Vec<u8> {
    gemini_error_json(&Json::parse(body).unwrap_or_default()).to_vec()
}
