//! OpenAI (and Azure OpenAI) endpoints: chat completions, legacy
//! completions, embeddings and model listing, streaming and not (files and batches: `files`).

use std::sync::Arc;

use hyper::{Method, Response, StatusCode};
use serde_json::{json, Map, Value};

use crate::body::RespBody;
use crate::opts::MockOpts;
use crate::reply::{Ctx, Dialect};
use crate::stream::{self, Event, Step};
use crate::util::{content, embedding, now_secs, text_tokens, word};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Chat,
    Completion,
}

pub fn dispatch(ctx: &Ctx<'_>) -> Response<RespBody> {
    let p = ctx.parts.uri.path().trim_end_matches('/');
    let method = &ctx.parts.method;
    if let Some(files_or_batches) = crate::files::dispatch(ctx) {
        files_or_batches
    } else if method == Method::POST && p.ends_with("/chat/completions") {
        generate(ctx, Kind::Chat)
    } else if method == Method::POST && p.ends_with("/completions") {
        generate(ctx, Kind::Completion)
    } else if method == Method::POST && p.ends_with("/responses") {
        crate::responses::create(ctx)
    } else if let Some((_, rest)) = p.split_once("/responses/") {
        crate::responses::stored(ctx, rest)
    } else if method == Method::POST && p.ends_with("/embeddings") {
        embeddings(ctx)
    } else if method == Method::POST && p.ends_with("/moderations") {
        moderations(ctx)
    } else if let Some(media) = crate::media::dispatch(ctx, p) {
        media
    } else if method == Method::GET && p.ends_with("/models") {
        models(ctx)
    } else if let Some((_, id)) = p.rsplit_once("/models/").filter(|_| method == Method::GET) {
        ctx.json_whole(
            json!({ "id": id, "object": "model", "created": 1_700_000_000u64, "owned_by": "mock-llm" }),
        )
    } else {
        not_found(ctx)
    }
}

pub fn not_found(ctx: &Ctx<'_>) -> Response<RespBody> {
    let msg = format!(
        "Invalid URL ({} {})",
        ctx.parts.method,
        ctx.parts.uri.path()
    );
    ctx.error(StatusCode::NOT_FOUND, &msg)
}

/// `{deployment}` of an `/openai/deployments/{deployment}/…` path.
pub fn azure_deployment(path: &str) -> Option<&str> {
    path.strip_prefix("/openai/deployments/")?
        .split('/')
        .next()
        .filter(|d| !d.is_empty())
}

/// The request's `model`; else the Azure deployment name; else `mock-model`.
fn model_of(ctx: &Ctx<'_>, req: &Map<String, Value>) -> Value {
    if let Some(m) = req.get("model") {
        return m.clone();
    }
    let deployment = (ctx.dialect == Dialect::Azure)
        .then(|| azure_deployment(ctx.parts.uri.path()))
        .flatten();
    json!(deployment.unwrap_or("mock-model"))
}

/// Text tokens of a chat `content`: a string, or the `text` of each part.
fn content_text_tokens(content: Option<&Value>) -> u64 {
    match content {
        Some(Value::String(s)) => text_tokens(s),
        Some(Value::Array(parts)) => {
            let text: String = parts
                .iter()
                .filter_map(|p| match p {
                    Value::String(s) => Some(s.as_str()),
                    Value::Object(o) => o.get("text").and_then(Value::as_str),
                    _ => None,
                })
                .collect();
            text_tokens(&text)
        }
        _ => 0,
    }
}

/// sum over messages of (ceil(chars / 4) + 3)
pub fn chat_prompt_tokens(messages: Option<&Value>) -> u64 {
    messages
        .and_then(Value::as_array)
        .map(|msgs| {
            msgs.iter()
                .map(|m| content_text_tokens(m.get("content")) + 3)
                .sum()
        })
        .unwrap_or(0)
}

