//! Google Gemini API (`generativelanguage` v1beta REST):
//! `models/{model}:generateContent`, `:streamGenerateContent` (SSE with
//! `alt=sse`, else a streamed JSON array), `:countTokens`, `:embedContent`
//! and `:batchEmbedContents`, with Google-style errors.

use std::sync::Arc;

use hyper::{Method, Response, StatusCode};
use serde_json::{json, Map, Value};

use crate::body::RespBody;
use crate::opts::MockOpts;
use crate::reply::Ctx;
use crate::stream::{self, Event, Step};
use crate::util::{content, embedding, query_param, text_tokens, word};

const METHODS: [&str; 5] = [
    "generateContent",
    "streamGenerateContent",
    "countTokens",
    "embedContent",
    "batchEmbedContents",
];

/// `(model, method)` of a `…/{model}:{method}` path with a known method.
pub fn call(path: &str) -> Option<(&str, &str)> {
    let last = path.trim_end_matches('/').rsplit('/').next()?;
    let (model, method) = last.rsplit_once(':')?;
    (!model.is_empty() && METHODS.contains(&method)).then_some((model, method))
}

pub fn is_gemini_path(path: &str) -> bool {
    call(path).is_some() || path.starts_with("/v1beta/models")
}

/// Google `error.status` for an HTTP status.
pub fn error_status(status: u16) -> &'static str {
    match status {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ABORTED",
        429 => "RESOURCE_EXHAUSTED",
        499 => "CANCELLED",
        501 => "NOT_IMPLEMENTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        500..=599 => "INTERNAL",
        _ => "FAILED_PRECONDITION",
    }
}

/// Auth check done before faults: an `x-goog-api-key` header or a `key`
/// query parameter is required (401 UNAUTHENTICATED otherwise).
pub fn preflight(ctx: &Ctx<'_>) -> Option<(StatusCode, &'static str)> {
    let header = ctx
        .parts
        .headers
        .get("x-goog-api-key")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|s| !s.trim().is_empty());
    let query = query_param(ctx.query(), "key").is_some_and(|k| !k.is_empty());
    (!header && !query).then_some((
        StatusCode::UNAUTHORIZED,
        "Request is missing a valid API key (x-goog-api-key header or key query parameter).",
    ))
}

pub fn dispatch(ctx: &Ctx<'_>) -> Response<RespBody> {
    let path = ctx.parts.uri.path();
    let Some((model, method)) = call(path).filter(|_| ctx.parts.method == Method::POST) else {
        let msg = format!("Method not found: {} {}", ctx.parts.method, path);
        return ctx.error(StatusCode::NOT_FOUND, &msg);
    };
    let req = match ctx.parse_object() {
        Ok(r) => r,
        Err(msg) => return ctx.error(StatusCode::BAD_REQUEST, &msg),
    };
    match method {
        "generateContent" => generate(ctx, &req, model, false),
        "streamGenerateContent" => generate(ctx, &req, model, true),
        "countTokens" => {
            let inner = req
                .get("generateContentRequest")
                .and_then(Value::as_object)
                .unwrap_or(&req);
            ctx.json(json!({ "totalTokens": prompt_tokens(inner) }))
        }
        "embedContent" => match req.get("content") {
            Some(c) => {
                ctx.json(json!({ "embedding": embed_one(c, req.get("outputDimensionality")) }))
            }
            None => ctx.error(
                StatusCode::BAD_REQUEST,
                "* EmbedContentRequest.content: content is not specified",
            ),
        },
        _ => match req.get("requests").and_then(Value::as_array) {
            Some(reqs) => {
                let embeddings: Vec<Value> = reqs
                    .iter()
                    .map(|r| {
                        embed_one(
                            r.get("content").unwrap_or(&Value::Null),
                            r.get("outputDimensionality"),
                        )
                    })
                    .collect();
                ctx.json(json!({ "embeddings": embeddings }))
            }
            None => ctx.error(
                StatusCode::BAD_REQUEST,
                "* BatchEmbedContentsRequest.requests: requests is not specified",
            ),
        },
    }
}

/// `{"values": [...]}`: `outputDimensionality` values (1..=4096, default 8)
/// derived from the content's text.
fn embed_one(content: &Value, dims: Option<&Value>) -> Value {
    let dims = dims
        .and_then(Value::as_u64)
        .filter(|d| (1..=4096).contains(d))
        .and_then(|d| usize::try_from(d).ok())
        .unwrap_or(8);
    json!({ "values": embedding(&parts_text(Some(content)), dims) })
}

/// Concatenated `text` of a Content's parts (a bare string also works);
/// inlineData / functionCall / functionResponse parts count 0.
fn parts_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(c) => c
            .get("parts")
            .and_then(Value::as_array)
            .map(|parts| {
                parts
                    .iter()
                    .filter_map(|p| p.get("text").and_then(Value::as_str))
                    .collect()
            })
            .unwrap_or_default(),
        None => String::new(),
    }
}

