//! The targets. `check_*` run one input with a seeded generator for the other choices; the
//! entry point of the same name without the prefix splits raw fuzzer bytes (see
//! [`split`](super::split)).

use super::{chunks, split, XorShift};
use crate::body::RequestBody;
use crate::error::GatewayError;
use crate::protocol::{ClientProtocol as Client, ANTHROPIC, AZURE, GEMINI, OPENAI};
use crate::proxy::plan;
use crate::proxy::quota_api::quota_op;
use crate::quota::{form, QuotaOp};
use crate::route::{Endpoint, QuotaCall};
use crate::runtime;
use crate::sse::{raw_lines, SseEvent, SseParser};
use crate::translate::{self, EmbeddingsContext, StreamTranslator, TranslateError};
use crate::usage::{estimate_tokens, usage_from_json, StreamMeter, TokenEstimator, Usage};
use bytes::Bytes;
use serde::de::IgnoredAny;
use std::borrow::Cow;

macro_rules! entry_points {
    ($($name:ident => $check:ident),* $(,)?) => {
        $(
            #[doc = concat!("Fuzz entry point: [`", stringify!($check), "`] on raw bytes.")]
            pub fn $name(data: &[u8]) {
                let (mut rng, input) = split(data);
                $check(input, &mut rng);
            }
        )*
        /// Every target, by name (the `cargo fuzz` target names).
        pub const TARGETS: &[(&str, fn(&[u8]))] = &[$((stringify!($name), $name)),*];
    };
}

entry_points! {
    sse => check_sse,
    usage_stream => check_usage_stream,
    usage_json => check_usage_json,
    body => check_body,
    translate_anthropic => check_translate_anthropic,
    translate_anthropic_stream => check_translate_anthropic_stream,
    translate_anthropic_reverse => check_translate_anthropic_reverse,
    translate_anthropic_reverse_stream => check_translate_anthropic_reverse_stream,
    translate_gemini => check_translate_gemini,
    translate_gemini_stream => check_translate_gemini_stream,
    translate_gemini_embed => check_translate_gemini_embed,
    config => check_config,
    quota_api => check_quota_api,
    multipart => check_multipart,
    cache_json => check_cache_json,
}

fn show(bytes: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(bytes)
}

fn is_json(bytes: &[u8]) -> bool {
    serde_json::from_slice::<IgnoredAny>(bytes).is_ok()
}

fn is_json_object(bytes: &[u8]) -> bool {
    is_json(bytes) && bytes.trim_ascii_start().starts_with(b"{")
}

#[track_caller]
fn assert_json_object(bytes: &[u8], what: &str) {
    assert!(
        is_json_object(bytes),
        "{what} is not a JSON object: {}",
        show(bytes)
    );
}

// ---------------------------------------------------------------------------------------
// SSE

