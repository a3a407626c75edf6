//! Criterion benchmarks of the per-request hot path that does not touch the network:
//! the SSE parser, usage extraction (streaming and not), the request-body rewrite, and the
//! consumer lookup (a credential written in the config, and one the management API keeps as
//! a SHA-256 digest: the digest's cost is paid only when such credentials exist), and the
//! response cache's key of a short request (as `load/cache-instructions.sh` sends).
//!
//! Inputs are built here, deterministically, to look like real traffic: an OpenAI
//! chat-completions stream of 64 content chunks (role chunk, content, finish chunk, usage
//! chunk, `[DONE]`; ASCII and CJK words), and a 100 KiB multi-turn chat body.
//!
//! Run: `cargo bench --bench hot_path` (`cargo test --all-targets` runs each once).

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use std::hint::black_box;
use tollgate::body::RequestBody;
use tollgate::sse::SseParser;
use tollgate::usage::{usage_from_json, StreamMeter};

const WORDS: [&str; 8] = [
    "Hello",
    " wörld",
    " 世界",
    " from",
    " the",
    " gateway",
    " \\\"quoted\\\"",
    ".",
];

fn chunk_json(delta: &str, finish: &str, usage: &str) -> String {
    format!(
        "{{\"id\":\"chatcmpl-AbC123xYz\",\"object\":\"chat.completion.chunk\",\"created\":1732000000,\
         \"model\":\"gpt-4o-2024-08-06\",\"system_fingerprint\":\"fp_6fb2\",\"choices\":[{{\"index\":0,\
         \"delta\":{delta},\"logprobs\":null,\"finish_reason\":{finish}}}],\"usage\":{usage}}}"
    )
}

/// The SSE events of a 64-chunk OpenAI stream with `include_usage`, one string per event.
fn openai_stream_events() -> Vec<String> {
    openai_stream_events_with(|i| WORDS[i % WORDS.len()].to_string())
}

/// Like [`openai_stream_events`], but every content delta is ~100 bytes of text (a few words
/// per chunk, as models with larger output batching send them).
fn openai_stream_events_long_deltas() -> Vec<String> {
    openai_stream_events_with(|i| {
        let mut s = String::new();
        let mut j = i;
        while s.len() < 100 {
            s.push_str(WORDS[j % WORDS.len()]);
            j += 3;
        }
        s
    })
}

fn openai_stream_events_with(delta_text: impl Fn(usize) -> String) -> Vec<String> {
    let mut events = Vec::new();
    events.push(chunk_json(
        r#"{"role":"assistant","content":"","refusal":null}"#,
        "null",
        "null",
    ));
    for i in 0..64 {
        let delta = format!("{{\"content\":\"{}\"}}", delta_text(i));
        events.push(chunk_json(&delta, "null", "null"));
    }
    events.push(chunk_json("{}", "\"stop\"", "null"));
    events.push(
        "{\"id\":\"chatcmpl-AbC123xYz\",\"object\":\"chat.completion.chunk\",\"created\":1732000000,\
         \"model\":\"gpt-4o-2024-08-06\",\"system_fingerprint\":\"fp_6fb2\",\"choices\":[],\
         \"usage\":{\"prompt_tokens\":1187,\"completion_tokens\":64,\"total_tokens\":1251,\
         \"prompt_tokens_details\":{\"cached_tokens\":1024,\"audio_tokens\":0},\
         \"completion_tokens_details\":{\"reasoning_tokens\":0,\"audio_tokens\":0,\
         \"accepted_prediction_tokens\":0,\"rejected_prediction_tokens\":0}}}"
            .to_string(),
    );
    events.push("[DONE]".to_string());
    events
        .into_iter()
        .map(|e| format!("data: {e}\n\n"))
        .collect()
}

