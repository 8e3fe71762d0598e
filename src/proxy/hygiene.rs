//! Checks a request must pass before anything else looks at it: the size limits of the
//! request head, and the defences against request smuggling and header confusion that
//! Pingora's parser leaves to the application.
//!
//! Pingora already refuses (with an error the gateway turns into JSON, see
//! `proxy::malformed`) unparseable heads, differing Content-Length values, a final
//! Transfer-Encoding other than `chunked`, HTTP/1.0 with Transfer-Encoding and duplicate
//! `Host` headers. It accepts, and this module refuses: a Content-Length list
//! (`5, 5`) or repeated line, Transfer-Encoding lists and repeats (`chunked, chunked`,
//! `gzip, chunked`), Transfer-Encoding together with Content-Length (it drops the
//! latter), bare-LF line ends, framing header names spelled with `_`, malformed `Host`,
//! unsupported `Expect`, `Upgrade` outside a body-less HTTP/1.1 GET (or to `h2c`), and
//! repeated `Authorization`. No honest client sends any of these, and each is a way to
//! make the gateway and the upstream read one request differently.

use http::header::{
    AUTHORIZATION, CONNECTION, CONTENT_LENGTH, EXPECT, HOST, TRANSFER_ENCODING, UPGRADE,
};
use http::{HeaderValue, Method, Version};
use pingora_http::RequestHeader;
use portcullis_plugins::request_size::header_block_size;
use portcullis_plugins::{ErrorCode, Rejection};

use crate::model::request::RequestLimits;

/// Refuses requests whose size, framing or headers are out of bounds or ambiguous.
/// `raw_head` is the header block as received, for HTTP/1 requests.
pub fn check(
    req: &RequestHeader,
    raw_head: Option<&[u8]>,
    limits: &RequestLimits,
) -> Result<(), Rejection> {
    check_sizes(req, limits)?;
    if let Some(raw) = raw_head {
        check_raw_head(raw)?;
    }
    let headers = &req.headers;
    let content_length = single(req, CONTENT_LENGTH)?;
    if let Some(value) = content_length {
        if !is_digits(value.as_bytes()) {
            return Err(bad_request("Content-Length must be one run of digits"));
        }
    }
    let chunked = single(req, TRANSFER_ENCODING)?.is_some();
    if chunked {
        let value = headers.get(TRANSFER_ENCODING).map(HeaderValue::as_bytes);
        if !value.is_some_and(|v| v.eq_ignore_ascii_case(b"chunked")) {
            return Err(bad_request("Transfer-Encoding must be exactly \"chunked\""));
        }
        if content_length.is_some() {
            return Err(both_framings());
        }
    }
    check_host(req)?;
    single(req, AUTHORIZATION)?;
    if let Some(expect) = single(req, EXPECT)? {
        if !expect.as_bytes().eq_ignore_ascii_case(b"100-continue") {
            return Err(bad_request("the only Expect supported is 100-continue"));
        }
    }
    let has_body = chunked || content_length.is_some_and(|v| v.as_bytes() != b"0");
    check_upgrade(req, has_body)?;
    if has_body && req.method == Method::TRACE {
        return Err(bad_request("a TRACE request has no body"));
    }
    Ok(())
}

/// The longest method accepted (the longest registered method is 17 bytes).
const MAX_METHOD: usize = 32;

fn check_sizes(req: &RequestHeader, limits: &RequestLimits) -> Result<(), Rejection> {
    if req.method.as_str().len() > MAX_METHOD {
        return Err(bad_request("the method is longer than 32 bytes"));
    }
    if req.raw_path().len() > limits.max_target {
        return Err(Rejection::new(
            ErrorCode::UriTooLong,
            format!("request target longer than {} bytes", limits.max_target),
        ));
    }
    if req.headers.len() > limits.max_header_count {
        return Err(Rejection::new(
            ErrorCode::HeadersTooLarge,
            format!("more than {} request headers", limits.max_header_count),
        ));
    }
    if header_block_size(req) > limits.max_header_bytes {
        return Err(Rejection::new(
            ErrorCode::HeadersTooLarge,
            format!(
                "request headers larger than {} bytes",
                limits.max_header_bytes
            ),
        ));
    }
    Ok(())
}

