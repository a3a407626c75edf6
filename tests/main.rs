//! The integration suite, one test binary: each file beside this one is a module (one link
//! instead of one per file). `common` is the harness they share: it spawns mock-llm, the
//! gateway, redis-server and the browser on ports the processes report.
//!
//! Run one file's tests with `cargo test --test suite cache::`, one test by its name.

mod common;

mod alert_api;
mod analytics;
mod budgets;
mod cache;
mod config_check;
mod console;
mod consumers;
mod deb;
mod failover;
mod files;
mod gateway;
mod hostile;
mod lifecycle;
mod management;
mod media;
mod moderation_output;
mod observability;
mod operations;
mod policies;
mod presets;
mod prometheus;
mod prompts;
mod providers;
mod quota;
mod ratelimit;
mod readme;
mod responses;
mod sdk;
mod shared_limits;
mod systemd;
mod tls;
mod tracing;
mod upgrade;
mod upstream;
