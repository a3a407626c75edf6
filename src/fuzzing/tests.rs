//! Every fuzz target on generated, structure-aware inputs: 100,000 cases each by default
//! (`TOLLGATE_FUZZ_CASES` sets another number, for a longer run with `cargo test --release`).
//! Deterministic: a failure names the case and how to replay it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::gen::{self, Seeds, Streams};
use super::*;
use std::panic::{catch_unwind, AssertUnwindSafe};

const DEFAULT_CASES: u64 = 100_000;

fn cases() -> u64 {
    std::env::var("TOLLGATE_FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(DEFAULT_CASES)
}

/// `check` on `cases()` inputs from `input`, each with its own seeded generator.
fn run(
    name: &str,
    seed: u64,
    mut input: impl FnMut(&mut XorShift) -> Vec<u8>,
    check: fn(&[u8], &mut XorShift),
) {
    let mut rng = XorShift(seed);
    for case in 0..cases() {
        let data = input(&mut rng);
        let ctl = rng.next() | 1;
        if catch_unwind(AssertUnwindSafe(|| check(&data, &mut XorShift(ctl)))).is_err() {
            panic!(
                "{name}: case {case} failed. Replay: fuzzing::check_{name}(b\"{}\", &mut XorShift({ctl:#x}))",
                data.escape_ascii()
            );
        }
    }
}

#[test]
fn fuzz_sse() {
    let streams = Streams::new(&[
        gen::OPENAI_STREAMS,
        gen::ANTHROPIC_STREAMS,
        gen::GEMINI_STREAMS,
    ]);
    run(
        "sse",
        0x9E37_79B9_7F4A_7C15,
        |rng| {
            if rng.one_in(2) {
                gen::sse_soup(rng)
            } else {
                streams.stream(rng)
            }
        },
        check_sse,
    );
}

#[test]
fn fuzz_usage_stream() {
    let streams = Streams::new(&[gen::OPENAI_STREAMS]);
    run(
        "usage_stream",
        0x2545_F491_4F6C_DD1D,
        |rng| {
            if rng.one_in(8) {
                gen::sse_soup(rng)
            } else {
                streams.stream(rng)
            }
        },
        check_usage_stream,
    );
}

#[test]
fn fuzz_usage_json() {
    let seeds = Seeds::new(&[gen::OPENAI_RESPONSES]);
    run(
        "usage_json",
        0x5851_F42D_4C95_7F2D,
        |rng| seeds.json(rng),
        check_usage_json,
    );
}

#[test]
fn fuzz_body() {
    let seeds = Seeds::new(&[
        gen::OPENAI_REQUESTS,
        gen::ANTHROPIC_REQUESTS,
        gen::EMBEDDING_REQUESTS,
    ]);
    run(
        "body",
        0x1405_7B7E_F767_814F,
        |rng| seeds.json(rng),
        check_body,
    );
}

#[test]
fn fuzz_translate_anthropic() {
    let seeds = Seeds::new(&[gen::OPENAI_REQUESTS, gen::ANTHROPIC_RESPONSES]);
    run(
        "translate_anthropic",
        0xD6E8_FEB8_6659_FD93,
        |rng| seeds.json(rng),
        check_translate_anthropic,
    );
}

#[test]
fn fuzz_translate_anthropic_stream() {
    let streams = Streams::new(&[gen::ANTHROPIC_STREAMS]);
    run(
        "translate_anthropic_stream",
        0xA076_1D64_78BD_642F,
        |rng| streams.stream(rng),
        check_translate_anthropic_stream,
    );
}

#[test]
fn fuzz_translate_anthropic_reverse() {
    let seeds = Seeds::new(&[gen::ANTHROPIC_REQUESTS, gen::OPENAI_RESPONSES]);
    run(
        "translate_anthropic_reverse",
        0xE703_7ED1_A0B4_28DB,
        |rng| seeds.json(rng),
        check_translate_anthropic_reverse,
    );
}

#[test]
fn fuzz_translate_anthropic_reverse_stream() {
    let streams = Streams::new(&[gen::OPENAI_STREAMS]);
    run(
        "translate_anthropic_reverse_stream",
        0x8EBC_6AF0_9C88_C6E3,
        |rng| streams.stream(rng),
        check_translate_anthropic_reverse_stream,
    );
}

#[test]
fn fuzz_translate_gemini() {
    let seeds = Seeds::new(&[gen::OPENAI_REQUESTS, gen::GEMINI_RESPONSES]);
    run(
        "translate_gemini",
        0x5896_5E4B_3A2C_1D0F,
        |rng| seeds.json(rng),
        check_translate_gemini,
    );
}

#[test]
fn fuzz_translate_gemini_stream() {
    let streams = Streams::new(&[gen::GEMINI_STREAMS]);
    run(
        "translate_gemini_stream",
        0x1D8E_4E27_C47D_124F,
        |rng| streams.stream(rng),
        check_translate_gemini_stream,
    );
}

#[test]
fn fuzz_translate_gemini_embed() {
    let seeds = Seeds::new(&[gen::EMBEDDING_REQUESTS, gen::EMBEDDING_RESPONSES]);
    run(
        "translate_gemini_embed",
        0x94D0_49BB_1331_11EB,
        |rng| seeds.json(rng),
        check_translate_gemini_embed,
    );
}

#[test]
fn fuzz_config() {
    run("config", 0xBF58_476D_1CE4_E5B9, gen::yaml, check_config);
}

#[test]
fn fuzz_quota_api() {
    const PIECES: &[&str] = &[
        "consumer=",
        "alice",
        "a%20b",
        "%FF",
        "%",
        "%e4%b8%96",
        "+",
        "&",
        "=",
        "quota=",
        "value=",
        "12",
        "-3",
        " 7 ",
        "9223372036854775807",
        "9223372036854775808",
        "-9223372036854775808",
        "1.5",
        "1e3",
        "",
        "/chat/completions/quota",
        "/refresh",
        "/delta",
        "/",
    ];
    run(
        "quota_api",
        0x3C6E_F372_FE94_F82B,
        |rng| {
            let mut v = Vec::new();
            for _ in 0..rng.below(10) {
                v.extend_from_slice(rng.pick(PIECES).as_bytes());
            }
            if rng.one_in(10) {
                v.push(rng.next() as u8);
            }
            v
        },
        check_quota_api,
    );
}

/// The templates the config target mutates are valid, so mutations explore both sides.
#[test]
fn config_templates_load() {
    for t in gen::CONFIGS {
        crate::runtime::parse(t, "t.yaml", None).unwrap();
    }
}

/// The raw entry points (what `cargo fuzz` calls) on random bytes and on generated inputs
/// behind each seed length.
#[test]
fn entry_points_take_any_bytes() {
    let mut rng = XorShift(0x6A09_E667_F3BC_C909);
    for (_, target) in TARGETS {
        for _ in 0..200 {
            let data: Vec<u8> = (0..rng.below(64)).map(|_| rng.next() as u8).collect();
            target(&data);
        }
        target(&[]);
        target(&[8, 1, 2]);
    }
}

#[test]
fn fuzz_multipart() {
    run(
        "multipart",
        0x2545_F491_4F6C_DD1D,
        |rng| gen::multipart_form(rng, targets::FORM_BOUNDARY),
        check_multipart,
    );
}

#[test]
fn fuzz_cache_json() {
    let seeds = Seeds::new(&[gen::OPENAI_REQUESTS, gen::OPENAI_RESPONSES]);
    run(
        "cache_json",
        0x2545_F491_4F6C_DD1D,
        |rng| seeds.json(rng),
        check_cache_json,
    );
}
