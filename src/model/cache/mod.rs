//! The edge cache (pingora-cache): a route's compiled cache settings, the cache key, and
//! the result every response on a cached route reports (`X-Cache`, metric, access log).
//!
//! The proxy phases (`proxy/`) call into this module; [`policy`] decides what is
//! stored, [`store`] holds it, [`purge`] removes it on the admin's request.

pub mod policy;
pub mod purge;
pub mod store;

use std::time::Duration;

use pingora::cache::CacheKey;
use pingora::cache::CachePhase;
use pingora_http::RequestHeader;
use portcullis_plugins::units::LONGEST;
use prometheus::IntCounter;

use crate::config::{verdict, CacheConfig, Problem};
use crate::model::canary::Variant;
use crate::telemetry::metrics::Metrics;
pub use store::Store;

/// What the cache did for one request (`X-Cache` and the `result` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// Answered from a fresh cached response (or a 304 from it).
    Hit,
    /// Fetched from the upstream (including a revalidation the upstream answered).
    Miss,
    /// Answered from a stale response: refreshing in the background, or the upstream failed.
    Stale,
    /// The cache was not consulted (method, credentials, upgrade).
    Bypass,
}

impl CacheStatus {
    /// The `X-Cache` header value.
    pub fn header(self) -> &'static str {
        match self {
            Self::Hit => "HIT",
            Self::Miss => "MISS",
            Self::Stale => "STALE",
            Self::Bypass => "BYPASS",
        }
    }

    /// The metric label and access-log value.
    pub fn label(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Miss => "miss",
            Self::Stale => "stale",
            Self::Bypass => "bypass",
        }
    }

    /// The result of a request whose cache was enabled, from pingora-cache's phase.
    pub fn from_phase(phase: CachePhase) -> Self {
        match phase {
            CachePhase::Hit => Self::Hit,
            CachePhase::Stale | CachePhase::StaleUpdating => Self::Stale,
            _ => Self::Miss,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// A route's cache, compiled.
pub struct RouteCache {
    /// Freshness when the origin gives none; `None`: such responses are not stored.
    pub default_ttl: Option<Duration>,
    /// Route's serve-stale-while-revalidate window.
    pub stale_while_revalidate: Duration,
    /// Route's serve-stale-on-error window.
    pub stale_if_error: Duration,
    /// Lower-case request header names that select variants.
    pub vary: Vec<String>,
    /// Cache requests that carry credentials.
    pub public_with_auth: bool,
    /// Largest single response stored (an eighth of the route's `max_size`).
    pub max_object_size: usize,
    /// Where the route's responses live (shared with earlier and later configurations).
    pub store: &'static Store,
    counters: Option<[IntCounter; 4]>,
}

impl RouteCache {
    /// Compiles `routes[i].cache`; `None` when the cache is switched off.
    pub fn compile(
        route: &str,
        config: &CacheConfig,
        path: &str,
        metrics: &Metrics,
    ) -> Result<Option<Self>, Vec<Problem>> {
        if !config.enabled {
            return Ok(None);
        }
        let max_size = usize::try_from(config.max_size.0).unwrap_or(usize::MAX);
        if max_size == 0 {
            return Err(vec![Problem::new(
                format!("{path}.max_size"),
                "must be more than 0",
            )]);
        }
        let mut problems = Vec::new();
        for (field, value) in [
            ("default_ttl", config.default_ttl),
            (
                "stale_while_revalidate",
                Some(config.stale_while_revalidate),
            ),
            ("stale_if_error", Some(config.stale_if_error)),
        ] {
            let at = format!("{path}.{field}");
            if let Some(Err(problem)) =
                value.map(|value| value.within(&at, Duration::ZERO, LONGEST))
            {
                problems.push(problem);
            }
        }
        let mut vary = Vec::with_capacity(config.vary.len());
        for (i, name) in config.vary.iter().enumerate() {
            match http::HeaderName::from_bytes(name.as_bytes()) {
                Ok(name) => vary.push(name.as_str().to_string()),
                Err(_) => problems.push(Problem::new(
                    format!("{path}.vary[{i}]"),
                    format!("{name:?} is not a header name"),
                )),
            }
        }
        let counter = |status: CacheStatus| {
            metrics
                .cache_requests
                .with_label_values(&[route, status.label()])
        };
        let cache = Self {
            default_ttl: config.default_ttl.map(|ttl| ttl.0),
            stale_while_revalidate: config.stale_while_revalidate.0,
            stale_if_error: config.stale_if_error.0,
            vary,
            public_with_auth: config.public_with_auth,
            max_object_size: (max_size / 8).max(1),
            store: Store::for_route(route, max_size),
            counters: Some([
                counter(CacheStatus::Hit),
                counter(CacheStatus::Miss),
                counter(CacheStatus::Stale),
                counter(CacheStatus::Bypass),
            ]),
        };
        verdict(Some(cache), problems)
    }

    /// Counts one request's result in `portcullis_cache_requests_total`.
    pub fn count(&self, status: CacheStatus) {
        if let Some(counters) = &self.counters {
            counters[status.index()].inc();
        }
    }

    /// Requests counted so far by result (`hit`, `miss`, `stale`, `bypass`), for /status.
    pub fn results(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        let all = [
            CacheStatus::Hit,
            CacheStatus::Miss,
            CacheStatus::Stale,
            CacheStatus::Bypass,
        ];
        all.into_iter()
            .zip(self.counters.iter().flatten())
            .map(|(status, counter)| (status.label(), counter.get()))
    }

    #[cfg(test)]
    pub(crate) fn for_tests(default_ttl: Option<Duration>, vary: &[&str]) -> Self {
        Self {
            default_ttl,
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::ZERO,
            vary: vary.iter().map(|name| name.to_string()).collect(),
            public_with_auth: false,
            max_object_size: 1024,
            store: Store::for_route("policy-tests", 1024 * 1024),
            counters: None,
        }
    }
}

/// The cache key of a request on route `route` reached over `scheme` (`http`/`https`):
/// route (with the canary split's choice on a route with a canary, so each variant's
/// answers stay apart) with scheme and port, host (lower case, without port) and path
/// with query, one per line (none of them can contain a line break). Scheme and port are
/// in because the upstream sees them (`X-Forwarded-Proto`, the port in `Host`) and may
/// answer differently (a redirect to https, absolute links); the path is the canonical
/// one the upstream gets. The method is not part of it: HEAD is answered from the GET
/// response.
pub fn cache_key(
    route: &str,
    variant: Option<Variant>,
    req: &RequestHeader,
    scheme: &str,
) -> CacheKey {
    let host = crate::model::request::request_host(req).to_ascii_lowercase();
    let port = crate::model::request::request_port(req).unwrap_or(if scheme == "https" {
        443
    } else {
        80
    });
    let path_and_query = req
        .uri
        .path_and_query()
        .map_or("/", |path_and_query| path_and_query.as_str());
    // Route names have no spaces: "orders canary" cannot be another route's name.
    let variant = variant.map_or("", |variant| variant.as_str());
    let separator = if variant.is_empty() { "" } else { " " };
    CacheKey::new(
        format!("{route}{separator}{variant} {scheme}:{port}\n{host}\n{path_and_query}"),
        "",
    )
}
