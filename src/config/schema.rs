//! The configuration file as written: serde structs that mirror SPEC §3 field for field.
//!
//! Nothing here is validated beyond its type; [`super::compile`] turns a [`Config`] into
//! the model the request path reads.

use std::collections::BTreeMap;

use portcullis_plugins::auth::failures::AuthFailureLimitConfig;
use portcullis_plugins::consumers::ConsumerConfig;
use portcullis_plugins::rate_limit::RedisConfig;
use portcullis_plugins::units::{Duration, Size};
use portcullis_plugins::PluginsConfig;
use serde::Deserialize;

use crate::compression::CompressionConfig;
use crate::tls::ListenerTlsConfig;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Process settings handed to Pingora's `ServerConf`.
    #[serde(default)]
    pub server: ServerSection,
    /// Public listeners.
    pub listeners: Vec<ListenerConfig>,
    /// The admin listener; absent means no admin endpoints.
    pub admin: Option<AdminConfig>,
    /// Where the JSON access log goes.
    #[serde(default)]
    pub access_log: AccessLogConfig,
    /// Request id and trace context propagation.
    #[serde(default)]
    pub tracing: TracingConfig,
    /// The shared rate-limit backend, for rules with `backend: redis`.
    pub redis: Option<RedisConfig>,
    /// API consumers: who a key or a JWT subject authenticates as.
    #[serde(default)]
    pub consumers: Vec<ConsumerConfig>,
    /// Cap on failed authentications per client IP; absent means no cap.
    pub auth_failure_limit: Option<AuthFailureLimitConfig>,
    /// Upstream pools by name.
    #[serde(default)]
    pub upstreams: BTreeMap<String, UpstreamConfig>,
    /// Plugins applied to every route unless the route configures the same plugin.
    #[serde(default)]
    pub plugins: PluginsConfig,
    /// Response compression for every route (a route's `compression` replaces it).
    pub compression: Option<CompressionConfig>,
    /// Routes, in file order (the order breaks precedence ties).
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
}

/// `server:` — Pingora process settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    /// Worker threads per listening service.
    pub threads: Option<usize>,
    /// Where the daemon writes its pid.
    pub pid_file: Option<String>,
    /// Unix socket over which listening sockets pass to a new process on upgrade.
    pub upgrade_sock: Option<String>,
    /// Seconds the old process keeps serving after a graceful upgrade or shutdown begins.
    pub grace_period_seconds: Option<u64>,
    /// Seconds the runtimes get to finish after the grace period.
    pub graceful_shutdown_timeout_seconds: Option<u64>,
    /// After SIGTERM, seconds to keep serving while `/readyz` answers 503, so load
    /// balancers stop sending before the listeners close (default 0).
    #[serde(default)]
    pub drain_delay_seconds: u64,
    /// Diagnostic log file when daemonized.
    pub error_log: Option<String>,
    /// Let worker threads steal each other's tasks (one multi-threaded runtime per
    /// service) instead of one single-threaded runtime per thread.
    pub work_stealing: Option<bool>,
    /// Networks (CIDR or single addresses) whose `client_ip_header` and PROXY protocol
    /// headers are believed.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// The header trusted proxies name the client in (default `X-Forwarded-For`).
    pub client_ip_header: Option<String>,
    /// Most time a whole request head may take to arrive (default 10s); extra bytes do
    /// not extend it. Also bounds a PROXY header and a TLS ClientHello.
    pub request_header_timeout: Option<Duration>,
    /// Most time a connection may wait idle for its next request (default 60s; `0s`
    /// turns keep-alive off).
    pub keepalive_timeout: Option<Duration>,
    /// Most time between two reads of a request body (default 60s).
    pub body_read_timeout: Option<Duration>,
    /// Open connections per listener; past it new ones are refused (0 = unlimited).
    #[serde(default)]
    pub max_connections: u32,
    /// Open connections per client address per listener (0 = unlimited).
    #[serde(default)]
    pub max_connections_per_ip: u32,
}

