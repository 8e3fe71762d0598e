//! `routes[].websocket` compiled: the idle time of the route's upgraded connections and
//! the gauge that counts them.

use std::time::Duration;

use portcullis_plugins::units::LONGEST;
use prometheus::IntGauge;

use crate::config::{Problem, WebSocketConfig};
use crate::telemetry::metrics::Metrics;

/// A route's WebSocket settings, ready for the request path.
pub struct WebSocketRoute {
    /// How long an upgraded connection may carry nothing before it is closed.
    pub idle_timeout: Duration,
}

impl WebSocketRoute {
    /// Compiles `routes[i].websocket` (`path`).
    pub fn compile(config: &WebSocketConfig, path: &str) -> Result<Self, Problem> {
        let at = format!("{path}.idle_timeout");
        let idle_timeout = config
            .idle_timeout
            .within(&at, Duration::from_secs(1), LONGEST)?;
        Ok(Self { idle_timeout })
    }
}

/// `portcullis_websocket_connections{route}` for one route: every route has one, since
/// any route passes a WebSocket upgrade through (`websocket:` only sets its idle time).
pub fn connections_gauge(metrics: &Metrics, route: &str) -> IntGauge {
    metrics.websocket_connections.with_label_values(&[route])
}
