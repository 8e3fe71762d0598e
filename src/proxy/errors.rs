//! The one place error responses are built (SPEC §4), and the client-facing error for
//! a failure while proxying.

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use pingora_error::{Error, ErrorSource, ErrorType};
use pingora_http::ResponseHeader;
use portcullis_plugins::{ErrorCode, Rejection};
use serde::Serialize;

use super::context::RequestCtx;
use super::grpc;

#[derive(Serialize)]
struct Body<'a> {
    error: Detail<'a>,
}

#[derive(Serialize)]
struct Detail<'a> {
    code: &'static str,
    message: &'a str,
    request_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after: Option<u64>,
}

/// The JSON error response for `rejection`, headers and body.
pub fn error_response(rejection: &Rejection, request_id: &str) -> (ResponseHeader, Bytes) {
    let body = serde_json::to_vec(&Body {
        error: Detail {
            code: rejection.code.as_str(),
            message: &rejection.message,
            request_id,
            retry_after: rejection.retry_after,
        },
    })
    .unwrap_or_default();
    let mut header =
        ResponseHeader::build(rejection.code.status(), Some(4 + rejection.headers.len()))
            .unwrap_or_else(|_| ResponseHeader::build(500, None).expect("500 is a valid status"));
    // Inserting well-formed static names and numeric values cannot fail.
    let _ = header.insert_header(CONTENT_TYPE, "application/json");
    let _ = header.insert_header(CONTENT_LENGTH, body.len());
    if let Some(seconds) = rejection.retry_after {
        let _ = header.insert_header(RETRY_AFTER, seconds);
    }
    for (name, value) in &rejection.headers {
        let _ = header.append_header(name.clone(), value.clone());
    }
    (header, Bytes::from(body))
}

/// The error for `rejection` as a gRPC client reads it: HTTP 200 and a trailers-only
/// answer (`grpc-status`, `grpc-message` in the headers, no body), see `grpc.rs`. The
/// JSON code travels in `x-portcullis-error` for logs and humans.
pub fn grpc_error_response(rejection: &Rejection) -> ResponseHeader {
    let status = grpc::status_for(rejection.code.status());
    let mut header = ResponseHeader::build(200, Some(6 + rejection.headers.len()))
        .unwrap_or_else(|_| ResponseHeader::build(500, None).expect("500 is a valid status"));
    // Well-formed static names and values that are numbers or percent-encoded ASCII.
    let _ = header.insert_header(CONTENT_TYPE, "application/grpc");
    let _ = header.insert_header("grpc-status", u32::from(status));
    let _ = header.insert_header("grpc-message", grpc::encode_message(&rejection.message));
    let _ = header.insert_header("x-portcullis-error", rejection.code.as_str());
    if let Some(seconds) = rejection.retry_after {
        let _ = header.insert_header(RETRY_AFTER, seconds);
    }
    for (name, value) in &rejection.headers {
        let _ = header.append_header(name.clone(), value.clone());
    }
    header
}

/// The client-facing error for a request head Pingora's parser refused: 431 when it has
/// more header fields, or is larger, than the parser reads; 400 for anything malformed.
pub(super) fn unreadable_request(e: &Error) -> Rejection {
    let too_many =
        e.root_cause().downcast_ref::<httparse::Error>() == Some(&httparse::Error::TooManyHeaders);
    // Pingora 0.9.1 says so only in the context of the error it returns.
    let too_large = e
        .context
        .as_ref()
        .is_some_and(|context| context.as_str().starts_with("Request header larger than"));
    if too_many || too_large {
        Rejection::new(
            ErrorCode::HeadersTooLarge,
            "the request head has more header fields, or bytes, than the gateway reads",
        )
    } else {
        Rejection::new(ErrorCode::BadRequest, "malformed request head")
    }
}

/// The client-facing error for a proxy failure.
pub(super) fn rejection_for(e: &Error, ctx: &RequestCtx) -> Rejection {
    let upstream = ctx.upstream.as_ref().map_or("upstream", |u| &*u.name);
    let (code, message) = match e.etype() {
        ErrorType::HTTPStatus(503) if ctx.error == Some(ErrorCode::UpstreamUnavailable) => (
            ErrorCode::UpstreamUnavailable,
            format!("{upstream} has no healthy target"),
        ),
        // The client's side: its request body stopped arriving (`server.body_read_timeout`).
        ErrorType::ReadTimedout if e.esource() == &ErrorSource::Downstream => (
            ErrorCode::RequestTimeout,
            "the request body stopped arriving".to_string(),
        ),
        ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout => (
            ErrorCode::UpstreamTimeout,
            format!("{upstream} did not answer in time"),
        ),
        ErrorType::HTTPStatus(400) | ErrorType::InvalidHTTPHeader => {
            (ErrorCode::BadRequest, "malformed request".to_string())
        }
        _ => match e.esource() {
            ErrorSource::Upstream => (
                ErrorCode::UpstreamError,
                format!("{upstream} failed: {}", e.etype().as_str()),
            ),
            ErrorSource::Downstream => (ErrorCode::BadRequest, "malformed request".to_string()),
            ErrorSource::Internal | ErrorSource::Unset => {
                log::error!(
                    "request {} failed inside the gateway: {e}",
                    ctx.request_id()
                );
                (ErrorCode::Internal, "internal error".to_string())
            }
        },
    };
    Rejection::new(code, message)
}
