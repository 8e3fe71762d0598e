//! HTTP/2 to upstreams (`protocol: h2c | h2 | auto`): when a pool's HTTP/2 exchange fails,
//! say so naming the pool, since the usual cause is a configuration one (an HTTP/1-only
//! server behind `h2c`, or a TLS server that does not offer `h2`).

use pingora_error::{Error, ErrorSource, ErrorType};

use super::context::RequestCtx;

/// Logs an HTTP/2 protocol failure of the request's upstream (once per failed request,
/// which is also answered 502).
pub(super) fn note_failure(e: &Error, ctx: &RequestCtx) {
    if e.esource() != &ErrorSource::Upstream || e.etype() != &ErrorType::H2Error {
        return;
    }
    let Some(upstream) = &ctx.upstream else {
        return;
    };
    let target = ctx
        .target
        .as_ref()
        .map_or_else(String::new, |t| format!(" target {}", t.target().address));
    log::warn!(
        "upstream {}{target}: HTTP/2 failed ({e}); is the target an HTTP/1-only server? \
         check upstreams.{}.protocol",
        upstream.name,
        upstream.name
    );
}
