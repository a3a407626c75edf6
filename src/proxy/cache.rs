//! The cache stage (`crate::cache`): after admission and budgets, a chat-completion request
//! (OpenAI's `/chat/completions`, or Anthropic's `/messages`: `cached_protocol`) on a route with
//! `cache:` is looked up by its key; a hit is answered here (as JSON or as a replayed
//! stream), a miss goes on to the attempts and its answer is kept if complete.
//!
//! Entries are OpenAI `chat.completion` objects whatever the client spoke: an Anthropic
//! client's answer is kept through the translator of Anthropic answers into OpenAI's (the
//! one an Anthropic provider's answers take to OpenAI clients), and a hit is sent back
//! through the translator of OpenAI answers into Anthropic's (the one OpenAI providers'
//! answers take to Anthropic clients). Only Anthropic answers that come back as they were
//! are kept (`AnthropicShape::keepable`).
//!
//! With `cache.semantic`, an exact miss embeds the last user message (`embed`: a request to
//! this gateway's own proxy listener over loopback, as the same consumer, so the embeddings
//! model's routing, keys, failover, limits and metering apply; it is its own request in the
//! access log) and looks up the nearest kept question of the same context
//! (`crate::cache::semantic`). Any failure of that request is a miss, counted and logged at
//! most once a minute, never a failed request.

use super::exchange::AttemptLog;
use super::loopback::Asked;
use super::pipeline::Failure;
use crate::body::RequestBody;
use crate::cache::semantic::{self, Semantic, SemanticIndex};
use crate::cache::store::now_ms;
use crate::cache::{self, Entry, Names, Verdict, Wish};
use crate::error::GatewayError;
use crate::protocol::ClientProtocol;
use crate::route::{Endpoint, Route};
use crate::runtime::Gateway;
use crate::state::Backends;
use bytes::Bytes;
use pingora_http::ResponseHeader;
use pingora_proxy::Session;
use std::borrow::Cow;
use std::sync::Arc;

/// What the stage decided for a request, kept for storing the answer and for accounting.
#[derive(Debug, Clone)]
pub struct CacheState {
    pub verdict: Verdict,
    key: cache::Key,
    scope: String,
    /// The entry that answered (a hit).
    pub hit: Option<Arc<Entry>>,
    /// A hit charges the consumer's limits, quota and budgets.
    pub charge: bool,
    /// A semantic hit's similarity.
    pub score: Option<f32>,
    /// A semantic miss: where its answer's point goes.
    probe: Option<Probe>,
    /// The request asks for the usage chunk of a stream (`stream_options.include_usage`).
    pub include_usage: bool,
    /// The protocol the request came in.
    pub client: ClientProtocol,
}

/// The protocol of a chat request the cache answers: OpenAI's `/chat/completions` (entries
/// are its answers as they were sent) or Anthropic's `/messages` (its answers translated
/// into OpenAI's); `None` for any other endpoint.
fn cached_protocol(endpoint: Endpoint) -> Option<ClientProtocol> {
    matches!(endpoint, Endpoint::ChatCompletions | Endpoint::Messages)
        .then(|| ClientProtocol::for_endpoint(endpoint))
}

/// The protocol's name in the key (`crate::cache::key_in`): none for OpenAI's; another's
/// with the request's values of the protocol's own headers (`anthropic-version`,
/// `anthropic-beta`: passed to its providers, they may change the answer). Header values
/// hold no NUL.
fn key_tag(client: ClientProtocol, headers: &http::HeaderMap) -> Cow<'static, str> {
    let name = match client {
        ClientProtocol::OpenAi => return Cow::Borrowed(""),
        ClientProtocol::Anthropic => "anthropic",
        ClientProtocol::Responses => "responses",
    };
    let mut tag = String::new();
    for header in client.own_headers() {
        let values = headers.get_all(*header).iter();
        let values: Vec<_> = values
            .map(|v| String::from_utf8_lossy(v.as_bytes()))
            .collect();
        tag.push('\0');
        tag.push_str(&values.join(","));
    }
    if tag.bytes().all(|b| b == 0) {
        return Cow::Borrowed(name);
    }
    Cow::Owned(format!("{name}{tag}"))
}

