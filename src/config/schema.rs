//! The configuration file as written: serde structs that mirror SPEC §3 field for field.
//!
//! Nothing here is validated beyond its type; [`super::compile`] turns a [`Config`] into
//! the model the request path reads.

use std::collections::BTreeMap;

use portcullis_plugins::rate_limit::RedisConfig;
use portcullis_plugins::units::Duration;
use portcullis_plugins::PluginsConfig;
use serde::Deserialize;

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
    /// API consumers (planned: issue #3).
    #[serde(default)]
    pub consumers: Vec<serde_yaml::Value>,
    /// Upstream pools by name.
    #[serde(default)]
    pub upstreams: BTreeMap<String, UpstreamConfig>,
    /// Plugins applied to every route unless the route configures the same plugin.
    #[serde(default)]
    pub plugins: PluginsConfig,
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
    /// Diagnostic log file when daemonized.
    pub error_log: Option<String>,
    /// Let worker threads steal each other's tasks (one multi-threaded runtime per
    /// service) instead of one single-threaded runtime per thread.
    pub work_stealing: Option<bool>,
}

/// One public listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// `IP:PORT` to bind.
    pub address: String,
    /// TLS termination (planned: issue #8).
    pub tls: Option<serde_yaml::Value>,
}

/// `admin:` — the operator endpoints of SPEC §6.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// `IP:PORT`; keep it on loopback or a private interface.
    pub address: String,
    /// Bearer token required on every POST.
    pub token: Option<String>,
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
    /// Passive outlier ejection (planned: issue #5).
    pub outlier_detection: Option<serde_yaml::Value>,
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
    /// Power of two choices on in-flight count (planned: issue #5).
    LeastRequest,
    /// Latency-aware peak EWMA (planned: issue #5).
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
    pub on: Vec<String>,
    /// Pause before a retry.
    pub backoff: Option<Duration>,
    /// Share of retries on top of requests (planned: issue #5).
    pub budget_percent: Option<u32>,
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
    /// Canary split (planned: issue #5).
    pub canary: Option<serde_yaml::Value>,
    /// The pool used when every target of `upstream` is unavailable.
    pub fallback_upstream: Option<String>,
    /// The route's plugins.
    #[serde(default)]
    pub plugins: PluginsConfig,
    /// Answer from the gateway itself instead of proxying.
    pub respond: Option<RespondConfig>,
    /// Edge cache (planned: issue #8).
    pub cache: Option<serde_yaml::Value>,
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
