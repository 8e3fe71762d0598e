//! The edge cache as a client sees it: hits, misses and stale answers driven by the
//! origin's Cache-Control, one upstream request for a burst of misses, stale-if-error,
//! purges, Vary, what is never cached, conditional requests, reloads.

mod common;

use std::time::Duration;

use common::{eventually, extend_section, Gateway, HttpResponse, OneRoute, Upstream, BASE_CONFIG};

/// A gateway with one cached route `/` in front of `app`; `cache` is the route's cache
/// section (YAML flow mapping).
fn cached_gateway(app: &Upstream, cache: &str) -> Gateway {
    Gateway::start(&cached_sections(app, cache))
}

fn cached_sections(app: &Upstream, cache: &str) -> String {
    OneRoute::to(&[app])
        .named("edge")
        .route(&format!("cache: {cache}"))
        .yaml()
}

fn x_cache(response: &HttpResponse) -> &str {
    response.header("X-Cache").unwrap_or("<none>")
}

/// Sends `GET path` until the answer's X-Cache is `want`, and returns that answer.
fn until_x_cache(gateway: &Gateway, path: &str, want: &str) -> HttpResponse {
    eventually!(let response = gateway.get(path);
        x_cache(&response) == want,
        "GET {path} never answered X-Cache {want}: {response:?}"
    )
}

fn purge(gateway: &Gateway, body: &str) -> HttpResponse {
    gateway.admin_post("/cache/purge", &[], body)
}

#[test]
fn origin_cache_control_drives_miss_hit_then_stale_while_revalidating() {
    let app = Upstream::start("app");
    app.set_header("Cache-Control", "max-age=1, stale-while-revalidate=30");
    app.set_body("v1");
    let gateway = cached_gateway(&app, "{ enabled: true }");

    let first = gateway.get("/page");
    let second = gateway.get("/page");

    assert_eq!((first.status, x_cache(&first)), (200, "MISS"), "{first:?}");
    assert_eq!(
        (second.status, x_cache(&second)),
        (200, "HIT"),
        "{second:?}"
    );
    assert_eq!(second.body, "v1");
    assert_eq!(app.requests(), 1, "a hit must not reach the upstream");

    // Once max-age has passed, the stale copy is served while one background request
    // refreshes it.
    app.set_body("v2");
    let stale = until_x_cache(&gateway, "/page", "STALE");
    assert_eq!(stale.body, "v1");
    eventually!(let refreshed = gateway.get("/page");
        x_cache(&refreshed) == "HIT" && refreshed.body == "v2",
        "the background refresh never landed: {refreshed:?}"
    );
    assert_eq!(app.requests(), 2, "one refresh, not one per stale request");

    let hits = gateway.metric(
        "portcullis_cache_requests_total",
        &[("route", "edge"), ("result", "hit")],
    );
    let misses = gateway.metric(
        "portcullis_cache_requests_total",
        &[("route", "edge"), ("result", "miss")],
    );
    assert!(hits.is_some_and(|hits| hits >= 2.0), "hits {hits:?}");
    assert_eq!(misses, Some(1.0));
    let log = gateway.wait_for_access_log(2);
    assert_eq!(log[0]["cache"], "miss", "{log:?}");
    assert_eq!(log[1]["cache"], "hit", "{log:?}");
}

#[test]
fn a_burst_of_misses_for_one_key_sends_one_upstream_request() {
    let app = Upstream::start("app");
    app.set_header("Cache-Control", "max-age=60");
    // Slow enough that every client arrives while the first fetch is in flight.
    app.set_delay(Duration::from_millis(500));
    let gateway = cached_gateway(&app, "{ enabled: true }");

    let responses = gateway.get_concurrently("/burst", 100);

    for response in &responses {
        assert_eq!(response.status, 200, "{response:?}");
        assert_eq!(response.body, "app", "{response:?}");
    }
    assert_eq!(app.requests(), 1, "misses for one key must be coalesced");
}

#[test]
fn stale_response_is_served_while_the_upstream_is_down() {
    let app = Upstream::start("app");
    app.set_header("Cache-Control", "max-age=1");
    app.set_body("saved");
    let gateway = cached_gateway(&app, "{ enabled: true, stale_if_error: 5m }");
    assert_eq!(x_cache(&gateway.get("/doc")), "MISS");

    app.stop();
    let last = until_x_cache(&gateway, "/doc", "STALE");
    assert_eq!((last.status, last.body.as_str()), (200, "saved"));
    let stale_line = eventually!(let stale_line = gateway
            .access_log_lines()
            .into_iter()
            .find(|line| line["cache"] == "stale");
        stale_line.is_some(),
        "no stale line in {}",
        gateway.access_log_text()
    )
    .expect("found above");
    assert_eq!(stale_line["status"], 200, "{stale_line}");
    assert!(stale_line["error"].is_null(), "{stale_line}");

    // Without a stored response, the failure shows.
    let uncached = gateway.get("/other");
    assert_eq!(uncached.status, 502, "{uncached:?}");
}

