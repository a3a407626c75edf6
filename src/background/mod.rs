//! The gateway's background services, run by Pingora beside the listeners: active health
//! checks of keys out of rotation (`checks`), the refresh of provider addresses (`dns`) and
//! following the shared API layer (`layer_sync`) and the alert rules (`alerting`).
//! They read the running config snapshot; nothing on the request path waits for them.

pub mod alerting;
pub mod checks;
pub mod dns;
pub mod layer_sync;

pub use checks::Checker;
pub use dns::Resolver;
