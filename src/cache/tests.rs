use super::*;

#[test]
fn the_key_ignores_field_order_whitespace_and_stream_fields() {
    for hashing in [Hashing::Shared, Hashing::Local] {
        the_key_ignores_order_and_layout_by(hashing);
    }
}

fn the_key_ignores_order_and_layout_by(hashing: Hashing) {
    let a = br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0.5}"#;
    let b = br#"{ "temperature": 0.5, "stream": true, "stream_options": {"include_usage": true},
                  "messages": [ {"content": "hi", "role": "user"} ], "model": "m" }"#;
    let k = |body: &[u8]| key_bytes(hashing, "chat", "consumer:alice", body).unwrap();
    assert_eq!(k(a), k(b));
    for other in [
        &br#"{"model":"m","messages":[{"role":"user","content":"hi!"}],"temperature":0.5}"#[..],
        br#"{"model":"n","messages":[{"role":"user","content":"hi"}],"temperature":0.5}"#,
        br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0.6}"#,
        br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0.5,"tools":[]}"#,
    ] {
        assert_ne!(k(a), k(other), "{}", String::from_utf8_lossy(other));
    }
    assert_ne!(
        k(a),
        key_bytes(hashing, "chat", "consumer:bob", a).unwrap(),
        "another scope"
    );
    assert_ne!(
        k(a),
        key_bytes(hashing, "other", "consumer:alice", a).unwrap(),
        "another route"
    );
    assert!(key_bytes(hashing, "chat", "s", b"[1]").is_none());
}

#[test]
fn a_local_key_is_keyed_for_short_texts_and_blake3_for_long_ones() {
    let short = br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
    let local = key_bytes(Hashing::Local, "chat", "s", short).unwrap();
    let shared = key_bytes(Hashing::Shared, "chat", "s", short).unwrap();
    assert_ne!(local, shared, "a secret of this process, not BLAKE3");
    let mark: &[u8] = if super::keyed::has_aes() {
        b"tollgate:aescmac"
    } else {
        b"tollgate:siphash"
    };
    assert_eq!(&local.0[16..], mark, "AES-CMAC where the CPU has AES");
    // Past `KEYED_UP_TO` (route, scope and canonical text), BLAKE3 either way (many short
    // strings: a long one is written as its digest).
    let turn = r#"{"role":"user","content":"a short question of a long conversation"}"#;
    let turns = vec![turn; key::KEYED_UP_TO / turn.len() + 1].join(",");
    let long = format!(r#"{{"model":"m","messages":[{turns}]}}"#);
    assert_eq!(
        key_bytes(Hashing::Local, "chat", "s", long.as_bytes()),
        key_bytes(Hashing::Shared, "chat", "s", long.as_bytes())
    );
}

#[test]
fn scopes() {
    use crate::settings::CacheScope::*;
    assert_eq!(scope(Consumer, Some("a"), Some("t"), "r"), "consumer:a");
    assert_eq!(scope(Consumer, None, None, "r"), "anonymous:r");
    assert_eq!(scope(Team, Some("a"), Some("t"), "r"), "team:t");
    assert_eq!(
        scope(Team, Some("a"), None, "r"),
        "consumer:a",
        "no team: its own"
    );
    assert_eq!(scope(Route, Some("a"), None, "r"), "route:r");
    assert_eq!(scope(Global, Some("a"), None, "r"), "global");
}

#[test]
fn client_wishes() {
    let h = |pairs: &[(&str, &str)]| {
        let mut m = http::HeaderMap::new();
        for (k, v) in pairs {
            m.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        Wish::of(&m)
    };
    assert_eq!(h(&[]), Wish::Use);
    assert_eq!(
        h(&[("cache-control", "max-age=0, no-cache")]),
        Wish::Refresh
    );
    assert_eq!(h(&[("cache-control", "no-store")]), Wish::Bypass);
    assert_eq!(h(&[("x-tollgate-cache", "refresh")]), Wish::Refresh);
    assert_eq!(
        h(&[
            ("x-tollgate-cache", "refresh"),
            ("cache-control", "no-store")
        ]),
        Wish::Bypass
    );
}

const STREAM: &str = concat!(
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":7,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n",
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":7,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"},\"finish_reason\":null}]}\n\n",
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":7,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo 世界\"},\"finish_reason\":null}]}\n\n",
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":7,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"get\",\"arguments\":\"{\\\"a\\\":\"}}]},\"finish_reason\":null}]}\n\n",
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":7,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"1}\"}}]},\"finish_reason\":null}]}\n\n",
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":7,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n",
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":7,\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":3,\"total_tokens\":8}}\n\n",
    ": x-tollgate-cost 0.001 USD\n\n",
    "data: [DONE]\n\n",
);

