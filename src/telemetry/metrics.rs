//! The Prometheus metrics of SPEC §7, in a registry of their own that outlives reloads.

use std::cell::RefCell;
use std::collections::HashMap;

use portcullis_plugins::Telemetry;
use prometheus::core::Collector;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Every metric the gateway exports. Label values always come from configuration names
/// (routes, upstreams, targets) or small closed sets (methods, statuses), never from raw
/// request data.
pub struct Metrics {
    registry: Registry,
    /// The name of every metric above, in definition order.
    names: Vec<&'static str>,
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
    /// `portcullis_mirror_requests_total{route,result}`
    pub mirror_requests: IntCounterVec,
    /// `portcullis_config_reloads_total{result}`
    pub config_reloads: IntCounterVec,
    /// `portcullis_config_version`
    pub config_version: IntGauge,
    /// `portcullis_config_source_up`
    pub config_source_up: IntGauge,
    /// `portcullis_config_revision`
    pub config_revision: IntGauge,
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
    /// `portcullis_connections_refused_total{listener,reason}`
    pub connections_refused: IntCounterVec,
    /// `portcullis_tls_certificate_expiry_seconds{listener,name}`: notAfter as a Unix time.
    pub tls_certificate_expiry: IntGaugeVec,
    /// `portcullis_discovery_errors_total{upstream}`: failed or empty DNS answers.
    pub discovery_errors: IntCounterVec,
    /// `portcullis_upstream_discovered_targets{upstream}`: addresses discovered through DNS.
    pub discovered_targets: IntGaugeVec,
    /// `portcullis_upstream_panic_mode{upstream}`: 1 while the pool is in panic mode.
    pub panic_mode: IntGaugeVec,
    /// `portcullis_upstream_panic_mode_entered_total{upstream}`: times panic mode began.
    pub panic_mode_entered: IntCounterVec,
    /// `portcullis_trace_spans_dropped_total`: spans not exported (queue full, export
    /// failed or timed out).
    pub trace_spans_dropped: IntCounter,
    /// `portcullis_websocket_connections{route}`: upgraded connections open now.
    pub websocket_connections: IntGaugeVec,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let registry = Registry::new();
        let define = Definitions {
            registry: &registry,
            names: RefCell::new(Vec::with_capacity(20)),
        };
        Self {
            requests: define.counters(
                "portcullis_requests_total",
                "Requests answered, by route and outcome.",
                &["route", "method", "status", "upstream", "variant"],
            ),
            request_duration: define.histograms(
                "portcullis_request_duration_seconds",
                "Whole request duration as the client sees it.",
                &["route"],
            ),
            upstream_duration: define.histograms(
                "portcullis_upstream_duration_seconds",
                "Time from sending the request to receiving the upstream's response headers.",
                &["upstream", "target"],
            ),
            target_healthy: define.gauges(
                "portcullis_upstream_target_healthy",
                "1 when the target passes its active health checks.",
                &["upstream", "target"],
            ),
            target_ejected: define.gauges(
                "portcullis_upstream_target_ejected",
                "1 while outlier detection has the target ejected.",
                &["upstream", "target"],
            ),
            ejections: define.counters(
                "portcullis_upstream_ejections_total",
                "Ejections of the target by outlier detection.",
                &["upstream", "target"],
            ),
            upstream_in_flight: define.gauges(
                "portcullis_upstream_in_flight",
                "Requests in flight to the upstream.",
                &["upstream"],
            ),
            retries: define.counters(
                "portcullis_retries_total",
                "Retries sent to an upstream, by reason.",
                &["upstream", "reason"],
            ),
            mirror_requests: define.counters(
                "portcullis_mirror_requests_total",
                "Sampled request copies for a route's mirror, by what became of them.",
                &["route", "result"],
            ),
            config_reloads: define.counters(
                "portcullis_config_reloads_total",
                "Configuration reloads by result.",
                &["result"],
            ),
            config_version: define.gauge(
                "portcullis_config_version",
                "Version of the configuration in use (1 at start, +1 per successful reload).",
            ),
            config_source_up: define.gauge(
                "portcullis_config_source_up",
                "1 while the node is connected to its etcd configuration source and watching.",
            ),
            config_revision: define.gauge(
                "portcullis_config_revision",
                "etcd revision of the configuration document in use (0 without --config-source).",
            ),
            access_log_dropped: define.gauge(
                "portcullis_access_log_dropped_total",
                "Access log lines dropped because the log writer could not keep up.",
            ),
            auth_failures: define.counters(
                "portcullis_auth_failures_total",
                "Requests refused by an auth plugin, by reason.",
                &["route", "plugin", "reason"],
            ),
            rate_limited: define.counters(
                "portcullis_rate_limited_total",
                "Requests refused by a rate-limit rule.",
                &["route", "rule"],
            ),
            rate_limit_backend_errors: define.counters(
                "portcullis_rate_limit_backend_errors_total",
                "Rate-limit checks that failed because the shared backend did not answer.",
                &["backend"],
            ),
            cache_requests: define.counters(
                "portcullis_cache_requests_total",
                "Requests on routes with a cache, by result (hit, miss, stale, bypass).",
                &["route", "result"],
            ),
            connections_refused: define.counters(
                "portcullis_connections_refused_total",
                "Client connections closed at once by the connection caps or PROXY protocol rules.",
                &["listener", "reason"],
            ),
            downstream_connections: define.gauge(
                "portcullis_downstream_connections",
                "Open client connections (HTTP/2: open streams).",
            ),
            resident_memory: define.gauge(
                "portcullis_process_resident_memory_bytes",
                "Resident memory of the gateway process (what soak tests watch).",
            ),
            tls_certificate_expiry: define.gauges(
                "portcullis_tls_certificate_expiry_seconds",
                "When the listener's certificate expires (its notAfter), as a Unix time.",
                &["listener", "name"],
            ),
            discovery_errors: define.counters(
                "portcullis_discovery_errors_total",
                "DNS resolutions of a hostname target that failed or came back empty (the last good set stays).",
                &["upstream"],
            ),
            discovered_targets: define.gauges(
                "portcullis_upstream_discovered_targets",
                "Target addresses of the pool discovered through DNS.",
                &["upstream"],
            ),
            panic_mode: define.gauges(
                "portcullis_upstream_panic_mode",
                "1 while fewer than healthy_panic_threshold percent of the pool's targets are healthy and it balances across all of them.",
                &["upstream"],
            ),
            panic_mode_entered: define.counters(
                "portcullis_upstream_panic_mode_entered_total",
                "Times the pool entered panic mode.",
                &["upstream"],
            ),
            websocket_connections: define.gauges(
                "portcullis_websocket_connections",
                "WebSocket connections open through the route (upgraded and not yet closed).",
                &["route"],
            ),
            trace_spans_dropped: define.counter(
                "portcullis_trace_spans_dropped_total",
                "Trace spans not exported: the export queue was full, or the collector failed or timed out.",
            ),
            names: define.names.take(),
            registry,
        }
    }

    /// The name of every metric this registry exports, whether or not it has a sample yet
    /// (what the documentation must list).
    pub fn names(&self) -> &[&'static str] {
        &self.names
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

/// Creates metrics and registers them in one registry. The definitions are constants of
/// this file: a failure is a bug that every test run would show at once.
struct Definitions<'a> {
    registry: &'a Registry,
    names: RefCell<Vec<&'static str>>,
}

