//! Google Gemini: `generateContent` / `streamGenerateContent?alt=sse` and
//! `batchEmbedContents` under `{base}/v1beta/models/{model}`, with `x-goog-api-key`.
//! Chat and embeddings only; every client is translated (`translate::gemini*`).

use super::{Call, ClientProtocol, Endpoint, Outbound, PlanError, ProviderProtocol};
use crate::keys::ApiKey;
use crate::translate::{self, EmbeddingsContext, StreamTranslator, TranslateError};
use crate::usage::Usage;
use pingora_http::RequestHeader;

pub struct Gemini;

impl ProviderProtocol for Gemini {
    fn name(&self) -> &'static str {
        "Gemini"
    }

    fn native_client(&self) -> Option<ClientProtocol> {
        None
    }

    fn path(&self, call: &Call<'_>) -> String {
        let rest = match call.endpoint {
            Endpoint::Embeddings => translate::gemini_embed_path(call.model),
            _ => translate::gemini_path(call.model, call.stream),
        };
        format!("{}{rest}", call.base_path)
    }

    fn authenticate(&self, req: &mut RequestHeader, key: &ApiKey) -> pingora_error::Result<()> {
        req.insert_header("x-goog-api-key", key.plain().clone())
    }

    fn request_from_openai(
        &self,
        endpoint: Endpoint,
        openai: &[u8],
        upstream_model: &str,
    ) -> Result<Outbound, PlanError> {
        match endpoint {
            Endpoint::ChatCompletions => {
                let t = translate::openai_chat_to_gemini(openai)?;
                Ok(Outbound {
                    endpoint,
                    body: Some(t.body),
                    include_usage: t.include_usage,
                    embeddings: None,
                })
            }
            Endpoint::Embeddings => {
                let (body, ctx) =
                    translate::openai_embeddings_to_gemini_batch(openai, upstream_model)?;
                Ok(Outbound {
                    endpoint,
                    body: Some(body),
                    include_usage: false,
                    embeddings: Some(ctx),
                })
            }
            _ => Err(PlanError::Unsupported {
                endpoint,
                protocol: self.name(),
            }),
        }
    }

    fn stream_to_openai(
        &self,
        model: &str,
        include_usage: bool,
    ) -> Option<Box<dyn StreamTranslator>> {
        Some(Box::new(translate::GeminiStreamToOpenAi::new(
            model,
            include_usage,
        )))
    }

    fn response_to_openai(
        &self,
        body: &[u8],
        model: &str,
        embeddings: Option<EmbeddingsContext>,
    ) -> Result<(Vec<u8>, Usage), TranslateError> {
        match embeddings {
            Some(ctx) => translate::gemini_batch_to_openai_embeddings(body, model, ctx),
            None => translate::gemini_to_openai_chat_response(body, model),
        }
    }

    fn error_to_openai(&self, body: &[u8]) -> Vec<u8> {
        translate::gemini_error_to_openai(body)
    }
}
