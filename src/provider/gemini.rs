//! Google Gemini: `generateContent` / `streamGenerateContent?alt=sse` and
//! `batchEmbedContents` under `{base}/v1beta/models/{model}`, with `x-goog-api-key`.

use crate::provider::Provider;
use crate::route::Endpoint;

pub fn path(provider: &Provider, endpoint: Endpoint, model: &str, stream: bool) -> String {
    let rest = match endpoint {
        Endpoint::Embeddings => crate::translate::gemini_embed_path(model),
        _ => crate::translate::gemini_path(model, stream),
    };
    format!("{}{rest}", provider.upstream.base_path)
}
