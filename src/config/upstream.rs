//! `upstreams:` — the pools, their targets, balancing, timeouts, retries and health.

use portcullis_plugins::units::Duration;
use serde::Deserialize;

use super::default_true;

/// One upstream pool.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// The servers of the pool.
    pub targets: Vec<TargetConfig>,
    /// The HTTP version spoken to the targets (`protocol.rs`).
    #[serde(default)]
    pub protocol: super::UpstreamProtocol,
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
    /// Re-resolution schedule of hostname targets.
    #[serde(default)]
    pub discovery: super::DiscoveryConfig,
    /// Percent of healthy targets below which the pool balances across all of its
    /// targets, healthy or not, instead of refusing (Envoy's panic mode); 0 is off.
    #[serde(default)]
    pub healthy_panic_threshold: u32,
}

/// `upstreams.*.outlier_detection`, with Envoy's field names and defaults.
#[derive(Debug, Clone, PartialEq, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    /// `IP:PORT`, `[IPv6]:PORT`, or `HOST:PORT` resolved through DNS (every A and AAAA
    /// record becomes a target with this weight).
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
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsConfig {
    /// Server name sent in the TLS handshake (and verified).
    pub sni: Option<String>,
    /// Verify the target's certificate chain and name.
    #[serde(default = "default_true")]
    pub verify: bool,
    /// PEM bundle of the CAs the target's certificate must chain to (a private CA);
    /// absent means the system's trust store.
    pub ca: Option<String>,
    /// PEM certificate (and intermediates) presented to targets that ask for one.
    pub client_cert: Option<String>,
    /// The private key of `client_cert`.
    pub client_key: Option<String>,
}

/// `upstreams.*.timeouts`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckConfig {
    /// `http`, `tcp` or `grpc`.
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
    /// The service `grpc` checks ask about (`grpc.health.v1`); empty means the server.
    #[serde(default)]
    pub service: String,
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
    /// The standard gRPC health protocol (`grpc.health.v1.Health/Check`) over the
    /// pool's `protocol` (`h2c`, `h2` or `auto`): healthy when the answer is `SERVING`.
    Grpc,
}
