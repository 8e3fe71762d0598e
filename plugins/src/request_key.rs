//! A request attribute used as a key: what a limit counts by (`rate_limit[].key`,
//! `concurrency_limit.key`), what keeps a canary user on one variant
//! (`routes[].canary.sticky_on`) and what `consistent_hash` hashes (`upstreams.NAME.hash_on`).

use std::io::Write;

use http::HeaderName;
use pingora_http::RequestHeader;
use serde_json::Value;

use crate::auth::credentials::cookie_value;
use crate::PluginCtx;

/// `client_ip | consumer | tier | route | global | header:NAME | cookie:NAME | jwt:CLAIM`,
/// parsed at config load; each field accepts the forms of its [`KeyUse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestKey {
    /// The client's (TCP peer's) address.
    ClientIp,
    /// The authenticated consumer's id.
    Consumer,
    /// The consumer's tier: every consumer of a tier shares one value.
    Tier,
    /// The matched route's name.
    Route,
    /// One value for every request.
    Global,
    /// A request header's value.
    Header(HeaderName),
    /// A cookie's value.
    Cookie(String),
    /// A claim of the JWT that authenticated the request.
    Claim(String),
}

/// What a key field is for, which decides the forms it accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyUse {
    /// What requests are counted by (`rate_limit[].key`, `concurrency_limit.key`).
    Limit,
    /// What keeps a user on one variant or target (`sticky_on`, `hash_on`).
    Affinity,
}

impl KeyUse {
    /// The forms this use accepts, as problems list them.
    pub fn forms(self) -> &'static str {
        match self {
            Self::Limit => "client_ip, consumer, tier, route, global, header:NAME or jwt:CLAIM",
            Self::Affinity => "consumer, client_ip, header:NAME, cookie:NAME or jwt:CLAIM",
        }
    }

    fn accepts(self, key: &RequestKey) -> bool {
        match key {
            RequestKey::Tier | RequestKey::Route | RequestKey::Global => self == Self::Limit,
            RequestKey::Cookie(_) => self == Self::Affinity,
            _ => true,
        }
    }
}

