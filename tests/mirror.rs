//! Request mirroring (`routes[].mirror`): a sampled share of the accepted requests is
//! copied to another pool, marked `X-Portcullis-Mirror: 1`, fire and forget; a dead or
//! slow mirror costs the client nothing.

mod common;

use std::time::{Duration, Instant};

use common::{http_agent, send, send_body, Gateway, Upstream};

fn pool(name: &str, upstream: &Upstream) -> String {
    format!(
        "  {name}:\n    targets: [{{ address: \"{}\" }}]\n    timeouts: {{ read: 10s }}\n",
        upstream.addr()
    )
}

fn route(name: &str, mirror: &str) -> String {
    format!(
        "  - name: {name}\n    match: {{ path_prefix: /{name} }}\n    upstream: app\n    mirror: {mirror}\n"
    )
}

/// The `result` counter of `route`'s mirror, 0 when it has no sample yet.
fn mirrored(gateway: &Gateway, route: &str, result: &str) -> f64 {
    gateway
        .metric(
            "portcullis_mirror_requests_total",
            &[("route", route), ("result", result)],
        )
        .unwrap_or(0.0)
}

/// Waits until `count` copies of `route` are accounted for (sent or failed).
fn wait_for_copies(gateway: &Gateway, route: &str, count: f64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let done = mirrored(gateway, route, "sent") + mirrored(gateway, route, "failed");
        if done >= count || Instant::now() > deadline {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_tenth_of_the_requests_reach_the_mirror_marked_and_with_their_body() {
    let app = Upstream::start("app");
    let shadow = Upstream::start("shadow");
    let config = format!(
        "upstreams:\n{}{}routes:\n{}{}{}",
        pool("app", &app),
        pool("shadow", &shadow),
        route("sampled", "{ upstream: shadow, percent: 10 }"),
        route("all", "{ upstream: shadow, percent: 100, max_body: 1KiB }"),
        "  - name: guarded\n    match: { path_prefix: /guarded }\n    upstream: app\n    mirror: { upstream: shadow, percent: 100 }\n    plugins: { key_auth: {} }\n",
    );
    let gateway = Gateway::start(&config);
    let agent = http_agent();

    let spoofed = [("X-Portcullis-Mirror", "1")];
    for i in 0..2000 {
        let response = send(
            &agent,
            "GET",
            &gateway.url(&format!("/sampled/{i}")),
            &spoofed,
        );
        assert_eq!(response.status, 200);
    }
    let sent = mirrored(&gateway, "sampled", "sent");
    wait_for_copies(&gateway, "sampled", sent);
    let copies = shadow.requests();
    assert!(
        (160..=240).contains(&copies),
        "10% of 2000 is 200 ± 40, the mirror got {copies}"
    );
    assert_eq!(mirrored(&gateway, "sampled", "sent"), copies as f64);
    let copy = shadow.last_request();
    assert_eq!(copy.header("X-Portcullis-Mirror"), Some("1"));
    assert!(copy.path.starts_with("/sampled/"), "{copy:?}");
    assert_eq!(
        app.last_request().header("X-Portcullis-Mirror"),
        None,
        "a client's copy never reaches the primary"
    );
    assert_eq!(copy.header_values("X-Portcullis-Mirror"), ["1"]);

    let before = shadow.requests();
    let posted = send_body(
        &agent,
        "POST",
        &gateway.url("/all/orders?x=1"),
        &[],
        "{\"id\": 7}",
    );
    assert_eq!(posted.status, 200);
    let large = "x".repeat(4096);
    let too_large = send_body(&agent, "POST", &gateway.url("/all/big"), &[], &large);
    assert_eq!(
        too_large.status, 200,
        "the primary gets a body the mirror does not"
    );
    assert_eq!(app.last_request().body.len(), 4096);
    wait_for_copies(&gateway, "all", 1.0);
    let copy = shadow.last_request();
    assert_eq!(
        shadow.requests(),
        before + 1,
        "only the small body is mirrored"
    );
    assert_eq!(
        (copy.method.as_str(), copy.path.as_str()),
        ("POST", "/all/orders?x=1")
    );
    assert_eq!(copy.body, "{\"id\": 7}");
    assert_eq!(mirrored(&gateway, "all", "too_large"), 1.0);

    // A request the plugins refuse is not mirrored.
    let refused = send(&agent, "GET", &gateway.url("/guarded"), &[]);
    assert_eq!(refused.status, 401);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(shadow.requests(), before + 1);
    assert_eq!(mirrored(&gateway, "guarded", "sent"), 0.0);
}

/// The 99th percentile of the GETs of each of `paths`, sent in turn `count` times (so
/// that the machine's noise falls on every path alike); every answer must be 200.
fn p99s<const N: usize>(
    gateway: &Gateway,
    agent: &ureq::Agent,
    paths: [&str; N],
    count: usize,
) -> [Duration; N] {
    let mut times: [Vec<Duration>; N] = std::array::from_fn(|_| Vec::with_capacity(count));
    for _ in 0..count {
        for (path, times) in paths.iter().zip(times.iter_mut()) {
            let started = Instant::now();
            let response = send(agent, "GET", &gateway.url(path), &[]);
            assert_eq!(response.status, 200, "{path}: {response:?}");
            times.push(started.elapsed());
        }
    }
    times.map(|mut times| {
        times.sort();
        times[count * 99 / 100]
    })
}

#[test]
fn a_dead_or_slow_mirror_adds_no_latency_and_no_failure() {
    let app = Upstream::start("app");
    let dead = Upstream::start("dead");
    dead.stop();
    let slow = Upstream::start("slow");
    slow.set_delay(Duration::from_secs(5));
    let config = format!(
        "upstreams:\n{}{}{}routes:\n{}{}{}",
        pool("app", &app),
        pool("dead", &dead),
        pool("slow", &slow),
        route("plain", "{ upstream: app, percent: 0 }"),
        route("dead", "{ upstream: dead, percent: 100 }"),
        route(
            "slow",
            "{ upstream: slow, percent: 100, max_in_flight: 16 }"
        ),
    );
    let gateway = Gateway::start(&config);
    let agent = http_agent();
    p99s(&gateway, &agent, ["/plain"], 50); // warm up

    let [baseline, with_dead, with_slow] =
        p99s(&gateway, &agent, ["/plain", "/dead", "/slow"], 300);
    let bound = baseline * 2 + Duration::from_millis(50);
    println!("p99: plain {baseline:?}, dead mirror {with_dead:?}, slow mirror {with_slow:?}");
    assert!(
        with_dead < bound,
        "dead mirror: p99 {with_dead:?} vs {baseline:?}"
    );
    assert!(
        with_slow < bound,
        "slow mirror: p99 {with_slow:?} vs {baseline:?}"
    );

    wait_for_copies(&gateway, "dead", 300.0);
    assert_eq!(mirrored(&gateway, "dead", "failed"), 300.0);
    assert_eq!(
        mirrored(&gateway, "slow", "dropped"),
        300.0 - 16.0,
        "16 in flight at most"
    );
    assert_eq!(
        mirrored(&gateway, "slow", "sent"),
        0.0,
        "still waiting on the slow mirror"
    );
}

#[test]
fn a_bad_mirror_is_refused_with_field_paths_and_the_old_config_keeps_serving() {
    let app = Upstream::start("app");
    let good = format!(
        "upstreams:\n{}routes:\n{}",
        pool("app", &app),
        route("orders", "{ upstream: app, percent: 1 }")
    );
    let gateway = Gateway::start(&good);
    let bad = format!(
        "upstreams:\n{}routes:\n{}",
        pool("app", &app),
        route(
            "orders",
            "{ upstream: nowhere, percent: 100.5, max_in_flight: 0, sticky_on: \"header:\" }"
        )
    );
    gateway.rewrite_config(&bad);
    let refused = gateway.admin_post("/reload", &[], "");
    assert_ne!(refused.status, 200, "{refused:?}");
    for path in [
        "routes[0].mirror.upstream",
        "routes[0].mirror.percent",
        "routes[0].mirror.max_in_flight",
        "routes[0].mirror.sticky_on",
    ] {
        assert!(refused.body.contains(path), "no {path} in {}", refused.body);
    }
    assert_eq!(
        gateway.get("/orders").status,
        200,
        "the old config keeps serving"
    );
}
