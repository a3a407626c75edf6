//! Unit tests of `files_api`: how paths name calls, and the upstream paths.
#![allow(clippy::unwrap_used)]
use super::*;

fn header(method: &str, path: &str) -> RequestHeader {
    let method = http::Method::from_bytes(method.as_bytes()).unwrap();
    RequestHeader::build(method, path.as_bytes(), None).unwrap()
}

#[test]
fn paths_name_calls() {
    let cases = [
        ("POST", "/v1/files", Endpoint::Files, Some(Call::Create)),
        ("GET", "/v1/files/", Endpoint::Files, Some(Call::List)),
        ("GET", "/v1/batches", Endpoint::Batches, Some(Call::List)),
        (
            "DELETE",
            "/v1/files/file-1",
            Endpoint::Files,
            Some(on("file-1", false)),
        ),
        (
            "GET",
            "/v1/files/file-1/content",
            Endpoint::Files,
            Some(on("file-1", true)),
        ),
        (
            "GET",
            "/v1/batches/batch_1",
            Endpoint::Batches,
            Some(on("batch_1", false)),
        ),
        (
            "POST",
            "/v1/batches/batch_1/cancel",
            Endpoint::Batches,
            Some(on("batch_1", false)),
        ),
        ("POST", "/v1/files/file-1", Endpoint::Files, None),
        ("DELETE", "/v1/batches/batch_1", Endpoint::Batches, None),
        (
            "GET",
            "/v1/batches/batch_1/content",
            Endpoint::Batches,
            None,
        ),
    ];
    for (method, path, endpoint, want) in cases {
        let h = header(method, path);
        let got = tail(path, endpoint).and_then(|t| call_of(&h.method, endpoint, t).ok());
        assert_eq!(got, want, "{method} {path}");
    }
    for bad in ["/v1/files/a/b/c", "/v1/files/../content", "/v1/files/a%2F"] {
        assert_eq!(tail(bad, Endpoint::Files), None, "{bad}");
    }
}

fn on(id: &str, content: bool) -> Call {
    Call::On {
        id: id.into(),
        content,
    }
}

#[test]
fn upstream_paths_keep_query_and_content_type() {
    let mut client = header("POST", "/v1/files");
    client
        .insert_header("content-type", "multipart/form-data; boundary=xyz")
        .unwrap();
    let mut up = header("POST", "/openai/files?api-version=2024-10-21");
    up.insert_header("content-type", "application/json")
        .unwrap();
    retarget(&mut up, &client, Endpoint::Files).unwrap();
    // The plan carries the client's content type (`serve`), set on the upstream request.
    let planned = client.headers["content-type"].to_str().unwrap();
    crate::proxy::attempt::content_type(&mut up, Some(planned)).unwrap();
    assert_eq!(up.uri.to_string(), "/openai/files?api-version=2024-10-21");
    assert_eq!(
        up.headers["content-type"],
        "multipart/form-data; boundary=xyz"
    );
    let client = header("GET", "/v1/files/file-9/content?x=1");
    let mut up = header("POST", "/v1/files");
    up.insert_header("content-type", "application/json")
        .unwrap();
    retarget(&mut up, &client, Endpoint::Files).unwrap();
    crate::proxy::attempt::content_type(&mut up, None).unwrap();
    assert_eq!(up.method, http::Method::GET);
    assert_eq!(up.uri.to_string(), "/v1/files/file-9/content?x=1");
    assert!(up.headers.get("content-type").is_none());
    let client = header("POST", "/v1/batches/batch_2/cancel");
    let mut up = header("POST", "/v1/batches");
    retarget(&mut up, &client, Endpoint::Batches).unwrap();
    assert_eq!(up.uri.to_string(), "/v1/batches/batch_2/cancel");
}