/// The request's embedding and context, to index its answer once kept.
#[derive(Clone)]
struct Probe {
    index: Arc<SemanticIndex>,
    context: [u8; 32],
    vector: Vec<f32>,
}

impl std::fmt::Debug for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Probe")
            .field("dimensions", &self.vector.len())
            .finish_non_exhaustive()
    }
}

impl CacheState {
    /// The `x-tollgate-cache` response header: `hit-semantic;score=0.93`, `hit-exact`, ….
    pub fn header(&self) -> http::HeaderValue {
        let plain = http::HeaderValue::from_static(self.verdict.as_str());
        match self.score {
            Some(s) => {
                http::HeaderValue::try_from(format!("{};score={s:.2}", self.verdict.as_str()))
                    .unwrap_or(plain)
            }
            None => plain,
        }
    }
}

/// Look the request up (routes with `cache:`, chat requests of a `cached_protocol` only):
/// what the stage decided, with the entry on a hit.
pub async fn lookup(
    session: &Session,
    config: &Gateway,
    backends: &Backends,
    consumer: Option<&str>,
    route: &Route,
    endpoint: Endpoint,
    body: &RequestBody,
) -> Option<CacheState> {
    let settings = route.cache.as_ref()?;
    let client = cached_protocol(endpoint)?;
    let team = consumer
        .and_then(|c| config.budgets.teams.get(c))
        .map(String::as_str);
    let scope = cache::scope(settings.scope, consumer, team, &route.name);
    // The key is read off the body in one pass; no JSON tree unless the semantic stage runs.
    let text = body.json_text()?;
    let hashing = backends.cache().hashing();
    let tag = key_tag(client, &session.req_header().headers);
    let key = cache::key_in(hashing, &route.name, &scope, &tag, text)?;
    let wish = Wish::of(&session.req_header().headers);
    let mut hit = match wish {
        Wish::Use => backends.cache().get(&key).await,
        Wish::Refresh | Wish::Bypass => None,
    };
    hit = hit.filter(|e| answers(e, body.stream));
    let exact = hit.is_some();
    let (mut score, mut probe) = (None, None);
    // Semantic lookups read OpenAI's messages (the last user message, the context before).
    let semantic = settings
        .semantic
        .as_ref()
        .filter(|_| client == ClientProtocol::OpenAi);
    if let (None, Some(sem), Wish::Use | Wish::Refresh) = (&hit, semantic, wish) {
        let asked = Asked {
            session,
            config,
            route,
            consumer,
        };
        (hit, score, probe) = semantic_lookup(&asked, backends, sem, &scope, body, wish).await;
    }
    let verdict = match (wish, &hit) {
        (_, Some(_)) if exact => Verdict::Hit,
        (_, Some(_)) => Verdict::HitSemantic,
        (Wish::Use, None) => Verdict::Miss,
        (Wish::Refresh, _) => Verdict::Refresh,
        (Wish::Bypass, _) => Verdict::Bypass,
    };
    if let Some(c) = &route.cache_counters {
        c.looked_up(verdict);
    }
    Some(CacheState {
        verdict,
        key,
        scope,
        hit,
        charge: settings.charge,
        score,
        probe,
        include_usage: body.client_wants_usage,
        client,
    })
}

/// Whether `entry` can answer the request: a replayed stream parses the kept answer, so one
/// that is not text (kept as the provider sent it) answers only whole requests.
fn answers(entry: &Entry, stream: bool) -> bool {
    !stream || std::str::from_utf8(&entry.completion).is_ok()
}

/// An exact miss looked up by meaning (`cache.semantic`): the paraphrase's entry and its
/// similarity, or the request's probe, to index its answer once kept.
async fn semantic_lookup(
    asked: &Asked<'_>,
    backends: &Backends,
    sem: &Semantic,
    scope: &str,
    body: &RequestBody,
    wish: Wish,
) -> (Option<Arc<Entry>>, Option<f32>, Option<Probe>) {
    let probed = match serde_json::from_slice::<serde_json::Value>(body.bytes()) {
        Ok(request) => semantic_probe(asked, backends, sem, scope, &request).await,
        Err(_) => None,
    };
    let Some(p) = probed else {
        return (None, None, None);
    };
    if wish == Wish::Use {
        if let Some(found) = p.index.nearest(
            &p.context,
            &p.vector,
            sem.threshold,
            sem.tool_calls,
            now_ms(),
        ) {
            match backends.cache().get(&found.key).await {
                Some(entry) if answers(&entry, body.stream) => {
                    return (Some(entry), Some(found.score), None)
                }
                Some(_) => {}
                // Its answer is gone from the exact cache (expired, evicted, purged).
                None => p.index.forget(&p.context, &found.key),
            }
        }
    }
    (None, None, Some(p))
}

