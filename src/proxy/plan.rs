//! What one attempt sends and how its answer is read: the meeting point of the client's
//! protocol (`ClientProtocol`), the endpoint, and the provider's (`ProviderProtocol`).
//!
//! When the provider speaks the client's protocol, the body is spliced (model mapping, usage
//! request) and the response passes through while it is metered. Otherwise the request goes
//! client → OpenAI → provider and the answer back the same way: streams chunk by chunk, JSON
//! once complete (the translators are in `crate::translate`). Everything here is decided
//! before the attempt starts.

use crate::body::{RequestBody, Rewrite};
use crate::error::GatewayError;
use crate::protocol::{ClientProtocol, Endpoint, Protocol};
use crate::provider::Provider;
use crate::translate::{EmbeddingsContext, StreamTranslator, TranslateError};
use crate::usage::{MediaKind, Usage};
use bytes::Bytes;
use std::borrow::Cow;

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
    Native { strip_usage: bool },
    /// Same protocol, nothing to meter (Anthropic's token counting): pass through, keys
    /// scrubbed from error bodies.
    Unmetered,
    /// Same protocol, an answer metered in its own unit (images, speech, transcriptions,
    /// rerank, moderations): passed through; `asked` is what the request asked for (the
    /// images, or the characters to speak), the measure when the answer states none.
    Media { kind: MediaKind, asked: u64 },
    /// Translate from the provider's protocol to the client's.
    Translate {
        model: String,
        include_usage: bool,
        embeddings: Option<EmbeddingsContext>,
    },
}

pub struct Plan {
    /// The protocol the client speaks.
    pub client: ClientProtocol,
    /// The protocol the provider speaks.
    pub provider: Protocol,
    /// The operation asked of the provider.
    pub upstream_endpoint: Endpoint,
    pub body: BodyPlan,
    pub response: ResponsePlan,
    /// The body's content type when it is not JSON (a multipart upload, with its boundary).
    pub content_type: Option<String>,
}

impl Plan {
    /// The client protocol whose own headers may be forwarded: the client's when the
    /// provider speaks it (no translation).
    pub fn native(&self) -> Option<ClientProtocol> {
        matches!(
            self.response,
            ResponsePlan::Native { .. } | ResponsePlan::Unmetered | ResponsePlan::Media { .. }
        )
        .then_some(self.client)
    }
}

/// Decide what to send for `body` (asked at `endpoint`) to a provider speaking `provider`,
/// with the model `upstream_model`.
pub fn plan(
    body: &RequestBody,
    endpoint: Endpoint,
    provider: Protocol,
    upstream_model: &str,
) -> Result<Plan, GatewayError> {
    let client = ClientProtocol::for_endpoint(endpoint);
    if endpoint == Endpoint::CountTokens {
        return count_tokens(body, provider, upstream_model);
    }
    if let Some(kind) = endpoint.media() {
        return media(body, endpoint, kind, provider, upstream_model);
    }
    if provider.native_client() == Some(client) {
        return Ok(native(body, endpoint, client, provider, upstream_model));
    }
    let (openai_endpoint, openai): (Endpoint, Cow<'_, [u8]>) =
        match client.request_to_openai(body.bytes(), upstream_model)? {
            Some(t) => (Endpoint::ChatCompletions, Cow::Owned(t.body)),
            None => (endpoint, Cow::Borrowed(&body.bytes()[..])),
        };
    let out = provider.request_from_openai(openai_endpoint, &openai, upstream_model)?;
    let sent = out.body.unwrap_or_else(|| openai.into_owned());
    Ok(Plan {
        client,
        provider,
        upstream_endpoint: out.endpoint,
        body: BodyPlan::Replace(sent.into()),
        response: ResponsePlan::Translate {
            model: upstream_model.to_string(),
            include_usage: out.include_usage || client.always_reports_usage(),
            embeddings: out.embeddings,
        },
        content_type: None,
    })
}

/// A media (or moderation, rerank) request: only OpenAI-protocol providers (OpenAI, Azure
/// and the compatible servers) take it, the body passed as it came but for the model.
fn media(
    body: &RequestBody,
    endpoint: Endpoint,
    kind: MediaKind,
    provider: Protocol,
    upstream_model: &str,
) -> Result<Plan, GatewayError> {
    if provider.native_client() != Some(ClientProtocol::OpenAi) {
        return Err(crate::protocol::PlanError::Unsupported {
            endpoint,
            protocol: provider.name(),
        }
        .into());
    }
    let mapped = (upstream_model != body.model).then_some(upstream_model);
    Ok(Plan {
        client: ClientProtocol::OpenAi,
        provider,
        upstream_endpoint: endpoint,
        body: BodyPlan::Splice(body.rewrite(mapped, false)),
        response: ResponsePlan::Media {
            kind,
            asked: asked(body, kind),
        },
        content_type: body.form.as_ref().map(|f| f.content_type.clone()),
    })
}

/// What a media request asks for, the measure of an answer that states none: the images
/// (`n`, default 1) or the characters of the text to speak.
fn asked(body: &RequestBody, kind: MediaKind) -> u64 {
    #[derive(serde::Deserialize)]
    struct Asked<'a> {
        #[serde(default)]
        n: Option<u64>,
        #[serde(borrow, default)]
        input: Option<std::borrow::Cow<'a, str>>,
    }
    if let Some(form) = &body.form {
        return form.form.n.unwrap_or(1);
    }
    let Ok(fields) = serde_json::from_slice::<Asked<'_>>(body.bytes()) else {
        return 0;
    };
    match kind {
        MediaKind::Images => fields.n.unwrap_or(1),
        MediaKind::Speech => fields.input.map_or(0, |t| t.chars().count() as u64),
        _ => 0,
    }
}

