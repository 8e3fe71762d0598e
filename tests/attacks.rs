//! The attack corpus (issue #13): raw requests an attacker would send, each checked for
//! the gateway's answer, for exactly what reached the upstream (a server that records
//! raw bytes), and for a clean request on a new connection afterwards.

mod common;

use common::{raw_request, Gateway, RawAnswer, RawConnection, RawRequest, RecordingUpstream};

/// `sha256("s3cret")`: the API key of consumer `acme`.
const KEY_DIGEST: &str = "1ec1c26b50d5d3c58d9583181af8076655fe00756bf7285940ba3670f99fcba0";
const SECRET: &str = "a-test-secret-of-at-least-32-bytes!!";

/// Routes: `/public` (open), `/admin` (key_auth), `/keyed` (key in header or query),
/// `/claims` (jwt with claims_to_headers), `/rawpath` (path.raw), `/strip`
/// (strip_prefix), `/cached` (edge cache), and host `secure.test` (key_auth).
fn gateway(upstream: &RecordingUpstream) -> Gateway {
    Gateway::start(&format!(
        r#"
consumers:
  - {{ id: acme, api_keys: ["sha256:{KEY_DIGEST}"] }}
upstreams:
  app:
    targets: [{{ address: "{addr}" }}]
routes:
  - name: public
    match: {{ path_prefix: /public }}
    upstream: app
  - name: admin
    match: {{ path_prefix: /admin }}
    upstream: app
    plugins: {{ key_auth: {{}} }}
  - name: keyed
    match: {{ path_prefix: /keyed }}
    upstream: app
    plugins: {{ key_auth: {{ header: X-Api-Key, query: api_key }} }}
  - name: claims
    match: {{ path_prefix: /claims }}
    upstream: app
    plugins:
      jwt: {{ secret: "{SECRET}", algorithms: [HS256], claims_to_headers: {{ sub: X-User-Id }} }}
  - name: rawpath
    match: {{ path_prefix: /rawpath }}
    upstream: app
    path: {{ raw: true }}
  - name: strip
    match: {{ path_prefix: /strip }}
    upstream: app
    strip_prefix: true
  - name: cached
    match: {{ path_prefix: /cached }}
    upstream: app
    cache: {{ enabled: true, default_ttl: 60s }}
  - name: secure
    match: {{ hosts: [secure.test], path_prefix: / }}
    upstream: app
    plugins: {{ key_auth: {{}} }}
  - name: rest
    match: {{ path_prefix: / }}
    upstream: app
"#,
        addr = upstream.addr()
    ))
}

/// What the gateway must answer.
#[derive(Debug, Clone, Copy)]
enum Answer {
    /// This status with this JSON error code (and the connection closed when `closes`).
    Error(u16, &'static str, bool),
    /// A bare status (Pingora's own answer, before any phase).
    Status(u16),
}

/// What the upstream must have received.
#[derive(Debug, Clone, Copy)]
enum Upstream {
    Nothing,
    /// Exactly these request lines, in order.
    Lines(&'static [&'static str]),
}

struct Case {
    name: &'static str,
    request: Vec<u8>,
    answer: Answer,
    upstream: Upstream,
}

fn refused(name: &'static str, request: &[u8]) -> Case {
    Case {
        name,
        request: request.to_vec(),
        answer: Answer::Error(400, "BAD_REQUEST", true),
        upstream: Upstream::Nothing,
    }
}

fn answered(name: &'static str, request: &[u8], status: u16, code: &'static str) -> Case {
    Case {
        name,
        request: request.to_vec(),
        answer: Answer::Error(status, code, false),
        upstream: Upstream::Nothing,
    }
}

