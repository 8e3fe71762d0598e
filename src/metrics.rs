//! The Prometheus metrics of SPEC §7, in a registry of their own that outlives reloads.

use std::collections::HashMap;

use portcullis_plugins::Telemetry;
use prometheus::core::Collector;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Every metric the gateway exports. Label values always come from configuration names
/// (routes, upstreams, targets) or small closed sets (methods, statuses), never from raw
/// request data.
pub struct Metrics {
    registry: Registry,
    /// `portcullis_requests_total{route,method,status,upstream,variant}`
    pub requests: IntCounterVec,
    /// `portcullis_request_duration_seconds{route}`
    pub request_duration: HistogramVec,
    /// `portcullis_upstream_duration_seconds{upstream,target}`
    pub upstream_duration: HistogramVec,
    /// `portcullis_upstream_target_healthy{upstream,target}`
    pub target_healthy: IntGaugeVec,
    /// `portcullis_upstream_target_ejected{upstream,target}`
    pub target_ejected: IntGaugeVec,
    /// `portcullis_upstream_ejections_total{upstream,target}`
    pub ejections: IntCounterVec,
    /// `portcullis_upstream_in_flight{upstream}`
    pub upstream_in_flight: IntGaugeVec,
    /// `portcullis_retries_total{upstream,reason}`
    pub retries: IntCounterVec,
    /// `portcullis_config_reloads_total{result}`
    pub config_reloads: IntCounterVec,
    /// `portcullis_config_version`
    pub config_version: IntGauge,
    /// `portcullis_access_log_dropped_total`: lines dropped because the writer fell behind.
    pub access_log_dropped: IntGauge,
    /// `portcullis_downstream_connections`
    pub downstream_connections: IntGauge,
    /// `portcullis_process_resident_memory_bytes`, read from /proc at each scrape.
    pub resident_memory: IntGauge,
    /// `portcullis_auth_failures_total{route,plugin,reason}`
    pub auth_failures: IntCounterVec,
    /// `portcullis_rate_limited_total{route,rule}`
    pub rate_limited: IntCounterVec,
    /// `portcullis_rate_limit_backend_errors_total{backend}`
    pub rate_limit_backend_errors: IntCounterVec,
    /// `portcullis_cache_requests_total{route,result}`
    pub cache_requests: IntCounterVec,
    /// `portcullis_tls_certificate_expiry_seconds{listener,name}`: notAfter as a Unix time.
    pub tls_certificate_expiry: IntGaugeVec,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let registry = Registry::new();
        let latency_buckets = vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            30.0,
        ];
        let requests = IntCounterVec::new(
            Opts::new(
                "portcullis_requests_total",
                "Requests answered, by route and outcome.",
            ),
            &["route", "method", "status", "upstream", "variant"],
        );
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "portcullis_request_duration_seconds",
                "Whole request duration as the client sees it.",
            )
            .buckets(latency_buckets.clone()),
            &["route"],
        );
        let upstream_duration = HistogramVec::new(
            HistogramOpts::new(
                "portcullis_upstream_duration_seconds",
                "Time from sending the request to receiving the upstream's response headers.",
            )
            .buckets(latency_buckets),
            &["upstream", "target"],
        );
        let target_healthy = IntGaugeVec::new(
            Opts::new(
                "portcullis_upstream_target_healthy",
                "1 when the target passes its active health checks.",
            ),
            &["upstream", "target"],
        );
        let target_ejected = IntGaugeVec::new(
            Opts::new(
                "portcullis_upstream_target_ejected",
                "1 while outlier detection has the target ejected.",
            ),
            &["upstream", "target"],
        );
        let ejections = IntCounterVec::new(
            Opts::new(
                "portcullis_upstream_ejections_total",
                "Ejections of the target by outlier detection.",
            ),
            &["upstream", "target"],
        );
        let upstream_in_flight = IntGaugeVec::new(
            Opts::new(
                "portcullis_upstream_in_flight",
                "Requests in flight to the upstream.",
            ),
            &["upstream"],
        );
        let retries = IntCounterVec::new(
            Opts::new(
                "portcullis_retries_total",
                "Retries sent to an upstream, by reason.",
            ),
            &["upstream", "reason"],
        );
        let config_reloads = IntCounterVec::new(
            Opts::new(
                "portcullis_config_reloads_total",
                "Configuration reloads by result.",
            ),
            &["result"],
        );
        let config_version = IntGauge::new(
            "portcullis_config_version",
            "Version of the configuration in use (1 at start, +1 per successful reload).",
        );
        let access_log_dropped = IntGauge::new(
            "portcullis_access_log_dropped_total",
            "Access log lines dropped because the log writer could not keep up.",
        );
        let auth_failures = IntCounterVec::new(
            Opts::new(
                "portcullis_auth_failures_total",
                "Requests refused by an auth plugin, by reason.",
            ),
            &["route", "plugin", "reason"],
        );
        let rate_limited = IntCounterVec::new(
            Opts::new(
                "portcullis_rate_limited_total",
                "Requests refused by a rate-limit rule.",
            ),
            &["route", "rule"],
        );
        let rate_limit_backend_errors = IntCounterVec::new(
            Opts::new(
                "portcullis_rate_limit_backend_errors_total",
                "Rate-limit checks that failed because the shared backend did not answer.",
            ),
            &["backend"],
        );
        let cache_requests = IntCounterVec::new(
            Opts::new(
                "portcullis_cache_requests_total",
                "Requests on routes with a cache, by result (hit, miss, stale, bypass).",
            ),
            &["route", "result"],
        );
        let tls_certificate_expiry = IntGaugeVec::new(
            Opts::new(
                "portcullis_tls_certificate_expiry_seconds",
                "When the listener's certificate expires (its notAfter), as a Unix time.",
            ),
            &["listener", "name"],
        );
        let downstream_connections = IntGauge::new(
            "portcullis_downstream_connections",
            "Open client connections (HTTP/2: open streams).",
        );
        let resident_memory = IntGauge::new(
            "portcullis_process_resident_memory_bytes",
            "Resident memory of the gateway process (what soak tests watch).",
        );
        let metrics = Self {
            registry,
            requests: requests.expect("valid metric definition"),
            request_duration: request_duration.expect("valid metric definition"),
            upstream_duration: upstream_duration.expect("valid metric definition"),
            target_healthy: target_healthy.expect("valid metric definition"),
            target_ejected: target_ejected.expect("valid metric definition"),
            ejections: ejections.expect("valid metric definition"),
            upstream_in_flight: upstream_in_flight.expect("valid metric definition"),
            retries: retries.expect("valid metric definition"),
            config_reloads: config_reloads.expect("valid metric definition"),
            config_version: config_version.expect("valid metric definition"),
            access_log_dropped: access_log_dropped.expect("valid metric definition"),
            downstream_connections: downstream_connections.expect("valid metric definition"),
            resident_memory: resident_memory.expect("valid metric definition"),
            auth_failures: auth_failures.expect("valid metric definition"),
            rate_limited: rate_limited.expect("valid metric definition"),
            rate_limit_backend_errors: rate_limit_backend_errors.expect("valid metric definition"),
            cache_requests: cache_requests.expect("valid metric definition"),
            tls_certificate_expiry: tls_certificate_expiry.expect("valid metric definition"),
        };
        let collectors: [Box<dyn prometheus::core::Collector>; 18] = [
            Box::new(metrics.requests.clone()),
            Box::new(metrics.request_duration.clone()),
            Box::new(metrics.upstream_duration.clone()),
            Box::new(metrics.target_healthy.clone()),
            Box::new(metrics.target_ejected.clone()),
            Box::new(metrics.ejections.clone()),
            Box::new(metrics.upstream_in_flight.clone()),
            Box::new(metrics.retries.clone()),
            Box::new(metrics.config_reloads.clone()),
            Box::new(metrics.config_version.clone()),
            Box::new(metrics.access_log_dropped.clone()),
            Box::new(metrics.downstream_connections.clone()),
            Box::new(metrics.resident_memory.clone()),
            Box::new(metrics.auth_failures.clone()),
            Box::new(metrics.rate_limited.clone()),
            Box::new(metrics.rate_limit_backend_errors.clone()),
            Box::new(metrics.cache_requests.clone()),
            Box::new(metrics.tls_certificate_expiry.clone()),
        ];
        for collector in collectors {
            metrics
                .registry
                .register(collector)
                .expect("metric names are unique");
        }
        metrics
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> Vec<u8> {
        if let Some(bytes) = resident_memory_bytes() {
            self.resident_memory.set(bytes);
        }
        let mut out = Vec::with_capacity(16 * 1024);
        // Encoding into a Vec cannot fail for well-formed metric families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

/// A route's answers so far, from `portcullis_requests_total`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RouteAnswers {
    /// Every answer.
    pub requests: u64,
    /// Answers with a 5xx status.
    pub errors: u64,
}

