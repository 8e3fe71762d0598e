//! What a limit counts by: `client_ip`, `consumer`, `tier`, `route`, `global`,
//! `header:NAME` or `jwt:CLAIM`.

use std::fmt::Write;

use http::HeaderName;
use pingora_http::RequestHeader;

use crate::PluginCtx;

/// The key of a rate or concurrency limit, parsed at config load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitKey {
    /// The TCP peer's address.
    ClientIp,
    /// The authenticated consumer.
    Consumer,
    /// The consumer's tier: every consumer of a tier shares one counter.
    Tier,
    /// The matched route.
    Route,
    /// One counter for every request the rule sees.
    Global,
    /// A request header's value.
    Header(HeaderName),
    /// A claim of the request's JWT.
    Jwt(String),
}

impl LimitKey {
    /// Parses a configured key; the error says what is accepted.
    pub fn parse(text: &str) -> Result<Self, String> {
        let key = match text {
            "client_ip" => Self::ClientIp,
            "consumer" => Self::Consumer,
            "tier" => Self::Tier,
            "route" => Self::Route,
            "global" => Self::Global,
            _ => match text.split_once(':') {
                Some(("header", name)) => Self::Header(
                    HeaderName::from_bytes(name.as_bytes())
                        .map_err(|_| format!("{name:?} is not a valid header name"))?,
                ),
                Some(("jwt", claim)) if !claim.is_empty() => Self::Jwt(claim.to_string()),
                _ => {
                    return Err(format!(
                        "unknown key {text:?}; use client_ip, consumer, tier, route, global, \
                         header:NAME or jwt:CLAIM"
                    ))
                }
            },
        };
        Ok(key)
    }

    /// Writes the counter key of this request into `out`: a kind prefix and the value.
    /// A request without the value (no consumer, no such header or claim) is counted by
    /// its client address instead, so it is still limited, apart from the others.
    pub fn write_value(&self, req: &RequestHeader, ctx: &PluginCtx, out: &mut String) {
        let found = match self {
            Self::ClientIp => false,
            Self::Consumer => ctx
                .consumer
                .as_deref()
                .map(|c| push(out, "c=", c))
                .is_some(),
            Self::Tier => ctx
                .consumer_tier
                .as_deref()
                .map(|t| push(out, "t=", t))
                .is_some(),
            Self::Route => {
                push(out, "r=", &ctx.route);
                true
            }
            Self::Global => {
                out.push('*');
                true
            }
            Self::Header(name) => match req.headers.get(name) {
                Some(value) => {
                    out.push_str("h=");
                    out.push_str(&String::from_utf8_lossy(value.as_bytes()));
                    true
                }
                None => false,
            },
            Self::Jwt(claim) => match ctx.claims.as_ref().and_then(|claims| claims.get(claim)) {
                Some(serde_json::Value::String(text)) => {
                    push(out, "j=", text);
                    true
                }
                Some(serde_json::Value::Null) | None => false,
                Some(other) => {
                    let _ = write!(out, "j={other}");
                    true
                }
            },
        };
        if !found {
            match ctx.client_ip {
                Some(ip) => {
                    let _ = write!(out, "ip={ip}");
                }
                None => out.push_str("ip=?"),
            }
        }
    }
}

fn push(out: &mut String, prefix: &str, value: &str) {
    out.push_str(prefix);
    out.push_str(value);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn value(key: &str, ctx: &PluginCtx, headers: &[(&str, &str)]) -> String {
        let mut req = RequestHeader::build("GET", b"/", None).expect("request");
        for (name, v) in headers {
            req.insert_header(name.to_string(), *v).expect("header");
        }
        let mut out = String::new();
        LimitKey::parse(key)
            .expect("key")
            .write_value(&req, ctx, &mut out);
        out
    }

    #[test]
    fn values_come_from_the_request_and_its_identity() {
        let mut claims = serde_json::Map::new();
        claims.insert("tenant".into(), serde_json::json!("t1"));
        let ctx = PluginCtx {
            route: "orders".into(),
            client_ip: Some([10, 0, 0, 1].into()),
            consumer: Some("acme".into()),
            consumer_tier: Some("gold".into()),
            claims: Some(Arc::new(claims)),
            ..PluginCtx::default()
        };
        assert_eq!(value("client_ip", &ctx, &[]), "ip=10.0.0.1");
        assert_eq!(value("consumer", &ctx, &[]), "c=acme");
        assert_eq!(value("tier", &ctx, &[]), "t=gold");
        assert_eq!(value("route", &ctx, &[]), "r=orders");
        assert_eq!(value("global", &ctx, &[]), "*");
        assert_eq!(value("header:X-Client", &ctx, &[("X-Client", "k")]), "h=k");
        assert_eq!(value("jwt:tenant", &ctx, &[]), "j=t1");
    }

    #[test]
    fn a_missing_value_falls_back_to_the_client_address() {
        let ctx = PluginCtx {
            client_ip: Some([10, 0, 0, 2].into()),
            ..PluginCtx::default()
        };
        for key in ["consumer", "tier", "header:X-Client", "jwt:sub"] {
            assert_eq!(value(key, &ctx, &[]), "ip=10.0.0.2", "{key}");
        }
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(LimitKey::parse("cookie:session").is_err());
        assert!(LimitKey::parse("header:bad name").is_err());
        assert!(LimitKey::parse("jwt:").is_err());
    }
}
