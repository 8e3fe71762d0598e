//! `routes[].mirror`: a sampled copy of a route's requests sent to another pool, fire and
//! forget (traffic shadowing), as written.

use portcullis_plugins::units::Size;
use serde::Deserialize;

/// `routes[].mirror`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorConfig {
    /// The pool that receives the copies.
    pub upstream: String,
    /// Percent of the route's accepted requests copied, 0-100 (to 0.01).
    pub percent: f64,
    /// A request key (`header:X-User`, `client_ip`, `consumer`, ...): the same value is
    /// always mirrored or never, instead of a draw per request.
    pub sticky_on: Option<String>,
    /// Requests with a larger body are not mirrored (counted as `too_large`).
    #[serde(default = "default_max_body")]
    pub max_body: Size,
    /// Copies in flight at once for this route; past it copies are dropped (counted).
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: u32,
}

fn default_max_body() -> Size {
    Size(1024 * 1024)
}

fn default_max_in_flight() -> u32 {
    64
}
