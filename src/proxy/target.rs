//! The request target the gateway routes on and forwards: replaced by its canonical
//! origin form before routing (see `model/path.rs`), so routing, plugins, the cache key,
//! the access log and the upstream all read one path; the client's own bytes are kept for
//! routes that forward raw paths (`routes[].path.raw`).

use pingora_http::RequestHeader;
use portcullis_plugins::{ErrorCode, Rejection};

use crate::model::path::canonicalize;

/// What canonicalisation changed about the client's target.
#[derive(Debug, Default)]
pub struct ClientTarget {
    /// The origin-form target the client sent (path and query), when it differs from the
    /// canonical one.
    pub raw: Option<Box<str>>,
    /// Why the path is unsafe to forward canonicalised (refused unless the route is raw).
    pub ambiguity: Option<&'static str>,
}

/// Rewrites `req`'s target to its canonical origin form (the query kept as sent).
/// Allocates nothing when the target already is canonical.
pub fn canonicalize_target(
    req: &mut RequestHeader,
    merge_slashes: bool,
) -> Result<ClientTarget, Rejection> {
    if req.raw_path() == b"*" {
        return Err(bad_request("asterisk-form targets (*) are not proxied"));
    }
    if !req.raw_path_is_utf8() {
        return Err(bad_request("the request target is not UTF-8"));
    }
    let canonical = canonicalize(req.uri.path(), merge_slashes)
        .map_err(|reason| bad_request(&format!("the path is refused: {reason}")))?;
    let origin_form = req.raw_path().first() == Some(&b'/');
    if origin_form && matches!(canonical.path, std::borrow::Cow::Borrowed(_)) {
        return Ok(ClientTarget {
            raw: None,
            ambiguity: canonical.ambiguity,
        });
    }
    let ambiguity = canonical.ambiguity;
    let mut target = canonical.path.into_owned();
    let sent = req
        .uri
        .path_and_query()
        .map_or("/", |target| target.as_str())
        .into();
    if let Some(query) = req.uri.query() {
        target.push('?');
        target.push_str(query);
    }
    req.set_raw_path(target.as_bytes())
        .map_err(|_| bad_request("the canonical request target is not valid"))?;
    Ok(ClientTarget {
        raw: Some(sent),
        ambiguity,
    })
}

fn bad_request(message: &str) -> Rejection {
    Rejection::new(ErrorCode::BadRequest, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(raw: &str) -> (Result<ClientTarget, Rejection>, String) {
        let mut req = RequestHeader::build("GET", raw.as_bytes(), None).expect("request");
        let result = canonicalize_target(&mut req, true);
        (result, String::from_utf8_lossy(req.raw_path()).into_owned())
    }

    #[test]
    fn a_canonical_target_is_left_alone() {
        let (result, now) = target("/api/orders?x=%2e%2e");
        assert!(result.expect("valid").raw.is_none());
        assert_eq!(now, "/api/orders?x=%2e%2e");
    }

    #[test]
    fn dot_segments_go_and_the_query_stays() {
        let (result, now) = target("/public/../admin/x?a=1&b=%2F");
        assert_eq!(now, "/admin/x?a=1&b=%2F");
        assert_eq!(
            result.expect("valid").raw.as_deref(),
            Some("/public/../admin/x?a=1&b=%2F")
        );
    }

    #[test]
    fn absolute_form_becomes_origin_form() {
        let (result, now) = target("http://a.example.com/x/./y?q");
        assert_eq!(now, "/x/y?q");
        assert_eq!(result.expect("valid").raw.as_deref(), Some("/x/./y?q"));
        let (_, root) = target("http://a.example.com");
        assert_eq!(root, "/");
    }

    #[test]
    fn raw_non_ascii_is_encoded() {
        let (_, now) = target("/caf\u{e9}");
        assert_eq!(now, "/caf%C3%A9");
    }

    #[test]
    fn asterisk_and_climbing_targets_are_refused() {
        assert!(target("*").0.is_err());
        assert!(target("/../etc/passwd").0.is_err());
    }
}
