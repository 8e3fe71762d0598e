//! Request ids and W3C trace context (`traceparent`), and whether the request's trace is
//! exported (parent-based sampling: a client's sampled flag decides, else the ratio).
//!
//! Ids are kept as fixed-size lowercase-hex arrays and the request id as one
//! `HeaderValue`: the upstream request, the response and the access log share it without
//! formatting or copying it per use.

use bytes::Bytes;
use http::HeaderValue;
use pingora_http::RequestHeader;
use rand::Rng;

use crate::model::gateway::Tracing;
use crate::model::tracing::Sampler;

/// Longest request id accepted from a client.
const MAX_REQUEST_ID: usize = 128;

/// Length of a version-00 `traceparent`: `vv-<32 hex>-<16 hex>-ff`.
const TRACEPARENT_LEN: usize = 55;

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// The request's id (the client's when valid, else a new one) and, when `tracing` asks
/// for it (propagation or export), its trace context.
pub(super) fn identify(
    req: &RequestHeader,
    tracing: &Tracing,
) -> (HeaderValue, Option<TraceContext>) {
    let id = match req.headers.get(tracing.request_id_header.name()) {
        // The client's bytes, shared (the header map holds them already).
        Some(id) if valid_request_id(id.as_bytes()) => id.clone(),
        _ => new_request_id_value(),
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
    String::from(Hex::from_u128(rand::thread_rng().gen::<u128>()).as_str())
}

/// [`new_request_id`] as a header value: one allocation, holding the digits, which the
/// copies for the upstream request and the response share (a value made from a `Vec`
/// would allocate again on its first clone).
pub fn new_request_id_value() -> HeaderValue {
    let id = Hex::from_u128(rand::thread_rng().gen::<u128>());
    HeaderValue::from_maybe_shared(Bytes::from_owner(id)).unwrap_or(HeaderValue::from_static("-"))
}

/// `N` lowercase hex digits: an id as it is written in headers and logs.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Hex<const N: usize>([u8; N]);

impl Hex<32> {
    /// The 32 digits of `value`.
    pub fn from_u128(value: u128) -> Self {
        Self(std::array::from_fn(|i| {
            HEX_DIGITS[((value >> ((31 - i) * 4)) & 0xf) as usize]
        }))
    }
}

impl Hex<16> {
    /// The 16 digits of `value`.
    pub fn from_u64(value: u64) -> Self {
        Self(std::array::from_fn(|i| {
            HEX_DIGITS[((value >> ((15 - i) * 4)) & 0xf) as usize]
        }))
    }
}

impl<const N: usize> Hex<N> {
    /// `digits` when they are exactly `N` lowercase hex digits, not all zero (an
    /// all-zero trace or span id is invalid in W3C trace context).
    fn parse_nonzero(digits: &[u8]) -> Option<Self> {
        let digits: [u8; N] = digits.try_into().ok()?;
        let lower_hex = digits
            .iter()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        (lower_hex && digits.iter().any(|&b| b != b'0')).then_some(Self(digits))
    }

    /// The digits as bytes.
    pub fn as_bytes(&self) -> &[u8; N] {
        &self.0
    }

    /// The digits as text.
    pub fn as_str(&self) -> &str {
        // Only ever built from hex digits (ASCII).
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl<const N: usize> AsRef<[u8]> for Hex<N> {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl<const N: usize> std::fmt::Debug for Hex<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The value of two lowercase hex digits.
fn hex_byte(digits: &[u8]) -> Option<u8> {
    let digit = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    };
    match digits {
        &[high, low] => Some(digit(high)? << 4 | digit(low)?),
        _ => None,
    }
}

/// The value of 16 lowercase hex digits.
fn hex_u64(digits: &Hex<16>) -> u64 {
    digits.0.iter().fold(0, |value, &b| {
        let digit = match b {
            b'0'..=b'9' => b - b'0',
            _ => b - b'a' + 10,
        };
        value << 4 | u64::from(digit)
    })
}

/// The trace context of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// The trace id.
    pub trace_id: Hex<32>,
    /// This hop's span id.
    pub span_id: Hex<16>,
    /// The trace flags (sampled = 01).
    pub flags: u8,
    /// The client's span this hop continues (its `traceparent` parent id).
    pub parent_id: Option<u64>,
    /// When the trace is exported: the id of the span that sends the request upstream
    /// (`upstream response`), which the upstream's `traceparent` names as its parent.
    pub upstream_span: Option<u64>,
}

/// A valid incoming `traceparent`.
struct Incoming {
    trace_id: Hex<32>,
    parent_id: u64,
    flags: u8,
}

impl TraceContext {
    /// Continues the client's `traceparent` when it is valid (same trace id and flags,
    /// a new span id for this hop), else starts a new trace. With a `sampler` (spans are
    /// exported), a continued trace is exported when the client's sampled flag is set, a
    /// new one when the sampler picks it (and its flags say so); without one, a new trace
    /// is marked sampled for the upstream to decide.
    pub fn continue_or_start(incoming: Option<&[u8]>, sampler: Option<&Sampler>) -> Self {
        let mut rng = rand::thread_rng();
        let span_id = Hex::from_u64(rng.gen_range(1..=u64::MAX));
        let (trace_id, flags, parent_id, exported) = match incoming.and_then(parse_traceparent) {
            Some(incoming) => (
                incoming.trace_id,
                incoming.flags,
                Some(incoming.parent_id),
                sampler.is_some() && incoming.flags & 1 == 1,
            ),
            None => {
                let trace_id = rng.gen_range(1..=u128::MAX);
                let exported = sampler.is_some_and(|sampler| sampler.samples(trace_id));
                let flags = u8::from(exported || sampler.is_none());
                (Hex::from_u128(trace_id), flags, None, exported)
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

    /// The `traceparent` for the upstream request: its parent is the `upstream response`
    /// span when the trace is exported, else this hop.
    pub fn traceparent(&self) -> [u8; TRACEPARENT_LEN] {
        let parent = match self.upstream_span {
            Some(upstream) => Hex::from_u64(upstream),
            None => self.span_id,
        };
        let mut out = [b'-'; TRACEPARENT_LEN];
        out[..2].copy_from_slice(b"00");
        out[3..35].copy_from_slice(self.trace_id.as_bytes());
        out[36..52].copy_from_slice(parent.as_bytes());
        out[53] = HEX_DIGITS[usize::from(self.flags >> 4)];
        out[54] = HEX_DIGITS[usize::from(self.flags & 0xf)];
        out
    }

    /// [`Self::traceparent`] as a header value (one allocation: the value's bytes).
    pub fn header(&self) -> Option<HeaderValue> {
        HeaderValue::from_bytes(&self.traceparent()).ok()
    }
}

/// The trace id, parent id and flags of a valid version-00 (or future-version)
/// traceparent. Strict: exact field lengths, lowercase hex only, no all-zero ids, no
/// version `ff`, and nothing after a version-00 value.
fn parse_traceparent(value: &[u8]) -> Option<Incoming> {
    let value = value.trim_ascii();
    let (head, rest) = value.split_at_checked(TRACEPARENT_LEN)?;
    if head[2] != b'-' || head[35] != b'-' || head[52] != b'-' {
        return None;
    }
    let version = hex_byte(&head[..2])?;
    let continued = match version {
        0xff => return None,
        // Version 00 has exactly four fields; later versions may append more.
        0 => rest.is_empty(),
        _ => rest.is_empty() || (rest[0] == b'-' && rest.is_ascii()),
    };
    let trace_id = Hex::<32>::parse_nonzero(&head[3..35])?;
    let parent_id = Hex::<16>::parse_nonzero(&head[36..52])?;
    let flags = hex_byte(&head[53..])?;
    continued.then(|| Incoming {
        trace_id,
        parent_id: hex_u64(&parent_id),
        flags,
    })
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
        let value = new_request_id_value();
        assert_eq!(value.len(), 32);
        assert!(value.as_bytes().iter().all(u8::is_ascii_hexdigit));
        assert_eq!(value.as_bytes(), value.as_bytes().to_ascii_lowercase());
    }

    #[test]
    fn valid_traceparent_is_continued_with_a_new_span() {
        let incoming = format!("00-{TRACE}-00f067aa0ba902b7-01");
        let trace = TraceContext::continue_or_start(Some(incoming.as_bytes()), None);
        assert_eq!(trace.trace_id.as_str(), TRACE);
        assert_eq!(trace.flags, 1);
        assert_ne!(trace.span_id.as_str(), "00f067aa0ba902b7");
        let header = trace.header().expect("a valid header value");
        assert_eq!(
            header.to_str().ok(),
            Some(format!("00-{TRACE}-{}-01", trace.span_id.as_str()).as_str())
        );
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
        assert!(trace.traceparent().ends_with(b"-00"));
        let sampled = format!("00-{TRACE}-00f067aa0ba902b7-01");
        let trace = TraceContext::continue_or_start(Some(sampled.as_bytes()), Some(&none));
        assert!(trace.exported());
        let upstream = format!("{:016x}", trace.upstream_span.unwrap_or_default());
        assert_eq!(
            trace.traceparent().as_slice(),
            format!("00-{TRACE}-{upstream}-01").as_bytes()
        );
        let fresh = TraceContext::continue_or_start(None, Some(&none));
        assert!(!fresh.exported());
        assert_eq!(fresh.flags, 0);
        assert!(fresh.traceparent().ends_with(b"-00"));
        let unsampled_fresh = TraceContext::continue_or_start(None, None);
        assert!(unsampled_fresh.traceparent().ends_with(b"-01"));
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
            format!("00-{TRACE}-00f067aa0ba902b7-0"),
            format!("00-{TRACE}-00f067aa0ba902b7-001"),
            format!("00-{TRACE}0-00f067aa0ba902b7-01"),
            format!("00-{}-00f067aa0ba902b7-01", &TRACE[1..]),
            format!("00-{TRACE}-00F067AA0BA902B7-01"),
            format!("00-{TRACE}-00f067aa0ba902b7-0G"),
            format!("00-{TRACE}-00f067aa0ba902b7-1F"),
            format!("0-{TRACE}-00f067aa0ba902b7-01"),
            format!("0g-{TRACE}-00f067aa0ba902b7-01"),
            format!("00_{TRACE}-00f067aa0ba902b7-01"),
            format!("00-{TRACE}_00f067aa0ba902b7-01"),
            format!("00-{TRACE}-00f067aa0ba902b7_01"),
            format!("01-{TRACE}-00f067aa0ba902b7-01x"),
            format!("01-{TRACE}-00f067aa0ba902b7-01-\u{e9}"),
            format!("00-{TRACE}-00f067aa0ba902b7-01\u{a0}"),
            "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_string(),
            String::new(),
            "-".repeat(55),
        ] {
            let trace = TraceContext::continue_or_start(Some(bad.as_bytes()), None);
            assert_ne!(trace.trace_id.as_str(), TRACE, "{bad}");
            assert_eq!(trace.parent_id, None, "{bad}");
            assert_eq!(trace.flags, 1, "{bad}");
        }
    }

    #[test]
    fn traceparent_edges_that_are_valid() {
        for (good, flags) in [
            (format!("00-{TRACE}-00f067aa0ba902b7-00"), 0),
            (format!("00-{TRACE}-00f067aa0ba902b7-ff"), 0xff),
            (format!(" 00-{TRACE}-00f067aa0ba902b7-01\t"), 1),
            (format!("01-{TRACE}-00f067aa0ba902b7-03"), 3),
            (format!("01-{TRACE}-00f067aa0ba902b7-01-what-comes-next"), 1),
            (format!("fe-{TRACE}-00f067aa0ba902b7-01-"), 1),
        ] {
            let trace = TraceContext::continue_or_start(Some(good.as_bytes()), None);
            assert_eq!(trace.trace_id.as_str(), TRACE, "{good}");
            assert_eq!(trace.parent_id, Some(0x00f0_67aa_0ba9_02b7), "{good}");
            assert_eq!(trace.flags, flags, "{good}");
            // The upstream always gets version 00 with the client's flags.
            let flags_hex = format!("{flags:02x}");
            assert!(trace.traceparent().starts_with(b"00-"));
            assert!(trace.traceparent().ends_with(flags_hex.as_bytes()));
        }
        let max = format!("00-{}-{}-01", "f".repeat(32), "f".repeat(16));
        let trace = TraceContext::continue_or_start(Some(max.as_bytes()), None);
        assert_eq!(trace.parent_id, Some(u64::MAX));
    }

    #[test]
    fn hex_ids_round_trip() {
        assert_eq!(
            Hex::from_u128(0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736).as_str(),
            TRACE
        );
        assert_eq!(Hex::from_u64(1).as_str(), "0000000000000001");
        assert_eq!(Hex::from_u64(u64::MAX).as_str(), "ffffffffffffffff");
        for value in [1, 0x00f0_67aa_0ba9_02b7, u64::MAX] {
            assert_eq!(hex_u64(&Hex::from_u64(value)), value);
        }
    }
}
