//! The plugins a client notices: `request_size` refusing large bodies and header blocks,
//! `headers` rewriting requests and responses, and a route's plugin entry replacing the
//! global one of the same name.

mod common;

use common::{assert_gateway_error, raw_exchange, Gateway, OneRoute, Upstream};

/// A gateway sending every request to `app` through `request_size` with a 100-byte body
/// limit and a 1 KiB header limit.
fn size_limited_gateway(app: &Upstream) -> Gateway {
    Gateway::start(
        &OneRoute::to(&[app])
            .section("plugins:\n  request_size: { max_body: 100, max_header: 1KiB }")
            .yaml(),
    )
}

#[test]
fn body_with_content_length_over_max_body_gets_413_and_never_reaches_the_upstream() {
    let app = Upstream::start("app");
    let gateway = size_limited_gateway(&app);

    let response = gateway.post("/upload", &[], &"x".repeat(101));

    assert_gateway_error(&response, 413, "PAYLOAD_TOO_LARGE");
    assert_eq!(
        app.requests(),
        0,
        "the upstream received the refused request"
    );
}

#[test]
fn chunked_body_over_max_body_gets_413() {
    let app = Upstream::start("app");
    let gateway = size_limited_gateway(&app);
    // Three 80-byte chunks: 240 bytes, with no Content-Length to refuse up front.
    let chunk = format!("50\r\n{}\r\n", "y".repeat(80));
    let request = format!(
        "POST /upload HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\
         Connection: close\r\n\r\n{chunk}{chunk}{chunk}0\r\n\r\n"
    );

    let answer = raw_exchange(&gateway.addr(), request.as_bytes());

    assert!(
        answer.starts_with("HTTP/1.1 413"),
        "a 240-byte chunked body over max_body 100 should get 413: {answer:?}"
    );
    assert!(answer.contains("PAYLOAD_TOO_LARGE"), "{answer:?}");
}

#[test]
fn header_block_over_max_header_gets_431() {
    let app = Upstream::start("app");
    let gateway = size_limited_gateway(&app);
    let big = "h".repeat(2_000);

    let response = gateway.request("GET", "/", &[("X-Big", &big)]);

    assert_gateway_error(&response, 431, "REQUEST_HEADERS_TOO_LARGE");
    assert_eq!(
        app.requests(),
        0,
        "the upstream received the refused request"
    );
}

#[test]
fn body_under_the_limits_is_proxied() {
    let app = Upstream::start("app");
    let gateway = size_limited_gateway(&app);
    let body = "z".repeat(100);

    let response = gateway.post("/upload", &[], &body);

    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.body, "app");
    let received = app.last_request();
    assert_eq!(received.method, "POST");
    assert_eq!(received.body, body);
}

#[test]
fn headers_plugin_rewrites_the_request_and_the_response() {
    let app = Upstream::start("app");
    app.set_header("X-Upstream-Header", "internal");
    app.set_header("X-Kept", "kept");
    let gateway = Gateway::start(
        &OneRoute::to(&[&app])
            .route(
                r#"plugins:
  headers:
    request_add: { X-Gateway: portcullis }
    request_remove: [X-Debug]
    response_add: { X-Frame-Options: DENY }
    response_remove: [X-Upstream-Header]"#,
            )
            .yaml(),
    );

    let response = gateway.request(
        "GET",
        "/page",
        &[
            ("X-Gateway", "forged-by-client"),
            ("X-Debug", "1"),
            ("X-Other", "other"),
        ],
    );

    assert_eq!(response.status, 200, "{response:?}");
    let received = app.last_request();
    assert_eq!(
        received.header_values("X-Gateway"),
        vec!["portcullis"],
        "request_add should replace the client's value: {received:?}"
    );
    assert_eq!(
        received.header("X-Debug"),
        None,
        "request_remove: {received:?}"
    );
    assert_eq!(received.header("X-Other"), Some("other"), "{received:?}");
    assert_eq!(
        response.header("X-Upstream-Header"),
        None,
        "response_remove: {response:?}"
    );
    assert_eq!(
        response.header("X-Frame-Options"),
        Some("DENY"),
        "response_add: {response:?}"
    );
    assert_eq!(response.header("X-Kept"), Some("kept"), "{response:?}");
}

#[test]
fn route_plugin_entry_replaces_the_global_one_of_the_same_name() {
    let app = Upstream::start("app");
    let gateway = Gateway::start(
        &OneRoute::to(&[&app])
            .section("plugins:\n  request_size: { max_body: 10 }")
            .routes_before(
                "  - name: uploads
    match: { path_prefix: /uploads }
    upstream: app
    plugins:
      request_size: { max_body: 1000 }",
            )
            .named("other")
            .yaml(),
    );
    let body = "b".repeat(500);

    let on_uploads = gateway.post("/uploads/file", &[], &body);
    let on_other = gateway.post("/other", &[], &body);

    assert_eq!(
        on_uploads.status, 200,
        "the route's max_body 1000 should apply: {on_uploads:?}"
    );
    assert_eq!(app.last_request().body, body);
    assert_gateway_error(&on_other, 413, "PAYLOAD_TOO_LARGE");
    assert_eq!(
        app.requests(),
        1,
        "only the /uploads request reaches the upstream"
    );
}
