//! What one attempt sends and how its answer is read: the meeting point of the client's
//! protocol (OpenAI or Anthropic), the endpoint, and the provider's protocol family.
//!
//! When both sides speak the same protocol, the body is spliced (model mapping, usage
//! request) and the response passes through while it is metered. Otherwise the body is
//! translated (`crate::translate`) and the response translated back: streams chunk by chunk,
//! JSON once complete. Everything here is decided before the attempt starts.

use crate::body::{RequestBody, Rewrite};
use crate::error::GatewayError;
use crate::provider::Family;
use crate::route::Endpoint;
use crate::translate::{self, EmbeddingsContext, StreamTranslator, TranslateError};
use crate::usage::{usage_from_json, Usage};
use bytes::Bytes;

/// The protocol the client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client {
    OpenAi,
    Anthropic,
}

impl Client {
    pub fn for_endpoint(e: Endpoint) -> Self {
        match e {
            Endpoint::Messages => Client::Anthropic,
            _ => Client::OpenAi,
        }
    }
}

/// The body sent upstream.
#[derive(Debug, Clone)]
pub enum BodyPlan {
    /// The client's bytes with splices (possibly none).
    Splice(Rewrite),
    /// A translated body.
    Replace(Bytes),
}

impl BodyPlan {
    pub fn len(&self, original: usize) -> usize {
        match self {
            BodyPlan::Splice(r) => r.output_len(original),
            BodyPlan::Replace(b) => b.len(),
        }
    }

    pub fn is_unchanged(&self) -> bool {
        matches!(self, BodyPlan::Splice(r) if r.is_empty())
    }

    pub fn apply(&self, original: &Bytes) -> Bytes {
        match self {
            BodyPlan::Splice(r) => r.apply(original),
            BodyPlan::Replace(b) => b.clone(),
        }
    }
}

/// How the provider's answer reaches the client.
#[derive(Debug, Clone)]
pub enum ResponsePlan {
    /// Same protocol: pass through and meter; `strip_usage` hides the usage chunk the
    /// gateway asked for.
    Native { family: Family, strip_usage: bool },
    /// Translate from the provider's family to the client's protocol.
    Translate {
        from: Family,
        to: Client,
        model: String,
        include_usage: bool,
        embeddings: Option<EmbeddingsContext>,
    },
}

pub struct Plan {
    /// The operation asked of the provider.
    pub upstream_endpoint: Endpoint,
    pub body: BodyPlan,
    pub response: ResponsePlan,
}

impl From<TranslateError> for GatewayError {
    fn from(e: TranslateError) -> Self {
        GatewayError::Translate {
            status: e.status(),
            code: e.code(),
            message: e.to_string(),
        }
    }
}

fn unsupported(endpoint: Endpoint, family: Family) -> GatewayError {
    GatewayError::Translate {
        status: 400,
        code: "unsupported_endpoint",
        message: format!(
            "The {} endpoint is not available for {family:?} providers.",
            endpoint.as_str()
        ),
    }
}

/// Decide what to send for `body` (asked at `endpoint`) to a provider of `family`, with the
/// model `upstream_model`.
pub fn plan(
    body: &RequestBody,
    endpoint: Endpoint,
    family: Family,
    upstream_model: &str,
) -> Result<Plan, GatewayError> {
    let mapped = (upstream_model != body.model).then_some(upstream_model);
    let client = Client::for_endpoint(endpoint);
    let translate = |from: Family, to: Client, include_usage: bool| ResponsePlan::Translate {
        from,
        to,
        model: upstream_model.to_string(),
        include_usage,
        embeddings: None,
    };
    Ok(match (client, family) {
        (Client::OpenAi, Family::OpenAi | Family::Azure) => {
            let usage_endpoint =
                matches!(endpoint, Endpoint::ChatCompletions | Endpoint::Completions);
            Plan {
                upstream_endpoint: endpoint,
                body: BodyPlan::Splice(body.rewrite(mapped, usage_endpoint)),
                response: ResponsePlan::Native {
                    family,
                    strip_usage: body.stream && usage_endpoint && !body.client_wants_usage,
                },
            }
        }
        (Client::OpenAi, Family::Anthropic) => {
            if endpoint != Endpoint::ChatCompletions {
                return Err(unsupported(endpoint, family));
            }
            let t = translate::openai_chat_to_anthropic(&body.bytes, upstream_model)?;
            Plan {
                upstream_endpoint: Endpoint::Messages,
                body: BodyPlan::Replace(t.body.into()),
                response: translate(family, client, t.include_usage),
            }
        }
        (Client::OpenAi, Family::Gemini) => match endpoint {
            Endpoint::ChatCompletions => {
                let t = translate::openai_chat_to_gemini(&body.bytes)?;
                Plan {
                    upstream_endpoint: endpoint,
                    body: BodyPlan::Replace(t.body.into()),
                    response: translate(family, client, t.include_usage),
                }
            }
            Endpoint::Embeddings => {
                let (b, ctx) =
                    translate::openai_embeddings_to_gemini_batch(&body.bytes, upstream_model)?;
                Plan {
                    upstream_endpoint: endpoint,
                    body: BodyPlan::Replace(b.into()),
                    response: ResponsePlan::Translate {
                        from: family,
                        to: client,
                        model: upstream_model.to_string(),
                        include_usage: false,
                        embeddings: Some(ctx),
                    },
                }
            }
            _ => return Err(unsupported(endpoint, family)),
        },
        (Client::Anthropic, Family::Anthropic) => Plan {
            upstream_endpoint: Endpoint::Messages,
            body: BodyPlan::Splice(body.rewrite(mapped, false)),
            response: ResponsePlan::Native {
                family,
                strip_usage: false,
            },
        },
        (Client::Anthropic, Family::OpenAi | Family::Azure) => {
            let t = translate::anthropic_to_openai_chat_request(&body.bytes, upstream_model)?;
            Plan {
                upstream_endpoint: Endpoint::ChatCompletions,
                body: BodyPlan::Replace(t.body.into()),
                response: translate(family, client, true),
            }
        }
        (Client::Anthropic, Family::Gemini) => {
            let t = translate::anthropic_to_openai_chat_request(&body.bytes, upstream_model)?;
            let g = translate::openai_chat_to_gemini(&t.body)?;
            Plan {
                upstream_endpoint: Endpoint::ChatCompletions,
                body: BodyPlan::Replace(g.body.into()),
                response: translate(family, client, true),
            }
        }
    })
}

