//! A configuration that passes `portcullis check` starts and serves: every numeric field
//! of every section, set to a hostile value (zero, negative, the type's largest, past
//! it, `1e309`), is either refused by `check` with the field's path or runs.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{render_config, run_portcullis, Gateway, TestDir, Upstream};
use serde_yaml::Value;

/// A configuration with every section that has a numeric field. `{app}` and `{canary}`
/// are upstream addresses; the other placeholders are the harness's.
const BASELINE: &str = r#"
server:
  threads: 2
  pid_file: "{dir}/portcullis.pid"
  upgrade_sock: "{dir}/upgrade.sock"
  grace_period_seconds: 1
  graceful_shutdown_timeout_seconds: 1
  drain_delay_seconds: 0
  request_header_timeout: 10s
  keepalive_timeout: 60s
  body_read_timeout: 60s
  max_connections: 1000
  max_connections_per_ip: 100
listeners:
  - { address: "127.0.0.1:{listen}", max_connections: 1000, max_connections_per_ip: 100 }
admin: { address: "127.0.0.1:{admin}" }
access_log: { target: "{access_log}" }
redis: { url: "redis://127.0.0.1:1", timeout: 50ms }
auth_failure_limit: { limit: 10, window: 1m }
compression: { level: 6, min_size: 1024 }
upstreams:
  app:
    targets: [{ address: "{app}", weight: 1 }]
    timeouts: { connect: 1s, read: 5s, write: 5s, idle: 60s }
    retries: { attempts: 1, on: [connect_failure], backoff: 10ms, budget_percent: 20 }
    max_requests: 100
    health_check:
      type: http
      path: /healthz
      interval: 1s
      timeout: 1s
      healthy_threshold: 1
      unhealthy_threshold: 2
      expected_status: [200]
    outlier_detection:
      consecutive_5xx: 5
      consecutive_gateway_failure: 3
      failure_percentage_threshold: 50
      failure_percentage_request_volume: 20
      interval: 10s
      base_ejection_time: 30s
      max_ejection_time: 300s
      max_ejection_percent: 50
  canary:
    targets: [{ address: "{canary}" }]
plugins:
  request_size: { max_body: 1MiB, max_header: 16KiB, max_headers: 100 }
routes:
  - name: api
    match: { path_prefix: / }
    upstream: app
    canary: { upstream: canary, weight: 10 }
    cache: { enabled: true, default_ttl: 60s, max_size: 1MiB, stale_while_revalidate: 1s, stale_if_error: 1s }
    plugins:
      rate_limit:
        - { name: bucket, key: client_ip, algorithm: token_bucket, rate: 100, per: 1s, burst: 100 }
        - { name: window, key: client_ip, algorithm: sliding_window, limit: 100, window: 1m }
        - { name: shared, key: global, algorithm: sliding_window, limit: 100, window: 1m, backend: redis }
      concurrency_limit: { key: client_ip, max: 10 }
      cors: { allow_origins: ["https://app.test"], max_age: 10m }
  - name: auth
    match: { path_prefix: /auth }
    upstream: app
    plugins:
      jwt: { jwks_url: "http://127.0.0.1:1/jwks.json", jwks_refresh: 5m, leeway: 30s }
  - name: ping
    match: { path: /ping }
    respond: { status: 200, body: pong }
"#;

/// What a field holds, which decides its hostile values.
#[derive(Clone, Copy)]
enum Kind {
    Integer,
    Duration,
    Size,
    Percent,
}

impl Kind {
    fn hostile(self) -> &'static [&'static str] {
        match self {
            Kind::Integer => &[
                "0",
                "-1",
                "4294967296",
                "18446744073709551615",
                "99999999999999999999",
                "1e309",
            ],
            Kind::Duration => &["0s", "-1s", "500000000y", "99999999999999999999s", "1e309"],
            Kind::Size => &["0", "-1", "15EiB", "99999999999999999999", "1e309"],
            Kind::Percent => &["-1", "100.5", "1e309", "-1e309", ".nan"],
        }
    }
}

