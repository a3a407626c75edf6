//! OpenAI embeddings ⇄ Gemini `batchEmbedContents`. Gemini reports no token counts for
//! embeddings: usage is [`estimate_tokens`] over the input texts, marked estimated.

use super::common::{base64_encode, invalid, parse_request, parse_upstream};
use super::gemini::model_segment;
use super::json::{jobj, put_opt, str_field, Json, Obj};
use super::TranslateError;
use crate::usage::{estimate_tokens, Usage};

type Result<T> = std::result::Result<T, TranslateError>;

/// `/v1beta/models/{model}:batchEmbedContents`.
pub fn gemini_embed_path(model: &str) -> String {
    format!("/v1beta/models/{}:batchEmbedContents", model_segment(model))
}

/// What the embeddings response translation needs to know about the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmbeddingsContext {
    /// Number of inputs (embeddings expected back).
    pub inputs: usize,
    /// [`estimate_tokens`] over the input texts: Gemini reports no token counts.
    pub prompt_tokens_estimate: u64,
    /// The client asked for `encoding_format: "base64"` (little-endian f32).
    pub base64: bool,
}

/// OpenAI embeddings request → Gemini `batchEmbedContents` body for `upstream_model` (path:
/// [`gemini_embed_path`]). `input` may be a string or an array of strings (token arrays
/// are not supported); `dimensions` → `outputDimensionality`.
pub fn openai_embeddings_to_gemini_batch(
    body: &[u8],
    upstream_model: &str,
) -> Result<(Vec<u8>, EmbeddingsContext)> {
    let req = parse_request(body)?;
    let texts: Vec<&str> = match req.get("input") {
        Some(Json::Str(s)) => vec![s.as_str()],
        Some(Json::Arr(a)) if !a.is_empty() => a
            .iter()
            .map(|v| {
                v.as_str().ok_or_else(|| {
                    TranslateError::Unsupported("embedding inputs other than strings".into())
                })
            })
            .collect::<Result<_>>()?,
        Some(Json::Arr(_)) => return Err(invalid("`input` must not be empty")),
        _ => return Err(invalid("`input` must be a string or an array of strings")),
    };
    let dims = match req.get("dimensions") {
        Some(d) => Some(
            d.as_u64()
                .filter(|d| *d > 0)
                .ok_or_else(|| invalid("`dimensions` must be a positive integer"))?,
        ),
        None => None,
    };
    let base64 = match str_field(&req, "encoding_format") {
        None | Some("float") => false,
        Some("base64") => true,
        Some(_) => return Err(invalid("`encoding_format` must be float or base64")),
    };
    let model = format!(
        "models/{}",
        upstream_model
            .strip_prefix("models/")
            .unwrap_or(upstream_model)
    );
    let mut estimate = 0u64;
    let requests: Vec<Json> = texts
        .iter()
        .map(|t| {
            estimate = estimate.saturating_add(estimate_tokens(t));
            let mut r = Obj::new();
            r.insert("model".into(), model.as_str().into());
            r.insert(
                "content".into(),
                jobj! { "parts" => vec![jobj! { "text" => *t }] },
            );
            put_opt(&mut r, "outputDimensionality", dims);
            Json::Obj(r)
        })
        .collect();
    let ctx = EmbeddingsContext {
        inputs: texts.len(),
        prompt_tokens_estimate: estimate,
        base64,
    };
    Ok((jobj! { "requests" => requests }.to_vec(), ctx))
}

/// Gemini `batchEmbedContents` response → OpenAI embeddings response for the
/// client-facing `model`. Usage is `ctx.prompt_tokens_estimate`, marked estimated.
pub fn gemini_batch_to_openai_embeddings(
    body: &[u8],
    model: &str,
    ctx: EmbeddingsContext,
) -> Result<(Vec<u8>, Usage)> {
    let resp = parse_upstream(body)?;
    if resp.get("error").is_some() {
        return Err(TranslateError::UpstreamResponse("an error object"));
    }
    let embeddings = resp
        .get("embeddings")
        .and_then(Json::as_array)
        .ok_or(TranslateError::UpstreamResponse("no `embeddings` array"))?;
    if embeddings.len() != ctx.inputs {
        return Err(TranslateError::UpstreamResponse(
            "embedding count does not match the inputs",
        ));
    }
    let mut data = Vec::with_capacity(embeddings.len());
    for (i, e) in embeddings.iter().enumerate() {
        let values =
            e.get("values")
                .and_then(Json::as_array)
                .ok_or(TranslateError::UpstreamResponse(
                    "an embedding without values",
                ))?;
        let embedding = if ctx.base64 {
            let mut bytes = Vec::with_capacity(values.len() * 4);
            for v in values {
                let f = v.as_f64().ok_or(TranslateError::UpstreamResponse(
                    "a non-numeric embedding value",
                ))?;
                bytes.extend_from_slice(&(f as f32).to_le_bytes());
            }
            Json::from(base64_encode(&bytes))
        } else {
            if values.iter().any(|v| v.as_f64().is_none()) {
                return Err(TranslateError::UpstreamResponse(
                    "a non-numeric embedding value",
                ));
            }
            Json::from(values.to_vec())
        };
        data.push(jobj! { "object" => "embedding", "index" => i, "embedding" => embedding });
    }
    let usage = Usage {
        input_tokens: ctx.prompt_tokens_estimate,
        estimated: true,
        ..Usage::default()
    };
    let out = jobj! {
        "object" => "list",
        "data" => data,
        "model" => model,
        "usage" => jobj! {
            "prompt_tokens" => ctx.prompt_tokens_estimate,
            "total_tokens" => ctx.prompt_tokens_estimate,
        },
    };
    Ok((out.to_vec(), usage))
}
