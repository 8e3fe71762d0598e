//! HTTP semantics of derived answers: a 304, a 206 and a HEAD answer carry the header
//! fields of the 200 of the same request (RFC 9110 §9.3.2, §15.3.7, §15.4.5), on a plain
//! route, a compressed one, a cached one and a cached and compressed one, for a client
//! that accepts gzip and one that does not. Every answer is also checked with httplint
//! (REDbot's linter; `pip install httplint`, see scripts/setup-debian.sh).

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;

use common::{bind_test_port, Answer, Exchanges, Gateway};

/// The one representation the origin serves at every path.
fn body() -> Vec<u8> {
    b"portcullis answers the same fields whatever part of a resource it sends. ".repeat(30)
}

/// The origin's representation metadata, sent on its 200, 206 and 304 alike.
const METADATA: [(&str, &str); 6] = [
    ("ETag", "\"v1\""),
    ("Last-Modified", "Mon, 01 Jan 2024 00:00:00 GMT"),
    ("Cache-Control", "public, max-age=600"),
    ("Expires", "Thu, 01 Jan 2099 00:00:00 GMT"),
    ("Content-Location", "/doc.txt"),
    ("Vary", "Accept-Language"),
];

/// An origin as RFC 9110 wants one: `If-None-Match` answered 304, `Range: bytes=A-B`
/// answered 206, HEAD without a body; one request per connection.
fn start_origin() -> String {
    let listener = bind_test_port();
    let addr = listener.local_addr().expect("origin address").to_string();
    thread::spawn(move || serve(&listener));
    addr
}

fn serve(listener: &TcpListener) {
    for stream in listener.incoming().flatten() {
        thread::spawn(move || answer(stream));
    }
}

fn answer(mut stream: TcpStream) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).is_ok_and(|n| n == 1) {
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let field = |name: &str| {
        head.lines()
            .find_map(|line| line.strip_prefix(&format!("{name}:")))
            .map(str::trim)
    };
    let body = body();
    let (status, mut fields, content) = if field("if-none-match").is_some_and(|t| t.contains("v1"))
    {
        ("304 Not Modified", vec![], vec![])
    } else if let Some((start, end)) = field("range").and_then(byte_range) {
        let end = end.min(body.len() - 1);
        let range = format!("bytes {start}-{end}/{}", body.len());
        let part = body[start..=end].to_vec();
        ("206 Partial Content", vec![("Content-Range", range)], part)
    } else {
        let ranges = ("Accept-Ranges", "bytes".to_string());
        ("200 OK", vec![ranges], body)
    };
    if status != "304 Not Modified" {
        fields.push(("Content-Type", "text/plain; charset=utf-8".into()));
        fields.push(("Content-Length", content.len().to_string()));
    }
    let mut response = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
    for (name, value) in METADATA {
        response += &format!("{name}: {value}\r\n");
    }
    for (name, value) in fields {
        response += &format!("{name}: {value}\r\n");
    }
    response += "\r\n";
    let mut bytes = response.into_bytes();
    if !head.starts_with("head ") {
        bytes.extend(content);
    }
    let _ = stream.write_all(&bytes);
}

fn byte_range(value: &str) -> Option<(usize, usize)> {
    let (start, end) = value.strip_prefix("bytes=")?.split_once('-')?;
    Some((start.parse().ok()?, end.parse().ok()?))
}

/// Fields that describe one message, not the representation: they may differ between
/// the 200 and a derived answer.
const PER_MESSAGE: [&str; 7] = [
    "date",
    "x-request-id",
    "age",
    "x-cache",
    "connection",
    "content-length",
    "transfer-encoding",
];

/// The fields RFC 9110 §15.3.7 and §15.4.5 require a 206 and a 304 to repeat.
const REPEATED: [&str; 5] = [
    "cache-control",
    "etag",
    "last-modified",
    "content-location",
    "expires",
];

fn opaque_tag(etag: Option<&str>) -> Option<&str> {
    etag.map(|tag| tag.strip_prefix("W/").unwrap_or(tag))
}

