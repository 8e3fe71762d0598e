//! Headers the gateway keeps, adds or removes (SPEC §5): X-Request-Id, traceparent,
//! X-Forwarded-*, and hop-by-hop headers.

mod common;

use common::{assert_gateway_error, Gateway, OneRoute, Upstream};

/// A gateway sending every request to `app`.
fn gateway_to(app: &Upstream) -> Gateway {
    Gateway::start(&OneRoute::to(&[app]).yaml())
}

/// 1–128 characters of `[A-Za-z0-9._:-]`.
fn is_valid_request_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
}

/// Checks `00-<32 hex>-<16 hex>-<2 hex>` (lowercase, ids not all zero) and returns
/// (trace-id, parent-id).
fn parse_traceparent(value: &str) -> (String, String) {
    let is_hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let parts: Vec<&str> = value.split('-').collect();
    let well_formed = matches!(
        parts[..],
        ["00", trace, parent, flags] if is_hex(trace, 32) && is_hex(parent, 16) && is_hex(flags, 2)
    );
    assert!(well_formed, "malformed traceparent {value:?}");
    let (trace_id, parent_id) = (parts[1], parts[2]);
    assert_ne!(trace_id, "0".repeat(32), "all-zero trace-id in {value:?}");
    assert_ne!(parent_id, "0".repeat(16), "all-zero parent-id in {value:?}");
    (trace_id.to_string(), parent_id.to_string())
}

#[test]
fn valid_request_id_is_kept_and_echoed() {
    let app = Upstream::start("app");
    let gateway = gateway_to(&app);

    for id in ["abc-123", "Client.req_1:2-3", &"a".repeat(128)] {
        let response = gateway.request("GET", "/", &[("X-Request-Id", id)]);

        assert_eq!(response.status, 200, "{response:?}");
        assert_eq!(app.last_request().header("X-Request-Id"), Some(id));
        assert_eq!(response.request_id(), id);
    }
}

#[test]
fn invalid_request_id_is_replaced() {
    let app = Upstream::start("app");
    let gateway = gateway_to(&app);

    for id in ["has space", "semi;colon", "slash/ed", &"a".repeat(129)] {
        let response = gateway.request("GET", "/", &[("X-Request-Id", id)]);

        assert_eq!(response.status, 200, "{response:?}");
        let seen = app.last_request().header_values("X-Request-Id").join(",");
        assert_ne!(seen, id, "invalid id {id:?} was forwarded");
        assert!(
            is_valid_request_id(&seen),
            "replacement {seen:?} for {id:?}"
        );
        assert_eq!(response.request_id(), seen);
    }
}

#[test]
fn missing_request_id_is_generated_and_echoed() {
    let app = Upstream::start("app");
    let gateway = gateway_to(&app);

    let ids: Vec<String> = (0..2)
        .map(|_| {
            let response = gateway.get("/");
            assert_eq!(response.status, 200, "{response:?}");
            let seen = app
                .last_request()
                .header("X-Request-Id")
                .map(str::to_string);
            assert!(
                seen.as_deref().is_some_and(is_valid_request_id),
                "upstream saw X-Request-Id {seen:?}"
            );
            assert_eq!(Some(response.request_id()), seen.as_deref());
            response.request_id().to_string()
        })
        .collect();

    assert_ne!(ids[0], ids[1], "every request gets its own id");
}

#[test]
fn request_id_is_echoed_on_gateway_errors() {
    let app = Upstream::start("app");
    let gateway = Gateway::start(
        &OneRoute::to(&[&app])
            .named("api")
            .matching("{ path_prefix: /api }")
            .yaml(),
    );

    let kept = gateway.request("GET", "/elsewhere", &[("X-Request-Id", "err-check-1")]);
    assert_gateway_error(&kept, 404, "ROUTE_NOT_FOUND");
    assert_eq!(kept.request_id(), "err-check-1");

    let generated = gateway.get("/elsewhere");
    assert_gateway_error(&generated, 404, "ROUTE_NOT_FOUND");
    assert!(is_valid_request_id(generated.request_id()), "{generated:?}");
}

