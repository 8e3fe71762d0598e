//! Mirroring on the request path: once the plugins accepted a request (auth and rate
//! limits passed), a sampled copy of its head and body goes to the route's mirror pool
//! in a task of its own. The client's answer never waits for it: the copy is taken as the
//! body streams through, and the task owns everything it needs.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{header, HeaderValue};
use pingora::connectors::http::Connector;
use pingora::proxy::Session;
use pingora_http::RequestHeader;
use tokio::sync::OwnedSemaphorePermit;

use super::RequestCtx;
use crate::model::client_cert::MIRROR_HEADER;
use crate::model::gateway::Route;

/// A request copy being assembled while its body streams to the primary upstream.
pub struct MirrorCopy {
    route: Arc<Route>,
    head: RequestHeader,
    body: BytesMut,
    _slot: OwnedSemaphorePermit,
}

/// Samples the request for the route's mirror; a sampled request without a body is sent
/// at once, one with a body once the body is complete ([`body_chunk`]).
pub fn start(session: &mut Session, ctx: &mut RequestCtx, connector: &Arc<Connector>) {
    let Some(route) = ctx.route.clone() else {
        return;
    };
    let Some(mirror) = &route.mirror else { return };
    if !mirror.samples(session.req_header(), &ctx.plugins, &mut ctx.key) {
        return;
    }
    let declared = session
        .req_header()
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|length| length.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|length| length > mirror.max_body) {
        mirror.counters.too_large.inc();
        return;
    }
    let Some(slot) = mirror.try_slot() else {
        return;
    };
    let copy = MirrorCopy {
        head: mirror_head(session.req_header()),
        body: BytesMut::new(),
        route: Arc::clone(&route),
        _slot: slot,
    };
    if session.is_body_empty() {
        send(copy, connector);
    } else {
        ctx.mirror = Some(Box::new(copy));
    }
}

/// Adds a body chunk to the request's copy, if it has one; sends it at the end of the
/// body, or gives it up (counted) once it outgrows `max_body`.
pub fn body_chunk(
    ctx: &mut RequestCtx,
    chunk: Option<&Bytes>,
    end_of_stream: bool,
    connector: &Arc<Connector>,
) {
    let Some(copy) = ctx.mirror.as_mut() else {
        return;
    };
    if let Some(chunk) = chunk {
        let Some(mirror) = &copy.route.mirror else {
            return;
        };
        if (copy.body.len() + chunk.len()) as u64 > mirror.max_body {
            mirror.counters.too_large.inc();
            ctx.mirror = None;
            return;
        }
        copy.body.extend_from_slice(chunk);
    }
    if end_of_stream {
        if let Some(copy) = ctx.mirror.take() {
            send(*copy, connector);
        }
    }
}

/// The copy's head: HTTP/1.1 in origin form with a `Host`, marked as a mirror.
fn mirror_head(original: &RequestHeader) -> RequestHeader {
    let mut head = original.clone();
    head.set_version(http::Version::HTTP_11);
    if head.headers.get(header::HOST).is_none() {
        if let Some(authority) = original.uri.authority() {
            if let Ok(host) = HeaderValue::from_str(authority.as_str()) {
                head.insert_header(header::HOST, host).ok();
            }
        }
    }
    if let Some(origin_form) = original.uri.path_and_query() {
        if let Ok(uri) = origin_form.as_str().parse() {
            head.set_uri(uri);
        }
    }
    head.remove_header(&header::TRANSFER_ENCODING);
    head.remove_header(&header::CONNECTION);
    head.remove_header(&header::EXPECT);
    head.insert_header(MIRROR_HEADER, HeaderValue::from_static("1"))
        .ok();
    head
}

/// Sends `copy` in a task of its own; its slot is released when the task ends.
fn send(copy: MirrorCopy, connector: &Arc<Connector>) {
    let MirrorCopy {
        route,
        mut head,
        body,
        _slot: slot,
    } = copy;
    let body = body.freeze();
    head.insert_header(header::CONTENT_LENGTH, HeaderValue::from(body.len()))
        .ok();
    let connector = Arc::clone(connector);
    tokio::spawn(async move {
        let _slot = slot;
        let Some(mirror) = &route.mirror else {
            return;
        };
        let Some(target) = mirror.upstream.select(&[], 0) else {
            mirror.counters.unavailable.inc();
            return;
        };
        let peer = target.peer();
        let options = &peer.options;
        // The pool's connect and read timeouts bound the whole exchange.
        let deadline = options.connection_timeout.unwrap_or(Duration::from_secs(5))
            + options.read_timeout.unwrap_or(Duration::from_secs(60));
        let exchange = async {
            let (mut session, _reused) = connector.get_http_session(&*peer).await?;
            session.write_request_header(Box::new(head)).await?;
            if !body.is_empty() {
                session.write_request_body(body, true).await?;
            }
            session.finish_request_body().await?;
            session.read_response_header().await?;
            while session.read_response_body().await?.is_some() {}
            connector
                .release_http_session(session, &*peer, peer.options.idle_timeout)
                .await;
            Ok::<(), Box<pingora_error::Error>>(())
        };
        match tokio::time::timeout(deadline, exchange).await {
            Ok(Ok(())) => mirror.counters.sent.inc(),
            _ => mirror.counters.failed.inc(),
        }
    });
}
