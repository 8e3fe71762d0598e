//! `backend: redis`: gateway processes sharing one real `redis-server` enforce one limit
//! together; when Redis goes away, `on_error: allow` lets traffic through (counted) and
//! limits come back with Redis, and `on_error: deny` answers 503. A Redis Cluster URL
//! works the same.

mod common;

use common::{
    assert_gateway_error, eventually, Gateway, OneRoute, RedisCluster, RedisServer, Upstream,
};

/// A gateway whose route `api` has one Redis-backed rule keyed on `global`.
fn redis_gateway(app: &Upstream, redis_url: &str, on_error: &str, rule: &str) -> Gateway {
    Gateway::start(
        &OneRoute::to(&[app])
            .section(&format!(
                "redis:\n  url: {redis_url}\n  timeout: 500ms\n  on_error: {on_error}"
            ))
            .section(&format!("plugins:\n  rate_limit:\n    - {rule}"))
            .named("api")
            .yaml(),
    )
}

fn passed(gateway: &Gateway, count: usize) -> usize {
    (0..count)
        .filter(|_| gateway.get("/items").status == 200)
        .count()
}

#[test]
fn two_gateways_share_one_limit() {
    let redis = RedisServer::start();
    let app = Upstream::start("app");
    let rule = "{ name: shared, key: global, algorithm: sliding_window, limit: 100, window: 1m, backend: redis }";
    let first = redis_gateway(&app, &redis.url(), "deny", rule);
    let second = redis_gateway(&app, &redis.url(), "deny", rule);

    let total: usize = (0..75)
        .map(|_| passed(&first, 1) + passed(&second, 1))
        .sum();

    assert_eq!(
        total, 100,
        "150 requests over two gateways against one limit of 100"
    );
    let refused = first.get("/items");
    assert_gateway_error(&refused, 429, "RATE_LIMITED");
    assert!(refused.header("Retry-After").is_some(), "{refused:?}");
    assert_eq!(
        refused.header("RateLimit-Policy"),
        Some("\"shared\";q=100;w=60")
    );
}

#[test]
fn token_bucket_in_redis_lets_exactly_burst_through() {
    let redis = RedisServer::start();
    let app = Upstream::start("app");
    let rule = "{ name: bucket, key: 'header:X-Client', algorithm: token_bucket, rate: 1, per: 1m, burst: 4, backend: redis }";
    let gateway = redis_gateway(&app, &redis.url(), "deny", rule);

    let statuses: Vec<u16> = (0..6)
        .map(|_| gateway.request("GET", "/", &[("X-Client", "a")]).status)
        .collect();
    let other = gateway.request("GET", "/", &[("X-Client", "b")]);

    assert_eq!(statuses, [200, 200, 200, 200, 429, 429]);
    assert_eq!(other.status, 200);
    assert_eq!(other.header("X-RateLimit-Remaining"), Some("3"));
}

#[test]
fn redis_going_away_fails_open_and_limits_return_with_it() {
    let mut redis = RedisServer::start();
    let app = Upstream::start("app");
    let rule = "{ name: shared, key: global, algorithm: sliding_window, limit: 5, window: 1m, backend: redis }";
    let gateway = redis_gateway(&app, &redis.url(), "allow", rule);
    assert_eq!(passed(&gateway, 8), 5);

    redis.kill();
    assert_eq!(
        passed(&gateway, 10),
        10,
        "fail open: traffic goes on without Redis"
    );
    let errors = gateway
        .metric(
            "portcullis_rate_limit_backend_errors_total",
            &[("backend", "redis")],
        )
        .unwrap_or(0.0);
    assert!(errors >= 10.0, "backend errors counted: {errors}");

    redis.restart();
    eventually!(
        gateway.get("/items").status == 429,
        "the limit was not enforced again after Redis came back"
    );
}

