//! `routes:` — what requests each route takes and what it does with them.

use std::collections::BTreeMap;

use portcullis_plugins::PluginsConfig;
use serde::Deserialize;

use super::{CacheConfig, CompressionConfig};

/// One route.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Unique name, used in metrics and logs.
    pub name: String,
    /// What requests the route takes.
    #[serde(rename = "match", default)]
    pub matcher: MatchConfig,
    /// Remove the matched `path_prefix` before proxying.
    #[serde(default)]
    pub strip_prefix: bool,
    /// The pool requests go to.
    pub upstream: Option<String>,
    /// Canary split: a share of the traffic goes to another pool.
    pub canary: Option<CanaryConfig>,
    /// A sampled copy of the route's accepted requests, sent to another pool.
    pub mirror: Option<super::MirrorConfig>,
    /// The pool used when every target of `upstream` is unavailable.
    pub fallback_upstream: Option<String>,
    /// The route's plugins.
    #[serde(default)]
    pub plugins: PluginsConfig,
    /// Answer from the gateway itself instead of proxying.
    pub respond: Option<RespondConfig>,
    /// Edge cache.
    pub cache: Option<CacheConfig>,
    /// Response compression for this route (replaces the global `compression`).
    pub compression: Option<CompressionConfig>,
    /// How the request path reaches the upstream.
    #[serde(default)]
    pub path: PathConfig,
    /// The whole request's time limit, retries included; overrides the pool's
    /// timeouts (past it the client gets 504 UPSTREAM_TIMEOUT).
    pub timeout: Option<portcullis_plugins::units::Duration>,
    /// WebSocket upgrades on this route and their idle time.
    pub websocket: Option<super::WebSocketConfig>,
}

/// `routes[].path`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathConfig {
    /// Forward the path bytes exactly as the client sent them instead of the canonical
    /// path (the route is still matched on the canonical path).
    #[serde(default)]
    pub raw: bool,
}

/// `routes[].canary`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanaryConfig {
    /// The canary pool.
    pub upstream: String,
    /// Percent of the traffic sent to the canary, 0-100 (fractions allowed, to 0.01).
    pub weight: f64,
    /// What keeps a user on one variant: `consumer`, `client_ip`, `header:NAME`,
    /// `cookie:NAME` or `jwt:CLAIM`; absent means each request is drawn on its own.
    pub sticky_on: Option<String>,
    /// A request header whose value `always` or `never` forces the variant.
    pub force_header: Option<String>,
}

/// `routes[].match`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchConfig {
    /// Host names, exact or `*.suffix`.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Exact path.
    pub path: Option<String>,
    /// Path prefix, matched on segment boundaries.
    pub path_prefix: Option<String>,
    /// Regular expression the whole path must match.
    pub path_regex: Option<String>,
    /// Allowed methods.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Headers that must be present with exactly these values.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// `routes[].respond`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RespondConfig {
    /// Status code.
    #[serde(default = "RespondConfig::default_status")]
    pub status: u16,
    /// Body text.
    #[serde(default)]
    pub body: String,
    /// Response headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

impl RespondConfig {
    fn default_status() -> u16 {
        200
    }
}
