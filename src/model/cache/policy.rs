//! What may be cached and for how long (RFC 9111 as a shared cache), and which variant a
//! request selects.

use std::time::{Duration, SystemTime};

use http::{header, Method, StatusCode};
use pingora::cache::cache_control::{CacheControl, Cacheable, InterpretCacheControl};
use pingora::cache::filters::calculate_expires_header_time;
use pingora::cache::key::HashBinary;
use pingora::cache::{CacheMeta, NoCacheReason, RespCacheable, VarianceBuilder};
use pingora_http::{RequestHeader, ResponseHeader};

use super::RouteCache;

/// Why a request does not use the cache at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bypass {
    /// Not GET or HEAD.
    Method,
    /// It carries credentials and the route does not set `public_with_auth`.
    Credentials,
    /// A protocol upgrade (WebSocket).
    Upgrade,
}

/// Whether a request may be answered from, and stored in, the cache.
pub fn request_bypass(
    cache: &RouteCache,
    req: &RequestHeader,
    authenticated: bool,
) -> Option<Bypass> {
    if req.method != Method::GET && req.method != Method::HEAD {
        return Some(Bypass::Method);
    }
    if req.headers.contains_key(header::UPGRADE) {
        return Some(Bypass::Upgrade);
    }
    let credentials = authenticated || req.headers.contains_key(header::AUTHORIZATION);
    if credentials && !cache.public_with_auth {
        return Some(Bypass::Credentials);
    }
    None
}

/// Statuses a cache may store without explicit freshness (RFC 9110 §15.1), and the
/// only ones this cache stores at all.
fn storable_status(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// Decides whether `resp` is stored, with its freshness and stale windows.
///
/// Not stored: other statuses, `Set-Cookie`, `Vary: *`, `Cache-Control: no-store` or
/// `private`, and responses with no freshness information when the route has no
/// `default_ttl`. Freshness comes from `s-maxage`, else `max-age`, else `Expires`, else
/// `default_ttl`; `no-cache` stores the response as already stale, so every use
/// revalidates. The origin's `stale-while-revalidate` / `stale-if-error` override the
/// route's (and `must-revalidate`, `proxy-revalidate`, `s-maxage` forbid serving stale).
pub fn response_cacheable(cache: &RouteCache, resp: &ResponseHeader) -> RespCacheable {
    let uncacheable = RespCacheable::Uncacheable(NoCacheReason::OriginNotCache);
    if !storable_status(resp.status) || resp.headers.contains_key(header::SET_COOKIE) {
        return uncacheable;
    }
    if vary_names(resp).any(|name| name == "*") {
        return uncacheable;
    }
    let cache_control = CacheControl::from_resp_headers(resp);
    if cache_control
        .as_ref()
        .is_some_and(|cc| cc.is_cacheable() == Cacheable::No)
    {
        return uncacheable;
    }
    let now = SystemTime::now();
    let fresh_until = cache_control
        .as_ref()
        .and_then(|cc| cc.fresh_duration())
        .map(|ttl| fresh_until(now, ttl))
        .or_else(|| calculate_expires_header_time(resp))
        .or_else(|| cache.default_ttl.map(|ttl| fresh_until(now, ttl)));
    let Some(fresh_until) = fresh_until else {
        return uncacheable;
    };
    let stale_while_revalidate = cache_control
        .as_ref()
        .and_then(|cc| cc.serve_stale_while_revalidate_duration())
        .unwrap_or(cache.stale_while_revalidate);
    let stale_if_error = cache_control
        .as_ref()
        .and_then(|cc| cc.serve_stale_if_error_duration())
        .unwrap_or(cache.stale_if_error);
    let mut header = resp.clone();
    if let Some(cc) = &cache_control {
        cc.strip_private_headers(&mut header);
    }
    RespCacheable::Cacheable(CacheMeta::new(
        fresh_until,
        now,
        seconds(stale_while_revalidate),
        seconds(stale_if_error),
        header,
    ))
}

/// The variant a request selects: the values of the route's `vary` headers and of the
/// headers the stored response's own `Vary` names. `None` when nothing varies.
/// `encoding`, on a route that compresses into the cache, stands for Accept-Encoding's
/// value: the coding negotiated from it, so that "gzip, br" and "gzip" share a variant.
pub fn variance(
    cache: &RouteCache,
    meta: &CacheMeta,
    req: &RequestHeader,
    encoding: Option<&str>,
) -> Option<HashBinary> {
    let mut names: Vec<String> = vary_names(meta.response_header())
        .map(str::to_ascii_lowercase)
        .chain(cache.vary.iter().cloned())
        .collect();
    if names.is_empty() {
        return None;
    }
    names.sort_unstable();
    names.dedup();
    let mut builder = VarianceBuilder::new();
    for name in names {
        let value = match encoding.filter(|_| name == "accept-encoding") {
            Some(coding) => coding.as_bytes().to_vec(),
            None => req
                .headers
                .get(name.as_str())
                .map(|value| value.as_bytes().to_vec())
                .unwrap_or_default(),
        };
        builder.add_owned_name_value(name, value);
    }
    builder.finalize()
}

/// Header names listed by the response's `Vary` fields, trimmed.
fn vary_names(resp: &ResponseHeader) -> impl Iterator<Item = &str> {
    resp.headers
        .get_all(header::VARY)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|name| !name.is_empty())
}

