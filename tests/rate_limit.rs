//! Rate and concurrency limits with real traffic through the real binary: exact bursts,
//! refill, the sliding window across its boundary, per-client isolation, the headers,
//! Retry-After, and in-flight caps released however a request ends.
//!
//! Every test client connects from 127.0.0.1, so clients are told apart by a header
//! (`key: header:X-Client`).

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use common::{
    assert_gateway_error, eventually, Gateway, HttpResponse, OneRoute, Upstream, PING_ROUTE,
};

/// Route `api` proxying everything to `app`, with `plugins` (a YAML flow mapping).
fn limited_route(app: &Upstream, plugins: &str) -> OneRoute {
    OneRoute::to(&[app])
        .named("api")
        .route(&format!("plugins: {plugins}"))
}

fn limited_gateway(app: &Upstream, plugins: &str) -> Gateway {
    Gateway::start(&limited_route(app, plugins).yaml())
}

/// Plugins with one `rate_limit` rule, `per-client` on header X-Client, limited by `limit`.
fn per_client(limit: &str) -> String {
    format!("{{ rate_limit: [{{ name: per-client, key: 'header:X-Client', {limit} }}] }}")
}

fn as_client(gateway: &Gateway, client: &str) -> HttpResponse {
    gateway.request("GET", "/items", &[("X-Client", client)])
}

fn statuses(gateway: &Gateway, client: &str, count: usize) -> Vec<u16> {
    (0..count)
        .map(|_| as_client(gateway, client).status)
        .collect()
}

fn header_number(response: &HttpResponse, name: &str) -> u64 {
    response
        .header(name)
        .unwrap_or_else(|| panic!("no {name}: {response:?}"))
        .parse()
        .unwrap_or_else(|e| panic!("{name} is not a number ({e}): {response:?}"))
}

#[test]
fn token_bucket_lets_exactly_burst_through_then_rate_per_period() {
    let app = Upstream::start("app");
    let gateway = limited_gateway(
        &app,
        &per_client("algorithm: token_bucket, rate: 1, per: 2s, burst: 5"),
    );

    let first = statuses(&gateway, "a", 8);

    assert_eq!(first, [200, 200, 200, 200, 200, 429, 429, 429]);
    assert_eq!(
        app.requests(),
        5,
        "refused requests never reach the upstream"
    );
    let refused = as_client(&gateway, "a");
    assert_gateway_error(&refused, 429, "RATE_LIMITED");
    let retry_after = header_number(&refused, "Retry-After");
    assert_eq!(retry_after, 2, "one token per 2s: {refused:?}");
    assert_eq!(refused.json()["error"]["retry_after"], 2, "{refused:?}");

    // A client honouring Retry-After gets through, once: one token came back.
    thread::sleep(Duration::from_secs(retry_after));
    assert_eq!(statuses(&gateway, "a", 2), [200, 429]);
}

#[test]
fn headers_count_down_remaining_and_reset_counts_to_the_refill() {
    let app = Upstream::start("app");
    let gateway = limited_gateway(
        &app,
        &per_client("algorithm: token_bucket, rate: 1, per: 10s, burst: 3"),
    );

    let responses: Vec<HttpResponse> = (0..4).map(|_| as_client(&gateway, "a")).collect();

    let remaining: Vec<u64> = responses
        .iter()
        .map(|r| header_number(r, "X-RateLimit-Remaining"))
        .collect();
    assert_eq!(remaining, [2, 1, 0, 0]);
    let reset: Vec<u64> = responses
        .iter()
        .map(|r| header_number(r, "X-RateLimit-Reset"))
        .collect();
    assert_eq!(
        reset,
        [10, 20, 30, 30],
        "seconds until the bucket is full again"
    );
    for response in &responses {
        assert_eq!(
            header_number(response, "X-RateLimit-Limit"),
            1,
            "{response:?}"
        );
        assert_eq!(
            response.header("RateLimit-Policy"),
            Some("\"per-client\";q=1;w=10"),
            "{response:?}"
        );
    }
    assert_eq!(
        responses[1].header("RateLimit"),
        Some("\"per-client\";r=1;t=20")
    );
    assert_eq!(responses[3].status, 429);
    assert_eq!(header_number(&responses[3], "Retry-After"), 10);
}

#[test]
fn the_rule_closest_to_its_limit_drives_the_headers() {
    let app = Upstream::start("app");
    let gateway = limited_gateway(
        &app,
        "{ rate_limit: [\
         { name: route-wide, key: route, algorithm: sliding_window, limit: 1000, window: 1m }, \
         { name: per-client, key: 'header:X-Client', algorithm: sliding_window, limit: 2, window: 1m }] }",
    );

    let first = as_client(&gateway, "a");
    let second = as_client(&gateway, "a");
    let third = as_client(&gateway, "a");
    let other = as_client(&gateway, "b");

    assert_eq!(
        first.header("RateLimit-Policy"),
        Some("\"per-client\";q=2;w=60")
    );
    assert_eq!(header_number(&first, "X-RateLimit-Remaining"), 1);
    assert_eq!(header_number(&second, "X-RateLimit-Remaining"), 0);
    assert_gateway_error(&third, 429, "RATE_LIMITED");
    assert_eq!(
        third.header("RateLimit-Policy"),
        Some("\"per-client\";q=2;w=60")
    );
    assert_eq!(
        other.status, 200,
        "another client has its own count: {other:?}"
    );
    assert_eq!(
        gateway.metric(
            "portcullis_rate_limited_total",
            &[("route", "api"), ("rule", "per-client")]
        ),
        Some(1.0)
    );
    let log = gateway.wait_for_access_log(4);
    let refused: Vec<_> = log.iter().filter(|line| line["status"] == 429).collect();
    assert_eq!(refused.len(), 1, "{log:?}");
    assert_eq!(refused[0]["rate_limit"], "per-client");
    assert_eq!(refused[0]["error"], "RATE_LIMITED");
}

