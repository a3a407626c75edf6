//! OpenAI's files and batches APIs, passed through to OpenAI-family providers (OpenAI's
//! protocol, Azure's): `POST {prefix}/files` (multipart, byte for byte), `GET /files`,
//! `GET`/`DELETE /files/{id}`, `GET /files/{id}/content` (streamed back as it comes);
//! `POST /batches`, `GET /batches`, `GET /batches/{id}`, `POST /batches/{id}/cancel`.
//!
//! Each call is one attempt, unmetered, on one provider and key:
//! - a creation (`POST /files`, or `POST /batches` whose `input_file_id` the gateway does not
//!   know) and a list go to the route's first OpenAI-family target in rule order, or to the
//!   one the client names in `x-tollgate-provider`, with its first usable key;
//! - a batch of a known file, and every call naming an id, go to the provider and key that
//!   made the object. The gateway learns an object's maker from the answer that created it
//!   (and a batch's output and error files from the answers that show the batch), and keeps
//!   it in `crate::store::objects` (durable).
//!
//! Tenancy: an object belongs to the consumer that made it. Another consumer's id is not
//! found, exactly like an unknown one, and a list shows only the caller's objects when the
//! route authenticates consumers. Answers that name objects (creations, lists, batches)
//! are read whole (at most `MAX_ANSWER`) before the client gets them; a file's content is
//! not. Provider keys are scrubbed from every answer.

use super::admission;
use super::attempt::Attempt;
use super::exchange::Exchange;
use super::exhausted::no_key_error;
use super::ingress::{self, BodyLimits};
use super::pipe::{self, Whole};
use super::pipeline::Failure;
use super::plan::{BodyPlan, Plan, ResponsePlan};
use super::responses_api::{ended, path_error};
use crate::error::{ErrorCode, GatewayError};
use crate::protocol::{ClientProtocol, Endpoint};
use crate::provider::Provider;
use crate::route::{Route, Target};
use crate::store::objects::{Objects, Owner};
use bytes::Bytes;
use pingora_core::connectors::http::Connector;
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::Session;
use serde_json::Value;

/// Longest object id accepted.
const MAX_ID: usize = 256;
/// Largest answer read whole (a list of 10,000 files is a few MB).
pub const MAX_ANSWER: usize = 32 * 1024 * 1024;

/// The client's choice of provider for a creation or a list (one of the route's targets).
pub const X_TOLLGATE_PROVIDER: http::HeaderName =
    http::HeaderName::from_static("x-tollgate-provider");

/// What the client's path names after `/files` or `/batches`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tail<'a> {
    Root,
    Id(&'a str),
    /// `{id}/content` (a file's) or `{id}/cancel` (a batch's).
    Action(&'a str),
}

/// What the client asked.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Call {
    Create,
    List,
    On { id: String, content: bool },
}

fn action(endpoint: Endpoint) -> &'static str {
    match endpoint {
        Endpoint::Batches => "cancel",
        _ => "content",
    }
}

/// An id as providers make them: ASCII letters, digits, `_`, `-`, `.`; never `.` or `..`.
fn plain(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// The end of the client's path: `…/files`, `…/files/{id}` or `…/files/{id}/content` (and
/// the same for batches, with `cancel`).
fn tail(path: &str, endpoint: Endpoint) -> Option<Tail<'_>> {
    let name = endpoint.suffix().trim_start_matches('/');
    let mut segments = path.trim_end_matches('/').rsplit('/');
    let (a, b, c) = (segments.next()?, segments.next(), segments.next());
    match (b, c) {
        (Some(id), Some(n)) if a == action(endpoint) && n == name && plain(id) => {
            Some(Tail::Action(id))
        }
        (Some(n), _) if n == name && plain(a) => Some(Tail::Id(a)),
        _ if a == name => Some(Tail::Root),
        _ => None,
    }
}

fn call_of(
    method: &http::Method,
    endpoint: Endpoint,
    tail: Tail<'_>,
) -> Result<Call, GatewayError> {
    use http::Method as M;
    let on = |id: &str, content| Call::On {
        id: id.to_string(),
        content,
    };
    match (endpoint, tail) {
        (_, Tail::Root) if method == M::POST => Ok(Call::Create),
        (_, Tail::Root) if method == M::GET => Ok(Call::List),
        (Endpoint::Files, Tail::Id(id)) if matches!(*method, M::GET | M::DELETE) => {
            Ok(on(id, false))
        }
        (Endpoint::Files, Tail::Action(id)) if method == M::GET => Ok(on(id, true)),
        (Endpoint::Batches, Tail::Id(id)) if method == M::GET => Ok(on(id, false)),
        (Endpoint::Batches, Tail::Action(id)) if method == M::POST => Ok(on(id, false)),
        _ => Err(GatewayError::MethodNotAllowed(method.to_string())),
    }
}