/// A non-streaming chat completion response (as OpenAI sends it, pretty-printed).
fn chat_response() -> Vec<u8> {
    let content: String = (0..64).map(|i| WORDS[i % WORDS.len()]).collect();
    format!(
        "{{\n  \"id\": \"chatcmpl-AbC123xYz\",\n  \"object\": \"chat.completion\",\n  \
         \"created\": 1732000000,\n  \"model\": \"gpt-4o-2024-08-06\",\n  \"choices\": [\n    {{\n      \
         \"index\": 0,\n      \"message\": {{\n        \"role\": \"assistant\",\n        \
         \"content\": \"{content}\",\n        \"refusal\": null\n      }},\n      \
         \"logprobs\": null,\n      \"finish_reason\": \"stop\"\n    }}\n  ],\n  \"usage\": {{\n    \
         \"prompt_tokens\": 1187,\n    \"completion_tokens\": 64,\n    \"total_tokens\": 1251,\n    \
         \"prompt_tokens_details\": {{\"cached_tokens\": 1024, \"audio_tokens\": 0}},\n    \
         \"completion_tokens_details\": {{\"reasoning_tokens\": 0, \"audio_tokens\": 0}}\n  }},\n  \
         \"system_fingerprint\": \"fp_6fb2\"\n}}\n"
    )
    .into_bytes()
}

/// A ~100 KiB multi-turn chat request body (system prompt, 40 turns, tools), `stream` as given.
fn chat_body(stream: bool) -> Bytes {
    let para = "The quick brown fox jumps over the lazy dog; \\\"quoted\\\" text, a tab\\t and \
                a newline\\n, some Unicode — café, naïve, 東京, 서울 — and digits 0123456789. ";
    let mut messages = vec![format!(
        "{{\"role\":\"system\",\"content\":\"You are a helpful assistant. {}\"}}",
        para.repeat(8)
    )];
    let mut turn = 0;
    let mut len = messages[0].len();
    while len < 100 * 1024 - 600 {
        let role = if turn % 2 == 0 { "user" } else { "assistant" };
        let m = format!(
            "{{\"role\":\"{role}\",\"content\":\"Turn {turn}: {}\"}}",
            para.repeat(1 + turn % 5)
        );
        len += m.len() + 1;
        messages.push(m);
        turn += 1;
    }
    let body = format!(
        "{{\"model\":\"gpt-4o\",\"messages\":[{}],\"temperature\":0.7,\"max_tokens\":1024,\
         \"tools\":[{{\"type\":\"function\",\"function\":{{\"name\":\"get_weather\",\
         \"parameters\":{{\"type\":\"object\",\"properties\":{{\"location\":{{\"type\":\"string\"}}}}}}}}}}],\
         \"stream\":{stream},\"user\":\"user-1234\"}}",
        messages.join(",")
    );
    Bytes::from(body)
}

