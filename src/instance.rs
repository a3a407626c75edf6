//! This process's identity: a random id, fixed for the life of the process (a new process
//! after an upgrade or a restart has a new one). `GET /healthz` on the proxy and admin
//! listeners returns it, and the start-up report (`lifecycle::StartReport`) names it, so a
//! client can tell which process answered: the one it started, not an older one still
//! draining or another program on a reused port. A leaf: it imports nothing of the gateway.

use std::sync::OnceLock;

/// The id (16 hex digits).
pub fn id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| format!("{:016x}", fastrand::u64(..)))
}

/// The `/healthz` body of both listeners: `{"instance":"<id>","status":"ok"}`.
pub fn healthz_body() -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({"status": "ok", "instance": id()})).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_id_is_fixed_and_in_the_health_body() {
        assert_eq!(super::id(), super::id());
        assert_eq!(super::id().len(), 16);
        let body: serde_json::Value = serde_json::from_slice(&super::healthz_body()).unwrap();
        assert_eq!(body["status"], "ok");
        assert_eq!(body["instance"], super::id());
    }
}