/// Every numeric field of [`BASELINE`], by path.
const FIELDS: &[(&str, Kind)] = &[
    ("server.threads", Kind::Integer),
    ("server.grace_period_seconds", Kind::Integer),
    ("server.graceful_shutdown_timeout_seconds", Kind::Integer),
    ("server.drain_delay_seconds", Kind::Integer),
    ("server.request_header_timeout", Kind::Duration),
    ("server.keepalive_timeout", Kind::Duration),
    ("server.body_read_timeout", Kind::Duration),
    ("server.max_connections", Kind::Integer),
    ("server.max_connections_per_ip", Kind::Integer),
    ("listeners[0].max_connections", Kind::Integer),
    ("listeners[0].max_connections_per_ip", Kind::Integer),
    ("redis.timeout", Kind::Duration),
    ("auth_failure_limit.limit", Kind::Integer),
    ("auth_failure_limit.window", Kind::Duration),
    ("compression.level", Kind::Integer),
    ("compression.min_size", Kind::Size),
    ("upstreams.app.targets[0].weight", Kind::Integer),
    ("upstreams.app.timeouts.connect", Kind::Duration),
    ("upstreams.app.timeouts.read", Kind::Duration),
    ("upstreams.app.timeouts.write", Kind::Duration),
    ("upstreams.app.timeouts.idle", Kind::Duration),
    ("upstreams.app.retries.attempts", Kind::Integer),
    ("upstreams.app.retries.backoff", Kind::Duration),
    ("upstreams.app.retries.budget_percent", Kind::Integer),
    ("upstreams.app.max_requests", Kind::Integer),
    ("upstreams.app.health_check.interval", Kind::Duration),
    ("upstreams.app.health_check.timeout", Kind::Duration),
    (
        "upstreams.app.health_check.healthy_threshold",
        Kind::Integer,
    ),
    (
        "upstreams.app.health_check.unhealthy_threshold",
        Kind::Integer,
    ),
    (
        "upstreams.app.health_check.expected_status[0]",
        Kind::Integer,
    ),
    (
        "upstreams.app.outlier_detection.consecutive_5xx",
        Kind::Integer,
    ),
    (
        "upstreams.app.outlier_detection.consecutive_gateway_failure",
        Kind::Integer,
    ),
    (
        "upstreams.app.outlier_detection.failure_percentage_threshold",
        Kind::Integer,
    ),
    (
        "upstreams.app.outlier_detection.failure_percentage_request_volume",
        Kind::Integer,
    ),
    ("upstreams.app.outlier_detection.interval", Kind::Duration),
    (
        "upstreams.app.outlier_detection.base_ejection_time",
        Kind::Duration,
    ),
    (
        "upstreams.app.outlier_detection.max_ejection_time",
        Kind::Duration,
    ),
    (
        "upstreams.app.outlier_detection.max_ejection_percent",
        Kind::Integer,
    ),
    ("plugins.request_size.max_body", Kind::Size),
    ("plugins.request_size.max_header", Kind::Size),
    ("plugins.request_size.max_headers", Kind::Integer),
    ("routes[0].canary.weight", Kind::Percent),
    ("routes[0].cache.default_ttl", Kind::Duration),
    ("routes[0].cache.max_size", Kind::Size),
    ("routes[0].cache.stale_while_revalidate", Kind::Duration),
    ("routes[0].cache.stale_if_error", Kind::Duration),
    ("routes[0].plugins.rate_limit[0].rate", Kind::Integer),
    ("routes[0].plugins.rate_limit[0].per", Kind::Duration),
    ("routes[0].plugins.rate_limit[0].burst", Kind::Integer),
    ("routes[0].plugins.rate_limit[1].limit", Kind::Integer),
    ("routes[0].plugins.rate_limit[1].window", Kind::Duration),
    ("routes[0].plugins.rate_limit[2].limit", Kind::Integer),
    ("routes[0].plugins.rate_limit[2].window", Kind::Duration),
    ("routes[0].plugins.concurrency_limit.max", Kind::Integer),
    ("routes[0].plugins.cors.max_age", Kind::Duration),
    ("routes[1].plugins.jwt.jwks_refresh", Kind::Duration),
    ("routes[1].plugins.jwt.leeway", Kind::Duration),
    ("routes[2].respond.status", Kind::Integer),
];

/// A configuration with some fields set to raw YAML scalars, which the YAML value model
/// cannot always hold (`99999999999999999999`): the tree holds a marker in their place.
#[derive(Clone)]
struct Candidate {
    config: Value,
    raw: Vec<(String, String)>,
}

