//! The client-facing side of a request: route it, read and parse its body, choose provider
//! and key, run the attempt as a subrequest piped back to the client, and remember what
//! happened for the access log and metrics.

use super::attempt::{Attempt, Outcome, Shared, Slot};
use super::respond;
use crate::body::RequestBody;
use crate::config::Gateway;
use crate::error::GatewayError;
use crate::provider::Provider;
use crate::route::{host_without_port, Endpoint};
use bytes::{Bytes, BytesMut};
use pingora_core::protocols::http::HttpTask;
use pingora_error::{Error, Result};
use pingora_proxy::subrequest::pipe::{pipe_subrequest, InputBody, InputBodyType};
use pingora_proxy::subrequest::{BodyMode, Ctx as SubCtx};
use pingora_proxy::Session;
use std::sync::{Arc, Mutex};

/// What the access log and metrics need to know about a client request.
pub struct ClientRequest {
    pub config: Arc<Gateway>,
    pub route: Option<usize>,
    pub endpoint: Option<Endpoint>,
    pub model: Option<String>,
    pub stream: bool,
    pub provider: Option<Arc<Provider>>,
    pub key_index: Option<usize>,
    pub upstream_model: Option<String>,
    /// Status sent to the client (0 = none sent).
    pub status: u16,
    pub outcome: Outcome,
    pub error: Option<GatewayError>,
    /// Kept only to estimate prompt tokens when a provider reports no usage.
    pub body: Option<RequestBody>,
}

impl ClientRequest {
    pub fn new(config: Arc<Gateway>) -> Self {
        ClientRequest {
            config,
            route: None,
            endpoint: None,
            model: None,
            stream: false,
            provider: None,
            key_index: None,
            upstream_model: None,
            status: 0,
            outcome: Outcome::default(),
            error: None,
            body: None,
        }
    }

    pub fn route_name(&self) -> Option<&str> {
        self.route
            .and_then(|i| self.config.routes.get(i))
            .map(|r| r.name.as_str())
    }

    pub fn key_name(&self) -> Option<&str> {
        let p = self.provider.as_ref()?;
        p.keys.get(self.key_index?).map(|k| k.name.as_str())
    }

    /// Serve the request; `Err` only when the client connection must be aborted.
    pub async fn serve(&mut self, session: &mut Session, request_id: &str) -> Result<()> {
        match self.proxy(session, request_id).await {
            Ok(()) => Ok(()),
            Err(Failure::Respond(err)) => {
                self.status = err.status();
                let result = respond::error(session, &err, request_id).await;
                self.error = Some(err);
                result
            }
            Err(Failure::Abort(err, e)) => {
                self.error = Some(err);
                Err(e)
            }
        }
    }

    async fn proxy(&mut self, session: &mut Session, request_id: &str) -> Result<(), Failure> {
        let endpoint = self.route(session)?;
        if endpoint == Endpoint::Models {
            if session.req_header().method != http::Method::GET {
                return Err(Failure::Respond(GatewayError::MethodNotAllowed(
                    session.req_header().method.to_string(),
                )));
            }
            self.status = 200;
            let body = self.config.models_json.clone();
            return respond::json(session, 200, body, request_id)
                .await
                .map_err(|e| {
                    Failure::Abort(GatewayError::Internal("writing the response".into()), e)
                });
        }
        if session.req_header().method != http::Method::POST {
            return Err(Failure::Respond(GatewayError::MethodNotAllowed(
                session.req_header().method.to_string(),
            )));
        }
        let bytes = read_body(session, self.config.max_body_bytes).await?;
        let body = RequestBody::parse(bytes)?;
        self.model = Some(body.model.clone());
        self.stream = body.stream;

        let route = self
            .route
            .and_then(|i| self.config.routes.get(i))
            .ok_or_else(|| GatewayError::Internal("route vanished".into()))?;
        let rule = route
            .rule_for(&body.model)
            .ok_or_else(|| GatewayError::ModelNotFound(body.model.clone()))?;
        let target = rule
            .attempt_order()
            .into_iter()
            .next()
            .ok_or_else(|| GatewayError::ModelNotFound(body.model.clone()))?;
        let provider = target.provider.clone();
        self.provider = Some(provider.clone());
        let key_index = provider
            .keys
            .pick()
            .ok_or_else(|| GatewayError::ProviderKeyMissing {
                provider: provider.name.clone(),
                vars: provider.keys.missing_vars().join(", "),
            })?;
        let upstream_model = provider.model_map.map(&body.model).map(str::to_string);
        let force_usage = matches!(endpoint, Endpoint::ChatCompletions | Endpoint::Completions);
        let rewrite = body.rewrite(upstream_model.as_deref(), force_usage);
        let strip_usage = body.stream && force_usage && !body.client_wants_usage;
        self.key_index = Some(key_index);
        self.upstream_model = Some(upstream_model.unwrap_or_else(|| body.model.clone()));

        let shared = Arc::new(Shared::default());
        let attempt = Attempt {
            provider,
            key_index,
            endpoint,
            stream: body.stream,
            original: body.bytes.clone(),
            rewrite,
            strip_usage,
            shared: shared.clone(),
        };
        self.body = Some(body);
        let result = self.run_attempt(session, attempt, request_id).await;
        self.outcome = shared.take();
        result
    }

