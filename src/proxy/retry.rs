//! Retry rules the proxy phases share: which requests may be sent twice, the backoff,
//! and the reason label.

use std::time::Duration;

use pingora::proxy::Session;

/// Whether the request may be sent twice: an idempotent method (GET, HEAD, OPTIONS,
/// PUT, DELETE) or an `Idempotency-Key`, and a body that is still fully buffered.
pub(super) fn retriable_request(session: &Session) -> bool {
    let req = session.req_header();
    let idempotent = matches!(
        req.method,
        http::Method::GET
            | http::Method::HEAD
            | http::Method::OPTIONS
            | http::Method::PUT
            | http::Method::DELETE
    ) || req.headers.contains_key("idempotency-key");
    idempotent && !session.as_ref().retry_buffer_truncated()
}

/// The `reason` label of a status retry.
pub(super) fn status_reason(status: u16) -> &'static str {
    match status {
        502 => "502",
        503 => "503",
        504 => "504",
        _ => "status",
    }
}

/// Jittered exponential backoff: `base × 2^(retry-1)`, scaled by a random 50–100%.
pub(super) fn backoff(base: Duration, retry: u32) -> Duration {
    use rand::Rng;
    let exponential = base.saturating_mul(1u32 << retry.saturating_sub(1).min(10));
    exponential.mul_f64(rand::thread_rng().gen_range(0.5..=1.0))
}