#[test]
fn valid_traceparent_is_continued() {
    let app = Upstream::start("app");
    let gateway = gateway_to(&app);
    let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    let response = gateway.request("GET", "/", &[("traceparent", incoming)]);

    assert_eq!(response.status, 200, "{response:?}");
    let forwarded = app.last_request().header("traceparent").map(str::to_string);
    let (trace_id, parent_id) = parse_traceparent(forwarded.as_deref().unwrap_or_default());
    assert_eq!(trace_id, "4bf92f3577b34da6a3ce929d0e0e4736", "same trace");
    assert_ne!(parent_id, "00f067aa0ba902b7", "the gateway is a new parent");
}

#[test]
fn missing_or_invalid_traceparent_starts_a_new_trace() {
    let app = Upstream::start("app");
    let gateway = gateway_to(&app);
    let all_zero_trace = "00-00000000000000000000000000000000-00f067aa0ba902b7-01";

    let mut trace_ids = Vec::new();
    for incoming in [
        None,
        Some("garbage"),
        Some("00-abc-def-01"),
        Some(all_zero_trace),
    ] {
        let headers: Vec<(&str, &str)> = incoming.map(|v| ("traceparent", v)).into_iter().collect();
        let response = gateway.request("GET", "/", &headers);

        assert_eq!(response.status, 200, "{response:?}");
        let forwarded = app.last_request().header("traceparent").map(str::to_string);
        let Some(forwarded) = forwarded else {
            panic!("no traceparent reached the upstream for incoming {incoming:?}");
        };
        trace_ids.push(parse_traceparent(&forwarded).0);
    }

    trace_ids.sort();
    trace_ids.dedup();
    assert_eq!(
        trace_ids.len(),
        4,
        "each request starts its own trace: {trace_ids:?}"
    );
}

#[test]
fn forwarded_headers_describe_the_client() {
    let app = Upstream::start("app");
    let gateway = gateway_to(&app);

    let response = gateway.request("GET", "/", &[("Host", "shop.example.com")]);
    assert_eq!(response.status, 200, "{response:?}");
    let seen = app.last_request();
    assert_eq!(
        seen.header("X-Forwarded-For"),
        Some("127.0.0.1"),
        "{seen:?}"
    );
    assert_eq!(seen.header("X-Forwarded-Proto"), Some("http"), "{seen:?}");
    assert_eq!(
        seen.header("X-Forwarded-Host"),
        Some("shop.example.com"),
        "{seen:?}"
    );

    let response = gateway.request(
        "GET",
        "/",
        &[
            ("Host", "shop.example.com"),
            ("X-Forwarded-For", "203.0.113.7"),
        ],
    );
    assert_eq!(response.status, 200, "{response:?}");
    let seen = app.last_request();
    let chain = seen.header_values("X-Forwarded-For").join(",");
    let hops: Vec<&str> = chain.split(',').map(str::trim).collect();
    assert_eq!(
        hops,
        ["203.0.113.7", "127.0.0.1"],
        "client IP appended: {seen:?}"
    );
}

#[test]
fn hop_by_hop_headers_do_not_reach_the_upstream() {
    let app = Upstream::start("app");
    let gateway = gateway_to(&app);

    let response = gateway.request(
        "GET",
        "/",
        &[
            ("Connection", "close, X-Secret-Hop"),
            ("X-Secret-Hop", "1"),
            ("Proxy-Connection", "keep-alive"),
            ("Keep-Alive", "timeout=5"),
            ("X-End-To-End", "kept"),
        ],
    );

    assert_eq!(response.status, 200, "{response:?}");
    let seen = app.last_request();
    assert_eq!(seen.header("X-End-To-End"), Some("kept"), "{seen:?}");
    for hop_by_hop in ["X-Secret-Hop", "Proxy-Connection", "Keep-Alive"] {
        assert_eq!(
            seen.header(hop_by_hop),
            None,
            "{hop_by_hop} was forwarded: {seen:?}"
        );
    }
    let connection = seen
        .header_values("Connection")
        .join(",")
        .to_ascii_lowercase();
    assert!(!connection.contains("x-secret-hop"), "{seen:?}");
}

#[test]
fn the_variant_header_is_only_for_routes_with_a_canary() {
    let app = Upstream::start("app");
    let gateway = gateway_to(&app);

    let response = gateway.request("GET", "/x", &[("X-Portcullis-Variant", "canary")]);

    assert_eq!(response.status, 200);
    let received = app.last_request();
    assert_eq!(
        received.header("X-Portcullis-Variant"),
        None,
        "a route without a canary has no variant to tell, and a client's copy never passes"
    );
}
