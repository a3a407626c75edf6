//! Decorators and templates: exact bodies, the untouched buffer, escaping, every refusal.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

fn built(yaml: &str) -> Result<Prompts, FieldError> {
    let text = format!("listeners:\n  proxy:\n    - address: 127.0.0.1:1\n{yaml}");
    let s = crate::settings::from_yaml(&text).unwrap();
    Prompts::build(&s)
}

const DECORATED: &str = r#"
routes:
  - name: chat
    models: []
    decorators:
      prepend: [{role: system, content: "Route ${route}, consumer ${consumer}, model ${model}, day ${date}, cost $$5"}]
      append: [{role: user, content: "Answer briefly."}]
  - name: plain
    models: []
consumers:
  - name: ann
    decorators:
      prepend: [{role: user, content: "I am ${consumer}."}]
"#;

fn body(s: &str) -> RequestBody {
    RequestBody::parse(Bytes::from(s.to_string())).unwrap()
}

fn cx(consumer: &str) -> DecoratorContext<'_> {
    DecoratorContext {
        consumer,
        route: "chat",
        model: "m",
        date: "2026-12-01",
    }
}

fn decorated(p: &Prompts, wire: Wire, consumer: Option<&str>, input: &str) -> String {
    let b = body(input);
    let layers = [
        Some(&p.routes[0]),
        consumer.and_then(|c| p.consumers.get(c)),
    ];
    let rw = decorate(&b, wire, layers, &cx(consumer.unwrap_or(""))).unwrap();
    let out = rw.apply(b.bytes());
    assert_eq!(out.len(), rw.output_len(b.bytes().len()));
    serde_json::from_slice::<serde_json::Value>(&out).expect("valid JSON");
    String::from_utf8(out.to_vec()).unwrap()
}

const SYS: &str = "Route chat, consumer ann, model m, day 2026-12-01, cost $5";

#[test]
fn openai_messages_spliced_byte_for_byte() {
    let p = built(DECORATED).unwrap();
    let out = decorated(
        &p,
        Wire::OpenAi,
        Some("ann"),
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0.5}"#,
    );
    let expected = format!(
        r#"{{"model":"m","messages":[{{"role":"system","content":"{SYS}"}},{{"role":"user","content":"I am ann."}},{{"role":"user","content":"hi"}},{{"role":"user","content":"Answer briefly."}}],"temperature":0.5}}"#
    );
    assert_eq!(out, expected);
}