/// The events (type, data) of a whole stream by a literal reading of the WHATWG algorithm,
/// line by line: the oracle for [`SseParser`]. The last line counts only if terminated
/// (what [`SseParser::finish`] does).
fn sse_reference(input: &[u8]) -> Vec<(Option<String>, String)> {
    let mut rest = input.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(input);
    let mut out = Vec::new();
    let (mut data, mut has_data, mut event) = (Vec::new(), false, Vec::new());
    while let Some(i) = rest.iter().position(|b| *b == b'\n' || *b == b'\r') {
        let line = &rest[..i];
        let eol = if rest[i] == b'\r' && rest.get(i + 1) == Some(&b'\n') {
            2
        } else {
            1
        };
        rest = &rest[i + eol..];
        if line.is_empty() {
            if has_data {
                let event = (!event.is_empty()).then(|| show(&event).into_owned());
                out.push((event, show(&data).into_owned()));
            }
            data.clear();
            event.clear();
            has_data = false;
            continue;
        }
        if line.first() == Some(&b':') {
            continue;
        }
        let (name, value) = match line.iter().position(|b| *b == b':') {
            Some(c) => {
                let v = &line[c + 1..];
                (&line[..c], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        match name {
            b"data" => {
                if has_data {
                    data.push(b'\n');
                }
                data.extend_from_slice(value);
                has_data = true;
            }
            b"event" => event = value.to_vec(),
            _ => {}
        }
    }
    out
}

fn fields(events: &[SseEvent]) -> Vec<(Option<String>, String)> {
    events
        .iter()
        .map(|e| (e.event.clone(), e.data.clone()))
        .collect()
}

fn raw_of(events: &[SseEvent], tail: &[u8]) -> Vec<u8> {
    let mut v: Vec<u8> = events.iter().flat_map(|e| e.raw.iter().copied()).collect();
    v.extend_from_slice(tail);
    v
}

/// The SSE parser: the events are the reference reading's; the raw bytes of the events and
/// the leftover are the input; any chunking, through any of the three push methods, gives the
/// same events; what is pending is always the rest of the input read so far; the lenient end
/// adds at most the unterminated event.
pub fn check_sse(input: &[u8], rng: &mut XorShift) {
    let mut p = SseParser::new();
    let mut reference = Vec::new();
    p.push(input, |e| reference.push(e));
    let tail = p.finish(|e| reference.push(e));
    assert_eq!(raw_of(&reference, &tail), input, "raw bytes + leftover");
    assert_eq!(fields(&reference), sse_reference(input), "events");
    for e in &reference {
        let joined: Vec<u8> = raw_lines(&e.raw)
            .flat_map(|(line, end)| line.iter().chain(end).copied())
            .collect();
        assert_eq!(joined, e.raw, "raw_lines");
    }

    let mut p = SseParser::new();
    let mut events = Vec::new();
    // Bytes read, bytes of the events dispatched, events checked.
    let (mut read, mut done, mut seen) = (0, 0, 0);
    for c in chunks(input, rng) {
        match rng.below(3) {
            0 => p.push(c, |e| events.push(e)),
            1 => p.push_bytes(&Bytes::copy_from_slice(c), |e| events.push(e)),
            _ => {
                let b = Bytes::copy_from_slice(c);
                p.push_bytes_ref(&b, |e| {
                    if let Some((start, end)) = e.range_in_chunk() {
                        assert_eq!(b.get(start..end), Some(e.raw_slice()), "range_in_chunk");
                    }
                    events.push(e.to_event());
                });
            }
        }
        read += c.len();
        for e in &events[seen..] {
            let raw = input.get(done..done + e.raw.len());
            assert_eq!(raw, Some(&e.raw[..]), "event raw at {done}");
            done += e.raw.len();
        }
        seen = events.len();
        let pending = input.get(done..read);
        assert_eq!(pending, Some(p.pending()), "pending after {read} bytes");
    }
    let rest = p.finish(|e| events.push(e));
    assert_eq!(events, reference, "chunked events");
    assert_eq!(rest, tail, "chunked leftover");

    let mut p = SseParser::new();
    let mut lenient = Vec::new();
    for c in chunks(input, rng) {
        p.push(c, |e| lenient.push(e));
    }
    let rest = p.finish_lenient(|e| lenient.push(e));
    assert_eq!(
        raw_of(&lenient, &rest),
        input,
        "lenient raw bytes + leftover"
    );
    assert!(
        lenient.len() <= reference.len() + 1 && lenient.get(..reference.len()) == Some(&reference),
        "lenient events"
    );
}

// ---------------------------------------------------------------------------------------
// Usage

struct Metered {
    out: Vec<u8>,
    usage: Usage,
    saw_done: bool,
    first: bool,
    events: u64,
}

fn meter(strip: bool, pieces: &[&[u8]]) -> Metered {
    let mut m = StreamMeter::new(strip);
    let mut out = Vec::new();
    for c in pieces {
        let input = Bytes::copy_from_slice(c);
        let got = m.feed(input.clone());
        if !strip {
            assert_eq!(got, input, "pass-through changed a chunk");
        }
        out.extend_from_slice(&got);
    }
    out.extend_from_slice(&m.finish());
    Metered {
        out,
        usage: m.usage(),
        saw_done: m.saw_done(),
        first: m.first_content_seen(),
        events: m.events(),
    }
}

/// The stream meter, passing through and stripping: the same output and metering for any
/// chunking; pass-through is exact; every event is counted; the stripped output carries no
/// usage and the same content and `[DONE]`.
pub fn check_usage_stream(input: &[u8], rng: &mut XorShift) {
    let pieces = chunks(input, rng);
    let mut p = SseParser::new();
    let mut n = 0u64;
    p.push(input, |_| n += 1);
    p.finish_lenient(|_| n += 1);
    for strip in [false, true] {
        let whole = meter(strip, &[input]);
        let chunked = meter(strip, &pieces);
        assert_eq!(whole.out, chunked.out, "output (strip {strip})");
        assert_eq!(whole.usage, chunked.usage, "usage (strip {strip})");
        assert_eq!(whole.saw_done, chunked.saw_done, "[DONE] (strip {strip})");
        assert_eq!(whole.first, chunked.first, "first content (strip {strip})");
        assert_eq!(whole.events, chunked.events, "events (strip {strip})");
        assert_eq!(whole.events, n, "event count (strip {strip})");
        if !strip {
            assert_eq!(whole.out, input, "pass-through");
        } else {
            let again = meter(false, &[&whole.out]);
            assert!(
                again.usage.estimated,
                "usage left in the stripped stream: {}",
                show(&whole.out)
            );
            assert_eq!(again.saw_done, whole.saw_done, "stripped [DONE]");
            assert_eq!(again.first, whole.first, "stripped first content");
        }
    }
}

/// `usage_from_json` (the scanner, falling back to serde_json) is serde_json's answer on any
/// body; so is the usage a long answer's pass (`LongJson`) reads, however the body is cut
/// (on an object; where the pass empties a value or leaves out a key, whose bytes it does
/// not check, only when the whole body has a usage); the token estimate does not depend on
/// how the text is cut.
pub fn check_usage_json(input: &[u8], rng: &mut XorShift) {
    let whole = usage_from_json(input);
    assert_eq!(
        whole,
        crate::usage::usage_from_json_reference(input),
        "usage_from_json on {}",
        show(input)
    );
    let mut long = crate::usage::LongJson::new();
    for piece in chunks(input, rng) {
        long.push(piece);
    }
    let object = input.trim_ascii_start().first() == Some(&b'{');
    let all_kept = input.len() <= 256;
    if object && (all_kept || whole.is_some()) {
        let read = long.skeleton().and_then(usage_from_json);
        assert_eq!(read, whole, "LongJson on {}", show(input));
    }
    let text = show(input);
    let whole = estimate_tokens(&text);
    let mut e = TokenEstimator::new();
    let mut at = 0;
    while at < text.len() {
        let mut end = (at + 1 + rng.below(8)).min(text.len());
        while !text.is_char_boundary(end) {
            end += 1;
        }
        e.feed(&text[at..end]);
        at = end;
    }
    assert_eq!(e.tokens(), whole, "estimate by pieces");
}

// ---------------------------------------------------------------------------------------
// Body splice and the attempt plan

const MODELS: &[&str] = &[
    "gpt-4o",
    "m",
    "",
    "claude-sonnet-4-5",
    "gemini-2.5-flash",
    "a\"b\\c",
    "é世🚀",
    "\u{0}\u{1f}\u{7f}",
    "x/../y?z=1#f",
    "\u{2028}",
];

/// The request body: a parsed body is valid JSON; a rewrite has the length it announced, is
/// valid JSON with the new model and `stream_options.include_usage` when asked, and keeps
/// every other top-level field; an untouched body is the same bytes; every plan (endpoint ×
/// provider family) is an error with a client status or a body of the announced length that
/// is a JSON object.
pub fn check_body(input: &[u8], rng: &mut XorShift) {
    let bytes = Bytes::copy_from_slice(input);
    let body = match RequestBody::parse(bytes.clone()) {
        Ok(b) => b,
        Err(e) => {
            assert!(
                is_json_error(&e),
                "unexpected error {e:?} for {}",
                show(input)
            );
            return;
        }
    };
    assert_json_object(input, "a body that parsed");
    let upstream = (!rng.one_in(4)).then(|| rng.pick(MODELS));
    let force = !rng.one_in(3);
    let rw = body.rewrite(upstream, force);
    let out = rw.apply(body.bytes());
    assert_eq!(out.len(), rw.output_len(input.len()), "announced length");
    if rw.is_empty() {
        assert_eq!(out.as_ptr(), body.bytes().as_ptr(), "untouched body copied");
    }
    // Top-level members as raw text (values are not decoded: a lone surrogate escape is
    // valid JSON text that serde_json will not decode).
    type Members = indexmap::IndexMap<String, Box<serde_json::value::RawValue>>;
    let after: Members = match serde_json::from_slice(&out) {
        Ok(v) => v,
        Err(e) => panic!(
            "rewrite is not a JSON object ({e}):\n in: {}\nout: {}",
            show(input),
            show(&out)
        ),
    };
    let value = |key: &str| -> Option<serde_json::Value> {
        serde_json::from_str(after.get(key)?.get()).ok()
    };
    let model = upstream.unwrap_or(&body.model);
    assert_eq!(value("model"), Some(model.into()), "model");
    if force && body.stream && !body.client_wants_usage {
        assert_eq!(
            value("stream_options").and_then(|o| o.get("include_usage").cloned()),
            Some(true.into()),
            "include_usage: {}",
            show(&out)
        );
    }
    // Keys with a lone surrogate escape do not decode: nothing to compare then.
    if let Ok(before) = serde_json::from_slice::<Members>(input) {
        let others = |m: &Members| -> Vec<(String, String)> {
            let mut v: Vec<_> = m
                .iter()
                .filter(|(k, _)| !matches!(k.as_str(), "model" | "stream_options"))
                .map(|(k, v)| (k.clone(), v.get().to_owned()))
                .collect();
            v.sort();
            v
        };
        assert_eq!(others(&before), others(&after), "other fields changed");
    }

    let endpoint = [
        Endpoint::ChatCompletions,
        Endpoint::Completions,
        Endpoint::Embeddings,
        Endpoint::Moderations,
        Endpoint::Messages,
    ][rng.below(5)];
    let family = [OPENAI, AZURE, ANTHROPIC, GEMINI][rng.below(4)];
    match plan::plan(&body, endpoint, family, rng.pick(MODELS)) {
        Ok(p) => {
            let sent = p.body.apply(body.bytes());
            assert_eq!(sent.len(), p.body.len(input.len()), "plan length");
            assert_json_object(&sent, "a planned body");
        }
        Err(e) => assert_eq!(e.status(), 400, "plan error {e:?}"),
    }
}

fn is_json_error(e: &GatewayError) -> bool {
    matches!(
        e,
        GatewayError::InvalidJson(_)
            | GatewayError::NotAnObject
            | GatewayError::MissingModel
            | GatewayError::ModelNotString
    ) && e.status() == 400
}

// ---------------------------------------------------------------------------------------
// Translators

#[track_caller]
fn check_error(e: &TranslateError, request: bool) {
    assert_eq!(
        e.status(),
        if request { 400 } else { 502 },
        "status of {e:?}"
    );
    let e = crate::error::GatewayError::from(e.clone());
    for client in crate::protocol::ClientProtocol::ALL {
        assert_json_object(&e.body_for(client), "error body");
    }
}

#[track_caller]
fn check_request(r: Result<translate::Translated, TranslateError>) {
    match r {
        Ok(t) => assert_json_object(&t.body, "translated request"),
        Err(e) => check_error(&e, true),
    }
}

#[track_caller]
fn check_response(r: Result<(Vec<u8>, Usage), TranslateError>) {
    match r {
        Ok((body, _)) => assert_json_object(&body, "translated response"),
        Err(e) => check_error(&e, false),
    }
}

/// Which translation a case runs: the request one for what looks like a request (it has
/// `marker`), else the response one; now and then any of them, or the error conversion
/// (`2`). One per case keeps a case cheap in debug builds.
fn which(input: &[u8], marker: &[u8], rng: &mut XorShift) -> usize {
    if rng.one_in(5) {
        rng.below(3)
    } else if memchr::memmem::find(input, marker).is_some() {
        0
    } else {
        1
    }
}

/// OpenAI → Anthropic: request, response or error translation.
pub fn check_translate_anthropic(input: &[u8], rng: &mut XorShift) {
    match which(input, b"\"messages\"", rng) {
        0 => check_request(translate::openai_chat_to_anthropic(input, rng.pick(MODELS))),
        1 => {
            check_response(translate::anthropic_to_openai_chat_response(
                input,
                rng.pick(MODELS),
            ));
            if let Some(u) = ANTHROPIC.usage(input) {
                assert!(
                    u.cached_input_tokens <= u.input_tokens,
                    "cached > input: {u:?}"
                );
            }
        }
        _ => assert_json_object(&translate::anthropic_error_to_openai(input), "error"),
    }
}

/// Anthropic clients on OpenAI upstreams: request, response or error translation.
pub fn check_translate_anthropic_reverse(input: &[u8], rng: &mut XorShift) {
    match which(input, b"\"messages\"", rng) {
        0 => check_request(translate::anthropic_to_openai_chat_request(
            input,
            rng.pick(MODELS),
        )),
        1 => check_response(translate::openai_chat_response_to_anthropic(
            input,
            rng.pick(MODELS),
        )),
        _ => assert_json_object(&translate::openai_error_to_anthropic(input), "error"),
    }
}

/// OpenAI → Gemini chat: request, response or error translation (into either client
/// format), and the path for the input as a model name.
pub fn check_translate_gemini(input: &[u8], rng: &mut XorShift) {
    match which(input, b"\"messages\"", rng) {
        0 => check_request(translate::openai_chat_to_gemini(input)),
        1 => check_response(translate::gemini_to_openai_chat_response(
            input,
            rng.pick(MODELS),
        )),
        _ => {
            let client = if rng.one_in(2) {
                Client::OpenAi
            } else {
                Client::Anthropic
            };
            assert_json_object(&plan::translate_error(input, GEMINI, client), "error");
        }
    }
    let model = show(input);
    let stream = rng.one_in(2);
    let suffix = if stream {
        ":streamGenerateContent?alt=sse"
    } else {
        ":generateContent"
    };
    check_model_path(&translate::gemini_path(&model, stream), suffix);
}

/// A Gemini path is `/v1beta/models/{segment}{suffix}` with nothing in the segment that
/// could end it (only unreserved characters and percent escapes).
#[track_caller]
fn check_model_path(path: &str, suffix: &str) {
    let segment = path
        .strip_prefix("/v1beta/models/")
        .and_then(|p| p.strip_suffix(suffix));
    assert!(
        segment.is_some_and(|s| s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~%".contains(&b))),
        "path {path}"
    );
}

/// OpenAI embeddings → Gemini `batchEmbedContents`, or back.
pub fn check_translate_gemini_embed(input: &[u8], rng: &mut XorShift) {
    if which(input, b"\"input\"", rng) == 0 {
        match translate::openai_embeddings_to_gemini_batch(input, rng.pick(MODELS)) {
            Ok((b, _)) => assert_json_object(&b, "translated embeddings request"),
            Err(e) => check_error(&e, true),
        }
    } else {
        let ctx = EmbeddingsContext {
            inputs: rng.below(5),
            prompt_tokens_estimate: rng.next() >> rng.below(64),
            base64: rng.one_in(2),
        };
        check_response(translate::gemini_batch_to_openai_embeddings(
            input,
            rng.pick(MODELS),
            ctx,
        ));
    }
    check_model_path(
        &translate::gemini_embed_path(&show(input)),
        ":batchEmbedContents",
    );
}

/// `"created":<digits>` made `"created":0` (a clock reading differs between runs).
fn without_created(out: &[u8]) -> Vec<u8> {
    const KEY: &[u8] = b"\"created\":";
    let mut v = Vec::with_capacity(out.len());
    let mut rest = out;
    while let Some(i) = memchr::memmem::find(rest, KEY) {
        v.extend_from_slice(&rest[..i + KEY.len()]);
        rest = &rest[i + KEY.len()..];
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        v.push(b'0');
        rest = &rest[digits..];
    }
    v.extend_from_slice(rest);
    v
}

/// A new translator from `make` run over `pieces`. Generated ids are random: the same seed
/// for every run.
fn translate_stream(
    make: &dyn Fn() -> Box<dyn StreamTranslator>,
    pieces: &[&[u8]],
) -> (Vec<u8>, Box<dyn StreamTranslator>) {
    fastrand::seed(0x5EED);
    let mut t = make();
    let mut out = Vec::new();
    for c in pieces {
        out.extend(t.push(c));
    }
    out.extend(t.finish());
    (out, t)
}

/// The translator a protocol pair needs (every pair fuzzed here needs one).
fn translator(t: Option<Box<dyn StreamTranslator>>) -> Box<dyn StreamTranslator> {
    t.unwrap_or_else(|| panic!("this protocol pair has no stream translator"))
}

/// A stream translator: the same output, usage and first-content flag for any chunking; the
/// output is complete SSE events whose data is JSON or `[DONE]`.
fn check_stream(make: &dyn Fn() -> Box<dyn StreamTranslator>, input: &[u8], rng: &mut XorShift) {
    let (whole, t) = translate_stream(make, &[input]);
    let (usage, first) = (t.usage(), t.first_content_seen());
    let pieces = chunks(input, rng);
    let (chunked, t) = translate_stream(make, &pieces);
    assert!(
        without_created(&whole) == without_created(&chunked),
        "output differs by chunking\n   in: {}\nwhole: {}\n  cut: {}",
        show(input),
        show(&whole),
        show(&chunked)
    );
    assert_eq!(t.usage(), usage, "usage differs by chunking");
    assert_eq!(
        t.first_content_seen(),
        first,
        "first content differs by chunking"
    );
    if !rng.one_in(3) {
        return; // The output's form is checked in a third of the cases (it costs a parse).
    }
    let mut p = SseParser::new();
    let mut events = Vec::new();
    p.push(&whole, |e| events.push(e));
    let rest = p.finish(|e| events.push(e));
    assert!(
        rest.is_empty(),
        "unterminated output event: {}",
        show(&rest)
    );
    for e in events {
        assert!(
            e.data == "[DONE]" || is_json_object(e.data.as_bytes()),
            "output event data: {}",
            e.data
        );
    }
}

/// Anthropic stream → OpenAI chunks, or the observer reading a native Anthropic stream.
pub fn check_translate_anthropic_stream(input: &[u8], rng: &mut XorShift) {
    let model = rng.pick(MODELS);
    let usage = rng.one_in(2);
    if rng.one_in(4) {
        // A native Anthropic stream read for its usage (what `attempt` does).
        check_stream(
            &|| translator(ANTHROPIC.stream_to_openai(model, true)),
            input,
            rng,
        );
    } else {
        let make = || {
            translator(plan::stream_translator(
                ANTHROPIC,
                Client::OpenAi,
                model,
                usage,
            ))
        };
        check_stream(&make, input, rng);
    }
}

/// OpenAI chunks → Anthropic stream (Anthropic clients on OpenAI upstreams).
pub fn check_translate_anthropic_reverse_stream(input: &[u8], rng: &mut XorShift) {
    let model = rng.pick(MODELS);
    let family = if rng.one_in(2) { OPENAI } else { AZURE };
    let make = || {
        translator(plan::stream_translator(
            family,
            Client::Anthropic,
            model,
            true,
        ))
    };
    check_stream(&make, input, rng);
}

/// Gemini stream → OpenAI chunks, and on to an Anthropic client (two translators chained).
pub fn check_translate_gemini_stream(input: &[u8], rng: &mut XorShift) {
    let model = rng.pick(MODELS);
    let usage = rng.one_in(2);
    // The chain to Anthropic costs three times as much in a debug build: a quarter of cases.
    let client = if rng.one_in(4) {
        Client::Anthropic
    } else {
        Client::OpenAi
    };
    let make = || translator(plan::stream_translator(GEMINI, client, model, usage));
    check_stream(&make, input, rng);
}

// ---------------------------------------------------------------------------------------
// Config and the quota API

/// The config loader: any text is a config or an error naming what is wrong, never a panic;
/// a config that loads reloads over itself.
pub fn check_config(input: &[u8], _rng: &mut XorShift) {
    let text = show(input);
    match runtime::parse(&text, "fuzz.yaml", None) {
        Ok(gw) => {
            if let Err(e) = runtime::parse(&text, "fuzz.yaml", Some(&gw)) {
                panic!("a config that loads does not reload over itself: {e}\n{text}");
            }
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}

/// The quota API's parameters: a clean 400 or the operation the parameters say; a path
/// suffix names an endpoint whose suffix it is.
pub fn check_quota_api(input: &[u8], rng: &mut XorShift) {
    let call = [QuotaCall::Get, QuotaCall::Refresh, QuotaCall::Delta][rng.below(3)];
    match quota_op(call, input) {
        Ok((consumer, op)) => {
            let Ok(text) = std::str::from_utf8(input) else {
                panic!("non-UTF-8 parameters accepted: {}", show(input));
            };
            let params = form(text);
            assert_eq!(
                consumer,
                params.get("consumer").cloned().unwrap_or_default(),
                "consumer"
            );
            let number = |name: &str| params.get(name).and_then(|v| v.trim().parse::<i64>().ok());
            match (call, op) {
                (QuotaCall::Get, QuotaOp::Get) => {}
                (QuotaCall::Refresh, QuotaOp::Set(v)) => {
                    assert!(v >= 0 && Some(v) == number("quota"), "refresh {v}")
                }
                (QuotaCall::Delta, QuotaOp::Add(v)) => {
                    assert_eq!(Some(v), number("value"), "delta")
                }
                (call, op) => panic!("{call:?} gave {op:?}"),
            }
        }
        Err(e) => assert!(
            matches!(e, GatewayError::BadQuotaRequest(_)) && e.status() == 400,
            "{e:?}"
        ),
    }
    if let Some(e) = Endpoint::from_suffix(&show(input)) {
        assert_eq!(Endpoint::from_suffix(e.suffix()), Some(e), "suffix {e:?}");
    }
}

/// The boundary the `multipart` target's forms use.
pub const FORM_BOUNDARY: &str = "fzB0undary";

/// A multipart body: never a panic; a form that parses has its model where the span says,
/// and mapping the model gives a body of the announced length that parses to the new model
/// with the same other fields; the media meter reads any bytes, chunked anyhow, the same.
pub fn check_multipart(input: &[u8], rng: &mut XorShift) {
    let content_type = format!("multipart/form-data; boundary={FORM_BOUNDARY}");
    let bytes = Bytes::copy_from_slice(input);
    check_media_meter(input, rng);
    let body = match RequestBody::parse_form(bytes.clone(), &content_type) {
        Ok(b) => b,
        Err(e) => {
            assert!(
                matches!(e, GatewayError::InvalidForm(_) | GatewayError::MissingModel),
                "unexpected error {e:?}"
            );
            return;
        }
    };
    let Some((form, (model, span))) = body
        .form
        .as_ref()
        .and_then(|f| Some((&f.form, f.form.model.clone()?)))
    else {
        panic!("a parsed form has a model")
    };
    assert_eq!(&input[span], model.as_bytes(), "the model span");
    let upstream = rng.pick(&["whisper-1", "m", "é世🚀", "a\r\nb"]);
    let rewrite = body.rewrite(Some(upstream), true);
    let sent = rewrite.apply(&bytes);
    assert_eq!(
        sent.len(),
        rewrite.output_len(bytes.len()),
        "announced length"
    );
    let mapped = match RequestBody::parse_form(sent, &content_type) {
        Ok(again) => again.form.map(|f| f.form),
        Err(e) => panic!("a mapped form does not parse: {e:?}"),
    };
    let Some(mapped) = mapped else {
        panic!("a mapped form is a form")
    };
    let expected = upstream.replace(['\r', '\n'], "");
    if upstream != model {
        assert_eq!(
            mapped.model.as_ref().map(|m| m.0.as_str()),
            Some(expected.as_str())
        );
    }
    assert_eq!(
        (
            mapped.stream,
            &mapped.response_format,
            mapped.n,
            mapped.files
        ),
        (form.stream, &form.response_format, form.n, form.files),
        "other fields"
    );
}

/// The media meter: any answer bytes, chunked anyhow, give the same usage, no panic.
fn check_media_meter(input: &[u8], rng: &mut XorShift) {
    use crate::usage::{MediaKind, MediaMeter};
    let kinds = [
        MediaKind::Images,
        MediaKind::Speech,
        MediaKind::Transcription,
        MediaKind::Rerank,
        MediaKind::Moderation,
    ];
    let kind = kinds[rng.below(kinds.len())];
    let content_type = rng.pick(&[
        "application/json",
        "text/event-stream",
        "text/plain",
        "audio/mpeg",
    ]);
    let asked = rng.next() % 100;
    let usage = |parts: Vec<&[u8]>| {
        let mut m = MediaMeter::new(kind, asked, content_type);
        for p in parts {
            m.push(&Bytes::copy_from_slice(p));
        }
        m.usage()
    };
    assert_eq!(
        usage(vec![input]),
        usage(chunks(input, rng)),
        "chunking changed the usage"
    );
}

// ---------------------------------------------------------------------------------------
// The response cache's readers

/// The cache's key: its fast path writes the canonical text of serde_json's tree whenever it
/// decides and no key repeats, a body has a key when serde_json reads it as one object and
/// never when it is not one, and the key does not depend on whitespace between tokens. A
/// whole answer's check: the fast path gives serde's answer whenever it decides (on UTF-8;
/// the cache checks UTF-8 before it keeps an answer).
pub fn check_cache_json(input: &[u8], rng: &mut XorShift) {
    let (fast, slow) = crate::cache::key::both_paths(input);
    let repeats = crate::cache::key::repeats_a_key(input);
    if let (Some(text), false) = (&fast, repeats) {
        assert_eq!(
            Some(text),
            slow.as_ref(),
            "canonical text of {}",
            show(input)
        );
    }
    let key = crate::cache::key_bytes(crate::cache::Hashing::Shared, "r", "s", input);
    // A key for every object serde_json reads, and never for what is not JSON (nor for
    // bytes that are not UTF-8: the key takes text).
    assert_eq!(
        key.is_some(),
        slow.is_some() || fast.is_some(),
        "key of {}",
        show(input)
    );
    assert!(
        fast.is_none() || is_json_object(input),
        "key of {}",
        show(input)
    );
    if let (Some(key), Ok(v)) = (&key, serde_json::from_slice::<serde_json::Value>(input)) {
        // Written again with spaces between tokens: the same key.
        // (Only when the tree is the body's whole meaning: no repeated keys, and numbers
        // that serde_json reads back as the same value; without `float_roundtrip` a long
        // float it wrote may read back one bit off.)
        let spaced = serde_json::to_string_pretty(&v).unwrap_or_default();
        let same = serde_json::from_str::<serde_json::Value>(&spaced).is_ok_and(|w| w == v);
        if same && !repeats {
            assert_eq!(
                crate::cache::key_bytes(crate::cache::Hashing::Shared, "r", "s", spaced.as_bytes())
                    .as_ref(),
                Some(key),
                "key of {} spaced",
                show(input)
            );
        }
    }
    if std::str::from_utf8(input).is_ok() {
        let store_truncated = rng.one_in(2);
        let (fast, slow) = crate::cache::whole::both_paths(input, store_truncated);
        if let Some(kept) = fast {
            assert_eq!(kept, slow, "whole answer {}", show(input));
        }
    }
}
