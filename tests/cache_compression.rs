//! Compressed cache hits: a route with both a cache and compression stores each coding's
//! variant once, compressed on insert, and serves it as stored — with its own weak ETag,
//! Content-Length, `Vary: Accept-Encoding`, 304s and HEADs — while identity clients get an
//! identity variant. Every answer is also checked with httplint (tests/common/lint.rs).

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;

use common::{bind_test_port, Answer, Exchanges, Gateway};

/// A 16 KiB JSON document (compressible, well over `min_size`).
fn document() -> Vec<u8> {
    let mut json = String::from("{\"items\":[");
    let mut i = 0;
    while json.len() < 16 * 1024 - 64 {
        if i > 0 {
            json.push(',');
        }
        json += &format!("{{\"id\":{i},\"name\":\"item {i}\",\"tags\":[\"edge\",\"cache\"]}}");
        i += 1;
    }
    json += "]}";
    json.into_bytes()
}

/// Bytes no encoder shrinks much, served as `image/png`.
fn picture() -> Vec<u8> {
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    (0..8192)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect()
}

/// Accept-Encoding and If-None-Match of one request the origin received.
type Seen = [Option<String>; 2];

/// An origin serving `/doc.json` (ETag `"doc-1"`) and `/logo.png` (ETag `"png-1"`), both
/// fresh for 10 minutes, in identity only; it answers `If-None-Match` with 304 and HEAD
/// without a body, and records the Accept-Encoding of every request by path.
#[derive(Clone)]
struct Origin {
    addr: String,
    max_age: u32,
    /// Accept-Encoding and If-None-Match of each request, by path.
    seen: Arc<Mutex<HashMap<String, Vec<Seen>>>>,
}

impl Origin {
    fn start() -> Origin {
        Origin::start_with(600)
    }

    /// An origin whose answers are fresh for `max_age` seconds.
    fn start_with(max_age: u32) -> Origin {
        let listener = bind_test_port();
        let origin = Origin {
            max_age,
            addr: listener.local_addr().expect("origin address").to_string(),
            seen: Arc::default(),
        };
        let serving = origin.clone();
        thread::spawn(move || serving.serve(&listener));
        origin
    }

    /// How many requests for `path` reached the origin.
    fn requests(&self, path: &str) -> usize {
        self.accept_encodings(path).len()
    }

    /// The Accept-Encoding of each request for `path`, in order.
    fn accept_encodings(&self, path: &str) -> Vec<Option<String>> {
        self.fields(path, 0)
    }

    /// The If-None-Match of each request for `path`, in order.
    fn if_none_matches(&self, path: &str) -> Vec<Option<String>> {
        self.fields(path, 1)
    }

    fn fields(&self, path: &str, which: usize) -> Vec<Option<String>> {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let requests = seen.get(path).map(Vec::as_slice).unwrap_or_default();
        requests
            .iter()
            .map(|fields| fields[which].clone())
            .collect()
    }

    fn serve(&self, listener: &TcpListener) {
        for stream in listener.incoming().flatten() {
            let origin = self.clone();
            thread::spawn(move || origin.answer(stream));
        }
    }

    fn answer(&self, mut stream: TcpStream) {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).is_ok_and(|n| n == 1) {
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).to_string();
        let mut lines = head.lines();
        let request_line = lines.next().unwrap_or_default().to_string();
        let field = |name: &str| {
            head.lines().skip(1).find_map(|line| {
                let (field, value) = line.split_once(':')?;
                field
                    .eq_ignore_ascii_case(name)
                    .then(|| value.trim().to_string())
            })
        };
        let path = request_line.split(' ').nth(1).unwrap_or("/").to_string();
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(path.clone())
            .or_default()
            .push([field("accept-encoding"), field("if-none-match")]);
        let max_age = self.max_age;
        let (content_type, etag, body) = match path.as_str() {
            "/doc.json" => ("application/json", "\"doc-1\"", document()),
            "/logo.png" => ("image/png", "\"png-1\"", picture()),
            _ => ("text/plain", "\"none\"", b"not here".to_vec()),
        };
        let fresh =
            field("if-none-match").is_some_and(|tags| tags.contains(&etag[1..etag.len() - 1]));
        let mut response = if fresh {
            "HTTP/1.1 304 Not Modified\r\n".to_string()
        } else {
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
                 Accept-Ranges: bytes\r\n",
                body.len()
            )
        };
        response += &format!(
            "ETag: {etag}\r\nCache-Control: max-age={max_age}\r\nLast-Modified: Mon, 01 Jan 2024 \
             00:00:00 GMT\r\nConnection: close\r\n\r\n"
        );
        let mut bytes = response.into_bytes();
        if !fresh && !request_line.starts_with("HEAD ") {
            bytes.extend(body);
        }
        let _ = stream.write_all(&bytes);
    }
}

