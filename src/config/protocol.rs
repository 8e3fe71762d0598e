//! `upstreams.*.protocol` and `routes[].websocket`: how the gateway speaks to a pool, and
//! how long an upgraded (WebSocket) connection may sit idle.

use portcullis_plugins::units::Duration;
use serde::Deserialize;

/// The HTTP version spoken to a pool's targets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamProtocol {
    /// HTTP/1.1 (over TLS when `tls` is set).
    #[default]
    Http1,
    /// HTTP/2 over cleartext TCP with prior knowledge (no upgrade, no ALPN).
    H2c,
    /// HTTP/2 over TLS, ALPN `h2` only; needs `tls`.
    H2,
    /// ALPN `h2, http/1.1` over TLS: HTTP/2 when the target offers it; needs `tls`.
    Auto,
}

impl UpstreamProtocol {
    /// The name as written in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http1 => "http1",
            Self::H2c => "h2c",
            Self::H2 => "h2",
            Self::Auto => "auto",
        }
    }
}

/// `routes[].websocket`: the route proxies WebSocket upgrades with its own idle time.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebSocketConfig {
    /// How long an upgraded connection may carry no frame in either direction before the
    /// gateway closes it (replaces the pool's read timeout and `server.body_read_timeout`
    /// once the upgrade succeeded).
    #[serde(default = "WebSocketConfig::default_idle_timeout")]
    pub idle_timeout: Duration,
}

impl WebSocketConfig {
    fn default_idle_timeout() -> Duration {
        Duration(std::time::Duration::from_secs(3600))
    }
}
