//! The configuration file as written (layer 0): serde structs that mirror SPEC §3 field
//! for field, one file per section, and reading them: YAML → `${ENV}` expansion → typed
//! [`Config`], with every problem reported as `path.to.field: message`.
//!
//! Nothing here is validated beyond its type; `Gateway::compile` (`model/gateway.rs`)
//! turns a [`Config`] into the model the request path reads.

mod cache;
mod client_auth;
mod compression;
mod discovery;
mod env;
mod listener;
mod mirror;
mod observability;
mod parse;
mod protocol;
mod route;
mod server;
pub mod source;
mod tracing;
mod upstream;

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use portcullis_plugins::auth::failures::AuthFailureLimitConfig;
use portcullis_plugins::consumers::ConsumerConfig;
use portcullis_plugins::rate_limit::RedisConfig;
use portcullis_plugins::PluginsConfig;
use serde::Deserialize;

pub use cache::CacheConfig;
pub use client_auth::{ClientAuthConfig, ClientAuthMode, ClientCertHeadersConfig};
pub use compression::CompressionConfig;
pub use discovery::{DiscoveryConfig, DnsConfig};
pub use listener::{AdminConfig, CertificateConfig, ListenerConfig, ListenerTlsConfig};
pub use mirror::MirrorConfig;
pub use observability::{AccessLogConfig, TracingConfig};
pub use parse::parse;
pub use portcullis_plugins::Problem;
pub use protocol::{UpstreamProtocol, WebSocketConfig};
pub use route::{CanaryConfig, MatchConfig, PathConfig, RespondConfig, RouteConfig};
pub use server::ServerSection;
pub use tracing::{OtlpConfig, OtlpProtocol};
pub use upstream::{
    HealthCheckConfig, HealthCheckKind, LoadBalancing, OutlierDetectionConfig, RetriesConfig,
    RetryCondition, TargetConfig, TimeoutsConfig, UpstreamConfig, UpstreamTlsConfig,
};

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
    /// Where hostname targets are resolved (default: `/etc/resolv.conf`).
    #[serde(default)]
    pub dns: DnsConfig,
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

fn default_true() -> bool {
    true
}

/// A section's compiled form, or `None` with its problems added to `problems`: every
/// section is compiled even when another failed, so one check reports them all.
pub fn noted<T>(compiled: Result<T, Vec<Problem>>, problems: &mut Vec<Problem>) -> Option<T> {
    compiled.map_err(|more| problems.extend(more)).ok()
}

/// `value` when nothing was found wrong, else every problem.
pub fn verdict<T>(value: T, problems: Vec<Problem>) -> Result<T, Vec<Problem>> {
    if problems.is_empty() {
        Ok(value)
    } else {
        Err(problems)
    }
}

/// Every problem of one configuration file, printed one per line as `FILE: path: message`.
#[derive(Debug, Clone)]
pub struct Problems {
    /// The file the problems are in.
    pub file: String,
    /// The problems, in the order found.
    pub problems: Vec<Problem>,
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}: {problem}", self.file)?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

/// A configuration file read and parsed, with the raw text kept for hashing.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    /// The parsed configuration.
    pub config: Config,
    /// The file's bytes exactly as read.
    pub source: String,
}

/// Reads and parses `path`. Types, unknown fields and `${ENV}` references are checked here;
/// cross-references and values are checked when the configuration is compiled.
pub fn load(path: &Path) -> Result<LoadedConfig, Problems> {
    let fail = |problems| Problems {
        file: path.display().to_string(),
        problems,
    };
    let source = std::fs::read_to_string(path).map_err(|e| {
        fail(vec![Problem::new(
            "",
            format!("cannot read the configuration file: {e}"),
        )])
    })?;
    let config = parse(&source).map_err(fail)?;
    Ok(LoadedConfig { config, source })
}
