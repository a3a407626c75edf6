//! Structure-aware inputs for the fuzz targets' property tests: fixtures and templates
//! mutated as JSON trees, SSE event lists and YAML lines, then as text (huge and odd
//! numbers, truncation, invalid UTF-8, deep nesting, stray bytes).

use super::XorShift;
use serde_json::{Map, Value};

macro_rules! fixture {
    ($name:literal) => {
        include_str!(concat!("../../tests/fixtures/", $name))
    };
}

/// OpenAI chat requests (including Anthropic- and Gemini-bound ones).
pub(super) const OPENAI_REQUESTS: &[&str] = &[
    fixture!("anthropic/client_request.json"),
    fixture!("anthropic/tool_client_request.json"),
    fixture!("anthropic/tool_followup_client_request.json"),
    fixture!("gemini/client_request.json"),
    fixture!("gemini/tool_client_request.json"),
    fixture!("anthropic/reverse_expected_upstream_request.json"),
    r#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
    r#"{"stream_options":{"include_usage":false},"model":"m","stream":true,"max_tokens":5}"#,
    r##"{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/png;base64,iVBORw0KGgo="}},{"type":"input_audio","input_audio":{"data":"AAAA","format":"wav"}}]}],"response_format":{"type":"json_schema","json_schema":{"name":"x","schema":{"type":"object","properties":{"a":{"type":["string","null"],"anyOf":[{"$ref":"#/$defs/a"}]}}}}},"tool_choice":{"type":"function","function":{"name":"f"}}}"##,
];

/// Anthropic Messages requests.
pub(super) const ANTHROPIC_REQUESTS: &[&str] = &[
    fixture!("anthropic/reverse_client_request.json"),
    fixture!("anthropic/expected_upstream_request.json"),
    fixture!("anthropic/tool_expected_upstream_request.json"),
    fixture!("anthropic/tool_followup_expected_upstream_request.json"),
    r#"{"model":"claude","max_tokens":10,"system":[{"type":"text","text":"s"}],"thinking":{"type":"enabled","budget_tokens":1024},"messages":[{"role":"assistant","content":[{"type":"thinking","thinking":"t","signature":"x"},{"type":"tool_use","id":"t1","name":"f","input":{}}]},{"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","content":[{"type":"text","text":"r"}],"is_error":true},{"type":"image","source":{"type":"base64","media_type":"image/png","data":"AAAA"}}]}]}"#,
];

/// OpenAI chat and embeddings responses.
pub(super) const OPENAI_RESPONSES: &[&str] = &[
    fixture!("anthropic/expected_client_response.json"),
    fixture!("anthropic/tool_expected_client_response.json"),
    fixture!("anthropic/reverse_upstream_response.json"),
    fixture!("gemini/expected_client_response.json"),
    fixture!("gemini/tool_expected_client_response.json"),
    fixture!("gemini/embeddings_expected_client_response.json"),
    r#"{"error":{"message":"bad key sk-123","type":"invalid_request_error","code":"invalid_api_key"}}"#,
    r#"{"usage":{"prompt_tokens":18446744073709551615,"completion_tokens":1.5e300,"total_tokens":"7","prompt_tokens_details":{"cached_tokens":-3},"completion_tokens_details":{"reasoning_tokens":null}}}"#,
];

/// Anthropic Messages responses and errors.
pub(super) const ANTHROPIC_RESPONSES: &[&str] = &[
    fixture!("anthropic/upstream_response.json"),
    fixture!("anthropic/tool_upstream_response.json"),
    fixture!("anthropic/reverse_expected_client_response.json"),
    r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
];

/// Gemini responses and errors.
pub(super) const GEMINI_RESPONSES: &[&str] = &[
    fixture!("gemini/upstream_response.json"),
    fixture!("gemini/tool_upstream_response.json"),
    r#"{"error":{"code":400,"message":"API key not valid","status":"INVALID_ARGUMENT","details":[]}}"#,
    r#"{"promptFeedback":{"blockReason":"SAFETY"},"usageMetadata":{"promptTokenCount":4}}"#,
];

