//! Outlier ejection as a circuit breaker: ejection after exactly `consecutive_5xx`, no
//! traffic while ejected, one half-open probe, longer repeat ejections,
//! `max_ejection_percent`, the route failing fast (or to its fallback) when every target
//! is out, and ejection, health and bulkhead state surviving a reload.

mod common;

use std::time::{Duration, Instant};

use common::{
    assert_gateway_error, eventually, http_agent, Gateway, OneRoute, Upstream, EVENTUALLY,
    PING_ROUTE,
};
use serde_json::Value;

/// `upstreams.app` over `targets` with outlier detection `outlier` (one line of YAML
/// fields), routed from `/`.
fn config(targets: &[&Upstream], outlier: &str) -> OneRoute {
    OneRoute::to(targets).upstream(&format!("outlier_detection: {{ {outlier} }}"))
}

fn ejecting_gateway(targets: &[&Upstream], outlier: &str) -> Gateway {
    Gateway::start(&config(targets, outlier).yaml())
}

fn target_status(gateway: &Gateway, target: &Upstream) -> Value {
    gateway.target_status("app", &target.addr())
}

fn ejected_gauge(gateway: &Gateway, target: &Upstream) -> Option<f64> {
    gateway.metric(
        "portcullis_upstream_target_ejected",
        &[("upstream", "app"), ("target", &target.addr())],
    )
}

fn ejections(gateway: &Gateway, target: &Upstream) -> f64 {
    gateway
        .metric(
            "portcullis_upstream_ejections_total",
            &[("upstream", "app"), ("target", &target.addr())],
        )
        .unwrap_or(0.0)
}

/// Sends GETs until `bad` has received `count` requests (the others go to good targets).
fn send_until_received(gateway: &Gateway, bad: &Upstream, count: usize) {
    // Long enough for a third ejection (3 × 1 s) to end.
    eventually!(
        within(EVENTUALLY * 2),
        {
            gateway.get("/");
            bad.requests() >= count
        },
        "{} got {} requests",
        bad.name(),
        bad.requests()
    );
}

#[test]
fn a_failing_target_is_ejected_after_exactly_consecutive_5xx_and_gets_no_traffic() {
    let (good, bad) = (Upstream::start("good"), Upstream::start("bad"));
    bad.set_status(500);
    let gateway = ejecting_gateway(
        &[&good, &bad],
        "consecutive_5xx: 3, base_ejection_time: 30s, max_ejection_percent: 50",
    );

    send_until_received(&gateway, &bad, 3);
    assert_eq!(ejected_gauge(&gateway, &bad), Some(1.0));
    assert_eq!(ejections(&gateway, &bad), 1.0);
    assert_eq!(target_status(&gateway, &bad)["ejected"], true);
    assert_eq!(target_status(&gateway, &good)["ejected"], false);

    for _ in 0..50 {
        assert_eq!(gateway.get("/").body, "good");
    }
    assert_eq!(bad.requests(), 3, "an ejected target got traffic");
}

#[test]
fn after_the_ejection_one_probe_decides_and_a_repeat_ejection_lasts_twice_as_long() {
    let (good, bad) = (Upstream::start("good"), Upstream::start("bad"));
    bad.set_status(500);
    let gateway = ejecting_gateway(
        &[&good, &bad],
        "consecutive_5xx: 2, base_ejection_time: 1s, max_ejection_time: 10s, \
     max_ejection_percent: 50",
    );
    send_until_received(&gateway, &bad, 2);
    let first_ejection = Instant::now();

    // The probe: exactly one request after the ejection time; it fails and re-ejects.
    send_until_received(&gateway, &bad, 3);
    let first_probe = Instant::now();
    for _ in 0..20 {
        gateway.get("/");
    }
    assert_eq!(
        bad.requests(),
        3,
        "the half-open state let more than one request through"
    );
    assert_eq!(ejections(&gateway, &bad), 2.0);

    // The second ejection lasts 2 × base_ejection_time.
    send_until_received(&gateway, &bad, 4);
    let second_probe = Instant::now();
    let first_time = first_probe - first_ejection;
    let second_time = second_probe - first_probe;
    assert!(first_time >= Duration::from_secs(1), "{first_time:?}");
    assert!(second_time >= Duration::from_secs(2), "{second_time:?}");

    // A successful probe returns the target to service.
    bad.set_status(200);
    send_until_received(&gateway, &bad, 6);
    assert_eq!(ejected_gauge(&gateway, &bad), Some(0.0));
    assert_eq!(target_status(&gateway, &bad)["ejected"], false);
}

