//! The rate-limit response headers (SPEC §5): the IETF draft's `RateLimit-Policy` and
//! `RateLimit`, and the legacy `X-RateLimit-Limit`, `-Remaining` and `-Reset`.

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

/// The headers describing `outcome` of the rule named `rule`, as sent to the client.
#[derive(Debug, Clone)]
pub struct RateLimitHeaders {
    /// The rule the values describe.
    pub rule: std::sync::Arc<str>,
    /// Its outcome for this request.
    pub outcome: Outcome,
}

impl RateLimitHeaders {
    /// Sets the five headers on `resp`, replacing any the upstream sent.
    pub fn apply(&self, resp: &mut ResponseHeader) {
        let outcome = &self.outcome;
        let window = seconds(outcome.window_ns).max(1);
        let reset = seconds(outcome.reset_ns);
        let values = [
            (
                &POLICY,
                format!("\"{}\";q={};w={window}", self.rule, outcome.quota),
            ),
            (
                &RATE_LIMIT,
                format!("\"{}\";r={};t={reset}", self.rule, outcome.remaining),
            ),
            (&LIMIT, outcome.quota.to_string()),
            (&REMAINING, outcome.remaining.to_string()),
            (&RESET, reset.to_string()),
        ];
        for (name, value) in values {
            // Rule names are plain config names and the rest are digits: always valid.
            if let Ok(value) = HeaderValue::from_str(&value) {
                let _ = resp.insert_header(name.clone(), value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_read_as_in_the_spec() {
        let headers = RateLimitHeaders {
            rule: "per-consumer".into(),
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
