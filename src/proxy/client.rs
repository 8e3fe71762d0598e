//! Who the client is and how long its connection may wait: the client address behind
//! trusted proxies, and the keep-alive and body timeouts of `server:`.

use std::net::IpAddr;

use pingora::proxy::Session;

use crate::model::connections::ConnectionPolicy;
use crate::runtime::connections;

/// The request head has arrived: its deadline is met, and the connection's keep-alive
/// (unless Pingora already turned it off for a shutdown) and body read timeout are set.
/// An HTTP/2 stream takes the body read timeout (vendored, see `vendor/README.md`); its
/// connection's idle time is Pingora's `h2_idle_timeout`.
pub(super) fn head_received(session: &mut Session, policy: &ConnectionPolicy) {
    connections::head_received();
    if session.get_keepalive().is_some() {
        // Whole seconds, rounded up: Pingora reads `Some(0)` as "no timeout".
        let seconds = policy
            .keepalive_timeout
            .map(|t| t.as_secs() + u64::from(t.subsec_nanos() > 0));
        session.set_keepalive(seconds);
    }
    session.set_read_timeout(Some(policy.body_read_timeout));
}

/// The client of the request: the peer, or who a trusted proxy says the client is.
pub(super) fn client_ip(session: &Session, policy: &ConnectionPolicy) -> Option<IpAddr> {
    policy
        .client_address
        .resolve(peer_ip(session), &session.req_header().headers)
}

/// The connection's peer: the TCP peer, or the client a trusted PROXY header named.
pub(super) fn peer_ip(session: &Session) -> Option<IpAddr> {
    session
        .client_addr()
        .and_then(|addr| addr.as_inet())
        .map(|addr| addr.ip())
}
