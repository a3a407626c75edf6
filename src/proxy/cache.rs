//! The cache stage (`crate::cache`): after admission and budgets, a chat-completion request
//! on a route with `cache:` is looked up by its key; a hit is answered here (as JSON or as
//! a replayed stream), a miss goes on to the attempts and its answer is kept if complete.

use super::exchange::AttemptLog;
use super::pipeline::Failure;
use crate::body::RequestBody;
use crate::cache::{self, Entry, Verdict, Wish};
use crate::error::GatewayError;
use crate::metrics::METRICS;
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
    key: String,
    scope: String,
    /// The entry that answered (a hit).
    pub hit: Option<Arc<Entry>>,
    /// A hit charges the consumer's limits, quota and budgets.
    pub charge: bool,
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
    let key = cache::key(&route.name, &scope, &body.bytes)?;
    let wish = Wish::of(&session.req_header().headers);
    let hit = match wish {
        Wish::Use => backends.cache().get(&key).await,
        Wish::Refresh | Wish::Bypass => None,
    };
    let verdict = match (wish, &hit) {
        (_, Some(_)) => Verdict::Hit,
        (Wish::Use, None) => Verdict::Miss,
        (Wish::Refresh, _) => Verdict::Refresh,
        (Wish::Bypass, _) => Verdict::Bypass,
    };
    METRICS
        .cache_lookups
        .with_label_values(&[route.name.as_str(), verdict.as_str()])
        .inc();
    Some(CacheState {
        verdict,
        key,
        scope,
        hit,
        charge: settings.charge,
    })
}

/// What answering from the cache writes to and with.
pub struct Reply<'a> {
    pub config: &'a Gateway,
    pub attempts: &'a mut AttemptLog,
    pub request_id: &'a str,
    pub extra_headers: &'a [(http::HeaderName, String)],
}

/// Answer from `entry`: the `chat.completion` as is, or replayed as a stream.
pub async fn answer(
    session: &mut Session,
    reply: Reply<'_>,
    entry: Arc<Entry>,
    body: &RequestBody,
) -> Result<u16, Failure> {
    let Reply {
        config,
        attempts,
        request_id,
        extra_headers,
    } = reply;
    if let Some(provider) = config.provider(&entry.provider) {
        // No key served it: `key_index` names none.
        attempts.chosen = Some(super::exchange::Chosen {
            provider: provider.clone(),
            key_index: usize::MAX,
            upstream_model: entry.upstream_model.clone(),
        });
    }
    attempts.outcome.usage = Some(entry.usage());
    let abort = |cause| Failure::Abort {
        error: GatewayError::ClientClosed,
        cause,
        sent: Some(200),
    };
    if !body.stream {
        let bytes = Bytes::from(entry.completion.clone());
        super::respond::json_with(session, 200, bytes, request_id, extra_headers)
            .await
            .map_err(abort)?;
        return Ok(200);
    }
    let completion: serde_json::Value = serde_json::from_str(&entry.completion)
        .map_err(|e| GatewayError::Internal(format!("a cached answer: {e}")))?;
    let include_usage = serde_json::from_slice::<serde_json::Value>(&body.bytes)
        .ok()
        .and_then(|v| v["stream_options"]["include_usage"].as_bool())
        .unwrap_or(false);
    let events = Bytes::from(cache::replay_sse(&completion, include_usage));
    let header = (|| {
        let mut h = ResponseHeader::build(200, Some(4 + extra_headers.len()))?;
        for (name, value) in extra_headers {
            h.insert_header(name.clone(), value.as_str())?;
        }
        h.insert_header(http::header::CONTENT_TYPE, "text/event-stream")?;
        h.insert_header(http::header::CACHE_CONTROL, "no-cache")?;
        h.insert_header(super::X_REQUEST_ID, request_id)?;
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

/// Keep a delivered answer (the bytes the client was sent) if it is complete and may be.
pub async fn keep(
    state: &CacheState,
    backends: &Backends,
    attempts: &AttemptLog,
    route: &Route,
    body: &RequestBody,
    status: u16,
) {
    let (Some(settings), Some(sent)) = (&route.cache, attempts.outcome.sent.as_deref()) else {
        return;
    };
    let stream = body.stream;
    if status != 200 || state.verdict == Verdict::Bypass || state.hit.is_some() {
        return;
    }
    let completion = if stream {
        cache::assemble(sent)
    } else {
        serde_json::from_slice::<serde_json::Value>(sent)
            .ok()
            .filter(|v| v["object"] == "chat.completion")
    };
    let Some(completion) = completion.filter(|c| cache::keepable(c, settings.store_truncated))
    else {
        return;
    };
    let (Some(usage), Some(chosen)) = (attempts.outcome.usage, &attempts.chosen) else {
        return;
    };
    let entry = Entry {
        completion: completion.to_string(),
        input_tokens: usage.input_tokens,
        output_tokens: usage.output_tokens,
        cached_tokens: usage.cached_input_tokens,
        reasoning_tokens: usage.reasoning_tokens,
        provider: chosen.provider.name.clone(),
        upstream_model: chosen.upstream_model.clone(),
        route: route.name.clone(),
        model: body.model.clone(),
        scope: state.scope.clone(),
    };
    if backends
        .cache()
        .put(state.key.clone(), entry, settings.ttl)
        .await
    {
        METRICS
            .cache_stored
            .with_label_values(&[route.name.as_str()])
            .inc();
    }
}
