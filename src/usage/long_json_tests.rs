use super::super::tests_gen::{Gen, XorShift};
use super::super::{estimate_tokens, usage_from_json, Usage};
use super::{LongJson, MAX_MEMBER, MAX_SKELETON};

/// `body` read in the pieces that `cuts` (ascending offsets) make.
fn read(body: &[u8], cuts: &[usize]) -> LongJson {
    let mut long = LongJson::new();
    let mut at = 0;
    for &cut in cuts.iter().chain([&body.len()]) {
        long.push(&body[at..cut]);
        at = cut;
    }
    assert_eq!(at, body.len(), "the pieces cover the body");
    long
}

fn usage_of(long: &LongJson) -> Option<Usage> {
    long.skeleton().and_then(usage_from_json)
}

fn answer(content: &str, usage: &str) -> String {
    format!(
        r#"{{"id":"chatcmpl-9","object":"chat.completion","model":"m",
        "choices":[{{"index":0,"message":{{"role":"assistant","content":"{content}"}},
        "finish_reason":"stop"}}],"usage":{usage}}}"#
    )
}

#[test]
fn a_long_answer_s_usage_is_its_whole_reading_at_every_split() {
    let content = "word ".repeat(MAX_MEMBER / 4);
    let body = answer(
        &content,
        r#"{"prompt_tokens":11,"completion_tokens":22,"total_tokens":33}"#,
    );
    let whole = usage_from_json(body.as_bytes());
    assert_eq!(whole.map(|u| u.output_tokens), Some(22));
    let body = body.as_bytes();
    for cut in 0..=body.len() {
        let long = read(body, &[cut]);
        assert_eq!(usage_of(&long), whole, "split at {cut}");
        let skeleton = long.skeleton().unwrap_or_default();
        assert!(skeleton.len() < 1024, "the content was emptied");
    }
    let long = read(body, &(1..body.len()).collect::<Vec<_>>());
    assert_eq!(usage_of(&long), whole, "a byte at a time");
}

#[test]
fn generated_answers_read_as_whole_ones() {
    // Answers short enough to be kept whole in the skeleton, with random member order,
    // whitespace, escapes, unicode, repeated and mistyped fields, and (one in three)
    // corruption: the skeleton gives the usage the whole answer gives, however cut.
    for seed in 1..1500u64 {
        let mut g = Gen::new(seed, 12);
        g.chunk();
        if g.rng.one_in(3) {
            g.corrupt();
        }
        let body = g.out.as_bytes();
        let whole = usage_from_json(body);
        let mut rng = XorShift(seed ^ 0x5eed);
        let mut cuts: Vec<usize> = (0..rng.below(6))
            .map(|_| rng.below(body.len() + 1))
            .collect();
        cuts.sort_unstable();
        let one = read(body, &[]);
        let cut = read(body, &cuts);
        assert_eq!(usage_of(&one), whole, "seed {seed}: {}", g.out);
        assert_eq!(usage_of(&cut), whole, "seed {seed} cut at {cuts:?}");
        assert_eq!(
            one.estimate(),
            cut.estimate(),
            "seed {seed} cut at {cuts:?}"
        );
        if cuts.len() == 1 {
            for at in 0..=body.len() {
                assert_eq!(usage_of(&read(body, &[at])), whole, "seed {seed} at {at}");
            }
        }
    }
}

#[test]
fn long_values_are_emptied_by_kind_and_the_rest_kept() {
    let long_text = "x".repeat(MAX_MEMBER + 1);
    let body = format!(
        r#" {{ "id" : "resp_1", "a":"{long_text}", "b":[{long_text:?}], "c":{{"k":"{long_text}"}},
        "d": 1{digits}, "e": [1, {{"f": null}}], "usage": {{"input_tokens": 5}} }} "#,
        digits = "0".repeat(MAX_MEMBER)
    );
    let long = read(body.as_bytes(), &[body.len() / 3, body.len() / 2]);
    let skeleton = std::str::from_utf8(long.skeleton().unwrap_or_default()).unwrap_or_default();
    assert_eq!(
        skeleton,
        r#"{"id":"resp_1","a":"","b":[],"c":{},"d":null,"e":[1, {"f": null}],"usage":{"input_tokens": 5}}"#
    );
    assert_eq!(usage_of(&long).map(|u| u.input_tokens), Some(5));
}

