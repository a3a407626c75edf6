//! Every error a client can see, and the one place that maps it to an HTTP status, a code
//! from the closed set [`ErrorCode`], and a body in the client's protocol: OpenAI's
//! `{"error":{"message","type","code"}}` or Anthropic's `{"type":"error","error":{..}}`,
//! rendered by `ClientProtocol::error_body` (also for the admin API and SSE error events).
//!
//! Messages never contain a provider key: they are built from names (provider, key name,
//! variable name), never from secrets, and any text from an upstream is scrubbed of the
//! provider's keys and quoted as a short excerpt (`scrub`).

mod code;

pub use code::ErrorCode;

use crate::protocol::{ClientProtocol, ErrorView, PlanError};
use crate::translate::TranslateError;
use bytes::Bytes;

/// `Retry-After` of a 429 `insufficient_quota`: the balance comes back only when an operator
/// tops it up, so a long wait (SDKs ignore values above 60 s and use their own backoff).
pub const QUOTA_RETRY_AFTER: u64 = 3600;
/// `Retry-After` of a 503 `provider_key_missing`: a config fix and a reload are needed.
pub const KEY_MISSING_RETRY_AFTER: u64 = 300;
/// `Retry-After` of a 503 `store_unavailable`: Redis reconnects in the background.
pub const STORE_RETRY_AFTER: u64 = 5;
/// `Retry-After` of any other 429/503 (a provider's, passed on without its own header).
pub const DEFAULT_RETRY_AFTER: u64 = 1;

/// A spent budget, as the client is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetSpent {
    pub budget: String,
    pub subject: String,
    /// Amounts as decimals (`12.50`).
    pub spent: String,
    pub allowance: String,
    pub currency: &'static str,
    /// When its period resets, local time (`None`: a lifetime budget).
    pub resets: Option<String>,
}

impl std::fmt::Display for BudgetSpent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let when = match &self.resets {
            Some(r) => format!(" this period, which resets at {r}"),
            None => " (lifetime budget)".into(),
        };
        write!(
            f,
            "Budget `{}` ({}) is spent: {} of {} {} used{when}; ask the gateway's operator to raise or top it up.",
            self.budget, self.subject, self.spent, self.allowance, self.currency
        )
    }
}