/// What only the raw bytes show: line ends, header names Pingora keeps apart but an
/// upstream may fold together, and a Content-Length that Pingora dropped because
/// Transfer-Encoding came with it.
fn check_raw_head(raw: &[u8]) -> Result<(), Rejection> {
    let mut lines = raw.split(|&b| b == b'\n');
    let mut previous_end = lines.next().and_then(|line| line.last().copied());
    let mut content_length = false;
    let mut transfer_encoding = false;
    for line in lines {
        if previous_end != Some(b'\r') {
            return Err(bad_request("header lines must end with CRLF"));
        }
        previous_end = line.last().copied();
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = &line[..colon];
        if name.contains(&b'_') {
            let folded = |target: &[u8]| {
                name.len() == target.len()
                    && name
                        .iter()
                        .zip(target)
                        .all(|(&a, &b)| a.to_ascii_lowercase() == b || (a == b'_' && b == b'-'))
            };
            if folded(b"content-length") || folded(b"transfer-encoding") {
                return Err(bad_request("a framing header name is spelled with '_'"));
            }
        }
        content_length |= name.eq_ignore_ascii_case(b"content-length");
        transfer_encoding |= name.eq_ignore_ascii_case(b"transfer-encoding");
    }
    if content_length && transfer_encoding {
        return Err(both_framings());
    }
    Ok(())
}

/// HTTP/1.1 needs a Host; a Host (or an HTTP/2 authority) must be a host name or IP
/// address with an optional port up to 65535 (RFC 9110 §7.2, RFC 3986 §3.2.2).
fn check_host(req: &RequestHeader) -> Result<(), Rejection> {
    let host = req.headers.get(HOST).map(HeaderValue::as_bytes);
    let authority = req.uri.authority().map(|a| a.as_str().as_bytes());
    if req.version == Version::HTTP_11 && host.is_none() && authority.is_none() {
        return Err(bad_request("HTTP/1.1 requests need a Host header"));
    }
    if let Some(scheme) = req.raw_path().split(|&b| b == b':').next() {
        let absolute = !req.raw_path().starts_with(b"/") && req.raw_path() != b"*";
        if absolute
            && !scheme.eq_ignore_ascii_case(b"http")
            && !scheme.eq_ignore_ascii_case(b"https")
        {
            return Err(bad_request(
                "only http and https absolute-form targets are proxied",
            ));
        }
    }
    for value in host.into_iter().chain(authority) {
        if !valid_host(value) {
            return Err(bad_request("the Host is not a valid host[:port]"));
        }
    }
    Ok(())
}

/// `host [":" port]`: a DNS-style name (letters, digits, `-`, `_`, dot-separated
/// non-empty labels, one trailing dot allowed), an IPv4 address or a bracketed IPv6
/// address; the port is 1-5 digits up to 65535.
pub fn valid_host(value: &[u8]) -> bool {
    let (name, port) = if value.first() == Some(&b'[') {
        let Some(end) = value.iter().position(|&b| b == b']') else {
            return false;
        };
        let literal = std::str::from_utf8(&value[1..end]).ok();
        if literal
            .and_then(|l| l.parse::<std::net::Ipv6Addr>().ok())
            .is_none()
        {
            return false;
        }
        (None, &value[end + 1..])
    } else {
        match value.iter().position(|&b| b == b':') {
            Some(colon) => (Some(&value[..colon]), &value[colon..]),
            None => (Some(value), &value[value.len()..]),
        }
    };
    if let Some(name) = name {
        let name = name.strip_suffix(b".").unwrap_or(name);
        let label_ok = |label: &[u8]| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .iter()
                    .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if name.is_empty() || name.len() > 253 || !name.split(|&b| b == b'.').all(label_ok) {
            return false;
        }
    }
    match port {
        [] => true,
        [b':', digits @ ..] => {
            (1..=5).contains(&digits.len())
                && is_digits(digits)
                && std::str::from_utf8(digits)
                    .ok()
                    .and_then(|d| d.parse::<u32>().ok())
                    .is_some_and(|p| p <= 65535)
        }
        _ => false,
    }
}

/// A protocol upgrade switches the connection to raw forwarding once the upstream
/// answers 101, so it is only let through where no bytes can hide behind it: an HTTP/1.1
/// GET without a body, naming `upgrade` in Connection, to a protocol other than `h2c`
/// (whose upgrade would carry the rest of the connection past every route check).
fn check_upgrade(req: &RequestHeader, has_body: bool) -> Result<(), Rejection> {
    if req.headers.contains_key("http2-settings") {
        return Err(bad_request("HTTP/2 upgrades (h2c) are not proxied"));
    }
    let Some(upgrade) = single(req, UPGRADE)? else {
        return Ok(());
    };
    let tokens = |value: &HeaderValue| {
        value
            .to_str()
            .unwrap_or("")
            .split(',')
            .map(|token| token.trim().to_ascii_lowercase())
            .collect::<Vec<_>>()
    };
    if tokens(upgrade).iter().any(|token| token == "h2c") {
        return Err(bad_request("HTTP/2 upgrades (h2c) are not proxied"));
    }
    let connection_upgrade = req
        .headers
        .get_all(CONNECTION)
        .iter()
        .any(|value| tokens(value).iter().any(|token| token == "upgrade"));
    if req.version != Version::HTTP_11 || req.method != Method::GET || has_body {
        return Err(bad_request(
            "only a body-less HTTP/1.1 GET may ask for an Upgrade",
        ));
    }
    if !connection_upgrade {
        return Err(bad_request("Upgrade without \"Connection: upgrade\""));
    }
    Ok(())
}

