//! gRPC requests (`content-type: application/grpc*`): the deadline they carry
//! (`grpc-timeout`), and the gRPC status a gateway refusal becomes, since a gRPC client
//! reads `grpc-status`, never a JSON body (the response itself is built in `errors.rs`).

use std::time::Duration;

use http::header::CONTENT_TYPE;
use http::StatusCode;
use pingora::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorType, Result};
use pingora_http::RequestHeader;
use portcullis_plugins::{ErrorCode, Rejection};

use super::context::RequestCtx;

/// Longest `grpc-timeout` honoured (the gRPC spec allows 8 digits of hours).
const LONGEST_DEADLINE: Duration = Duration::from_secs(100 * 24 * 3600);

/// Whether the request is a gRPC call (`application/grpc`, `application/grpc+proto`, …).
pub(super) fn is_grpc(req: &RequestHeader) -> bool {
    req.headers.get(CONTENT_TYPE).is_some_and(|value| {
        let value = value.as_bytes();
        value.len() >= 16
            && value[..16].eq_ignore_ascii_case(b"application/grpc")
            && matches!(value.get(16), None | Some(b'+' | b';'))
    })
}

/// Notes whether the request is a gRPC call and its deadline.
pub(super) fn inspect(req: &RequestHeader, ctx: &mut RequestCtx) -> Result<(), Rejection> {
    ctx.grpc = is_grpc(req);
    if ctx.grpc {
        ctx.deadline = deadline(req)?;
    }
    Ok(())
}

/// Bounds the upstream read timeout by what is left of the call's deadline; a deadline
/// already past fails at once (answered as `DEADLINE_EXCEEDED`).
pub(super) fn bound_read_timeout(peer: &mut HttpPeer, ctx: &RequestCtx) -> Result<()> {
    let Some(deadline) = ctx.deadline else {
        return Ok(());
    };
    let left = deadline.saturating_sub(ctx.started.elapsed());
    if left.is_zero() {
        return Error::e_explain(ErrorType::ReadTimedout, "grpc-timeout passed");
    }
    let read = peer
        .options
        .read_timeout
        .map_or(left, |read| read.min(left));
    peer.options.read_timeout = Some(read);
    Ok(())
}

/// The call's deadline from `grpc-timeout` (`1-8 digits` then `H M S m u n`), if any.
pub(super) fn deadline(req: &RequestHeader) -> Result<Option<Duration>, Rejection> {
    let Some(value) = req.headers.get("grpc-timeout") else {
        return Ok(None);
    };
    parse_timeout(value.as_bytes()).map(Some).ok_or_else(|| {
        Rejection::new(
            ErrorCode::BadRequest,
            "grpc-timeout must be 1 to 8 digits and a unit (H, M, S, m, u or n)",
        )
    })
}

fn parse_timeout(value: &[u8]) -> Option<Duration> {
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let amount: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    let timeout = match unit {
        b'H' => Duration::from_secs(amount * 3600),
        b'M' => Duration::from_secs(amount * 60),
        b'S' => Duration::from_secs(amount),
        b'm' => Duration::from_millis(amount),
        b'u' => Duration::from_micros(amount),
        b'n' => Duration::from_nanos(amount),
        _ => return None,
    };
    Some(timeout.min(LONGEST_DEADLINE))
}

/// The gRPC status code (and its name) for a refusal with HTTP status `status`: SPEC §9,
/// and for the rest the gRPC project's HTTP-to-gRPC mapping, with client errors as
/// `INVALID_ARGUMENT` (the gateway refused what the client sent).
pub(super) fn status_for(status: StatusCode) -> u8 {
    match status.as_u16() {
        401 => 16,                  // UNAUTHENTICATED
        403 => 7,                   // PERMISSION_DENIED
        404 | 405 | 501 => 12,      // UNIMPLEMENTED
        413 | 414 | 429 | 431 => 8, // RESOURCE_EXHAUSTED
        502 | 503 => 14,            // UNAVAILABLE
        504 => 4,                   // DEADLINE_EXCEEDED
        400..=499 => 3,             // INVALID_ARGUMENT
        _ => 13,                    // INTERNAL
    }
}

/// `grpc-message` is percent-encoded: every byte outside printable ASCII, and `%`.
pub(super) fn encode_message(message: &str) -> String {
    let mut encoded = String::with_capacity(message.len());
    for &byte in message.as_bytes() {
        if (0x20..=0x7e).contains(&byte) && byte != b'%' {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)]) -> RequestHeader {
        let mut req = RequestHeader::build("POST", b"/svc/Method", None).expect("request");
        for (name, value) in headers {
            req.append_header(name.to_string(), *value).expect("header");
        }
        req
    }

    #[test]
    fn recognises_grpc_content_types_only() {
        assert!(is_grpc(&request(&[("content-type", "application/grpc")])));
        assert!(is_grpc(&request(&[(
            "content-type",
            "application/grpc+proto"
        )])));
        assert!(is_grpc(&request(&[(
            "content-type",
            "Application/GRPC;x=1"
        )])));
        assert!(!is_grpc(&request(&[("content-type", "application/grpcx")])));
        assert!(!is_grpc(&request(&[("content-type", "application/json")])));
        assert!(!is_grpc(&request(&[])));
    }

    #[test]
    fn parses_grpc_timeouts_and_refuses_malformed_ones() {
        let at = |value| deadline(&request(&[("grpc-timeout", value)]));
        assert_eq!(at("250m").ok(), Some(Some(Duration::from_millis(250))));
        assert_eq!(at("2S").ok(), Some(Some(Duration::from_secs(2))));
        assert_eq!(at("1H").ok(), Some(Some(Duration::from_secs(3600))));
        assert_eq!(at("99999999H").ok(), Some(Some(LONGEST_DEADLINE)));
        assert_eq!(at("7u").ok(), Some(Some(Duration::from_micros(7))));
        for bad in [
            "",
            "S",
            "10",
            "123456789S",
            "1.5S",
            "-1S",
            "10s",
            "1 S",
            "١S",
        ] {
            assert!(at(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(deadline(&request(&[])).ok(), Some(None));
    }

    #[test]
    fn maps_refusals_to_grpc_status() {
        let code = |status: u16| status_for(StatusCode::from_u16(status).expect("status"));
        assert_eq!(code(401), 16);
        assert_eq!(code(403), 7);
        assert_eq!(code(404), 12);
        assert_eq!(code(429), 8);
        assert_eq!(code(413), 8);
        assert_eq!(code(431), 8);
        assert_eq!(code(502), 14);
        assert_eq!(code(503), 14);
        assert_eq!(code(504), 4);
        assert_eq!(code(400), 3);
        assert_eq!(code(500), 13);
    }

    #[test]
    fn percent_encodes_the_message() {
        assert_eq!(encode_message("no key"), "no key");
        assert_eq!(encode_message("50% é\n"), "50%25 %C3%A9%0A");
    }
}