#[test]
fn clients_are_limited_apart_and_a_request_without_the_key_by_its_address() {
    let app = Upstream::start("app");
    let gateway = limited_gateway(
        &app,
        &per_client("algorithm: token_bucket, rate: 1, per: 1m, burst: 2"),
    );

    assert_eq!(statuses(&gateway, "a", 3), [200, 200, 429]);
    assert_eq!(statuses(&gateway, "b", 3), [200, 200, 429]);
    let anonymous: Vec<u16> = (0..3).map(|_| gateway.get("/items").status).collect();
    assert_eq!(anonymous, [200, 200, 429]);
}

#[test]
fn sliding_window_allows_no_second_burst_after_the_window_boundary() {
    let app = Upstream::start("app");
    let gateway = limited_gateway(
        &app,
        &per_client("algorithm: sliding_window, limit: 10, window: 2s"),
    );

    assert_eq!(
        statuses(&gateway, "a", 11)
            .iter()
            .filter(|s| **s == 200)
            .count(),
        10
    );
    // Wait for the first request to pass again: the window has moved on. A fixed window
    // would now let a whole new burst of 10 through at once.
    let started = Instant::now();
    eventually!(
        within(Duration::from_secs(8)),
        as_client(&gateway, "a").status == 200,
        "nothing passed for {:?}",
        started.elapsed()
    );
    let burst = statuses(&gateway, "a", 10);

    let passed = burst.iter().filter(|s| **s == 200).count();
    assert!(
        passed <= 1,
        "a second burst got through after the boundary: {burst:?}"
    );
}

#[test]
fn concurrency_limit_caps_requests_in_flight_and_frees_slots() {
    let app = Upstream::start("app");
    app.set_delay(Duration::from_secs(2));
    let gateway = limited_gateway(&app, "{ concurrency_limit: { key: route, max: 3 } }");

    let responses = gateway.get_concurrently("/slow", 10);

    let ok = responses.iter().filter(|r| r.status == 200).count();
    assert_eq!(ok, 3, "{responses:?}");
    for refused in responses.iter().filter(|r| r.status != 200) {
        assert_gateway_error(refused, 429, "CONCURRENCY_LIMITED");
    }
    assert_eq!(app.max_in_flight(), 3);
    // Every slot is free again once the requests are over.
    app.set_delay(Duration::ZERO);
    assert_eq!(gateway.get("/fast").status, 200);
}

#[test]
fn concurrency_slots_are_released_when_clients_disconnect() {
    let app = Upstream::start("app");
    app.set_delay(Duration::from_secs(30));
    let gateway = limited_gateway(&app, "{ concurrency_limit: { key: route, max: 2 } }");
    let mut hung: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut stream = TcpStream::connect(gateway.addr()).expect("connect");
            stream
                .write_all(b"GET /slow HTTP/1.1\r\nHost: localhost\r\n\r\n")
                .expect("send");
            stream
        })
        .collect();
    eventually!(
        app.requests() == 2,
        "the two hung requests should reach the upstream"
    );
    assert_gateway_error(&gateway.get("/probe"), 429, "CONCURRENCY_LIMITED");

    hung.clear();
    app.set_delay(Duration::ZERO);

    eventually!(
        gateway.get("/after").status == 200,
        "slots were not released after the clients disconnected"
    );
}

#[test]
fn counters_survive_a_reload_that_keeps_the_rule_and_restart_when_it_changes() {
    let app = Upstream::start("app");
    let route = |burst: u32| {
        let limit = format!("algorithm: token_bucket, rate: 1, per: 1m, burst: {burst}");
        limited_route(&app, &per_client(&limit))
    };
    let gateway = Gateway::start(&route(2).yaml());
    assert_eq!(statuses(&gateway, "a", 2), [200, 200]);

    gateway.rewrite_config(&route(2).routes_before(PING_ROUTE).yaml());
    gateway.reload();
    assert_eq!(
        gateway.get("/ping").body,
        "pong",
        "the new configuration is in force"
    );
    assert_eq!(statuses(&gateway, "a", 1), [429], "the bucket was kept");

    gateway.rewrite_config(&route(3).yaml());
    gateway.reload();
    assert_eq!(
        statuses(&gateway, "a", 4),
        [200, 200, 200, 429],
        "a changed rule starts afresh"
    );
}
