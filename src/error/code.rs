//! The closed set of error codes the gateway sends (OpenAI's `code` field; also the
//! `error` label of metrics and the access log), written once: the enum, `ALL` and
//! `as_str` come from one table.

macro_rules! error_codes {
    ($($variant:ident => $code:literal,)*) => {
        /// Every `code` the gateway sends.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $($variant,)*
        }

        impl ErrorCode {
            /// Every code, in the table's order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $code,)*
                }
            }
        }
    };
}

error_codes! {
    InvalidJson => "invalid_json",
    InvalidBody => "invalid_body",
    InvalidRequest => "invalid_request",
    ContentPolicyViolation => "content_policy_violation",
    MissingModel => "missing_model",
    InvalidModel => "invalid_model",
    ModelNotFound => "model_not_found",
    NotFound => "not_found",
    MethodNotAllowed => "method_not_allowed",
    MissingApiKey => "missing_api_key",
    InvalidApiKey => "invalid_api_key",
    PermissionDenied => "permission_denied",
    Unauthorized => "unauthorized",
    RateLimitExceeded => "rate_limit_exceeded",
    InsufficientQuota => "insufficient_quota",
    ModelNotPriced => "model_not_priced",
    StoreUnavailable => "store_unavailable",
    InvalidQuotaRequest => "invalid_quota_request",
    InvalidTemplate => "invalid_template",
    ModerationUnavailable => "moderation_unavailable",
    InvalidConfig => "invalid_config",
    AlreadyExists => "already_exists",
    DefinedInFile => "defined_in_file",
    RevisionConflict => "revision_conflict",
    StateUnavailable => "state_unavailable",
    RequestTooLarge => "request_too_large",
    BodyReadError => "body_read_error",
    RequestTimeout => "request_timeout",
    ExpectationFailed => "expectation_failed",
    ServerBusy => "server_busy",
    ProviderKeyMissing => "provider_key_missing",
    AllKeysUnavailable => "all_keys_unavailable",
    UnsupportedEndpoint => "unsupported_endpoint",
    UnsupportedByProvider => "unsupported_by_provider",
    UpstreamResponseInvalid => "upstream_response_invalid",
    UpstreamUnresolved => "upstream_unresolved",
    UpstreamConnectError => "upstream_connect_error",
    UpstreamTlsError => "upstream_tls_error",
    UpstreamTimeout => "upstream_timeout",
    UpstreamAuthError => "upstream_auth_error",
    UpstreamError => "upstream_error",
    ClientClosedRequest => "client_closed_request",
    InternalError => "internal_error",
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
