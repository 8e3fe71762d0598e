//! Active health checks: pingora-load-balancing's checks built from the configuration,
//! and when each pool's next pass is due. The service that runs the passes is
//! `runtime/health_checker.rs`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use pingora::lb::health_check::{HealthCheck, HealthObserve, HttpHealthCheck, TcpHealthCheck};
use pingora::lb::Backend;
use pingora::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorType};
use pingora_http::RequestHeader;
use portcullis_plugins::units::LONGEST;
use prometheus::IntGaugeVec;

use super::grpc_health::GrpcHealthCheck;
use crate::config::Problem;
use crate::config::{HealthCheckConfig, HealthCheckKind};
use crate::telemetry::metrics::Metrics;

/// When a pool's next active check is due, and whether one is running.
pub struct ActiveHealth {
    interval: Duration,
    /// When the next pass is due, in milliseconds on the checker's clock.
    next_due_ms: AtomicU64,
    running: AtomicBool,
}

impl ActiveHealth {
    pub(super) fn new(interval: Duration) -> Self {
        Self {
            interval,
            next_due_ms: AtomicU64::new(0),
            running: AtomicBool::new(false),
        }
    }

    /// Claims the next pass if it is due at `now_ms` and none is running.
    pub fn claim(&self, now_ms: u64) -> bool {
        now_ms >= self.next_due_ms.load(Ordering::Relaxed)
            && !self.running.swap(true, Ordering::Acquire)
    }

    /// Ends the claimed pass at `now_ms`; the next is due one interval later.
    pub fn finish(&self, now_ms: u64) {
        let interval_ms = u64::try_from(self.interval.as_millis()).unwrap_or(u64::MAX);
        self.next_due_ms
            .store(now_ms.saturating_add(interval_ms), Ordering::Relaxed);
        self.running.store(false, Ordering::Release);
    }
}