/// Anthropic's token counting: only a provider speaking Anthropic's protocol answers it
/// (`super::count_tokens` keeps the others out of the attempts).
fn count_tokens(
    body: &RequestBody,
    provider: Protocol,
    upstream_model: &str,
) -> Result<Plan, GatewayError> {
    if provider.native_client() != Some(ClientProtocol::Anthropic) {
        return Err(crate::protocol::PlanError::Unsupported {
            endpoint: Endpoint::CountTokens,
            protocol: provider.name(),
        }
        .into());
    }
    let mapped = (upstream_model != body.model).then_some(upstream_model);
    Ok(Plan {
        client: ClientProtocol::Anthropic,
        provider,
        upstream_endpoint: Endpoint::CountTokens,
        body: BodyPlan::Splice(body.rewrite(mapped, false)),
        response: ResponsePlan::Unmetered,
        content_type: None,
    })
}

/// [`plan`] for `provider`: a Responses API request goes to the provider's own Responses
/// API when it has one (`providers[].responses_api`), spliced and passed through.
pub fn plan_for(
    body: &RequestBody,
    endpoint: Endpoint,
    provider: &Provider,
    upstream_model: &str,
) -> Result<Plan, GatewayError> {
    if endpoint == Endpoint::Responses && provider.responses_api {
        let client = ClientProtocol::Responses;
        return Ok(native(
            body,
            endpoint,
            client,
            provider.protocol,
            upstream_model,
        ));
    }
    plan(body, endpoint, provider.protocol, upstream_model)
}