#[test]
fn empty_and_missing_messages() {
    let p = built(DECORATED).unwrap();
    let sys = SYS.replace("consumer ann", "consumer ");
    let out = decorated(&p, Wire::OpenAi, None, r#"{"model":"m","messages":[ ]}"#);
    assert_eq!(
        out,
        format!(
            r#"{{"model":"m","messages":[{{"role":"system","content":"{sys}"}},{{"role":"user","content":"Answer briefly."}} ]}}"#
        )
    );
    let out = decorated(&p, Wire::OpenAi, None, r#"{"model":"m"}"#);
    assert_eq!(
        out,
        format!(
            r#"{{"messages":[{{"role":"system","content":"{sys}"}},{{"role":"user","content":"Answer briefly."}}],"model":"m"}}"#
        )
    );
}

#[test]
fn anthropic_system_gets_the_system_messages() {
    let p = built(DECORATED).unwrap();
    let sys = SYS.replace("consumer ann", "consumer ");
    let block = format!(r#"{{"type":"text","text":"{sys}"}}"#);
    let tail = r#"{"role":"user","content":"Answer briefly."}"#;
    let cases = [
        (
            r#"{"model":"m","system":"Be kind.","messages":[{"role":"user","content":"hi"}]}"#,
            format!(
                r#"{{"model":"m","system":[{block},{{"type":"text","text":"Be kind."}}],"messages":[{{"role":"user","content":"hi"}},{tail}]}}"#
            ),
        ),
        (
            r#"{"model":"m","system":[{"type":"text","text":"x"}],"messages":[]}"#,
            format!(
                r#"{{"model":"m","system":[{block},{{"type":"text","text":"x"}}],"messages":[{tail}]}}"#
            ),
        ),
        (
            r#"{"model":"m","messages":[]}"#,
            format!(r#"{{"system":[{block}],"model":"m","messages":[{tail}]}}"#),
        ),
        (
            r#"{"model":"m","system":null,"messages":[]}"#,
            format!(r#"{{"model":"m","system":[{block}],"messages":[{tail}]}}"#),
        ),
    ];
    for (input, expected) in cases {
        assert_eq!(
            decorated(&p, Wire::Anthropic, None, input),
            expected,
            "{input}"
        );
    }
}

#[test]
fn a_route_without_decorators_leaves_the_same_bytes() {
    let p = built(DECORATED).unwrap();
    let b = body(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#);
    let rw = decorate(&b, Wire::OpenAi, [Some(&p.routes[1]), None], &cx("")).unwrap();
    assert!(rw.is_empty());
    assert_eq!(rw.apply(b.bytes()).as_ptr(), b.bytes().as_ptr());
    let rw = decorate(&b, Wire::OpenAi, [None, None], &cx("")).unwrap();
    assert_eq!(rw.apply(b.bytes()).as_ptr(), b.bytes().as_ptr());
}

#[test]
fn messages_of_the_wrong_shape_are_refused() {
    let p = built(DECORATED).unwrap();
    for input in [
        r#"{"model":"m","messages":"hi"}"#,
        r#"{"model":"m","messages":null}"#,
    ] {
        let b = body(input);
        let e = decorate(&b, Wire::OpenAi, [Some(&p.routes[0]), None], &cx("")).unwrap_err();
        assert_eq!((e.status(), e.code()), (400, "invalid_request"), "{input}");
        assert!(e.to_string().contains("`messages`"), "{e}");
    }
    let b = body(r#"{"model":"m","system":5,"messages":[]}"#);
    let e = decorate(&b, Wire::Anthropic, [Some(&p.routes[0]), None], &cx("")).unwrap_err();
    assert!(e.to_string().contains("`system`"), "{e}");
}

#[test]
fn decorator_settings_are_checked() {
    let bad = [
        (
            "routes: [{name: r, models: [], decorators: {prepend: [{role: user, content: 'x ${user}'}]}}]",
            "routes[0] (r).decorators.prepend[0].content",
            "${user}",
        ),
        (
            "routes: [{name: r, models: [], decorators: {append: [{role: assistant, content: x}]}}]",
            "routes[0] (r).decorators.append[0].role",
            "system",
        ),
        (
            "consumers: [{name: c, decorators: {prepend: [{role: user, content: 'x ${route'}]}}]",
            "consumers[0] (c).decorators.prepend[0].content",
            "unterminated",
        ),
    ];
    for (yaml, field, needle) in bad {
        let (f, e) = built(yaml).unwrap_err();
        assert_eq!(f, field, "{yaml}");
        assert!(e.contains(needle), "{e}");
    }
}

const TEMPLATES: &str = r#"
templates:
  - name: summarise
    model: mock-model
    messages:
      - {role: system, content: "You summarise in {{ words }} words, tone {{tone}}, strict={{strict}}."}
      - {role: user, content: "Text: {{text}}"}
    variables:
      text: {type: string}
      words: {type: number, default: 50}
      tone: {type: enum, values: [dry, warm], default: dry}
      strict: {type: boolean, default: false}
"#;

fn expanded(wire: Wire, input: &str) -> Result<String, GatewayError> {
    let p = built(TEMPLATES).unwrap();
    let out = expand(&p.templates, wire, &Bytes::from(input.to_string()))?
        .expect("a template is invoked");
    let text = String::from_utf8(out.to_vec()).unwrap();
    // The result is a request the gateway reads as any other.
    RequestBody::parse(out).unwrap();
    Ok(text)
}

#[test]
fn templates_expand_with_escaped_values() {
    let out = expanded(
        Wire::OpenAi,
        r#"{"model":"template:summarise","variables":{"text":"He said \"hi\"\n</end> \u00e9","words":20},"stream":true}"#,
    )
    .unwrap();
    assert_eq!(
        out,
        r#"{"model":"mock-model","messages":[{"role":"system","content":"You summarise in 20 words, tone dry, strict=false."},{"role":"user","content":"Text: He said \"hi\"\n</end> é"}],"stream":true}"#
    );
    // The `template` field, the client's messages after the template's, and every type.
    let out = expanded(
        Wire::OpenAi,
        r#"{"template":"summarise","variables":{"text":"x","tone":"warm","strict":true,"words":2.5},"messages":[{"role":"user","content":"more"}]}"#,
    )
    .unwrap();
    assert_eq!(
        out,
        r#"{"model":"mock-model","messages":[{"role":"system","content":"You summarise in 2.5 words, tone warm, strict=true."},{"role":"user","content":"Text: x"},{"role":"user","content":"more"}]}"#
    );
}

#[test]
fn anthropic_templates_put_system_messages_in_system() {
    let out = expanded(
        Wire::Anthropic,
        r#"{"model":"template:summarise","variables":{"text":"x"},"max_tokens":5}"#,
    )
    .unwrap();
    assert_eq!(
        out,
        r#"{"model":"mock-model","messages":[{"role":"user","content":"Text: x"}],"system":[{"type":"text","text":"You summarise in 50 words, tone dry, strict=false."}],"max_tokens":5}"#
    );
}

#[test]
fn every_bad_invocation_is_a_400_naming_it() {
    let cases = [
        (r#"{"model":"template:nope"}"#, "`nope`"),
        (r#"{"template":"summarise"}"#, "`text`"),
        (
            r#"{"template":"summarise","variables":{"text":"x","colour":"red"}}"#,
            "`colour`",
        ),
        (
            r#"{"template":"summarise","variables":{"text":1}}"#,
            "`text` of template `summarise` must be a string",
        ),
        (
            r#"{"template":"summarise","variables":{"text":"x","words":"many"}}"#,
            "`words` of template `summarise` must be a number",
        ),
        (
            r#"{"template":"summarise","variables":{"text":"x","strict":"yes"}}"#,
            "must be a boolean",
        ),
        (
            r#"{"template":"summarise","variables":{"text":"x","tone":"loud"}}"#,
            "must be one of dry, warm, not `loud`",
        ),
        (
            r#"{"template":"summarise","variables":["x"]}"#,
            "must be an object",
        ),
        (r#"{"template":7}"#, "`template` field"),
    ];
    for (input, needle) in cases {
        let e = expanded(Wire::OpenAi, input).unwrap_err();
        assert_eq!(e.status(), 400, "{input}");
        assert_eq!(e.kind(), "invalid_request_error", "{input}");
        assert_eq!(e.code(), "invalid_template", "{input}");
        assert!(e.to_string().contains(needle), "{input}: {e}");
    }
}

#[test]
fn bodies_without_a_template_are_left_alone() {
    let p = built(TEMPLATES).unwrap();
    for input in [
        r#"{"model":"mock-model","messages":[]}"#,
        r#"{"model":"mock-model","messages":[{"role":"user","content":"a template: no"}]}"#,
        "not json template",
    ] {
        let b = Bytes::from(input.to_string());
        assert!(
            expand(&p.templates, Wire::OpenAi, &b).unwrap().is_none(),
            "{input}"
        );
    }
    let none = built("").unwrap();
    let b = Bytes::from_static(br#"{"model":"template:summarise"}"#);
    assert!(expand(&none.templates, Wire::OpenAi, &b).unwrap().is_none());
}

#[test]
fn template_settings_are_checked() {
    let t = |rest: &str| format!("templates: [{{name: t, model: m, {rest}}}]");
    let bad = [
        (
            t("messages: [{role: user, content: '{{x}}'}]"),
            "templates[0] (t).messages[0].content",
            "`{{x}}`",
        ),
        (
            t("messages: [{role: user, content: '{{x'}], variables: {x: {type: string}}"),
            "templates[0] (t).messages[0].content",
            "unterminated",
        ),
        (
            t("messages: [{role: user, content: a}], variables: {x: {type: enum}}"),
            "templates[0] (t).variables.x.values",
            "values",
        ),
        (
            t("messages: [{role: user, content: a}], variables: {x: {type: number, default: ten}}"),
            "templates[0] (t).variables.x.default",
            "number",
        ),
        (
            t("messages: []"),
            "templates[0] (t).messages",
            "at least one",
        ),
        (
            "templates: [{name: t, model: 'template:u', messages: [{role: user, content: a}]}]"
                .to_string(),
            "templates[0] (t).model",
            "not a template",
        ),
        (
            "templates: [{name: t, model: m, messages: [{role: user, content: a}]}, {name: t, model: m, messages: [{role: user, content: a}]}]"
                .to_string(),
            "templates[1] (t).name",
            "comes before",
        ),
    ];
    for (yaml, field, needle) in bad {
        let (f, e) = built(&yaml).unwrap_err();
        assert_eq!(f, field, "{yaml}");
        assert!(e.contains(needle), "{yaml}: {e}");
    }
}
