//! The content policies' own tests: detectors and their checksums, mask → restore round
//! trips under every chunking of a stream, the hold-back bounds, and the deny window.

use super::deny::DenyPolicy;
use super::pii::{cn_id_valid, luhn_valid, PiiPolicy, Vault};
use super::restore::{Filtered, ResponsePolicy};
use super::text::Shape;
use crate::settings::{DenyListSection, DenySection, PiiDetector, PiiSection};
use bytes::Bytes;
use std::sync::Arc;

fn all_detectors() -> PiiPolicy {
    PiiPolicy::build(&PiiSection::default()).unwrap()
}

/// The values found in `text`, with their detector names.
fn found(text: &str) -> Vec<(String, String)> {
    let p = all_detectors();
    p.find(text)
        .iter()
        .map(|f| (p.name(f).to_string(), text[f.start..f.end].to_string()))
        .collect()
}

fn one(kind: &str, value: &str) -> Vec<(String, String)> {
    vec![(kind.to_string(), value.to_string())]
}

#[test]
fn checksums() {
    assert!(cn_id_valid("11010519491231002X"));
    assert!(cn_id_valid("11010519491231002x"));
    assert!(cn_id_valid("440304199001011233"));
    assert!(!cn_id_valid("440304199001011234"));
    assert!(!cn_id_valid("11010519491231002"));
    assert!(luhn_valid("4111111111111111"));
    assert!(
        luhn_valid("6222 0200 0000 0000 000"),
        "a 19-digit UnionPay number"
    );
    assert!(luhn_valid("4111-1111-1111-1111"));
    assert!(!luhn_valid("4111111111111112"));
    assert!(!luhn_valid("411111111111"), "too short");
}

#[test]
fn emails_and_ips() {
    assert_eq!(
        found("mail me: a.b+c@example.co.uk!"),
        one("email", "a.b+c@example.co.uk")
    );
    assert_eq!(
        found("联系alice@example.com谢谢"),
        one("email", "alice@example.com")
    );
    assert_eq!(found("host 192.168.1.20 is up"), one("ip", "192.168.1.20"));
    assert_eq!(found("服务器10.0.0.1宕机"), one("ip", "10.0.0.1"));
    assert_eq!(
        found("v6 2001:db8::8a2e:370:7334 ok"),
        one("ip", "2001:db8::8a2e:370:7334")
    );
    assert!(found("999.1.1.1 and 1.2.3 and 12:30:45").is_empty());
    assert!(found("version 1.2.3.4.5").is_empty());
}

#[test]
fn phones() {
    assert_eq!(found("call 13812345678 now"), one("phone", "13812345678"));
    assert_eq!(
        found("我的手机13812345678谢谢"),
        one("phone", "13812345678")
    );
    assert_eq!(
        found("tel +86 138 1234 5678."),
        one("phone", "+86 138 1234 5678")
    );
    assert_eq!(found("tel +8613812345678"), one("phone", "+8613812345678"));
    assert_eq!(
        found("US +1 415 555 0100 office"),
        one("phone", "+1 415 555 0100")
    );
    assert_eq!(
        found("UK +44 20 7946 0958"),
        one("phone", "+44 20 7946 0958")
    );
    // Not a mobile prefix, part of a longer number, or too short.
    assert!(found("12345678901").is_empty());
    assert!(found("order 1381234567890123").is_empty());
    assert!(found("+1 23").is_empty());
}

#[test]
fn id_cards_and_bank_cards() {
    assert_eq!(
        found("身份证11010519491231002X。"),
        one("cn_id", "11010519491231002X")
    );
    assert_eq!(
        found("id 440304199001011233"),
        one("cn_id", "440304199001011233")
    );
    assert!(found("id 440304199001011234")
        .iter()
        .all(|(k, _)| k != "cn_id"));
    assert_eq!(
        found("card 4111 1111 1111 1111."),
        one("bank_card", "4111 1111 1111 1111")
    );
    assert_eq!(
        found("卡号4111111111111111"),
        one("bank_card", "4111111111111111")
    );
    assert!(found("card 4111111111111112").is_empty());
}

