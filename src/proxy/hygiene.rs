//! Framing checks a request must pass before anything else looks at it: the defences
//! against request smuggling that Pingora's parser leaves to the application.
//!
//! Pingora already refuses (with a bare 400) several Content-Length values, a final
//! Transfer-Encoding other than `chunked`, malformed lengths and duplicate `Host`
//! headers. When both Content-Length and Transfer-Encoding are sent it follows RFC 9112
//! (drops Content-Length, closes the connection afterwards); a gateway in front of
//! applications does better to refuse such a request, which no honest client sends, so
//! that check is made here on the raw header block, with the other ambiguities Pingora
//! lets through, each answered with a JSON 400.

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::Version;
use pingora_http::RequestHeader;
use portcullis_plugins::{ErrorCode, Rejection};

/// Refuses requests whose framing or target is ambiguous. `raw_header` gives the header
/// block as received; it is only read for the rare request with Transfer-Encoding.
pub fn check(req: &RequestHeader, raw_header: impl FnOnce() -> Bytes) -> Result<(), Rejection> {
    let headers = &req.headers;
    let sent_content_length =
        || headers.contains_key(CONTENT_LENGTH) || declares_content_length(&raw_header());
    if headers.contains_key(TRANSFER_ENCODING) && sent_content_length() {
        // RFC 9112 §6.1 lets a server pick Transfer-Encoding, but an intermediary that
        // forwards either header invites a desync with the next hop: refuse outright.
        return Err(bad_request(
            "both Content-Length and Transfer-Encoding are set",
        ));
    }
    if req.version == Version::HTTP_11 && !headers.contains_key(HOST) && req.uri.host().is_none() {
        return Err(bad_request("HTTP/1.1 requests need a Host header"));
    }
    Ok(())
}

/// Whether a raw header block has a `Content-Length` line (any case).
fn declares_content_length(raw: &[u8]) -> bool {
    const NAME: &[u8] = b"content-length:";
    raw.split(|&b| b == b'\n').skip(1).any(|line| {
        let line = line.trim_ascii_start();
        line.len() >= NAME.len() && line[..NAME.len()].eq_ignore_ascii_case(NAME)
    })
}

fn bad_request(message: &str) -> Rejection {
    Rejection::new(ErrorCode::BadRequest, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)]) -> RequestHeader {
        crate::model::request::testing::request_to("POST", "/x", headers)
    }

    #[test]
    fn content_length_with_transfer_encoding_is_refused() {
        let req = request(&[
            ("Host", "a"),
            ("Content-Length", "4"),
            ("Transfer-Encoding", "chunked"),
        ]);
        assert_eq!(
            check(&req, Bytes::new).expect_err("refused").code,
            ErrorCode::BadRequest
        );
    }

    #[test]
    fn a_content_length_pingora_dropped_is_found_in_the_raw_header() {
        let req = request(&[("Host", "a"), ("Transfer-Encoding", "chunked")]);
        let raw = Bytes::from_static(
            b"POST /x HTTP/1.1\r\nHost: a\r\ncontent-LENGTH: 4\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        assert!(check(&req, || raw).is_err());
        let clean = Bytes::from_static(
            b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        assert!(check(&req, || clean).is_ok());
    }

    #[test]
    fn http11_without_host_is_refused_and_a_normal_request_passes() {
        assert!(check(&request(&[("Content-Length", "4")]), Bytes::new).is_err());
        assert!(check(
            &request(&[("Host", "a"), ("Content-Length", "4")]),
            Bytes::new
        )
        .is_ok());
    }
}