impl From<crate::auth::AuthError> for GatewayError {
    fn from(e: crate::auth::AuthError) -> Self {
        match e {
            crate::auth::AuthError::Missing => GatewayError::MissingCredential,
            crate::auth::AuthError::Invalid => GatewayError::InvalidCredential,
            crate::auth::AuthError::NotAllowed => GatewayError::Forbidden,
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum GatewayError {
    #[error("We could not parse the JSON body of your request: {0}")]
    InvalidJson(String),
    #[error("The request body must be a JSON object.")]
    NotAnObject,
    #[error("We could not read the multipart form of your request: {0}")]
    InvalidForm(String),
    #[error("You must provide a model parameter.")]
    MissingModel,
    #[error("The `model` parameter must be a string.")]
    ModelNotString,
    #[error("The model `{0}` does not exist or is not served by this gateway.")]
    ModelNotFound(String),
    #[error("Unknown path {0}.")]
    RouteNotFound(String),
    #[error("Method {0} is not allowed here.")]
    MethodNotAllowed(String),
    #[error("The request body is larger than the limit of {0} bytes.")]
    BodyTooLarge(usize),
    #[error("Could not read the request body: {0}")]
    BodyRead(String),
    /// The client did not send its whole body within `client.body_timeout`.
    #[error("The request body did not arrive within {0} seconds.")]
    BodyTimeout(u64),
    /// An `Expect` header other than `100-continue`.
    #[error("Unsupported expectation `{0}`; only `100-continue` is supported.")]
    ExpectationFailed(String),
    /// Request bodies held in memory reached `client.max_body_memory_bytes`.
    #[error("The gateway is busy; try again in {0} seconds.")]
    ServerBusy(u64),
    #[error(
        "Provider `{provider}` has no API key configured (environment variable {vars} is not set)."
    )]
    ProviderKeyMissing { provider: String, vars: String },
    #[error("Provider `{provider}`: host `{host}` could not be resolved.")]
    UpstreamUnresolved { provider: String, host: String },
    #[error("Could not connect to provider `{provider}`: {detail}")]
    UpstreamConnect { provider: String, detail: String },
    #[error("TLS handshake with provider `{provider}` failed: {detail}")]
    UpstreamTls { provider: String, detail: String },
    #[error("Provider `{provider}` did not answer in time ({detail}).")]
    UpstreamTimeout { provider: String, detail: String },
    #[error("The connection to provider `{provider}` failed: {detail}")]
    UpstreamBroken { provider: String, detail: String },
    /// `retry_after`: seconds until the first key is expected back.
    #[error("Every API key of {targets} is out of rotation (failing, revoked or rate limited); try again in {retry_after} seconds.")]
    AllKeysUnavailable { targets: String, retry_after: u64 },
    /// Every attempt failed; `status`/`code` are the last one's, `message` summarises all;
    /// `retry_after` is the last provider's `Retry-After`, if it sent one.
    #[error("{message}")]
    Exhausted {
        status: u16,
        code: ErrorCode,
        message: String,
        retry_after: Option<u64>,
    },
    /// A request the target protocol cannot express, or a provider answer that could not
    /// be translated.
    #[error("{message}")]
    Translate {
        status: u16,
        code: ErrorCode,
        message: String,
    },
    #[error("You didn't provide an API key. Send it as `Authorization: Bearer KEY`.")]
    MissingCredential,
    /// A credential that names no consumer (401, as OpenAI answers an unknown key).
    #[error("Incorrect API key provided.")]
    InvalidCredential,
    /// A known consumer that the route does not allow.
    #[error("Your API key is not allowed to use this route.")]
    Forbidden,
    /// A known consumer calling the quota API without being its administrator.
    #[error("Your API key is valid, but you are not the quota administrator.")]
    NotQuotaAdmin,
    #[error("Rate limit reached ({rule}, {what} per {window}): try again in {retry_after_ms} ms.")]
    RateLimited {
        rule: String,
        what: &'static str,
        window: &'static str,
        retry_after_ms: u64,
    },
    #[error(
        "You exceeded your token quota ({consumer}); ask the gateway's operator to top it up."
    )]
    QuotaExceeded { consumer: String },
    /// A money budget has no room for the request's reservation.
    #[error("{0}")]
    BudgetExceeded(Box<BudgetSpent>),
    /// A budget applies and the request's model has no price (`unpriced: refuse`).
    #[error("Budget `{budget}` applies to this request, and model `{model}` has no price in the gateway's price book, so its cost cannot be counted.")]
    BudgetUnpriced { budget: String, model: String },
    /// A template invocation that cannot be expanded (unknown template, a missing, extra
    /// or wrongly typed variable).
    #[error("{0}")]
    Template(String),
    /// A request a prompt decorator cannot be applied to (`messages` not an array, …).
    #[error("{0}")]
    Decorate(String),
    /// The route's moderation check failed and `on_error: fail_closed`.
    #[error("The gateway cannot check your request's content right now ({0}); try again shortly.")]
    ModerationUnavailable(String),
    /// The store behind limits or quotas failed and the config says to refuse (`on_error: closed`).
    #[error("The gateway cannot check {0} right now; try again shortly.")]
    StoreUnavailable(&'static str),
    /// The request or the answer violates a route's content policy (`what`: the PII kind,
    /// the deny list or the moderation's categories; never the matched text).
    #[error("{0}")]
    ContentPolicy(String),
    /// A bad call to the quota API.
    #[error("{0}")]
    BadQuotaRequest(String),
    /// The client closed its connection before the answer was complete (never sent; for
    /// the access log, as nginx's 499).
    #[error("The client closed the connection.")]
    ClientClosed,
    #[error("Internal gateway error: {0}")]
    Internal(String),
    /// `/admin/*` without the admin token.
    #[error("Admin credentials are required: the admin bearer token, a session token from POST /admin/api/v1/login, or an admin user's password (Basic).")]
    AdminUnauthorized,
    /// An unknown `/admin/*` path.
    #[error("Unknown admin path.")]
    AdminNotFound,
    /// A management API object that does not exist (`kind` is the collection).
    #[error("No {kind} named `{name}`.")]
    AdminObjectNotFound { kind: &'static str, name: String },
    /// A known admin path called with the wrong method.
    #[error("Method not allowed.")]
    AdminMethodNotAllowed,
    /// `POST /admin/reload` with a config that does not validate.
    #[error("{0}")]
    ConfigRejected(String),
    /// A management API write that cannot be applied.
    #[error("{0}")]
    Managed(crate::managed::ManagedError),
    /// A usage query the analytics cannot answer (a bad parameter).
    #[error("{0}")]
    BadQuery(String),
    /// An admin user whose role may only read tried to write.
    #[error("The `viewer` role may only read; this needs the `admin` role.")]
    AdminReadOnly,
    /// A write authorised by the console's session cookie without its CSRF token.
    #[error("A write with the console's session cookie needs the session's X-CSRF-Token header.")]
    CsrfMissing,
    /// Too many failed logins from one address.
    #[error("Too many failed logins from this address; try again in {0} s.")]
    LoginLimited(u64),
}

impl From<crate::managed::ManagedError> for GatewayError {
    fn from(e: crate::managed::ManagedError) -> Self {
        GatewayError::Managed(e)
    }
}

impl From<TranslateError> for GatewayError {
    fn from(e: TranslateError) -> Self {
        let code = match e {
            TranslateError::InvalidJson(_) => ErrorCode::InvalidJson,
            TranslateError::NotAnObject => ErrorCode::InvalidBody,
            TranslateError::InvalidRequest(_) => ErrorCode::InvalidRequest,
            TranslateError::Unsupported(_) => ErrorCode::UnsupportedByProvider,
            TranslateError::UpstreamResponse(_) => ErrorCode::UpstreamResponseInvalid,
        };
        GatewayError::Translate {
            status: e.status(),
            code,
            message: e.to_string(),
        }
    }
}

impl From<PlanError> for GatewayError {
    fn from(e: PlanError) -> Self {
        match e {
            PlanError::Translate(e) => e.into(),
            PlanError::Unsupported { endpoint, protocol } => GatewayError::Translate {
                status: 400,
                code: ErrorCode::UnsupportedEndpoint,
                message: format!(
                    "The {} endpoint is not available for {protocol} providers.",
                    endpoint.as_str()
                ),
            },
        }
    }
}

fn managed_status(e: &crate::managed::ManagedError) -> u16 {
    use crate::managed::ManagedError::*;
    match e {
        Invalid(_) => 400,
        NotFound { .. } => 404,
        Exists { .. } | FromFile { .. } | Stale { .. } | Moved(_) => 409,
        Storage(_) => 503,
    }
}

fn managed_code(e: &crate::managed::ManagedError) -> ErrorCode {
    use crate::managed::ManagedError::*;
    match e {
        Invalid(_) => ErrorCode::InvalidConfig,
        NotFound { .. } => ErrorCode::NotFound,
        Exists { .. } => ErrorCode::AlreadyExists,
        FromFile { .. } => ErrorCode::DefinedInFile,
        Stale { .. } | Moved(_) => ErrorCode::RevisionConflict,
        Storage(_) => ErrorCode::StateUnavailable,
    }
}

impl GatewayError {
    pub fn status(&self) -> u16 {
        use GatewayError::*;
        match self {
            InvalidJson(_) | NotAnObject | InvalidForm(_) | MissingModel | ModelNotString
            | BodyRead(_) | BadQuotaRequest(_) | ConfigRejected(_) | ContentPolicy(_) => 400,
            Template(_) | Decorate(_) => 400,
            ModerationUnavailable(_) => 503,
            QuotaExceeded { .. } | BudgetExceeded(_) => 429,
            BudgetUnpriced { .. } => 403,
            StoreUnavailable(_) | ServerBusy(_) => 503,
            BodyTimeout(_) => 408,
            ExpectationFailed(_) => 417,
            ModelNotFound(_) | RouteNotFound(_) | AdminNotFound | AdminObjectNotFound { .. } => 404,
            Managed(e) => managed_status(e),
            AdminReadOnly | CsrfMissing => 403,
            LoginLimited(_) => 429,
            BadQuery(_) => 400,
            MethodNotAllowed(_) | AdminMethodNotAllowed => 405,
            MissingCredential | InvalidCredential | AdminUnauthorized => 401,
            RateLimited { .. } => 429,
            Forbidden | NotQuotaAdmin => 403,
            BodyTooLarge(_) => 413,
            ProviderKeyMissing { .. } | AllKeysUnavailable { .. } => 503,
            Exhausted { status, .. } | Translate { status, .. } => *status,
            UpstreamUnresolved { .. }
            | UpstreamConnect { .. }
            | UpstreamTls { .. }
            | UpstreamBroken { .. } => 502,
            UpstreamTimeout { .. } => 504,
            ClientClosed => 499,
            Internal(_) => 500,
        }
    }

    /// OpenAI's `type` field.
    pub fn kind(&self) -> &'static str {
        if let GatewayError::QuotaExceeded { .. } | GatewayError::BudgetExceeded(_) = self {
            return "insufficient_quota";
        }
        match self.status() {
            400 | 401 | 403 | 404 | 405 | 408 | 413 | 417 => "invalid_request_error",
            429 => "rate_limit_error",
            _ => "server_error",
        }
    }

    /// How an attempt that failed with this error ended, for key health.
    pub fn attempt_end(&self) -> crate::health::AttemptEnd {
        use crate::health::AttemptEnd;
        match self {
            GatewayError::UpstreamTimeout { .. } => AttemptEnd::Timeout,
            GatewayError::UpstreamConnect { .. }
            | GatewayError::UpstreamTls { .. }
            | GatewayError::UpstreamUnresolved { .. } => AttemptEnd::Connect,
            _ => AttemptEnd::Broken,
        }
    }

    /// OpenAI's `code` field (also the `error` label in metrics and the access log).
    pub fn code(&self) -> &'static str {
        self.error_code().as_str()
    }

    /// The error's code, from the closed set.
    pub fn error_code(&self) -> ErrorCode {
        use GatewayError::*;
        match self {
            InvalidJson(_) => ErrorCode::InvalidJson,
            NotAnObject | InvalidForm(_) => ErrorCode::InvalidBody,
            MissingModel => ErrorCode::MissingModel,
            ModelNotString => ErrorCode::InvalidModel,
            ModelNotFound(_) => ErrorCode::ModelNotFound,
            RouteNotFound(_) | AdminNotFound | AdminObjectNotFound { .. } => ErrorCode::NotFound,
            MethodNotAllowed(_) | AdminMethodNotAllowed => ErrorCode::MethodNotAllowed,
            MissingCredential => ErrorCode::MissingApiKey,
            RateLimited { .. } => ErrorCode::RateLimitExceeded,
            QuotaExceeded { .. } | BudgetExceeded(_) => ErrorCode::InsufficientQuota,
            BudgetUnpriced { .. } => ErrorCode::ModelNotPriced,
            StoreUnavailable(_) => ErrorCode::StoreUnavailable,
            BadQuotaRequest(_) => ErrorCode::InvalidQuotaRequest,
            Template(_) => ErrorCode::InvalidTemplate,
            Decorate(_) => ErrorCode::InvalidRequest,
            ModerationUnavailable(_) => ErrorCode::ModerationUnavailable,
            ContentPolicy(_) => ErrorCode::ContentPolicyViolation,
            InvalidCredential => ErrorCode::InvalidApiKey,
            Forbidden | NotQuotaAdmin => ErrorCode::PermissionDenied,
            AdminUnauthorized => ErrorCode::Unauthorized,
            ConfigRejected(_) => ErrorCode::InvalidConfig,
            Managed(e) => managed_code(e),
            AdminReadOnly | CsrfMissing => ErrorCode::PermissionDenied,
            LoginLimited(_) => ErrorCode::RateLimitExceeded,
            BadQuery(_) => ErrorCode::InvalidRequest,
            BodyTooLarge(_) => ErrorCode::RequestTooLarge,
            BodyRead(_) => ErrorCode::BodyReadError,
            BodyTimeout(_) => ErrorCode::RequestTimeout,
            ExpectationFailed(_) => ErrorCode::ExpectationFailed,
            ServerBusy(_) => ErrorCode::ServerBusy,
            ProviderKeyMissing { .. } => ErrorCode::ProviderKeyMissing,
            AllKeysUnavailable { .. } => ErrorCode::AllKeysUnavailable,
            Exhausted { code, .. } | Translate { code, .. } => *code,
            UpstreamUnresolved { .. } => ErrorCode::UpstreamUnresolved,
            UpstreamConnect { .. } => ErrorCode::UpstreamConnectError,
            UpstreamTls { .. } => ErrorCode::UpstreamTlsError,
            UpstreamTimeout { .. } => ErrorCode::UpstreamTimeout,
            UpstreamBroken { .. } => ErrorCode::UpstreamError,
            ClientClosed => ErrorCode::ClientClosedRequest,
            Internal(_) => ErrorCode::InternalError,
        }
    }

    /// Seconds for the `Retry-After` header. Every 429 and 503 carries one (`respond::error`
    /// adds it): the wait the gateway knows (a rate limit's window, the first key's return,
    /// the provider's own `Retry-After`), else a fixed value per condition.
    pub fn retry_after(&self) -> Option<u64> {
        use GatewayError::*;
        let secs = match self {
            ServerBusy(s) => *s,
            RateLimited { retry_after_ms, .. } => retry_after_ms.div_ceil(1000),
            LoginLimited(s) => *s,
            AllKeysUnavailable { retry_after, .. } => *retry_after,
            Exhausted {
                retry_after: Some(s),
                ..
            } => *s,
            QuotaExceeded { .. } | BudgetExceeded(_) => QUOTA_RETRY_AFTER,
            ProviderKeyMissing { .. } => KEY_MISSING_RETRY_AFTER,
            StoreUnavailable(_) => STORE_RETRY_AFTER,
            _ if matches!(self.status(), 429 | 503) => DEFAULT_RETRY_AFTER,
            _ => return None,
        };
        Some(secs.max(1))
    }

    /// A condition that does not clear by itself (a spent quota, a provider without a key):
    /// the response says `x-should-retry: false`, which OpenAI's SDKs obey instead of
    /// retrying a 429/503 automatically.
    pub fn needs_operator(&self) -> bool {
        matches!(
            self,
            GatewayError::QuotaExceeded { .. }
                | GatewayError::BudgetExceeded(_)
                | GatewayError::BudgetUnpriced { .. }
                | GatewayError::ProviderKeyMissing { .. }
        )
    }

    /// Whether the client connection must be closed after this error: the request's framing
    /// can no longer be trusted (a malformed or unfinished body), so whatever follows on the
    /// connection must never be read as a new request.
    pub fn closes_connection(&self) -> bool {
        matches!(
            self,
            GatewayError::BodyRead(_)
                | GatewayError::BodyTimeout(_)
                | GatewayError::BodyTooLarge(_)
                | GatewayError::ExpectationFailed(_)
        )
    }

    /// The body for a client speaking `client`'s protocol (the one error map: the shapes
    /// are `ClientProtocol::error_body`'s).
    pub fn body_for(&self, client: ClientProtocol) -> Bytes {
        let message = self.to_string();
        client.error_body(&self.view(&message))
    }

    /// The error as a final SSE event, for a stream that already started.
    pub fn sse_event(&self, client: ClientProtocol) -> Bytes {
        let message = self.to_string();
        client.sse_error(&self.view(&message))
    }

    fn view<'a>(&self, message: &'a str) -> ErrorView<'a> {
        ErrorView {
            status: self.status(),
            kind: self.kind(),
            code: self.code(),
            message,
        }
    }

    /// Classify a Pingora error raised while talking to `provider`. Its description can
    /// quote what the provider sent: the provider's keys are scrubbed from it and it is cut
    /// to a short excerpt.
    pub fn from_upstream(
        provider: &str,
        e: &pingora_error::Error,
        scrubber: &crate::scrub::Scrubber,
    ) -> Self {
        use pingora_error::ErrorType::*;
        let provider = provider.to_string();
        let detail = crate::scrub::excerpt(&scrubber.scrub_text(describe(e)));
        match e.etype() {
            ConnectTimedout | ReadTimedout | WriteTimedout => {
                GatewayError::UpstreamTimeout { provider, detail }
            }
            TLSHandshakeFailure | TLSHandshakeTimedout | InvalidCert | HandshakeError
            | TLSWantX509Lookup => GatewayError::UpstreamTls { provider, detail },
            ConnectRefused | ConnectNoRoute | ConnectError | ConnectProxyFailure | BindError
            | SocketError => GatewayError::UpstreamConnect { provider, detail },
            _ => GatewayError::UpstreamBroken { provider, detail },
        }
    }
}

