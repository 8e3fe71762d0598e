//! `routes[].timeout`: one deadline for the whole request, counted from its head's
//! arrival, retries and backoff included. It replaces the pool's read and write
//! timeouts with the time left at each attempt and caps its connect timeout; an attempt
//! is not started, and response headers or body bytes are not taken, past the deadline.
//! The client gets 504 UPSTREAM_TIMEOUT (or, once the response has begun, a cut
//! connection).

use std::time::Duration;

use pingora::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorType};

use super::context::RequestCtx;

/// Time left before the route's deadline; `None` when the route has no timeout.
pub(super) fn remaining(ctx: &RequestCtx) -> Option<Duration> {
    let timeout = ctx.route.as_ref()?.timeout?;
    Some(timeout.saturating_sub(ctx.started.elapsed()))
}

/// Whether the route's deadline has passed.
pub(super) fn passed(ctx: &RequestCtx) -> bool {
    remaining(ctx).is_some_and(|left| left.is_zero())
}

/// Gives `peer` the time `left`: it replaces the pool's read and write timeouts (a
/// route may wait longer than its pool's default) and caps its connect timeout (a
/// per-target liveness bound that retries rely on).
pub(super) fn limit(peer: &mut HttpPeer, left: Duration) {
    let options = &mut peer.options;
    for connect in [
        &mut options.connection_timeout,
        &mut options.total_connection_timeout,
    ] {
        *connect = Some(connect.map_or(left, |own| own.min(left)));
    }
    options.read_timeout = Some(left);
    options.write_timeout = Some(left);
}

/// The error of a request past its route's deadline (answered 504 UPSTREAM_TIMEOUT).
pub(super) fn expired() -> Box<Error> {
    let mut e = Error::explain(ErrorType::ReadTimedout, "the route's timeout passed");
    e.as_up();
    e
}
