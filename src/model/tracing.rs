//! `tracing.otlp` compiled: the checked export settings, the running export (kept over a
//! reload while the section is unchanged, so a reload never loses queued spans or opens
//! a new connection for nothing) and the sampler of new traces.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Uri};
use portcullis_plugins::{Problem, Retained};

use crate::config::{verdict, OtlpConfig, OtlpProtocol};
use crate::telemetry::metrics::Metrics;
use crate::telemetry::tracing::{ExportSettings, SpanExport};

/// Default longest export.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default queue bound, in spans (a request makes two to six).
const DEFAULT_MAX_QUEUE: u64 = 2048;
/// Largest queue bound: a million spans is about a gigabyte held for a dead collector.
const MOST_QUEUED: u64 = 1_000_000;

/// Trace export as the request path uses it.
pub struct Otlp {
    /// Where finished spans go; `None` when compiled only to be checked.
    pub export: Option<Arc<SpanExport>>,
    /// Which new traces are exported.
    pub sampler: Sampler,
}

/// Whether a trace the gateway starts is exported: the OpenTelemetry `TraceIdRatioBased`
/// rule (the low 63 bits of the trace id under `ratio` × 2⁶³), so every service sampling
/// the same trace id at the same ratio decides alike. A trace a client continues follows
/// its `traceparent` sampled flag instead (parent-based sampling).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampler {
    ratio: f64,
}

impl Sampler {
    /// A sampler exporting `ratio` (0..=1) of new traces.
    pub fn new(ratio: f64) -> Self {
        Self { ratio }
    }

    /// Whether the new trace `trace_id` is exported.
    pub fn samples(&self, trace_id: u128) -> bool {
        if self.ratio >= 1.0 {
            return true;
        }
        let bound = (self.ratio.max(0.0) * (1u64 << 63) as f64) as u64;
        ((trace_id as u64) >> 1) < bound
    }
}

/// What compiling `tracing.otlp` needs besides the section.
pub struct OtlpContext<'a> {
    /// Where dropped spans are counted.
    pub metrics: &'a Metrics,
    /// State of the previous configuration (its running export).
    pub retained: &'a Retained,
    /// Whether the export may start (false for `portcullis check`).
    pub background: bool,
}

/// A started export, or why it could not start, shared through [`Retained`].
struct Started(Result<Arc<SpanExport>, String>);

impl Otlp {
    /// Checks the section (problems under `tracing.otlp`) and starts, or takes over, the
    /// export.
    pub fn compile(config: &OtlpConfig, context: &OtlpContext<'_>) -> Result<Self, Vec<Problem>> {
        let settings = settings(config)?;
        let sampler = Sampler::new(config.sample_ratio);
        if !context.background {
            return Ok(Self {
                export: None,
                sampler,
            });
        }
        let dropped = context.metrics.trace_spans_dropped.clone();
        let key = format!("{settings:?}");
        let started = context.retained.get_or_insert_with(&key, || {
            Started(SpanExport::start(settings, dropped).map(Arc::new))
        });
        match &started.0 {
            Ok(export) => Ok(Self {
                export: Some(Arc::clone(export)),
                sampler,
            }),
            Err(message) => Err(vec![Problem::new("tracing.otlp", message.clone())]),
        }
    }
}

/// The export settings of `config`, or every problem with it.
fn settings(config: &OtlpConfig) -> Result<ExportSettings, Vec<Problem>> {
    let mut problems = Vec::new();
    let mut problem = |field: &str, message: String| {
        problems.push(Problem::new(format!("tracing.otlp.{field}"), message));
    };
    let endpoint = match endpoint(&config.endpoint, config.protocol) {
        Ok(endpoint) => endpoint,
        Err(message) => {
            problem("endpoint", message);
            String::new()
        }
    };
    if !(0.0..=1.0).contains(&config.sample_ratio) {
        problem(
            "sample_ratio",
            format!("must be between 0 and 1 (is {})", config.sample_ratio),
        );
    }
    for (name, value) in &config.headers {
        if HeaderName::from_bytes(name.as_bytes()).is_err() {
            problem(&format!("headers.{name}"), "not a valid header name".into());
        } else if HeaderValue::from_str(value).is_err() {
            problem(
                &format!("headers.{name}"),
                "not a valid header value".into(),
            );
        }
    }
    if config.service_name.trim().is_empty() {
        problem("service_name", "must not be empty".into());
    }
    let timeout = match config.timeout {
        Some(timeout) => timeout
            .within(
                "tracing.otlp.timeout",
                Duration::from_millis(1),
                Duration::from_secs(60),
            )
            .map_err(|p| problems.push(p))
            .unwrap_or(DEFAULT_TIMEOUT),
        None => DEFAULT_TIMEOUT,
    };
    let max_queue = config.max_queue.unwrap_or(DEFAULT_MAX_QUEUE);
    if !(1..=MOST_QUEUED).contains(&max_queue) {
        problems.push(Problem::new(
            "tracing.otlp.max_queue",
            format!("must be between 1 and {MOST_QUEUED} (is {max_queue})"),
        ));
    }
    verdict(
        ExportSettings {
            endpoint,
            protocol: config.protocol,
            headers: config.headers.clone(),
            service_name: config.service_name.clone(),
            timeout,
            max_queue: usize::try_from(max_queue).unwrap_or(usize::MAX),
        },
        problems,
    )
}

