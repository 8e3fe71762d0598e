//! What operators see: the admin endpoints (SPEC §6), the metrics (§7) and the access
//! log (§8).

mod common;

use std::path::Path;
use std::process::Command;

use common::{
    eventually, extend_section, free_port, make_cert, metric_value, Gateway, OneRoute, TestDir,
    Upstream, BASE_CONFIG, PING_ROUTE,
};
use serde_json::Value;

/// The fields of every access log line.
const ACCESS_LOG_FIELDS: [&str; 19] = [
    "ts",
    "request_id",
    "trace_id",
    "client_ip",
    "method",
    "host",
    "path",
    "route",
    "consumer",
    "upstream",
    "target",
    "variant",
    "status",
    "bytes_sent",
    "duration_ms",
    "upstream_ms",
    "cache",
    "rate_limit",
    "error",
];

/// Route `api` (prefix `/api`, proxied to upstream `app` over `targets`) and route
/// `ping` (answered by the gateway).
fn api_routes(targets: &[&Upstream]) -> OneRoute {
    OneRoute::to(targets)
        .named("api")
        .matching("{ path_prefix: /api }")
        .routes_after(PING_ROUTE)
}

fn api_gateway(app: &Upstream) -> Gateway {
    Gateway::start(&api_routes(&[app]).yaml())
}

fn is_rfc3339(value: &Value) -> bool {
    value
        .as_str()
        .is_some_and(|ts| chrono::DateTime::parse_from_rfc3339(ts).is_ok())
}

/// The access log line of the request with this id, once it has been flushed.
fn access_log_line(gateway: &Gateway, request_id: &str) -> Value {
    let with_id = || -> Vec<Value> {
        gateway
            .access_log_lines()
            .into_iter()
            .filter(|line| line["request_id"] == request_id)
            .collect()
    };
    let lines = eventually!(let lines = with_id();
        !lines.is_empty(),
        "no access log line for request {request_id}, log:\n{}",
        gateway.access_log_text()
    );
    assert_eq!(
        lines.len(),
        1,
        "expected one access log line for request {request_id}, log:\n{}",
        gateway.access_log_text()
    );
    lines.into_iter().next().unwrap()
}

#[test]
fn admin_healthz_and_readyz_answer_200() {
    let gateway = Gateway::start(&format!("\nroutes:\n{PING_ROUTE}"));

    let healthz = gateway.admin_get("/healthz");
    assert_eq!(
        (healthz.status, healthz.body.trim()),
        (200, "ok"),
        "{healthz:?}"
    );
    let readyz = gateway.admin_get("/readyz");
    assert_eq!(readyz.status, 200, "{readyz:?}");
}

#[test]
fn metrics_count_every_request_exactly() {
    let app = Upstream::start("app");
    let gateway = api_gateway(&app);

    for _ in 0..5 {
        assert_eq!(gateway.get("/api/items").status, 200);
    }
    for _ in 0..2 {
        assert_eq!(gateway.request("POST", "/api/items", &[]).status, 200);
    }
    app.set_status(503);
    for _ in 0..2 {
        assert_eq!(gateway.get("/api/items").status, 503);
    }
    assert_eq!(gateway.get("/ping").status, 200);

    let target = app.addr();
    let api = |method, status| {
        vec![
            ("route", "api"),
            ("method", method),
            ("status", status),
            ("upstream", "app"),
            ("variant", "stable"),
        ]
    };
    let expected = [
        ("portcullis_requests_total", api("GET", "200"), 5.0),
        ("portcullis_requests_total", api("POST", "200"), 2.0),
        ("portcullis_requests_total", api("GET", "503"), 2.0),
        (
            "portcullis_requests_total",
            vec![("route", "ping"), ("method", "GET"), ("status", "200")],
            1.0,
        ),
        (
            "portcullis_request_duration_seconds_count",
            vec![("route", "api")],
            9.0,
        ),
        (
            "portcullis_request_duration_seconds_count",
            vec![("route", "ping")],
            1.0,
        ),
        (
            "portcullis_upstream_duration_seconds_count",
            vec![("upstream", "app"), ("target", target.as_str())],
            9.0,
        ),
        (
            "portcullis_upstream_in_flight",
            vec![("upstream", "app")],
            0.0,
        ),
    ];
    // Counters are updated as a request finishes, which may be just after the client
    // has its response.
    let mismatches = || -> Vec<String> {
        let text = gateway.metrics();
        expected
            .iter()
            .filter_map(|(name, labels, want)| {
                let got = metric_value(&text, name, labels);
                (got != Some(*want)).then(|| format!("{name}{labels:?}: want {want}, got {got:?}"))
            })
            .collect()
    };
    eventually!(let wrong = mismatches();
        wrong.is_empty(),
        "{}\n--- /metrics ---\n{}",
        wrong.join("\n"),
        gateway.metrics()
    );
}