fn bench_sse(c: &mut Criterion) {
    let events = openai_stream_events();
    let whole = Bytes::from(events.concat());
    let frames: Vec<Bytes> = events.iter().map(|e| Bytes::from(e.clone())).collect();
    // TCP-like reads of 1,400 bytes, cutting events (and UTF-8 characters) anywhere.
    let reads: Vec<Bytes> = whole.chunks(1400).map(Bytes::copy_from_slice).collect();

    // The inputs are what they claim to be: 68 events, the reported usage is found, and the
    // usage chunk is stripped when asked.
    let mut p = SseParser::new();
    let mut events_seen = 0;
    p.push_bytes(&whole, |_| events_seen += 1);
    assert_eq!(
        events_seen, 68,
        "stream has role + 64 content + finish + usage + [DONE] events"
    );
    for strip in [false, true] {
        let mut m = StreamMeter::new(strip);
        let out: usize =
            reads.iter().map(|f| m.feed(f.clone()).len()).sum::<usize>() + m.finish().len();
        let u = m.usage();
        assert!(!u.estimated && u.input_tokens == 1187 && u.output_tokens == 64);
        assert!(u.cached_input_tokens == 1024);
        assert_eq!(
            out < whole.len(),
            strip,
            "usage chunk stripped only when asked"
        );
    }

    let mut g = c.benchmark_group("sse_parser");
    g.throughput(Throughput::Bytes(whole.len() as u64));
    g.bench_function("64_chunk_stream/one_buffer", |b| {
        b.iter(|| {
            let mut p = SseParser::new();
            let mut n = 0usize;
            p.push_bytes(black_box(&whole), |ev| n += ev.data.len());
            p.finish(|ev| n += ev.data.len());
            n
        })
    });
    g.bench_function("64_chunk_stream/per_event_frames", |b| {
        b.iter(|| {
            let mut p = SseParser::new();
            let mut n = 0usize;
            for f in &frames {
                p.push_bytes(black_box(f), |ev| n += ev.data.len());
            }
            p.finish(|ev| n += ev.data.len());
            n
        })
    });
    g.bench_function("64_chunk_stream/1400_byte_reads", |b| {
        b.iter(|| {
            let mut p = SseParser::new();
            let mut n = 0usize;
            for f in &reads {
                p.push_bytes(black_box(f), |ev| n += ev.data.len());
            }
            p.finish(|ev| n += ev.data.len());
            n
        })
    });
    g.finish();

    let mut g = c.benchmark_group("stream_meter");
    g.throughput(Throughput::Bytes(whole.len() as u64));
    for (name, strip) in [("passthrough", false), ("strip_usage", true)] {
        g.bench_function(format!("64_chunk_stream/{name}/per_event_frames"), |b| {
            b.iter(|| {
                let mut m = StreamMeter::new(strip);
                let mut out = 0usize;
                for f in &frames {
                    out += m.feed(black_box(f.clone())).len();
                }
                out += m.finish().len();
                (out, m.usage())
            })
        });
        g.bench_function(format!("64_chunk_stream/{name}/1400_byte_reads"), |b| {
            b.iter(|| {
                let mut m = StreamMeter::new(strip);
                let mut out = 0usize;
                for f in &reads {
                    out += m.feed(black_box(f.clone())).len();
                }
                out += m.finish().len();
                (out, m.usage())
            })
        });
    }
    g.finish();

    // ~100-byte content deltas, read from the network in 1,400-byte pieces.
    let long = Bytes::from(openai_stream_events_long_deltas().concat());
    let long_reads: Vec<Bytes> = long.chunks(1400).map(Bytes::copy_from_slice).collect();
    for strip in [false, true] {
        let mut m = StreamMeter::new(strip);
        let out: usize = long_reads
            .iter()
            .map(|f| m.feed(f.clone()).len())
            .sum::<usize>()
            + m.finish().len();
        let u = m.usage();
        assert!(!u.estimated && u.input_tokens == 1187 && m.events() == 68);
        assert_eq!(out < long.len(), strip);
    }
    let mut g = c.benchmark_group("sse_long_deltas");
    g.throughput(Throughput::Bytes(long.len() as u64));
    g.bench_function("parser/1400_byte_reads", |b| {
        b.iter(|| {
            let mut p = SseParser::new();
            let mut n = 0usize;
            for f in &long_reads {
                p.push_bytes(black_box(f), |ev| n += ev.data.len());
            }
            p.finish(|ev| n += ev.data.len());
            n
        })
    });
    for (name, strip) in [("passthrough", false), ("strip_usage", true)] {
        g.bench_function(format!("stream_meter/{name}/1400_byte_reads"), |b| {
            b.iter(|| {
                let mut m = StreamMeter::new(strip);
                let mut out = 0usize;
                for f in &long_reads {
                    out += m.feed(black_box(f.clone())).len();
                }
                out += m.finish().len();
                (out, m.usage())
            })
        });
    }
    g.finish();
}

fn bench_usage_json(c: &mut Criterion) {
    let response = chat_response();
    let mut g = c.benchmark_group("usage_from_json");
    g.throughput(Throughput::Bytes(response.len() as u64));
    g.bench_function("chat_completion_response", |b| {
        b.iter(|| usage_from_json(black_box(&response)))
    });
    g.finish();
    // An answer past what the meter keeps whole (32 MiB) is read as it goes by: the pass
    // over 1 MiB of it, in 64 KiB reads (`LongJson`).
    let text = "word, and a \\\"quote\\\" ".repeat((1 << 20) / 24);
    let long = format!(
        r#"{{"id":"chatcmpl-1","choices":[{{"message":{{"content":"{text}"}}}}],"usage":{{"prompt_tokens":9,"completion_tokens":8}}}}"#
    );
    let mut g = c.benchmark_group("long_json");
    g.throughput(Throughput::Bytes(long.len() as u64));
    g.bench_function("1mib_answer/64k_reads", |b| {
        b.iter(|| {
            let mut pass = tollgate::usage::LongJson::new();
            for piece in black_box(long.as_bytes()).chunks(64 << 10) {
                pass.push(piece);
            }
            pass.skeleton().and_then(usage_from_json)
        })
    });
    g.finish();
}

