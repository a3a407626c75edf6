use super::*;

#[test]
fn the_table_routes_and_documents_every_operation() {
    let doc = openapi();
    let paths = doc["paths"].as_object().unwrap();
    for (path, method, _) in ROUTES {
        let entry = &paths[*path][method.to_lowercase()];
        assert!(entry["summary"].is_string(), "{method} {path}");
        let segs: Vec<&str> = path
            .trim_start_matches('/')
            .split('/')
            .map(|s| if s.starts_with('{') { "x" } else { s })
            .collect();
        assert!(matches(path, &segs), "{path}");
        if path.contains('{') {
            assert!(entry["parameters"].is_array(), "{method} {path}");
        }
    }
    let operations: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
    assert_eq!(operations, ROUTES.len(), "one operation per row");
    assert!(!matches("/providers/{name}", &["providers"]));
    assert!(!matches("/providers/{name}", &["providers", ""]));
    assert!(!matches("/providers/{name}", &["providers", "a", "b"]));
    assert!(!matches("/config", &["configs"]));
}

#[test]
fn check_revision_accepts_the_current_one_only() {
    assert!(check_revision(&None, || "a".into()).is_ok());
    assert!(check_revision(&Some("a".into()), || "a".into()).is_ok());
    let e = check_revision(&Some("b".into()), || "a".into()).unwrap_err();
    assert!(e.to_string().contains("Stale revision"), "{e}");
}

/// The definition a `$ref` names in the document.
fn definition<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(r) => {
            let name = r.rsplit('/').next().unwrap();
            &doc["components"]["schemas"][name]
        }
        None => schema,
    }
}

#[test]
fn object_schemas_cover_every_field_the_shipped_configs_use() {
    let doc = openapi();
    let paths = &doc["paths"];
    let create =
        |p: &str| &paths[p]["post"]["requestBody"]["content"]["application/json"]["schema"];
    let mut checked = 0;
    for entry in std::fs::read_dir("conf").unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let settings = crate::settings::from_yaml(&text).unwrap();
        for c in Collection::ALL {
            let schema = definition(&doc, create(&format!("/{}", c.path())));
            assert_eq!(schema["additionalProperties"], false, "{c:?}");
            let properties = schema["properties"].as_object().unwrap();
            for (name, object) in c.objects(&settings) {
                for field in object.as_object().unwrap().keys() {
                    assert!(
                        properties.contains_key(field),
                        "{}: {name}.{field}",
                        path.display()
                    );
                    checked += 1;
                }
            }
            let required: Vec<&str> = schema["required"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect();
            assert!(required.contains(&"name"), "{c:?}: {required:?}");
        }
    }
    assert!(checked > 20, "{checked}");
    let key = definition(&doc, create("/providers/{name}/keys"));
    assert!(key["properties"]["disabled"].is_object(), "{key}");
    let window = &doc["components"]["schemas"]["Window"]["enum"];
    assert_eq!(
        window,
        &serde_json::json!(["second", "minute", "hour", "day"])
    );
}

#[test]
fn alert_collections_are_documented_with_their_schemas() {
    let doc = openapi();
    let paths = &doc["paths"];
    for c in ["alert_rules", "alert_webhooks"] {
        for (path, method) in [
            (format!("/{c}"), "get"),
            (format!("/{c}"), "post"),
            (format!("/{c}/{{name}}"), "get"),
            (format!("/{c}/{{name}}"), "put"),
            (format!("/{c}/{{name}}"), "patch"),
            (format!("/{c}/{{name}}"), "delete"),
        ] {
            assert!(
                paths[&path][method]["summary"].is_string(),
                "{method} {path}"
            );
        }
        assert_eq!(Collection::from_path(c).map(Collection::path), Some(c));
    }
    assert!(paths["/alert_webhooks/{name}/test"]["post"].is_object());
    let create = |p: &str| {
        definition(
            &doc,
            &paths[p]["post"]["requestBody"]["content"]["application/json"]["schema"],
        )
        .clone()
    };
    let rule = create("/alert_rules");
    assert_eq!(rule["additionalProperties"], false, "{rule}");
    for field in [
        "name",
        "kind",
        "threshold",
        "window",
        "filter",
        "for",
        "repeat",
        "webhooks",
    ] {
        assert!(rule["properties"][field].is_object(), "{field}: {rule}");
    }
    let kind = definition(&doc, &rule["properties"]["kind"]);
    assert!(
        kind["enum"].as_array().unwrap().contains(&json!("quota")),
        "{kind}"
    );
    let hook = create("/alert_webhooks");
    assert!(hook["properties"]["url"].is_object(), "{hook}");
    assert!(hook["properties"]["format"].is_object(), "{hook}");
}
