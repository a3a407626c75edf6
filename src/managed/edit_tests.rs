use super::*;
use serde_json::json;

const FILE: &str = r#"
listeners:
  proxy: [{address: "127.0.0.1:8080"}]
providers:
  - {name: filed, type: openai, api_keys: [k]}
"#;

fn file() -> Settings {
    crate::settings::from_yaml(FILE).unwrap()
}

fn provider(layer: &Layer, name: &str) -> ProviderSection {
    layer
        .providers
        .iter()
        .find(|p| p.name == name)
        .unwrap()
        .clone()
}

#[test]
fn create_replace_patch_delete() {
    let (file, mut layer) = (file(), Layer::default());
    let body = json!({"name": "p", "type": "deepseek", "api_keys": ["sk-aaaaaaaaaaaa1111", "sk-bbbbbbbbbbbb2222"]});
    apply(
        &mut layer,
        &file,
        Op::Create(Collection::Providers, body.clone()),
    )
    .unwrap();
    let p = provider(&layer, "p");
    let names: Vec<_> = p.api_keys.iter().map(|k| key_name(k).unwrap()).collect();
    assert_eq!(names, ["key-1", "key-2"], "unnamed keys get names");
    let again = apply(&mut layer, &file, Op::Create(Collection::Providers, body));
    assert!(
        matches!(again, Err(ManagedError::Exists { .. })),
        "{again:?}"
    );
    let filed = json!({"name": "filed", "type": "openai"});
    for op in [
        Op::Create(Collection::Providers, filed.clone()),
        Op::Replace(Collection::Providers, "filed".into(), filed.clone()),
        Op::Patch(Collection::Providers, "filed".into(), json!({})),
        Op::Delete(Collection::Providers, "filed".into()),
        Op::DeleteKey {
            provider: "filed".into(),
            key: "x".into(),
        },
    ] {
        let e = apply(&mut layer, &file, op).unwrap_err();
        assert!(matches!(e, ManagedError::FromFile { .. }), "{e:?}");
        assert!(e.to_string().contains("defined in the config file"), "{e}");
    }
    // A patch keeps what it does not name; a masked key sent back keeps its secret.
    let shown = crate::settings::Settings {
        providers: layer.providers.clone(),
        ..file.clone()
    }
    .redacted();
    let masked = serde_json::to_value(&shown.providers[0].api_keys).unwrap();
    assert_eq!(masked[0]["key"], "sk-…1111");
    apply(
        &mut layer,
        &file,
        Op::Patch(
            Collection::Providers,
            "p".into(),
            json!({"api_keys": masked, "models": ["m"]}),
        ),
    )
    .unwrap();
    let p = provider(&layer, "p");
    assert_eq!(p.models, ["m"]);
    assert!(
        matches!(&p.api_keys[0], KeyEntry::Named(k) if k.key.as_written() == "sk-aaaaaaaaaaaa1111")
    );
    let forged = json!({"api_keys": [{"name": "key-1", "key": "sk-…9999"}]});
    let e = apply(
        &mut layer,
        &file,
        Op::Patch(Collection::Providers, "p".into(), forged),
    )
    .unwrap_err();
    assert!(e.to_string().contains("masked key"), "{e}");
    // Keys one at a time.
    apply(
        &mut layer,
        &file,
        Op::PatchKey {
            provider: "p".into(),
            key: "key-1".into(),
            patch: json!({"disabled": true}),
        },
    )
    .unwrap();
    assert!(
        matches!(&provider(&layer, "p").api_keys[0], KeyEntry::Named(k) if k.disabled && k.key.as_written() == "sk-aaaaaaaaaaaa1111")
    );
    apply(
        &mut layer,
        &file,
        Op::AddKey {
            provider: "p".into(),
            key: json!({"name": "third", "key": "sk-c"}),
        },
    )
    .unwrap();
    apply(
        &mut layer,
        &file,
        Op::DeleteKey {
            provider: "p".into(),
            key: "key-2".into(),
        },
    )
    .unwrap();
    let names: Vec<_> = provider(&layer, "p")
        .api_keys
        .iter()
        .map(|k| key_name(k).unwrap().to_string())
        .collect();
    assert_eq!(names, ["key-1", "third"]);
    let e = apply(
        &mut layer,
        &file,
        Op::Replace(
            Collection::Providers,
            "p".into(),
            json!({"name": "q", "type": "openai"}),
        ),
    )
    .unwrap_err();
    assert!(e.to_string().contains("renaming"), "{e}");
    let e = apply(
        &mut layer,
        &file,
        Op::Create(Collection::Routes, json!({"name": "r", "modelz": []})),
    )
    .unwrap_err();
    assert!(e.to_string().contains("modelz"), "{e}");
    apply(
        &mut layer,
        &file,
        Op::Delete(Collection::Providers, "p".into()),
    )
    .unwrap();
    assert!(layer.providers.is_empty());
    let e = apply(
        &mut layer,
        &file,
        Op::Delete(Collection::Providers, "p".into()),
    )
    .unwrap_err();
    assert!(matches!(e, ManagedError::NotFound { .. }), "{e:?}");
}