/// One public listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// `IP:PORT` to bind.
    pub address: String,
    /// TLS termination; absent means plain HTTP (and h2c).
    pub tls: Option<ListenerTlsConfig>,
    /// Every connection starts with a PROXY protocol header (v1 or v2), accepted only
    /// from `server.trusted_proxies`.
    #[serde(default)]
    pub proxy_protocol: bool,
    /// Overrides `server.max_connections` for this listener.
    pub max_connections: Option<u32>,
    /// Overrides `server.max_connections_per_ip` for this listener.
    pub max_connections_per_ip: Option<u32>,
}

/// `admin:` — the operator endpoints of SPEC §6.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// `IP:PORT`; keep it on loopback or a private interface.
    pub address: String,
    /// Bearer token required on every POST.
    pub token: Option<String>,
    /// When not empty, only clients in these networks (CIDR or single addresses) may use
    /// the admin listener.
    #[serde(default)]
    pub allow: Vec<String>,
}

/// `access_log:`.
#[derive(Debug, Clone, Deserialize)]
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
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TracingConfig {
    /// Continue or start a W3C `traceparent` on every proxied request.
    #[serde(default = "default_true")]
    pub traceparent: bool,
    /// The request id header, kept when valid, else generated.
    #[serde(default = "TracingConfig::default_request_id_header")]
    pub request_id_header: String,
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
        }
    }
}

fn default_true() -> bool {
    true
}

/// One upstream pool.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// The servers of the pool.
    pub targets: Vec<TargetConfig>,
    /// How a target is chosen.
    #[serde(default)]
    pub load_balancing: LoadBalancing,
    /// The key of `consistent_hash`.
    pub hash_on: Option<String>,
    /// TLS to the targets.
    pub tls: Option<UpstreamTlsConfig>,
    /// Connection and I/O timeouts.
    #[serde(default)]
    pub timeouts: TimeoutsConfig,
    /// Retries (default: one retry of a failed connect on another target).
    pub retries: Option<RetriesConfig>,
    /// Most requests in flight to this pool; past it 503 UPSTREAM_OVERLOADED.
    pub max_requests: Option<u32>,
    /// Active health checks; absent means none.
    pub health_check: Option<HealthCheckConfig>,
    /// Passive outlier ejection (circuit breaking per target); absent means none.
    pub outlier_detection: Option<OutlierDetectionConfig>,
}

/// `upstreams.*.outlier_detection`, with Envoy's field names and defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutlierDetectionConfig {
    /// Consecutive 5xx answers (gateway failures included) that eject a target.
    #[serde(default = "OutlierDetectionConfig::default_consecutive_5xx")]
    pub consecutive_5xx: u32,
    /// Consecutive gateway failures (connect refused/timeout, 502, 503, 504) that eject a
    /// target; absent means this rule is off.
    pub consecutive_gateway_failure: Option<u32>,
    /// Percent of failed requests in one `interval` that ejects a target; absent means off.
    pub failure_percentage_threshold: Option<u32>,
    /// Requests a target must have had in the interval for the percentage to count.
    #[serde(default = "OutlierDetectionConfig::default_request_volume")]
    pub failure_percentage_request_volume: u32,
    /// The window of the failure percentage, and the step by which repeated-ejection
    /// memory fades.
    #[serde(default = "OutlierDetectionConfig::default_interval")]
    pub interval: Duration,
    /// Ejection time for a first ejection; multiplied by the number of ejections.
    #[serde(default = "OutlierDetectionConfig::default_base_ejection_time")]
    pub base_ejection_time: Duration,
    /// Longest ejection.
    #[serde(default = "OutlierDetectionConfig::default_max_ejection_time")]
    pub max_ejection_time: Duration,
    /// Most targets of the pool ejected at once, in percent (at least one may always be).
    #[serde(default = "OutlierDetectionConfig::default_max_ejection_percent")]
    pub max_ejection_percent: u32,
}

impl OutlierDetectionConfig {
    fn default_consecutive_5xx() -> u32 {
        5
    }
    fn default_request_volume() -> u32 {
        100
    }
    fn default_interval() -> Duration {
        Duration(std::time::Duration::from_secs(10))
    }
    fn default_base_ejection_time() -> Duration {
        Duration(std::time::Duration::from_secs(30))
    }
    fn default_max_ejection_time() -> Duration {
        Duration(std::time::Duration::from_secs(300))
    }
    fn default_max_ejection_percent() -> u32 {
        10
    }
}

