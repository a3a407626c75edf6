//! The API operations a client can call (the path after a route's prefix).

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
            Endpoint::CountTokens => "count_tokens",
            Endpoint::Responses | Endpoint::ResponseById => "responses",
            Endpoint::Models | Endpoint::Model => "models",
            Endpoint::Quota(_) => "quota",
            Endpoint::Files => "files",
            Endpoint::Batches => "batches",
        }
    }
}
