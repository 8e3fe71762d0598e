//! The process-wide state every service shares: the current compiled configuration and
//! the process's lifecycle flags.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use arc_swap::{ArcSwap, ArcSwapOption};
use chrono::{DateTime, Utc};

use crate::config::Problems;
use crate::model::gateway::Gateway;
use crate::runtime::config_source::SourceStatus;
use crate::telemetry::access_log::AccessLog;
use crate::telemetry::metrics::Metrics;

/// Shared by the proxy, the admin endpoints and the background services.
pub struct State {
    gateway: ArcSwap<Gateway>,
    /// The configuration file, re-read on reload.
    pub config_path: PathBuf,
    /// Every metric.
    pub metrics: Arc<Metrics>,
    /// The access log sink.
    pub access_log: AccessLog,
    /// When the process started (the clock of background schedules).
    pub started: Instant,
    activated: tokio::sync::watch::Sender<bool>,
    health_checked: tokio::sync::watch::Sender<bool>,
    serving: AtomicBool,
    draining: AtomicBool,
    handed_over: tokio::sync::watch::Sender<bool>,
    last_refusal: ArcSwapOption<ReloadRefusal>,
    config_source: OnceLock<Arc<SourceStatus>>,
}

/// A reload that was refused, kept for /status and the status page.
pub struct ReloadRefusal {
    /// When it was refused.
    pub at: DateTime<Utc>,
    /// Every problem, one `FILE: path.to.field: message` each.
    pub problems: Vec<String>,
}

impl State {
    /// State serving `gateway`.
    pub fn new(
        gateway: Gateway,
        config_path: PathBuf,
        metrics: Arc<Metrics>,
        access_log: AccessLog,
    ) -> Self {
        publish(&gateway, &metrics);
        Self {
            gateway: ArcSwap::from_pointee(gateway),
            config_path,
            metrics,
            access_log,
            started: Instant::now(),
            activated: tokio::sync::watch::Sender::new(false),
            health_checked: tokio::sync::watch::Sender::new(false),
            serving: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            handed_over: tokio::sync::watch::Sender::new(false),
            last_refusal: ArcSwapOption::empty(),
            config_source: OnceLock::new(),
        }
    }

    /// The configuration in force; one atomic load, held for the request's lifetime.
    pub fn gateway(&self) -> Arc<Gateway> {
        self.gateway.load_full()
    }

    /// Replaces the configuration in force; requests already running keep the old one.
    pub fn swap(&self, gateway: Gateway) {
        publish(&gateway, &self.metrics);
        self.gateway.store(Arc::new(gateway));
    }

    /// Keeps `problems` as the last refused reload.
    pub fn refused_reload(&self, problems: &Problems) {
        let problems = problems.to_string().lines().map(str::to_string).collect();
        self.last_refusal.store(Some(Arc::new(ReloadRefusal {
            at: Utc::now(),
            problems,
        })));
    }

    /// Records that the configuration comes from etcd (`--config-source`); set once.
    pub fn set_config_source(&self, source: Arc<SourceStatus>) {
        let _ = self.config_source.set(source);
    }

    /// The etcd source of the configuration, when it does not come from a file.
    pub fn config_source(&self) -> Option<&Arc<SourceStatus>> {
        self.config_source.get()
    }

    /// The last refused reload since the process started, if any.
    pub fn last_refusal(&self) -> Option<Arc<ReloadRefusal>> {
        self.last_refusal.load_full()
    }

    /// Records that the configuration is active: compiled inside the running server, with
    /// its plugins' background work started (see [`crate::runtime::lifecycle`]).
    pub fn mark_activated(&self) {
        self.activated.send_replace(true);
    }

    /// Returns once the configuration is active.
    pub async fn activated(&self) {
        let mut activated = self.activated.subscribe();
        let _ = activated.wait_for(|active| *active).await;
    }

    /// Records that every pool has had its first active health check.
    pub fn mark_health_checked(&self) {
        self.health_checked.send_replace(true);
    }

    /// Returns once every pool has had its first active health check.
    pub async fn health_checked(&self) {
        let mut checked = self.health_checked.subscribe();
        let _ = checked.wait_for(|checked| *checked).await;
    }

    /// Records that the process is ready to serve; only the lifecycle decides that
    /// ([`super::lifecycle`]).
    pub fn mark_serving(&self) {
        self.serving.store(true, Ordering::Release);
    }

    /// Records that the process is shutting down (see [`super::lifecycle`]).
    pub fn mark_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Records that a graceful upgrade began: the listening sockets go to a new process,
    /// and this one serves alongside it until Pingora stops its accepting.
    pub fn mark_handed_over(&self) {
        self.handed_over.send_replace(true);
    }

    /// Returns once a graceful upgrade began (see [`Self::mark_handed_over`]).
    pub async fn handed_over(&self) {
        let mut handed_over = self.handed_over.subscribe();
        let _ = handed_over.wait_for(|handed_over| *handed_over).await;
    }

    /// Whether a graceful upgrade began.
    pub fn is_handed_over(&self) -> bool {
        *self.handed_over.borrow()
    }

    /// Ready to take traffic: listeners accepting, first health checks done, not draining.
    pub fn ready(&self) -> bool {
        self.serving.load(Ordering::Acquire) && !self.draining.load(Ordering::Acquire)
    }
}

/// Sets the gauges that describe the configuration about to be served.
fn publish(gateway: &Gateway, metrics: &Metrics) {
    metrics
        .config_version
        .set(i64::try_from(gateway.version).unwrap_or(i64::MAX));
    publish_certificates(gateway, metrics);
    for upstream in gateway.upstreams.values() {
        for target in &upstream.targets() {
            metrics
                .target_healthy
                .with_label_values(&[&upstream.name, &target.label])
                .set(i64::from(upstream.target_healthy(target)));
            metrics
                .target_ejected
                .with_label_values(&[&upstream.name, &target.label])
                .set(i64::from(upstream.target_ejected(target)));
        }
    }
}

/// Sets `portcullis_tls_certificate_expiry_seconds` for the certificates of this
/// configuration only (a certificate removed by a reload leaves the metric).
fn publish_certificates(gateway: &Gateway, metrics: &Metrics) {
    let mut expiries = std::collections::BTreeMap::new();
    for (listener, store) in &gateway.tls {
        for (name, not_after) in store.expiries() {
            // Two certificates of one listener named alike: the one that expires first.
            expiries
                .entry((listener.to_string(), name))
                .and_modify(|earliest: &mut i64| *earliest = (*earliest).min(not_after))
                .or_insert(not_after);
        }
    }
    metrics.tls_certificate_expiry.reset();
    for ((listener, name), not_after) in expiries {
        metrics
            .tls_certificate_expiry
            .with_label_values(&[listener.as_str(), name])
            .set(not_after);
    }
}