#[test]
fn api_keys() {
    let k = "sk-proj-abcdefghijklmnop1234";
    assert_eq!(found(&format!("key={k} ok")), one("api_key", k));
    assert_eq!(
        found("AKIAIOSFODNN7EXAMPLE"),
        one("api_key", "AKIAIOSFODNN7EXAMPLE")
    );
    let hex = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    assert_eq!(found(hex), one("api_key", hex));
    let b62 = "aZ3kQ9xLm2PqR7sT1uVwX4yB6cD8eF0g";
    assert_eq!(found(b62), one("api_key", b62));
    // Long words and plain numbers are not keys.
    assert!(found("pneumonoultramicroscopicsilicovolcanoconiosis").is_empty());
    assert!(found("sk-short").is_empty());
}

#[test]
fn detectors_can_be_chosen_and_added() {
    let s = PiiSection {
        detectors: Some(vec![PiiDetector::Email]),
        custom: vec![crate::settings::CustomDetectorSection {
            name: "ticket".into(),
            regex: r"TCK-\d{4}".into(),
        }],
        ..Default::default()
    };
    let p = PiiPolicy::build(&s).unwrap();
    let mut v = Vault::default();
    let mut t = "a@b.io 13812345678 TCK-1234 a@b.io".to_string();
    assert!(p.mask(&mut t, &mut v));
    assert_eq!(t, "[PII_EMAIL_1] 13812345678 [PII_TICKET_1] [PII_EMAIL_1]");
    for (name, regex) in [("bad name", "x"), ("ok", "("), ("ok", "a*")] {
        let s = PiiSection {
            custom: vec![crate::settings::CustomDetectorSection {
                name: name.into(),
                regex: regex.into(),
            }],
            ..Default::default()
        };
        assert!(PiiPolicy::build(&s).is_err(), "{name} {regex}");
    }
}

/// The original text with values of every kind in Chinese, emoji and ASCII text.
const ORIGINAL: &str = "你好 alice@example.com 🚀，电话13812345678、+1 415 555 0100；\
IP 10.0.0.1 卡4111111111111111 again alice@example.com key sk-abcdefghijklmnop1234 完";

fn masked_and_vault() -> (String, Vault) {
    let mut v = Vault::default();
    let mut t = ORIGINAL.to_string();
    assert!(all_detectors().mask(&mut t, &mut v));
    (t, v)
}

#[test]
fn same_value_same_placeholder() {
    let (masked, vault) = masked_and_vault();
    assert_eq!(masked.matches("[PII_EMAIL_1]").count(), 2, "{masked}");
    for secret in [
        "alice@",
        "13812345678",
        "415 555",
        "10.0.0.1",
        "4111",
        "sk-abc",
    ] {
        assert!(!masked.contains(secret), "{secret} in {masked}");
    }
    assert_eq!(vault.restore(&masked), ORIGINAL);
    // Unknown or unfinished placeholders stay as they are.
    assert_eq!(
        vault.restore("[PII_EMAIL_9] [PII_EMA [x]"),
        "[PII_EMAIL_9] [PII_EMA [x]"
    );
}

/// An OpenAI chat stream whose content pieces concatenate to `text`, pieces of `step`
/// characters, each event with CRLF or LF ends.
fn chat_stream(text: &str, step: usize) -> Vec<u8> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::new();
    let head = r#"{"choices":"#;
    out.push_str(&format!(
        "data: {head}[{{\"delta\":{{\"role\":\"assistant\"}}}}]}}\n\n"
    ));
    for (i, piece) in chars.chunks(step).enumerate() {
        let piece: String = piece.iter().collect();
        let content = serde_json::to_string(&piece).unwrap();
        let end = if i % 2 == 0 { "\n\n" } else { "\r\n\r\n" };
        out.push_str(&format!(
            "data: {head}[{{\"delta\":{{\"content\":{content}}}}}]}}{end}"
        ));
    }
    out.push_str(&format!(
        "data: {head}[{{\"delta\":{{}},\"finish_reason\":\"stop\"}}]}}\n\n"
    ));
    out.push_str("data: [DONE]\n\n");
    out.into_bytes()
}

/// The content a client reads from an OpenAI stream, and whether it saw a content filter
/// finish, an error event and `[DONE]`.
#[derive(Debug, Default, PartialEq)]
struct Read {
    content: String,
    filtered: bool,
    error: bool,
    done: bool,
}