/// The value of header `name`, refusing a request that repeats it.
fn single(req: &RequestHeader, name: http::HeaderName) -> Result<Option<&HeaderValue>, Rejection> {
    let mut values = req.headers.get_all(&name).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(bad_request(&format!("more than one {name} header")));
    }
    Ok(first)
}

fn is_digits(value: &[u8]) -> bool {
    !value.is_empty() && value.iter().all(u8::is_ascii_digit)
}

fn both_framings() -> Rejection {
    // RFC 9112 §6.1 lets a server pick Transfer-Encoding, but an intermediary that
    // forwards either header invites a desync with the next hop: refuse outright.
    bad_request("both Content-Length and Transfer-Encoding are set")
}

fn bad_request(message: &str) -> Rejection {
    Rejection::new(ErrorCode::BadRequest, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> RequestLimits {
        RequestLimits::default()
    }

    fn request(headers: &[(&str, &str)]) -> RequestHeader {
        crate::model::request::testing::request_to("POST", "/x", headers)
    }

    fn refused(req: &RequestHeader) -> bool {
        check(req, None, &limits()).is_err()
    }

    #[test]
    fn content_length_must_be_one_run_of_digits_on_one_line() {
        for value in [
            "49, 49", "5,5", "5 ,5", "5, 5, 5", "+5", "-1", "0x5", "5 5", "",
        ] {
            assert!(
                refused(&request(&[("Host", "a"), ("Content-Length", value)])),
                "{value:?}"
            );
        }
        assert!(refused(&request(&[
            ("Host", "a"),
            ("Content-Length", "5"),
            ("Content-Length", "5")
        ])));
        assert!(!refused(&request(&[
            ("Host", "a"),
            ("Content-Length", "5")
        ])));
    }

    #[test]
    fn transfer_encoding_is_chunked_alone() {
        for value in [
            "chunked, chunked",
            "gzip, chunked",
            "identity",
            "chunked;x",
            "xchunked",
        ] {
            assert!(
                refused(&request(&[("Host", "a"), ("Transfer-Encoding", value)])),
                "{value:?}"
            );
        }
        let two = request(&[
            ("Host", "a"),
            ("Transfer-Encoding", "chunked"),
            ("Transfer-Encoding", "chunked"),
        ]);
        assert!(refused(&two));
        assert!(!refused(&request(&[
            ("Host", "a"),
            ("Transfer-Encoding", "Chunked")
        ])));
    }

    #[test]
    fn content_length_with_transfer_encoding_is_refused() {
        let req = request(&[
            ("Host", "a"),
            ("Content-Length", "4"),
            ("Transfer-Encoding", "chunked"),
        ]);
        let refusal = check(&req, None, &limits()).expect_err("refused");
        assert_eq!(refusal.code, ErrorCode::BadRequest);
    }

    #[test]
    fn a_content_length_pingora_dropped_is_found_in_the_raw_header() {
        let req = request(&[("Host", "a"), ("Transfer-Encoding", "chunked")]);
        let raw = b"POST /x HTTP/1.1\r\nHost: a\r\ncontent-LENGTH: 4\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(check(&req, Some(raw), &limits()).is_err());
        let clean = b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(check(&req, Some(clean), &limits()).is_ok());
    }

    #[test]
    fn bare_line_feeds_and_underscored_framing_names_are_refused() {
        let req = request(&[("Host", "a")]);
        let bare = b"POST /x HTTP/1.1\nHost: a\r\n\r\n";
        assert!(check(&req, Some(bare), &limits()).is_err());
        let underscored = b"POST /x HTTP/1.1\r\nHost: a\r\nContent_Length: 4\r\n\r\n";
        assert!(check(&req, Some(underscored), &limits()).is_err());
    }

    #[test]
    fn host_syntax_is_checked() {
        for host in [
            "a.example.com",
            "a.example.com:8080",
            "127.0.0.1",
            "[::1]:443",
            "x_y",
            "a.",
        ] {
            assert!(valid_host(host.as_bytes()), "{host}");
        }
        for host in [
            "", "a b", "a:99999", "a:", "a:x", "[::1", "[zz]", "a..b", "a/b", "a@b", ":80",
        ] {
            assert!(!valid_host(host.as_bytes()), "{host}");
        }
        assert!(refused(&request(&[("Content-Length", "4")])));
        assert!(refused(&request(&[("Host", "a:70000")])));
    }

    #[test]
    fn upgrades_only_on_a_bodyless_get() {
        let get = |headers: &[(&str, &str)]| {
            crate::model::request::testing::request_to("GET", "/ws", headers)
        };
        let upgrade = [
            ("Host", "a"),
            ("Connection", "Upgrade"),
            ("Upgrade", "websocket"),
        ];
        assert!(!refused(&get(&upgrade)));
        let mut with_body = upgrade.to_vec();
        with_body.push(("Content-Length", "10"));
        assert!(refused(&get(&with_body)));
        assert!(refused(&request(&upgrade)), "a POST upgrade");
        assert!(refused(&get(&[("Host", "a"), ("Upgrade", "websocket")])));
        assert!(refused(&get(&[
            ("Host", "a"),
            ("Connection", "Upgrade"),
            ("Upgrade", "h2c")
        ])));
    }

    #[test]
    fn repeated_credentials_and_odd_expectations_are_refused() {
        assert!(refused(&request(&[
            ("Host", "a"),
            ("Authorization", "Bearer a"),
            ("Authorization", "Bearer b")
        ])));
        assert!(refused(&request(&[("Host", "a"), ("Expect", "200-ok")])));
        assert!(!refused(&request(&[
            ("Host", "a"),
            ("Expect", "100-Continue")
        ])));
    }

    #[test]
    fn sizes_are_bounded() {
        let small = RequestLimits {
            max_target: 10,
            max_header_count: 2,
            max_header_bytes: 40,
            ..RequestLimits::default()
        };
        let long =
            crate::model::request::testing::request_to("GET", "/0123456789", &[("Host", "a")]);
        assert_eq!(
            check(&long, None, &small).expect_err("long").code,
            ErrorCode::UriTooLong
        );
        let many = request(&[("Host", "a"), ("A", "1"), ("B", "2")]);
        assert_eq!(
            check(&many, None, &small).expect_err("many").code,
            ErrorCode::HeadersTooLarge
        );
        let big = request(&[("Host", "a"), ("A", &"x".repeat(40))]);
        assert_eq!(
            check(&big, None, &small).expect_err("big").code,
            ErrorCode::HeadersTooLarge
        );
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn text(alphabet: &'static [&'static str], len: usize) -> impl Strategy<Value = String> {
            prop::collection::vec(prop::sample::select(alphabet), 0..len).prop_map(|p| p.concat())
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]

            #[test]
            fn content_length_passes_only_as_digits(
                value in text(&["0", "5", "9", ",", " ", "+", "-", "x", "\t", "e"], 6)
            ) {
                let Ok(header) = HeaderValue::from_str(value.trim()) else { return Ok(()) };
                let mut req = request(&[("Host", "a")]);
                req.append_header("Content-Length", header).expect("header");
                let digits = !value.trim().is_empty() && value.trim().bytes().all(|b| b.is_ascii_digit());
                prop_assert_eq!(!refused(&req), digits, "{:?}", value);
            }

            #[test]
            fn transfer_encoding_passes_only_as_chunked_alone(
                value in text(&["chunked", "Chunked", "gzip", ",", " ", "identity", ";q"], 4),
                with_length in any::<bool>()
            ) {
                let mut headers = vec![("Host", "a"), ("Transfer-Encoding", value.as_str())];
                if with_length {
                    headers.push(("Content-Length", "3"));
                }
                let req = request(&headers);
                let chunked = value.eq_ignore_ascii_case("chunked");
                prop_assert_eq!(!refused(&req), chunked && !with_length, "{:?}", value);
            }

            #[test]
            fn a_head_passes_only_with_crlf_line_ends(
                ends in prop::collection::vec(prop::sample::select(&["\r\n", "\n", "\r\n"][..]), 3)
            ) {
                let raw = format!("GET /x HTTP/1.1{}Host: a{}X-A: 1{}\r\n", ends[0], ends[1], ends[2]);
                let req = request(&[("Host", "a"), ("X-A", "1")]);
                let crlf = ends.iter().all(|end| *end == "\r\n");
                prop_assert_eq!(check(&req, Some(raw.as_bytes()), &limits()).is_ok(), crlf);
            }

            #[test]
            fn an_accepted_host_is_an_authority_with_a_real_port(
                host in text(&["a", "b", "1", ".", "-", "_", ":", "[", "]", "::1", "8", "0", "@", " ", "/", "65536", "65535"], 6)
            ) {
                if valid_host(host.as_bytes()) {
                    let authority = host.replace('_', "u");
                    let parsed = authority.parse::<http::uri::Authority>();
                    prop_assert!(parsed.is_ok(), "{host:?}");
                    if let Some(port) = parsed.ok().and_then(|a| a.port().map(|p| p.as_str().to_string())) {
                        prop_assert!(port.parse::<u16>().is_ok(), "{host:?}");
                    }
                }
            }
        }
    }
}
