//! The API operations a client can call (the path after a route's prefix).

use crate::usage::MediaKind;

/// The OpenAI API operations the gateway proxies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    ChatCompletions,
    Completions,
    Embeddings,
    /// OpenAI's `/moderations` (OpenAI-compatible providers only).
    Moderations,
    /// Anthropic's `/messages`, for clients that speak Anthropic's API.
    Messages,
    /// Anthropic's `/messages/count_tokens`: passed to an Anthropic target, else estimated.
    CountTokens,
    /// OpenAI's Responses API, `POST /responses`: passed through to providers that have it,
    /// translated through chat completions for the others.
    Responses,
    /// A stored response: `GET`/`DELETE /responses/{id}`, `GET /responses/{id}/input_items`,
    /// `POST /responses/{id}/cancel` (the rest is read from the path).
    ResponseById,
    /// `POST /images/generations` (JSON), metered in images (or tokens when reported).
    ImageGenerations,
    /// `POST /images/edits` (multipart), metered as generations.
    ImageEdits,
    /// `POST /images/variations` (multipart), metered as generations.
    ImageVariations,
    /// `POST /audio/speech` (JSON in, audio out), metered in input characters.
    Speech,
    /// `POST /audio/transcriptions` (multipart), metered in tokens or audio seconds.
    Transcriptions,
    /// `POST /audio/translations` (multipart), metered as transcriptions.
    Translations,
    /// `POST /rerank` (Cohere/Jina style), metered in tokens or search units.
    Rerank,
    /// `GET /models`, answered by the gateway itself.
    Models,
    /// `GET /models/{id}`, answered by the gateway itself (the id is read from the path).
    Model,
    /// The quota API under the chat path (Higress's ai-quota): `…/chat/completions/quota`,
    /// `…/quota/refresh`, `…/quota/delta`.
    Quota(QuotaCall),
    /// OpenAI's files API: `POST /files` (multipart), `GET /files`, `GET`/`DELETE
    /// /files/{id}`, `GET /files/{id}/content` (OpenAI-family providers only; the rest is
    /// read from the path).
    Files,
    /// OpenAI's batches API: `POST /batches`, `GET /batches`, `GET /batches/{id}`,
    /// `POST /batches/{id}/cancel`.
    Batches,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaCall {
    Get,
    Refresh,
    Delta,
}

impl Endpoint {
    /// The endpoint named by the rest of the path after a route's prefix.
    pub fn from_suffix(rest: &str) -> Option<Self> {
        match rest.trim_end_matches('/') {
            "/chat/completions" => Some(Endpoint::ChatCompletions),
            "/completions" => Some(Endpoint::Completions),
            "/embeddings" => Some(Endpoint::Embeddings),
            "/moderations" => Some(Endpoint::Moderations),
            "/messages" => Some(Endpoint::Messages),
            "/images/generations" => Some(Endpoint::ImageGenerations),
            "/images/edits" => Some(Endpoint::ImageEdits),
            "/images/variations" => Some(Endpoint::ImageVariations),
            "/audio/speech" => Some(Endpoint::Speech),
            "/audio/transcriptions" => Some(Endpoint::Transcriptions),
            "/audio/translations" => Some(Endpoint::Translations),
            "/rerank" => Some(Endpoint::Rerank),
            "/messages/count_tokens" => Some(Endpoint::CountTokens),
            "/responses" => Some(Endpoint::Responses),
            r if r.len() > "/responses/".len() && r.starts_with("/responses/") => {
                Some(Endpoint::ResponseById)
            }
            "/models" => Some(Endpoint::Models),
            m if m.len() > "/models/".len() && m.starts_with("/models/") => Some(Endpoint::Model),
            "/chat/completions/quota" => Some(Endpoint::Quota(QuotaCall::Get)),
            "/chat/completions/quota/refresh" => Some(Endpoint::Quota(QuotaCall::Refresh)),
            "/chat/completions/quota/delta" => Some(Endpoint::Quota(QuotaCall::Delta)),
            "/files" => Some(Endpoint::Files),
            r if r.starts_with("/files/") => Some(Endpoint::Files),
            "/batches" => Some(Endpoint::Batches),
            r if r.starts_with("/batches/") => Some(Endpoint::Batches),
            _ => None,
        }
    }

    pub fn suffix(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "/chat/completions",
            Endpoint::Completions => "/completions",
            Endpoint::Embeddings => "/embeddings",
            Endpoint::Moderations => "/moderations",
            Endpoint::Messages => "/messages",
            Endpoint::ImageGenerations => "/images/generations",
            Endpoint::ImageEdits => "/images/edits",
            Endpoint::ImageVariations => "/images/variations",
            Endpoint::Speech => "/audio/speech",
            Endpoint::Transcriptions => "/audio/transcriptions",
            Endpoint::Translations => "/audio/translations",
            Endpoint::Rerank => "/rerank",
            Endpoint::CountTokens => "/messages/count_tokens",
            Endpoint::Responses | Endpoint::ResponseById => "/responses",
            Endpoint::Models | Endpoint::Model => "/models",
            Endpoint::Quota(QuotaCall::Get) => "/chat/completions/quota",
            Endpoint::Quota(QuotaCall::Refresh) => "/chat/completions/quota/refresh",
            Endpoint::Quota(QuotaCall::Delta) => "/chat/completions/quota/delta",
            Endpoint::Files => "/files",
            Endpoint::Batches => "/batches",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "chat",
            Endpoint::Completions => "completions",
            Endpoint::Embeddings => "embeddings",
            Endpoint::Moderations => "moderations",
            Endpoint::Messages => "messages",
            Endpoint::ImageGenerations => "images",
            Endpoint::ImageEdits => "image_edits",
            Endpoint::ImageVariations => "image_variations",
            Endpoint::Speech => "speech",
            Endpoint::Transcriptions => "transcriptions",
            Endpoint::Translations => "translations",
            Endpoint::Rerank => "rerank",
            Endpoint::CountTokens => "count_tokens",
            Endpoint::Responses | Endpoint::ResponseById => "responses",
            Endpoint::Models | Endpoint::Model => "models",
            Endpoint::Quota(_) => "quota",
            Endpoint::Files => "files",
            Endpoint::Batches => "batches",
        }
    }

    /// Requests whose text the route's content policies (PII masking, deny rules,
    /// moderation) do not read: refused on a route that has them, rather than sent
    /// unchecked. (Moderations is the policies' own check; embeddings are not generation.)
    pub fn beyond_policies(self) -> bool {
        self == Endpoint::Responses || (self.media().is_some() && self != Endpoint::Moderations)
    }

    /// The request body is `multipart/form-data` (a file upload), not JSON.
    pub fn multipart(self) -> bool {
        matches!(
            self,
            Endpoint::ImageEdits
                | Endpoint::ImageVariations
                | Endpoint::Transcriptions
                | Endpoint::Translations
        )
    }

    /// What the answer is metered in, for the endpoints not metered as text generation.
    pub fn media(self) -> Option<MediaKind> {
        Some(match self {
            Endpoint::ImageGenerations | Endpoint::ImageEdits | Endpoint::ImageVariations => {
                MediaKind::Images
            }
            Endpoint::Speech => MediaKind::Speech,
            Endpoint::Transcriptions | Endpoint::Translations => MediaKind::Transcription,
            Endpoint::Rerank => MediaKind::Rerank,
            Endpoint::Moderations => MediaKind::Moderation,
            _ => return None,
        })
    }
}
