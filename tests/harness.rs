//! Checks of the test harness itself (no gateway involved): the other tests are only
//! as good as the upstream servers and the metrics parser they rely on.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{http_agent, metric_value, send, Upstream};

/// Sends one keep-alive request on `stream` and reads until `body` has arrived.
fn exchange(stream: &mut TcpStream, body: &str) {
    stream
        .write_all(b"GET /hello HTTP/1.1\r\nHost: test\r\nX-Probe: 1\r\n\r\n")
        .expect("send a request");
    let mut received = Vec::new();
    let mut buf = [0; 1024];
    while !String::from_utf8_lossy(&received).ends_with(body) {
        let n = stream.read(&mut buf).expect("read the response");
        assert!(
            n > 0,
            "closed early: {}",
            String::from_utf8_lossy(&received)
        );
        received.extend_from_slice(&buf[..n]);
    }
}

#[test]
fn upstream_answers_counts_and_records() {
    let upstream = Upstream::start("alpha");
    let agent = http_agent();
    let url = |path: &str| format!("http://{}{path}", upstream.addr());

    let response = send(&agent, "GET", &url("/some/path?q=1"), &[("X-Probe", "yes")]);
    assert_eq!((response.status, response.body.as_str()), (200, "alpha"));

    upstream.set_status(418);
    upstream.set_body("teapot");
    let response = send(&agent, "POST", &url("/brew"), &[]);
    assert_eq!((response.status, response.body.as_str()), (418, "teapot"));

    assert_eq!(send(&agent, "GET", &url("/healthz"), &[]).status, 200);
    upstream.set_healthy(false);
    assert_eq!(send(&agent, "GET", &url("/healthz"), &[]).status, 503);

    assert_eq!(upstream.requests(), 2, "health checks are not counted");
    assert_eq!(upstream.health_checks(), 2);
    let received = upstream.received();
    assert_eq!(received[0].path, "/some/path?q=1");
    assert_eq!(received[0].header("x-probe"), Some("yes"));
    assert_eq!(received[1].method, "POST");
}

#[test]
fn stopped_upstream_refuses_and_closes_connections_then_restarts_on_its_port() {
    let upstream = Upstream::start("alpha");
    let mut kept_alive = TcpStream::connect(upstream.addr()).expect("connect");
    kept_alive
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    exchange(&mut kept_alive, "alpha");

    upstream.stop();

    let refused = TcpStream::connect(upstream.addr()).map_err(|e| e.kind());
    assert_eq!(refused.err(), Some(ErrorKind::ConnectionRefused));
    let mut buf = [0; 16];
    match kept_alive.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        other => panic!("an open connection should be closed by stop(): {other:?}"),
    }

    upstream.restart();

    let mut fresh = TcpStream::connect(upstream.addr()).expect("connect after restart");
    fresh
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    exchange(&mut fresh, "alpha");
    assert_eq!(upstream.requests(), 2);
}

#[test]
fn upstream_reports_its_peak_concurrency() {
    let upstream = Upstream::start("alpha");
    upstream.set_delay(Duration::from_millis(300));
    let agent = http_agent();

    std::thread::scope(|scope| {
        for _ in 0..3 {
            scope.spawn(|| send(&agent, "GET", &format!("http://{}/", upstream.addr()), &[]));
        }
    });

    assert_eq!(upstream.max_in_flight(), 3);
}

#[test]
fn metric_value_matches_labels_in_any_order_and_sums_series() {
    let text = r#"
# HELP portcullis_requests_total Requests.
# TYPE portcullis_requests_total counter
portcullis_requests_total{method="GET",route="api",status="200",upstream="app",variant="stable"} 5
portcullis_requests_total{method="GET",route="api",status="200",upstream="app",variant="canary"} 2
portcullis_requests_total{method="POST",route="a,b=\"c\"",status="200",upstream="app",variant="stable"} 1
portcullis_config_version 3
"#;

    let labels = [("route", "api"), ("status", "200"), ("method", "GET")];
    assert_eq!(
        metric_value(text, "portcullis_requests_total", &labels),
        Some(7.0)
    );
    assert_eq!(
        metric_value(
            text,
            "portcullis_requests_total",
            &[("variant", "canary"), ("route", "api")]
        ),
        Some(2.0)
    );
    assert_eq!(
        metric_value(text, "portcullis_requests_total", &[("route", "a,b=\"c\"")]),
        Some(1.0)
    );
    assert_eq!(
        metric_value(text, "portcullis_config_version", &[]),
        Some(3.0)
    );
    assert_eq!(
        metric_value(text, "portcullis_requests_total", &[("route", "nope")]),
        None
    );
    assert_eq!(metric_value(text, "portcullis_requests", &[]), None);
}