/// Builds the check described by `upstreams.NAME.health_check`.
pub(super) fn build_health_check(
    upstream: &str,
    config: &HealthCheckConfig,
    path: &str,
    metrics: &Metrics,
    pool_peer: &HttpPeer,
) -> Result<Box<dyn HealthCheck + Send + Sync>, Vec<Problem>> {
    let mut problems = Vec::new();
    for (field, value) in [("interval", config.interval), ("timeout", config.timeout)] {
        let at = format!("{path}.{field}");
        if let Err(problem) = value.within(&at, Duration::from_millis(1), LONGEST) {
            problems.push(problem);
        }
    }
    for (field, value) in [
        ("healthy_threshold", config.healthy_threshold),
        ("unhealthy_threshold", config.unhealthy_threshold),
    ] {
        if value == 0 {
            problems.push(Problem::new(
                format!("{path}.{field}"),
                "must be at least 1",
            ));
        }
    }
    if config.expected_status.is_empty() {
        problems.push(Problem::new(
            format!("{path}.expected_status"),
            "list at least one status",
        ));
    }
    for (i, status) in config.expected_status.iter().enumerate() {
        if !(100..=599).contains(status) {
            problems.push(Problem::new(
                format!("{path}.expected_status[{i}]"),
                "not an HTTP status",
            ));
        }
    }
    if !config.path.starts_with('/') {
        problems.push(Problem::new(format!("{path}.path"), "must start with '/'"));
    }
    let request = RequestHeader::build("GET", config.path.as_bytes(), None).map_err(|_| {
        vec![Problem::new(
            format!("{path}.path"),
            "not a valid request path",
        )]
    });
    if !problems.is_empty() {
        return Err(problems);
    }
    let reporter = Box::new(HealthReporter {
        upstream: upstream.to_string(),
        gauge: metrics.target_healthy.clone(),
    });
    let success = config.healthy_threshold as usize;
    let failure = config.unhealthy_threshold as usize;
    let inner: Box<dyn HealthCheck + Send + Sync> = match config.kind {
        HealthCheckKind::Tcp => {
            let mut check = TcpHealthCheck::new();
            check.consecutive_success = success;
            check.consecutive_failure = failure;
            check.peer_template.options.connection_timeout = Some(config.timeout.0);
            check.health_changed_callback = Some(reporter);
            check
        }
        HealthCheckKind::Http => {
            let host = config.host.as_deref().unwrap_or("localhost");
            let mut check = HttpHealthCheck::new(host, false);
            let mut req = request?;
            req.insert_header("Host", host)
                .map_err(|_| vec![Problem::new(format!("{path}.host"), "not a valid host")])?;
            req.insert_header("User-Agent", "portcullis-health-check")
                .map_err(|_| vec![Problem::new(path, "cannot build the check request")])?;
            check.req = req;
            check.consecutive_success = success;
            check.consecutive_failure = failure;
            check.peer_template.options.connection_timeout = Some(config.timeout.0);
            check.peer_template.options.read_timeout = Some(config.timeout.0);
            if !pool_peer.is_tls() {
                // An h2c pool's targets speak only HTTP/2: so does its check.
                check.peer_template.options.alpn = pool_peer.options.alpn.clone();
            }
            check.reuse_connection = true;
            let expected = config.expected_status.clone();
            check.validator = Some(Box::new(move |resp| {
                if expected.contains(&resp.status.as_u16()) {
                    Ok(())
                } else {
                    Error::e_explain(
                        ErrorType::CustomCode("unexpected status", resp.status.as_u16()),
                        "during health check",
                    )
                }
            }));
            check.health_changed_callback = Some(reporter);
            Box::new(check)
        }
        HealthCheckKind::Grpc => {
            if pool_peer.options.alpn.get_max_http_version() < 2 {
                return Err(vec![Problem::new(
                    format!("{path}.type"),
                    "grpc checks speak HTTP/2: set the pool's protocol to h2c, h2 or auto",
                )]);
            }
            let mut check = GrpcHealthCheck::new(pool_peer, &config.service, config.timeout.0)
                .map_err(|_| {
                    vec![Problem::new(
                        format!("{path}.service"),
                        "cannot build the check request",
                    )]
                })?;
            check.consecutive_success = success;
            check.consecutive_failure = failure;
            check.health_changed_callback = Some(reporter);
            Box::new(check)
        }
    };
    Ok(Box::new(NamedCheck {
        upstream: upstream.to_string(),
        inner,
    }))
}

/// A check that names its target by pool and address. pingora-load-balancing logs each
/// flip itself, with the failed check's error, as "SUMMARY becomes unhealthy, ERROR";
/// the summary it would use is the whole `Backend` debug-printed.
struct NamedCheck {
    upstream: String,
    inner: Box<dyn HealthCheck + Send + Sync>,
}

#[async_trait]
impl HealthCheck for NamedCheck {
    async fn check(&self, target: &Backend) -> pingora_error::Result<()> {
        self.inner.check(target).await
    }

    async fn health_status_change(&self, target: &Backend, healthy: bool) {
        self.inner.health_status_change(target, healthy).await;
    }

    fn backend_summary(&self, target: &Backend) -> String {
        format!("upstream {} target {}", self.upstream, target.addr)
    }

    fn health_threshold(&self, success: bool) -> usize {
        self.inner.health_threshold(success)
    }
}

/// Keeps `portcullis_upstream_target_healthy` current (the flip is logged by
/// pingora-load-balancing, see [`NamedCheck`]).
struct HealthReporter {
    upstream: String,
    gauge: IntGaugeVec,
}

#[async_trait]
impl HealthObserve for HealthReporter {
    async fn observe(&self, target: &Backend, healthy: bool) {
        let label = target.addr.to_string();
        self.gauge
            .with_label_values(&[self.upstream.as_str(), label.as_str()])
            .set(i64::from(healthy));
    }
}