fn read(stream: &[u8]) -> Read {
    let mut r = Read::default();
    let mut parser = crate::sse::SseParser::new();
    let mut events = Vec::new();
    parser.push(stream, |e| events.push(e));
    assert!(parser.finish(|e| events.push(e)).is_empty());
    for e in events {
        assert!(!r.done, "nothing after [DONE]");
        if e.data == "[DONE]" {
            r.done = true;
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(&e.data).unwrap();
        if v.get("error").is_some() {
            assert_eq!(v["error"]["code"], "content_policy_violation");
            r.error = true;
            continue;
        }
        assert!(!r.error, "no chunk after the error event");
        for c in v["choices"].as_array().unwrap() {
            if let Some(s) = c["delta"]["content"].as_str() {
                r.content.push_str(s);
            }
            r.filtered |= c["finish_reason"] == "content_filter";
        }
    }
    r
}

/// Run `policy` over `stream` cut at `cuts`; the client's bytes, checking the bounds.
fn run(policy: &ResponsePolicy, stream: &[u8], cuts: &[usize], bound: (usize, usize)) -> Vec<u8> {
    let mut f = policy.stream();
    let mut out = Vec::new();
    let mut at = 0;
    let ends = cuts.iter().copied().chain([stream.len()]);
    for end in ends {
        match f.push(&Bytes::copy_from_slice(&stream[at..end])) {
            Filtered::Pass(b) => out.extend_from_slice(&b),
            Filtered::Blocked(b) => {
                out.extend_from_slice(&b);
                out.extend_from_slice(&crate::proxy::pipe::content_filter_end(
                    crate::protocol::ClientProtocol::OpenAi,
                ));
                return out;
            }
        }
        let (r, d) = f.held_chars();
        assert!(r <= bound.0 && d <= bound.1, "held {r}/{d} over {bound:?}");
        at = end;
    }
    match f.finish() {
        Filtered::Pass(b) => out.extend_from_slice(&b),
        Filtered::Blocked(_) => panic!("blocked at the end"),
    }
    out
}

fn restore_policy() -> (ResponsePolicy, String, usize) {
    let (masked, vault) = masked_and_vault();
    let longest = vault.longest();
    let p = ResponsePolicy::new(Some(vault), None, Shape::Chat).unwrap();
    (p, masked, longest)
}

#[test]
fn restore_survives_every_split_of_a_stream() {
    let (policy, masked, longest) = restore_policy();
    for step in [3, 7] {
        let stream = chat_stream(&masked, step);
        for cut in 0..=stream.len() {
            let out = run(&policy, &stream, &[cut], (longest - 1, 0));
            let r = read(&out);
            assert_eq!(r.content, ORIGINAL, "step {step} cut {cut}");
            assert!(r.done && !r.error && !r.filtered);
        }
    }
    assert!(policy
        .actions()
        .contains(&super::Action::new("pii", "restored")));
}

#[test]
fn restore_survives_every_pair_of_splits_of_a_short_stream() {
    let mut vault = Vault::default();
    let original = "邮a@b.io🚀13812345678";
    let mut text = original.to_string();
    assert!(all_detectors().mask(&mut text, &mut vault));
    let longest = vault.longest();
    let policy = ResponsePolicy::new(Some(vault), None, Shape::Chat).unwrap();
    let stream = chat_stream(&text, 9);
    assert!(stream.len() < 400, "{}", stream.len());
    for a in 0..=stream.len() {
        for b in a..=stream.len() {
            let r = read(&run(&policy, &stream, &[a, b], (longest - 1, 0)));
            assert_eq!(r.content, original, "cuts {a} {b}");
        }
    }
}

fn deny(keywords: &[&str], case_insensitive: bool, holdback: usize) -> Arc<DenyPolicy> {
    let list = DenyListSection {
        keywords: keywords.iter().map(|k| k.to_string()).collect(),
        regex: vec![r"forbidden-\d+".into()],
        case_insensitive,
    };
    Arc::new(
        DenyPolicy::build(&DenySection {
            input: Some(list.clone()),
            output: Some(list),
            holdback: Some(holdback),
        })
        .unwrap(),
    )
}

#[test]
fn deny_lists_match_anywhere() {
    let d = deny(&["违禁", "Secret"], true, 64);
    let list = d.input.as_ref().unwrap();
    assert!(list.matches("这是违禁词"));
    assert!(list.matches("topSECRETs"));
    assert!(list.matches("a forbidden-42 b"));
    assert!(!list.matches("违 禁 and secre t"));
    let exact = deny(&["Secret"], false, 64);
    assert!(!exact.input.as_ref().unwrap().matches("secret"));
    assert!(exact.input.as_ref().unwrap().matches("Secret"));
    for bad in [0, super::deny::MAX_HOLDBACK + 1] {
        let s = DenySection {
            holdback: Some(bad),
            ..Default::default()
        };
        assert!(DenyPolicy::build(&s).is_err());
    }
}

#[test]
fn deny_window_catches_a_keyword_split_anywhere() {
    let holdback = 8;
    let policy =
        ResponsePolicy::new(None, Some(deny(&["违禁词"], false, holdback)), Shape::Chat).unwrap();
    let text = "前面的文字很长很长，这里有违禁词，后面还有。";
    let before = "前面的文字很长很长，这里有";
    for step in [1, 2, 5] {
        let stream = chat_stream(text, step);
        for cut in 0..=stream.len() {
            let r = read(&run(&policy, &stream, &[cut], (0, holdback)));
            assert!(
                r.filtered && r.error && r.done,
                "step {step} cut {cut}: {r:?}"
            );
            assert!(!r.content.contains('违'), "part of the keyword was sent");
            assert!(before.starts_with(&r.content), "{}", r.content);
        }
    }
    assert!(policy
        .actions()
        .contains(&super::Action::new("deny_output", "blocked")));
    // Clean text passes whole, however it is cut.
    let clean = "没有问题的文字 with no keyword at all";
    let stream = chat_stream(clean, 3);
    for cut in 0..=stream.len() {
        let r = read(&run(&policy, &stream, &[cut], (0, holdback)));
        assert_eq!(r.content, clean);
        assert!(!r.filtered && !r.error && r.done);
    }
}

#[test]
fn restore_then_deny_on_the_restored_text() {
    let mut vault = Vault::default();
    let mut text = "write to bob@corp.example please".to_string();
    all_detectors().mask(&mut text, &mut vault);
    let policy = ResponsePolicy::new(
        Some(vault),
        Some(deny(&["corp.example"], false, 16)),
        Shape::Chat,
    )
    .unwrap();
    let r = read(&run(&policy, &chat_stream(&text, 2), &[], (64, 16)));
    assert!(r.filtered && r.error);
}

#[test]
fn whole_answers_are_restored_or_withheld() {
    let (policy, masked, _) = restore_policy();
    let body = serde_json::json!({"choices": [{"index": 0, "message":
        {"role": "assistant", "content": masked}, "finish_reason": "stop"}]});
    let out = policy.whole(&serde_json::to_vec(&body).unwrap());
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], ORIGINAL);
    let policy = ResponsePolicy::new(None, Some(deny(&["坏"], false, 4)), Shape::Chat).unwrap();
    let body = serde_json::json!({"choices": [{"index": 0, "message":
        {"role": "assistant", "content": "好坏"}, "finish_reason": "stop"}]});
    let out = policy.whole(&serde_json::to_vec(&body).unwrap());
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["choices"][0]["finish_reason"], "content_filter");
    assert!(v["choices"][0]["message"]["content"].is_null());
}

#[test]
fn anthropic_text_deltas_are_restored() {
    let mut vault = Vault::default();
    let mut text = "mail a@b.io now".to_string();
    all_detectors().mask(&mut text, &mut vault);
    let policy = ResponsePolicy::new(Some(vault), None, Shape::Messages).unwrap();
    let mut stream = String::from("event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n");
    let chars: Vec<char> = text.chars().collect();
    for piece in chars.chunks(3) {
        let piece: String = piece.iter().collect();
        let delta = serde_json::json!({"type": "content_block_delta", "index": 0,
            "delta": {"type": "text_delta", "text": piece}});
        stream.push_str(&format!("event: content_block_delta\ndata: {delta}\n\n"));
    }
    stream.push_str(
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
    );
    let out = run(&policy, stream.as_bytes(), &[], (64, 0));
    let mut parser = crate::sse::SseParser::new();
    let mut got = String::new();
    parser.push(&out, |e| {
        let v: serde_json::Value = serde_json::from_str(&e.data).unwrap();
        if let Some(t) = v["delta"]["text"].as_str() {
            got.push_str(t);
        }
    });
    assert_eq!(got, "mail a@b.io now");
}
