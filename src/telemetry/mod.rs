//! Telemetry (layer 1): the metrics and the access log, leaves every layer above writes to.

pub mod access_log;
pub mod metrics;