/// Serve a files or batches call; the status sent.
pub async fn serve(
    session: &mut Session,
    x: &mut Exchange,
    connector: &Connector,
    endpoint: Endpoint,
) -> Result<u16, Failure> {
    let header = session.req_header();
    let path = header.uri.path();
    let tail = tail(path, endpoint).ok_or_else(|| GatewayError::RouteNotFound(path.into()))?;
    let call = call_of(&header.method, endpoint, tail)?;
    let config = x.config.clone();
    let route = x
        .route
        .and_then(|i| config.routes.get(i))
        .ok_or_else(|| GatewayError::Internal("no route".into()))?;
    x.consumer = admission::authenticate(session, &config, &route.auth)?;
    let body = match session.req_header().method == http::Method::POST {
        true => {
            let limits = BodyLimits {
                max: config.max_body_bytes,
                client: &config.client,
            };
            ingress::read_body(session, limits, &mut x.body_memory).await?
        }
        false => Bytes::new(),
    };
    let backends = x.backends.clone();
    let objects = backends.objects().await;
    let consumer = x.consumer.clone().unwrap_or_default();
    let (target, owner) = maker(session, route, objects, &call, endpoint, &body, consumer).await?;
    let content_type = (!body.is_empty())
        .then(|| ingress::content_type(session).to_string())
        .filter(|t| !t.is_empty());
    let attempt = attempt_for(target, &owner, endpoint, body, content_type)?;
    x.attempts.chose(&attempt);
    let client = x.plain_client(session, &route.forward, ClientProtocol::OpenAi);
    if matches!(call, Call::On { content: true, .. }) {
        let (result, outcome) = pipe::run(client, connector, attempt).await;
        x.attempts.unmetered(outcome);
        return ended(result);
    }
    let (result, outcome) = pipe::fetch(client, connector, attempt, MAX_ANSWER).await;
    x.attempts.unmetered(outcome);
    let whole: Whole = match result {
        Ok(whole) => whole,
        Err(end) => return ended(end),
    };
    let seen = Seen {
        objects,
        owner: &owner,
        endpoint,
        filter: x.consumer.is_some(),
    };
    let body = seen
        .answer(&call, whole.header.status.is_success(), whole.body)
        .await;
    deliver(session, whole.header, body).await
}

/// The provider, key and consumer a call goes to and acts for.
async fn maker<'r>(
    session: &Session,
    route: &'r Route,
    objects: &Objects,
    call: &Call,
    endpoint: Endpoint,
    body: &[u8],
    consumer: String,
) -> Result<(&'r Target, Owner), GatewayError> {
    let known = match call {
        Call::On { id, .. } => Some((id.as_str(), true)),
        Call::Create if endpoint == Endpoint::Batches => input_file(body).map(|id| (id, false)),
        Call::Create | Call::List => None,
    };
    if let Some((id, required)) = known {
        match owned(objects, id, &consumer).await? {
            Some(owner) => return Ok((target_of(route, &owner, id)?, owner)),
            // A batch of a file the gateway never saw goes where a new file would.
            None if required => return Err(not_found(id)),
            None => {}
        }
    }
    let chosen = session
        .req_header()
        .headers
        .get(X_TOLLGATE_PROVIDER)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let target = creator(route, chosen.as_deref())?;
    // The first usable key, not one in rotation: a provider's objects, and so its lists,
    // stay on one key while it is usable.
    let key = target
        .provider
        .keys
        .iter()
        .find(|k| k.usable())
        .ok_or_else(|| no_key_error(&[target]))?;
    let owner = Owner {
        provider: target.provider.name.clone(),
        key: key.name.clone(),
        consumer,
    };
    Ok((target, owner))
}

/// A batch request's `input_file_id`.
fn input_file(body: &[u8]) -> Option<&str> {
    #[derive(serde::Deserialize)]
    struct Batch<'a> {
        #[serde(borrow)]
        input_file_id: Option<&'a str>,
    }
    serde_json::from_slice::<Batch<'_>>(body)
        .ok()?
        .input_file_id
}

