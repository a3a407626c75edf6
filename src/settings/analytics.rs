//! `analytics:`: the built-in usage rollups and the ring of recent requests.

use super::text::{is_default, HumanDuration};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalyticsSection {
    /// Keep per-minute usage rollups and recent requests (default true).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// How long the rollups are kept (default 30 days).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention: Option<HumanDuration>,
    /// Requests kept in memory for `GET /admin/api/v1/requests` (default 10,000; at most
    /// 1,000,000).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recent_requests: Option<usize>,
    /// The rollups' SQLite file (default `analytics.db` in the state directory).
    #[serde(default, skip_serializing_if = "is_default")]
    pub path: Option<String>,
}

impl AnalyticsSection {
    pub fn is_enabled(&self) -> bool {
        self.enabled.unwrap_or(true)
    }

    pub fn retention(&self) -> std::time::Duration {
        self.retention
            .map_or(std::time::Duration::from_secs(30 * 86_400), |d| d.0)
    }

    pub fn recent_requests(&self) -> usize {
        self.recent_requests.unwrap_or(10_000)
    }
}