fn passed(name: &'static str, request: &[u8], lines: &'static [&'static str]) -> Case {
    Case {
        name,
        request: request.to_vec(),
        answer: Answer::Status(200),
        upstream: Upstream::Lines(lines),
    }
}

/// Sends each case on a connection of its own, then a clean request on a new
/// connection, and checks the answers and what the upstream got in between.
fn run(cases: Vec<Case>) {
    let upstream = RecordingUpstream::start();
    let gateway = gateway(&upstream);
    let addr = gateway.addr();
    let mut failures = Vec::new();
    for case in &cases {
        let before = upstream.requests().len();
        let closes = matches!(case.answer, Answer::Error(_, _, true));
        let answer = raw_request(&addr, &case.request, closes);
        let clean = raw_request(
            &addr,
            b"GET /public/clean HTTP/1.1\r\nHost: clean.test\r\n\r\n",
            false,
        );
        let received: Vec<RawRequest> = upstream.requests().split_off(before);
        if let Err(problem) = check(case, &answer, &clean, &received) {
            failures.push(format!(
                "{}: {problem}\n  answer: {:?}\n  upstream got: {:?}",
                case.name,
                answer.text.lines().next().unwrap_or(""),
                received
                    .iter()
                    .map(RawRequest::request_line)
                    .collect::<Vec<_>>()
            ));
        }
    }
    let smuggled: Vec<RawRequest> = upstream
        .requests()
        .into_iter()
        .filter(|request| request.target().contains("smuggled"))
        .collect();
    assert!(
        smuggled.is_empty(),
        "smuggled requests reached the upstream: {smuggled:?}"
    );
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

fn check(
    case: &Case,
    answer: &RawAnswer,
    clean: &RawAnswer,
    received: &[RawRequest],
) -> Result<(), String> {
    match case.answer {
        Answer::Error(status, code, closes) => {
            if answer.status != status || answer.error_code().as_deref() != Some(code) {
                return Err(format!("expected {status} {code}"));
            }
            if closes && !answer.closed {
                return Err("the connection stayed open".into());
            }
        }
        Answer::Status(status) if answer.status != status => {
            return Err(format!("expected status {status}"));
        }
        Answer::Status(_) => {}
    }
    if clean.status != 200 {
        return Err(format!("the clean request after it got {}", clean.status));
    }
    let (forwarded, last) = match received.split_last() {
        Some((last, forwarded)) => (forwarded, last),
        None => return Err("the clean request never reached the upstream".into()),
    };
    if last.target() != "/public/clean" {
        return Err(format!(
            "the last request upstream is {:?}",
            last.request_line()
        ));
    }
    let lines: Vec<&str> = forwarded.iter().map(RawRequest::request_line).collect();
    let expected: &[&str] = match case.upstream {
        Upstream::Nothing => &[],
        Upstream::Lines(lines) => lines,
    };
    if lines != expected {
        return Err(format!("the upstream got {lines:?}, not {expected:?}"));
    }
    Ok(())
}

/// `POST /public/s` whose body, if misframed, is a second request to `/admin/smuggled`.
fn smuggle(framing: &str) -> Vec<u8> {
    let hidden = "GET /admin/smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    format!("POST /public/s HTTP/1.1\r\nHost: x\r\n{framing}\r\n\r\n{hidden}").into_bytes()
}

#[test]
fn content_length_smuggling_is_refused() {
    let mut cases = vec![
        refused(
            "a list of equal lengths",
            &smuggle("Content-Length: 49, 49"),
        ),
        refused("5,5", &smuggle("Content-Length: 5,5")),
        refused("5 ,5", &smuggle("Content-Length: 5 ,5")),
        refused("5, 5, 5", &smuggle("Content-Length: 5, 5, 5")),
        refused(
            "two equal lines",
            &smuggle("Content-Length: 5\r\nContent-Length: 5"),
        ),
        refused(
            "two lines differing",
            &smuggle("Content-Length: 5\r\nContent-Length: 49"),
        ),
        refused("a plus sign", &smuggle("Content-Length: +5")),
        refused("negative", &smuggle("Content-Length: -1")),
        refused("hexadecimal", &smuggle("Content-Length: 0x5")),
        refused("empty", &smuggle("Content-Length:")),
        refused(
            "overflowing",
            &smuggle("Content-Length: 99999999999999999999999"),
        ),
        refused("underscored name", &smuggle("Content_Length: 49")),
        refused("space before colon", &smuggle("Content-Length : 49")),
        refused("folded value", &smuggle("Content-Length: 4\r\n 9")),
        refused(
            "Connection naming Content-Length is not a way to drop it",
            &smuggle("Content-Length: 49, 49\r\nConnection: content-length"),
        ),
    ];
    cases.push(Case {
        name: "an exact length takes the hidden request as body",
        request: smuggle("Content-Length: 41"),
        answer: Answer::Status(200),
        upstream: Upstream::Lines(&["POST /public/s HTTP/1.1"]),
    });
    run(cases);
}

#[test]
fn transfer_encoding_smuggling_is_refused() {
    let chunked_smuggle = |te: &str| {
        let hidden = "GET /admin/smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
        format!("POST /public/s HTTP/1.1\r\nHost: x\r\n{te}\r\n\r\n0\r\n\r\n{hidden}").into_bytes()
    };
    run(vec![
        refused(
            "CL.TE",
            &chunked_smuggle("Content-Length: 46\r\nTransfer-Encoding: chunked"),
        ),
        refused(
            "TE.CL",
            &chunked_smuggle("Transfer-Encoding: chunked\r\nContent-Length: 3"),
        ),
        refused(
            "lower-case CL with TE",
            &chunked_smuggle("transfer-encoding: chunked\r\ncontent-length: 3"),
        ),
        refused(
            "chunked, chunked",
            &chunked_smuggle("Transfer-Encoding: chunked, chunked"),
        ),
        refused("identity", &chunked_smuggle("Transfer-Encoding: identity")),
        refused(
            "gzip, chunked",
            &chunked_smuggle("Transfer-Encoding: gzip, chunked"),
        ),
        refused(
            "chunked, identity",
            &chunked_smuggle("Transfer-Encoding: chunked, identity"),
        ),
        refused(
            "two lines",
            &chunked_smuggle("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked"),
        ),
        refused("xchunked", &chunked_smuggle("Transfer-Encoding: xchunked")),
        refused(
            "underscored name",
            &chunked_smuggle("Transfer_Encoding: chunked\r\nContent-Length: 3"),
        ),
        refused(
            "space before colon",
            &chunked_smuggle("Transfer-Encoding : chunked"),
        ),
        refused(
            "folded value",
            &chunked_smuggle("Transfer-Encoding:\r\n chunked"),
        ),
        refused(
            "vertical tab",
            &chunked_smuggle("Transfer-Encoding:\x0bchunked"),
        ),
        refused(
            "HTTP/1.0 with Transfer-Encoding",
            b"POST /public/s HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ),
        passed(
            "a clean chunked body is one request",
            &chunked_smuggle("Transfer-Encoding: chunked"),
            &["POST /public/s HTTP/1.1"],
        ),
    ]);
}

#[test]
fn malformed_heads_are_refused_with_json() {
    run(vec![
        refused("bare LF everywhere", b"GET /public/x HTTP/1.1\nHost: x\n\n"),
        refused("bare LF in one header line", b"GET /public/x HTTP/1.1\r\nHost: x\nX-A: 1\r\n\r\n"),
        refused("bare CR", b"GET /public/x HTTP/1.1\r\nHost: x\rX-A: 1\r\n\r\n"),
        refused("NUL in a value", b"GET /public/x HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n"),
        refused("NUL in the target", b"GET /public/x\x00y HTTP/1.1\r\nHost: x\r\n\r\n"),
        refused("space in a header name", b"GET /public/x HTTP/1.1\r\nHost: x\r\nX A: 1\r\n\r\n"),
        refused("control byte in a name", b"GET /public/x HTTP/1.1\r\nHost: x\r\nX\x01A: 1\r\n\r\n"),
        refused("empty header name", b"GET /public/x HTTP/1.1\r\nHost: x\r\n: 1\r\n\r\n"),
        refused("folded header", b"GET /public/x HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n 2\r\n\r\n"),
        refused("HTTP/1.2", b"GET /public/x HTTP/1.2\r\nHost: x\r\n\r\n"),
        refused("HTTP/2.0 in a request line", b"GET /public/x HTTP/2.0\r\nHost: x\r\n\r\n"),
        refused("lower-case version", b"GET /public/x http/1.1\r\nHost: x\r\n\r\n"),
        refused("no version", b"GET /public/x\r\nHost: x\r\n\r\n"),
        refused("a method over 32 bytes", format!("{} /public/x HTTP/1.1\r\nHost: x\r\n\r\n", "A".repeat(40)).as_bytes()),
        refused("TRACE with a body", b"TRACE /public/x HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nab"),
        refused("Expect other than 100-continue", b"POST /public/x HTTP/1.1\r\nHost: x\r\nExpect: 200-ok\r\nContent-Length: 2\r\n\r\nab"),
        refused("two Expect lines", b"POST /public/x HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nab"),
        passed(
            "HTTP/1.0 without a length has no body (CVE-2026-2835)",
            b"POST /public/s HTTP/1.0\r\nHost: x\r\n\r\nGET /admin/smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
            &["POST /public/s HTTP/1.1"],
        ),
        passed(
            "Expect: 100-continue is honoured",
            b"POST /public/e HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nab",
            &["POST /public/e HTTP/1.1"],
        ),
        Case {
            name: "CONNECT is not proxied",
            request: b"CONNECT secure.test:443 HTTP/1.1\r\nHost: secure.test:443\r\n\r\n".to_vec(),
            answer: Answer::Status(405),
            upstream: Upstream::Nothing,
        },
    ]);
}

#[test]
fn upgrades_cannot_carry_requests_past_the_gateway() {
    let upgrade = |method: &str, extra: &str| {
        format!(
            "{method} /public/ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n{extra}\r\nGET /admin/smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        .into_bytes()
    };
    run(vec![
        refused("POST upgrade with a body (CVE-2026-2833)", &upgrade("POST", "Content-Length: 41\r\n")),
        refused("GET upgrade with a body", &upgrade("GET", "Content-Length: 41\r\n")),
        refused("GET upgrade chunked", &upgrade("GET", "Transfer-Encoding: chunked\r\n")),
        refused(
            "h2c upgrade",
            b"GET /public/x HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
        ),
        refused("HTTP2-Settings alone", b"GET /public/x HTTP/1.1\r\nHost: x\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n"),
        refused("Upgrade without Connection: upgrade", b"GET /public/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n"),
        refused("two Upgrade lines", b"GET /public/ws HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: websocket\r\nUpgrade: foo\r\n\r\n"),
        refused("HTTP/1.0 upgrade", b"GET /public/ws HTTP/1.0\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"),
        Case {
            // The upstream declines (200): the bytes after the request are the client's
            // next request, routed and checked like any other (401 at /admin), never
            // passed through raw.
            name: "a declined upgrade does not tunnel the next request",
            request: upgrade("GET", ""),
            answer: Answer::Status(200),
            upstream: Upstream::Lines(&["GET /public/ws HTTP/1.1"]),
        },
    ]);
}

#[test]
fn host_and_target_forms_are_checked() {
    run(vec![
        refused("HTTP/1.1 without Host", b"GET /public/x HTTP/1.1\r\n\r\n"),
        refused(
            "two Host lines",
            b"GET /public/x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        ),
        refused(
            "userinfo in Host",
            b"GET /public/x HTTP/1.1\r\nHost: a@secure.test\r\n\r\n",
        ),
        refused(
            "port over 65535",
            b"GET /public/x HTTP/1.1\r\nHost: a:99999\r\n\r\n",
        ),
        refused(
            "port not digits",
            b"GET /public/x HTTP/1.1\r\nHost: a:8o\r\n\r\n",
        ),
        refused(
            "space in Host",
            b"GET /public/x HTTP/1.1\r\nHost: a b\r\n\r\n",
        ),
        refused("empty Host", b"GET /public/x HTTP/1.1\r\nHost:\r\n\r\n"),
        refused(
            "slash in Host",
            b"GET /public/x HTTP/1.1\r\nHost: a/admin\r\n\r\n",
        ),
        refused(
            "absolute form disagreeing with Host",
            b"GET http://secure.test/x HTTP/1.1\r\nHost: other.test\r\n\r\n",
        ),
        refused(
            "absolute form with another scheme",
            b"GET ftp://x/public/x HTTP/1.1\r\nHost: x\r\n\r\n",
        ),
        refused("asterisk form", b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n"),
        refused("asterisk form on GET", b"GET * HTTP/1.1\r\nHost: x\r\n\r\n"),
        passed(
            "absolute form agreeing with Host goes upstream in origin form",
            b"GET http://x/public/abs?q=1 HTTP/1.1\r\nHost: x\r\n\r\n",
            &["GET /public/abs?q=1 HTTP/1.1"],
        ),
        answered(
            "a trailing dot does not dodge a host route",
            b"GET /x HTTP/1.1\r\nHost: secure.test.\r\n\r\n",
            401,
            "UNAUTHORIZED",
        ),
        answered(
            "nor does upper case",
            b"GET /x HTTP/1.1\r\nHost: SECURE.Test:8080\r\n\r\n",
            401,
            "UNAUTHORIZED",
        ),
    ]);
}

#[test]
fn dot_segments_cannot_bypass_a_route() {
    let get = |target: &str| format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes();
    let unauthorized = |name, target: &str| answered(name, &get(target), 401, "UNAUTHORIZED");
    run(vec![
        unauthorized("plain ..", "/public/../admin/x"),
        unauthorized("%2e%2e", "/public/%2e%2e/admin/x"),
        unauthorized(".%2e", "/public/.%2e/admin/x"),
        unauthorized("%2E%2E", "/public/%2E%2E/admin/x"),
        unauthorized("two levels", "/public/x/../../admin?a=1"),
        unauthorized("merged slashes", "//admin//x"),
        unauthorized("dot segments and slashes", "/public/.//..//admin/x"),
        refused("%2E%2E%2F hides a slash", &get("/public/%2E%2E%2Fadmin/x")),
        refused("an encoded slash", &get("/public%2Fadmin")),
        refused("..;/ (Tomcat)", &get("/public/..;/admin/x")),
        refused("%2e%2e;", &get("/public/%2e%2e;x/admin")),
        refused("a matrix parameter", &get("/admin;x=1")),
        refused("an encoded backslash", &get("/public/..%5cadmin")),
        refused("a raw backslash", &get("/public\\..\\admin")),
        refused("over-long UTF-8 dots", &get("/public/%c0%ae%c0%ae/admin")),
        refused("broken UTF-8", &get("/public/%c3")),
        refused("an encoded NUL", &get("/public/%00")),
        refused("malformed escape", &get("/public/%zz")),
        refused("double-encoded dots", &get("/public/%252e%252e/admin")),
        refused("climbing above the root", &get("/..")),
        refused("climbing from a route", &get("/public/../../admin")),
        refused("climbing a raw route", &get("/rawpath/../../admin")),
        passed(
            "dot segments removed upstream",
            &get("/public/a/./b//c/../d"),
            &["GET /public/a/b/d HTTP/1.1"],
        ),
        passed(
            "unreserved escapes decoded",
            &get("/public/%41%7e"),
            &["GET /public/A~ HTTP/1.1"],
        ),
        passed(
            "reserved escapes kept, upper case",
            &get("/public/a%3fb"),
            &["GET /public/a%3Fb HTTP/1.1"],
        ),
        passed(
            "the query is left alone",
            &get("/public/x?q=../../admin&r=%2e"),
            &["GET /public/x?q=../../admin&r=%2e HTTP/1.1"],
        ),
        passed(
            "strip_prefix strips the canonical path",
            &get("/strip/a/../b"),
            &["GET /b HTTP/1.1"],
        ),
        passed(
            "a raw route gets the bytes as sent",
            &get("/rawpath/a%2Fb/./c%3b"),
            &["GET /rawpath/a%2Fb/./c%3b HTTP/1.1"],
        ),
        answered(
            "a target over 8KiB",
            &get(&format!("/public/{}", "a".repeat(9000))),
            414,
            "URI_TOO_LONG",
        ),
    ]);
}

#[test]
fn header_limits_answer_431_with_json() {
    let headers = |count: usize, value: &str| {
        let lines: String = (0..count).map(|i| format!("X-F{i}: {value}\r\n")).collect();
        format!("GET /public/x HTTP/1.1\r\nHost: x\r\n{lines}\r\n").into_bytes()
    };
    run(vec![
        answered(
            "150 header fields",
            &headers(150, "v"),
            431,
            "REQUEST_HEADERS_TOO_LARGE",
        ),
        Case {
            name: "1,000 header fields (past Pingora's parser)",
            request: headers(1000, "v"),
            answer: Answer::Error(431, "REQUEST_HEADERS_TOO_LARGE", true),
            upstream: Upstream::Nothing,
        },
        answered(
            "a 70KiB header block",
            &headers(10, &"v".repeat(7 * 1024)),
            431,
            "REQUEST_HEADERS_TOO_LARGE",
        ),
        Case {
            name: "a head over 1MiB (past Pingora's parser)",
            request: headers(20, &"v".repeat(60 * 1024)),
            answer: Answer::Error(431, "REQUEST_HEADERS_TOO_LARGE", true),
            upstream: Upstream::Nothing,
        },
        passed(
            "99 header fields",
            &headers(98, "v"),
            &["GET /public/x HTTP/1.1"],
        ),
    ]);
}

fn token(sub: &str) -> String {
    let claims = serde_json::json!({ "sub": sub, "exp": 4_102_444_800u64 });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("sign")
}

#[test]
fn credentials_given_twice_are_refused() {
    let bearer = token("alice");
    let two_bearers = format!(
        "GET /claims/x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {bearer}\r\nAuthorization: Bearer forged\r\n\r\n"
    );
    run(vec![
        refused("two Authorization headers", two_bearers.as_bytes()),
        answered(
            "two API-key headers",
            b"GET /keyed/x HTTP/1.1\r\nHost: x\r\nX-Api-Key: s3cret\r\nX-Api-Key: other\r\n\r\n",
            400,
            "BAD_REQUEST",
        ),
        answered(
            "a key in header and query",
            b"GET /keyed/x?api_key=other HTTP/1.1\r\nHost: x\r\nX-Api-Key: s3cret\r\n\r\n",
            400,
            "BAD_REQUEST",
        ),
        answered(
            "a key twice in the query",
            b"GET /keyed/x?api_key=s3cret&api_key=x HTTP/1.1\r\nHost: x\r\n\r\n",
            400,
            "BAD_REQUEST",
        ),
        passed(
            "one key passes",
            b"GET /keyed/x HTTP/1.1\r\nHost: x\r\nX-Api-Key: s3cret\r\n\r\n",
            &["GET /keyed/x HTTP/1.1"],
        ),
    ]);
}

#[test]
fn look_alike_gateway_headers_never_reach_the_upstream() {
    let upstream = RecordingUpstream::start();
    let gateway = gateway(&upstream);
    let bearer = token("alice");
    let request = format!(
        "GET /claims/x HTTP/1.1\r\nHost: api.test\r\nAuthorization: Bearer {bearer}\r\n\
         X_Consumer_Id: admin\r\nX-Consumer-Id: admin\r\nx_user_id: mallory\r\nX_User-Id: mallory\r\n\
         X-Forwarded-Host: evil.test\r\nX_Forwarded_Host: evil.test\r\nX-Forwarded-Port: 1\r\n\
         X-Forwarded-Prefix: /admin\r\nX_Forwarded_For: 6.6.6.6\r\nX-Portcullis-Variant: canary\r\n\
         X_Request_Id: forged\r\n\r\n"
    );

    let answer = raw_request(&gateway.addr(), request.as_bytes(), false);

    assert_eq!(answer.status, 200, "{}", answer.text);
    let got = upstream.requests().pop().expect("forwarded");
    for spelled in [
        "X_Consumer_Id",
        "x_user_id",
        "X_User-Id",
        "X_Forwarded_Host",
        "X-Forwarded-Port",
        "X-Forwarded-Prefix",
        "X_Forwarded_For",
        "X-Portcullis-Variant",
        "X_Request_Id",
        "X-Consumer-Id",
    ] {
        assert!(
            !got.has_header_spelled(spelled),
            "{spelled} passed:\n{}",
            got.head
        );
    }
    assert_eq!(got.header_values("x-user-id"), ["alice"], "{}", got.head);
    assert_eq!(
        got.header_values("x-portcullis-variant"),
        ["stable"],
        "{}",
        got.head
    );
    assert_eq!(
        got.header_values("x-consumer-id"),
        Vec::<&str>::new(),
        "{}",
        got.head
    );
    assert_eq!(
        got.header_values("x-forwarded-host"),
        ["api.test"],
        "{}",
        got.head
    );
}

#[test]
fn the_cache_keeps_hosts_schemes_and_ports_apart_and_drains_bodies() {
    let upstream = RecordingUpstream::start();
    let gateway = gateway(&upstream);
    let addr = gateway.addr();
    let get = |host: &str| {
        raw_request(
            &addr,
            format!("GET /cached/page HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes(),
            false,
        )
    };

    // CVE-2026-2836: a key without the host (or port) lets one virtual host's response
    // answer another's.
    let a = get("a.test");
    let b = get("b.test");
    let b_port = get("b.test:8080");
    let a_again = get("a.test");

    for answer in [&a, &b, &b_port, &a_again] {
        assert_eq!(answer.status, 200, "{}", answer.text);
    }
    assert!(
        a_again.text.to_ascii_lowercase().contains("x-cache: hit"),
        "{}",
        a_again.text
    );
    let hosts: Vec<String> = upstream
        .requests()
        .iter()
        .map(|r| r.header("host").unwrap_or("").to_string())
        .collect();
    assert_eq!(hosts, ["a.test", "b.test", "b.test:8080"]);

    // CVE-2025-4366: a cache hit must still consume the request body, or the body is
    // read as the next request on the connection.
    let hidden = "GET /public/smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let hit_with_body = format!(
        "GET /cached/page HTTP/1.1\r\nHost: a.test\r\nContent-Length: {}\r\n\r\n{hidden}",
        hidden.len()
    );
    let mut connection = RawConnection::open(&addr);
    connection.send(hit_with_body.as_bytes());
    let hit = connection.read_answer(false);
    connection.send(b"GET /public/after HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let after = connection.read_answer(true);

    assert!(
        hit.text.to_ascii_lowercase().contains("x-cache: hit"),
        "{}",
        hit.text
    );
    // Either the body was drained and the next request is answered, or the connection
    // was closed: never is the body answered as a request.
    assert!(
        after.text.is_empty() || after.text.starts_with("HTTP/1.1 200"),
        "{}",
        after.text
    );
    assert!(
        upstream
            .requests()
            .iter()
            .all(|r| !r.target().contains("smuggled")),
        "{}",
        upstream.all_bytes()
    );
}

#[test]
fn a_trusted_proxy_may_state_the_forwarded_host() {
    let upstream = RecordingUpstream::start();
    let server = common::extend_section(
        common::BASE_CONFIG,
        "server",
        "  trusted_proxies: [127.0.0.1/32]",
    );
    let gateway = Gateway::start_raw(&format!(
        "{server}upstreams:\n  app:\n    targets: [{{ address: \"{}\" }}]\nroutes:\n  - name: all\n    match: {{ path_prefix: / }}\n    upstream: app\n",
        upstream.addr()
    ));
    let request =
        b"GET /x HTTP/1.1\r\nHost: edge.internal\r\nX-Forwarded-Host: shop.example.com\r\n\
        X-Forwarded-Port: 443\r\nX_Forwarded_Host: evil.test\r\n\r\n";

    let answer = raw_request(&gateway.addr(), request, false);

    assert_eq!(answer.status, 200, "{}", answer.text);
    let got = upstream.requests().pop().expect("forwarded");
    assert_eq!(
        got.header_values("x-forwarded-host"),
        ["shop.example.com"],
        "{}",
        got.head
    );
    assert_eq!(
        got.header_values("x-forwarded-port"),
        ["443"],
        "{}",
        got.head
    );
    assert!(!got.has_header_spelled("X_Forwarded_Host"), "{}", got.head);
}
