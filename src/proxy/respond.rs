//! Responses the gateway writes itself: fixed `respond:` answers and errors. Both get the
//! same decoration (request id, plugin response hooks) as proxied responses.

use http::header::CONTENT_LENGTH;
use pingora::protocols::http::HttpTask;
use pingora::proxy::{FailToProxy, Session};
use pingora_error::{Error, ErrorSource, ErrorType, Result};
use pingora_http::ResponseHeader;
use portcullis_plugins::{Answer, Rejection};

use super::context::RequestCtx;
use super::errors::{error_response, grpc_error_response, rejection_for};
use super::forwarding::KNOWN_X_CACHE;
use crate::model::gateway::FixedResponse;

/// Adds what every response carries: the request id, the plugins' response headers and
/// the route plugins' response hooks.
pub(super) fn decorate(resp: &mut ResponseHeader, ctx: &mut RequestCtx) {
    if let Some(gateway) = &ctx.gateway {
        let _ = resp.insert_header(
            gateway.tracing.request_id_header.key(),
            ctx.request_id.clone(),
        );
    }
    if let Some(cache) = ctx.cache {
        let _ = resp.insert_header(KNOWN_X_CACHE.key(), cache.header());
    }
    for (name, value) in ctx.plugins.response_headers.drain(..) {
        let _ = resp.append_header(name, value);
    }
    if let Some(route) = &ctx.route {
        route.plugins.response(resp, &mut ctx.plugins);
    }
}

/// Answers with the error for `rejection`; always returns `Ok(true)` ("answered") unless
/// the client is gone.
pub(super) async fn reject(
    session: &mut Session,
    ctx: &mut RequestCtx,
    rejection: Rejection,
) -> Result<bool> {
    ctx.error = Some(rejection.code);
    if ctx.grpc {
        let mut header = grpc_error_response(&rejection);
        decorate(&mut header, ctx);
        // Trailers-only: one HEADERS frame that ends the stream (an empty DATA frame
        // after it would be a protocol error to a gRPC client).
        let task = HttpTask::Header(Box::new(header), true);
        session
            .downstream_session
            .response_duplex_vec(vec![task])
            .await?;
        return Ok(true);
    }
    let (header, body) = error_response(&rejection, ctx.request_id());
    send(session, ctx, header, body).await
}

/// Answers a failure while proxying with its error (when nothing of the response was
/// sent yet and the client is still there).
pub(super) async fn proxy_failure(
    session: &mut Session,
    ctx: &mut RequestCtx,
    e: &Error,
) -> FailToProxy {
    let rejection = ctx
        .rejection
        .take()
        .unwrap_or_else(|| rejection_for(e, ctx));
    let code = rejection.code.status().as_u16();
    let client_gone = e.esource() == &ErrorSource::Downstream
        && matches!(
            e.etype(),
            ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed
        );
    if client_gone {
        ctx.error = Some(rejection.code);
        return FailToProxy {
            error_code: 0,
            can_reuse_downstream: false,
        };
    }
    if session.response_written().is_none() {
        let _ = reject(session, ctx, rejection).await;
    } else {
        ctx.error = Some(rejection.code);
    }
    FailToProxy {
        error_code: code,
        can_reuse_downstream: false,
    }
}

/// Answers with what a plugin decided to answer itself (a CORS preflight).
pub(super) async fn answer(
    session: &mut Session,
    ctx: &mut RequestCtx,
    answer: Answer,
) -> Result<bool> {
    let mut header = ResponseHeader::build(answer.status, Some(answer.headers.len() + 2))?;
    for (name, value) in answer.headers {
        header.append_header(name, value)?;
    }
    header.insert_header(CONTENT_LENGTH, 0)?;
    send(session, ctx, header, bytes::Bytes::new()).await
}

/// Answers with a route's fixed response.
pub(super) async fn fixed(
    session: &mut Session,
    ctx: &mut RequestCtx,
    fixed: &FixedResponse,
) -> Result<bool> {
    let mut header = ResponseHeader::build(fixed.status, Some(fixed.headers.len() + 2))?;
    for (name, value) in &fixed.headers {
        header.append_header(name.clone(), value.clone())?;
    }
    header.insert_header(CONTENT_LENGTH, fixed.body.len())?;
    send(session, ctx, header, fixed.body.clone()).await
}

async fn send(
    session: &mut Session,
    ctx: &mut RequestCtx,
    mut header: ResponseHeader,
    body: bytes::Bytes,
) -> Result<bool> {
    decorate(&mut header, ctx);
    if let Some(route) = &ctx.route {
        super::compression::filter_response(session, route.compression.as_deref(), &mut header);
    }
    let head_only = session.req_header().method == http::Method::HEAD || body.is_empty();
    session
        .write_response_header(Box::new(header), head_only)
        .await?;
    if !head_only {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(true)
}
