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