/// The request's context and embedding; `None` when it has no last user message in text
/// or the embeddings request failed (counted, logged at most once a minute).
async fn semantic_probe(
    asked: &Asked<'_>,
    backends: &Backends,
    sem: &Semantic,
    scope: &str,
    request: &serde_json::Value,
) -> Option<Probe> {
    let text = semantic::last_user_text(request)?;
    let context = semantic::context(&asked.route.name, scope, request)?;
    match embed(asked, sem, &text).await {
        Ok(vector) => Some(Probe {
            index: backends.cache().semantic(&asked.route.name),
            context,
            vector,
        }),
        Err(e) => {
            backends
                .cache()
                .failed("the semantic cache's embeddings request", &e);
            None
        }
    }
}

/// How long the embeddings request may take.
pub const EMBED_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// The embedding of `text` by the semantic cache's model, asked of this gateway's own proxy
/// listener (the route `sem.route` names, or the request's own) as the request's consumer
/// (`super::loopback`).
async fn embed(asked: &Asked<'_>, sem: &Semantic, text: &str) -> Result<Vec<f32>, String> {
    let body = serde_json::json!({"model": sem.model, "input": text});
    let v = super::loopback::post_json(
        asked,
        sem.route.as_deref(),
        "/embeddings",
        &body,
        EMBED_TIMEOUT,
    )
    .await?;
    let values: Vec<f64> = v["data"][0]["embedding"]
        .as_array()
        .ok_or("no embedding in the answer")?
        .iter()
        .map(|x| x.as_f64().ok_or("a value that is not a number"))
        .collect::<Result<_, _>>()?;
    semantic::unit(&values).ok_or_else(|| "an unusable embedding".to_string())
}

/// What answering from the cache writes to and with.
pub struct Reply<'a> {
    pub config: &'a Gateway,
    pub attempts: &'a mut AttemptLog,
    pub request_id: &'a str,
    pub extra_headers: &'a [super::exchange::ExtraHeader],
    /// The answer's policies: a kept answer holds placeholders (it was made for the masked
    /// request, which is also its key), restored here as in a fresh answer.
    pub respond: Option<&'a crate::policy::restore::ResponsePolicy>,
}

/// How a kept answer is sent: as a stream or whole, in which protocol, under which model
/// name (the client's), with the usage chunk of an OpenAI stream or not.
#[derive(Debug, Clone, Copy)]
pub struct Sending<'a> {
    pub stream: bool,
    pub include_usage: bool,
    pub client: ClientProtocol,
    pub model: &'a str,
}

/// Answer from `entry`: the `chat.completion` as is, or replayed as a stream, in the
/// client's protocol.
pub async fn answer(
    session: &mut Session,
    reply: Reply<'_>,
    entry: Arc<Entry>,
    how: Sending<'_>,
) -> Result<u16, Failure> {
    let Reply {
        config,
        attempts,
        request_id,
        extra_headers,
        respond,
    } = reply;
    if let Some(provider) = config.provider(entry.names.provider()) {
        // No key served it: `key_index` names none.
        attempts.chosen = Some(super::exchange::Chosen {
            provider: provider.clone(),
            key_index: usize::MAX,
            upstream_model: entry.names.upstream_model().to_string(),
        });
    }
    attempts.outcome.usage = Some(entry.usage());
    let abort = |cause| Failure::Abort {
        error: GatewayError::ClientClosed,
        cause,
        sent: Some(200),
    };
    if !how.stream {
        let bytes = whole_reply(&entry, how, respond)?;
        super::respond::json_with(session, 200, bytes, request_id, extra_headers)
            .await
            .map_err(abort)?;
        return Ok(200);
    }
    let events = replayed_events(&entry, how, respond)?;
    let header = (|| {
        let mut h = ResponseHeader::build(200, Some(4 + extra_headers.len()))?;
        for (name, value) in extra_headers {
            h.insert_header(*name, value.clone())?;
        }
        h.insert_header(http::header::CONTENT_TYPE, "text/event-stream")?;
        h.insert_header(http::header::CACHE_CONTROL, "no-cache")?;
        h.insert_header(super::REQUEST_ID, request_id)?;
        Ok::<_, Box<pingora_error::Error>>(h)
    })()
    .map_err(|e| GatewayError::Internal(format!("a cached answer's header: {e}")))?;
    session
        .write_response_header(Box::new(header), false)
        .await
        .map_err(abort)?;
    session
        .write_response_body(Some(events), true)
        .await
        .map_err(abort)?;
    Ok(200)
}