#[test]
fn on_error_deny_answers_503_when_redis_is_down() {
    let mut redis = RedisServer::start();
    let url = redis.url();
    redis.kill();
    let app = Upstream::start("app");
    let rule = "{ name: shared, key: global, algorithm: token_bucket, rate: 10, backend: redis }";
    let gateway = redis_gateway(&app, &url, "deny", rule);

    let response = gateway.get("/items");

    assert_gateway_error(&response, 503, "RATE_LIMIT_BACKEND_DOWN");
    assert_eq!(app.requests(), 0);
}

#[test]
fn a_redis_cluster_holds_the_counters_of_keys_on_every_slot() {
    let cluster = RedisCluster::start();
    let app = Upstream::start("app");
    let rule = "{ name: bucket, key: 'header:X-Client', algorithm: token_bucket, rate: 1, per: 1m, burst: 3, backend: redis }";
    let gateway = redis_gateway(&app, &cluster.url(), "deny", rule);

    // Twenty clients: their keys hash to slots on all three nodes.
    for client in 0..20 {
        let client = format!("client-{client}");
        let statuses: Vec<u16> = (0..4)
            .map(|_| gateway.request("GET", "/", &[("X-Client", &client)]).status)
            .collect();
        assert_eq!(statuses, [200, 200, 200, 429], "client {client}");
    }
}

/// Client `a` in region `r1`, then `r2`, then `r3`: the per-client bucket holds 4, each
/// region's window 2. The requests a full region refuses must leave the client's bucket
/// alone: 2 pass in r1, 2 in r2 (not 0), none in r3.
fn assert_refusals_are_not_counted(gateway: &Gateway) {
    let statuses = |region: &str| -> Vec<u16> {
        (0..5)
            .map(|_| {
                gateway
                    .request("GET", "/", &[("X-Client", "a"), ("X-Region", region)])
                    .status
            })
            .collect()
    };
    assert_eq!(statuses("r1"), [200, 200, 429, 429, 429], "region r1");
    assert_eq!(statuses("r2"), [200, 200, 429, 429, 429], "region r2");
    let refused = gateway.request("GET", "/", &[("X-Client", "a"), ("X-Region", "r3")]);
    assert_gateway_error(&refused, 429, "RATE_LIMITED");
    assert!(
        refused.json()["error"]["message"]
            .as_str()
            .is_some_and(|message| message.contains("per-client")),
        "the client's own bucket is empty now: {refused:?}"
    );
}

const PER_CLIENT: &str = "{ name: per-client, key: 'header:X-Client', algorithm: token_bucket, rate: 1, per: 1h, burst: 4, backend: redis }";
const PER_REGION: &str = "{ name: per-region, key: 'header:X-Region', algorithm: sliding_window, limit: 2, window: 1h, backend: redis }";

#[test]
fn a_request_refused_by_one_redis_rule_is_counted_by_none() {
    let redis = RedisServer::start();
    let app = Upstream::start("app");
    let rules = format!("{PER_CLIENT}\n    - {PER_REGION}");
    let gateway = redis_gateway(&app, &redis.url(), "deny", &rules);
    assert_refusals_are_not_counted(&gateway);
}

#[test]
fn a_request_refused_by_redis_gives_back_its_local_counts() {
    let redis = RedisServer::start();
    let app = Upstream::start("app");
    let local_client = PER_CLIENT.replace(", backend: redis", "");
    let rules = format!("{local_client}\n    - {PER_REGION}");
    let gateway = redis_gateway(&app, &redis.url(), "deny", &rules);
    assert_refusals_are_not_counted(&gateway);
}

#[test]
fn on_a_redis_cluster_a_later_rules_refusal_is_given_back() {
    let cluster = RedisCluster::start();
    let app = Upstream::start("app");
    let rules = format!("{PER_CLIENT}\n    - {PER_REGION}");
    let gateway = redis_gateway(&app, &cluster.url(), "deny", &rules);
    assert_refusals_are_not_counted(&gateway);
}
