//! The `client:` block: how long and how much the gateway waits for and holds on behalf of
//! client connections (deadlines, connection cap, memory for request bodies), and the cap
//! on one event of a provider's stream, validated from `settings::ClientSection`.

use super::ConfigError;
use crate::settings::{ClientSection, HumanDuration};
use std::time::Duration;

pub const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(75);
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
pub const DEFAULT_BODY_MEMORY: usize = 256 * 1024 * 1024;
pub const DEFAULT_MAX_EVENT: usize = 1024 * 1024;

/// Validated client limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientSettings {
    pub keepalive_timeout: Duration,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub max_connections: usize,
    pub max_body_memory_bytes: usize,
    pub max_event_bytes: usize,
}

impl Default for ClientSettings {
    fn default() -> Self {
        ClientSettings {
            keepalive_timeout: DEFAULT_KEEPALIVE,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_body_memory_bytes: DEFAULT_BODY_MEMORY,
            max_event_bytes: DEFAULT_MAX_EVENT,
        }
    }
}

fn timeout(
    field: &str,
    value: &Option<HumanDuration>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    let field = format!("client.{field}");
    let d = value.map_or(default, Duration::from);
    // Pingora counts keep-alive in whole seconds; a deadline under a second is a typo.
    if d < Duration::from_secs(1) {
        return Err(ConfigError::field(field, "must be at least 1s"));
    }
    Ok(d)
}

fn positive(field: &str, value: Option<usize>, default: usize) -> Result<usize, ConfigError> {
    match value {
        Some(0) => Err(ConfigError::field(
            format!("client.{field}"),
            "must be greater than 0",
        )),
        Some(n) => Ok(n),
        None => Ok(default),
    }
}

impl ClientSettings {
    /// `max_body_bytes` is the largest single body (`limits.max_body_bytes`): the memory
    /// budget must hold at least one.
    pub fn build(s: &ClientSection, max_body_bytes: usize) -> Result<Self, ConfigError> {
        let settings = ClientSettings {
            keepalive_timeout: timeout(
                "keepalive_timeout",
                &s.keepalive_timeout,
                DEFAULT_KEEPALIVE,
            )?,
            header_timeout: timeout("header_timeout", &s.header_timeout, DEFAULT_HEADER_TIMEOUT)?,
            body_timeout: timeout("body_timeout", &s.body_timeout, DEFAULT_BODY_TIMEOUT)?,
            max_connections: positive(
                "max_connections",
                s.max_connections,
                DEFAULT_MAX_CONNECTIONS,
            )?,
            max_body_memory_bytes: positive(
                "max_body_memory_bytes",
                s.max_body_memory_bytes,
                DEFAULT_BODY_MEMORY.max(max_body_bytes),
            )?,
            max_event_bytes: positive("max_event_bytes", s.max_event_bytes, DEFAULT_MAX_EVENT)?,
        };
        if settings.max_body_memory_bytes < max_body_bytes {
            return Err(ConfigError::field(
                "client.max_body_memory_bytes",
                format!(
                    "{} is smaller than limits.max_body_bytes ({max_body_bytes}): no body of the largest allowed size could ever be read",
                    settings.max_body_memory_bytes
                ),
            ));
        }
        Ok(settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_validation() {
        let d = ClientSettings::build(&ClientSection::default(), 32 << 20).unwrap();
        assert_eq!(d, ClientSettings::default());
        let bad: ClientSection = serde_yaml::from_str("header_timeout: 10ms").unwrap();
        let e = ClientSettings::build(&bad, 1).unwrap_err().to_string();
        assert!(e.contains("client.header_timeout"), "{e}");
        let bad: ClientSection = serde_yaml::from_str("max_connections: 0").unwrap();
        let e = ClientSettings::build(&bad, 1).unwrap_err().to_string();
        assert!(e.contains("client.max_connections"), "{e}");
        let small: ClientSection = serde_yaml::from_str("max_body_memory_bytes: 100").unwrap();
        let e = ClientSettings::build(&small, 1000).unwrap_err().to_string();
        assert!(e.contains("client.max_body_memory_bytes"), "{e}");
        assert!(serde_yaml::from_str::<ClientSection>("idle: 1s").is_err());
    }
}