/// Object `id`'s maker, if known; another consumer's object is not found.
pub(super) async fn owned(
    objects: &Objects,
    id: &str,
    consumer: &str,
) -> Result<Option<Owner>, GatewayError> {
    let owner = objects.get(id).await.map_err(|e| {
        log::warn!("files and batches: looking up {id}: {e}");
        GatewayError::StoreUnavailable("where this object is kept")
    })?;
    match owner {
        Some(o) if o.consumer != consumer => Err(not_found(id)),
        found => Ok(found),
    }
}

fn not_found(id: &str) -> GatewayError {
    GatewayError::Translate {
        status: 404,
        code: ErrorCode::NotFound,
        message: format!("No such object: '{id}'."),
    }
}

fn openai_family(provider: &Provider) -> bool {
    provider.protocol.native_client() == Some(ClientProtocol::OpenAi)
}

fn unsupported(message: String) -> GatewayError {
    GatewayError::Translate {
        status: 400,
        code: ErrorCode::UnsupportedEndpoint,
        message,
    }
}

/// The route's target for a new object or a list: the one named (a provider of the
/// route), else the first OpenAI-family one in rule order.
fn creator<'r>(route: &'r Route, named: Option<&str>) -> Result<&'r Target, GatewayError> {
    let mut targets = route.rules.iter().flat_map(|r| r.targets.iter());
    let Some(name) = named else {
        return targets.find(|t| openai_family(&t.provider)).ok_or_else(|| {
            unsupported(
                "No provider of this route has OpenAI's files and batches APIs (providers \
                 speaking OpenAI's protocol or Azure's have them)."
                    .into(),
            )
        });
    };
    let target =
        targets
            .find(|t| t.provider.name == name)
            .ok_or_else(|| GatewayError::Translate {
                status: 400,
                code: ErrorCode::InvalidRequest,
                message: format!(
                    "`x-tollgate-provider`: `{name}` is not a provider of this route."
                ),
            })?;
    match openai_family(&target.provider) {
        true => Ok(target),
        false => Err(unsupported(format!(
            "`x-tollgate-provider`: provider `{name}` has no files and batches APIs (only \
             providers speaking OpenAI's protocol or Azure's have them)."
        ))),
    }
}

/// The route's target of an object's maker.
fn target_of<'r>(route: &'r Route, owner: &Owner, id: &str) -> Result<&'r Target, GatewayError> {
    route
        .rules
        .iter()
        .flat_map(|r| r.targets.iter())
        .find(|t| t.provider.name == owner.provider && openai_family(&t.provider))
        .ok_or_else(|| GatewayError::Translate {
            status: 404,
            code: ErrorCode::NotFound,
            message: format!(
                "'{id}' was made through provider `{}`, which this route does not reach.",
                owner.provider
            ),
        })
}

/// The one attempt: `owner`'s key at `target`'s provider, the body as the client sent it.
fn attempt_for(
    target: &Target,
    owner: &Owner,
    endpoint: Endpoint,
    body: Bytes,
    content_type: Option<String>,
) -> Result<Attempt, GatewayError> {
    let provider = target.provider.clone();
    let key_index = provider
        .keys
        .iter()
        .position(|k| k.name == owner.key)
        .ok_or_else(|| GatewayError::Translate {
            status: 404,
            code: ErrorCode::NotFound,
            message: format!(
                "This object was made with a key of provider `{}` that the gateway no longer has.",
                provider.name
            ),
        })?;
    let plan = Plan {
        client: ClientProtocol::OpenAi,
        provider: provider.protocol,
        upstream_endpoint: endpoint,
        body: BodyPlan::Splice(crate::body::Rewrite::default()),
        response: ResponsePlan::Unmetered,
        // The client's own: a multipart upload's, with its boundary.
        content_type,
    };
    Ok(Attempt {
        provider,
        key_index,
        upstream_model: String::new(),
        stream: false,
        original: body,
        plan,
        propagate: crate::otel::Propagate::default(),
    })
}

/// What an answer teaches the gateway about objects, and what the caller may see of it.
struct Seen<'a> {
    objects: &'a Objects,
    /// The maker of the call's object (of a creation: the new object's).
    owner: &'a Owner,
    endpoint: Endpoint,
    /// Lists show only the caller's objects (the route authenticates consumers).
    filter: bool,
}