#[test]
fn status_describes_config_routes_and_targets() {
    let a = Upstream::start("a");
    let b = Upstream::start("b");
    let gateway = Gateway::start(
        &api_routes(&[&a, &b])
            .weights(&[3, 1])
            .upstream(
                "health_check:
  type: http
  path: /healthz
  interval: 200ms
  timeout: 500ms
  healthy_threshold: 1
  unhealthy_threshold: 1",
            )
            .yaml(),
    );
    let all_healthy = |status: &Value| {
        status["upstreams"]["app"]["targets"]
            .as_array()
            .is_some_and(|targets| targets.iter().all(|t| t["healthy"] == true))
    };

    let status = eventually!(let status = gateway.status_json();
        all_healthy(&status),
        "the targets were never all healthy: {status:#}"
    );

    assert_eq!(status["version"], 1, "{status:#}");
    let hash = status["hash"].as_str().unwrap_or_default();
    assert!(
        !hash.is_empty() && hash.bytes().all(|b| b.is_ascii_hexdigit()),
        "hash {hash:?}"
    );
    assert!(is_rfc3339(&status["loaded_at"]), "loaded_at: {status:#}");

    let routes = status["routes"].as_array().expect("routes is a list");
    let mut names: Vec<&str> = routes.iter().filter_map(|r| r["name"].as_str()).collect();
    names.sort();
    assert_eq!(names, ["api", "ping"], "{status:#}");
    let api = routes.iter().find(|r| r["name"] == "api").unwrap();
    assert_eq!(api["upstream"], "app", "{status:#}");

    let app = &status["upstreams"]["app"];
    assert_eq!(app["in_flight"], 0, "{status:#}");
    let targets = app["targets"].as_array().expect("targets is a list");
    assert_eq!(targets.len(), 2, "{status:#}");
    for (upstream, weight) in [(&a, 3), (&b, 1)] {
        let target = targets
            .iter()
            .find(|t| t["address"] == upstream.addr())
            .unwrap_or_else(|| panic!("{} missing: {status:#}", upstream.addr()));
        assert_eq!(target["weight"], weight, "{target}");
        assert_eq!(target["healthy"], true, "{target}");
        assert_eq!(target["ejected"], false, "{target}");
        assert_eq!(target["in_flight"], 0, "{target}");
    }
}