const ROUTES: &str = r#"
upstreams:
  origin:
    targets: [{ address: "ORIGIN" }]
routes:
  - name: edge
    match: { path_prefix: / }
    upstream: origin
    cache: { enabled: true }
    compression: { min_size: 1024, algorithms: [gzip, zstd] }
"#;

fn gateway(origin: &Origin, routes: &str) -> Gateway {
    Gateway::start(&routes.replace("ORIGIN", &origin.addr))
}

fn gunzip(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(body)
        .read_to_end(&mut out)
        .expect("a complete gzip stream");
    out
}

fn x_cache(answer: &Answer) -> &str {
    answer.field("x-cache").unwrap_or("<none>")
}

/// The fields that describe the representation (not the message), sorted.
fn representation(answer: &Answer) -> Vec<(String, String)> {
    const PER_MESSAGE: [&str; 5] = ["date", "x-request-id", "age", "connection", "x-cache"];
    let mut fields: Vec<_> = answer
        .fields
        .iter()
        .filter(|(name, _)| !PER_MESSAGE.contains(&name.as_str()))
        .cloned()
        .collect();
    fields.sort();
    fields
}

#[test]
fn a_gzip_variant_is_compressed_once_and_served_as_stored() {
    let origin = Origin::start();
    let gateway = gateway(&origin, ROUTES);
    let exchanges = Exchanges::default();
    let get = |headers: &[(&str, &str)]| exchanges.ask(&gateway, "GET", "/doc.json", headers);
    let gzip = ("Accept-Encoding", "gzip");

    let miss = get(&[gzip]);
    assert_eq!((miss.status, x_cache(&miss)), (200, "MISS"), "{miss:?}");
    assert_eq!(miss.field("content-encoding"), Some("gzip"));
    assert_eq!(gunzip(&miss.body), document());
    // The origin is asked once, for exactly the negotiated coding.
    assert_eq!(origin.accept_encodings("/doc.json"), [Some("gzip".into())]);

    let hit = get(&[gzip]);
    assert_eq!((hit.status, x_cache(&hit)), (200, "HIT"), "{hit:?}");
    assert_eq!(hit.field("content-encoding"), Some("gzip"));
    assert!(hit.vary().contains("accept-encoding"), "{hit:?}");
    assert_eq!(hit.field("etag"), Some("W/\"doc-1\""), "weak: other bytes");
    assert_eq!(
        hit.field("accept-ranges"),
        None,
        "no ranges of a compressed stream"
    );
    assert_eq!(hit.field("transfer-encoding"), None, "{hit:?}");
    let length = hit.field("content-length").map(str::parse::<usize>);
    assert_eq!(length, Some(Ok(hit.body.len())), "{hit:?}");
    assert!(hit.body.len() < document().len() / 3, "compressed");
    assert_eq!(gunzip(&hit.body), document());
    // Served as stored: byte-identical, and a browser's longer list shares the variant.
    let browser = get(&[("Accept-Encoding", "gzip, deflate, br")]);
    assert_eq!(x_cache(&browser), "HIT", "{browser:?}");
    assert_eq!(browser.body, hit.body);
    assert_eq!(
        origin.requests("/doc.json"),
        1,
        "gzip clients share one variant"
    );

    // Conditional requests with the weak tag, or its strong form (weak comparison).
    for tag in ["W/\"doc-1\"", "\"doc-1\"", "\"other\", W/\"doc-1\""] {
        let revalidated = get(&[gzip, ("If-None-Match", tag)]);
        assert_eq!(
            revalidated.status, 304,
            "If-None-Match: {tag}: {revalidated:?}"
        );
        assert_eq!(revalidated.field("etag"), Some("W/\"doc-1\""));
        assert!(revalidated.body.is_empty());
    }
    let changed = get(&[gzip, ("If-None-Match", "W/\"doc-0\"")]);
    assert_eq!(changed.status, 200);

    // HEAD: the same fields as the GET hit, no body.
    let head = exchanges.ask(&gateway, "HEAD", "/doc.json", &[gzip]);
    assert_eq!((head.status, x_cache(&head)), (200, "HIT"), "{head:?}");
    assert_eq!(representation(&head), representation(&hit));
    assert!(head.body.is_empty());
    assert_eq!(
        origin.requests("/doc.json"),
        1,
        "all of it from the one variant"
    );

    let hits = gateway.metric(
        "portcullis_cache_requests_total",
        &[("route", "edge"), ("result", "hit")],
    );
    assert!(hits.is_some_and(|hits| hits >= 7.0), "hits {hits:?}");
}