fn bench_body(c: &mut Criterion) {
    let plain = chat_body(false);
    let streaming = chat_body(true);
    for (body, stream) in [(&plain, false), (&streaming, true)] {
        let Ok(parsed) = RequestBody::parse(body.clone()) else {
            panic!("benchmark body does not parse")
        };
        assert!(parsed.model == "gpt-4o" && parsed.stream == stream);
        assert!(body.len() >= 100 * 1024 - 1024 && body.len() <= 100 * 1024 + 1024);
        assert_eq!(parsed.rewrite(Some("gpt-4o"), true).is_empty(), !stream);
    }
    if usage_from_json(&chat_response()).map(|u| (u.input_tokens, u.output_tokens))
        != Some((1187, 64))
    {
        panic!("usage not found in the benchmark response")
    }
    let mut g = c.benchmark_group("request_body");
    g.throughput(Throughput::Bytes(streaming.len() as u64));
    g.bench_function("100k_chat/parse", |b| {
        b.iter_batched(
            || streaming.clone(),
            |body| RequestBody::parse(black_box(body)).is_ok(),
            BatchSize::SmallInput,
        )
    });
    // No mapping, not streaming: the rewrite is empty and the same buffer is forwarded.
    g.bench_function("100k_chat/parse_rewrite_apply/no_change", |b| {
        b.iter_batched(
            || plain.clone(),
            |body| {
                let Ok(parsed) = RequestBody::parse(black_box(body)) else {
                    panic!("benchmark body does not parse")
                };
                let rw = parsed.rewrite(Some("gpt-4o"), true);
                rw.apply(parsed.bytes()).len()
            },
            BatchSize::SmallInput,
        )
    });
    // Model mapped and `stream_options.include_usage` added: two splices, one copy.
    g.bench_function(
        "100k_chat/parse_rewrite_apply/map_model_and_force_usage",
        |b| {
            b.iter_batched(
                || streaming.clone(),
                |body| {
                    let Ok(parsed) = RequestBody::parse(black_box(body)) else {
                        panic!("benchmark body does not parse")
                    };
                    let rw = parsed.rewrite(Some("gpt-4o-2024-08-06"), true);
                    rw.apply(parsed.bytes()).len()
                },
                BatchSize::SmallInput,
            )
        },
    );
    let Ok(parsed) = RequestBody::parse(streaming.clone()) else {
        panic!("benchmark body does not parse")
    };
    let rw = parsed.rewrite(Some("gpt-4o-2024-08-06"), true);
    g.bench_function("100k_chat/apply_only", |b| {
        b.iter(|| rw.apply(black_box(parsed.bytes())).len())
    });
    g.finish();
}

fn bench_consumers(c: &mut Criterion) {
    use tollgate::auth::{digest_text, Consumers, Source};
    let with = |hashed: bool| {
        let mut consumers = Consumers::new(vec![Source::Bearer]);
        for i in 0..1000 {
            let credential = format!("sk-consumer-credential-{i:04}");
            if hashed {
                let Ok(()) = consumers.add(format!("c{i}"), vec![]) else {
                    panic!("bench consumers")
                };
                let Ok(()) = consumers.add_digests(&format!("c{i}"), &[digest_text(&credential)])
                else {
                    panic!("bench digests")
                };
            } else if consumers.add(format!("c{i}"), vec![credential]).is_err() {
                panic!("bench consumers")
            }
        }
        consumers
    };
    let mut headers = http::HeaderMap::new();
    let Ok(value) = "Bearer sk-consumer-credential-0500".parse() else {
        panic!("header")
    };
    headers.insert(http::header::AUTHORIZATION, value);
    let mut g = c.benchmark_group("consumer_lookup_1000");
    for (name, hashed) in [("literal", false), ("sha256_digest", true)] {
        let consumers = with(hashed);
        if consumers.identify(&headers, None, true, &[]) != Ok(Some("c500")) {
            panic!("lookup failed")
        }
        g.bench_function(name, |b| {
            b.iter(|| {
                consumers
                    .identify(black_box(&headers), None, true, &[])
                    .is_ok()
            })
        });
    }
    g.finish();
}

