//! `upstreams.*.healthy_panic_threshold`: below that percent of healthy targets the pool
//! balances across all of them instead of answering 503 (Envoy's panic mode), counted in
//! `portcullis_upstream_panic_mode` and `..._entered_total`; above it, unhealthy targets
//! get no traffic as before.

mod common;

use common::{assert_gateway_error, eventually, Gateway, OneRoute, Upstream};

const FAST_HEALTH_CHECK: &str = "health_check: { type: http, path: /healthz, interval: 200ms, \
                                 timeout: 500ms, healthy_threshold: 1, unhealthy_threshold: 1 }";

#[test]
fn every_target_failing_its_checks_still_serves_in_panic_mode() {
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    let gateway = Gateway::start(
        &OneRoute::to(&[&a, &b])
            .upstream(FAST_HEALTH_CHECK)
            .upstream("healthy_panic_threshold: 50")
            .yaml(),
    );
    let panic = || gateway.metric("portcullis_upstream_panic_mode", &[("upstream", "app")]);
    assert_eq!(panic(), Some(0.0));
    a.set_healthy(false);
    b.set_healthy(false);
    eventually!(panic() == Some(1.0), "never entered panic mode");
    let before = (a.requests(), b.requests());
    for _ in 0..20 {
        assert_eq!(gateway.get("/").status, 200);
    }
    assert!(
        a.requests() > before.0 && b.requests() > before.1,
        "panic mode balances across all targets"
    );
    assert_eq!(
        gateway.status_json()["upstreams"]["app"]["panic_mode"],
        serde_json::json!(true)
    );
    assert!(gateway.stderr().contains("upstream app in panic mode"));

    a.set_healthy(true);
    b.set_healthy(true);
    eventually!(panic() == Some(0.0), "never left panic mode");
    let entered = gateway.metric(
        "portcullis_upstream_panic_mode_entered_total",
        &[("upstream", "app")],
    );
    assert_eq!(entered, Some(1.0));
}

#[test]
fn above_the_threshold_unhealthy_targets_get_nothing() {
    let (a, b, c) = (
        Upstream::start("a"),
        Upstream::start("b"),
        Upstream::start("c"),
    );
    let gateway = Gateway::start(
        &OneRoute::to(&[&a, &b, &c])
            .upstream(FAST_HEALTH_CHECK)
            .upstream("healthy_panic_threshold: 50")
            .yaml(),
    );
    c.set_healthy(false);
    eventually!(
        gateway.target_status("app", &c.addr())["healthy"] == false,
        "c never marked unhealthy"
    );
    let before = c.requests();
    for _ in 0..30 {
        assert_eq!(gateway.get("/").status, 200);
    }
    assert_eq!(
        c.requests(),
        before,
        "2 of 3 healthy (67%) is above 50%: no panic"
    );
}

#[test]
fn without_a_threshold_a_pool_with_no_healthy_target_answers_503() {
    let a = Upstream::start("a");
    let gateway = Gateway::start(&OneRoute::to(&[&a]).upstream(FAST_HEALTH_CHECK).yaml());
    a.set_healthy(false);
    eventually!(
        gateway.get("/").status == 503,
        "never refused with no healthy target"
    );
    assert_gateway_error(&gateway.get("/"), 503, "UPSTREAM_UNAVAILABLE");
}
