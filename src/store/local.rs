//! The embedded store: SQLite on local disk, one writer thread, group commit.
//! (Interface stub: the implementation is being written.)

use super::StoreError;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub struct LocalStore {}

impl LocalStore {
    /// Open (or create) the database at `path`, load the window counters of the last two
    /// days into memory, and start the writer thread, which flushes counter deltas at
    /// least every `flush_interval`.
    pub fn open(_path: &Path, _flush_interval: Duration) -> Result<Arc<LocalStore>, StoreError> {
        Err(StoreError::Backend("not yet".into()))
    }

    /// A consumer's balance, `None` if it was never set.
    pub async fn quota_get(&self, _consumer: &str) -> Result<Option<i64>, StoreError> {
        Err(StoreError::Backend("not yet".into()))
    }

    /// Every stored balance.
    pub async fn quota_all(&self) -> Result<Vec<(String, i64)>, StoreError> {
        Err(StoreError::Backend("not yet".into()))
    }

    /// Set a balance; durable when this returns. Returns the balance.
    pub async fn quota_set(&self, _consumer: &str, _value: i64) -> Result<i64, StoreError> {
        Err(StoreError::Backend("not yet".into()))
    }

    /// Add `delta` (negative to charge) to a balance (a missing one counts as 0); durable
    /// when this returns. Returns the new balance. `Overflow` leaves it unchanged.
    pub async fn quota_add(&self, _consumer: &str, _delta: i64) -> Result<i64, StoreError> {
        Err(StoreError::Backend("not yet".into()))
    }

    /// The total of window counter `key` for the window starting at `start` (unix seconds):
    /// committed plus not yet flushed. Memory only, never blocks.
    pub fn counter(&self, _key: &str, _start: u64) -> i64 {
        0
    }

    /// Add `delta` to a window counter in memory (flushed by the writer thread); returns
    /// the new total.
    pub fn counter_add(&self, _key: &str, _start: u64, _delta: i64) -> i64 {
        0
    }

    /// Flush pending counter deltas and wait for the commit.
    pub async fn flush(&self) -> Result<(), StoreError> {
        Err(StoreError::Backend("not yet".into()))
    }
}
