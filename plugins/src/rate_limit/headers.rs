//! The rate-limit response headers (SPEC §5): the IETF draft's `RateLimit-Policy` and
//! `RateLimit`, and the legacy `X-RateLimit-Limit`, `-Remaining` and `-Reset`.

use std::io::Write;

use bytes::Bytes;
use http::header::InvalidHeaderValue;
use http::{HeaderName, HeaderValue};
use pingora_http::ResponseHeader;

use super::Outcome;

static POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
static RATE_LIMIT: HeaderName = HeaderName::from_static("ratelimit");
static LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
static REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
static RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

/// Whole seconds, rounded up: a client waiting this long is never early.
pub fn seconds(ns: u64) -> u64 {
    ns.div_ceil(1_000_000_000)
}

/// The two header values that depend only on a rule's limits (`RateLimit-Policy`,
/// `X-RateLimit-Limit`), made once when the rule compiles.
#[derive(Debug, Clone)]
pub struct PolicyHeaders {
    policy: HeaderValue,
    limit: HeaderValue,
}

impl PolicyHeaders {
    /// The values for the rule `rule` with `quota` requests per `window_ns`.
    pub fn new(rule: &str, quota: u64, window_ns: u64) -> Result<Self, InvalidHeaderValue> {
        let window = seconds(window_ns).max(1);
        Ok(Self {
            policy: HeaderValue::from_str(&format!("\"{rule}\";q={quota};w={window}"))?,
            limit: HeaderValue::from(quota),
        })
    }
}

/// The headers describing `outcome` of the rule named `rule`, as sent to the client.
#[derive(Debug, Clone)]
pub struct RateLimitHeaders {
    /// The rule the values describe.
    pub rule: std::sync::Arc<str>,
    /// Its outcome for this request.
    pub outcome: Outcome,
    /// The values fixed by the rule's limits.
    pub policy: PolicyHeaders,
}

impl RateLimitHeaders {
    /// Sets the five headers on `resp`, replacing any the upstream sent.
    pub fn apply(&self, resp: &mut ResponseHeader) {
        let outcome = &self.outcome;
        let reset = seconds(outcome.reset_ns);
        let _ = resp.insert_header(POLICY.clone(), self.policy.policy.clone());
        let _ = resp.insert_header(LIMIT.clone(), self.policy.limit.clone());
        // One buffer that becomes the header value without a copy.
        let mut value = Vec::with_capacity(self.rule.len() + 32);
        let _ = write!(value, "\"{}\";r={};t={reset}", self.rule, outcome.remaining);
        // Rule names are checked header-safe when the rule compiles; the rest are digits.
        if let Ok(value) = HeaderValue::from_maybe_shared(Bytes::from(value)) {
            let _ = resp.insert_header(RATE_LIMIT.clone(), value);
        }
        let _ = resp.insert_header(REMAINING.clone(), HeaderValue::from(outcome.remaining));
        let _ = resp.insert_header(RESET.clone(), HeaderValue::from(reset));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_read_as_in_the_spec() {
        let headers = RateLimitHeaders {
            rule: "per-consumer".into(),
            policy: PolicyHeaders::new("per-consumer", 100, 1_000_000_000).expect("valid"),
            outcome: Outcome {
                allowed: true,
                quota: 100,
                window_ns: 1_000_000_000,
                remaining: 57,
                reset_ns: 400_000_000,
                retry_after_ns: 0,
            },
        };
        let mut resp = ResponseHeader::build(200, None).expect("response");
        headers.apply(&mut resp);
        let get = |name: &str| {
            resp.headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(String::from)
        };
        assert_eq!(
            get("ratelimit-policy").as_deref(),
            Some("\"per-consumer\";q=100;w=1")
        );
        assert_eq!(
            get("ratelimit").as_deref(),
            Some("\"per-consumer\";r=57;t=1")
        );
        assert_eq!(get("x-ratelimit-limit").as_deref(), Some("100"));
        assert_eq!(get("x-ratelimit-remaining").as_deref(), Some("57"));
        assert_eq!(get("x-ratelimit-reset").as_deref(), Some("1"));
    }
}
