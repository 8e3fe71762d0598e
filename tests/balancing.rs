//! The load-aware balancers: `least_request` (power of two choices on requests in
//! flight) and `peak_ewma` (power of two choices on latency × in flight).

mod common;

use std::thread;
use std::time::Duration;

use common::{eventually, Gateway, OneRoute, Upstream};

/// `upstreams.app` over `first` and `second` with `load_balancing: algorithm`.
fn balancing_gateway(algorithm: &str, first: &Upstream, second: &Upstream) -> Gateway {
    Gateway::start(
        &OneRoute::to(&[first, second])
            .upstream(&format!("load_balancing: {algorithm}"))
            .yaml(),
    )
}

#[test]
fn least_request_prefers_the_idle_target() {
    let (idle, busy) = (Upstream::start("idle"), Upstream::start("busy"));
    let gateway = balancing_gateway("least_request", &idle, &busy);
    // Requests to `busy` hang for longer than the test needs (on a loaded machine too);
    // keep sending until one is in flight there (those that land on `idle` return at
    // once).
    busy.set_delay(Duration::from_secs(8));
    let url = gateway.url("/");
    let mut holders: Vec<thread::JoinHandle<()>> = Vec::new();
    eventually!(
        {
            let url = url.clone();
            holders.push(thread::spawn(move || {
                let _ = common::http_agent().get(&url).call();
            }));
            busy.requests() >= 1
        },
        "no request reached the busy target"
    );
    // Holders that went to `idle` may still be in flight there; a tie would let the busy
    // target win a draw. Wait until only the held requests remain.
    eventually!(
        holders.iter().filter(|h| !h.is_finished()).count() == busy.requests()
            && gateway.target_status("app", &idle.addr())["in_flight"] == 0,
        "requests to the idle target did not finish"
    );

    for _ in 0..20 {
        assert_eq!(gateway.get("/").body, "idle");
    }
    // The held requests end on their own; nothing here waits for them.
    drop(holders);
}

#[test]
fn peak_ewma_moves_traffic_away_from_a_target_that_became_slower() {
    let (steady, slowed) = (Upstream::start("steady"), Upstream::start("slowed"));
    let gateway = balancing_gateway("peak_ewma", &steady, &slowed);
    for _ in 0..40 {
        assert_eq!(gateway.get("/").status, 200);
    }
    assert!(
        slowed.requests() > 0,
        "both targets serve while equally fast"
    );

    slowed.set_delay(Duration::from_millis(50));
    let before = slowed.requests();
    for _ in 0..100 {
        assert_eq!(gateway.get("/").status, 200);
    }
    let after = slowed.requests() - before;
    assert!(
        after <= 5,
        "the 50 ms slower target still got {after} of 100 requests"
    );
}