/// The URL spans are sent to: an absolute `http` or `https` URL; for http/protobuf,
/// `/v1/traces` is added when it has no path (the collector's base address).
fn endpoint(text: &str, protocol: OtlpProtocol) -> Result<String, String> {
    let uri: Uri = text
        .parse()
        .map_err(|e| format!("not a URL ({e}); use e.g. http://collector:4318"))?;
    let scheme = uri.scheme_str().unwrap_or("");
    if uri.authority().is_none() || !matches!(scheme, "http" | "https") {
        return Err(
            "needs an http:// or https:// URL with a host, e.g. http://collector:4318".into(),
        );
    }
    if uri.query().is_some() {
        return Err("must not have a query".into());
    }
    match protocol {
        // This build's gRPC exporter has no TLS; an https collector takes http/protobuf.
        OtlpProtocol::Grpc if scheme == "https" => {
            Err("grpc export is plaintext (h2c) here; use protocol http/protobuf for https".into())
        }
        OtlpProtocol::Grpc => Ok(text.trim_end_matches('/').to_string()),
        OtlpProtocol::HttpProtobuf if matches!(uri.path(), "" | "/") => {
            Ok(format!("{}/v1/traces", text.trim_end_matches('/')))
        }
        OtlpProtocol::HttpProtobuf => Ok(text.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(endpoint: &str) -> OtlpConfig {
        serde_yaml::from_str(&format!("endpoint: {endpoint:?}")).expect("config")
    }

    #[test]
    fn the_base_address_gets_the_traces_path() {
        let settings = settings(&config("http://collector:4318")).expect("valid");
        assert_eq!(settings.endpoint, "http://collector:4318/v1/traces");
        let settings = settings_of("http://collector:4318/custom/path");
        assert_eq!(settings.endpoint, "http://collector:4318/custom/path");
        assert_eq!(settings.timeout, DEFAULT_TIMEOUT);
        assert_eq!(settings.max_queue, 2048);
    }

    fn settings_of(endpoint: &str) -> ExportSettings {
        settings(&config(endpoint)).expect("valid")
    }

    #[test]
    fn bad_fields_are_reported_at_their_paths() {
        let mut bad = config("collector:4318");
        bad.sample_ratio = 1.5;
        bad.headers.insert("bad name".into(), "x".into());
        bad.max_queue = Some(0);
        bad.service_name = " ".into();
        let problems = settings(&bad).expect_err("invalid");
        let paths: Vec<_> = problems.iter().map(|p| p.to_string()).collect();
        for expected in [
            "tracing.otlp.endpoint:",
            "tracing.otlp.sample_ratio:",
            "tracing.otlp.headers.bad name:",
            "tracing.otlp.max_queue:",
            "tracing.otlp.service_name:",
        ] {
            assert!(
                paths.iter().any(|p| p.starts_with(expected)),
                "{expected} in {paths:?}"
            );
        }
        let mut grpc = config("https://collector:4317");
        grpc.protocol = OtlpProtocol::Grpc;
        assert!(settings(&grpc).is_err());
    }

    #[test]
    fn the_ratio_sampler_splits_trace_ids() {
        assert!(Sampler::new(1.0).samples(u128::MAX));
        assert!(!Sampler::new(0.0).samples(0));
        let half = Sampler::new(0.5);
        assert!(half.samples(0x1234 << 64));
        assert!(!half.samples(u128::from(u64::MAX)));
        let sampled = (0..10_000u128)
            .filter(|i| half.samples(i.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835)))
            .count();
        assert!((4_000..6_000).contains(&sampled), "{sampled}");
    }
}