impl RequestKey {
    /// Parses the configured form; the error names the forms `accepted` allows.
    pub fn parse(text: &str, accepted: KeyUse) -> Result<Self, String> {
        let key = match text.split_once(':') {
            None => match text {
                "client_ip" => Some(Self::ClientIp),
                "consumer" => Some(Self::Consumer),
                "tier" => Some(Self::Tier),
                "route" => Some(Self::Route),
                "global" => Some(Self::Global),
                _ => None,
            },
            Some(("header", name)) => Some(Self::Header(
                HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| format!("{name:?} is not a valid header name"))?,
            )),
            Some(("cookie", name)) if !name.is_empty() => Some(Self::Cookie(name.to_string())),
            Some(("jwt", claim)) if !claim.is_empty() => Some(Self::Claim(claim.to_string())),
            Some(_) => None,
        };
        key.filter(|key| accepted.accepts(key))
            .ok_or_else(|| format!("{text:?} is not one of {}", accepted.forms()))
    }

    /// Appends this request's value of the key to `out` and returns true; returns false
    /// and appends nothing when the request does not carry it (no client address or
    /// consumer, no such header, cookie or claim). A claim that is a JSON string gives its
    /// text, a null claim counts as absent, any other claim gives its JSON form.
    pub fn write_value(&self, req: &RequestHeader, ctx: &PluginCtx, out: &mut Vec<u8>) -> bool {
        let value = match self {
            Self::ClientIp => {
                return ctx.client_ip.is_some_and(|ip| write!(out, "{ip}").is_ok());
            }
            Self::Consumer => ctx.consumer.as_deref().map(str::as_bytes),
            Self::Tier => ctx.consumer_tier.as_deref().map(str::as_bytes),
            Self::Route => Some(ctx.route.as_bytes()),
            Self::Global => Some(&b""[..]),
            Self::Header(name) => req.headers.get(name).map(|value| value.as_bytes()),
            Self::Cookie(name) => cookie_value(req, name).map(str::as_bytes),
            Self::Claim(claim) => match ctx.claims.as_ref().and_then(|claims| claims.get(claim)) {
                Some(Value::String(text)) => Some(text.as_bytes()),
                Some(Value::Null) | None => None,
                Some(other) => return serde_json::to_writer(out, other).is_ok(),
            },
        };
        value.map(|value| out.extend_from_slice(value)).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn value(key: &str, ctx: &PluginCtx, headers: &[(&str, &str)]) -> Option<String> {
        let mut req = RequestHeader::build("GET", b"/", None).expect("request");
        for (name, v) in headers {
            req.insert_header(name.to_string(), *v).expect("header");
        }
        let key = RequestKey::parse(key, KeyUse::Limit)
            .or_else(|_| RequestKey::parse(key, KeyUse::Affinity))
            .expect("key");
        let mut out = b"kept|".to_vec();
        let found = key.write_value(&req, ctx, &mut out);
        let value = out
            .strip_prefix(b"kept|")
            .expect("appended after what was there");
        assert!(
            found || value.is_empty(),
            "{key:?} appended without a value"
        );
        found.then(|| String::from_utf8_lossy(value).into_owned())
    }

    #[test]
    fn values_come_from_the_request_and_its_identity() {
        let mut claims = serde_json::Map::new();
        claims.insert("tenant".into(), serde_json::json!("t1"));
        claims.insert("level".into(), serde_json::json!(3));
        claims.insert("gone".into(), serde_json::Value::Null);
        let ctx = PluginCtx {
            route: "orders".into(),
            client_ip: Some([10, 0, 0, 1].into()),
            consumer: Some("acme".into()),
            consumer_tier: Some("gold".into()),
            claims: Some(Arc::new(claims)),
            ..PluginCtx::default()
        };
        let value = |key: &str, headers: &[(&str, &str)]| value(key, &ctx, headers);
        assert_eq!(value("client_ip", &[]).as_deref(), Some("10.0.0.1"));
        assert_eq!(value("consumer", &[]).as_deref(), Some("acme"));
        assert_eq!(value("tier", &[]).as_deref(), Some("gold"));
        assert_eq!(value("route", &[]).as_deref(), Some("orders"));
        assert_eq!(value("global", &[]).as_deref(), Some(""));
        assert_eq!(
            value("header:X-Client", &[("X-Client", "k")]).as_deref(),
            Some("k")
        );
        assert_eq!(
            value("cookie:session", &[("Cookie", "a=1; session=s9")]).as_deref(),
            Some("s9")
        );
        assert_eq!(value("jwt:tenant", &[]).as_deref(), Some("t1"));
        assert_eq!(value("jwt:level", &[]).as_deref(), Some("3"));
        assert_eq!(value("jwt:gone", &[]), None);
    }

    #[test]
    fn a_request_without_the_value_appends_nothing() {
        let ctx = PluginCtx::default();
        for key in [
            "client_ip",
            "consumer",
            "tier",
            "header:X-Client",
            "cookie:session",
            "jwt:sub",
        ] {
            assert_eq!(value(key, &ctx, &[]), None, "{key}");
        }
    }

    #[test]
    fn each_use_accepts_its_own_forms() {
        let limit = |text| RequestKey::parse(text, KeyUse::Limit);
        let affinity = |text| RequestKey::parse(text, KeyUse::Affinity);
        assert_eq!(limit("tier"), Ok(RequestKey::Tier));
        assert_eq!(
            affinity("jwt:tenant"),
            Ok(RequestKey::Claim("tenant".into()))
        );
        assert_eq!(
            affinity("cookie:session"),
            Ok(RequestKey::Cookie("session".into()))
        );
        let refused = limit("cookie:session").expect_err("not a limit key");
        assert!(refused.contains("tier, route, global"), "{refused}");
        for text in ["tier", "route", "global", "user", "cookie:"] {
            let refused = affinity(text).expect_err(text);
            assert!(refused.contains("cookie:NAME"), "{refused}");
        }
        for text in ["header:bad name", "jwt:", "client_ip:x", ""] {
            assert!(limit(text).is_err(), "{text}");
            assert!(affinity(text).is_err(), "{text}");
        }
    }
}
