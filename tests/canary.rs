//! Canary routing: the share of traffic, stickiness, the superset property when the
//! weight grows (across a reload), the force header, and what the upstream, the metrics
//! and the access log see.

mod common;

use common::{eventually, Gateway, Upstream};

/// A gateway whose route `api` splits between `stable` and `canary`; `canary_yaml` is
/// the body of `routes[0].canary` (weight, sticky_on, ...), on one line.
fn canary_config(stable: &Upstream, canary: &Upstream, canary_yaml: &str) -> String {
    format!(
        r#"
upstreams:
  stable:
    targets: [{{ address: "{}" }}]
  canary:
    targets: [{{ address: "{}" }}]
routes:
  - name: api
    match: {{ path_prefix: / }}
    upstream: stable
    canary: {{ upstream: canary, {canary_yaml} }}
"#,
        stable.addr(),
        canary.addr()
    )
}

/// `config` with quick TCP health checks on the canary pool.
fn with_canary_health_check(config: &str) -> String {
    config.replace(
        "  canary:\n    targets",
        "  canary:\n    health_check: { type: tcp, interval: 100ms, healthy_threshold: 1, unhealthy_threshold: 1 }\n    targets",
    )
}

/// Sends one GET as user `user` (header `X-User`) and says whether the canary served it.
fn served_by_canary(gateway: &Gateway, user: &str) -> bool {
    let response = gateway.request("GET", "/", &[("X-User", user)]);
    assert_eq!(response.status, 200, "{response:?}");
    match response.body.as_str() {
        "canary" => true,
        "stable" => false,
        other => panic!("unexpected answer {other:?}"),
    }
}

#[test]
fn ten_percent_of_users_go_to_the_canary_and_upstreams_see_the_variant() {
    let (stable, canary) = (Upstream::start("stable"), Upstream::start("canary"));
    let gateway = Gateway::start(&canary_config(
        &stable,
        &canary,
        "weight: 10, sticky_on: \"header:X-User\"",
    ));

    let total = 5000;
    let to_canary = (0..total)
        .filter(|i| served_by_canary(&gateway, &format!("user-{i}")))
        .count();

    let share = to_canary as f64 / total as f64;
    assert!((0.08..=0.12).contains(&share), "canary share {share}");
    assert_eq!(canary.requests(), to_canary);
    assert_eq!(
        canary.last_request().header("X-Portcullis-Variant"),
        Some("canary")
    );
    assert_eq!(
        stable.last_request().header("X-Portcullis-Variant"),
        Some("stable")
    );
    let counted = |variant: &str| {
        gateway
            .metric(
                "portcullis_requests_total",
                &[("route", "api"), ("variant", variant), ("status", "200")],
            )
            .unwrap_or(0.0) as usize
    };
    assert_eq!(counted("canary"), to_canary);
    assert_eq!(counted("stable"), total - to_canary);
    let log = gateway.wait_for_access_log(total);
    let logged_canary = log
        .iter()
        .filter(|line| line["variant"] == "canary")
        .count();
    assert_eq!(logged_canary, to_canary);
}

#[test]
fn a_user_stays_on_one_variant_and_raising_the_weight_keeps_the_canary_users() {
    let (stable, canary) = (Upstream::start("stable"), Upstream::start("canary"));
    let gateway = Gateway::start(&canary_config(
        &stable,
        &canary,
        "weight: 5, sticky_on: \"cookie:session\"",
    ));
    let users: Vec<String> = (0..1000).map(|i| format!("session={i}-abc")).collect();
    let variant = |cookie: &str| {
        let response = gateway.request("GET", "/", &[("Cookie", cookie)]);
        assert_eq!(response.status, 200, "{response:?}");
        response.body == "canary"
    };
    let at_five: Vec<bool> = users.iter().map(|user| variant(user)).collect();
    for (user, first) in users.iter().zip(&at_five).take(100) {
        assert_eq!(variant(user), *first, "{user} changed variant");
    }

    gateway.rewrite_config(&canary_config(
        &stable,
        &canary,
        "weight: 10, sticky_on: \"cookie:session\"",
    ));
    gateway.reload();
    let at_ten: Vec<bool> = users.iter().map(|user| variant(user)).collect();

    let count = |v: &[bool]| v.iter().filter(|canary| **canary).count();
    assert!(count(&at_five) > 20 && count(&at_ten) > count(&at_five));
    for (user, (five, ten)) in users.iter().zip(at_five.iter().zip(&at_ten)) {
        assert!(!five || *ten, "{user} was canary at 5% but not at 10%");
    }
}