pub(super) const EMBEDDING_REQUESTS: &[&str] = &[
    fixture!("gemini/embeddings_client_request.json"),
    r#"{"model":"e","input":"hello","encoding_format":"base64","dimensions":3}"#,
    r#"{"model":"e","input":[[1,2,3]]}"#,
];

pub(super) const EMBEDDING_RESPONSES: &[&str] = &[
    fixture!("gemini/embeddings_upstream_response.json"),
    r#"{"embeddings":[{"values":[0.5,-1e38,3.4028235e38,1e-45]},{"values":[]}]}"#,
];

/// OpenAI chat streams.
pub(super) const OPENAI_STREAMS: &[&str] = &[
    fixture!("anthropic/reverse_upstream_stream.sse"),
    fixture!("anthropic/expected_client_stream.sse"),
    fixture!("anthropic/tool_expected_client_stream.sse"),
    fixture!("gemini/expected_client_stream.sse"),
    fixture!("gemini/tool_expected_client_stream.sse"),
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"reasoning_content\":\"hm\"}}]}\n\ndata: {\"choices\":[{\"index\":0,\"text\":\"legacy\"}],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4,\"total_tokens\":7}}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}\n\ndata: {\"error\":{\"message\":\"x\"}}\n\ndata: [DONE]\n\n",
];

/// Anthropic streams.
pub(super) const ANTHROPIC_STREAMS: &[&str] = &[
    fixture!("anthropic/upstream_stream.sse"),
    fixture!("anthropic/tool_upstream_stream.sse"),
    fixture!("anthropic/thinking_upstream_stream.sse"),
    fixture!("anthropic/reverse_expected_client_stream.sse"),
];

/// Gemini streams.
pub(super) const GEMINI_STREAMS: &[&str] = &[
    fixture!("gemini/upstream_stream.sse"),
    fixture!("gemini/tool_upstream_stream.sse"),
];

const KEYS: &[&str] = &[
    "model",
    "messages",
    "role",
    "content",
    "type",
    "text",
    "tool_calls",
    "tools",
    "function",
    "name",
    "arguments",
    "id",
    "index",
    "usage",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "prompt_tokens_details",
    "completion_tokens_details",
    "choices",
    "delta",
    "message",
    "finish_reason",
    "stream",
    "stream_options",
    "include_usage",
    "max_tokens",
    "max_completion_tokens",
    "system",
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
    "stop_reason",
    "content_block",
    "partial_json",
    "thinking",
    "signature",
    "input",
    "tool_use_id",
    "tool_choice",
    "image_url",
    "url",
    "source",
    "data",
    "candidates",
    "parts",
    "functionCall",
    "functionResponse",
    "args",
    "usageMetadata",
    "promptTokenCount",
    "candidatesTokenCount",
    "thoughtsTokenCount",
    "cachedContentTokenCount",
    "finishReason",
    "error",
    "embeddings",
    "values",
    "encoding_format",
    "dimensions",
    "reasoning_content",
    "response_format",
    "properties",
    "items",
    "$ref",
    "anyOf",
];

const STRINGS: &[&str] = &[
    "",
    "x",
    "user",
    "assistant",
    "system",
    "developer",
    "tool",
    "model",
    "text",
    "image_url",
    "function",
    "tool_use",
    "tool_result",
    "thinking",
    "redacted_thinking",
    "input_json_delta",
    "text_delta",
    "message_start",
    "content_block_start",
    "content_block_delta",
    "message_delta",
    "message_stop",
    "stop",
    "length",
    "tool_calls",
    "end_turn",
    "max_tokens",
    "STOP",
    "SAFETY",
    "object",
    "string",
    "base64",
    "float",
    "data:image/png;base64,iVBORw0KGgo=",
    "data:,",
    "data:image/png;base64,@@@",
    "https://example.com/a.png",
    "{\"a\":1}",
    "{",
    "[DONE]",
    "é世🚀",
    "\u{0}",
    "\u{2028}\u{feff}",
    "\\ud800",
    "12",
    "-1",
];