/// Pricing a finished request against the shipped price book (the default; `pricing`).
fn bench_pricing(c: &mut Criterion) {
    use tollgate::pricing::PriceBook;
    let Ok(book) = PriceBook::build(&tollgate::settings::PricingSection::default()) else {
        panic!("price book")
    };
    let usage = tollgate::usage::Usage {
        input_tokens: 1200,
        cached_input_tokens: 400,
        output_tokens: 300,
        ..Default::default()
    };
    let at = 1_796_169_600;
    let mut g = c.benchmark_group("price_one_request");
    for (name, kind, model) in [
        ("first_entry", "deepseek", "deepseek-flash"),
        ("late_entry", "moonshot", "kimi-k3"),
        ("unpriced", "openai", "no-such-model"),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| book.cost(black_box("p"), kind, black_box(model), &usage, at))
        });
    }
    g.finish();
}

/// The budget stage's own work per request, before the store: which budgets apply and the
/// request's largest possible cost at its targets (the embedded store then checks and
/// reserves in memory; Redis is one script round trip, not measured here).
fn bench_budgets(c: &mut Criterion) {
    use tollgate::budget::{max_cost, reservation, BudgetBook, Payer, Target};
    let Ok(sections) = serde_yaml::from_str::<Vec<tollgate::settings::BudgetSection>>(
        "[{name: a, consumer: alice, amount: 10}, {name: each, consumer: '*', amount: 1},
          {name: r, route: chat, amount: 100, period: day, time_zone: Asia/Shanghai}]",
    ) else {
        panic!("budgets")
    };
    let Ok(book) = BudgetBook::build(&sections, Default::default(), None) else {
        panic!("budget book")
    };
    let Ok(prices) = tollgate::pricing::PriceBook::build(&Default::default()) else {
        panic!("price book")
    };
    let targets = [
        Target {
            provider: "p",
            kind: "deepseek",
            model: "deepseek-flash",
        },
        Target {
            provider: "q",
            kind: "openai",
            model: "gpt-4o-mini",
        },
    ];
    let at = 1_796_169_600;
    c.bench_function("budget_reservation", |b| {
        b.iter(|| {
            let payer = Payer {
                consumer: Some(black_box("alice")),
                route: "chat",
            };
            let applying = book.applying(payer);
            let costs = max_cost(&prices, &targets, 1200, 4096, at).unwrap_or_default();
            applying
                .iter()
                .map(|(b, _)| reservation(&book, &costs, b).unwrap_or(0))
                .sum::<i64>()
        })
    });
}

/// The response cache's key of a one-line request (its canonical text, then SipHash in one
/// gateway's memory, BLAKE3 when Redis shares the entries).
fn bench_cache_key(c: &mut Criterion) {
    use tollgate::body::Utf8;
    use tollgate::cache::{key, Hashing};
    let body = br#"{"model":"mock-gpt-4o","messages":[{"role":"user","content":"Hello run1-on-4242-17, how are you today?"}]}"#;
    let Some(text) = Utf8::check(body) else {
        return;
    };
    let mut g = c.benchmark_group("cache_key");
    g.throughput(Throughput::Bytes(body.len() as u64));
    for (name, hashing) in [("local", Hashing::Local), ("shared", Hashing::Shared)] {
        g.bench_function(name, |b| {
            b.iter(|| key(hashing, "default", "anonymous:default", black_box(text)))
        });
    }
    // An 8 KB system prompt never seen before (`PAD=8000 UNIQUE=1` in
    // load/cache-instructions.sh): the key hashes it whole with BLAKE3, natively with the
    // machine's widest SIMD (which valgrind's instruction count does not see).
    let line = "You are a careful assistant for an online shop; answer briefly. ";
    let prompt = line.repeat(8000 / line.len() + 1);
    let mut n = 0u64;
    g.throughput(Throughput::Bytes(8100));
    g.bench_function("local_8k_unique", |b| {
        b.iter_batched(
            || {
                n += 1;
                format!(
                    r#"{{"model":"mock-gpt-4o","messages":[{{"role":"system","content":"{n}. {prompt}"}},{{"role":"user","content":"Hello {n}"}}]}}"#
                )
            },
            |body| {
                let text = Utf8::check(body.as_bytes());
                text.and_then(|t| key(Hashing::Local, "default", "anonymous:default", t))
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(
    benches,
    bench_cache_key,
    bench_budgets,
    bench_sse,
    bench_usage_json,
    bench_body,
    bench_consumers,
    bench_pricing
);
criterion_main!(benches);