/// One entry per input item: (seed material, prompt tokens).
pub fn inputs(input: Option<&Value>) -> Vec<(String, u64)> {
    let token_array = |a: &[Value]| -> bool { !a.is_empty() && a.iter().all(Value::is_number) };
    match input {
        Some(Value::String(s)) => vec![(s.clone(), text_tokens(s))],
        Some(Value::Array(a)) if token_array(a) => {
            vec![(Value::Array(a.clone()).to_string(), a.len() as u64)]
        }
        Some(Value::Array(a)) => a
            .iter()
            .map(|item| match item {
                Value::String(s) => (s.clone(), text_tokens(s)),
                Value::Array(t) => (item.to_string(), t.len() as u64),
                other => (other.to_string(), 0),
            })
            .collect(),
        _ => Vec::new(),
    }
}

pub fn usage(prompt: u64, completion: u64, o: &MockOpts) -> Value {
    let completion = completion.saturating_add(o.reasoning_tokens.unwrap_or(0));
    let mut u = Map::new();
    u.insert("prompt_tokens".into(), json!(prompt));
    u.insert("completion_tokens".into(), json!(completion));
    u.insert(
        "total_tokens".into(),
        json!(prompt.saturating_add(completion)),
    );
    if let Some(k) = o.cached_tokens {
        u.insert(
            "prompt_tokens_details".into(),
            json!({ "cached_tokens": k }),
        );
    }
    if let Some(r) = o.reasoning_tokens {
        u.insert(
            "completion_tokens_details".into(),
            json!({ "reasoning_tokens": r }),
        );
    }
    Value::Object(u)
}

/// OpenAI error `(type, code)` for a status.
pub fn error_kind(status: u16) -> (&'static str, Option<&'static str>) {
    match status {
        401 | 403 => ("invalid_request_error", Some("invalid_api_key")),
        429 => ("rate_limit_exceeded", Some("rate_limit_exceeded")),
        500..=599 => ("server_error", None),
        _ => ("invalid_request_error", None),
    }
}

pub fn default_error_message(status: u16) -> String {
    match status {
        401 | 403 => "Incorrect API key provided (mock-llm injected fault).".into(),
        429 => "Rate limit reached (mock-llm injected fault).".into(),
        500..=599 => {
            "The server had an error while processing your request (mock-llm injected fault)."
                .into()
        }
        s => format!("mock-llm injected fault with status {s}."),
    }
}