fn fresh_until(now: SystemTime, ttl: Duration) -> SystemTime {
    if ttl.is_zero() {
        // Stored, but stale from the start: every use revalidates.
        now.checked_sub(Duration::from_secs(1)).unwrap_or(now)
    } else {
        now.checked_add(ttl).unwrap_or(now)
    }
}

fn seconds(duration: Duration) -> u32 {
    u32::try_from(duration.as_secs()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(default_ttl: Option<u64>) -> RouteCache {
        RouteCache::for_tests(default_ttl.map(Duration::from_secs), &["accept-encoding"])
    }

    fn response(status: u16, headers: &[(&str, &str)]) -> ResponseHeader {
        let mut resp = ResponseHeader::build(status, None).expect("valid status");
        for (name, value) in headers {
            resp.append_header(name.to_string(), *value)
                .expect("valid header");
        }
        resp
    }

    fn ttl(cacheable: RespCacheable) -> Option<i64> {
        match cacheable {
            RespCacheable::Cacheable(meta) => Some(
                meta.fresh_until()
                    .duration_since(SystemTime::now())
                    .map_or(-1, |d| d.as_secs_f64().round() as i64),
            ),
            RespCacheable::Uncacheable(_) => None,
        }
    }

    #[test]
    fn freshness_comes_from_the_origin_first() {
        let cache = route(Some(60));
        let cc = |value| response(200, &[("cache-control", value)]);
        assert_eq!(ttl(response_cacheable(&cache, &cc("max-age=10"))), Some(10));
        assert_eq!(
            ttl(response_cacheable(&cache, &cc("max-age=10, s-maxage=20"))),
            Some(20)
        );
        assert_eq!(
            ttl(response_cacheable(&cache, &response(200, &[]))),
            Some(60)
        );
        assert_eq!(ttl(response_cacheable(&cache, &cc("no-cache"))), Some(-1));
        assert_eq!(
            ttl(response_cacheable(&route(None), &response(200, &[]))),
            None
        );
    }

    #[test]
    fn private_responses_are_never_stored() {
        let cache = route(Some(60));
        for headers in [
            &[("cache-control", "no-store")][..],
            &[("cache-control", "private, max-age=60")],
            &[("set-cookie", "session=1"), ("cache-control", "max-age=60")],
            &[("vary", "*")],
        ] {
            assert_eq!(
                ttl(response_cacheable(&cache, &response(200, headers))),
                None
            );
        }
        assert_eq!(ttl(response_cacheable(&cache, &response(500, &[]))), None);
        assert_eq!(ttl(response_cacheable(&cache, &response(206, &[]))), None);
    }

    #[test]
    fn credentials_bypass_unless_public_with_auth() {
        let cache = route(Some(60));
        let mut req = RequestHeader::build("GET", b"/", None).expect("valid request");
        assert_eq!(request_bypass(&cache, &req, false), None);
        assert_eq!(
            request_bypass(&cache, &req, true),
            Some(Bypass::Credentials)
        );
        req.insert_header("authorization", "Bearer x")
            .expect("valid header");
        assert_eq!(
            request_bypass(&cache, &req, false),
            Some(Bypass::Credentials)
        );
        let post = RequestHeader::build("POST", b"/", None).expect("valid request");
        assert_eq!(request_bypass(&cache, &post, false), Some(Bypass::Method));
    }

    #[test]
    fn variants_follow_configured_and_origin_vary_headers() {
        let cache = route(Some(60));
        let meta = |resp| match response_cacheable(&cache, &resp) {
            RespCacheable::Cacheable(meta) => meta,
            RespCacheable::Uncacheable(_) => panic!("cacheable"),
        };
        let plain = meta(response(200, &[]));
        let by_language = meta(response(200, &[("vary", "Accept-Language")]));
        let request = |headers: &[(&str, &str)]| {
            let mut req = RequestHeader::build("GET", b"/", None).expect("valid request");
            for (name, value) in headers {
                req.insert_header(name.to_string(), *value)
                    .expect("valid header");
            }
            req
        };
        let gzip = request(&[("accept-encoding", "gzip")]);
        let br = request(&[("accept-encoding", "br")]);
        assert_ne!(
            variance(&cache, &plain, &gzip, None),
            variance(&cache, &plain, &br, None)
        );
        let en = request(&[("accept-encoding", "gzip"), ("accept-language", "en")]);
        let fr = request(&[("accept-encoding", "gzip"), ("accept-language", "fr")]);
        assert_eq!(
            variance(&cache, &plain, &en, None),
            variance(&cache, &plain, &fr, None)
        );
        assert_ne!(
            variance(&cache, &by_language, &en, None),
            variance(&cache, &by_language, &fr, None)
        );
        // Negotiated codings: one variant per coding, whatever the raw header says.
        assert_eq!(
            variance(&cache, &plain, &gzip, Some("gzip")),
            variance(&cache, &plain, &br, Some("gzip"))
        );
        assert_ne!(
            variance(&cache, &plain, &gzip, Some("gzip")),
            variance(&cache, &plain, &gzip, Some("identity"))
        );
    }
}
