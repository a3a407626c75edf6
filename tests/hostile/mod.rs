//! Adversarial tests: a hostile client and deliberately broken upstreams against a running
//! gateway. Each module covers one class of defect; every test also checks that a normal
//! request is served right after, and where memory is at stake that the gateway's RSS stays
//! bounded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod admin_reload;
mod buffering;
mod framing;
mod headers;
mod labels;
mod usage;