/// sum over contents of (ceil(chars / 4) + 3), `systemInstruction` counting
/// as one more content when present.
pub fn prompt_tokens(req: &Map<String, Value>) -> u64 {
    let contents: u64 = req
        .get("contents")
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .map(|c| text_tokens(&parts_text(Some(c))) + 3)
                .sum()
        })
        .unwrap_or(0);
    let system = match req.get("systemInstruction") {
        None | Some(Value::Null) => 0,
        s => text_tokens(&parts_text(s)) + 3,
    };
    contents + system
}

/// The function to call, if any: needs non-empty `tools`, and then either
/// `x-mock-tool-call: NAME` or `toolConfig.functionCallingConfig.mode: ANY`
/// (first `allowedFunctionNames` entry, else the first declaration).
fn tool_name(req: &Map<String, Value>, o: &MockOpts) -> Option<String> {
    let tools = req.get("tools").and_then(Value::as_array)?;
    if tools.is_empty() {
        return None;
    }
    if let Some(name) = &o.tool_call {
        return Some(name.clone());
    }
    let cfg = req.get("toolConfig")?.get("functionCallingConfig")?;
    if cfg.get("mode").and_then(Value::as_str) != Some("ANY") {
        return None;
    }
    let allowed = cfg
        .get("allowedFunctionNames")
        .and_then(|a| a.get(0))
        .and_then(Value::as_str);
    let declared = tools
        .iter()
        .filter_map(|t| t.get("functionDeclarations")?.get(0)?.get("name")?.as_str())
        .next();
    Some(allowed.or(declared).unwrap_or("tool").to_owned())
}

fn generate(
    ctx: &Ctx<'_>,
    req: &Map<String, Value>,
    model: &str,
    streaming: bool,
) -> Response<RespBody> {
    if req
        .get("contents")
        .and_then(Value::as_array)
        .is_none_or(|c| c.is_empty())
    {
        return ctx.error(
            StatusCode::BAD_REQUEST,
            "* GenerateContentRequest.contents: contents is not specified",
        );
    }
    let o = &ctx.opts;
    let max = req
        .get("generationConfig")
        .and_then(|g| g.get("maxOutputTokens"))
        .and_then(Value::as_u64);
    let (n, cut) = o.output_len(max);
    let tool = tool_name(req, o);
    let reply = Reply {
        response_id: format!("mock-{}", ctx.state.next_id()),
        model: model.to_owned(),
        n,
        finish: if cut && tool.is_none() {
            "MAX_TOKENS"
        } else {
            "STOP"
        },
        tool,
        prompt: prompt_tokens(req),
        cached: o.cached_tokens,
        thoughts: o.reasoning_tokens,
        usage: !o.no_usage,
    };
    if !streaming {
        return ctx.json(reply.full());
    }
    let echo = ctx
        .echo
        .as_ref()
        .map(|e| Step::Frame(json!({ "mock_echo": e }).to_string()));
    let docs = echo.into_iter().chain(events(reply));
    if query_param(ctx.query(), "alt") == Some("sse") {
        let crlf = o.crlf.unwrap_or(true);
        let events = docs.map(|s| s.map(Event::data));
        ctx.stream("text/event-stream", stream::sse(events, crlf))
    } else {
        ctx.stream("application/json", stream::json_array(docs))
    }
}

/// Everything needed to render a GenerateContentResponse.
pub struct Reply {
    pub response_id: String,
    pub model: String,
    pub n: u64,
    pub finish: &'static str,
    pub tool: Option<String>,
    pub prompt: u64,
    pub cached: Option<u64>,
    pub thoughts: Option<u64>,
    pub usage: bool,
}

impl Reply {
    /// One GenerateContentResponse; `candidates` = output tokens so far.
    fn response(&self, parts: Value, finish: Option<&str>, candidates: u64) -> Value {
        let mut cand = json!({ "content": { "role": "model", "parts": parts }, "index": 0 });
        if let Some(f) = finish {
            cand["finishReason"] = json!(f);
        }
        let mut m = Map::new();
        m.insert("candidates".into(), json!([cand]));
        if self.usage {
            let thoughts = self.thoughts.unwrap_or(0);
            let mut u = Map::new();
            u.insert("promptTokenCount".into(), json!(self.prompt));
            u.insert("candidatesTokenCount".into(), json!(candidates));
            u.insert(
                "totalTokenCount".into(),
                json!(self
                    .prompt
                    .saturating_add(candidates)
                    .saturating_add(thoughts)),
            );
            if let Some(c) = self.cached {
                u.insert("cachedContentTokenCount".into(), json!(c));
            }
            if let Some(r) = self.thoughts {
                u.insert("thoughtsTokenCount".into(), json!(r));
            }
            m.insert("usageMetadata".into(), Value::Object(u));
        }
        m.insert("modelVersion".into(), json!(self.model));
        m.insert("responseId".into(), json!(self.response_id));
        Value::Object(m)
    }