#[test]
fn identity_clients_get_an_identity_variant_and_ranges_come_from_it() {
    let origin = Origin::start();
    let gateway = gateway(&origin, ROUTES);
    let exchanges = Exchanges::default();
    let get = |headers: &[(&str, &str)]| exchanges.ask(&gateway, "GET", "/doc.json", headers);

    let gzip = get(&[("Accept-Encoding", "gzip")]);
    assert_eq!(gzip.field("content-encoding"), Some("gzip"));
    let plain = get(&[]);
    assert_eq!((plain.status, x_cache(&plain)), (200, "MISS"), "{plain:?}");
    assert_eq!(
        origin.accept_encodings("/doc.json"),
        [Some("gzip".into()), None],
        "the identity variant is fetched without Accept-Encoding"
    );
    for headers in [&[][..], &[("Accept-Encoding", "identity")]] {
        let hit = get(headers);
        assert_eq!((hit.status, x_cache(&hit)), (200, "HIT"), "{hit:?}");
        assert_eq!(hit.field("content-encoding"), None);
        assert_eq!(hit.body, document());
        assert_eq!(
            hit.field("etag"),
            Some("\"doc-1\""),
            "identity bytes: strong"
        );
        assert!(hit.vary().contains("accept-encoding"), "{hit:?}");
        assert_eq!(hit.field("accept-ranges"), Some("bytes"));
    }
    // A range request selects the identity variant whatever the client accepts: 206
    // of identity bytes, with the strong tag If-Range needs.
    let range = get(&[("Accept-Encoding", "gzip"), ("Range", "bytes=0-99")]);
    assert_eq!((range.status, x_cache(&range)), (206, "HIT"), "{range:?}");
    assert_eq!(range.body, document()[..100]);
    assert_eq!(range.field("content-encoding"), None);
    let resumed = get(&[("Range", "bytes=100-199"), ("If-Range", "\"doc-1\"")]);
    assert_eq!(resumed.status, 206, "{resumed:?}");
    assert_eq!(resumed.body, document()[100..200]);
    assert_eq!(
        origin.requests("/doc.json"),
        2,
        "two variants, fetched once each"
    );
}

#[test]
fn zstd_clients_get_their_own_variant() {
    let origin = Origin::start();
    let gateway = gateway(&origin, ROUTES);
    let exchanges = Exchanges::default();
    let zstd = [("Accept-Encoding", "zstd, gzip;q=0.5")];
    let miss = exchanges.ask(&gateway, "GET", "/doc.json", &zstd);
    let hit = exchanges.ask(&gateway, "GET", "/doc.json", &zstd);
    assert_eq!(x_cache(&miss), "MISS", "{miss:?}");
    assert_eq!(x_cache(&hit), "HIT", "{hit:?}");
    assert_eq!(hit.field("content-encoding"), Some("zstd"));
    assert_eq!(hit.field("etag"), Some("W/\"doc-1\""));
    assert_eq!(
        zstd::stream::decode_all(&hit.body[..]).expect("a complete zstd frame"),
        document()
    );
    assert_eq!(origin.accept_encodings("/doc.json"), [Some("zstd".into())]);
}

#[test]
fn what_the_policy_does_not_compress_is_stored_identity_for_everyone() {
    let origin = Origin::start();
    // JSON is not among this route's types.
    let text_only = ROUTES.replace("min_size: 1024,", "min_size: 1024, types: [text/],");
    let gateway = gateway(&origin, &text_only);
    let exchanges = Exchanges::default();
    for path in ["/logo.png", "/doc.json"] {
        let gzip = exchanges.ask(&gateway, "GET", path, &[("Accept-Encoding", "gzip")]);
        assert_eq!(
            (gzip.status, x_cache(&gzip)),
            (200, "MISS"),
            "{path}: {gzip:?}"
        );
        assert_eq!(gzip.field("content-encoding"), None, "{path}");
        let plain = exchanges.ask(&gateway, "GET", path, &[]);
        assert_eq!(x_cache(&plain), "HIT", "{path}: one entry for every client");
        assert_eq!(plain.body, gzip.body);
        let zstd = exchanges.ask(&gateway, "GET", path, &[("Accept-Encoding", "zstd")]);
        assert_eq!(x_cache(&zstd), "HIT", "{path}");
        assert_eq!(origin.requests(path), 1, "{path}");
    }
}

