//! WebSocket upgrades: an `Upgrade: websocket` request is proxied like any other (auth and
//! rate limits run on it); once the upstream answers `101`, the connection carries frames
//! both ways until either side closes, idle for at most the route's
//! `websocket.idle_timeout` instead of the HTTP read timeouts, and is counted in
//! `portcullis_websocket_connections{route}` while open.

use http::header::UPGRADE;
use pingora::proxy::Session;
use pingora::upstreams::peer::HttpPeer;
use pingora_http::{RequestHeader, ResponseHeader};

use super::context::RequestCtx;
use crate::model::websocket::WebSocketGuard;

/// Whether the request asks to become a WebSocket (`hygiene.rs` has already checked the
/// rest of the upgrade's shape: a body-less HTTP/1.1 GET with `Connection: upgrade`).
pub(super) fn is_upgrade(req: &RequestHeader) -> bool {
    req.headers.get(UPGRADE).is_some_and(|value| {
        value
            .as_bytes()
            .split(|&b| b == b',')
            .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"websocket"))
    })
}

/// On a route with `websocket:`, the upstream side of an upgrade may stay idle for the
/// route's idle time (Pingora applies one read timeout to the whole upstream exchange, so
/// it also bounds the wait for the `101`).
pub(super) fn upstream_idle(peer: &mut HttpPeer, req: &RequestHeader, ctx: &RequestCtx) {
    let Some(websocket) = ctx.route.as_ref().and_then(|r| r.websocket.as_ref()) else {
        return;
    };
    if is_upgrade(req) {
        peer.options.read_timeout = Some(websocket.idle_timeout);
    }
}

/// The upstream accepted the upgrade: count the socket, and let the client side idle for
/// the route's idle time. Any other answer (a refusal) passes through as it is.
pub(super) fn accepted(session: &mut Session, resp: &ResponseHeader, ctx: &mut RequestCtx) {
    if resp.status.as_u16() != 101 || !is_upgrade(session.req_header()) {
        return;
    }
    let Some(route) = &ctx.route else { return };
    if let Some(websocket) = &route.websocket {
        session.set_read_timeout(Some(websocket.idle_timeout));
    }
    ctx.websocket = Some(WebSocketGuard::open(&route.websocket_connections));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_websocket_upgrades() {
        let mut req = RequestHeader::build("GET", b"/", None).expect("request");
        assert!(!is_upgrade(&req));
        req.insert_header("upgrade", "foo, WebSocket")
            .expect("header");
        assert!(is_upgrade(&req));
        req.insert_header("upgrade", "websocketx").expect("header");
        assert!(!is_upgrade(&req));
    }
}