    fn call_part(name: &str) -> Value {
        json!([{ "functionCall": { "name": name, "args": { "location": "Paris" } } }])
    }

    /// The non-streaming response.
    pub fn full(&self) -> Value {
        let parts = match &self.tool {
            Some(name) => Self::call_part(name),
            None => json!([{ "text": content(self.n) }]),
        };
        self.response(parts, Some(self.finish), self.n)
    }
}

/// Streamed responses: one per token (a single one for a function call or
/// N = 0), running `usageMetadata` on each, `finishReason` on the last.
pub fn events(r: Reply) -> impl Iterator<Item = Step<String>> + Send + 'static {
    let r = Arc::new(r);
    let single = match &r.tool {
        Some(name) => Some(r.response(Reply::call_part(name), Some(r.finish), r.n)),
        None if r.n == 0 => Some(r.response(json!([{ "text": "" }]), Some(r.finish), 0)),
        None => None,
    };
    let count = if single.is_some() { 0 } else { r.n };
    let rc = Arc::clone(&r);
    let words = (0..count).map(move |i| {
        let finish = (i + 1 == rc.n).then_some(rc.finish);
        Step::Content(
            rc.response(json!([{ "text": word(i) }]), finish, i + 1)
                .to_string(),
        )
    });
    single
        .map(|v| Step::Content(v.to_string()))
        .into_iter()
        .chain(words)
        .chain(std::iter::once(Step::EndOfContent))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    fn reply(n: u64, tool: Option<&str>) -> Reply {
        Reply {
            response_id: "r".into(),
            model: "gemini-x".into(),
            n,
            finish: "STOP",
            tool: tool.map(str::to_owned),
            prompt: 5,
            cached: Some(2),
            thoughts: Some(4),
            usage: true,
        }
    }

    fn docs(r: Reply) -> Vec<Value> {
        events(r)
            .filter_map(|s| match s {
                Step::Content(d) | Step::Frame(d) => Some(serde_json::from_str(&d).unwrap()),
                Step::EndOfContent => None,
            })
            .collect()
    }

    #[test]
    fn paths() {
        assert_eq!(
            call("/v1beta/models/gemini-2.0-flash:streamGenerateContent"),
            Some(("gemini-2.0-flash", "streamGenerateContent"))
        );
        assert_eq!(call("/v1beta/models/:generateContent"), None);
        assert_eq!(call("/v1beta/models/x:frobnicate"), None);
        assert!(!is_gemini_path("/v1beta/openai/chat/completions"));
    }

    #[test]
    fn prompt_token_formula() {
        let req = obj(json!({
            "systemInstruction": {"parts": [{"text": "12345"}]},
            "contents": [
                {"role": "user", "parts": [{"text": "ab"}, {"inlineData": {"mimeType": "image/png", "data": "AAAA"}}, {"text": "cd"}]},
                {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {}}}]},
                {"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {}}}]}
            ]
        }));
        // system (2+3) + (1+3) + 3 + 3
        assert_eq!(prompt_tokens(&req), 15);
    }

    #[test]
    fn tool_selection() {
        let o = MockOpts::default();
        let tools = json!([{"functionDeclarations": [{"name": "get_weather"}]}]);
        assert_eq!(tool_name(&obj(json!({"tools": tools})), &o), None);
        let any =
            obj(json!({"tools": tools, "toolConfig": {"functionCallingConfig": {"mode": "ANY"}}}));
        assert_eq!(tool_name(&any, &o).as_deref(), Some("get_weather"));
        let hdr = MockOpts {
            tool_call: Some("h".into()),
            ..MockOpts::default()
        };
        assert_eq!(
            tool_name(&obj(json!({"tools": tools})), &hdr).as_deref(),
            Some("h")
        );
        assert_eq!(tool_name(&obj(json!({})), &hdr), None);
    }

    #[test]
    fn stream_sequence() {
        let d = docs(reply(3, None));
        assert_eq!(d.len(), 3);
        let text: String = d
            .iter()
            .map(|v| {
                v["candidates"][0]["content"]["parts"][0]["text"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(text, "Hello wörld 世界");
        assert!(d[1]["candidates"][0].get("finishReason").is_none());
        assert_eq!(d[2]["candidates"][0]["finishReason"], "STOP");
        assert_eq!(d[1]["usageMetadata"]["candidatesTokenCount"], 2);
        assert_eq!(d[2]["usageMetadata"]["totalTokenCount"], 5 + 3 + 4);
        assert_eq!(d[2]["usageMetadata"]["cachedContentTokenCount"], 2);
        assert_eq!(d[0]["modelVersion"], "gemini-x");

        let t = docs(reply(3, Some("f")));
        assert_eq!(t.len(), 1);
        assert_eq!(
            t[0]["candidates"][0]["content"]["parts"][0]["functionCall"],
            json!({"name": "f", "args": {"location": "Paris"}})
        );
        assert_eq!(docs(reply(0, None)).len(), 1);
    }
}
