//! Upstream pools: load balancing, active health checks, and the errors a client gets
//! when targets refuse, stall, are all down or are saturated.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use common::{
    assert_gateway_error, eventually, free_port, Gateway, OneRoute, Upstream, EVENTUALLY,
};

/// Health checks fast enough for a test to watch a target go down and come back.
const FAST_HEALTH_CHECK: &str = "health_check: { type: http, path: /healthz, interval: 200ms, \
                                 timeout: 500ms, healthy_threshold: 1, unhealthy_threshold: 1 }";

/// Sends `count` GETs and counts the answers by body, i.e. by the target that served them.
fn answers_by_target(gateway: &Gateway, count: usize) -> HashMap<String, usize> {
    let mut answers = HashMap::new();
    for _ in 0..count {
        let response = gateway.get("/");
        assert_eq!(response.status, 200, "{response:?}");
        *answers.entry(response.body).or_default() += 1;
    }
    answers
}

/// Waits until `/metrics` and `/status` both report `target` of `app` as `healthy`.
fn wait_for_health(gateway: &Gateway, target: &Upstream, healthy: bool) {
    let addr = target.addr();
    let gauge = || {
        gateway.metric(
            "portcullis_upstream_target_healthy",
            &[("upstream", "app"), ("target", &addr)],
        )
    };
    let expected_gauge = Some(if healthy { 1.0 } else { 0.0 });
    let status_of = || gateway.target_status("app", &addr);
    eventually!(
        gauge() == expected_gauge && status_of()["healthy"] == healthy,
        "target {addr} should be reported healthy={healthy} within {EVENTUALLY:?}: \
         portcullis_upstream_target_healthy = {:?}, /status entry = {}",
        gauge(),
        status_of()
    );
}

/// A gateway sending every request to upstream `app` over `first` and `second`, with
/// `extra` fields.
fn two_target_gateway(first: &Upstream, second: &Upstream, extra: &str) -> Gateway {
    Gateway::start(&OneRoute::to(&[first, second]).upstream(extra).yaml())
}

#[test]
fn weighted_round_robin_splits_traffic_by_weight() {
    let heavy = Upstream::start("heavy");
    let light = Upstream::start("light");
    let gateway = Gateway::start(
        &OneRoute::to(&[&heavy, &light])
            .weights(&[3, 1])
            .upstream("load_balancing: round_robin")
            .yaml(),
    );

    let answers = answers_by_target(&gateway, 2_000);

    let heavy_share = answers.get("heavy").copied().unwrap_or(0) as f64 / 2_000.0;
    assert!(
        (0.70..=0.80).contains(&heavy_share),
        "weights 3:1 should give heavy 75% ± 5%: {answers:?}"
    );
    assert_eq!(heavy.requests() + light.requests(), 2_000);
}

#[test]
fn consistent_hash_on_header_keeps_each_user_on_one_target() {
    let a = Upstream::start("a");
    let b = Upstream::start("b");
    let gateway = two_target_gateway(
        &a,
        &b,
        "load_balancing: consistent_hash\nhash_on: \"header:X-User\"",
    );
    let users: Vec<String> = (0..40).map(|i| format!("user-{i}")).collect();
    let target_of = |user: &str| {
        let response = gateway.request("GET", "/", &[("X-User", user)]);
        assert_eq!(response.status, 200, "{response:?}");
        response.body
    };

    let first: HashMap<&str, String> = users.iter().map(|u| (u.as_str(), target_of(u))).collect();
    // Interleaved rounds: a balancer that ignores the header would move users around.
    for _round in 0..4 {
        for user in &users {
            assert_eq!(target_of(user), first[user.as_str()], "{user} moved");
        }
    }

    let used: HashSet<&String> = first.values().collect();
    assert_eq!(
        used.len(),
        2,
        "40 users should spread over both targets: {first:?}"
    );
}

#[test]
fn unhealthy_target_gets_no_traffic_until_it_recovers() {
    let steady = Upstream::start("steady");
    let flaky = Upstream::start("flaky");
    let gateway = two_target_gateway(&steady, &flaky, FAST_HEALTH_CHECK);
    wait_for_health(&gateway, &flaky, true);

    flaky.set_healthy(false);
    wait_for_health(&gateway, &flaky, false);
    let before = flaky.requests();
    let answers = answers_by_target(&gateway, 20);
    assert_eq!(answers.get("steady"), Some(&20), "{answers:?}");
    assert_eq!(flaky.requests(), before);

    flaky.set_healthy(true);
    wait_for_health(&gateway, &flaky, true);
    let answers = answers_by_target(&gateway, 20);
    assert!(
        answers.get("flaky").is_some_and(|&n| n > 0),
        "a recovered target should get traffic again: {answers:?}"
    );
}