impl Metrics {
    /// The answers of each route so far, summed over the other labels of
    /// `portcullis_requests_total` (read when asked, so the request path does no more).
    pub fn answers_by_route(&self) -> HashMap<String, RouteAnswers> {
        let mut by_route: HashMap<String, RouteAnswers> = HashMap::new();
        for family in self.requests.collect() {
            for metric in family.get_metric() {
                let label = |name: &str| {
                    metric
                        .get_label()
                        .iter()
                        .find(|pair| pair.name() == name)
                        .map(|pair| pair.value())
                };
                let (Some(route), Some(status)) = (label("route"), label("status")) else {
                    continue;
                };
                let count = metric.get_counter().get_value() as u64;
                let answers = by_route.entry(route.to_string()).or_default();
                answers.requests += count;
                if status.starts_with('5') {
                    answers.errors += count;
                }
            }
        }
        by_route
    }
}

/// The process's resident set size, from `/proc/self/statm` (Linux).
fn resident_memory_bytes() -> Option<i64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: i64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages.saturating_mul(if page_size > 0 { page_size } else { 4096 }))
}

impl Telemetry for Metrics {
    fn auth_failure(&self, route: &str, plugin: &'static str, reason: &'static str) {
        self.auth_failures
            .with_label_values(&[route, plugin, reason])
            .inc();
    }

    fn rate_limited(&self, route: &str, rule: &str) {
        self.rate_limited.with_label_values(&[route, rule]).inc();
    }

    fn backend_error(&self, backend: &'static str) {
        self.rate_limit_backend_errors
            .with_label_values(&[backend])
            .inc();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The `method` label: the standard methods by name, anything else as `OTHER`, so a client
/// cannot create label values.
pub fn method_label(method: &http::Method) -> &'static str {
    match *method {
        http::Method::GET => "GET",
        http::Method::HEAD => "HEAD",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::DELETE => "DELETE",
        http::Method::PATCH => "PATCH",
        http::Method::OPTIONS => "OPTIONS",
        http::Method::CONNECT => "CONNECT",
        http::Method::TRACE => "TRACE",
        _ => "OTHER",
    }
}
