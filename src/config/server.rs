//! `server:` — the process settings handed to Pingora's `ServerConf`.

use portcullis_plugins::units::{Duration, Size};
use serde::Deserialize;

/// `server:` — Pingora process settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
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
    /// Longest request target (path and query) accepted; a longer one is answered 414
    /// `URI_TOO_LONG` (default 8KiB).
    pub max_request_target: Option<Size>,
    /// Most header fields a request may have; more are answered 431 (default 100, at
    /// most 256, the most Pingora's parser reads).
    pub max_header_count: Option<usize>,
    /// Largest request header block (the sum of its `name: value` lines); a larger one is
    /// answered 431 (default 64KiB).
    pub max_header_bytes: Option<Size>,
    /// Merge repeated slashes in request paths before routing (default true).
    pub merge_slashes: Option<bool>,
}