#[test]
fn only_one_complete_object_gives_a_skeleton() {
    for bad in [
        "",
        "[]",
        r#"{"usage":{"prompt_tokens":1}"#,
        r#"{"usage":{"prompt_tokens":1}} x"#,
        r#"{"usage":{"prompt_tokens":1},}"#,
        r#"{"usage":}"#,
        r#"{"usage" {"prompt_tokens":1}}"#,
        r#"{"a":[1}],"usage":{"prompt_tokens":1}}"#,
        r#"{"usage":{"prompt_tokens":1}, "usage":{"prompt_tokens":2}}"#,
        r#"{"a":"unclosed}"#,
    ] {
        let long = read(bad.as_bytes(), &[]);
        assert_eq!(usage_of(&long), None, "{bad}");
        assert_eq!(usage_from_json(bad.as_bytes()), None, "{bad}");
    }
    assert_eq!(read(b"{}", &[]).skeleton(), Some(&b"{}"[..]));
    assert_eq!(read(b" {\n} ", &[1]).skeleton(), Some(&b"{}"[..]));
}

#[test]
fn the_skeleton_stays_bounded_and_keeps_the_usage() {
    // Many members before the usage: the skeleton stops growing, the usage still counts.
    let mut body = String::from("{");
    for i in 0..20_000 {
        body.push_str(&format!(r#""member{i}":"{}","#, "v".repeat(40)));
    }
    body.push_str(r#""usage":{"prompt_tokens":7,"completion_tokens":8}}"#);
    let long = read(body.as_bytes(), &[]);
    let skeleton = long.skeleton().unwrap_or_default();
    assert!(skeleton.len() <= MAX_SKELETON + 64, "{}", skeleton.len());
    assert_eq!(usage_of(&long).map(|u| u.output_tokens), Some(8));
    // A long key is left out; the object still reads.
    let key = "k".repeat(1000);
    let body = format!(r#"{{"{key}":1,"usage":{{"prompt_tokens":3}}}}"#);
    let long = read(body.as_bytes(), &[]);
    assert_eq!(usage_of(&long).map(|u| u.input_tokens), Some(3));
}

#[test]
fn the_estimate_counts_the_text_of_the_strings_however_cut() {
    let content = "Hello wörld 世界 🚀 ".repeat(2000);
    let body = answer(&content, "null");
    let want = estimate_tokens(&content);
    let start = body.find("Hello").unwrap_or_default();
    let body = body.as_bytes();
    let whole = read(body, &[]).estimate();
    assert!(whole.estimated);
    assert!(
        whole.output_tokens >= want && whole.output_tokens < want + 40,
        "{} for {want}",
        whole.output_tokens
    );
    // Every cut through the multi-byte characters near the start gives the same estimate.
    for at in start..start + 400 {
        assert_eq!(read(body, &[at]).estimate(), whole, "cut at {at}");
    }
}

#[test]
fn each_protocol_reads_its_usage_from_the_skeleton() {
    // Anthropic's reader needs the `content` array, which the skeleton keeps emptied.
    let text = "word ".repeat(MAX_MEMBER);
    let body = format!(
        r#"{{"id":"msg_1","type":"message","role":"assistant","model":"claude",
        "content":[{{"type":"text","text":"{text}"}}],"stop_reason":"end_turn",
        "usage":{{"input_tokens":12,"cache_read_input_tokens":3,"output_tokens":40}}}}"#
    );
    let anthropic = crate::protocol::ANTHROPIC;
    let whole = anthropic.usage(body.as_bytes());
    assert_eq!(whole.map(|u| u.output_tokens), Some(40));
    let long = read(body.as_bytes(), &[body.len() / 2]);
    assert!(long.skeleton().unwrap_or_default().len() < 512);
    assert_eq!(long.skeleton().and_then(|s| anthropic.usage(s)), whole);
}