/// One target of a pool.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    /// `IP:PORT`.
    pub address: String,
    /// Relative share of the traffic.
    #[serde(default = "TargetConfig::default_weight")]
    pub weight: u32,
}

impl TargetConfig {
    fn default_weight() -> u32 {
        1
    }
}

/// Balancing algorithms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoadBalancing {
    /// Weighted round robin.
    #[default]
    RoundRobin,
    /// Weighted random.
    Random,
    /// Ketama consistent hashing on `hash_on`.
    ConsistentHash,
    /// Power of two choices on in-flight count.
    LeastRequest,
    /// Power of two choices on latency (peak EWMA) × in-flight count.
    PeakEwma,
}

/// `upstreams.*.tls`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsConfig {
    /// Server name sent in the TLS handshake (and verified).
    pub sni: Option<String>,
    /// Verify the target's certificate chain and name.
    #[serde(default = "default_true")]
    pub verify: bool,
}

/// `upstreams.*.timeouts`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsConfig {
    /// TCP (and TLS) connect.
    pub connect: Option<Duration>,
    /// Each read from the target, including the wait for response headers.
    pub read: Option<Duration>,
    /// Each write to the target.
    pub write: Option<Duration>,
    /// How long an idle keepalive connection is kept in the pool.
    pub idle: Option<Duration>,
}

/// `upstreams.*.retries`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetriesConfig {
    /// Retries after the first try.
    pub attempts: u32,
    /// Conditions that allow a retry.
    #[serde(default)]
    pub on: Vec<RetryCondition>,
    /// Pause before a retry.
    pub backoff: Option<Duration>,
    /// Retries may add at most this percent on top of the recent request rate.
    pub budget_percent: Option<u32>,
}

/// One entry of `retries.on`: `connect_failure`, or a status written as a number
/// (`503`) or a string (`"503"`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum RetryCondition {
    /// A status code.
    Status(u16),
    /// A named condition (or a status as text).
    Named(String),
}

/// `upstreams.*.health_check`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckConfig {
    /// `http` or `tcp`.
    #[serde(rename = "type", default)]
    pub kind: HealthCheckKind,
    /// Path requested by `http` checks.
    #[serde(default = "HealthCheckConfig::default_path")]
    pub path: String,
    /// Host header of `http` checks (default: the target address).
    pub host: Option<String>,
    /// Time between checks.
    #[serde(default = "HealthCheckConfig::default_interval")]
    pub interval: Duration,
    /// Connect and response timeout of one check.
    #[serde(default = "HealthCheckConfig::default_timeout")]
    pub timeout: Duration,
    /// Consecutive successes that make an unhealthy target healthy.
    #[serde(default = "HealthCheckConfig::default_threshold")]
    pub healthy_threshold: u32,
    /// Consecutive failures that make a healthy target unhealthy.
    #[serde(default = "HealthCheckConfig::default_threshold")]
    pub unhealthy_threshold: u32,
    /// Statuses that count as healthy.
    #[serde(default = "HealthCheckConfig::default_expected_status")]
    pub expected_status: Vec<u16>,
}

impl HealthCheckConfig {
    fn default_path() -> String {
        "/".into()
    }
    fn default_interval() -> Duration {
        Duration(std::time::Duration::from_secs(5))
    }
    fn default_timeout() -> Duration {
        Duration(std::time::Duration::from_secs(1))
    }
    fn default_threshold() -> u32 {
        2
    }
    fn default_expected_status() -> Vec<u16> {
        vec![200]
    }
}

/// Kinds of active health check.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthCheckKind {
    /// An HTTP request whose status must be in `expected_status`.
    #[default]
    Http,
    /// A TCP connect.
    Tcp,
}

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
}

/// `routes[].cache` — the route's edge cache.
#[derive(Debug, Clone, Deserialize)]
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

/// `routes[].canary`.
#[derive(Debug, Clone, Deserialize)]
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
#[derive(Debug, Clone, Default, Deserialize)]
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
#[derive(Debug, Clone, Deserialize)]
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