/// A kept answer sent whole, in the client's protocol, through the answer's policies (they
/// read the client's protocol: they run on what it is sent).
fn whole_reply(
    entry: &Entry,
    how: Sending<'_>,
    respond: Option<&crate::policy::restore::ResponsePolicy>,
) -> Result<Bytes, GatewayError> {
    let client = how.client;
    let mut bytes = entry.completion.clone();
    if client != ClientProtocol::OpenAi {
        let translated = client
            .response_from_openai(bytes.to_vec(), how.model)
            .map_err(|e| GatewayError::Internal(format!("a cached answer translated: {e}")))?;
        bytes = Bytes::from(translated);
    }
    Ok(match respond {
        Some(policy) => policy.whole(&bytes),
        None => bytes,
    })
}

/// A kept answer replayed as the events of a stream in the client's protocol, through the
/// answer's policies.
fn replayed_events(
    entry: &Entry,
    how: Sending<'_>,
    respond: Option<&crate::policy::restore::ResponsePolicy>,
) -> Result<Bytes, GatewayError> {
    let client = how.client;
    let completion: serde_json::Value = serde_json::from_slice(&entry.completion)
        .map_err(|e| GatewayError::Internal(format!("a cached answer: {e}")))?;
    // A translated stream takes its usage from the usage chunk, as from a provider's.
    let usage_chunk = how.include_usage || client != ClientProtocol::OpenAi;
    let mut events = Bytes::from(cache::replay_sse(&completion, usage_chunk));
    if let Some(mut t) = client.stream_from_openai(how.model) {
        let mut out = t.push(&events);
        out.extend_from_slice(&t.finish());
        events = Bytes::from(out);
    }
    Ok(match respond {
        Some(policy) => filter_replay(policy, &events, client),
        None => events,
    })
}

/// A replayed stream through the answer's policies; a violation ends it with the closing
/// chunk, the error event and `[DONE]`, as a fresh stream.
fn filter_replay(
    policy: &crate::policy::restore::ResponsePolicy,
    events: &Bytes,
    client: ClientProtocol,
) -> Bytes {
    use crate::policy::restore::Filtered;
    let mut filter = policy.stream();
    let mut out = Vec::new();
    for step in [filter.push(events), filter.finish()] {
        match step {
            Filtered::Pass(b) => out.extend_from_slice(&b),
            Filtered::Blocked(b) => {
                out.extend_from_slice(&b);
                out.extend_from_slice(&super::pipe::content_filter_end(client));
                break;
            }
        }
    }
    out.into()
}

