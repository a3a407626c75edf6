//! OpenAI's files and batches APIs, in memory (Azure's `/openai/files`, `/openai/batches`
//! too): `POST …/files` (multipart: `purpose`, `file`), `GET …/files`, `GET`/`DELETE
//! …/files/{id}`, `GET …/files/{id}/content`; `POST …/batches` (JSON: `input_file_id`,
//! `endpoint`, `completion_window`, `metadata`), `GET …/batches`, `GET …/batches/{id}`,
//! `POST …/batches/{id}/cancel`.
//!
//! Every object belongs to the API key that made it, as at OpenAI (a project's objects): a
//! call with another key finds nothing (404), and lists show the caller's objects only. Each
//! object carries `mock_key_fnv`, the FNV-1a hash (hex) of the key that made it (the key
//! itself never appears). Ids are `file-mock{n}` and `batch_mock{n}`.
//!
//! A batch is `validating` when made and `completed` from its first `GET` on: its output
//! file (purpose `batch_output`) then holds one line per line of the input file,
//! `{"id":"batch_req_{n}","custom_id":…,"response":{"status_code":200,"body":{…}}}`.
//! A cancel of a batch not yet completed makes it `cancelled`.

use std::collections::BTreeMap;
use std::sync::{LazyLock, Mutex, MutexGuard};

use bytes::Bytes;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Response, StatusCode};
use serde_json::{json, Value};

use crate::body::{self, RespBody};
use crate::reply::Ctx;
use crate::util::{fnv1a64, now_secs};

struct File {
    object: Value,
    bytes: Bytes,
    key: String,
}

struct Batch {
    object: Value,
    key: String,
}

#[derive(Default)]
struct Objects {
    files: BTreeMap<String, File>,
    batches: BTreeMap<String, Batch>,
}

static OBJECTS: LazyLock<Mutex<Objects>> = LazyLock::new(Mutex::default);

fn objects() -> MutexGuard<'static, Objects> {
    OBJECTS.lock().unwrap_or_else(|p| p.into_inner())
}

/// A files or batches call, if the path is one.
pub fn dispatch(ctx: &Ctx<'_>) -> Option<Response<RespBody>> {
    let path = ctx.parts.uri.path().trim_end_matches('/');
    let (kind, rest) = ["/files", "/batches"].iter().find_map(|k| {
        let at = path
            .find(&format!("{k}/"))
            .or_else(|| path.ends_with(k).then(|| path.len() - k.len()))?;
        Some((*k, &path[at + k.len()..]))
    })?;
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let key = key_of(ctx);
    let m = &ctx.parts.method;
    Some(match (kind, segments.as_slice()) {
        ("/files", []) if m == Method::POST => upload(ctx, key),
        ("/files", []) if m == Method::GET => list_files(ctx, &key),
        ("/files", [id]) if m == Method::GET => file(ctx, &key, id, false),
        ("/files", [id]) if m == Method::DELETE => file(ctx, &key, id, true),
        ("/files", [id, "content"]) if m == Method::GET => content(ctx, &key, id),
        ("/batches", []) if m == Method::POST => create_batch(ctx, key),
        ("/batches", []) if m == Method::GET => list_batches(ctx, &key),
        ("/batches", [id]) if m == Method::GET => batch(ctx, &key, id, false),
        ("/batches", [id, "cancel"]) if m == Method::POST => batch(ctx, &key, id, true),
        _ => crate::openai::not_found(ctx),
    })
}

/// The caller's key: `Authorization: Bearer`, else `api-key` (Azure).
fn key_of(ctx: &Ctx<'_>) -> String {
    let h = &ctx.parts.headers;
    let bearer = h
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.strip_prefix("Bearer "));
    bearer
        .or_else(|| h.get("api-key").and_then(|v| v.to_str().ok()))
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn key_fnv(key: &str) -> String {
    format!("{:016x}", fnv1a64(key.as_bytes()))
}

fn missing(ctx: &Ctx<'_>, what: &str, id: &str) -> Response<RespBody> {
    ctx.error(
        StatusCode::NOT_FOUND,
        &format!("No such {what} object: {id}"),
    )
}

fn list(data: Vec<Value>) -> Value {
    let first = data.first().map(|o| o["id"].clone());
    let last = data.last().map(|o| o["id"].clone());
    json!({ "object": "list", "data": data, "first_id": first, "last_id": last, "has_more": false })
}