#[test]
fn the_force_header_overrides_the_split() {
    let (stable, canary) = (Upstream::start("stable"), Upstream::start("canary"));
    let gateway = Gateway::start(&canary_config(
        &stable,
        &canary,
        "weight: 50, sticky_on: client_ip, force_header: X-Canary",
    ));
    for _ in 0..20 {
        let always = gateway.request("GET", "/", &[("X-Canary", "always")]);
        assert_eq!(always.body, "canary");
        let never = gateway.request("GET", "/", &[("X-Canary", "never")]);
        assert_eq!(never.body, "stable");
    }
    // Without the header, one client IP sticks to one variant.
    let first = gateway.get("/").body;
    assert!((0..20).all(|_| gateway.get("/").body == first));
    assert!(gateway.get("/").header("X-Canary").is_none());
}

#[test]
fn an_unavailable_canary_leaves_its_users_on_stable() {
    let stable = Upstream::start("stable");
    let canary = Upstream::start("canary");
    let config = canary_config(&stable, &canary, "weight: 100");
    canary.stop();
    let gateway = Gateway::start(&with_canary_health_check(&config));
    eventually!(
        gateway.get("/").body == "stable",
        "the unavailable canary still served"
    );
    for _ in 0..10 {
        let response = gateway.get("/");
        assert_eq!(response.body, "stable");
    }
}

/// [`canary_config`] with a cache on the route; both pools answer cacheable responses.
fn cached_canary_config(stable: &Upstream, canary: &Upstream, canary_yaml: &str) -> String {
    for upstream in [stable, canary] {
        upstream.set_header("Cache-Control", "max-age=60");
    }
    canary_config(stable, canary, canary_yaml) + "    cache: { enabled: true }\n"
}

#[test]
fn a_cached_route_keeps_each_variants_answers_apart() {
    let (stable, canary) = (Upstream::start("stable"), Upstream::start("canary"));
    let gateway = Gateway::start(&cached_canary_config(
        &stable,
        &canary,
        "weight: 50, sticky_on: 'header:X-User', force_header: X-Canary",
    ));

    for round in 0..3 {
        let always = gateway.request("GET", "/doc", &[("X-Canary", "always")]);
        let never = gateway.request("GET", "/doc", &[("X-Canary", "never")]);
        assert_eq!(always.body, "canary", "round {round}: {always:?}");
        assert_eq!(never.body, "stable", "round {round}: {never:?}");
        let expected = if round == 0 { "MISS" } else { "HIT" };
        assert_eq!(always.header("X-Cache"), Some(expected), "{always:?}");
        assert_eq!(never.header("X-Cache"), Some(expected), "{never:?}");
    }
    // Sticky users: each sees one variant, answered from that variant's cache entry.
    let bodies: Vec<String> = (0..20)
        .map(|user| {
            let user = format!("user-{user}");
            let first = gateway.request("GET", "/doc", &[("X-User", &user)]).body;
            let again = gateway.request("GET", "/doc", &[("X-User", &user)]).body;
            assert_eq!(first, again, "{user} changed variant");
            first
        })
        .collect();
    assert!(
        bodies.iter().any(|b| b == "canary") && bodies.iter().any(|b| b == "stable"),
        "20 users at 50% all on one variant: {bodies:?}"
    );
    assert_eq!(
        (stable.requests(), canary.requests()),
        (1, 1),
        "one fill per variant"
    );
    let hits = gateway
        .wait_for_access_log(46)
        .into_iter()
        .filter(|line| line["cache"] == "hit" && line["variant"] == "canary")
        .count();
    assert!(hits >= 2, "cache hits are logged with their variant");
}

#[test]
fn a_canary_request_served_by_stable_is_not_stored_as_the_canarys() {
    let (stable, canary) = (Upstream::start("stable"), Upstream::start("canary"));
    let config = cached_canary_config(&stable, &canary, "weight: 100");
    canary.stop();
    let gateway = Gateway::start(&with_canary_health_check(&config));
    eventually!(
        gateway.get("/doc").body == "stable",
        "the unavailable canary still served"
    );
    canary.restart();
    eventually!(
        gateway.get("/doc").body == "canary",
        "once back, the canary's users got the stable answer from the cache"
    );
}
