//! `routes[].cache` — a route's edge cache.

use portcullis_plugins::units::{Duration, Size};
use serde::Deserialize;

use super::default_true;

/// `routes[].cache` — the route's edge cache.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// Turns the cache on (a route may keep the section and switch it off).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Freshness of a cacheable response whose origin gives none (no `max-age`,
    /// `s-maxage` or `Expires`); absent means such responses are not stored.
    pub default_ttl: Option<Duration>,
    /// Bytes of responses the route may keep in memory; least recently used go first.
    #[serde(default = "CacheConfig::default_max_size")]
    pub max_size: Size,
    /// How long past freshness a response may still be served while one background
    /// request refreshes it (the origin's `stale-while-revalidate` wins).
    #[serde(default)]
    pub stale_while_revalidate: Duration,
    /// How long past freshness a response may still be served when the upstream fails
    /// (the origin's `stale-if-error` wins).
    #[serde(default)]
    pub stale_if_error: Duration,
    /// Request headers whose values select separate cached variants (on top of the
    /// names the origin's own `Vary` lists).
    #[serde(default)]
    pub vary: Vec<String>,
    /// Also cache requests that carry credentials (`Authorization`, an authenticated
    /// consumer). The route's auth plugins still run before every lookup.
    #[serde(default)]
    pub public_with_auth: bool,
}

impl CacheConfig {
    fn default_max_size() -> Size {
        Size(64 * 1024 * 1024)
    }
}