const NUMBERS: &[&str] = &[
    "0",
    "-0",
    "1",
    "-1",
    "1.5",
    "1e2",
    "1E400",
    "-1e400",
    "0.0000001",
    "4294967296",
    "9007199254740993",
    "18446744073709551615",
    "18446744073709551616",
    "-9223372036854775808",
    "-9223372036854775809",
    "99999999999999999999999999999999",
];

/// Bytes that are odd in JSON, SSE or UTF-8.
const SPICE: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b",",
    b":",
    b"\\",
    b"\\u",
    b"null",
    b"\n",
    b"\r",
    b"\r\n",
    b"\n\n",
    b"data: ",
    b"event: ",
    b"\xff",
    b"\xc3",
    b"\xe4\xb8",
    b"\xEF\xBB\xBF",
    b"\x00",
    b"\\ud83d",
];

fn number(rng: &mut XorShift) -> Value {
    let text = rng.pick(NUMBERS);
    serde_json::from_str(text).unwrap_or(Value::Null)
}

/// A random value, nested up to `depth`.
pub(super) fn value(rng: &mut XorShift, depth: usize) -> Value {
    match rng.below(if depth == 0 { 5 } else { 7 }) {
        0 => Value::Null,
        1 => Value::Bool(rng.one_in(2)),
        2 => number(rng),
        3 | 4 => Value::String(rng.pick(STRINGS).to_owned()),
        5 => Value::Array((0..rng.below(4)).map(|_| value(rng, depth - 1)).collect()),
        _ => Value::Object(
            (0..rng.below(4))
                .map(|_| (rng.pick(KEYS).to_owned(), value(rng, depth - 1)))
                .collect(),
        ),
    }
}

/// Change one node of `v`: replaced, a member removed or added, an element removed or
/// repeated, or wrapped.
pub(super) fn mutate_value(rng: &mut XorShift, v: &mut Value) {
    match v {
        Value::Object(m) if !m.is_empty() && !rng.one_in(3) => {
            let key = m
                .keys()
                .nth(rng.below(m.len()))
                .cloned()
                .unwrap_or_default();
            if let Some(child) = m.get_mut(&key) {
                return mutate_value(rng, child);
            }
        }
        Value::Array(a) if !a.is_empty() && !rng.one_in(3) => {
            let i = rng.below(a.len());
            return mutate_value(rng, &mut a[i]);
        }
        _ => {}
    }
    match (rng.below(4), &mut *v) {
        (0, Value::Object(m)) if !m.is_empty() => {
            let key = m
                .keys()
                .nth(rng.below(m.len()))
                .cloned()
                .unwrap_or_default();
            m.remove(&key);
        }
        (1, Value::Object(m)) => {
            m.insert(rng.pick(KEYS).to_owned(), value(rng, 2));
        }
        (0, Value::Array(a)) if !a.is_empty() => {
            a.remove(rng.below(a.len()));
        }
        (1, Value::Array(a)) if !a.is_empty() => {
            let e = a[rng.below(a.len())].clone();
            a.push(e);
        }
        (2, _) => {
            let inner = std::mem::take(v);
            *v = if rng.one_in(2) {
                Value::Array(vec![inner])
            } else {
                Value::Object(Map::from_iter([(rng.pick(KEYS).to_owned(), inner)]))
            };
        }
        _ => *v = value(rng, 2),
    }
}