#[test]
fn a_stream_assembles_into_a_completion_and_replays_into_the_same() {
    let c = assemble(STREAM.as_bytes()).unwrap();
    assert_eq!(c["object"], "chat.completion");
    assert_eq!(c["id"], "c1");
    let m = &c["choices"][0]["message"];
    assert_eq!(m["content"], "Hello 世界");
    assert_eq!(m["tool_calls"][0]["id"], "call_1");
    assert_eq!(m["tool_calls"][0]["function"]["arguments"], "{\"a\":1}");
    assert_eq!(c["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(c["usage"]["total_tokens"], 8);
    assert!(keepable(&c, false));
    // Replayed and assembled again: the same answer; the usage chunk only when asked.
    let again = assemble(&replay_sse(&c, true)).unwrap();
    assert_eq!(again, c);
    let bare = replay_sse(&c, false);
    let text = String::from_utf8(bare.clone()).unwrap();
    assert!(
        !text.contains("usage") && text.ends_with("data: [DONE]\n\n"),
        "{text}"
    );
    for line in text.lines().filter(|l| l.starts_with("data: {")) {
        let v: Value = serde_json::from_str(&line[6..]).unwrap();
        assert_eq!(v["object"], "chat.completion.chunk");
    }
}

#[test]
fn incomplete_or_failed_answers_are_not_kept() {
    let cut = STREAM.replace("data: [DONE]\n\n", "");
    assert!(assemble(cut.as_bytes()).is_none(), "no [DONE]: cut");
    let error = format!(
        "{}data: {{\"error\":{{\"message\":\"x\"}}}}\n\n",
        &STREAM[..200]
    );
    assert!(assemble(error.as_bytes()).is_none());
    let length = json!({"object": "chat.completion", "choices": [{"finish_reason": "length"}]});
    assert!(!keepable(&length, false));
    assert!(keepable(&length, true));
    assert!(!keepable(&json!({"choices": []}), true));
    assert!(!keepable(
        &json!({"choices": [{"finish_reason": "content_filter"}]}),
        true
    ));
}

#[test]
fn whole_answers_are_checked_without_a_tree() {
    let ok = br#"{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"hi","tool_calls":null},"finish_reason":"stop"}],"usage":{"prompt_tokens":1}}"#;
    assert_eq!(keepable_whole(ok, false), Some(false));
    let tools = br#"{"object":"chat.completion","choices":[{"message":{"tool_calls":[{"id":"c"}]},"finish_reason":"tool_calls"}]}"#;
    assert_eq!(keepable_whole(tools, false), Some(true));
    let cut =
        br#"{"object":"chat.completion","choices":[{"message":{},"finish_reason":"length"}]}"#;
    assert_eq!(keepable_whole(cut, false), None);
    assert_eq!(keepable_whole(cut, true), Some(false));
    for bad in [
        &br#"{"object":"error"}"#[..],
        b"not json",
        br#"{"object":"chat.completion","choices":[]}"#,
    ] {
        assert_eq!(keepable_whole(bad, true), None);
    }
    // Agrees with the tree's check.
    let v: Value = serde_json::from_slice(ok).unwrap();
    assert!(keepable(&v, false));
}

#[test]
fn a_key_is_written_and_read_as_hex() {
    let k = key_bytes(Hashing::Shared, "chat", "global", br#"{"model":"m"}"#).unwrap();
    let hex = k.hex();
    assert_eq!(hex.len(), 64);
    assert!(hex.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(Key::from_hex(&hex), Some(k));
    assert_eq!(Key::from_hex("not hex"), None);
    assert_eq!(Key::from_hex(&hex[..62]), None);
}

#[test]
fn the_scope_names_whose_requests_share_entries() {
    use CacheScope::*;
    let cases = [
        (Consumer, Some("alice"), Some("red"), "consumer:alice"),
        (Consumer, None, None, "anonymous:chat"),
        (Team, Some("alice"), Some("red"), "team:red"),
        (Team, Some("alice"), None, "consumer:alice"),
        (Team, None, None, "anonymous:chat"),
        (Route, Some("alice"), Some("red"), "route:chat"),
        (Global, Some("alice"), Some("red"), "global"),
    ];
    for (s, consumer, team, want) in cases {
        assert_eq!(
            scope(s, consumer, team, "chat"),
            want,
            "{s:?} {consumer:?} {team:?}"
        );
    }
}

#[test]
fn route_counters_count_each_verdict_under_its_label() {
    let counters = Counters::new("counters-test-route");
    let m = &crate::metrics::METRICS;
    let seen = |v: Verdict| {
        m.cache_lookups
            .with_label_values(&["counters-test-route", v.as_str()])
            .get()
    };
    counters.looked_up(Verdict::Miss);
    counters.looked_up(Verdict::Miss);
    counters.looked_up(Verdict::HitSemantic);
    counters.stored();
    assert_eq!(seen(Verdict::Miss), 2);
    assert_eq!(seen(Verdict::HitSemantic), 1);
    assert_eq!(seen(Verdict::Hit), 0);
    assert_eq!(seen(Verdict::Bypass), 0);
    for (i, v) in Verdict::ALL.into_iter().enumerate() {
        assert_eq!(v as usize, i, "{v:?} in its place");
    }
    assert_eq!(
        m.cache_stored
            .with_label_values(&["counters-test-route"])
            .get(),
        1
    );
}

#[test]
fn an_entry_travels_as_json_text_with_its_names() {
    let names = Names::new("p", "up-model", "", "m", "consumer:alice");
    assert_eq!(
        [
            names.provider(),
            names.upstream_model(),
            names.route(),
            names.model(),
            names.scope()
        ],
        ["p", "up-model", "", "m", "consumer:alice"]
    );
    let entry = Entry {
        completion: bytes::Bytes::from_static("{\"x\":\"世界\"}".as_bytes()),
        input_tokens: 1,
        output_tokens: 2,
        cached_tokens: 0,
        reasoning_tokens: 0,
        names,
    };
    let text = serde_json::to_string(&entry).unwrap();
    // The shape Redis has always held: the answer as a string, each name a field.
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["completion"], "{\"x\":\"世界\"}");
    assert_eq!(v["upstream_model"], "up-model");
    assert_eq!(v["scope"], "consumer:alice");
    assert_eq!(serde_json::from_str::<Entry>(&text).unwrap(), entry);
}

#[test]
fn names_holding_any_bytes_never_make_two_keys_one() {
    let body = crate::body::Utf8::check(br#"{"model":"m"}"#).unwrap();
    for hashing in [Hashing::Shared, Hashing::Local] {
        let keys = [
            key_in(hashing, "a\0b", "c", "", body),
            key_in(hashing, "a", "b\0c", "", body),
            key_in(hashing, "a", "b", "anthropic", body),
            key_in(hashing, "a", "b\0\u{9}\0\0\0\0\0\0\0anthropic", "", body),
            key(hashing, "a", "b", body),
        ];
        for (i, k) in keys.iter().enumerate() {
            assert!(k.is_some());
            for other in &keys[i + 1..] {
                assert_ne!(k, other, "{hashing:?}");
            }
        }
    }
}