/// Upper bounds of the latency histograms, in seconds.
const LATENCY_BUCKETS: [f64; 15] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

impl Definitions<'_> {
    fn register<M: Collector + Clone + 'static>(
        &self,
        name: &'static str,
        metric: prometheus::Result<M>,
    ) -> M {
        let metric = metric.expect("valid metric definition");
        self.names.borrow_mut().push(name);
        self.registry
            .register(Box::new(metric.clone()))
            .expect("metric names are unique");
        metric
    }

    fn counters(&self, name: &'static str, help: &str, labels: &[&str]) -> IntCounterVec {
        self.register(name, IntCounterVec::new(Opts::new(name, help), labels))
    }

    fn counter(&self, name: &'static str, help: &str) -> IntCounter {
        self.register(name, IntCounter::new(name, help))
    }

    fn gauges(&self, name: &'static str, help: &str, labels: &[&str]) -> IntGaugeVec {
        self.register(name, IntGaugeVec::new(Opts::new(name, help), labels))
    }

    fn gauge(&self, name: &'static str, help: &str) -> IntGauge {
        self.register(name, IntGauge::new(name, help))
    }

    fn histograms(&self, name: &'static str, help: &str, labels: &[&str]) -> HistogramVec {
        let options = HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec());
        self.register(name, HistogramVec::new(options, labels))
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