#[test]
fn access_log_line_describes_the_request() {
    let app = Upstream::start("app");
    let gateway = api_gateway(&app);

    let response = gateway.request(
        "GET",
        "/api/things",
        &[
            ("Host", "shop.example.com"),
            ("X-Request-Id", "log-check-1"),
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
        ],
    );
    assert_eq!(response.status, 200, "{response:?}");

    let line = access_log_line(&gateway, response.request_id());
    for field in ACCESS_LOG_FIELDS {
        assert!(line.get(field).is_some(), "no {field:?} in {line}");
    }
    assert!(is_rfc3339(&line["ts"]), "ts: {line}");
    assert_eq!(line["request_id"], "log-check-1", "{line}");
    assert_eq!(
        line["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736",
        "{line}"
    );
    assert_eq!(line["client_ip"], "127.0.0.1", "{line}");
    assert_eq!(line["method"], "GET", "{line}");
    assert_eq!(line["host"], "shop.example.com", "{line}");
    assert_eq!(line["path"], "/api/things", "{line}");
    assert_eq!(line["route"], "api", "{line}");
    assert_eq!(line["upstream"], "app", "{line}");
    assert_eq!(line["target"], app.addr(), "{line}");
    assert_eq!(line["variant"], "stable", "{line}");
    assert_eq!(line["status"], 200, "{line}");
    assert!(
        line["bytes_sent"].as_u64().is_some_and(|n| n >= 3),
        "bytes_sent for the body \"app\": {line}"
    );
    assert!(line["duration_ms"].is_number(), "{line}");
    assert!(line["upstream_ms"].is_number(), "{line}");
    assert!(line["error"].is_null(), "{line}");
}

#[test]
fn access_log_line_names_the_error_code() {
    let app = Upstream::start("app");
    let gateway = api_gateway(&app);

    let response = gateway.get("/nowhere");
    assert_eq!(response.status, 404, "{response:?}");

    let line = access_log_line(&gateway, response.request_id());
    assert_eq!(line["status"], 404, "{line}");
    assert_eq!(line["error"], "ROUTE_NOT_FOUND", "{line}");
    assert_eq!(line["path"], "/nowhere", "{line}");
}

#[test]
fn access_log_never_contains_credentials() {
    let app = Upstream::start("app");
    let gateway = api_gateway(&app);

    let response = gateway.request(
        "GET",
        "/api/private",
        &[
            ("Authorization", "Bearer secret-bearer-token-1234"),
            ("Cookie", "session=secret-cookie-5678"),
        ],
    );
    assert_eq!(response.status, 200, "{response:?}");

    access_log_line(&gateway, response.request_id());
    let log = gateway.access_log_text();
    for secret in ["secret-bearer-token-1234", "secret-cookie-5678"] {
        assert!(!log.contains(secret), "{secret} logged:\n{log}");
    }
}

#[test]
fn downstream_connections_counts_open_client_connections() {
    use std::io::{Read, Write};
    use std::net::TcpStream;

    let app = Upstream::start("app");
    let gateway = api_gateway(&app);
    let gauge = || gateway.metric("portcullis_downstream_connections", &[]);
    let request = b"GET /api/x HTTP/1.1\r\nHost: test\r\n\r\n";

    // Three kept-alive connections, each after one complete exchange.
    let mut connections: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut stream = TcpStream::connect(gateway.addr()).expect("connect");
            stream.write_all(request).expect("send");
            let mut buf = [0u8; 4096];
            let read = stream.read(&mut buf).expect("answer");
            assert!(
                buf[..read].starts_with(b"HTTP/1.1 200"),
                "{:?}",
                &buf[..read]
            );
            stream
        })
        .collect();
    eventually!(
        gauge() == Some(3.0),
        "three open connections, got {:?}",
        gauge()
    );

    connections.clear();
    eventually!(
        gauge() == Some(0.0),
        "closed connections are released, got {:?}",
        gauge()
    );
}

/// A certificate's notAfter as a Unix time, as the openssl CLI reads it.
fn not_after(cert: &Path) -> f64 {
    let output = Command::new("openssl")
        .args(["x509", "-noout", "-enddate", "-in"])
        .arg(cert)
        .output()
        .expect("run openssl (apt-get install openssl)");
    let text = String::from_utf8_lossy(&output.stdout);
    let date = text.trim().trim_start_matches("notAfter=");
    chrono::NaiveDateTime::parse_from_str(date, "%b %e %H:%M:%S %Y GMT")
        .unwrap_or_else(|e| panic!("openssl's notAfter {date:?}: {e}"))
        .and_utc()
        .timestamp() as f64
}