/// `POST …/files`.
fn upload(ctx: &Ctx<'_>, key: String) -> Response<RespBody> {
    let ct = ctx
        .parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let Some(form) = Form::parse(ct, ctx.body) else {
        return ctx.error(
            StatusCode::BAD_REQUEST,
            "Expected a multipart/form-data body.",
        );
    };
    let (Some(purpose), Some((filename, bytes))) = (form.purpose, form.file) else {
        return ctx.error(
            StatusCode::BAD_REQUEST,
            "Missing required parameter: 'purpose' and 'file' are required.",
        );
    };
    let object = file_object(ctx, &filename, &purpose, bytes.len(), &key);
    let id = object["id"].as_str().unwrap_or_default().to_string();
    let bytes = Bytes::copy_from_slice(bytes);
    objects().files.insert(
        id,
        File {
            object: object.clone(),
            bytes,
            key,
        },
    );
    ctx.json_whole(object)
}

fn file_object(ctx: &Ctx<'_>, filename: &str, purpose: &str, len: usize, key: &str) -> Value {
    json!({
        "id": format!("file-mock{}", ctx.state.next_id()),
        "object": "file",
        "bytes": len,
        "created_at": now_secs(),
        "filename": filename,
        "purpose": purpose,
        "status": "processed",
        "status_details": null,
        "mock_key_fnv": key_fnv(key),
    })
}

fn list_files(ctx: &Ctx<'_>, key: &str) -> Response<RespBody> {
    let data = objects()
        .files
        .values()
        .filter(|f| f.key == key)
        .map(|f| f.object.clone())
        .collect();
    ctx.json_whole(list(data))
}

/// `GET` or `DELETE …/files/{id}`.
fn file(ctx: &Ctx<'_>, key: &str, id: &str, delete: bool) -> Response<RespBody> {
    let mut all = objects();
    let Some(f) = all.files.get(id).filter(|f| f.key == key) else {
        return missing(ctx, "File", id);
    };
    if !delete {
        return ctx.json_whole(f.object.clone());
    }
    all.files.remove(id);
    ctx.json_whole(json!({ "id": id, "object": "file", "deleted": true }))
}

/// `GET …/files/{id}/content`: the bytes as uploaded.
fn content(ctx: &Ctx<'_>, key: &str, id: &str) -> Response<RespBody> {
    let bytes = match objects().files.get(id).filter(|f| f.key == key) {
        Some(f) => f.bytes.clone(),
        None => return missing(ctx, "File", id),
    };
    let mut resp = Response::new(body::full(bytes));
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    resp
}

/// `POST …/batches`.
fn create_batch(ctx: &Ctx<'_>, key: String) -> Response<RespBody> {
    let req = match ctx.parse_object() {
        Ok(r) => r,
        Err(msg) => return ctx.error(StatusCode::BAD_REQUEST, &msg),
    };
    let input = req
        .get("input_file_id")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let mut all = objects();
    if all.files.get(input).is_none_or(|f| f.key != key) {
        drop(all);
        return missing(ctx, "File", input);
    }
    let object = json!({
        "id": format!("batch_mock{}", ctx.state.next_id()),
        "object": "batch",
        "endpoint": req.get("endpoint").cloned().unwrap_or(json!("/v1/chat/completions")),
        "errors": null,
        "input_file_id": input,
        "completion_window": req.get("completion_window").cloned().unwrap_or(json!("24h")),
        "status": "validating",
        "output_file_id": null,
        "error_file_id": null,
        "created_at": now_secs(),
        "request_counts": { "total": 0, "completed": 0, "failed": 0 },
        "metadata": req.get("metadata").cloned().unwrap_or(Value::Null),
        "mock_key_fnv": key_fnv(&key),
    });
    let id = object["id"].as_str().unwrap_or_default().to_string();
    all.batches.insert(
        id,
        Batch {
            object: object.clone(),
            key,
        },
    );
    ctx.json_whole(object)
}

fn list_batches(ctx: &Ctx<'_>, key: &str) -> Response<RespBody> {
    let data = objects()
        .batches
        .values()
        .filter(|b| b.key == key)
        .map(|b| b.object.clone())
        .collect();
    ctx.json_whole(list(data))
}

/// `GET …/batches/{id}` (completes a validating batch) or `POST …/batches/{id}/cancel`.
fn batch(ctx: &Ctx<'_>, key: &str, id: &str, cancel: bool) -> Response<RespBody> {
    let mut all = objects();
    let Some(status) = all
        .batches
        .get(id)
        .filter(|b| b.key == key)
        .map(|b| b.object["status"].clone())
    else {
        drop(all);
        return missing(ctx, "Batch", id);
    };
    match (cancel, status.as_str()) {
        (true, Some("validating")) => set(&mut all, id, json!({ "status": "cancelled" })),
        (false, Some("validating")) => complete(ctx, &mut all, id, key),
        _ => {}
    }
    let object = all.batches.get(id).map(|b| b.object.clone());
    ctx.json_whole(object.unwrap_or(Value::Null))
}

