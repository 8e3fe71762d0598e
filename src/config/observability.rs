//! `access_log:` and `tracing:` — what the gateway tells about each request.

use serde::Deserialize;

use super::default_true;
use super::OtlpConfig;

/// `access_log:`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLogConfig {
    /// `stdout`, a file path, or `off`.
    #[serde(default = "AccessLogConfig::default_target")]
    pub target: String,
    /// Only `json`.
    #[serde(default = "AccessLogConfig::default_format")]
    pub format: String,
}

impl AccessLogConfig {
    fn default_target() -> String {
        "stdout".into()
    }
    fn default_format() -> String {
        "json".into()
    }
}

impl Default for AccessLogConfig {
    fn default() -> Self {
        Self {
            target: Self::default_target(),
            format: Self::default_format(),
        }
    }
}

/// `tracing:`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TracingConfig {
    /// Continue or start a W3C `traceparent` on every proxied request.
    #[serde(default = "default_true")]
    pub traceparent: bool,
    /// The request id header, kept when valid, else generated.
    #[serde(default = "TracingConfig::default_request_id_header")]
    pub request_id_header: String,
    /// Export request spans to an OpenTelemetry collector; absent means no export.
    pub otlp: Option<OtlpConfig>,
}

impl TracingConfig {
    fn default_request_id_header() -> String {
        "X-Request-Id".into()
    }
}

impl Default for TracingConfig {
    fn default() -> Self {
        Self {
            traceparent: true,
            request_id_header: Self::default_request_id_header(),
            otlp: None,
        }
    }
}