    /// Pipe one attempt to the client.
    async fn run_attempt(
        &mut self,
        session: &mut Session,
        attempt: Attempt,
        request_id: &str,
    ) -> Result<(), Failure> {
        let original = attempt.original.clone();
        let shared = attempt.shared.clone();
        let sub_ctx = SubCtx::builder()
            .body_mode(BodyMode::ExpectBody)
            .user_ctx(Box::new(Slot(Mutex::new(Some(Box::new(attempt))))))
            .build();
        // The subrequest parses an HTTP/1 rendering of the client's header, and the HTTP/1
        // parser refuses the version "HTTP/2": present an h2 request as HTTP/1.1 to it.
        if session.req_header().version == http::Version::HTTP_2 {
            session.req_header_mut().set_version(http::Version::HTTP_11);
        }
        let spawner = session
            .subrequest_spawner
            .as_ref()
            .ok_or_else(|| GatewayError::Internal("subrequests are not enabled".into()))?;
        let (sub, handle) = spawner.create_subrequest(session.as_downstream(), sub_ctx);

        let mut header_sent: Option<u16> = None;
        let request_id_header = http::HeaderValue::from_str(request_id).ok();
        let filter = |task: HttpTask| -> Result<Option<HttpTask>> {
            Ok(Some(match task {
                HttpTask::Header(mut h, end) => {
                    header_sent = Some(h.status.as_u16());
                    if let Some(id) = &request_id_header {
                        h.insert_header("x-request-id", id.clone())?;
                    }
                    HttpTask::Header(h, end)
                }
                other => other,
            }))
        };
        let input = InputBodyType::Preset(InputBody::Bytes(vec![original]));
        let piped = pipe_subrequest(session, sub, handle, filter, input).await;
        let pipe_error = match piped {
            Ok(_) => None,
            Err(e) => Some(e.error),
        };
        let recorded = shared.outcome.lock().ok().and_then(|o| o.error.clone());
        match (header_sent, pipe_error) {
            (Some(status), None) => {
                self.status = status;
                Ok(())
            }
            (Some(status), Some(e)) => {
                // The response had started: tell a stream's reader, then cut the connection so
                // the client cannot mistake the truncated answer for a complete one.
                self.status = status;
                let err = recorded.unwrap_or_else(|| {
                    let name = self
                        .provider
                        .as_ref()
                        .map(|p| p.name.as_str())
                        .unwrap_or("");
                    GatewayError::from_upstream(name, &e)
                });
                if self.stream {
                    let _ = session
                        .write_response_body(Some(err.sse_event()), false)
                        .await;
                }
                Err(Failure::Abort(err, e))
            }
            (None, e) => Err(Failure::Respond(recorded.unwrap_or_else(|| {
                let name = self
                    .provider
                    .as_ref()
                    .map(|p| p.name.as_str())
                    .unwrap_or("");
                match e {
                    Some(e) => GatewayError::from_upstream(name, &e),
                    None => {
                        GatewayError::Internal("the upstream attempt produced no response".into())
                    }
                }
            }))),
        }
    }

    /// Find the route and endpoint for the request's host and path.
    fn route(&mut self, session: &Session) -> Result<Endpoint, GatewayError> {
        let req = session.req_header();
        let path = req.uri.path();
        let host = req
            .uri
            .host()
            .or_else(|| {
                req.headers
                    .get(http::header::HOST)
                    .and_then(|h| h.to_str().ok())
            })
            .map(host_without_port)
            .unwrap_or("");
        for (i, route) in self.config.routes.iter().enumerate() {
            if let Some(endpoint) = route.match_request(host, path) {
                self.route = Some(i);
                self.endpoint = Some(endpoint);
                return Ok(endpoint);
            }
        }
        Err(GatewayError::RouteNotFound(path.to_string()))
    }
}

/// How a request failed: answer with an error, or abort a response already under way.
enum Failure {
    Respond(GatewayError),
    Abort(GatewayError, Box<Error>),
}

impl From<GatewayError> for Failure {
    fn from(e: GatewayError) -> Self {
        Failure::Respond(e)
    }
}

/// Read the whole request body, refusing more than `limit` bytes.
async fn read_body(session: &mut Session, limit: usize) -> Result<Bytes, GatewayError> {
    let declared = session
        .req_header()
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(GatewayError::BodyTooLarge(limit));
    }
    let mut buf = BytesMut::with_capacity(declared.unwrap_or(8 * 1024).min(limit));
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if buf.len() + chunk.len() > limit {
                    return Err(GatewayError::BodyTooLarge(limit));
                }
                buf.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(e) => return Err(GatewayError::BodyRead(e.etype().as_str().to_string())),
        }
    }
    Ok(buf.freeze())
}