fn set(all: &mut Objects, id: &str, fields: Value) {
    if let (Some(b), Value::Object(f)) = (all.batches.get_mut(id), fields) {
        if let Value::Object(o) = &mut b.object {
            o.extend(f);
        }
    }
}

/// Run a batch: an output line per input line, in an output file of its own.
fn complete(ctx: &Ctx<'_>, all: &mut Objects, id: &str, key: &str) {
    let input = all
        .batches
        .get(id)
        .map(|b| b.object["input_file_id"].clone());
    let lines = input
        .and_then(|i| all.files.get(i.as_str()?).map(|f| f.bytes.clone()))
        .unwrap_or_default();
    let mut out = String::new();
    let mut n = 0u64;
    for line in String::from_utf8_lossy(&lines)
        .lines()
        .filter(|l| !l.trim().is_empty())
    {
        n += 1;
        let req: Value = serde_json::from_str(line).unwrap_or(Value::Null);
        let answer = json!({
            "id": format!("chatcmpl-batch{n}"),
            "object": "chat.completion",
            "model": req["body"]["model"],
            "choices": [{ "index": 0, "finish_reason": "stop",
                          "message": { "role": "assistant", "content": "Hello from the batch." } }],
        });
        let done = json!({
            "id": format!("batch_req_{n}"),
            "custom_id": req["custom_id"],
            "response": { "status_code": 200, "request_id": format!("req_{n}"), "body": answer },
            "error": null,
        });
        out.push_str(&done.to_string());
        out.push('\n');
    }
    let object = file_object(ctx, "batch_output.jsonl", "batch_output", out.len(), key);
    let file_id = object["id"].clone();
    if let Some(fid) = file_id.as_str() {
        all.files.insert(
            fid.to_string(),
            File {
                object,
                bytes: Bytes::from(out),
                key: key.to_string(),
            },
        );
    }
    set(
        all,
        id,
        json!({
            "status": "completed",
            "output_file_id": file_id,
            "completed_at": now_secs(),
            "request_counts": { "total": n, "completed": n, "failed": 0 },
        }),
    );
}

/// The parts of a multipart form the files API reads.
#[derive(Default)]
struct Form<'a> {
    purpose: Option<String>,
    /// File name and bytes.
    file: Option<(String, &'a [u8])>,
}

impl<'a> Form<'a> {
    fn parse(content_type: &str, body: &'a [u8]) -> Option<Form<'a>> {
        let boundary = content_type
            .split(';')
            .find_map(|p| p.trim().strip_prefix("boundary="))?
            .trim_matches('"');
        let delimiter = format!("--{boundary}");
        let mut form = Form::default();
        for part in split(body, delimiter.as_bytes()).into_iter().skip(1) {
            let part = part.strip_prefix(b"\r\n").unwrap_or(part);
            let Some(at) = find(part, b"\r\n\r\n") else {
                continue;
            };
            let head = String::from_utf8_lossy(&part[..at]).to_string();
            let data = &part[at + 4..];
            let data = data.strip_suffix(b"\r\n").unwrap_or(data);
            match (param(&head, "name").as_deref(), param(&head, "filename")) {
                (Some("purpose"), _) => form.purpose = Some(String::from_utf8_lossy(data).into()),
                (Some("file"), name) => form.file = Some((name.unwrap_or_default(), data)),
                _ => {}
            }
        }
        Some(form)
    }
}

/// `name="value"` in a part's `Content-Disposition`.
fn param(head: &str, name: &str) -> Option<String> {
    let needle = format!(" {name}=\"");
    let at = head
        .find(&needle)
        .or_else(|| head.find(&format!(";{name}=\"")))?;
    let rest = &head[at + needle.len()..];
    Some(rest[..rest.find('"')?].to_string())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn split<'a>(mut body: &'a [u8], delimiter: &[u8]) -> Vec<&'a [u8]> {
    let mut parts = Vec::new();
    while let Some(at) = find(body, delimiter) {
        parts.push(&body[..at]);
        body = &body[at + delimiter.len()..];
    }
    parts.push(body);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_fields() {
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n\
--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"in.jsonl\"\r\n\
Content-Type: application/jsonl\r\n\r\n{\"a\":1}\n\r\n--XyZ--\r\n";
        let form = Form::parse("multipart/form-data; boundary=XyZ", body).unwrap();
        assert_eq!(form.purpose.as_deref(), Some("batch"));
        let (name, data) = form.file.unwrap();
        assert_eq!((name.as_str(), data), ("in.jsonl", &b"{\"a\":1}\n"[..]));
    }
}
