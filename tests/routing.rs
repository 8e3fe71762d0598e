//! Route matching: precedence (most specific wins), methods and headers, strip_prefix,
//! routes answered by the gateway itself, and the 404 for a request no route matches.

mod common;

use common::{assert_gateway_error, Gateway, Upstream, PING_ROUTE};

/// A gateway whose routes, each a (name, match) pair, answer with their own name.
fn routes_answering_their_names(routes: &[(&str, &str)]) -> Gateway {
    let items: String = routes
        .iter()
        .map(|(name, matching)| {
            format!(
                "  - name: {name}\n    match: {matching}\n    respond: {{ status: 200, body: {name} }}\n"
            )
        })
        .collect();
    Gateway::start(&format!("\nroutes:\n{items}"))
}

/// The body of the `respond` route that answered this request (each route answers its name).
fn answering_route(
    gateway: &Gateway,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> String {
    let response = gateway.request(method, path, headers);
    assert_eq!(
        response.status, 200,
        "{method} {path} {headers:?}: {response:?}"
    );
    response.body
}

#[test]
fn unmatched_request_gets_json_404_route_not_found() {
    let gateway = Gateway::start(&format!("\nroutes:\n{PING_ROUTE}"));

    let response = gateway.get("/nowhere");

    assert_gateway_error(&response, 404, "ROUTE_NOT_FOUND");
}

#[test]
fn respond_route_is_answered_by_the_gateway() {
    let gateway = Gateway::start(&format!(
        r#"
routes:
{PING_ROUTE}  - name: maintenance
    match: {{ path_prefix: /legacy }}
    respond: {{ status: 503, body: "down for maintenance" }}
"#
    ));

    let ping = gateway.get("/ping");
    assert_eq!((ping.status, ping.body.as_str()), (200, "pong"), "{ping:?}");
    assert!(!ping.request_id().is_empty());

    let legacy = gateway.get("/legacy/orders");
    assert_eq!(
        (legacy.status, legacy.body.as_str()),
        (503, "down for maintenance"),
        "{legacy:?}"
    );
}

#[test]
fn route_with_matching_host_beats_route_without_host() {
    let gateway = routes_answering_their_names(&[
        ("any-host", "{ path: /users }"),
        (
            "api-host",
            r#"{ hosts: ["api.example.com"], path_prefix: / }"#,
        ),
        (
            "shop-wildcard",
            r#"{ hosts: ["*.shop.test"], path_prefix: / }"#,
        ),
    ]);
    let route = |host: &str, path: &str| answering_route(&gateway, "GET", path, &[("Host", host)]);

    // A host match wins even over an exact path on a route without hosts.
    assert_eq!(route("api.example.com", "/users"), "api-host");
    assert_eq!(route("api.example.com:8080", "/users"), "api-host");
    assert_eq!(route("eu.shop.test", "/users"), "shop-wildcard");
    assert_eq!(route("other.test", "/users"), "any-host");
    assert_eq!(route("api.example.com", "/anything"), "api-host");

    let unmatched = gateway.request("GET", "/anything", &[("Host", "other.test")]);
    assert_gateway_error(&unmatched, 404, "ROUTE_NOT_FOUND");
}

#[test]
fn exact_path_beats_regex_beats_prefix() {
    // Listed least specific first, so file order cannot explain the outcome.
    let gateway = routes_answering_their_names(&[
        ("prefix", "{ path_prefix: /users }"),
        ("regex", r#"{ path_regex: "^/users/[0-9]+$" }"#),
        ("exact", "{ path: /users/42 }"),
    ]);
    let route = |path: &str| answering_route(&gateway, "GET", path, &[]);

    assert_eq!(route("/users/42"), "exact");
    assert_eq!(route("/users/7"), "regex");
    assert_eq!(route("/users/abc"), "prefix");
    assert_eq!(route("/users"), "prefix");
}

#[test]
fn longer_prefix_beats_shorter() {
    let gateway = routes_answering_their_names(&[
        ("short", "{ path_prefix: /api }"),
        ("long", "{ path_prefix: /api/v2 }"),
    ]);
    let route = |path: &str| answering_route(&gateway, "GET", path, &[]);

    assert_eq!(route("/api/v2/orders"), "long");
    assert_eq!(route("/api/v2"), "long");
    assert_eq!(route("/api/v1/orders"), "short");
}

#[test]
fn more_conditions_win_after_path_then_file_order_breaks_ties() {
    let gateway = routes_answering_their_names(&[
        ("plain", "{ path_prefix: /things }"),
        ("get-only", "{ path_prefix: /things, methods: [GET] }"),
        (
            "get-v2",
            r#"{ path_prefix: /things, methods: [GET], headers: { X-Api-Version: "2" } }"#,
        ),
        ("detail", "{ path_prefix: /things/detail }"),
        ("first", "{ path_prefix: /tie }"),
        ("second", "{ path_prefix: /tie }"),
    ]);
    let v2 = [("X-Api-Version", "2")];

    assert_eq!(answering_route(&gateway, "GET", "/things", &v2), "get-v2");
    assert_eq!(answering_route(&gateway, "GET", "/things", &[]), "get-only");
    assert_eq!(answering_route(&gateway, "DELETE", "/things", &v2), "plain");
    // A longer prefix outranks extra conditions.
    assert_eq!(
        answering_route(&gateway, "GET", "/things/detail", &v2),
        "detail"
    );
    assert_eq!(answering_route(&gateway, "GET", "/tie", &[]), "first");
}

#[test]
fn methods_and_headers_must_all_match() {
    let gateway = routes_answering_their_names(&[(
        "versioned",
        r#"{ path_prefix: /orders, methods: [GET, POST], headers: { X-Api-Version: "1" } }"#,
    )]);
    let v1 = [("X-Api-Version", "1")];

    assert_eq!(gateway.request("GET", "/orders", &v1).status, 200);
    assert_eq!(gateway.request("POST", "/orders", &v1).status, 200);
    // Header names are case-insensitive.
    assert_eq!(
        gateway
            .request("GET", "/orders", &[("x-api-version", "1")])
            .status,
        200
    );

    for (method, headers) in [
        ("DELETE", &v1[..]),
        ("GET", &[][..]),
        ("GET", &[("X-Api-Version", "2")][..]),
    ] {
        let response = gateway.request(method, "/orders", headers);
        assert_gateway_error(&response, 404, "ROUTE_NOT_FOUND");
    }
}

#[test]
fn strip_prefix_removes_the_matched_prefix() {
    let app = Upstream::start("app");
    let gateway = Gateway::start(&format!(
        r#"
upstreams:
  app:
    targets:
      - address: "{app}"
routes:
  - name: stripped
    match: {{ path_prefix: /api }}
    strip_prefix: true
    upstream: app
  - name: kept
    match: {{ path_prefix: /keep }}
    upstream: app
"#,
        app = app.addr()
    ));

    for (client_path, upstream_path) in [
        ("/api/users", "/users"),
        ("/api", "/"),
        ("/api/users?page=2", "/users?page=2"),
        ("/keep/users", "/keep/users"),
    ] {
        let response = gateway.get(client_path);
        assert_eq!(
            (response.status, response.body.as_str()),
            (200, "app"),
            "{response:?}"
        );
        assert_eq!(app.last_request().path, upstream_path, "for {client_path}");
    }
}
