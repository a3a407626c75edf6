//! Protocol translation between the OpenAI chat format the gateway speaks and other
//! providers' wire formats. Everything here is a pure function or a small state machine over
//! bytes: no I/O, no configuration, and nothing panics on any input.
//!
//! This module owns:
//! - [`anthropic`]: OpenAI clients in front of Anthropic Messages
//!   (`anthropic-version: 2023-06-01`): requests, responses and error bodies;
//!   [`anthropic_reverse`]: Anthropic clients in front of OpenAI-compatible upstreams;
//! - [`anthropic_stream`]: the two streaming translators for that pair;
//! - [`gemini`]: OpenAI chat → Gemini `generateContent` requests and paths;
//!   [`gemini_response`]: responses and errors back; [`gemini_embed`]: embeddings
//!   (`batchEmbedContents`); [`gemini_stream`]: `streamGenerateContent?alt=sse` → OpenAI
//!   chunks;
//! - [`responses`]: OpenAI Responses API clients in front of chat-only upstreams (requests
//!   and whole answers); [`responses_stream`]: chat chunks → Responses events, and the usage
//!   of a native Responses stream;
//! - the shared [`TranslateError`], [`Translated`] and the usage normalisation below.
//!
//! # Usage normalisation
//!
//! Every translator reports a [`Usage`](crate::usage::Usage) in the gateway's terms: *input*
//! includes cached tokens, which are also counted on their own; *output* includes reasoning
//! tokens, which are also counted on their own.
//!
//! | Provider  | input | cached | output | reasoning |
//! |-----------|-------|--------|--------|-----------|
//! | OpenAI    | `prompt_tokens` | `prompt_tokens_details.cached_tokens` | `completion_tokens` | `completion_tokens_details.reasoning_tokens` |
//! | Anthropic | `input_tokens` + `cache_read_input_tokens` + `cache_creation_input_tokens` | `cache_read_input_tokens` | `output_tokens` | not reported (0; thinking is inside `output_tokens`) |
//! | Gemini    | `promptTokenCount` (already includes `cachedContentTokenCount`) + `toolUsePromptTokenCount` | `cachedContentTokenCount` | `candidatesTokenCount` + `thoughtsTokenCount` | `thoughtsTokenCount` |
//!
//! Streams: Anthropic sends input usage in `message_start` and the final (cumulative)
//! counts in `message_delta`; any field present in `message_delta` replaces the earlier
//! value. Gemini repeats `usageMetadata` on chunks; the last one seen wins. OpenAI sends
//! one usage chunk (`choices: []`) before `[DONE]` when `stream_options.include_usage`.
//! When a stream ends without final counts, output is estimated with
//! [`TokenEstimator`](crate::usage::TokenEstimator) over the streamed text (taking the larger
//! of that and any partial count) and the usage is marked `estimated`.
//!
//! Gemini `batchEmbedContents` reports no token counts at all; embeddings usage is
//! [`estimate_tokens`](crate::usage::estimate_tokens) over the input texts, marked
//! `estimated`.
//!
//! When the gateway answers an Anthropic-format client from an OpenAI-format upstream, the
//! Anthropic usage object it sends is `input_tokens` = prompt − cached,
//! `cache_read_input_tokens` = cached, `cache_creation_input_tokens` = 0,
//! `output_tokens` = completion.
//!
//! # Errors
//!
//! Request translation fails with [`TranslateError`] on input the target protocol cannot
//! express (messages are safe to show to the client). Upstream error bodies are converted
//! with [`anthropic_error_to_openai`], [`openai_error_to_anthropic`] and
//! [`gemini_error_to_openai`], which never fail.

pub mod anthropic;
pub mod anthropic_reverse;
pub mod anthropic_stream;
mod common;
pub mod gemini;
pub mod gemini_embed;
pub mod gemini_response;
pub mod gemini_stream;
mod json;
pub mod responses;
pub mod responses_stream;

#[cfg(test)]
pub(crate) mod test_support;
#[cfg(test)]
mod tests_anthropic;
#[cfg(test)]
mod tests_anthropic_reverse;
#[cfg(test)]
mod tests_gemini;
#[cfg(test)]
mod tests_responses;

