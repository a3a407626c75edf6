//! The management API under `/admin/api/v1/` (issue #17), read side: the settings the
//! gateway runs, whole and by collection, in the file's schema with every literal secret
//! masked (`Settings::redacted`), each object with its `source` (`file`: defined in the
//! operator's file, which the API will never change) and `revision` (also its `ETag`); and
//! the OpenAPI 3.1 document, generated from the same table of paths the tests walk. Writes
//! (create, replace, patch, delete, persisted and applied atomically) are not there yet.

use super::{error, json_response};
use crate::error::GatewayError;
use crate::runtime::Gateway;
use crate::settings::{self, Settings};
use http::{Method, Response, StatusCode};
use serde::Serialize;
use serde_json::{json, Value};

/// Where the API lives on the admin listener.
pub const PREFIX: &str = "/admin/api/v1";

/// Every path of the API (after `PREFIX`) and what `GET` answers there: the router, the
/// OpenAPI document and the tests all read this table.
pub const PATHS: &[(&str, &str)] = &[
    (
        "/config",
        "The settings the gateway runs, secrets masked, with their revision.",
    ),
    ("/openapi.json", "This document."),
    ("/providers", "Every provider."),
    ("/providers/{name}", "One provider."),
    ("/routes", "Every route."),
    ("/routes/{name}", "One route."),
    ("/consumers", "Every consumer (credentials masked)."),
    ("/consumers/{name}", "One consumer (credentials masked)."),
    ("/rate_limits", "Every rate-limit rule."),
    ("/rate_limits/{name}", "One rate-limit rule."),
];

/// A collection of named objects of the settings.
#[derive(Clone, Copy, Debug)]
enum Collection {
    Providers,
    Routes,
    Consumers,
    RateLimits,
}

impl Collection {
    fn from_path(segment: &str) -> Option<Self> {
        Some(match segment {
            "providers" => Collection::Providers,
            "routes" => Collection::Routes,
            "consumers" => Collection::Consumers,
            "rate_limits" => Collection::RateLimits,
            _ => return None,
        })
    }

    /// One object's kind, for messages.
    fn kind(self) -> &'static str {
        match self {
            Collection::Providers => "provider",
            Collection::Routes => "route",
            Collection::Consumers => "consumer",
            Collection::RateLimits => "rate limit",
        }
    }

    /// The objects as shown (`shown`: the settings redacted), each with its `source` and the
    /// `revision` of the object as it is in `settings`, so that a changed secret changes the
    /// revision even where its masked form does not.
    fn objects(self, settings: &Settings, shown: &Settings) -> Vec<Value> {
        match self {
            Collection::Providers => objects(&settings.providers, &shown.providers),
            Collection::Routes => objects(&settings.routes, &shown.routes),
            Collection::Consumers => objects(&settings.consumers, &shown.consumers),
            Collection::RateLimits => objects(&settings.rate_limits, &shown.rate_limits),
        }
    }
}

fn objects<T: Serialize>(items: &[T], shown: &[T]) -> Vec<Value> {
    items
        .iter()
        .zip(shown)
        .filter_map(|(item, shown)| {
            let revision = settings::fingerprint(serde_json::to_string(item).ok()?.as_bytes());
            let mut v = serde_json::to_value(shown).ok()?;
            let fields = v.as_object_mut()?;
            fields.insert("source".into(), json!("file"));
            fields.insert("revision".into(), json!(revision));
            Some(v)
        })
        .collect()
}

/// Answer a request under `PREFIX`.
pub fn answer(method: &Method, path: &str, config: &Gateway) -> Response<Vec<u8>> {
    let rest = path.strip_prefix(PREFIX).unwrap_or("");
    match get(rest, config) {
        Err(e) => error(&e),
        Ok(_) if method != Method::GET => error(&GatewayError::AdminMethodNotAllowed),
        Ok((body, etag)) => {
            let mut resp = json_response(StatusCode::OK, body);
            if let Some(v) = etag.and_then(|t| format!("\"{t}\"").parse().ok()) {
                resp.headers_mut().insert(http::header::ETAG, v);
            }
            resp
        }
    }
}

/// What `GET` answers at `rest` (the path after `PREFIX`), and its revision for `ETag`.
fn get(rest: &str, config: &Gateway) -> Result<(Value, Option<String>), GatewayError> {
    let segments: Vec<&str> = rest.trim_start_matches('/').split('/').collect();
    if segments == ["openapi.json"] {
        return Ok((openapi(), None));
    }
    let settings = &config.settings;
    let shown = settings.redacted();
    let revision = settings::revision(settings);
    match segments.as_slice() {
        ["config"] => Ok((
            json!({"revision": revision, "source": "file", "settings": shown}),
            Some(revision),
        )),
        [collection] => {
            let c = Collection::from_path(collection).ok_or(GatewayError::AdminNotFound)?;
            let items = c.objects(settings, &shown);
            Ok((
                json!({"revision": revision, "items": items}),
                Some(revision),
            ))
        }
        [collection, name] => {
            let c = Collection::from_path(collection).ok_or(GatewayError::AdminNotFound)?;
            let object = c
                .objects(settings, &shown)
                .into_iter()
                .find(|o| o["name"] == *name)
                .ok_or_else(|| GatewayError::AdminObjectNotFound {
                    kind: c.kind(),
                    name: name.to_string(),
                })?;
            let etag = object["revision"].as_str().map(str::to_string);
            Ok((object, etag))
        }
        _ => Err(GatewayError::AdminNotFound),
    }
}

