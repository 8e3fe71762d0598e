//! The one place error responses are built (SPEC §4).

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use pingora_http::ResponseHeader;
use portcullis_plugins::Rejection;
use serde::Serialize;

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