/// The plan of a provider that speaks the client's protocol: the body spliced (model
/// mapping, usage request), the answer passed through.
fn native(
    body: &RequestBody,
    endpoint: Endpoint,
    client: ClientProtocol,
    provider: Protocol,
    upstream_model: &str,
) -> Plan {
    let mapped = (upstream_model != body.model).then_some(upstream_model);
    let ask_usage = client.asks_for_usage(endpoint);
    Plan {
        client,
        provider,
        upstream_endpoint: endpoint,
        body: BodyPlan::Splice(body.rewrite(mapped, ask_usage)),
        response: ResponsePlan::Native {
            strip_usage: body.stream && ask_usage && !body.client_wants_usage,
        },
        content_type: None,
    }
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

/// The stream translator for a `Translate` plan; `None` when both sides speak OpenAI.
pub fn stream_translator(
    from: Protocol,
    to: ClientProtocol,
    model: &str,
    include_usage: bool,
) -> Option<Box<dyn StreamTranslator>> {
    let usage = include_usage || to.always_reports_usage();
    match (
        from.stream_to_openai(model, usage),
        to.stream_from_openai(model),
    ) {
        (Some(a), Some(b)) => Some(Box::new(Chain(a, b))),
        (a, b) => a.or(b),
    }
}

/// Translate a complete 2xx JSON response; `Err` holds a client-format error body.
pub fn translate_response(
    body: &[u8],
    from: Protocol,
    to: ClientProtocol,
    model: &str,
    embeddings: Option<EmbeddingsContext>,
) -> Result<(Vec<u8>, Usage), TranslateError> {
    let (openai, usage) = from.response_to_openai(body, model, embeddings)?;
    Ok((to.response_from_openai(openai, model)?, usage))
}

/// Translate a provider's error body into the client's format.
pub fn translate_error(body: &[u8], from: Protocol, to: ClientProtocol) -> Vec<u8> {
    to.error_from_openai(from.error_to_openai(body))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::protocol::{ANTHROPIC, AZURE, GEMINI, OPENAI};

    /// Every (client, provider) pair: the operation asked upstream, whether the body is
    /// spliced or translated, and whether the answer passes through.
    #[test]
    fn every_client_and_provider_pair() {
        let chat = RequestBody::parse(Bytes::from_static(
            br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}"#,
        ))
        .unwrap();
        let messages = RequestBody::parse(Bytes::from_static(
            br#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"}],"stream":true}"#,
        ))
        .unwrap();
        use Endpoint::*;
        // (endpoint, provider, upstream endpoint, native, strip_usage / include_usage)
        let table: [(Endpoint, Protocol, Endpoint, bool, bool); 8] = [
            (ChatCompletions, OPENAI, ChatCompletions, true, true),
            (ChatCompletions, AZURE, ChatCompletions, true, true),
            (ChatCompletions, ANTHROPIC, Messages, false, false),
            (ChatCompletions, GEMINI, ChatCompletions, false, false),
            (Messages, ANTHROPIC, Messages, true, false),
            (Messages, OPENAI, ChatCompletions, false, true),
            (Messages, AZURE, ChatCompletions, false, true),
            (Messages, GEMINI, ChatCompletions, false, true),
        ];
        for (endpoint, provider, upstream, native, usage) in table {
            let body = if endpoint == Messages {
                &messages
            } else {
                &chat
            };
            let p = plan(body, endpoint, provider, "up").unwrap();
            let what = format!("{endpoint:?} → {provider:?}");
            assert_eq!(p.upstream_endpoint, upstream, "{what}");
            assert_eq!(p.client, ClientProtocol::for_endpoint(endpoint), "{what}");
            assert_eq!(p.native().is_some(), native, "{what}");
            match (&p.body, &p.response) {
                (BodyPlan::Splice(_), ResponsePlan::Native { strip_usage }) => {
                    assert!(native, "{what}");
                    assert_eq!(*strip_usage, usage, "{what}");
                }
                (
                    BodyPlan::Replace(b),
                    ResponsePlan::Translate {
                        include_usage,
                        model,
                        ..
                    },
                ) => {
                    assert!(!native, "{what}");
                    assert_eq!(*include_usage, usage, "{what}");
                    assert_eq!(model, "up", "{what}");
                    assert!(
                        serde_json::from_slice::<serde_json::Value>(b).is_ok(),
                        "{what}"
                    );
                }
                _ => panic!("{what}: body and response plans disagree"),
            }
            if !native {
                assert!(
                    stream_translator(provider, p.client, "up", false).is_some(),
                    "{what}"
                );
            }
        }
        let err = plan(&chat, Embeddings, ANTHROPIC, "up").err().unwrap();
        assert_eq!((err.status(), err.code()), (400, "unsupported_endpoint"));
        assert_eq!(
            err.to_string(),
            "The embeddings endpoint is not available for Anthropic providers."
        );
    }
}
