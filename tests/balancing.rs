//! The load-aware balancers: `least_request` (power of two choices on requests in
//! flight) and `peak_ewma` (power of two choices on latency × in flight).

mod common;

use std::thread;
use std::time::Duration;

use common::{wait_until, Gateway, Upstream, EVENTUALLY};

/// `upstreams.app` over `idle` and `busy` with `load_balancing: algorithm`.
fn config(algorithm: &str, first: &Upstream, second: &Upstream) -> String {
    format!(
        r#"
upstreams:
  app:
    load_balancing: {algorithm}
    targets: [{{ address: "{}" }}, {{ address: "{}" }}]
routes:
  - name: all
    match: {{ path_prefix: / }}
    upstream: app
"#,
        first.addr(),
        second.addr()
    )
}

#[test]
fn least_request_prefers_the_idle_target() {
    let (idle, busy) = (Upstream::start("idle"), Upstream::start("busy"));
    let gateway = Gateway::start(&config("least_request", &idle, &busy));
    // Requests to `busy` hang for longer than the test needs (on a loaded machine too);
    // keep sending until one is in flight there (those that land on `idle` return at
    // once).
    busy.set_delay(Duration::from_secs(8));
    let url = gateway.url("/");
    let mut holders: Vec<thread::JoinHandle<()>> = Vec::new();
    let held = wait_until(EVENTUALLY, || {
        let url = url.clone();
        holders.push(thread::spawn(move || {
            let _ = common::http_agent().get(&url).call();
        }));
        busy.requests() >= 1
    });
    assert!(held, "no request reached the busy target");
    // Holders that went to `idle` may still be in flight there; a tie would let the busy
    // target win a draw. Wait until only the held requests remain.
    let settled = wait_until(EVENTUALLY, || {
        let running = holders.iter().filter(|h| !h.is_finished()).count();
        let status = gateway.status_json();
        let idle_in_flight = status["upstreams"]["app"]["targets"]
            .as_array()
            .and_then(|targets| {
                targets
                    .iter()
                    .find(|t| t["address"].as_str() == Some(idle.addr().as_str()))
            })
            .and_then(|t| t["in_flight"].as_u64());
        running == busy.requests() && idle_in_flight == Some(0)
    });
    assert!(settled, "requests to the idle target did not finish");

    for _ in 0..20 {
        assert_eq!(gateway.get("/").body, "idle");
    }
    // The held requests end on their own; nothing here waits for them.
    drop(holders);
}

#[test]
fn peak_ewma_moves_traffic_away_from_a_target_that_became_slower() {
    let (steady, slowed) = (Upstream::start("steady"), Upstream::start("slowed"));
    let gateway = Gateway::start(&config("peak_ewma", &steady, &slowed));
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
