//! Client certificates on the request path: the copies of the certificate headers (and
//! of `X-Portcullis-Mirror`) a client sent are removed on every listener, the certificate its listener verified
//! (once per connection, `runtime/sni.rs`) is handed to the plugins, and its headers go
//! upstream.

use std::sync::Arc;

use pingora::proxy::Session;
use pingora_http::RequestHeader;

use super::RequestCtx;
use crate::model::client_cert::VerifiedClient;
use crate::model::gateway::Gateway;

/// Removes client-sent certificate (and mirror) headers and records the connection's verified
/// certificate for the plugins.
pub fn identify(session: &mut Session, ctx: &mut RequestCtx, gateway: &Gateway) {
    let req = session.req_header_mut();
    // Usually none is there: one look over the request's names costs less than a hashed
    // removal of each reserved name.
    if req
        .headers
        .keys()
        .any(|name| gateway.reserved_headers.contains(name))
    {
        for name in gateway.reserved_headers.iter() {
            req.remove_header(name);
        }
    }
    ctx.plugins.client_cert = verified(session).map(|client| Arc::clone(&client.certificate));
}

/// Adds the verified certificate's headers to the upstream request.
pub fn forward(session: &Session, upstream_request: &mut RequestHeader) {
    if let Some(client) = verified(session) {
        client.add_headers(upstream_request);
    }
}

fn verified(session: &Session) -> Option<&VerifiedClient> {
    session
        .digest()?
        .ssl_digest
        .as_ref()?
        .extension
        .get::<VerifiedClient>()
}