/// The 200, HEAD, 304 and 206 of `path` for a client sending `accept_encoding`.
fn assert_derived_answers_match(
    exchanges: &Exchanges,
    gateway: &Gateway,
    path: &str,
    accept_encoding: &str,
) {
    let ask =
        |method, path, headers: &[(&str, &str)]| exchanges.ask(gateway, method, path, headers);
    let context = format!("{path} with Accept-Encoding: {accept_encoding}");
    let ae = ("Accept-Encoding", accept_encoding);
    let full = ask("GET", path, &[ae]);
    assert_eq!(full.status, 200, "{context}: {full:?}");
    let etag = full
        .field("etag")
        .unwrap_or_else(|| panic!("{context}: no ETag"));

    let head = ask("HEAD", path, &[ae]);
    assert_eq!(head.status, 200, "{context}: {head:?}");
    let representation = |answer: &Answer| -> Vec<(String, String)> {
        let mut fields: Vec<_> = answer
            .fields
            .iter()
            .filter(|(name, _)| !PER_MESSAGE.contains(&name.as_str()))
            .cloned()
            .collect();
        fields.sort();
        fields
    };
    assert_eq!(
        representation(&head),
        representation(&full),
        "{context}: HEAD and GET differ"
    );

    let not_modified = ask("GET", path, &[ae, ("If-None-Match", etag)]);
    assert_eq!(not_modified.status, 304, "{context}: {not_modified:?}");
    let partial = ask("GET", path, &[ae, ("Range", "bytes=0-999")]);
    assert_eq!(partial.status, 206, "{context}: {partial:?}");
    assert_eq!(
        partial.body,
        body()[..1000],
        "{context}: a 206 carries the identity bytes its Content-Range counts"
    );
    assert_eq!(partial.field("content-encoding"), None, "{context}");
    for (kind, derived) in [("304", &not_modified), ("206", &partial)] {
        assert_eq!(derived.vary(), full.vary(), "{context}: Vary of the {kind}");
        for name in REPEATED {
            let (theirs, ours) = (derived.field(name), full.field(name));
            if name == "etag" && kind == "206" {
                // The 206's bytes are the identity representation's: same tag, and
                // strong (a client may combine it with other ranges).
                assert_eq!(
                    opaque_tag(theirs),
                    opaque_tag(ours),
                    "{context}: ETag of the 206"
                );
            } else {
                assert_eq!(theirs, ours, "{context}: {name} of the {kind}");
            }
        }
    }
}

const ROUTES: &str = r#"
upstreams:
  origin:
    targets: [{ address: "ORIGIN" }]
routes:
  - { name: plain, match: { path_prefix: /plain }, upstream: origin }
  - name: compressed
    match: { path_prefix: /compressed }
    upstream: origin
    compression: { min_size: 64 }
  - name: cached
    match: { path_prefix: /cached }
    upstream: origin
    cache: { enabled: true }
  - name: both
    match: { path_prefix: /both }
    upstream: origin
    cache: { enabled: true }
    compression: { min_size: 64 }
"#;

#[test]
fn derived_answers_carry_the_fields_of_the_full_answer() {
    let origin = start_origin();
    let gateway = Gateway::start(&ROUTES.replace("ORIGIN", &origin));
    let exchanges = Exchanges::default();
    for path in ["/plain/doc", "/compressed/doc", "/cached/doc", "/both/doc"] {
        for accept_encoding in ["gzip", "identity"] {
            assert_derived_answers_match(&exchanges, &gateway, path, accept_encoding);
        }
    }
    // The compressed routes did compress (and say so on every answer).
    for path in ["/compressed/doc", "/both/doc"] {
        let full = exchanges.ask(&gateway, "GET", path, &[("Accept-Encoding", "gzip")]);
        assert_eq!(full.field("content-encoding"), Some("gzip"), "{path}");
        assert!(full.vary().contains("accept-encoding"), "{path}: {full:?}");
        assert_eq!(full.field("etag"), Some("W/\"v1\""), "{path}: weakened");
    }
}

#[test]
fn a_304_passed_through_validates_the_compressed_answer_it_came_from() {
    let origin = start_origin();
    let gateway = Gateway::start(&ROUTES.replace("ORIGIN", &origin));
    let exchanges = Exchanges::default();
    let ask = |headers: &[(&str, &str)]| exchanges.ask(&gateway, "GET", "/compressed/doc", headers);
    let ae = ("Accept-Encoding", "gzip");
    let full = ask(&[ae]);
    // A client holding the compressed answer revalidates with its weak tag; the origin
    // (no Content-Type on its 304) answers for the identity bytes.
    let weak = full.field("etag").expect("an ETag");
    let revalidated = ask(&[ae, ("If-None-Match", weak)]);
    assert_eq!(revalidated.status, 304);
    assert_eq!(revalidated.field("etag"), Some(weak));
    assert_eq!(revalidated.vary(), full.vary());
    // One holding the identity answer keeps its strong tag.
    let strong = ("If-None-Match", "\"v1\"");
    let identity = ask(&[ae, strong]);
    assert_eq!(identity.field("etag"), Some("\"v1\""));
}
