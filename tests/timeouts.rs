//! `routes[].timeout`: one deadline for the whole request, retries and backoff
//! included, answered 504 UPSTREAM_TIMEOUT; it replaces the pool's read timeout, so a
//! route may wait longer than its pool's default or give up sooner.

mod common;

use std::time::{Duration, Instant};

use common::{assert_gateway_error, free_port, Gateway, OneRoute, Upstream};

#[test]
fn a_slow_upstream_gets_504_at_the_route_timeout() {
    let app = Upstream::start("app");
    app.set_delay(Duration::from_secs(3));
    let gateway = Gateway::start(
        &OneRoute::to(&[&app])
            .upstream("timeouts: { read: 30s }")
            .route("timeout: 400ms")
            .yaml(),
    );
    let started = Instant::now();
    let response = gateway.get("/slow");
    let took = started.elapsed();
    assert_gateway_error(&response, 504, "UPSTREAM_TIMEOUT");
    assert!(
        took >= Duration::from_millis(350) && took < Duration::from_millis(1500),
        "answered after {took:?}"
    );
}

#[test]
fn retries_and_backoff_stay_within_the_route_timeout() {
    // Every target refuses connections: without the route timeout, 6 tries with
    // doubling 300 ms backoffs would take over 9 s.
    let refusing: Vec<String> = (0..3)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let gateway = Gateway::start(
        &OneRoute::to_addresses(&refusing)
            .upstream("retries: { attempts: 5, on: [connect_failure], backoff: 300ms }")
            .route("timeout: 700ms")
            .yaml(),
    );
    let started = Instant::now();
    let response = gateway.get("/");
    let took = started.elapsed();
    assert_gateway_error(&response, 504, "UPSTREAM_TIMEOUT");
    assert!(
        took < Duration::from_millis(2000),
        "answered after {took:?}"
    );
}

#[test]
fn a_route_timeout_longer_than_the_pools_read_timeout_lets_the_answer_arrive() {
    let app = Upstream::start("app");
    app.set_delay(Duration::from_millis(700));
    let slow_route = r#"  - name: reports
    match: { path_prefix: /reports }
    upstream: app
    timeout: 5s
"#;
    let gateway = Gateway::start(
        &OneRoute::to(&[&app])
            .upstream("timeouts: { read: 200ms }")
            .routes_before(slow_route)
            .yaml(),
    );
    assert_eq!(gateway.get("/reports/q3").status, 200);
    assert_gateway_error(&gateway.get("/other"), 504, "UPSTREAM_TIMEOUT");
}

#[test]
fn a_fast_answer_is_untouched_by_the_route_timeout() {
    let app = Upstream::start("app");
    let gateway = Gateway::start(&OneRoute::to(&[&app]).route("timeout: 2s").yaml());
    for _ in 0..20 {
        let response = gateway.get("/");
        assert_eq!(response.status, 200);
        assert_eq!(response.body, "app");
    }
}

#[test]
fn check_names_a_bad_route_timeout() {
    let dir = common::TestDir::new();
    let config = common::render_config(
        &format!(
            "{}{}",
            common::BASE_CONFIG,
            r#"
upstreams:
  app: { targets: [{ address: "127.0.0.1:9" }] }
routes:
  - { name: zero, match: { path: /a }, upstream: app, timeout: 0s }
  - { name: local, match: { path: /b }, respond: { status: 200 }, timeout: 1s }
"#
        ),
        dir.path(),
        1,
        2,
    );
    let file = dir.write("portcullis.yaml", &config).display().to_string();
    let output = common::run_portcullis(&["check", "-c", &file]);
    assert!(!output.status.success());
    let text = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    for path in ["routes[0].timeout", "routes[1].timeout"] {
        assert!(
            text.contains(&format!(": {path}: ")),
            "{path} not reported:\n{text}"
        );
    }
}
