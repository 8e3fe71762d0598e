//! `tracing.otlp:` — where the request spans go (OpenTelemetry over OTLP).

use std::collections::BTreeMap;

use portcullis_plugins::units::Duration;
use serde::Deserialize;

/// `tracing.otlp:`: export one trace per sampled request to an OTLP collector.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpConfig {
    /// The collector: `http://host:4318` (http/protobuf; `/v1/traces` is added when the
    /// URL has no path) or `http://host:4317` (grpc).
    pub endpoint: String,
    /// `http/protobuf` (default) or `grpc`.
    #[serde(default)]
    pub protocol: OtlpProtocol,
    /// Share of new traces exported, 0 to 1 (default 1). A request that continues a
    /// client's `traceparent` follows its sampled flag instead.
    #[serde(default = "OtlpConfig::default_sample_ratio")]
    pub sample_ratio: f64,
    /// Headers sent with every export (e.g. an API key of a hosted collector).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The `service.name` resource attribute (default `portcullis`).
    #[serde(default = "OtlpConfig::default_service_name")]
    pub service_name: String,
    /// How long one export may take before its spans count as dropped (default 10s).
    pub timeout: Option<Duration>,
    /// Spans waiting for export at most; more are dropped and counted (default 2048).
    pub max_queue: Option<u64>,
}

impl OtlpConfig {
    fn default_sample_ratio() -> f64 {
        1.0
    }
    fn default_service_name() -> String {
        "portcullis".into()
    }
}

/// The OTLP transport.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
pub enum OtlpProtocol {
    /// Protobuf over HTTP POST.
    #[default]
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
    /// gRPC (HTTP/2).
    #[serde(rename = "grpc")]
    Grpc,
}
