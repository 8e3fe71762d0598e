//! Header names an upstream may read as another: CGI, WSGI and Rack servers (and nginx
//! with `underscores_in_headers on`) turn both `X-User-Id` and `X_User_Id` into
//! `HTTP_X_USER_ID`, so a client's underscored copy of a header the gateway sets could
//! stand in for, or override, the gateway's.

use http::HeaderName;
use pingora_http::RequestHeader;

/// Removes every header spelled with `_` whose `-` spelling `protected` accepts (names
/// are lower case). Allocates only when some header name holds a `_`.
pub fn remove_lookalikes(req: &mut RequestHeader, protected: impl Fn(&str) -> bool) {
    if !req.headers.keys().any(|name| name.as_str().contains('_')) {
        return;
    }
    let lookalikes: Vec<HeaderName> = req
        .headers
        .keys()
        .filter(|name| name.as_str().contains('_') && protected(&name.as_str().replace('_', "-")))
        .cloned()
        .collect();
    for name in &lookalikes {
        req.remove_header(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_underscored_copies_of_protected_names_go() {
        let mut req = RequestHeader::build("GET", b"/", None).expect("request");
        for name in ["X_User_Id", "x_uSER-id", "X-User-Id", "X_Other", "X-Kept"] {
            req.append_header(name.to_string(), "v").expect("header");
        }
        remove_lookalikes(&mut req, |name| name == "x-user-id");
        let mut left: Vec<_> = req.headers.keys().map(|n| n.as_str().to_string()).collect();
        left.sort();
        assert_eq!(left, ["x-kept", "x-user-id", "x_other"]);
    }
}
