//! The admin status page (`GET /`): one HTML page embedded in the binary, whose inline
//! script reads `/status` every few seconds, and the sign-in that guards it when
//! `admin.token` is set (the token is offered once, by the form or `?token=`, and kept
//! as an HttpOnly, SameSite=Strict cookie derived from it).

use std::sync::OnceLock;

use base64::Engine;
use http::{header, Response, StatusCode};
use sha2::{Digest, Sha256};

/// The page: markup, style and script, no external resource.
const PAGE: &str = include_str!("status_page/page.html");

/// The sign-in form; `<!--message-->` is where a refusal is said.
const SIGN_IN: &str = include_str!("status_page/sign_in.html");

/// The session cookie's name.
const COOKIE: &str = "portcullis_admin";

/// What a request for the page brought: the query string, its `Cookie` headers and, for
/// the sign-in form's POST, the body.
pub struct Visit<'a> {
    /// The query string, without `?`.
    pub query: Option<&'a str>,
    /// Every `Cookie` header value.
    pub cookies: Vec<&'a str>,
    /// The form body of a POST.
    pub form: Option<&'a [u8]>,
}

/// The answer to `GET /` or to the sign-in form's `POST /`, given the admin token in
/// force: the page; the sign-in form (401) while no valid token or session was
/// presented; or, once the token is offered, a redirect to `/` that sets the session.
pub fn respond(token: Option<&str>, visit: &Visit<'_>) -> Response<Vec<u8>> {
    let Some(token) = token else {
        return match visit.form {
            Some(_) => see_page(None),
            None => page(),
        };
    };
    let session = session_value(token);
    let in_session = visit
        .cookies
        .iter()
        .flat_map(|header| header.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .any(|(name, value)| name == COOKIE && token_matches(value, &session));
    if in_session {
        return page();
    }
    let offered = match visit.form {
        Some(body) => std::str::from_utf8(body).ok(),
        None => visit.query,
    }
    .and_then(|pairs| form_value(pairs, "token"));
    match offered {
        Some(offered) if token_matches(&offered, token) => see_page(Some(&session)),
        Some(_) => sign_in("<p class=\"error\">That is not the admin token.</p>"),
        None => sign_in(""),
    }
}

/// Compares a presented token with the expected one in time that does not depend on
/// where they differ.
pub fn token_matches(presented: &str, expected: &str) -> bool {
    let (a, b) = (presented.as_bytes(), expected.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The cookie value of a session opened with `token`: a hash of it, so the cookie is
/// not the token that POSTs need, and a changed token ends every session.
fn session_value(token: &str) -> String {
    let digest = Sha256::digest(format!("portcullis admin session\n{token}").as_bytes());
    digest.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The value of `key` in `application/x-www-form-urlencoded` text; `None` when absent
/// or not validly encoded UTF-8.
fn form_value(pairs: &str, key: &str) -> Option<String> {
    let (_, encoded) = pairs
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(name, _)| *name == key)?;
    let mut bytes = Vec::with_capacity(encoded.len());
    let mut rest = encoded.as_bytes();
    while let Some((&first, after)) = rest.split_first() {
        rest = after;
        match first {
            b'+' => bytes.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(rest.get(..2)?).ok()?;
                bytes.push(u8::from_str_radix(hex, 16).ok()?);
                rest = &rest[2..];
            }
            other => bytes.push(other),
        }
    }
    String::from_utf8(bytes).ok()
}

/// The status page with its strict headers.
fn page() -> Response<Vec<u8>> {
    static POLICY: OnceLock<String> = OnceLock::new();
    html(
        StatusCode::OK,
        POLICY.get_or_init(|| content_security_policy(PAGE)),
        PAGE.as_bytes().to_vec(),
    )
}

/// The sign-in form (401) with `message` above it.
fn sign_in(message: &str) -> Response<Vec<u8>> {
    static POLICY: OnceLock<String> = OnceLock::new();
    html(
        StatusCode::UNAUTHORIZED,
        POLICY.get_or_init(|| content_security_policy(SIGN_IN)),
        SIGN_IN.replace("<!--message-->", message).into_bytes(),
    )
}

/// 303 to the page, opening a session with `session` when given.
fn see_page(session: Option<&str>) -> Response<Vec<u8>> {
    let mut response = Response::builder()
        .status(StatusCode::SEE_OTHER)
        .header(header::LOCATION, "/")
        .header(header::CACHE_CONTROL, "no-store")
        .header(header::CONTENT_LENGTH, 0);
    if let Some(session) = session {
        response = response.header(
            header::SET_COOKIE,
            format!("{COOKIE}={session}; Path=/; HttpOnly; SameSite=Strict"),
        );
    }
    response.body(Vec::new()).unwrap_or_default()
}

fn html(status: StatusCode, policy: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
        .header(header::CONTENT_SECURITY_POLICY, policy)
        .header(header::X_FRAME_OPTIONS, "DENY")
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .header(header::REFERRER_POLICY, "no-referrer")
        .header(header::CACHE_CONTROL, "no-store")
        .header(header::CONTENT_LENGTH, body.len())
        .body(body)
        .unwrap_or_default()
}

/// A policy that lets `html` run only its own inline `<script>` and `<style>` elements
/// (by their SHA-256), fetch only from this origin and be framed by no one.
fn content_security_policy(html: &str) -> String {
    format!(
        "default-src 'none'; script-src {}; style-src {}; connect-src 'self'; img-src data:; \
         form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        inline_hashes(html, "script"),
        inline_hashes(html, "style"),
    )
}

/// `'sha256-…'` for the text of every `<tag>` element of `html`, or `'none'`.
fn inline_hashes(html: &str, tag: &str) -> String {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut hashes = Vec::new();
    let mut rest = html;
    while let Some(start) = rest.find(&open) {
        let inside = &rest[start + open.len()..];
        let Some(end) = inside.find(&close) else {
            break;
        };
        let digest = Sha256::digest(&inside.as_bytes()[..end]);
        hashes.push(format!(
            "'sha256-{}'",
            base64::engine::general_purpose::STANDARD.encode(digest)
        ));
        rest = &inside[end + close.len()..];
    }
    if hashes.is_empty() {
        "'none'".to_string()
    } else {
        hashes.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn visit<'a>(query: Option<&'a str>, cookies: &[&'a str], form: Option<&'a [u8]>) -> Visit<'a> {
        Visit {
            query,
            cookies: cookies.to_vec(),
            form,
        }
    }

    fn cookie_of(response: &Response<Vec<u8>>) -> String {
        let set = response.headers()[header::SET_COOKIE].to_str().unwrap();
        set.split(';').next().unwrap().to_string()
    }

    #[test]
    fn without_a_token_the_page_is_served() {
        let response = respond(None, &visit(None, &[], None));
        assert_eq!(response.status(), StatusCode::OK);
        assert!(String::from_utf8_lossy(response.body()).contains("<title>Portcullis status"));
    }

    #[test]
    fn the_token_offered_once_opens_a_session_kept_in_a_strict_cookie() {
        let token = "s3cret&+/=";
        let asked = respond(Some(token), &visit(None, &[], None));
        assert_eq!(asked.status(), StatusCode::UNAUTHORIZED);

        let signed_in = respond(
            Some(token),
            &visit(Some("x=1&token=s3cret%26%2B%2F%3D"), &[], None),
        );
        assert_eq!(signed_in.status(), StatusCode::SEE_OTHER);
        let set = signed_in.headers()[header::SET_COOKIE].to_str().unwrap();
        assert!(
            set.contains("HttpOnly") && set.contains("SameSite=Strict"),
            "{set}"
        );
        assert!(!set.contains(token), "the cookie is not the token: {set}");

        let cookie = format!("other=1; {}", cookie_of(&signed_in));
        let page = respond(Some(token), &visit(None, &[&cookie], None));
        assert_eq!(page.status(), StatusCode::OK);

        let by_form = respond(
            Some(token),
            &visit(None, &[], Some(b"token=s3cret%26%2B%2F%3D")),
        );
        assert_eq!(cookie_of(&by_form), cookie_of(&signed_in));
    }

    #[test]
    fn wrong_tokens_and_forged_sessions_get_the_form() {
        let token = "right";
        let session = cookie_of(&respond(
            Some(token),
            &visit(Some("token=right"), &[], None),
        ));
        let cases = [
            visit(Some("token=wrong"), &[], None),
            visit(Some("token=righ"), &[], None),
            visit(Some("token=%zz"), &[], None),
            visit(Some("token=%ff"), &[], None),
            visit(Some("token=right%"), &[], None),
            visit(None, &["portcullis_admin=right"], None),
            visit(None, &["portcullis_admin="], None),
            visit(None, &[], Some(b"token=\xff")),
        ];
        for case in &cases {
            let response = respond(Some(token), case);
            assert_eq!(
                response.status(),
                StatusCode::UNAUTHORIZED,
                "{:?} {:?}",
                case.query,
                case.cookies
            );
        }
        // The session of another token does not open this one.
        let other = respond(Some("other"), &visit(None, &[&session], None));
        assert_eq!(other.status(), StatusCode::UNAUTHORIZED);
    }

    #[test]
    fn the_policy_allows_exactly_the_inline_script_and_style() {
        let page = page();
        let policy = page.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap();
        assert!(
            policy.starts_with("default-src 'none'; script-src 'sha256-"),
            "{policy}"
        );
        assert!(!policy.contains("unsafe-inline"), "{policy}");
        assert_eq!(page.headers()[header::X_FRAME_OPTIONS], "DENY");
        assert_eq!(page.headers()[header::CACHE_CONTROL], "no-store");
        let sign_in = sign_in("");
        let policy = sign_in.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap();
        assert!(policy.contains("script-src 'none'"), "{policy}");
    }
}
