//! Request ids and W3C trace context (`traceparent`), and whether the request's trace is
//! exported (parent-based sampling: a client's sampled flag decides, else the ratio).

use pingora_http::RequestHeader;
use rand::Rng;

use crate::model::gateway::Tracing;
use crate::model::tracing::Sampler;

/// Longest request id accepted from a client.
const MAX_REQUEST_ID: usize = 128;

/// The request's id (the client's when valid, else a new one) and, when `tracing` asks
/// for it (propagation or export), its trace context.
pub(super) fn identify(req: &RequestHeader, tracing: &Tracing) -> (String, Option<TraceContext>) {
    let id = match req.headers.get(&tracing.request_id_header) {
        Some(id) if valid_request_id(id.as_bytes()) => {
            String::from_utf8_lossy(id.as_bytes()).into_owned()
        }
        _ => new_request_id(),
    };
    let sampler = tracing.otlp.as_ref().map(|otlp| &otlp.sampler);
    let trace = (tracing.traceparent || sampler.is_some()).then(|| {
        let incoming = req.headers.get("traceparent").map(|value| value.as_bytes());
        TraceContext::continue_or_start(incoming, sampler)
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
    /// The client's span this hop continues (its `traceparent` parent id).
    pub parent_id: Option<u64>,
    /// When the trace is exported: the id of the span that sends the request upstream
    /// (`upstream response`), which the upstream's `traceparent` names as its parent.
    pub upstream_span: Option<u64>,
}

impl TraceContext {
    /// Continues the client's `traceparent` when it is valid (same trace id and flags,
    /// a new span id for this hop), else starts a new trace. With a `sampler` (spans are
    /// exported), a continued trace is exported when the client's sampled flag is set, a
    /// new one when the sampler picks it (and its flags say so); without one, a new trace
    /// is marked sampled for the upstream to decide.
    pub fn continue_or_start(incoming: Option<&[u8]>, sampler: Option<&Sampler>) -> Self {
        let mut rng = rand::thread_rng();
        let span_id = format!("{:016x}", rng.gen_range(1..=u64::MAX));
        let (trace_id, flags, parent_id, exported) = match incoming.and_then(parse_traceparent) {
            Some((trace_id, parent_id, flags)) => {
                let sampled = u8::from_str_radix(&flags, 16).is_ok_and(|flags| flags & 1 == 1);
                (
                    trace_id,
                    flags,
                    Some(parent_id),
                    sampler.is_some() && sampled,
                )
            }
            None => {
                let trace_id = rng.gen_range(1..=u128::MAX);
                let exported = sampler.is_some_and(|sampler| sampler.samples(trace_id));
                let flags = if exported || sampler.is_none() {
                    "01"
                } else {
                    "00"
                };
                (
                    format!("{trace_id:032x}"),
                    flags.to_string(),
                    None,
                    exported,
                )
            }
        };
        Self {
            trace_id,
            span_id,
            flags,
            parent_id,
            upstream_span: exported.then(|| rng.gen_range(1..=u64::MAX)),
        }
    }

    /// Whether this request's spans are exported.
    pub fn exported(&self) -> bool {
        self.upstream_span.is_some()
    }

    /// The `traceparent` header value for the upstream request: its parent is the
    /// `upstream response` span when the trace is exported, else this hop.
    pub fn header(&self) -> String {
        match self.upstream_span {
            Some(upstream) => format!("00-{}-{upstream:016x}-{}", self.trace_id, self.flags),
            None => format!("00-{}-{}-{}", self.trace_id, self.span_id, self.flags),
        }
    }
}

/// `(trace_id, parent_id, flags)` of a valid version-00 (or future-version) traceparent.
fn parse_traceparent(value: &[u8]) -> Option<(String, u64, String)> {
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
    let parent_id = u64::from_str_radix(parent_id, 16).ok().filter(|_| valid)?;
    Some((trace_id.to_string(), parent_id, flags.to_string()))
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
        let trace = TraceContext::continue_or_start(Some(incoming.as_bytes()), None);
        assert_eq!(trace.trace_id, TRACE);
        assert_eq!(trace.flags, "01");
        assert_ne!(trace.span_id, "00f067aa0ba902b7");
        assert_eq!(trace.header().len(), 55);
        assert_eq!(trace.parent_id, Some(0x00f0_67aa_0ba9_02b7));
        assert!(!trace.exported());
    }

    #[test]
    fn the_clients_sampled_flag_decides_export() {
        let all = Sampler::new(1.0);
        let none = Sampler::new(0.0);
        let unsampled = format!("00-{TRACE}-00f067aa0ba902b7-00");
        let trace = TraceContext::continue_or_start(Some(unsampled.as_bytes()), Some(&all));
        assert!(!trace.exported());
        assert!(trace.header().ends_with("-00"));
        let sampled = format!("00-{TRACE}-00f067aa0ba902b7-01");
        let trace = TraceContext::continue_or_start(Some(sampled.as_bytes()), Some(&none));
        assert!(trace.exported());
        let upstream = format!("{:016x}", trace.upstream_span.unwrap_or_default());
        assert_eq!(trace.header(), format!("00-{TRACE}-{upstream}-01"));
        let fresh = TraceContext::continue_or_start(None, Some(&none));
        assert!(!fresh.exported());
        assert_eq!(fresh.flags, "00");
        assert!(TraceContext::continue_or_start(None, Some(&all)).exported());
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
            let trace = TraceContext::continue_or_start(Some(bad.as_bytes()), None);
            assert_ne!(trace.trace_id, TRACE, "{bad}");
            assert_eq!(trace.trace_id.len(), 32);
        }
    }
}