#[test]
fn stopped_target_is_taken_out_and_back_in_after_restart() {
    let steady = Upstream::start("steady");
    let restarted = Upstream::start("restarted");
    let gateway = two_target_gateway(&steady, &restarted, FAST_HEALTH_CHECK);
    // Leave pooled connections to the target behind, as real traffic would.
    assert_eq!(answers_by_target(&gateway, 10).len(), 2);

    restarted.stop();
    wait_for_health(&gateway, &restarted, false);
    let answers = answers_by_target(&gateway, 20);
    assert_eq!(answers.get("steady"), Some(&20), "{answers:?}");

    restarted.restart();
    wait_for_health(&gateway, &restarted, true);
    let answers = answers_by_target(&gateway, 20);
    assert!(
        answers.get("restarted").is_some_and(|&n| n > 0),
        "a restarted target should get traffic again: {answers:?}"
    );
}

#[test]
fn all_targets_unhealthy_gives_503_upstream_unavailable() {
    let a = Upstream::start("a");
    let b = Upstream::start("b");
    let gateway = two_target_gateway(&a, &b, FAST_HEALTH_CHECK);

    a.set_healthy(false);
    b.set_healthy(false);
    wait_for_health(&gateway, &a, false);
    wait_for_health(&gateway, &b, false);
    let response = gateway.get("/");

    assert_gateway_error(&response, 503, "UPSTREAM_UNAVAILABLE");
    assert_eq!(a.requests() + b.requests(), 0);
}

#[test]
fn refused_connection_gives_502_upstream_error() {
    let nothing_listens = format!("127.0.0.1:{}", free_port());
    let gateway = Gateway::start(
        &OneRoute::to_addresses(&[nothing_listens])
            .upstream("timeouts: { connect: 1s, read: 2s }")
            .yaml(),
    );

    let started = Instant::now();
    let response = gateway.get("/");

    assert_gateway_error(&response, 502, "UPSTREAM_ERROR");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn refused_connection_is_retried_on_another_target() {
    let live = Upstream::start("live");
    let nothing_listens = format!("127.0.0.1:{}", free_port());
    let gateway = Gateway::start(&OneRoute::to_addresses(&[nothing_listens, live.addr()]).yaml());

    // Round robin sends every other first attempt to the dead target; the default
    // retry policy (one retry on connect failure) must hide that from clients.
    for _ in 0..10 {
        let response = gateway.get("/");
        assert_eq!(
            (response.status, response.body.as_str()),
            (200, "live"),
            "{response:?}"
        );
    }
}

#[test]
fn slow_target_gives_504_upstream_timeout() {
    let slow = Upstream::start("slow");
    slow.set_delay(Duration::from_secs(3));
    let gateway = Gateway::start(
        &OneRoute::to(&[&slow])
            .upstream("timeouts: { connect: 1s, read: 500ms }")
            .yaml(),
    );

    let started = Instant::now();
    let response = gateway.get("/");
    let elapsed = started.elapsed();

    assert_gateway_error(&response, 504, "UPSTREAM_TIMEOUT");
    assert!(elapsed < Duration::from_millis(2_500), "took {elapsed:?}");
    assert_eq!(
        slow.requests(),
        1,
        "a read timeout is not retried by default"
    );
}

#[test]
fn max_requests_sheds_excess_with_503_upstream_overloaded() {
    let slow = Upstream::start("slow");
    slow.set_delay(Duration::from_millis(1_500));
    let gateway = Gateway::start(
        &OneRoute::to(&[&slow])
            .upstream("max_requests: 2\ntimeouts: { read: 5s }")
            .yaml(),
    );

    let responses = gateway.get_concurrently("/", 6);

    let (served, shed): (Vec<_>, Vec<_>) = responses.iter().partition(|r| r.status == 200);
    assert_eq!(served.len(), 2, "{responses:?}");
    for response in shed {
        assert_gateway_error(response, 503, "UPSTREAM_OVERLOADED");
    }
    assert_eq!(slow.requests(), 2);
    assert!(
        slow.max_in_flight() <= 2,
        "{} in flight",
        slow.max_in_flight()
    );
}
