//! Request ids and W3C trace context (`traceparent`).

use pingora_http::RequestHeader;
use rand::Rng;

use crate::model::gateway::Tracing;

/// Longest request id accepted from a client.
const MAX_REQUEST_ID: usize = 128;

/// The request's id (the client's when valid, else a new one) and, when `tracing` asks
/// for it, its trace context.
pub(super) fn identify(req: &RequestHeader, tracing: &Tracing) -> (String, Option<TraceContext>) {
    let id = match req.headers.get(&tracing.request_id_header) {
        Some(id) if valid_request_id(id.as_bytes()) => {
            String::from_utf8_lossy(id.as_bytes()).into_owned()
        }
        _ => new_request_id(),
    };
    let trace = tracing.traceparent.then(|| {
        let incoming = req.headers.get("traceparent").map(|value| value.as_bytes());
        TraceContext::continue_or_start(incoming)
    });
    (id, trace)
}

/// Whether a client-sent request id is safe to keep: 1–128 characters of
/// `[A-Za-z0-9._:-]` (so it can go into logs and headers verbatim).
pub fn valid_request_id(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= MAX_REQUEST_ID
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// A new request id: 32 lowercase hex digits (128 random bits).
pub fn new_request_id() -> String {
    format!("{:032x}", rand::thread_rng().gen::<u128>())
}

/// The trace context of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// 32 lowercase hex digits.
    pub trace_id: String,
    /// This hop's span id: 16 lowercase hex digits.
    pub span_id: String,
    /// The trace flags (sampled = 01).
    pub flags: String,
}

impl TraceContext {
    /// Continues the client's `traceparent` when it is valid (same trace id and flags,
    /// a new span id for this hop), else starts a new sampled trace.
    pub fn continue_or_start(incoming: Option<&[u8]>) -> Self {
        let mut rng = rand::thread_rng();
        let span_id = format!("{:016x}", rng.gen_range(1..=u64::MAX));
        match incoming.and_then(parse_traceparent) {
            Some((trace_id, flags)) => Self {
                trace_id,
                span_id,
                flags,
            },
            None => Self {
                trace_id: format!("{:032x}", rng.gen_range(1..=u128::MAX)),
                span_id,
                flags: "01".to_string(),
            },
        }
    }

    /// The `traceparent` header value for the upstream request.
    pub fn header(&self) -> String {
        format!("00-{}-{}-{}", self.trace_id, self.span_id, self.flags)
    }
}

/// `(trace_id, flags)` of a valid version-00 (or future-version) traceparent.
fn parse_traceparent(value: &[u8]) -> Option<(String, String)> {
    let text = std::str::from_utf8(value).ok()?.trim();
    let mut parts = text.split('-');
    let (version, trace_id, parent_id, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let lower_hex = |s: &str, len: usize| {
        s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    let all_zero = |s: &str| s.bytes().all(|b| b == b'0');
    let valid = lower_hex(version, 2)
        && version != "ff"
        // Version 00 has exactly four fields; later versions may append more.
        && (version != "00" || parts.next().is_none())
        && lower_hex(trace_id, 32)
        && !all_zero(trace_id)
        && lower_hex(parent_id, 16)
        && !all_zero(parent_id)
        && lower_hex(flags, 2);
    valid.then(|| (trace_id.to_string(), flags.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

    #[test]
    fn request_ids_are_checked() {
        assert!(valid_request_id(b"abc-123_x.y:z"));
        assert!(!valid_request_id(b""));
        assert!(!valid_request_id(b"has space"));
        assert!(!valid_request_id("ünï".as_bytes()));
        assert!(!valid_request_id(&[b'a'; 129]));
        let id = new_request_id();
        assert_eq!(id.len(), 32);
        assert!(valid_request_id(id.as_bytes()));
    }

    #[test]
    fn valid_traceparent_is_continued_with_a_new_span() {
        let incoming = format!("00-{TRACE}-00f067aa0ba902b7-01");
        let trace = TraceContext::continue_or_start(Some(incoming.as_bytes()));
        assert_eq!(trace.trace_id, TRACE);
        assert_eq!(trace.flags, "01");
        assert_ne!(trace.span_id, "00f067aa0ba902b7");
        assert_eq!(trace.header().len(), 55);
    }

    #[test]
    fn invalid_traceparent_starts_a_new_trace() {
        for bad in [
            "garbage".to_string(),
            format!("ff-{TRACE}-00f067aa0ba902b7-01"),
            format!("00-{}-00f067aa0ba902b7-01", "0".repeat(32)),
            format!("00-{TRACE}-0000000000000000-01"),
            format!("00-{}-00f067aa0ba902b7-01", TRACE.to_uppercase()),
            format!("00-{TRACE}-00f067aa0ba902b7-01-extra"),
        ] {
            let trace = TraceContext::continue_or_start(Some(bad.as_bytes()));
            assert_ne!(trace.trace_id, TRACE, "{bad}");
            assert_eq!(trace.trace_id.len(), 32);
        }
    }
}