pub use anthropic::{
    anthropic_error_to_openai, anthropic_to_openai_chat_request, anthropic_to_openai_chat_response,
    openai_chat_response_to_anthropic, openai_chat_to_anthropic, openai_error_to_anthropic,
    ANTHROPIC_VERSION, DEFAULT_MAX_TOKENS,
};
pub use anthropic_stream::{AnthropicStreamToOpenAi, OpenAiStreamToAnthropic};
pub use gemini::{
    gemini_batch_to_openai_embeddings, gemini_embed_path, gemini_error_to_openai, gemini_path,
    gemini_to_openai_chat_response, openai_chat_to_gemini, openai_embeddings_to_gemini_batch,
    EmbeddingsContext,
};
pub use gemini_stream::GeminiStreamToOpenAi;
pub use responses::{openai_chat_response_to_responses, responses_to_openai_chat_request};
pub use responses_stream::{OpenAiStreamToResponses, ResponsesStreamUsage};

/// The common interface of the stream translators, so a caller can hold any of them
/// (`Box<dyn StreamTranslator>`).
pub trait StreamTranslator: Send + Sync {
    /// Feed upstream bytes; returns the bytes to send to the client.
    fn push(&mut self, chunk: &[u8]) -> Vec<u8>;
    /// End of the upstream stream; returns the last bytes for the client.
    fn finish(&mut self) -> Vec<u8>;
    /// Usage so far (final after [`finish`](Self::finish)).
    fn usage(&self) -> crate::usage::Usage;
    /// Content (text, reasoning or a tool call) has been sent to the client.
    fn first_content_seen(&self) -> bool;
    /// Upstream bytes held for an event not yet complete; the caller bounds it.
    fn pending_bytes(&self) -> usize;
    /// The id of the response the stream carries, where the protocol names one the client
    /// may ask for again (the Responses API's).
    fn response_id(&self) -> Option<String> {
        None
    }
}

macro_rules! impl_stream_translator {
    ($($t:ty),*) => {$(
        impl StreamTranslator for $t {
            fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
                <$t>::push(self, chunk)
            }
            fn finish(&mut self) -> Vec<u8> {
                <$t>::finish(self)
            }
            fn usage(&self) -> crate::usage::Usage {
                <$t>::usage(self)
            }
            fn first_content_seen(&self) -> bool {
                <$t>::first_content_seen(self)
            }
            fn pending_bytes(&self) -> usize {
                <$t>::pending_bytes(self)
            }
        }
    )*};
}
impl_stream_translator!(
    AnthropicStreamToOpenAi,
    OpenAiStreamToAnthropic,
    GeminiStreamToOpenAi,
    OpenAiStreamToResponses
);

impl StreamTranslator for ResponsesStreamUsage {
    fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        ResponsesStreamUsage::push(self, chunk)
    }
    fn finish(&mut self) -> Vec<u8> {
        ResponsesStreamUsage::finish(self)
    }
    fn usage(&self) -> crate::usage::Usage {
        ResponsesStreamUsage::usage(self)
    }
    fn first_content_seen(&self) -> bool {
        ResponsesStreamUsage::first_content_seen(self)
    }
    fn pending_bytes(&self) -> usize {
        ResponsesStreamUsage::pending_bytes(self)
    }
    fn response_id(&self) -> Option<String> {
        self.id().map(str::to_owned)
    }
}

/// A translated request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Translated {
    /// The body to send upstream.
    pub body: Vec<u8>,
    /// The client asked for a streamed response.
    pub stream: bool,
    /// The client asked for usage in the stream (`stream_options.include_usage: true`);
    /// pass it to the stream translator. Always true for Anthropic-format clients, whose
    /// protocol always carries usage.
    pub include_usage: bool,
}

/// Why a body could not be translated. Messages are safe to show to clients: they name
/// fields and, at most, short client-supplied names (roles, part types), never upstream
/// bodies or secrets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TranslateError {
    #[error("We could not parse the JSON body of your request: {0}")]
    InvalidJson(String),
    #[error("The request body must be a JSON object.")]
    NotAnObject,
    #[error("Invalid request: {0}.")]
    InvalidRequest(String),
    #[error("Not supported for this model's provider: {0}.")]
    Unsupported(String),
    #[error("The upstream provider returned a response the gateway could not translate ({0}).")]
    UpstreamResponse(&'static str),
}

impl TranslateError {
    /// HTTP status for the client: 400 for request errors, 502 for upstream responses.
    pub fn status(&self) -> u16 {
        match self {
            TranslateError::UpstreamResponse(_) => 502,
            _ => 400,
        }
    }

    /// OpenAI-style `code`.
    pub fn code(&self) -> &'static str {
        match self {
            TranslateError::InvalidJson(_) => "invalid_json",
            TranslateError::NotAnObject => "invalid_body",
            TranslateError::InvalidRequest(_) => "invalid_request",
            TranslateError::Unsupported(_) => "unsupported_by_provider",
            TranslateError::UpstreamResponse(_) => "upstream_response_invalid",
        }
    }
}
