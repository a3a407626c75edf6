//! `tracing:`: OpenTelemetry traces of proxied requests, sent over OTLP/HTTP. Off when the
//! section is absent.

use super::text::{HumanDuration, Secret};
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TracingSection {
    /// The collector's OTLP/HTTP address, e.g. `http://127.0.0.1:4318`; `/v1/traces` is
    /// appended unless the URL already ends with it.
    pub otlp_endpoint: String,
    /// `service.name` of the exported resource (default `tollgate`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
    /// Share of new traces recorded, 0.0 to 1.0 (default 1.0). A request that comes with a
    /// W3C `traceparent` follows its caller's sampled flag instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sample_ratio: Option<f64>,
    /// Finished requests waiting for export (default 2048); beyond it their spans are
    /// dropped and counted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue: Option<usize>,
    /// Deadline of one export to the collector, retries included (default 10s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HumanDuration>,
    /// Headers sent with every export (a collector's or vendor's token: `${VAR}` as for keys).
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub headers: IndexMap<String, Secret>,
}