/// The answer to keep and whether it calls tools, if it may be kept: a whole answer as it
/// was sent (checked without a JSON tree, in the usage meter's pass when that read these
/// bytes), a stream assembled into one; an Anthropic answer translated into OpenAI's.
fn kept_answer(
    sent: Vec<u8>,
    attempts: &AttemptLog,
    settings: &cache::RouteCache,
    body: &RequestBody,
    client: ClientProtocol,
) -> Option<(Bytes, bool)> {
    let stream = body.stream;
    if client == ClientProtocol::Anthropic {
        return anthropic_kept(&sent, settings.store_truncated, stream, &body.model);
    }
    if stream {
        let c = cache::assemble(&sent).filter(|c| cache::keepable(c, settings.store_truncated))?;
        let tools = semantic::calls_tools(&c);
        return Some((Bytes::from(c.to_string()), tools));
    }
    let keepable = match attempts.outcome.keepable {
        Some((read, keepable)) if read == sent.len() => {
            // Debug builds (the test suites) hold the meter's verdict to the cache's own
            // (on UTF-8 only: serde_json, the cache's fallback, refuses other bytes where the
            // scanner need not).
            debug_assert!(
                std::str::from_utf8(&sent).is_err()
                    || keepable == cache::keepable_whole(&sent, settings.store_truncated)
            );
            keepable
        }
        _ => cache::keepable_whole(&sent, settings.store_truncated),
    };
    // The bytes as they are: no copy, no UTF-8 check (a stream replay checks).
    keepable.map(|tools| (Bytes::from(sent), tools))
}

/// An Anthropic answer (whole, or its events) as the `chat.completion` to keep, and whether
/// it calls tools; `None` if it may not be kept (`AnthropicShape::keepable`), or would not come
/// back whole (translated back once here: a hit must not fail where the miss did not).
fn anthropic_kept(
    sent: &[u8],
    store_truncated: bool,
    stream: bool,
    model: &str,
) -> Option<(Bytes, bool)> {
    if !AnthropicShape::of(sent, stream)?.keepable(store_truncated) {
        return None;
    }
    let c = if stream {
        let mut t = crate::translate::AnthropicStreamToOpenAi::new(model, true);
        let mut chunks = t.push(sent);
        chunks.extend_from_slice(&t.finish());
        cache::assemble(&chunks)?
    } else {
        let (openai, _) = crate::translate::anthropic_to_openai_chat_response(sent, model).ok()?;
        serde_json::from_slice(&openai).ok()?
    };
    if !cache::keepable(&c, store_truncated) {
        return None;
    }
    let completion = c.to_string();
    ClientProtocol::Anthropic
        .response_from_openai(completion.clone().into_bytes(), model)
        .ok()?;
    Some((Bytes::from(completion), semantic::calls_tools(&c)))
}

/// What an Anthropic answer holds, read from the answer as the client got it.
#[derive(Debug, Default)]
struct AnthropicShape {
    /// Every content block is `text` or `tool_use`, what OpenAI's answer carries back.
    plain: bool,
    calls_tools: bool,
    stop_reason: Option<String>,
}

impl AnthropicShape {
    /// `None` when the answer (or an event's data) is not JSON.
    fn of(sent: &[u8], stream: bool) -> Option<AnthropicShape> {
        let mut shape = AnthropicShape {
            plain: true,
            ..AnthropicShape::default()
        };
        let mut block = |b: &serde_json::Value| {
            let kind = b["type"].as_str();
            shape.plain &= matches!(kind, Some("text" | "tool_use"));
            shape.calls_tools |= kind == Some("tool_use");
        };
        if !stream {
            let v: serde_json::Value = serde_json::from_slice(sent).ok()?;
            v["content"].as_array()?.iter().for_each(&mut block);
            shape.stop_reason = v["stop_reason"].as_str().map(str::to_string);
            return Some(shape);
        }
        let mut stop = None;
        for line in std::str::from_utf8(sent).ok()?.lines() {
            let Some(data) = line.strip_prefix("data:") else {
                continue;
            };
            let v: serde_json::Value = serde_json::from_str(data.trim()).ok()?;
            match v["type"].as_str() {
                Some("content_block_start") => block(&v["content_block"]),
                Some("message_delta") => {
                    stop = v["delta"]["stop_reason"]
                        .as_str()
                        .map(str::to_string)
                        .or(stop)
                }
                _ => {}
            }
        }
        shape.stop_reason = stop;
        Some(shape)
    }

    /// Only answers that come back as they were: text and tool calls, finished by
    /// `end_turn` or `tool_use` (or cut by `max_tokens` with `store_truncated`, unless in a
    /// tool call's arguments). Not thinking or redacted thinking (their signatures have no
    /// place in OpenAI's answer, and a client sending such a turn back without them is
    /// refused), server tools' blocks, a `pause_turn` (a turn to continue), a
    /// `stop_sequence` (which sequence would be lost), or a refusal.
    fn keepable(&self, store_truncated: bool) -> bool {
        self.plain
            && match self.stop_reason.as_deref() {
                Some("end_turn" | "tool_use") => true,
                Some("max_tokens") => store_truncated && !self.calls_tools,
                _ => false,
            }
    }
}