#[test]
fn stale_response_is_served_when_every_target_is_unhealthy() {
    let app = Upstream::start("app");
    app.set_header("Cache-Control", "max-age=1");
    app.set_body("saved");
    let gateway = Gateway::start(
        &OneRoute::to(&[&app])
            .upstream(
                "health_check: { path: /healthz, interval: 100ms, unhealthy_threshold: 1, \
                 healthy_threshold: 1 }",
            )
            .named("edge")
            .route("cache: { stale_if_error: 1m }")
            .yaml(),
    );
    assert_eq!(x_cache(&gateway.get("/doc")), "MISS");

    app.set_healthy(false);
    eventually!(
        gateway.metric("portcullis_upstream_target_healthy", &[("upstream", "app")]) == Some(0.0),
        "the target never turned unhealthy"
    );
    assert_eq!(until_x_cache(&gateway, "/doc", "STALE").body, "saved");
    let uncached = gateway.get("/other");
    assert_eq!(uncached.status, 503, "{uncached:?}");
}

#[test]
fn upstream_5xx_serves_the_stale_response() {
    let app = Upstream::start("app");
    app.set_header("Cache-Control", "max-age=1, stale-if-error=60");
    app.set_body("good");
    let gateway = cached_gateway(&app, "{ enabled: true }");
    assert_eq!(x_cache(&gateway.get("/doc")), "MISS");

    app.set_status(500);
    app.set_body("broken");
    let last = until_x_cache(&gateway, "/doc", "STALE");
    assert_eq!((last.status, last.body.as_str()), (200, "good"));
}

