//! The API-managed layer: objects created through the management API, kept apart from the
//! operator's file and merged with it at load.
//!
//! The operator's file stays theirs: the API never writes it, and an object it defines is
//! read-only through the API (`source: "file"`). What the API creates lives in a `Layer`,
//! plain data in the file's own schema (`providers`, `routes`, `consumers`, `rate_limits`,
//! `quota`; `alert_rules` and `alert_webhooks`, which merge into the file's `alerts.rules`
//! and `alerts.webhooks`) plus a write counter, `revision`. `merge` puts the layer after
//! the file: a file object wins over a layer object of the same name (the layer's is left
//! out and named in a warning), so adding an object to the file never breaks a start.
//!
//! Every write is a `Change` (who, what, when, which revision). A `LayerStore` keeps the
//! layer, the last `HISTORY` layers with their changes (for `restore`) and the audit log:
//! `files` in the state directory on one machine, `redis` when gateways share a Redis.
//! `edit` applies one API call to a layer; validation is the runtime build of the merged
//! settings, the same code that checks the file.

pub mod diff;
pub mod edit;
mod error;
pub mod files;
mod layer;
pub mod redis;

pub use error::ManagedError;
pub use layer::{merge, source_of, Layer, Merged, Source};

use serde::{Deserialize, Serialize};

/// Layers kept for `restore`.
pub const HISTORY: usize = 50;
/// Audit records kept (Redis) or returned (files).
pub const AUDIT_KEEP: usize = 10_000;

/// One write through the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// The layer revision the write made.
    pub revision: u64,
    /// RFC 3339, seconds, UTC.
    pub at: String,
    /// The admin user, `token` (the admin token) or `anonymous` (no admin auth configured).
    pub who: String,
    /// `create`, `replace`, `patch`, `delete`, `restore`, …
    pub action: String,
    /// `provider`, `route`, `consumer`, `rate limit`, `quota`, `alert rule`, `alert webhook`,
    /// `revision`, …
    pub kind: String,
    pub name: String,
}

impl Change {
    pub fn now(revision: u64, who: &str, action: &str, kind: &str, name: &str) -> Self {
        Change {
            revision,
            at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            who: who.to_string(),
            action: action.to_string(),
            kind: kind.to_string(),
            name: name.to_string(),
        }
    }
}

/// A layer as it was after a change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Revision {
    pub change: Change,
    pub layer: Layer,
}

/// Where the layer, its history and the audit log are kept.
#[async_trait::async_trait]
pub trait LayerStore: Send + Sync {
    /// The stored layer (`None`: nothing stored yet).
    async fn load(&self) -> Result<Option<Layer>, ManagedError>;
    /// Store `layer` (whose revision is `expected + 1`) if the stored revision is still
    /// `expected`; otherwise `ManagedError::Stale`. Durable before it returns.
    async fn commit(
        &self,
        expected: u64,
        layer: &Layer,
        change: &Change,
    ) -> Result<(), ManagedError>;
    /// The kept revisions, newest first.
    async fn history(&self) -> Result<Vec<Revision>, ManagedError>;
    /// The newest audit records (at most `limit`), newest first.
    async fn audit(&self, limit: usize) -> Result<Vec<Change>, ManagedError>;
    /// The stored revision alone (cheap; polled by other instances).
    async fn revision(&self) -> Result<u64, ManagedError>;
    /// Add `change` to the audit log alone (a write that is not to the layer: a quota
    /// balance, a reload of the file).
    async fn record(&self, change: &Change) -> Result<(), ManagedError>;
    /// What this store is, for `/readyz` and logs.
    fn describe(&self) -> String;
}
