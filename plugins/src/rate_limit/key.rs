//! The counter a limit (`rate_limit` rule or `concurrency_limit`) counts a request in: its
//! key's kind and value, below the route for route-level limits.

use pingora_http::RequestHeader;

use crate::{PluginCtx, RequestKey};

/// Writes into `out` (cleared first) the counter key of this request: for a route-level
/// limit the route, then a kind prefix and the key's value. A request without the value
/// (no consumer, no such header or claim) is counted by its client address instead, so it
/// is still limited, apart from the others.
pub fn write_counter_key(
    key: &RequestKey,
    route_level: bool,
    req: &RequestHeader,
    ctx: &PluginCtx,
    out: &mut Vec<u8>,
) {
    out.clear();
    if route_level {
        out.extend_from_slice(ctx.route.as_bytes());
        out.push(b'|');
    }
    let start = out.len();
    out.extend_from_slice(kind(key));
    if !key.write_value(req, ctx, out) {
        out.truncate(start);
        out.extend_from_slice(b"ip=");
        if !RequestKey::ClientIp.write_value(req, ctx, out) {
            out.push(b'?');
        }
    }
}

/// Keeps the values of different kinds apart (a consumer named like a header value).
fn kind(key: &RequestKey) -> &'static [u8] {
    match key {
        RequestKey::ClientIp => b"ip=",
        RequestKey::Consumer => b"c=",
        RequestKey::Tier => b"t=",
        RequestKey::Route => b"r=",
        RequestKey::Global => b"*",
        RequestKey::Header(_) => b"h=",
        RequestKey::Cookie(_) => b"k=",
        RequestKey::Claim(_) => b"j=",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KeyUse;
    use std::sync::Arc;

    fn counter(key: &str, route_level: bool, ctx: &PluginCtx, headers: &[(&str, &str)]) -> String {
        let mut req = RequestHeader::build("GET", b"/", None).expect("request");
        for (name, v) in headers {
            req.insert_header(name.to_string(), *v).expect("header");
        }
        let mut out = b"left over".to_vec();
        let key = RequestKey::parse(key, KeyUse::Limit).expect("key");
        write_counter_key(&key, route_level, &req, ctx, &mut out);
        String::from_utf8(out).expect("utf-8")
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
        let value = |key: &str, headers: &[(&str, &str)]| counter(key, false, &ctx, headers);
        assert_eq!(value("client_ip", &[]), "ip=10.0.0.1");
        assert_eq!(value("consumer", &[]), "c=acme");
        assert_eq!(value("tier", &[]), "t=gold");
        assert_eq!(value("route", &[]), "r=orders");
        assert_eq!(value("global", &[]), "*");
        assert_eq!(value("header:X-Client", &[("X-Client", "k")]), "h=k");
        assert_eq!(value("jwt:tenant", &[]), "j=t1");
        assert_eq!(counter("consumer", true, &ctx, &[]), "orders|c=acme");
    }

    #[test]
    fn a_missing_value_falls_back_to_the_client_address() {
        let ctx = PluginCtx {
            client_ip: Some([10, 0, 0, 2].into()),
            ..PluginCtx::default()
        };
        for key in ["consumer", "tier", "header:X-Client", "jwt:sub"] {
            assert_eq!(counter(key, false, &ctx, &[]), "ip=10.0.0.2", "{key}");
        }
        assert_eq!(
            counter("consumer", false, &PluginCtx::default(), &[]),
            "ip=?"
        );
    }

    #[test]
    fn unknown_keys_are_refused() {
        for key in ["cookie:session", "header:bad name", "jwt:"] {
            assert!(RequestKey::parse(key, KeyUse::Limit).is_err(), "{key}");
        }
    }
}