#[test]
fn consumer_credentials_are_kept_as_digests() {
    let (file, mut layer) = (file(), Layer::default());
    let body = json!({"name": "c", "credentials": ["literal-credential-1", "${C_KEY}"]});
    apply(&mut layer, &file, Op::Create(Collection::Consumers, body)).unwrap();
    let c = &layer.consumers[0];
    assert_eq!(c.credentials, [Secret("${C_KEY}".into())]);
    assert_eq!(
        c.hashed_credentials,
        [crate::auth::digest_text("literal-credential-1")]
    );
    assert!(!layer.to_yaml().contains("literal-credential-1"));
    let op = |replace| Op::NewCredential {
        consumer: "c".into(),
        credential: "tg-new".into(),
        replace,
    };
    apply(&mut layer, &file, op(true)).unwrap();
    let c = &layer.consumers[0];
    assert!(c.credentials.is_empty());
    assert_eq!(c.hashed_credentials, [crate::auth::digest_text("tg-new")]);
    // Sent back masked, a digest is kept; an unknown one is refused.
    let shown = crate::settings::mask_digest(&c.hashed_credentials[0]);
    let patch = json!({"hashed_credentials": [shown]});
    apply(
        &mut layer,
        &file,
        Op::Patch(Collection::Consumers, "c".into(), patch),
    )
    .unwrap();
    assert_eq!(
        layer.consumers[0].hashed_credentials,
        [crate::auth::digest_text("tg-new")]
    );
    let patch = json!({"hashed_credentials": ["sha256:000000000000…"]});
    assert!(apply(
        &mut layer,
        &file,
        Op::Patch(Collection::Consumers, "c".into(), patch)
    )
    .is_err());
    let id = crate::auth::digest_text("tg-new")[7..19].to_string();
    apply(
        &mut layer,
        &file,
        Op::DeleteCredential {
            consumer: "c".into(),
            id: id.clone(),
        },
    )
    .unwrap();
    assert!(layer.consumers[0].hashed_credentials.is_empty());
    let e = apply(
        &mut layer,
        &file,
        Op::DeleteCredential {
            consumer: "c".into(),
            id,
        },
    )
    .unwrap_err();
    assert!(matches!(e, ManagedError::NotFound { .. }), "{e:?}");
}

#[test]
fn merge_patch_follows_rfc_7386() {
    let mut v = json!({"a": 1, "b": {"c": 2, "d": 3}, "e": [1]});
    merge_patch(
        &mut v,
        &json!({"a": null, "b": {"c": 5}, "e": [2], "f": "x"}),
    );
    assert_eq!(v, json!({"b": {"c": 5, "d": 3}, "e": [2], "f": "x"}));
}

#[test]
fn a_webhook_url_sent_back_masked_keeps_the_stored_one() {
    let (file, mut layer) = (file(), Layer::default());
    let url = "https://hooks.example.com/services/T0/B0/literal-token-0042";
    let body = json!({"name": "ops", "url": url, "format": "slack"});
    apply(
        &mut layer,
        &file,
        Op::Create(Collection::AlertWebhooks, body),
    )
    .unwrap();
    let masked = Secret(url.into()).masked_url();
    assert_eq!(masked.as_written(), "https://hooks.example.com/…0042");
    let put = json!({"url": masked.as_written(), "format": "json"});
    apply(
        &mut layer,
        &file,
        Op::Replace(Collection::AlertWebhooks, "ops".into(), put),
    )
    .unwrap();
    assert_eq!(layer.alert_webhooks[0].url.as_written(), url);
    assert_eq!(
        layer.alert_webhooks[0].format,
        Some(settings::WebhookFormat::Json)
    );
    // A masked URL that matches nothing is refused, never stored.
    let other = json!({"url": "https://other.example.com/…0042"});
    let e = apply(
        &mut layer,
        &file,
        Op::Patch(Collection::AlertWebhooks, "ops".into(), other),
    )
    .unwrap_err();
    assert!(e.to_string().contains("url: a masked URL"), "{e}");
    let created = json!({"name": "new", "url": masked.as_written()});
    assert!(apply(
        &mut layer,
        &file,
        Op::Create(Collection::AlertWebhooks, created)
    )
    .is_err());
    // Rules are plain objects; a patch keeps what it does not name.
    let rule = json!({"name": "r", "kind": "quota", "threshold": 10, "webhooks": ["ops"]});
    apply(&mut layer, &file, Op::Create(Collection::AlertRules, rule)).unwrap();
    apply(
        &mut layer,
        &file,
        Op::Patch(Collection::AlertRules, "r".into(), json!({"threshold": 20})),
    )
    .unwrap();
    assert_eq!(layer.alert_rules[0].threshold, Some(20.0));
    assert_eq!(layer.alert_rules[0].webhooks, ["ops"]);
    apply(
        &mut layer,
        &file,
        Op::Delete(Collection::AlertRules, "r".into()),
    )
    .unwrap();
    assert!(layer.alert_rules.is_empty());
}
