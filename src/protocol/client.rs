//! The protocol a client speaks to the gateway: OpenAI (chat, completions, embeddings),
//! OpenAI's Responses API (`/v1/responses`) or Anthropic Messages (`/v1/messages`). The
//! gateway's working format is OpenAI's: a client protocol says how its requests become
//! OpenAI requests and how OpenAI answers (bodies, streams, errors) become its own, and
//! renders the gateway's own errors in its shape.

use super::Endpoint;
use crate::translate::{self, StreamTranslator, TranslateError, Translated};
use bytes::Bytes;

/// The protocol a client speaks, decided by the endpoint it calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientProtocol {
    /// OpenAI's API: errors as `{"error":{"message","type","code"}}`, SSE `data:` events.
    OpenAi,
    /// Anthropic's Messages API: errors as `{"type":"error","error":{"type","message"}}`,
    /// SSE events named by `event:`.
    Anthropic,
    /// OpenAI's Responses API: errors in OpenAI's shape, SSE events named by `event:`
    /// (`response.created`, ..., `response.completed` with the usage).
    Responses,
}

/// A client-visible error, ready to be rendered in a client protocol's shape.
#[derive(Debug, Clone, Copy)]
pub struct ErrorView<'a> {
    pub status: u16,
    /// OpenAI's `type` field (`invalid_request_error`, `rate_limit_error`, ...).
    pub kind: &'static str,
    /// OpenAI's `code` field (the gateway's closed set, `error::ErrorCode`).
    pub code: &'a str,
    pub message: &'a str,
}

impl ClientProtocol {
    pub const ALL: [ClientProtocol; 3] = [
        ClientProtocol::OpenAi,
        ClientProtocol::Anthropic,
        ClientProtocol::Responses,
    ];

    pub fn for_endpoint(e: Endpoint) -> Self {
        match e {
            Endpoint::Messages | Endpoint::CountTokens => ClientProtocol::Anthropic,
            Endpoint::Responses | Endpoint::ResponseById => ClientProtocol::Responses,
            _ => ClientProtocol::OpenAi,
        }
    }

    /// The protocol's own version and beta headers: forwarded when the provider speaks the
    /// client's protocol natively (no translation).
    pub fn own_headers(self) -> &'static [&'static str] {
        match self {
            ClientProtocol::OpenAi | ClientProtocol::Responses => &["openai-beta"],
            ClientProtocol::Anthropic => &["anthropic-version", "anthropic-beta"],
        }
    }

    /// Whether a native request at `endpoint` gets `stream_options.include_usage` added, so
    /// that a stream reports its usage (the chunk is stripped again unless the client asked).
    pub fn asks_for_usage(self, endpoint: Endpoint) -> bool {
        match self {
            ClientProtocol::OpenAi => {
                matches!(endpoint, Endpoint::ChatCompletions | Endpoint::Completions)
            }
            ClientProtocol::Anthropic | ClientProtocol::Responses => false,
        }
    }

    /// Whether answers in this protocol always carry usage (Anthropic's and the Responses
    /// API's do), whatever the request asked.
    pub fn always_reports_usage(self) -> bool {
        matches!(self, ClientProtocol::Anthropic | ClientProtocol::Responses)
    }

    /// The client's request as an OpenAI chat request; `None`: it is an OpenAI request already.
    pub fn request_to_openai(
        self,
        body: &[u8],
        upstream_model: &str,
    ) -> Result<Option<Translated>, TranslateError> {
        match self {
            ClientProtocol::OpenAi => Ok(None),
            ClientProtocol::Anthropic => {
                translate::anthropic_to_openai_chat_request(body, upstream_model).map(Some)
            }
            ClientProtocol::Responses => {
                translate::responses_to_openai_chat_request(body, upstream_model).map(Some)
            }
        }
    }

    /// The translator of an OpenAI chunk stream into this protocol; `None`: no translation.
    pub fn stream_from_openai(self, model: &str) -> Option<Box<dyn StreamTranslator>> {
        match self {
            ClientProtocol::OpenAi => None,
            ClientProtocol::Anthropic => {
                Some(Box::new(translate::OpenAiStreamToAnthropic::new(model)))
            }
            ClientProtocol::Responses => {
                Some(Box::new(translate::OpenAiStreamToResponses::new(model)))
            }
        }
    }

    /// A complete OpenAI response body in this protocol.
    pub fn response_from_openai(
        self,
        openai: Vec<u8>,
        model: &str,
    ) -> Result<Vec<u8>, TranslateError> {
        match self {
            ClientProtocol::OpenAi => Ok(openai),
            ClientProtocol::Anthropic => {
                translate::openai_chat_response_to_anthropic(&openai, model).map(|(out, _)| out)
            }
            ClientProtocol::Responses => {
                translate::openai_chat_response_to_responses(&openai, model)
            }
        }
    }

    /// A provider's error body (already in OpenAI's shape) in this protocol.
    pub fn error_from_openai(self, openai: Vec<u8>) -> Vec<u8> {
        match self {
            ClientProtocol::OpenAi | ClientProtocol::Responses => openai,
            ClientProtocol::Anthropic => translate::openai_error_to_anthropic(&openai),
        }
    }

    /// The gateway's own error as a JSON body in this protocol's shape.
    pub fn error_body(self, e: &ErrorView<'_>) -> Bytes {
        match self {
            ClientProtocol::OpenAi | ClientProtocol::Responses => openai_error(e),
            ClientProtocol::Anthropic => anthropic_error(e),
        }
    }

    /// The gateway's own error as the final SSE event of a stream that already started.
    pub fn sse_error(self, e: &ErrorView<'_>) -> Bytes {
        let mut out = match self {
            ClientProtocol::OpenAi => b"data: ".to_vec(),
            ClientProtocol::Anthropic => b"event: error\ndata: ".to_vec(),
            ClientProtocol::Responses => return responses_sse_error(e),
        };
        out.extend_from_slice(&self.error_body(e));
        out.extend_from_slice(b"\n\n");
        out.into()
    }
}

/// OpenAI's error shape: `{"error":{"message","type","code"}}`.
pub fn openai_error(e: &ErrorView<'_>) -> Bytes {
    let v = serde_json::json!({"error": {
        "message": e.message,
        "type": e.kind,
        "code": e.code,
    }});
    serde_json::to_vec(&v).unwrap_or_default().into()
}

/// The Responses API's error event: `event: error` with `{"type":"error","code","message",
/// "param","sequence_number"}` (the number is unknown here: 0).
fn responses_sse_error(e: &ErrorView<'_>) -> Bytes {
    let v = serde_json::json!({
        "type": "error",
        "code": e.code,
        "message": e.message,
        "param": null,
        "sequence_number": 0,
    });
    let mut out = b"event: error\ndata: ".to_vec();
    out.extend_from_slice(&serde_json::to_vec(&v).unwrap_or_default());
    out.extend_from_slice(b"\n\n");
    out.into()
}

/// Anthropic's error shape: `{"type":"error","error":{"type","message"}}`, the type from the
/// status as Anthropic's API uses it.
pub fn anthropic_error(e: &ErrorView<'_>) -> Bytes {
    let kind = match e.status {
        400 | 404 | 405 | 408 | 413 | 417 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        _ => "api_error",
    };
    let v = serde_json::json!({"type": "error", "error": {"type": kind, "message": e.message}});
    serde_json::to_vec(&v).unwrap_or_default().into()
}