/// Chat and legacy completions, streaming or not.
fn generate(ctx: &Ctx<'_>, kind: Kind) -> Response<RespBody> {
    let req = match ctx.parse_object() {
        Ok(r) => r,
        Err(msg) => return ctx.error(StatusCode::BAD_REQUEST, &msg),
    };
    let o = &ctx.opts;
    let max_u64 = |k: &str| req.get(k).and_then(Value::as_u64);
    let (max, prompt_tokens) = match kind {
        Kind::Chat => (
            max_u64("max_completion_tokens").or_else(|| max_u64("max_tokens")),
            chat_prompt_tokens(req.get("messages")),
        ),
        Kind::Completion => (
            max_u64("max_tokens"),
            inputs(req.get("prompt")).iter().map(|(_, t)| *t).sum(),
        ),
    };
    let parrot = (o.parrot && kind == Kind::Chat).then(|| parrot_pieces(&req, o.chunks));
    let (n, cut) = match &parrot {
        Some(pieces) => (pieces.len() as u64, false),
        None => o.output_len(max),
    };
    let finish = if cut { "length" } else { "stop" };
    let usage = usage(prompt_tokens, n, o);
    let prefix = match kind {
        Kind::Chat => "chatcmpl-mock-",
        Kind::Completion => "cmpl-mock-",
    };
    let plan = ChunkPlan {
        kind,
        id: format!("{prefix}{}", ctx.state.next_id()),
        created: now_secs(),
        model: model_of(ctx, &req),
        n,
        finish,
        usage: None,
        pieces: parrot.map(Arc::new),
    };

    if req.get("stream").and_then(Value::as_bool).unwrap_or(false) {
        let include_usage = req
            .get("stream_options")
            .and_then(|s| s.get("include_usage"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let plan = ChunkPlan {
            usage: (include_usage && !o.no_usage).then_some(usage),
            ..plan
        };
        let echo = ctx
            .echo
            .as_ref()
            .map(|e| Step::Frame(Event::data(json!({ "mock_echo": e }).to_string())));
        let events = echo.into_iter().chain(chunk_events(plan));
        let crlf = o.crlf.unwrap_or(false);
        return ctx.stream("text/event-stream", stream::sse(events, crlf));
    }

    let text = match &plan.pieces {
        Some(pieces) => pieces.concat(),
        None => content(n),
    };
    let (object, choice) = match kind {
        Kind::Chat => (
            "chat.completion",
            json!({
                "index": 0,
                "message": { "role": "assistant", "content": text, "refusal": null },
                "logprobs": null,
                "finish_reason": finish,
            }),
        ),
        Kind::Completion => (
            "text_completion",
            json!({ "index": 0, "text": text, "logprobs": null, "finish_reason": finish }),
        ),
    };
    let mut m = Map::new();
    m.insert("id".into(), json!(plan.id));
    m.insert("object".into(), json!(object));
    m.insert("created".into(), json!(plan.created));
    m.insert("model".into(), plan.model);
    if kind == Kind::Chat {
        m.insert("system_fingerprint".into(), json!("fp_mock"));
    }
    m.insert("choices".into(), json!([choice]));
    if !o.no_usage {
        m.insert("usage".into(), usage);
    }
    if o.latin1 && kind == Kind::Chat {
        return ctx.json_latin1(Value::Object(m));
    }
    ctx.json(Value::Object(m))
}

fn embeddings(ctx: &Ctx<'_>) -> Response<RespBody> {
    let req = match ctx.parse_object() {
        Ok(r) => r,
        Err(msg) => return ctx.error(StatusCode::BAD_REQUEST, &msg),
    };
    let dims = req
        .get("dimensions")
        .and_then(Value::as_u64)
        .filter(|d| (1..=4096).contains(d))
        .and_then(|d| usize::try_from(d).ok())
        .unwrap_or(256);
    let items = inputs(req.get("input"));
    let prompt_tokens: u64 = items.iter().map(|(_, t)| *t).sum();
    let data: Vec<Value> = items
        .iter()
        .enumerate()
        .map(|(i, (material, _))| {
            json!({ "object": "embedding", "index": i, "embedding": embedding(material, dims) })
        })
        .collect();
    let mut m = Map::new();
    m.insert("object".into(), json!("list"));
    m.insert("data".into(), Value::Array(data));
    m.insert("model".into(), model_of(ctx, &req));
    if !ctx.opts.no_usage {
        m.insert(
            "usage".into(),
            json!({ "prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens }),
        );
    }
    ctx.json(Value::Object(m))
}

/// The word whose presence (case-insensitive) flags a moderation input (`--flag-word`).
pub static FLAG_WORD: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Default of `--flag-word`.
pub const DEFAULT_FLAG_WORD: &str = "flagme";

/// `POST …/moderations`: one result per input, flagged (category `harassment`) when the
/// input contains the flag word.
fn moderations(ctx: &Ctx<'_>) -> Response<RespBody> {
    let req = match ctx.parse_object() {
        Ok(r) => r,
        Err(msg) => return ctx.error(StatusCode::BAD_REQUEST, &msg),
    };
    let word = FLAG_WORD
        .get()
        .map_or(DEFAULT_FLAG_WORD, String::as_str)
        .to_lowercase();
    let results: Vec<Value> = inputs(req.get("input"))
        .iter()
        .map(|(text, _)| {
            let flagged = !word.is_empty() && text.to_lowercase().contains(&word);
            let score = if flagged { 0.99 } else { 0.01 };
            json!({
                "flagged": flagged,
                "categories": { "harassment": flagged, "violence": false },
                "category_scores": { "harassment": score, "violence": 0.01 },
            })
        })
        .collect();
    let id = ctx.state.next_id();
    ctx.json(json!({
        "id": format!("modr-mock-{id}"),
        "model": model_of(ctx, &req),
        "results": results,
    }))
}

fn models(ctx: &Ctx<'_>) -> Response<RespBody> {
    let data: Vec<Value> = [
        "gpt-4o",
        "gpt-4o-mini",
        "gpt-3.5-turbo-instruct",
        "text-embedding-3-small",
        "mock-model",
    ]
    .iter()
    .map(|id| json!({ "id": id, "object": "model", "created": 1_700_000_000u64, "owned_by": "mock-llm" }))
    .collect();
    ctx.json_whole(json!({ "object": "list", "data": data }))
}

/// What a streamed chat / legacy completion consists of.
pub struct ChunkPlan {
    pub kind: Kind,
    pub id: String,
    pub created: u64,
    pub model: Value,
    pub n: u64,
    pub finish: &'static str,
    /// `Some` when usage must be sent (include_usage and not suppressed).
    pub usage: Option<Value>,
    /// `x-mock-reply-parrot`: the content pieces, instead of the generated words.
    pub pieces: Option<Arc<Vec<String>>>,
}

impl ChunkPlan {
    fn object(&self) -> &'static str {
        match self.kind {
            Kind::Chat => "chat.completion.chunk",
            Kind::Completion => "text_completion",
        }
    }

    fn chunk(&self, choice: Value) -> String {
        let mut m = Map::new();
        m.insert("id".into(), json!(self.id));
        m.insert("object".into(), json!(self.object()));
        m.insert("created".into(), json!(self.created));
        m.insert("model".into(), self.model.clone());
        if self.kind == Kind::Chat {
            m.insert("system_fingerprint".into(), json!("fp_mock"));
        }
        m.insert("choices".into(), json!([choice]));
        if self.usage.is_some() {
            m.insert("usage".into(), Value::Null);
        }
        Value::Object(m).to_string()
    }

    fn choice(&self, text: &str, finish: Option<&str>, role: bool) -> Value {
        match self.kind {
            Kind::Chat => {
                let delta = match (role, finish) {
                    (true, _) => json!({ "role": "assistant", "content": "" }),
                    (false, Some(_)) => json!({}),
                    (false, None) => json!({ "content": text }),
                };
                json!({ "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish })
            }
            Kind::Completion => {
                json!({ "index": 0, "text": text, "logprobs": null, "finish_reason": finish })
            }
        }
    }

    fn usage_chunk(&self, usage: &Value) -> String {
        json!({
            "id": self.id,
            "object": self.object(),
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": usage,
        })
        .to_string()
    }
}

/// `x-mock-reply-parrot`: the text of the last `user` message (its content string, or its
/// parts' `text` joined) cut into `chunks` pieces of nearly equal length in characters
/// (fewer when the text is shorter; one empty piece for an empty text).
pub fn parrot_pieces(req: &Map<String, Value>, chunks: u64) -> Vec<String> {
    let text = req
        .get("messages")
        .and_then(Value::as_array)
        .and_then(|ms| {
            ms.iter()
                .rev()
                .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        })
        .map(|m| match m.get("content") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(parts)) => parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect(),
            _ => String::new(),
        })
        .unwrap_or_default();
    let chars: Vec<char> = text.chars().collect();
    let n = usize::try_from(chunks.max(1))
        .unwrap_or(1)
        .min(chars.len().max(1));
    let size = chars.len().div_ceil(n).max(1);
    let mut pieces: Vec<String> = chars.chunks(size).map(|c| c.iter().collect()).collect();
    if pieces.is_empty() {
        pieces.push(String::new());
    }
    pieces
}

/// Chat: role chunk, one chunk per token, finish chunk, optional usage
/// chunk, `[DONE]`. Legacy completions: the same without the role chunk.
pub fn chunk_events(plan: ChunkPlan) -> impl Iterator<Item = Step<Event>> + Send + 'static {
    let p = Arc::new(plan);
    let role =
        (p.kind == Kind::Chat).then(|| Step::Frame(Event::data(p.chunk(p.choice("", None, true)))));
    let mut tail = vec![
        Step::EndOfContent,
        Step::Frame(Event::data(p.chunk(p.choice("", Some(p.finish), false)))),
    ];
    if let Some(u) = &p.usage {
        tail.push(Step::Frame(Event::data(p.usage_chunk(u))));
    }
    tail.push(Step::Frame(Event::data("[DONE]".into())));
    let pc = Arc::clone(&p);
    let content = (0..p.n).map(move |i| {
        let piece = match &pc.pieces {
            Some(pieces) => usize::try_from(i)
                .ok()
                .and_then(|i| pieces.get(i))
                .map_or("", String::as_str),
            None => word(i),
        };
        Step::Content(Event::data(pc.chunk(pc.choice(piece, None, false))))
    });
    role.into_iter().chain(content).chain(tail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_tokens_formula() {
        let msgs = json!([
            {"role": "system", "content": "12345"},
            {"role": "user", "content": [{"type": "text", "text": "abcd"}, {"type": "image_url"}]},
            {"role": "assistant"}
        ]);
        // (ceil(5/4)+3) + (ceil(4/4)+3) + (0+3)
        assert_eq!(chat_prompt_tokens(Some(&msgs)), 12);
        assert_eq!(chat_prompt_tokens(Some(&json!("nope"))), 0);
    }

    #[test]
    fn inputs_forms() {
        assert_eq!(inputs(Some(&json!("abcde")))[0].1, 2);
        assert_eq!(inputs(Some(&json!([1, 2, 3])))[0].1, 3);
        let v = inputs(Some(&json!(["ab", [1, 2]])));
        assert_eq!(v.iter().map(|x| x.1).collect::<Vec<_>>(), vec![1, 2]);
    }

    #[test]
    fn azure_deployment_name() {
        assert_eq!(
            azure_deployment("/openai/deployments/gpt4o/chat/completions"),
            Some("gpt4o")
        );
        assert_eq!(azure_deployment("/openai/deployments//x"), None);
        assert_eq!(azure_deployment("/v1/chat/completions"), None);
    }

    #[test]
    fn parrot_cuts_the_last_user_message() {
        let req = json!({"messages": [
            {"role": "user", "content": "old"},
            {"role": "user", "content": [{"type": "text", "text": "你好a@b.io"}]},
            {"role": "assistant", "content": "no"}
        ]});
        let m = req.as_object().unwrap();
        assert_eq!(parrot_pieces(m, 3), vec!["你好a", "@b.", "io"]);
        assert_eq!(parrot_pieces(m, 100).len(), 8);
        assert_eq!(parrot_pieces(&Map::new(), 8), vec![""]);
    }

    #[test]
    fn chat_event_sequence() {
        let plan = ChunkPlan {
            kind: Kind::Chat,
            id: "c".into(),
            created: 1,
            model: json!("m"),
            n: 2,
            finish: "stop",
            usage: Some(json!({"total_tokens": 3})),
            pieces: None,
        };
        let ev: Vec<_> = chunk_events(plan).collect();
        assert_eq!(ev.len(), 1 + 2 + 1 + 1 + 1 + 1);
        assert!(matches!(ev[0], Step::Frame(_)));
        assert!(matches!(ev[1], Step::Content(_)));
        assert_eq!(ev[3], Step::EndOfContent);
        assert_eq!(ev[6], Step::Frame(Event::data("[DONE]".into())));
        let Step::Frame(usage) = &ev[5] else {
            panic!("usage frame expected")
        };
        let u: Value = serde_json::from_str(&usage.data).unwrap();
        assert_eq!(u["choices"], json!([]));
        assert_eq!(u["usage"]["total_tokens"], 3);
    }
}
