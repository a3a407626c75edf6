//! The shared store: Redis, every operation one atomic Lua script (one round trip).
//! (Interface stub: the implementation is being written.)

use super::StoreError;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// `redis://host:port/db` (optionally with user:password).
    pub url: String,
    /// Prefix of every key the gateway writes.
    pub prefix: String,
    /// Deadline of one call, connection included.
    pub timeout: Duration,
}

/// Reserve `n` in a sliding window of `window_secs` on `key`, if it stays within `limit`.
#[derive(Debug, Clone)]
pub struct WindowCheck {
    pub key: String,
    pub window_secs: u64,
    pub n: i64,
    pub limit: u64,
}

/// Add `delta` to `key`'s window that started at `start` (as returned by a reservation).
#[derive(Debug, Clone)]
pub struct WindowAdjust {
    pub key: String,
    pub window_secs: u64,
    pub start: u64,
    pub delta: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowCount {
    /// Sliding-window estimate: after the reservation, or before it when refused.
    pub count: u64,
    /// Start of the current fixed window (unix seconds, aligned to `window_secs`).
    pub start: u64,
    /// Milliseconds until the window has slid past.
    pub reset_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowVerdict {
    /// The first check that would exceed its limit (then nothing was added), or `None`
    /// when every reservation was added.
    pub refused: Option<usize>,
    /// One per check, in order.
    pub counts: Vec<WindowCount>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaReserve {
    pub admitted: bool,
    pub balance: i64,
}

pub struct RedisStore {}

impl RedisStore {
    /// Validate the URL and start connecting in the background; never blocks on the network.
    pub fn start(_settings: RedisSettings) -> Result<Arc<RedisStore>, StoreError> {
        Err(StoreError::Backend("not yet".into()))
    }

    pub fn connected(&self) -> bool {
        false
    }

    pub async fn window_reserve(
        &self,
        _checks: &[WindowCheck],
    ) -> Result<WindowVerdict, StoreError> {
        Err(StoreError::Backend("not yet".into()))
    }

    pub async fn window_adjust(&self, _adjust: &[WindowAdjust]) -> Result<(), StoreError> {
        Err(StoreError::Backend("not yet".into()))
    }

    pub async fn quota_get(&self, _consumer: &str) -> Result<Option<i64>, StoreError> {
        Err(StoreError::Backend("not yet".into()))
    }

    pub async fn quota_set(&self, _consumer: &str, _value: i64) -> Result<i64, StoreError> {
        Err(StoreError::Backend("not yet".into()))
    }

    pub async fn quota_add(&self, _consumer: &str, _delta: i64) -> Result<i64, StoreError> {
        Err(StoreError::Backend("not yet".into()))
    }

    /// Admit when `balance - reserved_by_all >= max(n, 1)`, then reserve `n`.
    pub async fn quota_reserve(
        &self,
        _consumer: &str,
        _n: i64,
    ) -> Result<QuotaReserve, StoreError> {
        Err(StoreError::Backend("not yet".into()))
    }

    /// Release a reservation of `reserved` and charge `used`; returns the new balance.
    pub async fn quota_settle(
        &self,
        _consumer: &str,
        _reserved: i64,
        _used: i64,
    ) -> Result<i64, StoreError> {
        Err(StoreError::Backend("not yet".into()))
    }
}