/// Text-level damage: odd numbers for numbers, stray bytes, removed or repeated spans.
pub(super) fn mutate_bytes(rng: &mut XorShift, v: &mut Vec<u8>) {
    for _ in 0..1 + rng.below(3) {
        if v.is_empty() {
            v.extend_from_slice(SPICE[rng.below(SPICE.len())]);
            continue;
        }
        let at = rng.below(v.len());
        match rng.below(6) {
            0 => v[at] = rng.next() as u8,
            1 => {
                let end = (at + 1 + rng.below(8)).min(v.len());
                v.drain(at..end);
            }
            2 => {
                let end = (at + 1 + rng.below(16)).min(v.len());
                let span = v[at..end].to_vec();
                v.splice(at..at, span);
            }
            3 => {
                // A number (or any digit run) replaced by an odd one.
                if let Some(start) = v[at..].iter().position(u8::is_ascii_digit) {
                    let start = at + start;
                    let len = v[start..].iter().take_while(|b| b.is_ascii_digit()).count();
                    let n = rng.pick(NUMBERS).as_bytes().to_vec();
                    v.splice(start..start + len, n);
                }
            }
            _ => {
                let s = SPICE[rng.below(SPICE.len())];
                v.splice(at..at, s.iter().copied());
            }
        }
    }
}

/// Smaller: arrays cut to a window of one or two elements, long strings to a prefix (a
/// small input keeps a case cheap in debug builds; the shapes stay).
fn shrink(rng: &mut XorShift, v: &mut Value) {
    match v {
        Value::Array(a) => {
            if a.len() > 2 {
                let start = rng.below(a.len() - 1);
                let end = start + 1 + rng.below(2);
                a.truncate(end);
                a.drain(..start);
            }
            for e in a {
                shrink(rng, e);
            }
        }
        Value::Object(m) => {
            for (_, e) in m.iter_mut() {
                shrink(rng, e);
            }
        }
        Value::String(s) if s.len() > 24 => {
            let mut end = rng.below(24);
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            s.truncate(end);
        }
        _ => {}
    }
}

/// Nesting around `inner`: deep enough at times to pass serde_json's limit of 128.
fn nest(rng: &mut XorShift, inner: &[u8]) -> Vec<u8> {
    let depth = [2, 40, 127, 129, 300][rng.below(5)];
    let (open, close): (&[u8], &[u8]) = if rng.one_in(2) {
        (b"[", b"]")
    } else {
        (b"{\"content\":", b"}")
    };
    let mut v = open.repeat(depth);
    v.extend_from_slice(inner);
    v.extend_from_slice(&close.repeat(depth));
    v
}

/// Parsed seeds, parsed once.
pub(super) struct Seeds {
    texts: Vec<&'static str>,
    values: Vec<Option<Value>>,
}