#[test]
fn purge_by_host_and_path_and_by_prefix() {
    let app = Upstream::start("app");
    app.set_header("Cache-Control", "max-age=300");
    let gateway = cached_gateway(&app, "{ enabled: true }");
    for path in ["/a", "/a?x=1", "/static/one.js", "/static/two.js", "/keep"] {
        assert_eq!(x_cache(&gateway.get(path)), "MISS", "{path}");
        assert_eq!(x_cache(&gateway.get(path)), "HIT", "{path}");
    }

    let purged = purge(&gateway, r#"{"host": "127.0.0.1", "path": "/a"}"#);
    assert_eq!(purged.status, 200, "{purged:?}");
    assert_eq!(purged.json()["purged"], 2, "both query strings of /a");
    assert_eq!(x_cache(&gateway.get("/a")), "MISS");

    let purged = purge(&gateway, r#"{"prefix": "/static/"}"#);
    assert_eq!(purged.json()["purged"], 2, "{purged:?}");
    assert_eq!(x_cache(&gateway.get("/static/one.js")), "MISS");
    assert_eq!(x_cache(&gateway.get("/static/two.js")), "MISS");
    assert_eq!(x_cache(&gateway.get("/keep")), "HIT");
    let status = gateway.status_json();
    // /a, both /static/ paths (fetched again) and /keep.
    assert_eq!(status["routes"][0]["cache"]["responses"], 4, "{status}");

    let refused = purge(&gateway, r#"{"path": "/a"}"#);
    assert_eq!(refused.status, 400, "{refused:?}");
}

#[test]
fn purge_needs_the_admin_token_when_one_is_set() {
    let app = Upstream::start("app");
    let gateway = Gateway::start_raw(&format!(
        "{}{}",
        extend_section(BASE_CONFIG, "admin", "  token: secret"),
        cached_sections(&app, "{ enabled: true }")
    ));
    let body = r#"{"prefix": "/"}"#;
    let without = purge(&gateway, body);
    let with = gateway.admin_post("/cache/purge", &[("Authorization", "Bearer secret")], body);
    assert_eq!(without.status, 401, "{without:?}");
    assert_eq!(with.status, 200, "{with:?}");
}

#[test]
fn vary_headers_keep_variants_apart() {
    let app = Upstream::start("app");
    app.set_header("Cache-Control", "max-age=300");
    let gateway = cached_gateway(&app, "{ enabled: true, vary: [Accept-Language] }");
    let get = |language: &str| gateway.request("GET", "/home", &[("Accept-Language", language)]);

    app.set_body("hello");
    let en = get("en");
    app.set_body("bonjour");
    let fr = get("fr");
    let en_again = get("en");
    let fr_again = get("fr");

    assert_eq!((x_cache(&en), en.body.as_str()), ("MISS", "hello"));
    assert_eq!((x_cache(&fr), fr.body.as_str()), ("MISS", "bonjour"));
    assert_eq!(
        (x_cache(&en_again), en_again.body.as_str()),
        ("HIT", "hello")
    );
    assert_eq!(
        (x_cache(&fr_again), fr_again.body.as_str()),
        ("HIT", "bonjour")
    );
    assert_eq!(app.requests(), 2);
}

#[test]
fn origin_vary_header_also_separates_variants() {
    let app = Upstream::start("app");
    app.set_header("Cache-Control", "max-age=300");
    app.set_header("Vary", "X-Theme");
    let gateway = cached_gateway(&app, "{ enabled: true }");

    app.set_body("dark");
    let dark = gateway.request("GET", "/", &[("X-Theme", "dark")]);
    app.set_body("light");
    let light = gateway.request("GET", "/", &[("X-Theme", "light")]);
    let dark_again = gateway.request("GET", "/", &[("X-Theme", "dark")]);

    assert_eq!(x_cache(&dark), "MISS");
    assert_eq!(x_cache(&light), "MISS");
    assert_eq!(
        (x_cache(&dark_again), dark_again.body.as_str()),
        ("HIT", "dark")
    );
}

#[test]
fn responses_with_set_cookie_are_not_cached() {
    let app = Upstream::start("app");
    app.set_header("Cache-Control", "max-age=300");
    app.set_header("Set-Cookie", "session=abc");
    let gateway = cached_gateway(&app, "{ enabled: true }");

    let first = gateway.get("/me");
    let second = gateway.get("/me");

    assert_eq!(x_cache(&first), "MISS");
    assert_eq!(x_cache(&second), "MISS");
    assert_eq!(app.requests(), 2);
}

#[test]
fn no_store_private_and_silent_origins_are_not_cached() {
    let app = Upstream::start("app");
    let gateway = cached_gateway(&app, "{ enabled: true }");
    for cache_control in ["no-store", "private, max-age=60", ""] {
        app.clear_headers();
        if !cache_control.is_empty() {
            app.set_header("Cache-Control", cache_control);
        }
        let path = format!("/p{}", cache_control.len());
        let before = app.requests();
        gateway.get(&path);
        let second = gateway.get(&path);
        assert_eq!(x_cache(&second), "MISS", "{cache_control:?}");
        assert_eq!(app.requests(), before + 2, "{cache_control:?}");
    }
}

#[test]
fn default_ttl_applies_when_the_origin_is_silent() {
    let app = Upstream::start("app");
    let gateway = cached_gateway(&app, "{ enabled: true, default_ttl: 60s }");

    gateway.get("/quiet");
    let second = gateway.get("/quiet");

    assert_eq!(x_cache(&second), "HIT");
    assert_eq!(app.requests(), 1);
}

#[test]
fn authorized_requests_bypass_the_cache_unless_public_with_auth() {
    let app = Upstream::start("app");
    app.set_header("Cache-Control", "max-age=300");
    let gateway = cached_gateway(&app, "{ enabled: true }");
    let auth = [("Authorization", "Bearer token")];

    let first = gateway.request("GET", "/private", &auth);
    let second = gateway.request("GET", "/private", &auth);
    let anonymous = gateway.get("/private");

    assert_eq!(x_cache(&first), "BYPASS");
    assert_eq!(x_cache(&second), "BYPASS");
    assert_eq!(
        x_cache(&anonymous),
        "MISS",
        "an authorized response must not have been stored"
    );
    assert_eq!(app.requests(), 3);
    let bypassed = gateway.metric(
        "portcullis_cache_requests_total",
        &[("route", "edge"), ("result", "bypass")],
    );
    assert_eq!(bypassed, Some(2.0));

    let public = Upstream::start("public");
    public.set_header("Cache-Control", "max-age=300");
    let shared = cached_gateway(&public, "{ enabled: true, public_with_auth: true }");
    shared.request("GET", "/shared", &auth);
    let hit = shared.request("GET", "/shared", &auth);
    assert_eq!(x_cache(&hit), "HIT");
}

#[test]
fn post_bypasses_the_cache() {
    let app = Upstream::start("app");
    app.set_header("Cache-Control", "max-age=300");
    let gateway = cached_gateway(&app, "{ enabled: true }");

    let first = gateway.request("POST", "/form", &[]);
    let second = gateway.request("POST", "/form", &[]);

    assert_eq!(x_cache(&first), "BYPASS");
    assert_eq!(x_cache(&second), "BYPASS");
    assert_eq!(app.requests(), 2);
}

#[test]
fn conditional_requests_are_answered_304_from_the_cache() {
    let app = Upstream::start("app");
    app.set_header("Cache-Control", "max-age=300");
    app.set_header("ETag", "\"v1\"");
    app.set_header("Last-Modified", "Mon, 02 Nov 2026 10:00:00 GMT");
    let gateway = cached_gateway(&app, "{ enabled: true }");
    assert_eq!(x_cache(&gateway.get("/asset")), "MISS");

    let by_etag = gateway.request("GET", "/asset", &[("If-None-Match", "\"v1\"")]);
    let by_date = gateway.request(
        "GET",
        "/asset",
        &[("If-Modified-Since", "Mon, 02 Nov 2026 10:00:00 GMT")],
    );
    let changed = gateway.request("GET", "/asset", &[("If-None-Match", "\"v0\"")]);

    assert_eq!(
        (by_etag.status, x_cache(&by_etag)),
        (304, "HIT"),
        "{by_etag:?}"
    );
    assert_eq!(by_etag.body, "");
    assert_eq!(by_date.status, 304, "{by_date:?}");
    assert_eq!((changed.status, changed.body.as_str()), (200, "app"));
    assert_eq!(app.requests(), 1);
}

#[test]
fn head_is_answered_from_the_cached_get() {
    let app = Upstream::start("app");
    app.set_header("Cache-Control", "max-age=300");
    let gateway = cached_gateway(&app, "{ enabled: true }");
    gateway.get("/h");

    let head = gateway.request("HEAD", "/h", &[]);

    assert_eq!((head.status, x_cache(&head)), (200, "HIT"), "{head:?}");
    assert_eq!(app.requests(), 1);
}

#[test]
fn cached_responses_survive_a_reload() {
    let app = Upstream::start("app");
    app.set_header("Cache-Control", "max-age=300");
    let gateway = cached_gateway(&app, "{ enabled: true }");
    assert_eq!(x_cache(&gateway.get("/kept")), "MISS");

    gateway.rewrite_config(&cached_sections(
        &app,
        "{ enabled: true, default_ttl: 5s, max_size: 32MiB }",
    ));
    gateway.reload();

    assert_eq!(x_cache(&gateway.get("/kept")), "HIT");
    assert_eq!(app.requests(), 1);
}

#[test]
fn routes_without_a_cache_send_no_x_cache() {
    let app = Upstream::start("app");
    app.set_header("Cache-Control", "max-age=300");
    let gateway = cached_gateway(&app, "{ enabled: false }");

    let response = gateway.get("/");
    gateway.get("/");

    assert_eq!(response.header("X-Cache"), None);
    assert_eq!(app.requests(), 2);
}

#[test]
fn max_size_evicts_the_least_recently_used_responses() {
    let app = Upstream::start("app");
    app.set_header("Cache-Control", "max-age=300");
    app.set_body(&"x".repeat(200));
    let gateway = cached_gateway(&app, "{ enabled: true, max_size: 4KiB }");

    for i in 0..50 {
        assert_eq!(x_cache(&gateway.get(&format!("/item/{i}"))), "MISS", "{i}");
    }

    assert_eq!(x_cache(&gateway.get("/item/49")), "HIT", "the newest stays");
    assert_eq!(
        x_cache(&gateway.get("/item/0")),
        "MISS",
        "the oldest must have been evicted to stay within max_size"
    );
}

#[test]
fn responses_over_an_eighth_of_max_size_are_passed_through_uncached() {
    let app = Upstream::start("app");
    app.set_header("Cache-Control", "max-age=300");
    app.set_body(&"x".repeat(2000));
    let gateway = cached_gateway(&app, "{ enabled: true, max_size: 8KiB }");

    let first = gateway.get("/big");
    let second = gateway.get("/big");

    assert_eq!(first.body.len(), 2000);
    assert_eq!((x_cache(&second), second.body.len()), ("MISS", 2000));
    assert_eq!(app.requests(), 2);
}