impl Seen<'_> {
    /// Remember what a successful answer names; the body the client gets.
    async fn answer(&self, call: &Call, ok: bool, body: Vec<u8>) -> Vec<u8> {
        if !ok {
            return body;
        }
        let Ok(mut v) = serde_json::from_slice::<Value>(&body) else {
            return body;
        };
        match call {
            Call::Create => {
                if let Some(id) = v["id"].as_str() {
                    self.keep(id, self.owner).await;
                }
                self.batch_files(&v, self.owner).await;
            }
            Call::On { id, .. } if self.endpoint == Endpoint::Files => {
                if v["deleted"] == Value::Bool(true) {
                    self.forget(id).await;
                }
            }
            Call::On { .. } => self.batch_files(&v, self.owner).await,
            Call::List => {
                if self.list(&mut v).await {
                    return serde_json::to_vec(&v).unwrap_or(body);
                }
            }
        }
        body
    }

    /// Keep only the caller's entries of a list (when filtering); learn their batches'
    /// files. Whether the list changed.
    async fn list(&self, v: &mut Value) -> bool {
        let Some(data) = v.get_mut("data").and_then(Value::as_array_mut) else {
            return false;
        };
        let listed = data.len();
        let mut kept = Vec::with_capacity(listed);
        for entry in data.drain(..) {
            let id = entry["id"].as_str().unwrap_or_default();
            let owner = match self.objects.get(id).await {
                Ok(owner) => owner,
                Err(e) => {
                    log::warn!("files and batches: looking up {id}: {e}");
                    None
                }
            };
            let mine = owner
                .as_ref()
                .is_some_and(|o| o.consumer == self.owner.consumer);
            if let Some(o) = owner.as_ref().filter(|_| mine) {
                self.batch_files(&entry, o).await;
            }
            if mine || !self.filter {
                kept.push(entry);
            }
        }
        let changed = kept.len() != listed || self.filter;
        *data = kept;
        changed
    }

    /// A batch's output and error files belong to the batch's maker.
    async fn batch_files(&self, batch: &Value, owner: &Owner) {
        if self.endpoint != Endpoint::Batches {
            return;
        }
        for field in ["output_file_id", "error_file_id"] {
            if let Some(id) = batch[field].as_str().filter(|id| plain(id)) {
                self.keep(id, owner).await;
            }
        }
    }

    async fn keep(&self, id: &str, owner: &Owner) {
        if let Err(e) = self.objects.put(id, owner).await {
            log::error!("files and batches: {id} cannot be reached later: {e}");
        }
    }

    async fn forget(&self, id: &str) {
        if let Err(e) = self.objects.delete(id).await {
            log::warn!("files and batches: forgetting {id}: {e}");
        }
    }
}

/// Send the answer, its length the body's.
async fn deliver(
    session: &mut Session,
    header: Box<ResponseHeader>,
    body: Vec<u8>,
) -> Result<u16, Failure> {
    let status = header.status.as_u16();
    write(session, header, body)
        .await
        .map_err(|cause| Failure::Abort {
            error: GatewayError::Internal("writing the response".into()),
            cause,
            sent: Some(status),
        })?;
    Ok(status)
}

async fn write(
    session: &mut Session,
    mut header: Box<ResponseHeader>,
    body: Vec<u8>,
) -> pingora_error::Result<()> {
    header.remove_header(&http::header::TRANSFER_ENCODING);
    header.insert_header(http::header::CONTENT_LENGTH, body.len())?;
    session.write_response_header(header, false).await?;
    session.write_response_body(Some(body.into()), true).await
}

/// Point the upstream request (already at the provider's `/files` or `/batches`) at what
/// the client named, with the client's method, query and (for a body) `Content-Type`: a
/// multipart upload keeps its boundary.
pub(super) fn retarget(
    req: &mut RequestHeader,
    client: &RequestHeader,
    endpoint: Endpoint,
) -> pingora_error::Result<()> {
    let what = "building the upstream path of a files or batches call";
    let rest = match tail(client.uri.path(), endpoint).ok_or_else(|| path_error(what))? {
        Tail::Root => String::new(),
        Tail::Id(id) => format!("/{id}"),
        Tail::Action(id) => format!("/{id}/{}", action(endpoint)),
    };
    super::responses_api::aim(req, client, &rest, what)
}

#[cfg(test)]
#[path = "files_api_tests.rs"]
mod tests;
