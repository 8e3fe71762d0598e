//! Telemetry (layer 1): the metrics, the access log and the trace export, leaves every
//! layer above writes to.

pub mod access_log;
pub mod metrics;
pub mod tracing;