/// A one-line description of a Pingora error: its type and cause, without the peer dump.
fn describe(e: &pingora_error::Error) -> String {
    let mut s = e.etype().as_str().to_string();
    if let Some(ctx) = &e.context {
        s.push_str(": ");
        s.push_str(ctx.as_str());
    }
    if let Some(cause) = &e.cause {
        s.push_str(": ");
        s.push_str(&cause.to_string());
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_shape() {
        let e = GatewayError::BodyTooLarge(10);
        let v: serde_json::Value =
            serde_json::from_slice(&e.body_for(ClientProtocol::OpenAi)).unwrap();
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["code"], "request_too_large");
        assert!(v["error"]["message"].as_str().unwrap().contains("10 bytes"));
        assert_eq!(e.status(), 413);
        assert!(e.sse_event(ClientProtocol::OpenAi).starts_with(b"data: {"));
        assert!(e
            .sse_event(ClientProtocol::Anthropic)
            .starts_with(b"event: error\ndata: {\"error\""));
        let a: serde_json::Value =
            serde_json::from_slice(&e.body_for(ClientProtocol::Anthropic)).unwrap();
        assert_eq!(a["type"], "error");
        assert_eq!(a["error"]["type"], "invalid_request_error");
    }

    #[test]
    fn every_429_and_503_has_a_retry_after() {
        let all = [
            GatewayError::ServerBusy(1),
            GatewayError::StoreUnavailable("quotas"),
            GatewayError::QuotaExceeded {
                consumer: "a".into(),
            },
            GatewayError::RateLimited {
                rule: "r".into(),
                what: "requests",
                window: "minute",
                retry_after_ms: 1500,
            },
            GatewayError::ProviderKeyMissing {
                provider: "p".into(),
                vars: "V".into(),
            },
            GatewayError::AllKeysUnavailable {
                targets: "provider `p`".into(),
                retry_after: 7,
            },
            GatewayError::Exhausted {
                status: 429,
                code: ErrorCode::RateLimitExceeded,
                message: "m".into(),
                retry_after: None,
            },
            GatewayError::Exhausted {
                status: 503,
                code: ErrorCode::UpstreamError,
                message: "m".into(),
                retry_after: Some(9),
            },
            GatewayError::Translate {
                status: 503,
                code: ErrorCode::UpstreamResponseInvalid,
                message: "m".into(),
            },
        ];
        for e in &all {
            assert!(matches!(e.status(), 429 | 503), "{e:?}");
            assert!(e.retry_after().is_some_and(|s| s >= 1), "{e:?}");
        }
        assert_eq!(all[3].retry_after(), Some(2), "rounded up");
        assert_eq!(all[5].retry_after(), Some(7));
        assert_eq!(all[7].retry_after(), Some(9));
        assert_eq!(GatewayError::MissingModel.retry_after(), None);
        assert!(all[2].needs_operator() && all[4].needs_operator());
        assert!(!all[0].needs_operator());
        assert_eq!(GatewayError::InvalidCredential.status(), 401);
        assert_eq!(GatewayError::InvalidCredential.code(), "invalid_api_key");
        assert_eq!(GatewayError::Forbidden.status(), 403);
        assert_eq!(GatewayError::NotQuotaAdmin.code(), "permission_denied");
    }

    /// One value of every variant (a new variant fails to compile in `sample`'s match).
    fn every_variant() -> Vec<GatewayError> {
        use GatewayError::*;
        let s = || "x".to_string();
        let all = vec![
            InvalidJson(s()),
            NotAnObject,
            InvalidForm(s()),
            MissingModel,
            ModelNotString,
            ModelNotFound(s()),
            RouteNotFound(s()),
            MethodNotAllowed(s()),
            BodyTooLarge(1),
            BodyRead(s()),
            BodyTimeout(1),
            ExpectationFailed(s()),
            ServerBusy(1),
            Template(s()),
            Decorate(s()),
            ModerationUnavailable(s()),
            ProviderKeyMissing {
                provider: s(),
                vars: s(),
            },
            UpstreamUnresolved {
                provider: s(),
                host: s(),
            },
            UpstreamConnect {
                provider: s(),
                detail: s(),
            },
            UpstreamTls {
                provider: s(),
                detail: s(),
            },
            UpstreamTimeout {
                provider: s(),
                detail: s(),
            },
            UpstreamBroken {
                provider: s(),
                detail: "a \"quoted\" \n detail".into(),
            },
            AllKeysUnavailable {
                targets: s(),
                retry_after: 1,
            },
            Exhausted {
                status: 429,
                code: ErrorCode::RateLimitExceeded,
                message: s(),
                retry_after: None,
            },
            Translate {
                status: 400,
                code: ErrorCode::UnsupportedEndpoint,
                message: s(),
            },
            MissingCredential,
            InvalidCredential,
            Forbidden,
            NotQuotaAdmin,
            RateLimited {
                rule: s(),
                what: "requests",
                window: "minute",
                retry_after_ms: 1,
            },
            QuotaExceeded { consumer: s() },
            BudgetExceeded(Box::new(BudgetSpent {
                budget: s(),
                subject: s(),
                spent: s(),
                allowance: s(),
                currency: "USD",
                resets: Some(s()),
            })),
            BudgetUnpriced {
                budget: s(),
                model: s(),
            },
            StoreUnavailable("quotas"),
            BadQuotaRequest(s()),
            ClientClosed,
            Internal(s()),
            AdminUnauthorized,
            AdminNotFound,
            AdminObjectNotFound {
                kind: "provider",
                name: s(),
            },
            AdminMethodNotAllowed,
            ConfigRejected(s()),
            Managed(crate::managed::ManagedError::Invalid(s())),
            Managed(crate::managed::ManagedError::NotFound {
                kind: "route",
                name: s(),
            }),
            Managed(crate::managed::ManagedError::Exists {
                kind: "route",
                name: s(),
            }),
            Managed(crate::managed::ManagedError::FromFile {
                kind: "route",
                name: s(),
            }),
            Managed(crate::managed::ManagedError::Stale {
                given: s(),
                current: s(),
            }),
            Managed(crate::managed::ManagedError::Moved(1)),
            Managed(crate::managed::ManagedError::Storage(s())),
            AdminReadOnly,
            BadQuery(s()),
            CsrfMissing,
            LoginLimited(3),
            ContentPolicy(s()),
        ];
        for e in &all {
            // Exhaustive: a new variant must be added above.
            match e {
                InvalidJson(_)
                | NotAnObject
                | InvalidForm(_)
                | MissingModel
                | ModelNotString
                | ModelNotFound(_)
                | RouteNotFound(_)
                | MethodNotAllowed(_)
                | BodyTooLarge(_)
                | BodyRead(_)
                | BodyTimeout(_)
                | ExpectationFailed(_)
                | ServerBusy(_)
                | Template(_)
                | Decorate(_)
                | ModerationUnavailable(_)
                | ProviderKeyMissing { .. }
                | UpstreamUnresolved { .. }
                | UpstreamConnect { .. }
                | UpstreamTls { .. }
                | UpstreamTimeout { .. }
                | UpstreamBroken { .. }
                | AllKeysUnavailable { .. }
                | Exhausted { .. }
                | Translate { .. }
                | MissingCredential
                | InvalidCredential
                | Forbidden
                | NotQuotaAdmin
                | RateLimited { .. }
                | QuotaExceeded { .. }
                | BudgetExceeded(_)
                | BudgetUnpriced { .. }
                | StoreUnavailable(_)
                | BadQuotaRequest(_)
                | ClientClosed
                | CsrfMissing
                | LoginLimited(_)
                | Internal(_)
                | AdminUnauthorized
                | AdminNotFound
                | AdminObjectNotFound { .. }
                | AdminMethodNotAllowed
                | ConfigRejected(_)
                | Managed(_)
                | AdminReadOnly
                | ContentPolicy(_)
                | BadQuery(_) => {}
            }
        }
        all
    }

    #[test]
    fn every_variant_renders_both_shapes() {
        for e in every_variant() {
            let status = e.status();
            assert!((400..600).contains(&status), "{e:?}");
            let o: serde_json::Value =
                serde_json::from_slice(&e.body_for(ClientProtocol::OpenAi)).unwrap();
            assert_eq!(o["error"]["message"], e.to_string(), "{e:?}");
            assert_eq!(o["error"]["type"], e.kind(), "{e:?}");
            assert_eq!(o["error"]["code"], e.code(), "{e:?}");
            assert_eq!(o.as_object().unwrap().len(), 1, "{e:?}");
            let a: serde_json::Value =
                serde_json::from_slice(&e.body_for(ClientProtocol::Anthropic)).unwrap();
            assert_eq!(a["type"], "error", "{e:?}");
            assert_eq!(a["error"]["message"], e.to_string(), "{e:?}");
            assert!(
                a["error"]["type"].as_str().unwrap().ends_with("_error"),
                "{e:?}"
            );
            for client in ClientProtocol::ALL {
                let event = e.sse_event(client);
                let text = std::str::from_utf8(&event).unwrap();
                let data = text.split_once("data: ").unwrap().1;
                assert!(data.ends_with("\n\n"), "{e:?}");
                let v: serde_json::Value = serde_json::from_str(data.trim_end()).unwrap();
                if client == ClientProtocol::Responses {
                    // The Responses API's own `error` event.
                    assert!(text.starts_with("event: error\n"), "{e:?}");
                    assert_eq!(v["type"], "error", "{e:?}");
                    assert_eq!(v["message"], e.to_string(), "{e:?}");
                    assert_eq!(v["code"], e.code(), "{e:?}");
                    continue;
                }
                assert_eq!(v.to_string().as_bytes(), &e.body_for(client)[..], "{e:?}");
            }
        }
    }

    #[test]
    fn codes_are_the_closed_set_and_unchanged() {
        let names: std::collections::HashSet<&str> =
            ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(names.len(), ErrorCode::ALL.len(), "codes are distinct");
        for e in every_variant() {
            assert!(names.contains(e.code()), "{e:?}");
        }
        // What clients see (pinned by the integration tests too).
        for (e, status, code) in [
            (GatewayError::MissingModel, 400, "missing_model"),
            (GatewayError::AdminUnauthorized, 401, "unauthorized"),
            (GatewayError::AdminNotFound, 404, "not_found"),
            (
                GatewayError::AdminMethodNotAllowed,
                405,
                "method_not_allowed",
            ),
            (
                GatewayError::ConfigRejected("bad".into()),
                400,
                "invalid_config",
            ),
            (GatewayError::ClientClosed, 499, "client_closed_request"),
        ] {
            assert_eq!((e.status(), e.code()), (status, code), "{e:?}");
        }
        for t in [
            TranslateError::InvalidJson("x".into()),
            TranslateError::NotAnObject,
            TranslateError::InvalidRequest("x".into()),
            TranslateError::Unsupported("x".into()),
            TranslateError::UpstreamResponse("x"),
        ] {
            let g = GatewayError::from(t.clone());
            assert_eq!((g.status(), g.code()), (t.status(), t.code()), "{t:?}");
        }
        let unsupported = GatewayError::from(PlanError::Unsupported {
            endpoint: crate::protocol::Endpoint::Embeddings,
            protocol: "Anthropic",
        });
        assert_eq!(unsupported.status(), 400);
        assert_eq!(unsupported.code(), "unsupported_endpoint");
        assert!(unsupported.to_string().contains("embeddings"));
    }
}
