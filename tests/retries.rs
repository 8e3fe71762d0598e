//! Retries on answer statuses: to the other target, only for requests that may be sent
//! twice, within the retry budget, counted in `portcullis_retries_total`.

mod common;

use common::{Gateway, OneRoute, Upstream};

/// `upstreams.app` over `targets` with `retries` (one line of YAML fields), routed from `/`.
fn retrying_gateway(targets: &[&Upstream], retries: &str) -> Gateway {
    Gateway::start(
        &OneRoute::to(targets)
            .upstream(&format!("retries: {{ {retries} }}"))
            .yaml(),
    )
}

fn retries(gateway: &Gateway, reason: &str) -> f64 {
    gateway
        .metric(
            "portcullis_retries_total",
            &[("upstream", "app"), ("reason", reason)],
        )
        .unwrap_or(0.0)
}

#[test]
fn a_get_answered_503_is_retried_on_the_healthy_target() {
    let (failing, healthy) = (Upstream::start("failing"), Upstream::start("healthy"));
    failing.set_status(503);
    let gateway = retrying_gateway(
        &[&failing, &healthy],
        "attempts: 1, on: [connect_failure, 503], backoff: 1ms",
    );

    for _ in 0..20 {
        let response = gateway.get("/");
        assert_eq!(response.status, 200, "{response:?}");
        assert_eq!(response.body, "healthy");
    }
    assert!(
        failing.requests() > 0,
        "round robin sent nothing to the failing target"
    );
    assert_eq!(retries(&gateway, "503"), failing.requests() as f64);
    // A retried request reaches the healthy target with its method and path intact.
    let put = gateway.request("PUT", "/items/7", &[]);
    assert_eq!(put.status, 200);
    assert_eq!(healthy.last_request().path, "/items/7");
}

#[test]
fn a_post_is_retried_only_with_an_idempotency_key() {
    let (failing, healthy) = (Upstream::start("failing"), Upstream::start("healthy"));
    failing.set_status(503);
    let gateway = retrying_gateway(&[&failing, &healthy], "attempts: 2, on: [503]");

    let plain: Vec<u16> = (0..20)
        .map(|_| gateway.request("POST", "/orders", &[]).status)
        .collect();
    assert!(plain.contains(&503), "a POST was retried: {plain:?}");
    assert_eq!(failing.requests() + healthy.requests(), 20);
    assert_eq!(retries(&gateway, "503"), 0.0);

    for i in 0..20 {
        let key = format!("order-{i}");
        let keyed = gateway.request("POST", "/orders", &[("Idempotency-Key", &key)]);
        assert_eq!(keyed.status, 200, "{keyed:?}");
    }
    assert!(retries(&gateway, "503") > 0.0);
}

#[test]
fn retries_against_a_failing_upstream_stay_within_the_budget() {
    let (first, second) = (Upstream::start("first"), Upstream::start("second"));
    first.set_status(502);
    second.set_status(502);
    let gateway = retrying_gateway(
        &[&first, &second],
        "attempts: 3, on: [502], budget_percent: 20",
    );

    let requests = 300;
    for _ in 0..requests {
        assert_eq!(gateway.get("/").status, 502);
    }

    let sent = first.requests() + second.requests();
    let retried = sent - requests;
    // 20% of the requests plus the reserve of 10; without a budget it would be 3 × 300.
    assert!(
        retried <= requests / 5 + 10,
        "{retried} retries for {requests} requests"
    );
    assert!(
        retried >= requests / 5,
        "the budget allows {} retries",
        requests / 5
    );
    assert_eq!(retries(&gateway, "502"), retried as f64);
}
