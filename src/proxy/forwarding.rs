//! Header work on the request sent upstream: the stripped path, hop-by-hop removal,
//! `X-Forwarded-*`, and what the gateway tells the upstream (request id, trace, variant,
//! consumer).

use std::io::Write;
use std::net::IpAddr;

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_LENGTH, HOST, TE, TRAILER, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderName, HeaderValue};
use pingora_error::Result;
use pingora_http::RequestHeader;
use portcullis_plugins::lookalike::remove_lookalikes;

use super::context::RequestCtx;
use super::trace::TraceContext;
use crate::model::gateway::RouteAction;
use crate::model::header_key::HeaderKey;

const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
const PROXY_AUTHORIZATION: HeaderName = HeaderName::from_static("proxy-authorization");
/// `X-Forwarded-For`.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`.
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`.
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// `X-Consumer-Id`: the authenticated consumer, set only by the gateway.
pub const CONSUMER_ID: HeaderName = HeaderName::from_static("x-consumer-id");

/// Tells the upstream which variant of a canary split the request is (`stable|canary`).
pub const VARIANT: HeaderName = HeaderName::from_static("x-portcullis-variant");

const KNOWN_X_FORWARDED_FOR: HeaderKey = HeaderKey::from_static("x-forwarded-for");
const KNOWN_X_FORWARDED_PROTO: HeaderKey = HeaderKey::from_static("x-forwarded-proto");
const KNOWN_X_FORWARDED_HOST: HeaderKey = HeaderKey::from_static("x-forwarded-host");
/// W3C `traceparent`.
const KNOWN_TRACEPARENT: HeaderKey = HeaderKey::from_static("traceparent");
/// `X-Cache` on responses of cached routes.
pub(super) const KNOWN_X_CACHE: HeaderKey = HeaderKey::from_static("x-cache");

/// Turns the client's request into the one sent upstream; `peer` is the connection's
/// peer and `proto` the client's protocol (`http` or `https`).
pub(super) fn rewrite(
    req: &mut RequestHeader,
    ctx: &RequestCtx,
    peer: Option<IpAddr>,
    proto: &'static str,
) -> Result<()> {
    if let Some(strip_len) = ctx.strip_len {
        let path = stripped_path_and_query(&req.uri, strip_len);
        req.set_raw_path(path.as_bytes())?;
    }
    let raw_path = ctx.route.as_ref().is_some_and(|route| route.raw_path);
    if let Some(sent) = ctx.client_target.as_deref().filter(|_| raw_path) {
        req.set_raw_path(sent.as_bytes())?;
    }
    remove_hop_by_hop(req);
    if ctx.grpc {
        // gRPC servers refuse a call without it; the one TE value HTTP/2 allows.
        req.insert_header(TE, "trailers")?;
    }
    remove_client_statements(req, ctx);
    add_forwarded(req, peer, proto);
    set_forwarded_host(req, ctx.peer_trusted);
    if let Some(gateway) = &ctx.gateway {
        req.insert_header(
            gateway.tracing.request_id_header.key(),
            ctx.request_id.clone(),
        )?;
    }
    let propagate = ctx.gateway.as_ref().is_some_and(|g| g.tracing.traceparent);
    if let Some(traceparent) = ctx
        .trace
        .as_ref()
        .filter(|_| propagate)
        .and_then(TraceContext::header)
    {
        req.insert_header(KNOWN_TRACEPARENT.key(), traceparent)?;
    }
    req.remove_header(&VARIANT);
    if let Some(variant) = ctx.variant.filter(|_| has_canary(ctx)) {
        req.insert_header(VARIANT, variant.as_str())?;
    }
    // Only the gateway says who the consumer is: a client's own copy never passes.
    req.remove_header(&CONSUMER_ID);
    if let Some(consumer) = &ctx.plugins.consumer {
        req.insert_header(CONSUMER_ID, &**consumer)?;
    }
    Ok(())
}

/// Removes what a client may not tell the upstream in the gateway's name: underscored
/// look-alikes of the headers the gateway sets (`X_Consumer_Id`, `X_Forwarded_For`, the
/// request id header, ...), and, unless the peer is a trusted proxy, the `X-Forwarded-*`
/// headers the gateway does not set itself (`X-Forwarded-Port`, `-Prefix`, ...); the
/// peer's `X-Forwarded-For` chain is extended, not removed.
fn remove_client_statements(req: &mut RequestHeader, ctx: &RequestCtx) {
    let request_id = ctx
        .gateway
        .as_ref()
        .map(|gateway| gateway.tracing.request_id_header.name().as_str());
    remove_lookalikes(req, |name| {
        is_gateway_header(name) || Some(name) == request_id || name == "traceparent"
    });
    if !ctx.peer_trusted {
        let stated: Vec<HeaderName> = req
            .headers
            .keys()
            .filter(|name| name.as_str().starts_with("x-forwarded-") && *name != X_FORWARDED_FOR)
            .cloned()
            .collect();
        for name in &stated {
            req.remove_header(name);
        }
    }
}

/// The headers the gateway sets on upstream requests (`-` spelling, lower case).
fn is_gateway_header(name: &str) -> bool {
    name == CONSUMER_ID.as_str()
        || name.starts_with("x-forwarded-")
        || name.starts_with("x-portcullis-")
        || name.starts_with("x-client-cert-")
}

/// `X-Forwarded-Host`: the Host the client asked for; a value the client sent is only
/// kept when the peer is a trusted proxy (which saw the original Host).
fn set_forwarded_host(req: &mut RequestHeader, peer_trusted: bool) {
    if peer_trusted && req.headers.contains_key(&X_FORWARDED_HOST) {
        return;
    }
    match req.headers.get(HOST).cloned() {
        Some(host) => {
            let _ = req.insert_header(KNOWN_X_FORWARDED_HOST.key(), host);
        }
        None => {
            req.remove_header(&X_FORWARDED_HOST);
        }
    }
}

/// Whether the request's route splits its traffic with a canary: only the upstreams of
/// such a route are told the variant (every request of another route is `stable`).
fn has_canary(ctx: &RequestCtx) -> bool {
    ctx.route.as_ref().is_some_and(|route| {
        matches!(
            &route.action,
            RouteAction::Proxy {
                canary: Some(_),
                ..
            }
        )
    })
}

/// Removes the hop-by-hop headers (RFC 9110 §7.6.1): `Connection` and every header it
/// names, `Keep-Alive`, `Proxy-Connection`, `Proxy-Authorization`, `TE` and `Trailer`.
/// A protocol upgrade keeps `Upgrade` and `Connection: upgrade`; framing headers
/// (`Content-Length`, `Transfer-Encoding`) are left to Pingora.
pub fn remove_hop_by_hop(req: &mut RequestHeader) {
    let listed: Vec<HeaderName> = req
        .headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .filter(|name| !matches!(name.as_str(), "upgrade" | "close" | "keep-alive"))
        // Connection may not strip what frames or addresses the request.
        .filter(|name| ![HOST, UPGRADE, CONTENT_LENGTH, TRANSFER_ENCODING].contains(name))
        .collect();
    for name in &listed {
        req.remove_header(name);
    }
    for name in [
        CONNECTION,
        KEEP_ALIVE,
        PROXY_CONNECTION,
        PROXY_AUTHORIZATION,
        TE,
        TRAILER,
    ] {
        req.remove_header(&name);
    }
    if req.headers.contains_key(UPGRADE) {
        let _ = req.insert_header(CONNECTION, "upgrade");
    }
}

/// Appends the connection's peer to `X-Forwarded-For` (every line the client sent kept,
/// in order, joined into one) and sets `X-Forwarded-Proto`.
pub fn add_forwarded(req: &mut RequestHeader, peer: Option<IpAddr>, proto: &'static str) {
    if let Some(ip) = peer {
        let mut chain = Vec::with_capacity(64);
        for line in req.headers.get_all(&X_FORWARDED_FOR) {
            let line = line.as_bytes().trim_ascii();
            if !line.is_empty() {
                chain.extend_from_slice(line);
                chain.extend_from_slice(b", ");
            }
        }
        // An IP address is always a valid header value; the buffer becomes it without a copy.
        write_ip(&mut chain, ip);
        if let Ok(chain) = HeaderValue::from_maybe_shared(Bytes::from(chain)) {
            let _ = req.insert_header(KNOWN_X_FORWARDED_FOR.key(), chain);
        }
    }
    let _ = req.insert_header(
        KNOWN_X_FORWARDED_PROTO.key(),
        HeaderValue::from_static(proto),
    );
}

/// `ip` as `Display` writes it; an IPv4 address without `core::fmt`, which costs a
/// thousand instructions per request through `io::Write`.
fn write_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            let mut digits = itoa::Buffer::new();
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                out.extend_from_slice(digits.format(octet).as_bytes());
            }
        }
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// The upstream path after `strip_prefix` removed `strip_len` bytes of the path (the query
/// string is kept).
pub fn stripped_path_and_query(uri: &http::Uri, strip_len: usize) -> String {
    let path = uri.path();
    let rest = path.get(strip_len..).unwrap_or("");
    let rest = if rest.starts_with('/') { rest } else { "/" };
    match uri.query() {
        Some(query) => format!("{rest}?{query}"),
        None => rest.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::request::testing::request;

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        for ip in [
            "0.0.0.0",
            "1.2.3.4",
            "10.0.0.1",
            "127.0.0.1",
            "192.168.100.200",
            "255.255.255.255",
            "::1",
            "::ffff:10.0.0.1",
            "2001:db8::8a2e:370:7334",
        ] {
            let ip: IpAddr = ip.parse().expect("ip");
            let mut out = Vec::new();
            write_ip(&mut out, ip);
            assert_eq!(out, ip.to_string().into_bytes());
        }
    }

    #[test]
    fn hop_by_hop_headers_and_the_ones_connection_names_are_removed() {
        let mut req = request(&[
            ("Connection", "keep-alive, X-Secret-Hop"),
            ("X-Secret-Hop", "1"),
            ("Keep-Alive", "timeout=5"),
            ("Proxy-Connection", "keep-alive"),
            ("TE", "trailers"),
            ("X-Kept", "yes"),
        ]);
        remove_hop_by_hop(&mut req);
        let names: Vec<_> = req.headers.keys().map(|n| n.as_str()).collect();
        assert_eq!(names, ["x-kept"]);
    }

    #[test]
    fn upgrades_keep_their_connection_header() {
        let mut req = request(&[("Connection", "Upgrade"), ("Upgrade", "websocket")]);
        remove_hop_by_hop(&mut req);
        assert_eq!(
            req.headers.get("connection").map(|v| v.as_bytes()),
            Some(&b"upgrade"[..])
        );
        assert!(req.headers.contains_key("upgrade"));
    }

    #[test]
    fn forwarded_headers_extend_the_chain() {
        let mut req = request(&[
            ("Host", "api.example.com:8080"),
            ("X-Forwarded-For", "203.0.113.9"),
        ]);
        add_forwarded(&mut req, Some("127.0.0.1".parse().expect("ip")), "http");
        set_forwarded_host(&mut req, false);
        let get = |name: &str| {
            req.headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        assert_eq!(
            get("x-forwarded-for").as_deref(),
            Some("203.0.113.9, 127.0.0.1")
        );
        assert_eq!(get("x-forwarded-proto").as_deref(), Some("http"));
        assert_eq!(
            get("x-forwarded-host").as_deref(),
            Some("api.example.com:8080")
        );
    }

    #[test]
    fn a_client_forwarded_host_is_replaced_unless_the_peer_is_trusted() {
        let sent = [
            ("Host", "api.example.com"),
            ("X-Forwarded-Host", "evil.test"),
        ];
        let mut untrusted = request(&sent);
        set_forwarded_host(&mut untrusted, false);
        assert_eq!(
            untrusted
                .headers
                .get("x-forwarded-host")
                .map(|v| v.as_bytes()),
            Some(&b"api.example.com"[..])
        );
        let mut trusted = request(&sent);
        set_forwarded_host(&mut trusted, true);
        assert_eq!(
            trusted
                .headers
                .get("x-forwarded-host")
                .map(|v| v.as_bytes()),
            Some(&b"evil.test"[..])
        );
    }

    #[test]
    fn connection_cannot_strip_framing_or_host() {
        let mut req = request(&[
            ("Connection", "content-length, transfer-encoding, host"),
            ("Host", "a"),
            ("Content-Length", "4"),
        ]);
        remove_hop_by_hop(&mut req);
        assert!(req.headers.contains_key("content-length"));
        assert!(req.headers.contains_key("host"));
    }

    #[test]
    fn every_forwarded_for_line_is_kept_in_order() {
        let mut req = request(&[
            ("X-Forwarded-For", "198.51.100.1"),
            ("X-Forwarded-For", " 203.0.113.7, 10.0.0.2 "),
            ("X-Forwarded-For", ""),
        ]);
        add_forwarded(&mut req, Some("10.0.0.1".parse().expect("ip")), "https");
        let lines: Vec<_> = req.headers.get_all("x-forwarded-for").iter().collect();
        assert_eq!(lines, ["198.51.100.1, 203.0.113.7, 10.0.0.2, 10.0.0.1"]);
    }

    #[test]
    fn strip_prefix_keeps_a_rooted_path_and_the_query() {
        let uri = |s: &str| s.parse::<http::Uri>().expect("uri");
        assert_eq!(
            stripped_path_and_query(&uri("/api/users?x=1"), 4),
            "/users?x=1"
        );
        assert_eq!(stripped_path_and_query(&uri("/api"), 4), "/");
        assert_eq!(stripped_path_and_query(&uri("/api?x=1"), 4), "/?x=1");
        assert_eq!(stripped_path_and_query(&uri("/anything"), 0), "/anything");
    }
}