impl Seeds {
    pub(super) fn new(groups: &[&[&'static str]]) -> Self {
        let texts: Vec<&'static str> = groups.concat();
        let values = texts.iter().map(|t| serde_json::from_str(t).ok()).collect();
        Seeds { texts, values }
    }

    /// A JSON-ish input near a seed: as is, with tree mutations, then maybe text damage,
    /// truncation or deep nesting; now and then a random value.
    pub(super) fn json(&self, rng: &mut XorShift) -> Vec<u8> {
        let i = rng.below(self.texts.len());
        let mut out = if rng.one_in(16) {
            serde_json::to_vec(&value(rng, 4)).unwrap_or_default()
        } else if rng.one_in(8) {
            self.texts[i].as_bytes().to_vec()
        } else {
            match self.values[i].clone() {
                Some(mut v) => {
                    if !rng.one_in(4) {
                        shrink(rng, &mut v);
                    }
                    for _ in 0..1 + rng.below(3) {
                        mutate_value(rng, &mut v);
                    }
                    serde_json::to_vec(&v).unwrap_or_default()
                }
                None => self.texts[i].as_bytes().to_vec(),
            }
        };
        if rng.one_in(3) {
            mutate_bytes(rng, &mut out);
        }
        if rng.one_in(10) {
            out.truncate(rng.below(out.len() + 1));
        }
        if rng.one_in(40) {
            out = nest(rng, &out);
        }
        out
    }
}

/// One SSE event: type and data lines.
type Event = (Option<String>, String);

/// SSE streams near seed streams.
pub(super) struct Streams {
    streams: Vec<Vec<(Event, Option<Value>)>>,
}

const EVENT_TYPES: &[&str] = &[
    "message_start",
    "content_block_start",
    "content_block_delta",
    "content_block_stop",
    "message_delta",
    "message_stop",
    "ping",
    "error",
    "",
];

impl Streams {
    pub(super) fn new(groups: &[&[&str]]) -> Self {
        let streams = groups
            .concat()
            .iter()
            .map(|t| {
                let mut p = crate::sse::SseParser::new();
                let mut events = Vec::new();
                p.push(t.as_bytes(), |e| events.push(e));
                p.finish(|e| events.push(e));
                events
                    .into_iter()
                    .map(|e| {
                        let v = serde_json::from_str(&e.data).ok();
                        ((e.event, e.data), v)
                    })
                    .collect()
            })
            .collect();
        Streams { streams }
    }

    /// A stream near a seed: events mutated, dropped, repeated, swapped or added; written
    /// with random line ends and field forms; then maybe damaged or cut.
    pub(super) fn stream(&self, rng: &mut XorShift) -> Vec<u8> {
        let seed = &self.streams[rng.below(self.streams.len())];
        // Mostly a window of a few events (small inputs keep a case cheap in debug builds),
        // sometimes the whole stream.
        let seed = if rng.one_in(32) {
            &seed[..]
        } else {
            let start = rng.below(seed.len());
            let end = (start + 1 + rng.below(2)).min(seed.len());
            &seed[start..end]
        };
        let events = mutated(seed, rng);
        written(&events, rng)
    }
}

/// The events of a seed window, now and then dropped, repeated, renamed, replaced, mutated
/// or swapped with the next.
fn mutated(seed: &[(Event, Option<Value>)], rng: &mut XorShift) -> Vec<Event> {
    let mut events: Vec<Event> = Vec::with_capacity(seed.len() + 2);
    let odds = [2, 4, 8, 1000][rng.below(4)];
    for ((event, data), v) in seed {
        if rng.one_in(odds) {
            match rng.below(6) {
                0 => continue,
                1 => {
                    events.push((event.clone(), data.clone()));
                    events.push((event.clone(), data.clone()));
                }
                2 => {
                    let name = rng.pick(EVENT_TYPES);
                    events.push(((!name.is_empty()).then(|| name.to_owned()), data.clone()));
                }
                3 => events.push((
                    None,
                    rng.pick(&[
                        "[DONE]",
                        "{}",
                        "null",
                        "{\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}",
                        "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"x\"}}",
                        "{\"error\":{\"code\":500,\"message\":\"x\"}}",
                    ])
                    .to_owned(),
                )),
                _ => {
                    let mut v = v.clone().unwrap_or_else(|| value(rng, 3));
                    mutate_value(rng, &mut v);
                    events.push((event.clone(), v.to_string()));
                }
            }
        } else {
            events.push((event.clone(), data.clone()));
        }
    }
    if events.len() > 1 && rng.one_in(odds) {
        let i = rng.below(events.len() - 1);
        events.swap(i, i + 1);
    }
    events
}

/// Events written as SSE with random line ends and field forms (comments, a BOM, data split
/// over two lines); then maybe damaged or cut.
fn written(events: &[Event], rng: &mut XorShift) -> Vec<u8> {
    let eol: &[u8] = match rng.below(8) {
        0 => b"\r\n",
        1 => b"\r",
        _ => b"\n",
    };
    let mut out = Vec::new();
    if rng.one_in(20) {
        out.extend_from_slice(b"\xEF\xBB\xBF");
    }
    for (event, data) in events {
        if rng.one_in(10) {
            out.extend_from_slice(b": keep-alive");
            out.extend_from_slice(eol);
        }
        if let Some(name) = event {
            out.extend_from_slice(b"event: ");
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(eol);
        }
        let data = data.as_bytes();
        // Now and then the data split over two `data:` lines (joined with `\n`).
        let cut = if rng.one_in(10) {
            rng.below(data.len() + 1)
        } else {
            data.len()
        };
        for part in [&data[..cut], &data[cut..]] {
            if part.is_empty() && cut != 0 {
                continue;
            }
            out.extend_from_slice(if rng.one_in(6) { b"data:" } else { b"data: " });
            out.extend_from_slice(part);
            out.extend_from_slice(eol);
        }
        out.extend_from_slice(eol);
    }
    if rng.one_in(4) {
        mutate_bytes(rng, &mut out);
    }
    if rng.one_in(6) {
        out.truncate(rng.below(out.len() + 1));
    }
    out
}

/// Raw SSE-ish bytes from a small alphabet (for the parser itself).
pub(super) fn sse_soup(rng: &mut XorShift) -> Vec<u8> {
    const ALPHABET: &[&[u8]] = &[
        b"data:",
        b"data: ",
        b"data",
        b"event:",
        b"event: x",
        b"id: 1",
        b"retry: 5",
        b":",
        b": c",
        b"\r",
        b"\n",
        b"\r\n",
        b"\n\n",
        b" ",
        b"x",
        b"{}",
        b"[DONE]",
        b"\xEF\xBB\xBF",
        b"\xEF\xBB",
        b"\xff",
        b"\xc3",
        b"\xe4\xb8\x96",
        b"\x00",
    ];
    let mut input = Vec::new();
    for _ in 0..rng.below(48) {
        if rng.one_in(6) {
            input.push(rng.next() as u8);
        } else {
            input.extend_from_slice(ALPHABET[rng.below(ALPHABET.len())]);
        }
    }
    input
}

/// Config templates, each small and about one area (a case costs a YAML parse and a build:
/// a few hundred microseconds in debug builds); the last one, with rate limits (the
/// costliest to build), is drawn least.
pub(super) const CONFIGS: &[&str] = &[
    r#"
listeners:
  proxy: [{address: "127.0.0.1:8080"}]
providers:
  - name: mock
    type: openai-compatible
    base_url: http://127.0.0.1:8090/v1
    api_keys: ["k1", {name: second, key: "k2"}]
    model_mapping: {"mock-gpt-4o": "gpt-4o-2024", "*": "fallback"}
routes:
  - name: default
    models:
      - model: "mock-*"
        targets: [{provider: mock}]
"#,
    r#"
listeners:
  proxy: [{address: "[::1]:8080"}]
providers:
  - name: an
    type: anthropic
    base_url: https://127.0.0.1:9
    api_keys: [{name: a, key: ka, weight: 2}, kb]
    model_mapping: {"~^claude-(.*)$": "claude-sonnet-4-5"}
    timeouts: {connect: 1s, read: 30s, write: 5s, idle: 60s}
    health: {failure_threshold: 2, success_threshold: 1, check_interval: 10s, check_timeout: 2s, check_model: m, failures: [connect, timeout, "429", 5xx]}
  - name: ge
    type: gemini
    base_url: http://127.0.0.1:9
    api_keys: [kd]
    http2: true
routes:
  - name: main
    hosts: [api.example.com, "*.example.org"]
    path_prefix: /api/v1
    all_keys_down: try_anyway
    retry: {attempts: 3, per_target: 2, deadline: 10s}
    models:
      - model: "~^claude"
        targets: [{provider: an, weight: 3}, {provider: ge, model: gemini-2.5-flash, weight: 1}]
"#,
    r#"
listeners:
  proxy: [{address: "127.0.0.1:8080"}]
providers:
  - {name: az, type: azure, base_url: "http://127.0.0.1:9", api_version: "2024-06-01", api_keys: [ke], models: [gpt-4o]}
consumers:
  - {name: alice, credentials: [sk-alice]}
  - {name: bob, credentials: [sk-bob, "${TOLLGATE_FUZZ_UNSET}"]}
auth:
  sources: [bearer, "header:x-api-key", "query:api_key"]
quota: {consumers: [alice], admin_consumer: bob, reserve_max_tokens: true}
store: {path: /nonexistent/tollgate-fuzz.db, flush_interval: 50ms}
metrics: {consumer_labels: true, max_consumer_series: 10}
trusted_proxies: [127.0.0.1/32, "::1/128"]
routes:
  - name: main
    auth: {required: true, allow: [alice, bob]}
    models: [{model: "*", targets: [{provider: az}]}]
"#,
    r#"
server: {threads: 2, grace_period_seconds: 1, upstream_keepalive_pool_size: 8, daemon: false}
listeners:
  proxy: [{address: "127.0.0.1:8080"}]
  admin: {address: "127.0.0.1:8001", token: admin-token}
limits: {max_body_bytes: 1048576}
access_log: {path: "off", buffer_lines: 16}
redis: {url: "redis://127.0.0.1:1", prefix: tg, timeout: 100ms, on_error: closed}
providers:
  - {name: oa, type: openai, api_keys: [k]}
routes:
  - {name: r, models: [{model: "gpt-*", targets: [{provider: oa}]}]}
"#,
    r#"
listeners:
  proxy: [{address: "127.0.0.1:8080"}]
providers:
  - {name: oa, type: openai, base_url: "http://127.0.0.1:9/v1", api_keys: [k]}
consumers:
  - {name: alice, credentials: [sk-alice]}
rate_limits:
  - {name: c, key: consumer, window: minute, tokens: 1000, requests: 10}
  - {name: t, key: "header:x-team", values: [red], window: hour, input_tokens: 100, routes: [main]}
routes:
  - {name: main, models: [{model: "*", targets: [{provider: oa}]}]}
"#,
];

const YAML_VALUES: &[&str] = &[
    "0",
    "-1",
    "1",
    "4294967296",
    "18446744073709551616",
    "1.5",
    ".inf",
    ".nan",
    "0x10",
    "~",
    "null",
    "''",
    "\"\"",
    "[]",
    "{}",
    "[a, b]",
    "{a: 1}",
    "true",
    "yes",
    "0s",
    "1ms",
    "1x",
    "99999999999999d",
    "10s",
    "\"~(\"",
    "\"~(a|b)*\"",
    "\"*\"",
    "\"a*b*\"",
    "\"${TOLLGATE_FUZZ_UNSET}\"",
    "\"${HOME}\"",
    "\"${\"",
    "\"$${X}\"",
    "header:x-team",
    "\"header:\"",
    "\"header:bad name\"",
    "query:k",
    "consumer",
    "route",
    "ip",
    "cidr",
    "provider_key",
    "second",
    "day",
    "week",
    "0.0.0.0:0",
    "\"[::1]:80\"",
    "127.0.0.1:99999",
    "http://[::1]:1/v1",
    "https://example.com",
    "http://",
    "ftp://x",
    "http://h:0/",
    "openai",
    "anthropic",
    "gemini",
    "azure",
    "deepseek",
    "closed",
    "open",
    "redis://127.0.0.1:1",
    "10.0.0.0/8",
    "300.1.1.1/40",
    "::/0",
    "fail_fast",
    "é世🚀",
    "&anchor x",
    "*anchor",
    "!!binary aGk=",
    "!custom x",
    "|\n  block",
    "\"\\u0000\"",
];

const YAML_KEYS: &[&str] = &[
    "threads",
    "max_body_bytes",
    "address",
    "token",
    "tls",
    "name",
    "type",
    "base_url",
    "api_keys",
    "models",
    "model",
    "targets",
    "provider",
    "weight",
    "path_prefix",
    "hosts",
    "retry",
    "attempts",
    "per_target",
    "deadline",
    "auth",
    "required",
    "allow",
    "key",
    "values",
    "window",
    "tokens",
    "requests",
    "cidrs",
    "redis",
    "url",
    "on_error",
    "timeout",
    "quota",
    "consumers",
    "credentials",
    "sources",
    "timeouts",
    "connect",
    "health",
    "ca_file",
    "sni",
    "http2",
    "connect_to",
    "api_version",
    "unknown_field",
];

/// A YAML text near a template: lines removed, repeated, swapped or re-indented, values
/// replaced, members added; now and then text damage.
pub(super) fn yaml(rng: &mut XorShift) -> Vec<u8> {
    let last = CONFIGS.len() - 1;
    let template = CONFIGS[if rng.one_in(10) {
        last
    } else {
        rng.below(last)
    }];
    let mut lines: Vec<String> = template.lines().map(str::to_owned).collect();
    for _ in 0..1 + rng.below(4) {
        if lines.is_empty() {
            break;
        }
        let i = rng.below(lines.len());
        match rng.below(8) {
            0 => {
                lines.remove(i);
            }
            1 => {
                let l = lines[i].clone();
                lines.insert(i, l);
            }
            2 if i + 1 < lines.len() => lines.swap(i, i + 1),
            3 => {
                let l = &lines[i];
                lines[i] = if rng.one_in(2) {
                    format!("  {l}")
                } else {
                    l.strip_prefix("  ").unwrap_or(l).to_owned()
                };
            }
            4 => {
                let indent = lines[i].len() - lines[i].trim_start().len();
                let (k, v) = (rng.pick(YAML_KEYS), rng.pick(YAML_VALUES));
                lines.insert(i, format!("{}{k}: {v}", " ".repeat(indent)));
            }
            _ => {
                // The value after the first `: ` (or `- `), or inside a flow collection.
                let l = &lines[i];
                let v = rng.pick(YAML_VALUES);
                let at = l
                    .find(": ")
                    .map(|p| p + 2)
                    .or_else(|| l.find("- ").map(|p| p + 2));
                if let Some(at) = at {
                    let end = if rng.one_in(2) {
                        l.len()
                    } else {
                        l[at..].find([',', '}', ']']).map_or(l.len(), |e| at + e)
                    };
                    lines[i] = format!("{}{v}{}", &l[..at], &l[end..]);
                }
            }
        }
    }
    let mut out = lines.join("\n").into_bytes();
    if rng.one_in(10) {
        mutate_bytes(rng, &mut out);
    }
    out
}

/// A `multipart/form-data` body delimited by `boundary`: text fields the gateway reads
/// (`model`, `stream`, `n`, `response_format`, `prompt`) and others, files whose bytes hold
/// near-boundaries and CRLFs, then mutated: cut short, bytes changed, parts repeated.
pub fn multipart_form(rng: &mut XorShift, boundary: &str) -> Vec<u8> {
    const NAMES: [&str; 8] = [
        "model",
        "stream",
        "n",
        "response_format",
        "prompt",
        "language",
        "file",
        "image",
    ];
    const VALUES: [&str; 9] = [
        "whisper-1",
        "true",
        "2",
        "srt",
        "",
        "é世🚀",
        "x\r\n--",
        "--fzB0undar",
        "abc",
    ];
    let mut out = Vec::new();
    if rng.one_in(8) {
        out.extend_from_slice(b"preamble\r\n");
    }
    let parts = rng.below(6);
    for i in 0..parts {
        let name = if i == 0 && !rng.one_in(6) {
            "model"
        } else {
            NAMES[rng.below(NAMES.len())]
        };
        out.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        let file = matches!(name, "file" | "image") || rng.one_in(10);
        let head = if file {
            format!("Content-Disposition: form-data; name=\"{name}\"; filename=\"a.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n")
        } else {
            format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n")
        };
        out.extend_from_slice(head.as_bytes());
        if file {
            for _ in 0..rng.below(64) {
                out.push((rng.next() % 256) as u8);
            }
            out.extend_from_slice(VALUES[rng.below(VALUES.len())].as_bytes());
        } else if name == "n" && rng.one_in(2) {
            out.extend_from_slice((rng.next() % 20).to_string().as_bytes());
        } else {
            out.extend_from_slice(VALUES[rng.below(VALUES.len())].as_bytes());
        }
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    match rng.below(6) {
        0 if !out.is_empty() => out.truncate(rng.below(out.len())),
        1 if !out.is_empty() => {
            let at = rng.below(out.len());
            out[at] = (rng.next() % 256) as u8;
        }
        _ => {}
    }
    out
}