/// Two translators in a row (provider → OpenAI → client); usage comes from the first.
struct Chain(Box<dyn StreamTranslator>, Box<dyn StreamTranslator>);

impl StreamTranslator for Chain {
    fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        let mid = self.0.push(chunk);
        self.1.push(&mid)
    }
    fn finish(&mut self) -> Vec<u8> {
        let mid = self.0.finish();
        let mut out = self.1.push(&mid);
        out.extend(self.1.finish());
        out
    }
    fn usage(&self) -> Usage {
        self.0.usage()
    }
    fn first_content_seen(&self) -> bool {
        self.0.first_content_seen()
    }
    fn pending_bytes(&self) -> usize {
        self.0.pending_bytes() + self.1.pending_bytes()
    }
}

/// A provider's stream read into OpenAI chunks (OpenAI itself needs none).
fn to_openai(from: Family, model: &str, include_usage: bool) -> Option<Box<dyn StreamTranslator>> {
    match from {
        Family::Anthropic => Some(Box::new(translate::AnthropicStreamToOpenAi::new(
            model,
            include_usage,
        ))),
        Family::Gemini => Some(Box::new(translate::GeminiStreamToOpenAi::new(
            model,
            include_usage,
        ))),
        Family::OpenAi | Family::Azure => None,
    }
}

/// The stream translator for a `Translate` plan.
pub fn stream_translator(
    from: Family,
    to: Client,
    model: &str,
    include_usage: bool,
) -> Box<dyn StreamTranslator> {
    match (
        to_openai(from, model, include_usage || to == Client::Anthropic),
        to,
    ) {
        (Some(t), Client::OpenAi) => t,
        (Some(t), Client::Anthropic) => Box::new(Chain(
            t,
            Box::new(translate::OpenAiStreamToAnthropic::new(model)),
        )),
        (None, _) => Box::new(translate::OpenAiStreamToAnthropic::new(model)),
    }
}

/// A native Anthropic stream, read only for its usage.
pub fn anthropic_observer(model: &str) -> Box<dyn StreamTranslator> {
    Box::new(translate::AnthropicStreamToOpenAi::new(model, true))
}

/// Usage of a complete native (untranslated) JSON response.
pub fn native_usage(family: Family, body: &[u8]) -> Option<Usage> {
    match family {
        Family::Anthropic => translate::anthropic_to_openai_chat_response(body, "")
            .ok()
            .map(|(_, u)| u),
        _ => usage_from_json(body),
    }
}

/// Translate a complete 2xx JSON response; `Err` holds a client-format error body.
pub fn translate_response(
    body: &[u8],
    from: Family,
    to: Client,
    model: &str,
    embeddings: Option<EmbeddingsContext>,
) -> Result<(Vec<u8>, Usage), TranslateError> {
    let (openai, usage) = match (from, embeddings) {
        (Family::Gemini, Some(ctx)) => {
            translate::gemini_batch_to_openai_embeddings(body, model, ctx)?
        }
        (Family::Gemini, None) => translate::gemini_to_openai_chat_response(body, model)?,
        (Family::Anthropic, _) => translate::anthropic_to_openai_chat_response(body, model)?,
        (Family::OpenAi | Family::Azure, _) => {
            let usage = usage_from_json(body).unwrap_or_default();
            (body.to_vec(), usage)
        }
    };
    match to {
        Client::OpenAi => Ok((openai, usage)),
        Client::Anthropic => {
            let (out, _) = translate::openai_chat_response_to_anthropic(&openai, model)?;
            Ok((out, usage))
        }
    }
}

/// Translate a provider's error body into the client's format.
pub fn translate_error(body: &[u8], from: Family, to: Client) -> Vec<u8> {
    let openai = match from {
        Family::Anthropic => translate::anthropic_error_to_openai(body),
        Family::Gemini => translate::gemini_error_to_openai(body),
        Family::OpenAi | Family::Azure => body.to_vec(),
    };
    match to {
        Client::OpenAi => openai,
        Client::Anthropic => translate::openai_error_to_anthropic(&openai),
    }
}