/// The OpenAPI 3.1 document of `PATHS`.
pub fn openapi() -> Value {
    let error = json!({"description": "An error: {\"error\":{\"message\",\"type\",\"code\"}}"});
    let paths: serde_json::Map<String, Value> = PATHS
        .iter()
        .map(|(path, summary)| {
            let mut op = json!({
                "summary": summary,
                "responses": {
                    "200": {"description": "OK", "content": {"application/json": {}}},
                    "401": error,
                },
            });
            if path.contains("{name}") {
                op["parameters"] = json!([{
                    "name": "name", "in": "path", "required": true, "schema": {"type": "string"}
                }]);
                op["responses"]["404"] = error.clone();
            }
            (path.to_string(), json!({ "get": op }))
        })
        .collect();
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Tollgate management API", "version": "1"},
        "servers": [{"url": PREFIX}],
        "components": {"securitySchemes": {"admin_token": {"type": "http", "scheme": "bearer"}}},
        "security": [{"admin_token": []}],
        "paths": paths,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"
listeners:
  proxy: [{address: "127.0.0.1:8080"}]
providers:
  - {name: p1, type: openai-compatible, base_url: "http://127.0.0.1:9/v1", api_keys: ["sk-literal-secret-key-1234"]}
consumers:
  - {name: c1, credentials: ["consumer-literal-secret-1"]}
routes:
  - {name: r1, models: [{model: "*", targets: [{provider: p1}]}]}
rate_limits:
  - {name: l1, key: route, window: minute, requests: 5}
"#;

    fn gateway() -> Gateway {
        crate::runtime::parse(TEXT, "t.yaml", None).unwrap()
    }

    fn status(path: &str) -> u16 {
        answer(&Method::GET, path, &gateway()).status().as_u16()
    }

    #[test]
    fn every_documented_path_answers_and_others_do_not() {
        let names = [
            ("providers", "p1"),
            ("routes", "r1"),
            ("consumers", "c1"),
            ("rate_limits", "l1"),
        ];
        for (path, _) in PATHS {
            let mut p = path.to_string();
            for (collection, name) in names {
                if p.starts_with(&format!("/{collection}/")) {
                    p = p.replace("{name}", name);
                }
            }
            assert_eq!(status(&format!("{PREFIX}{p}")), 200, "{p}");
        }
        let doc = openapi();
        let documented: Vec<&String> = doc["paths"].as_object().unwrap().keys().collect();
        assert_eq!(documented.len(), PATHS.len());
        for p in [
            "/nope",
            "/providers/p1/keys",
            "/providers/nope",
            "/routes/nope",
            "",
        ] {
            assert_eq!(status(&format!("{PREFIX}{p}")), 404, "{p}");
        }
        let post = answer(&Method::POST, &format!("{PREFIX}/providers"), &gateway());
        assert_eq!(post.status(), 405);
    }

    #[test]
    fn objects_carry_source_and_revision_and_no_secret() {
        let gw = gateway();
        let resp = answer(&Method::GET, &format!("{PREFIX}/providers/p1"), &gw);
        let etag = resp.headers()[http::header::ETAG]
            .to_str()
            .unwrap()
            .to_string();
        let v: Value = serde_json::from_slice(resp.body()).unwrap();
        assert_eq!(v["source"], "file");
        assert_eq!(format!("\"{}\"", v["revision"].as_str().unwrap()), etag);
        for path in ["/config", "/providers", "/consumers", "/consumers/c1"] {
            let body = answer(&Method::GET, &format!("{PREFIX}{path}"), &gw).into_body();
            let text = String::from_utf8(body).unwrap();
            assert!(
                !text.contains("sk-literal-secret-key-1234"),
                "{path}: {text}"
            );
            assert!(
                !text.contains("consumer-literal-secret-1"),
                "{path}: {text}"
            );
        }
        // A new secret whose masked form is the same still makes a new revision.
        let rekeyed = TEXT.replace("sk-literal-secret-key-1234", "sk-literal-SECRET-key-1234");
        let rekeyed = crate::runtime::parse(&rekeyed, "t.yaml", None).unwrap();
        let revision = |gw: &Gateway| {
            let body = answer(&Method::GET, &format!("{PREFIX}/providers/p1"), gw).into_body();
            let v: Value = serde_json::from_slice(&body).unwrap();
            (v["revision"].clone(), v["api_keys"][0].clone())
        };
        let (before, shown_before) = revision(&gw);
        let (after, shown_after) = revision(&rekeyed);
        assert_eq!(shown_before, shown_after, "the masked forms are alike");
        assert_ne!(before, after, "the revisions differ");
        let missing = answer(&Method::GET, &format!("{PREFIX}/consumers/zed"), &gw);
        let text = String::from_utf8(missing.into_body()).unwrap();
        assert!(text.contains("No consumer named `zed`"), "{text}");
    }
}
