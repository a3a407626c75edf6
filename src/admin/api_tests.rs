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
