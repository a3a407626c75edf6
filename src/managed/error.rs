//! What can go wrong with a management API write; `error::GatewayError::Managed` maps each
//! to a status and code.

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ManagedError {
    /// The body is not an object of the collection's schema, or the merged settings do not
    /// validate (the message names the field).
    #[error("{0}")]
    Invalid(String),
    #[error("No {kind} named `{name}`.")]
    NotFound { kind: &'static str, name: String },
    #[error("A {kind} named `{name}` exists already.")]
    Exists { kind: &'static str, name: String },
    /// Defined in the operator's file, which the API never changes.
    #[error("The {kind} `{name}` is defined in the config file; change it there (objects from the file are read-only through the API).")]
    FromFile { kind: &'static str, name: String },
    /// `If-Match` named a revision that is no longer current.
    #[error("Stale revision: `If-Match` is {given}, the current revision is {current}; read the object again and retry.")]
    Stale { given: String, current: String },
    /// The layer changed in the store since this instance read it (another instance wrote).
    #[error("The config changed on another instance (revision {0}); retry.")]
    Moved(u64),
    /// The state could not be written or read; nothing changed.
    #[error("The management state store failed: {0}")]
    Storage(String),
}
