//! `routes[].websocket` compiled: the idle time of the route's upgraded connections, the
//! gauge that counts them and the guard that holds one socket's count.

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

/// One open WebSocket, counted in its route's gauge until dropped (with the request's
/// context, on every path: a close from either side, an idle timeout, a shutdown).
pub struct WebSocketGuard {
    gauge: IntGauge,
}

impl WebSocketGuard {
    /// Counts a socket that just opened.
    pub fn open(gauge: &IntGauge) -> Self {
        gauge.inc();
        Self {
            gauge: gauge.clone(),
        }
    }
}

impl Drop for WebSocketGuard {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guard_counts_while_open() {
        let gauge = IntGauge::new("open", "open").expect("gauge");
        let guard = WebSocketGuard::open(&gauge);
        assert_eq!(gauge.get(), 1);
        drop(guard);
        assert_eq!(gauge.get(), 0);
    }
}