impl Candidate {
    fn new(config: &Value) -> Self {
        Self {
            config: config.clone(),
            raw: Vec::new(),
        }
    }

    /// The text, the raw scalars in place.
    fn text(&self) -> String {
        let text = serde_yaml::to_string(&self.config).expect("YAML");
        self.raw
            .iter()
            .fold(text, |text, (marker, value)| text.replace(marker, value))
    }
}

/// `candidate` with the field at `path` (`a.b[0].c`) set to the YAML scalar `value`.
fn with_value(candidate: &Candidate, path: &str, value: &str) -> Candidate {
    let mut candidate = candidate.clone();
    let marker = format!("hostile-value-{}", candidate.raw.len());
    let mut node = &mut candidate.config;
    for segment in path.split('.') {
        let (key, index) = match segment.split_once('[') {
            Some((key, rest)) => (key, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (segment, None),
        };
        node = node
            .get_mut(key)
            .unwrap_or_else(|| panic!("{path}: no {key} in the baseline"));
        if let Some(index) = index {
            node = node
                .get_mut(index)
                .unwrap_or_else(|| panic!("{path}: no item {index}"));
        }
    }
    *node = Value::String(marker.clone());
    candidate.raw.push((marker, value.to_string()));
    candidate
}

/// Fills the placeholders of a configuration for a gateway run from `dir`.
struct Setting {
    app: Upstream,
    canary: Upstream,
    dir: TestDir,
}

impl Setting {
    fn template(&self, config: &Candidate) -> String {
        config
            .text()
            .replace("{app}", &self.app.addr())
            .replace("{canary}", &self.canary.addr())
    }

    /// `portcullis check` of `config`: `None` when it passes, else its output.
    fn check(&self, config: &Candidate) -> Option<String> {
        let text = render_config(&self.template(config), self.dir.path(), 1, 2);
        let file = self.dir.write("candidate.yaml", &text);
        let output = run_portcullis(&["check", "-c", &file.display().to_string()]);
        if output.status.success() {
            return None;
        }
        Some(format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }

    /// Starts `config` and asserts it serves: its own answer, and a proxied request
    /// answered (whatever the status), with the process still there afterwards.
    fn assert_runs(&self, config: &Candidate, what: &str) {
        let mut gateway = Gateway::start_raw(&self.template(config));
        let ping = gateway.get("/ping");
        assert_eq!(ping.status, 200, "{what}: /ping {ping:?}");
        let proxied = gateway.get("/doc");
        assert!(proxied.status >= 200, "{what}: {proxied:?}");
        assert!(
            gateway.wait_for_exit(Duration::from_millis(200)).is_none(),
            "{what}: the gateway exited after serving"
        );
    }
}

#[test]
fn every_numeric_field_is_refused_with_its_path_or_runs() {
    let setting = Setting {
        app: Upstream::start("app"),
        canary: Upstream::start("canary"),
        dir: TestDir::new(),
    };
    let baseline = Candidate::new(&serde_yaml::from_str(BASELINE).expect("baseline YAML"));
    assert_eq!(setting.check(&baseline), None, "the baseline passes");

    // Accepted values, grouped by their place in their kind's list, so that one gateway
    // runs each group (a value accepted alone is tried alone if its group is refused).
    let mut accepted: BTreeMap<usize, Vec<(&str, &str)>> = BTreeMap::new();
    for &(path, kind) in FIELDS {
        for (i, value) in kind.hostile().iter().enumerate() {
            match setting.check(&with_value(&baseline, path, value)) {
                Some(output) => assert!(
                    output.contains(&format!("{path}:")),
                    "{path} = {value} is refused without its path:\n{output}"
                ),
                None => accepted.entry(i).or_default().push((path, value)),
            }
        }
    }
    for (i, fields) in accepted {
        let group = fields
            .iter()
            .fold(baseline.clone(), |config, (path, value)| {
                with_value(&config, path, value)
            });
        if setting.check(&group).is_none() {
            setting.assert_runs(&group, &format!("accepted values {fields:?}"));
            continue;
        }
        for (path, value) in fields {
            let what = format!("{path} = {value} (group {i})");
            setting.assert_runs(&with_value(&baseline, path, value), &what);
        }
    }
}
