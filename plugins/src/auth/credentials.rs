//! Reading a credential from a request (header, bearer token, query parameter, cookie) and
//! removing it before the request is proxied.

use http::header::{AUTHORIZATION, COOKIE};
use http::HeaderName;
use pingora_http::RequestHeader;

/// The token of `Authorization: Bearer TOKEN` (scheme case-insensitive).
pub fn bearer(req: &RequestHeader) -> Option<&str> {
    let value = req.headers.get(AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|token| !token.is_empty())
}

/// The value of header `name`, when present and not empty.
pub fn header<'a>(req: &'a RequestHeader, name: &HeaderName) -> Option<&'a [u8]> {
    req.headers
        .get(name)
        .map(|value| value.as_bytes())
        .filter(|value| !value.is_empty())
}

/// The (percent-decoded) value of query parameter `name`, when present and not empty.
pub fn query_param(req: &RequestHeader, name: &str) -> Option<String> {
    let query = req.uri.query()?;
    form_urlencoded::parse(query.as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
        .filter(|value| !value.is_empty())
}

/// The value of cookie `name`, when present and not empty.
pub fn cookie<'a>(req: &'a RequestHeader, name: &str) -> Option<&'a str> {
    cookie_value(req, name)
        .map(str::trim)
        .filter(|value| !value.is_empty())
}

/// The value of cookie `name` in the request's `Cookie` headers, exactly as sent (the core
/// uses it for `cookie:NAME` keys).
pub fn cookie_value<'a>(req: &'a RequestHeader, name: &str) -> Option<&'a str> {
    req.headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// Rewrites the request target without query parameter `name` (every copy). Other
/// parameters keep their original bytes and order.
pub fn remove_query_param(req: &mut RequestHeader, name: &str) {
    let Some(query) = req.uri.query() else {
        return;
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            let key = pair.split_once('=').map_or(*pair, |(key, _)| key);
            form_urlencoded::parse(key.as_bytes())
                .next()
                .is_none_or(|(decoded, _)| decoded != name)
        })
        .collect();
    if kept.len() == query.split('&').count() {
        return;
    }
    let mut target = req.uri.path().to_string();
    if !kept.is_empty() {
        target.push('?');
        target.push_str(&kept.join("&"));
    }
    // The new target is a subset of a target that parsed, so it parses too.
    let _ = req.set_raw_path(target.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(target: &str, headers: &[(&str, &str)]) -> RequestHeader {
        let mut req = RequestHeader::build("GET", target.as_bytes(), None).expect("request");
        for (name, value) in headers {
            req.append_header(name.to_string(), *value).expect("header");
        }
        req
    }

    #[test]
    fn bearer_tokens_are_read_case_insensitively_and_other_schemes_ignored() {
        assert_eq!(
            bearer(&request("/", &[("authorization", "bearer abc")])),
            Some("abc")
        );
        assert_eq!(
            bearer(&request("/", &[("authorization", "Basic abc")])),
            None
        );
        assert_eq!(bearer(&request("/", &[("authorization", "Bearer ")])), None);
        assert_eq!(bearer(&request("/", &[])), None);
    }

    #[test]
    fn query_params_and_cookies_are_found() {
        let req = request("/a?x=1&api_key=k%2B1&y=2", &[("cookie", "a=1; jwt=tok")]);
        assert_eq!(query_param(&req, "api_key").as_deref(), Some("k+1"));
        assert_eq!(query_param(&req, "nope"), None);
        assert_eq!(cookie(&req, "jwt"), Some("tok"));
        assert_eq!(cookie(&req, "b"), None);
    }

    #[test]
    fn removing_a_query_param_keeps_the_others_verbatim() {
        let mut req = request("/a/b?x=%41&api_key=k&y=2&api_key=again", &[]);
        remove_query_param(&mut req, "api_key");
        assert_eq!(req.uri.to_string(), "/a/b?x=%41&y=2");
        let mut only = request("/a?api_key=k", &[]);
        remove_query_param(&mut only, "api_key");
        assert_eq!(only.uri.to_string(), "/a");
        let mut untouched = request("/a?b=1", &[]);
        remove_query_param(&mut untouched, "api_key");
        assert_eq!(untouched.uri.to_string(), "/a?b=1");
    }
}
