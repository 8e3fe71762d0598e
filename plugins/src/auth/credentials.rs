//! Reading a credential from a request (header, bearer token, query parameter, cookie) and
//! removing it before the request is proxied.

use http::header::{AUTHORIZATION, COOKIE};
use http::HeaderName;
use pingora_http::RequestHeader;

use crate::{ErrorCode, Rejection};

/// The `reason` label of a credential given more than once.
pub const DUPLICATE: &str = "duplicate";

/// 400 for a credential given more than once (two headers, two parameters, or in two
/// places): the gateway would verify one while the upstream may read the other.
pub fn duplicate(what: &str) -> Rejection {
    Rejection::new(
        ErrorCode::BadRequest,
        format!("the {what} is given more than once"),
    )
    .auth_failure(DUPLICATE)
}

/// The one value `values` yields, `None` for none, or the [`duplicate`] refusal.
pub fn only<T>(mut values: impl Iterator<Item = T>, what: &str) -> Result<Option<T>, Rejection> {
    let first = values.next();
    match values.next() {
        Some(_) => Err(duplicate(what)),
        None => Ok(first),
    }
}

/// The token of `Authorization: Bearer TOKEN` (scheme case-insensitive).
pub fn bearer(req: &RequestHeader) -> Option<&str> {
    let value = req.headers.get(AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|token| !token.is_empty())
}

/// The value of header `name`, when present and not empty; refused when repeated.
pub fn header<'a>(
    req: &'a RequestHeader,
    name: &HeaderName,
) -> Result<Option<&'a [u8]>, Rejection> {
    let values = req
        .headers
        .get_all(name)
        .iter()
        .map(|value| value.as_bytes());
    Ok(only(values, name.as_str())?.filter(|value| !value.is_empty()))
}

/// The (percent-decoded) value of query parameter `name`, when present and not empty;
/// refused when repeated.
pub fn query_param(req: &RequestHeader, name: &str) -> Result<Option<String>, Rejection> {
    let Some(query) = req.uri.query() else {
        return Ok(None);
    };
    let values = form_urlencoded::parse(query.as_bytes())
        .filter(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned());
    Ok(only(values, &format!("{name} parameter"))?.filter(|value| !value.is_empty()))
}

/// The value of cookie `name`, when present and not empty; refused when repeated.
pub fn cookie<'a>(req: &'a RequestHeader, name: &str) -> Result<Option<&'a str>, Rejection> {
    let values = cookie_pairs(req)
        .filter(|(key, _)| *key == name)
        .map(|(_, v)| v);
    Ok(only(values, &format!("{name} cookie"))?
        .map(str::trim)
        .filter(|value| !value.is_empty()))
}

/// The value of cookie `name` in the request's `Cookie` headers, exactly as sent (the core
/// uses it for `cookie:NAME` keys).
pub fn cookie_value<'a>(req: &'a RequestHeader, name: &str) -> Option<&'a str> {
    cookie_pairs(req)
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

fn cookie_pairs(req: &RequestHeader) -> impl Iterator<Item = (&str, &str)> {
    req.headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
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
        assert_eq!(
            query_param(&req, "api_key").expect("one").as_deref(),
            Some("k+1")
        );
        assert_eq!(query_param(&req, "nope").expect("none"), None);
        assert_eq!(cookie(&req, "jwt").expect("one"), Some("tok"));
        assert_eq!(cookie(&req, "b").expect("none"), None);
    }

    #[test]
    fn a_credential_given_twice_is_refused() {
        let twice = request(
            "/a?api_key=1&api_key=2",
            &[
                ("x-api-key", "a"),
                ("x-api-key", "b"),
                ("cookie", "jwt=a"),
                ("cookie", "x=1; jwt=b"),
            ],
        );
        let refusal = query_param(&twice, "api_key").expect_err("twice");
        assert_eq!(refusal.code, ErrorCode::BadRequest);
        assert!(header(&twice, &HeaderName::from_static("x-api-key")).is_err());
        assert!(cookie(&twice, "jwt").is_err());
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