#[test]
fn no_more_than_max_ejection_percent_of_the_targets_are_ejected() {
    let good = Upstream::start("good");
    let (bad1, bad2) = (Upstream::start("bad1"), Upstream::start("bad2"));
    bad1.set_status(500);
    bad2.set_status(500);
    let gateway = ejecting_gateway(
        &[&good, &bad1, &bad2],
        "consecutive_5xx: 2, base_ejection_time: 30s, max_ejection_percent: 50",
    );
    for _ in 0..60 {
        gateway.get("/");
    }
    let ejected = [&bad1, &bad2]
        .iter()
        .filter(|bad| target_status(&gateway, bad)["ejected"] == true)
        .count();
    assert_eq!(ejected, 1, "50% of 3 targets is one");
    assert_eq!(target_status(&gateway, &good)["ejected"], false);
}

#[test]
fn a_route_whose_targets_are_all_ejected_fails_fast_with_retry_after() {
    let (first, second) = (Upstream::start("first"), Upstream::start("second"));
    first.set_status(502);
    second.set_status(502);
    let gateway = ejecting_gateway(
        &[&first, &second],
        "consecutive_5xx: 5, consecutive_gateway_failure: 2, base_ejection_time: 30s, \
     max_ejection_percent: 100",
    );
    send_until_received(&gateway, &first, 2);
    send_until_received(&gateway, &second, 2);
    // Were a target contacted now, the answer would take seconds.
    first.set_delay(Duration::from_secs(3));
    second.set_delay(Duration::from_secs(3));

    let started = Instant::now();
    let response = gateway.get("/");
    let elapsed = started.elapsed();

    assert_gateway_error(&response, 503, "UPSTREAM_UNAVAILABLE");
    assert!(
        elapsed < Duration::from_millis(50),
        "answered in {elapsed:?}"
    );
    let retry_after: u64 = response
        .header("Retry-After")
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no Retry-After: {response:?}"));
    assert!((1..=30).contains(&retry_after), "Retry-After {retry_after}");
    assert_eq!(first.requests() + second.requests(), 4);
}

#[test]
fn a_route_whose_targets_are_all_ejected_uses_its_fallback() {
    let (primary, spare) = (Upstream::start("primary"), Upstream::start("spare"));
    primary.set_status(500);
    let gateway = Gateway::start(&format!(
        r#"
upstreams:
  app:
    targets: [{{ address: "{}" }}]
    outlier_detection: {{ consecutive_5xx: 2, base_ejection_time: 30s }}
  spare:
    targets: [{{ address: "{}" }}]
routes:
  - name: all
    match: {{ path_prefix: / }}
    upstream: app
    fallback_upstream: spare
"#,
        primary.addr(),
        spare.addr()
    ));
    send_until_received(&gateway, &primary, 2);
    for _ in 0..10 {
        let response = gateway.get("/");
        assert_eq!(response.status, 200);
        assert_eq!(response.body, "spare");
    }
    assert_eq!(primary.requests(), 2);
}

#[test]
fn ejection_and_health_survive_a_reload() {
    let good = Upstream::start("good");
    let (bad, sick) = (Upstream::start("bad"), Upstream::start("sick"));
    bad.set_status(500);
    let pool = || {
        config(
            &[&good, &bad, &sick],
            "consecutive_5xx: 2, base_ejection_time: 60s, max_ejection_percent: 50",
        )
        .upstream(
            "health_check: { type: http, path: /healthz, interval: 200ms, timeout: 500ms, \
             healthy_threshold: 1, unhealthy_threshold: 1 }",
        )
    };
    let gateway = Gateway::start(&pool().yaml());
    send_until_received(&gateway, &bad, 2);
    sick.set_healthy(false);
    eventually!(
        target_status(&gateway, &sick)["healthy"] == false,
        "the sick target was never reported unhealthy"
    );
    let (bad_before, sick_before) = (bad.requests(), sick.requests());

    // An unrelated change: one more route.
    gateway.rewrite_config(&pool().routes_before(PING_ROUTE).yaml());
    gateway.reload();

    assert_eq!(target_status(&gateway, &bad)["ejected"], true);
    assert_eq!(target_status(&gateway, &sick)["healthy"], false);
    assert_eq!(ejected_gauge(&gateway, &bad), Some(1.0));
    for _ in 0..30 {
        assert_eq!(gateway.get("/").body, "good");
    }
    assert_eq!(bad.requests(), bad_before);
    assert_eq!(sick.requests(), sick_before);
}

#[test]
fn max_requests_counts_requests_started_before_a_reload() {
    let slow = Upstream::start("slow");
    slow.set_delay(Duration::from_secs(2));
    let pool = || OneRoute::to(&[&slow]).upstream("max_requests: 1");
    let gateway = Gateway::start(&pool().yaml());
    let url = gateway.url("/");
    let held = std::thread::spawn(move || {
        let response = http_agent().get(&url).call();
        response.map_or(0, |response| response.status())
    });
    eventually!(slow.requests() == 1, "the held request never arrived");

    gateway.rewrite_config(&pool().routes_after(PING_ROUTE).yaml());
    gateway.reload();

    assert_gateway_error(&gateway.get("/"), 503, "UPSTREAM_OVERLOADED");
    assert_eq!(held.join().ok(), Some(200));
}