/// Keep a delivered answer (`sent`: the bytes the client was sent, when they were kept) if it
/// is complete and may be.
pub async fn keep(
    state: &CacheState,
    backends: &Backends,
    attempts: &AttemptLog,
    sent: Option<Vec<u8>>,
    route: &Route,
    body: &RequestBody,
    status: u16,
) {
    let (Some(settings), Some(sent)) = (&route.cache, sent) else {
        return;
    };
    if status != 200 || state.verdict == Verdict::Bypass || state.hit.is_some() {
        return;
    }
    let Some((completion, tool_calls)) = kept_answer(sent, attempts, settings, body, state.client)
    else {
        return;
    };
    let (Some(usage), Some(chosen)) = (attempts.outcome.usage, &attempts.chosen) else {
        return;
    };
    let entry = Entry {
        completion,
        input_tokens: usage.input_tokens,
        output_tokens: usage.output_tokens,
        cached_tokens: usage.cached_input_tokens,
        reasoning_tokens: usage.reasoning_tokens,
        names: Names::new(
            &chosen.provider.name,
            &chosen.upstream_model,
            &route.name,
            &body.model,
            &state.scope,
        ),
    };
    if backends.cache().put(state.key, entry, settings.ttl).await {
        if let (Some(p), Some(sem)) = (&state.probe, &settings.semantic) {
            let ttl_ms = u64::try_from(settings.ttl.as_millis()).unwrap_or(u64::MAX);
            let now = now_ms();
            let job = p.index.insert(
                p.context,
                p.vector.clone(),
                state.key,
                now.saturating_add(ttl_ms),
                tool_calls,
                sem.max_entries,
                sem.max_bytes,
                now,
            );
            if let Some(job) = job {
                // Tens of milliseconds of work: not on the proxy's threads.
                let index = p.index.clone();
                tokio::task::spawn_blocking(move || index.build(job));
            }
        }
        if let Some(c) = &route.cache_counters {
            c.stored();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_not_in_text_answers_only_whole_requests() {
        let entry = |bytes: &'static [u8]| Entry {
            completion: Bytes::from_static(bytes),
            input_tokens: 1,
            output_tokens: 1,
            cached_tokens: 0,
            reasoning_tokens: 0,
            names: Names::new("p", "m", "r", "m", "s"),
        };
        let text = entry("{\"x\":\"世界\"}".as_bytes());
        let not_text = entry(b"{\"x\":\"\xff\"}");
        assert!(answers(&text, true) && answers(&text, false));
        assert!(
            answers(&not_text, false),
            "served whole as the provider sent it"
        );
        assert!(
            !answers(&not_text, true),
            "a stream replay would not parse it"
        );
    }

    fn fixture(name: &str) -> Vec<u8> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/anthropic");
        std::fs::read(dir.join(name)).unwrap()
    }

    /// Anthropic's answers (the fixtures are its documentation's) kept as OpenAI's, and back.
    #[test]
    fn anthropic_answers_are_kept_translated_and_come_back_the_same() {
        use serde_json::Value;
        let whole = fixture("upstream_response.json");
        let (kept, tools) = anthropic_kept(&whole, false, false, "claude").unwrap();
        assert!(!tools);
        let back = ClientProtocol::Anthropic
            .response_from_openai(kept.to_vec(), "claude")
            .unwrap();
        let (was, is): (Value, Value) = (
            serde_json::from_slice(&whole).unwrap(),
            serde_json::from_slice(&back).unwrap(),
        );
        assert_eq!(is["content"], was["content"]);
        assert_eq!(is["stop_reason"], "end_turn");
        assert_eq!(is["type"], "message");
        // A tool call is kept, and says so (the semantic cache's `tool_calls` switch).
        let tool = fixture("tool_upstream_response.json");
        let (kept, tools) = anthropic_kept(&tool, false, false, "claude").unwrap();
        assert!(tools);
        let back = ClientProtocol::Anthropic
            .response_from_openai(kept.to_vec(), "claude")
            .unwrap();
        let (was, is): (Value, Value) = (
            serde_json::from_slice(&tool).unwrap(),
            serde_json::from_slice(&back).unwrap(),
        );
        assert_eq!(is["stop_reason"], "tool_use");
        let uses = |v: &Value| {
            v["content"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|b| b["type"] == "tool_use")
                .map(|b| (b["name"].clone(), b["input"].clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(uses(&is), uses(&was));
        // A stream, assembled.
        let (kept, _) = anthropic_kept(&fixture("upstream_stream.sse"), false, true, "c").unwrap();
        let c: Value = serde_json::from_slice(&kept).unwrap();
        assert!(!c["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .is_empty());
    }

    #[test]
    fn anthropic_answers_that_would_not_come_back_as_they_were_are_not_kept() {
        let thinking = fixture("thinking_upstream_stream.sse");
        assert!(anthropic_kept(&thinking, true, true, "claude").is_none());
        let whole = String::from_utf8(fixture("upstream_response.json")).unwrap();
        let cut = whole.replace("\"end_turn\"", "\"max_tokens\"");
        assert_ne!(cut, whole);
        assert!(anthropic_kept(cut.as_bytes(), false, false, "claude").is_none());
        assert!(anthropic_kept(cut.as_bytes(), true, false, "claude").is_some());
        // Not an answer at all, or a stream cut before its end.
        assert!(anthropic_kept(b"{\"type\":\"error\"}", true, false, "claude").is_none());
        let stream = fixture("upstream_stream.sse");
        let half = &stream[..stream.len() / 2];
        assert!(anthropic_kept(half, true, true, "claude").is_none());
        // Blocks OpenAI's answer cannot carry back, stops that would come back otherwise.
        for (from, to) in [
            (
                r#"{"type": "text""#,
                r#"{"type": "redacted_thinking", "data": "x"}, {"type": "text""#,
            ),
            (r#""end_turn""#, r#""stop_sequence""#),
            (r#""end_turn""#, r#""pause_turn""#),
            (r#""end_turn""#, r#""refusal""#),
        ] {
            let changed = whole.replace(from, to);
            assert_ne!(changed, whole, "{to}");
            assert!(
                anthropic_kept(changed.as_bytes(), true, false, "c").is_none(),
                "{to}"
            );
        }
        // A tool call cut by `max_tokens` (its arguments may be cut too): never kept.
        let tool = String::from_utf8(fixture("tool_upstream_response.json")).unwrap();
        let cut = tool.replace(r#""tool_use""#, r#""max_tokens""#);
        let cut = cut.replace(r#""type": "max_tokens""#, r#""type": "tool_use""#);
        assert!(cut.contains(r#""stop_reason": "max_tokens""#), "{cut}");
        assert!(anthropic_kept(cut.as_bytes(), true, false, "claude").is_none());
    }

    /// The headers that Anthropic providers are passed, and that may change the answer,
    /// are in an Anthropic request's key.
    #[test]
    fn anthropic_keys_name_the_version_and_betas() {
        let tag = |pairs: &[(&'static str, &'static str)]| {
            let mut h = http::HeaderMap::new();
            for (k, v) in pairs {
                h.append(*k, http::HeaderValue::from_static(v));
            }
            key_tag(ClientProtocol::Anthropic, &h).into_owned()
        };
        assert_eq!(tag(&[]), "anthropic");
        assert_eq!(key_tag(ClientProtocol::OpenAi, &http::HeaderMap::new()), "");
        let v = [("anthropic-version", "2023-06-01")];
        let b = [
            ("anthropic-version", "2023-06-01"),
            ("anthropic-beta", "x-2025"),
        ];
        let bb = [
            ("anthropic-version", "2023-06-01"),
            ("anthropic-beta", "x-2025"),
            ("anthropic-beta", "y-2025"),
        ];
        let tags = [tag(&[]), tag(&v), tag(&b), tag(&bb)];
        for (i, a) in tags.iter().enumerate() {
            for b in &tags[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }
}