#[test]
fn certificate_expiry_follows_the_certificates_in_force() {
    let certs = TestDir::new();
    make_cert(certs.path(), "edge", "edge.test,www.edge.test");
    make_cert(certs.path(), "other", "other.test");
    let port = free_port();
    let config = |file: &str| {
        let listener = format!(
            "  - address: \"127.0.0.1:{port}\"\n    tls:\n      certificates:\n        - {{ cert: \"{0}/{file}.pem\", key: \"{0}/{file}.key\" }}",
            certs.path().display()
        );
        extend_section(BASE_CONFIG, "listeners", &listener) + &format!("routes:\n{PING_ROUTE}")
    };
    let gateway = Gateway::start_raw(&config("edge"));
    let listener = format!("127.0.0.1:{port}");
    let expiry = |name: &str| {
        gateway.metric(
            "portcullis_tls_certificate_expiry_seconds",
            &[("listener", &listener), ("name", name)],
        )
    };

    assert_eq!(
        expiry("edge.test"),
        Some(not_after(&certs.join("edge.pem")))
    );
    assert_eq!(expiry("www.edge.test"), None, "one series per certificate");

    gateway.rewrite_config_raw(&config("other"));
    gateway.reload();

    assert_eq!(
        expiry("other.test"),
        Some(not_after(&certs.join("other.pem")))
    );
    assert_eq!(
        expiry("edge.test"),
        None,
        "a certificate no longer served is dropped"
    );
}

#[test]
fn status_counts_answers_per_route_and_keeps_the_last_refused_reload() {
    let (app, next) = (Upstream::start("app"), Upstream::start("next"));
    let sections = format!(
        r#"
upstreams:
  app:
    targets: [{{ address: "{}" }}]
  next:
    targets: [{{ address: "{}" }}]
routes:
{PING_ROUTE}  - name: api
    match: {{ path_prefix: /api }}
    upstream: app
    canary: {{ upstream: next, weight: 12.5, force_header: X-Canary }}
    cache: {{ enabled: true, default_ttl: 60s }}
"#,
        app.addr(),
        next.addr()
    );
    let gateway = Gateway::start(&sections);
    let status = gateway.status_json();
    assert!(status["last_refused_reload"].is_null(), "{status:#}");
    let listeners = status["listeners"].as_array().expect("listeners is a list");
    assert_eq!(listeners.len(), 1, "{status:#}");
    assert_eq!(listeners[0]["address"], gateway.addr());
    assert_eq!(listeners[0]["tls"], false);

    let stable = [("X-Canary", "never")];
    for _ in 0..3 {
        assert_eq!(gateway.request("GET", "/api/a", &stable).status, 200);
    }
    app.set_status(500);
    for path in ["/api/b", "/api/c"] {
        assert_eq!(gateway.request("GET", path, &stable).status, 500);
    }
    assert_eq!(gateway.get("/nowhere").status, 404);
    let api = |status: &Value| {
        status["routes"]
            .as_array()
            .and_then(|routes| routes.iter().find(|route| route["name"] == "api"))
            .cloned()
            .unwrap_or_default()
    };
    let route = eventually!(let route = api(&gateway.status_json());
        route["requests"] == 5 && route["errors"] == 2,
        "api: 5 answers, 2 of them 5xx: {route:#}"
    );
    assert_eq!(route["canary_upstream"], "next", "{route:#}");
    assert_eq!(route["canary_weight"], 12.5, "{route:#}");
    let results = &route["cache"]["results"];
    assert_eq!(
        (results["hit"].as_u64(), results["miss"].as_u64()),
        (Some(2), Some(3)),
        "/api/a fetched once then served twice, b and c fetched: {route:#}"
    );

    gateway.rewrite_config(&format!("{sections}    nonsense: 1\n"));
    let refused = gateway.admin_post("/reload", &[], "");
    assert_eq!(refused.status, 400, "{refused:?}");
    gateway.rewrite_config(&sections);
    gateway.reload();

    let status = gateway.status_json();
    let refusal = &status["last_refused_reload"];
    assert!(is_rfc3339(&refusal["at"]), "{status:#}");
    let problems = refusal["problems"].as_array().expect("problems is a list");
    assert!(
        problems.len() == 1
            && problems[0]
                .as_str()
                .unwrap_or("")
                .contains("routes[1].nonsense"),
        "the refused reload's problems, kept after the next reload succeeded: {status:#}"
    );
    assert_eq!(status["version"], 2, "{status:#}");
}