#[test]
fn hostile_accept_encodings_never_get_a_refused_coding_nor_an_entry_each() {
    let origin = Origin::start();
    let gateway = gateway(&origin, ROUTES);
    let exchanges = Exchanges::default();
    let huge = "x-unknown-coding;q=0.5, ".repeat(300) + "gzip";
    let mut values: Vec<(String, Option<&str>)> = vec![
        (huge, Some("gzip")),
        ("gzip;q=0".into(), None),
        ("*;q=0".into(), None),
        ("gzip;q=0, zstd;q=0, *;q=0".into(), None),
        ("gzip;q=0, *".into(), Some("zstd")),
        ("gzip;q=0.001, zstd;q=0".into(), Some("gzip")),
        ("gzip;q=nan, zstd;q=1.5".into(), None),
        (";;;,,,=, q=1, \"gzip\"".into(), None),
        ("GZIP;Q=1.000".into(), Some("gzip")),
        ("identity;q=0".into(), None),
    ];
    values.extend((0..40).map(|i| (format!("gzip, x-client-{i}"), Some("gzip"))));
    for (value, want) in &values {
        let answer = exchanges.ask(&gateway, "GET", "/doc.json", &[("Accept-Encoding", value)]);
        let short: String = value.chars().take(40).collect();
        assert_eq!(answer.status, 200, "{short}: {answer:?}");
        assert_eq!(answer.field("content-encoding"), *want, "{short}");
    }
    // Three variants at most (identity, gzip, zstd), each fetched once.
    let mut asked = origin.accept_encodings("/doc.json");
    asked.sort();
    assert_eq!(asked, [None, Some("gzip".into()), Some("zstd".into())]);
}

#[test]
fn revalidating_a_compressed_variant_keeps_its_weak_etag() {
    let origin = Origin::start_with(1);
    let gateway = gateway(&origin, ROUTES);
    let exchanges = Exchanges::default();
    let gzip = [("Accept-Encoding", "gzip")];
    let first = exchanges.ask(&gateway, "GET", "/doc.json", &gzip);
    assert_eq!(first.field("etag"), Some("W/\"doc-1\""));
    // Once stale, the gateway revalidates with the stored (weak) tag; the origin's 304
    // carries its strong tag, which must not land on the compressed bytes.
    thread::sleep(std::time::Duration::from_millis(2100));
    let revalidated = exchanges.ask(&gateway, "GET", "/doc.json", &gzip);
    assert_eq!(revalidated.status, 200, "{revalidated:?}");
    assert_eq!(
        origin.if_none_matches("/doc.json"),
        [None, Some("W/\"doc-1\"".into())]
    );
    let hit = exchanges.ask(&gateway, "GET", "/doc.json", &gzip);
    for answer in [&revalidated, &hit] {
        assert_eq!(answer.field("etag"), Some("W/\"doc-1\""), "{answer:?}");
        assert_eq!(answer.field("content-encoding"), Some("gzip"));
        assert_eq!(gunzip(&answer.body), document());
    }
    assert_eq!(x_cache(&hit), "HIT", "{hit:?}");
}

#[test]
fn uncached_compressed_routes_never_send_a_refused_coding_either() {
    let origin = Origin::start();
    let uncached = ROUTES.replace("    cache: { enabled: true }\n", "");
    let gateway = gateway(&origin, &uncached);
    let exchanges = Exchanges::default();
    for (value, want) in [
        ("gzip", Some("gzip")),
        ("gzip;q=0", None),
        ("gzip;q=0, zstd;q=0", None),
        // Pingora's module takes the first listed coding; refused, nothing is encoded.
        ("gzip;q=0, zstd", None),
        // ... and ignores weights: it would pick zstd, negotiation prefers gzip; identity
        // rather than a coding the client ranks lower (cached routes send gzip here).
        ("zstd;q=0.5, gzip", None),
        ("zstd, gzip", Some("zstd")),
    ] {
        let answer = exchanges.ask(&gateway, "GET", "/doc.json", &[("Accept-Encoding", value)]);
        assert_eq!(answer.status, 200, "{value}: {answer:?}");
        assert_eq!(x_cache(&answer), "<none>");
        assert_eq!(answer.field("content-encoding"), want, "{value}");
        assert!(
            answer.vary().contains("accept-encoding"),
            "{value}: {answer:?}"
        );
    }
}
