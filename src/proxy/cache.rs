//! The cache stage (`crate::cache`): after admission and budgets, a chat-completion request
//! on a route with `cache:` is looked up by its key; a hit is answered here (as JSON or as
//! a replayed stream), a miss goes on to the attempts and its answer is kept if complete.
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
use crate::route::{Endpoint, Route};
use crate::runtime::Gateway;
use crate::state::Backends;
use bytes::Bytes;
use pingora_http::ResponseHeader;
use pingora_proxy::Session;
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

/// Look the request up (routes with `cache:`, chat completions only): what the stage
/// decided, with the entry on a hit.
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
    if endpoint != Endpoint::ChatCompletions {
        return None;
    }
    let team = consumer
        .and_then(|c| config.budgets.teams.get(c))
        .map(String::as_str);
    let scope = cache::scope(settings.scope, consumer, team, &route.name);
    // The key is read off the body in one pass; no JSON tree unless the semantic stage runs.
    let text = body.json_text()?;
    let key = cache::key(backends.cache().hashing(), &route.name, &scope, text)?;
    let wish = Wish::of(&session.req_header().headers);
    let mut hit = match wish {
        Wish::Use => backends.cache().get(&key).await,
        Wish::Refresh | Wish::Bypass => None,
    };
    hit = hit.filter(|e| answers(e, body.stream));
    let exact = hit.is_some();
    let (mut score, mut probe) = (None, None);
    if let (None, Some(sem), Wish::Use | Wish::Refresh) = (&hit, &settings.semantic, wish) {
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

/// Answer from `entry`: the `chat.completion` as is, or replayed as a stream.
pub async fn answer(
    session: &mut Session,
    reply: Reply<'_>,
    entry: Arc<Entry>,
    stream: bool,
    include_usage: bool,
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
    if !stream {
        let bytes = match respond {
            Some(policy) => policy.whole(&entry.completion),
            None => entry.completion.clone(),
        };
        super::respond::json_with(session, 200, bytes, request_id, extra_headers)
            .await
            .map_err(abort)?;
        return Ok(200);
    }
    let completion: serde_json::Value = serde_json::from_slice(&entry.completion)
        .map_err(|e| GatewayError::Internal(format!("a cached answer: {e}")))?;
    let mut events = Bytes::from(cache::replay_sse(&completion, include_usage));
    if let Some(policy) = respond {
        events = filter_replay(policy, &events);
    }
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

/// A replayed stream through the answer's policies; a violation ends it with the closing
/// chunk, the error event and `[DONE]`, as a fresh stream.
fn filter_replay(policy: &crate::policy::restore::ResponsePolicy, events: &Bytes) -> Bytes {
    use crate::policy::restore::Filtered;
    let mut filter = policy.stream();
    let mut out = Vec::new();
    for step in [filter.push(events), filter.finish()] {
        match step {
            Filtered::Pass(b) => out.extend_from_slice(&b),
            Filtered::Blocked(b) => {
                out.extend_from_slice(&b);
                out.extend_from_slice(&super::pipe::content_filter_end(
                    crate::protocol::ClientProtocol::OpenAi,
                ));
                break;
            }
        }
    }
    out.into()
}

/// The answer to keep and whether it calls tools, if it may be kept: a whole answer as it
/// was sent (checked without a JSON tree, in the usage meter's pass when that read these
/// bytes), a stream assembled into one.
fn kept_answer(
    sent: Vec<u8>,
    attempts: &AttemptLog,
    settings: &cache::RouteCache,
    stream: bool,
) -> Option<(Bytes, bool)> {
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
    let Some((completion, tool_calls)) = kept_answer(sent, attempts, settings, body.stream) else {
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
}
