//! Where counters that must outlive the process are kept: quota balances and hour/day
//! rate-limit windows.
//!
//! - [`local`]: an embedded SQLite database (WAL, `synchronous=FULL`) owned by one writer
//!   thread that group-commits. SQLite rather than a single-process store such as redb
//!   because during a graceful upgrade the old and the new process both write for a while;
//!   SQLite's file locking lets them, and `count = count + ?` keeps both writers exact.
//! - [`redis`]: a shared Redis, for several gateways; every operation is one atomic script.

pub mod local;
pub mod redis;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("store timed out")]
    Timeout,
    #[error("value out of range")]
    Overflow,
    #[error("store error: {0}")]
    Backend(String),
}
