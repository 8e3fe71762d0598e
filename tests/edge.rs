//! The edge tier's own work: TLS termination with certificates chosen by SNI (and
//! swapped by reload), HTTP/2 by ALPN, response compression, and request hygiene (CORS,
//! address lists, smuggling defences, header limits).

mod common;

use std::io::Read;
use std::path::Path;
use std::process::Command;

use common::{
    assert_gateway_error, extend_section, free_port, http_agent, make_cert, raw_exchange, Gateway,
    OneRoute, TestDir, Upstream, BASE_CONFIG, PING_ROUTE,
};

/// What curl saw: the status line's HTTP version, the status, the body and the
/// certificate subject of the server.
struct CurlAnswer {
    http_version: String,
    status: u16,
    body: String,
    verbose: String,
}

/// `curl https://HOST:PORT/path` resolved to 127.0.0.1, trusting only `ca`.
fn curl_https(ca: &Path, host: &str, port: u16, path: &str, extra: &[&str]) -> CurlAnswer {
    let output = Command::new("curl")
        .args(["-sS", "-v", "--max-time", "10", "--cacert"])
        .arg(ca)
        .arg("--resolve")
        .arg(format!("{host}:{port}:127.0.0.1"))
        .args(["-w", "\n%{http_version} %{http_code}"])
        .args(extra)
        .arg(format!("https://{host}:{port}{path}"))
        .output()
        .expect("run curl (apt-get install curl)");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let verbose = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "curl {host}{path} failed: {verbose}"
    );
    let (body, last) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    let (version, status) = last.split_once(' ').unwrap_or(("", "0"));
    CurlAnswer {
        http_version: version.to_string(),
        status: status.trim().parse().unwrap_or(0),
        body: body.to_string(),
        verbose,
    }
}

/// A gateway with a TLS listener serving certificates made for it in `certs`: `a.pem`
/// (a.test) and `b.pem` (`b_names`).
struct TlsGateway {
    gateway: Gateway,
    port: u16,
    config: String,
    certs: TestDir,
}

impl TlsGateway {
    fn start(b_names: &str) -> TlsGateway {
        let certs = TestDir::new();
        make_cert(certs.path(), "a", "a.test");
        make_cert(certs.path(), "b", b_names);
        let port = free_port();
        let listener = format!(
            "  - address: \"127.0.0.1:{port}\"\n    tls:\n      certificates:\n        - {{ cert: \"{0}/a.pem\", key: \"{0}/a.key\" }}\n        - {{ cert: \"{0}/b.pem\", key: \"{0}/b.key\" }}",
            certs.path().display()
        );
        let config = extend_section(BASE_CONFIG, "listeners", &listener)
            + r#"
routes:
  - name: hello
    match: { path: /hello }
    respond: { status: 200, body: "hello over tls" }
"#;
        TlsGateway {
            gateway: Gateway::start_raw(&config),
            port,
            config,
            certs,
        }
    }

    /// The test CA that signed the certificates.
    fn ca(&self) -> std::path::PathBuf {
        self.certs.join("ca.pem")
    }
}

#[test]
fn tls_certificates_are_chosen_by_sni_and_http2_is_negotiated() {
    let tls = TlsGateway::start("b.test,*.b.test");
    let (ca, port) = (tls.ca(), tls.port);

    let a = curl_https(&ca, "a.test", port, "/hello", &["--http2"]);
    let b = curl_https(&ca, "b.test", port, "/hello", &["--http1.1"]);
    let wildcard = curl_https(&ca, "api.b.test", port, "/hello", &[]);

    assert_eq!((a.status, a.body.as_str()), (200, "hello over tls"));
    assert!(
        a.verbose.contains("CN=a.test"),
        "a.test got another certificate: {}",
        a.verbose
    );
    assert_eq!(a.http_version, "2", "HTTP/2 should be negotiated by ALPN");
    assert_eq!(b.status, 200);
    assert!(b.verbose.contains("CN=b.test"), "{}", b.verbose);
    assert_eq!(b.http_version, "1.1");
    assert!(
        wildcard.verbose.contains("CN=b.test"),
        "{}",
        wildcard.verbose
    );
    assert!(
        a.verbose.contains("TLSv1.3") || a.verbose.contains("TLSv1.2"),
        "{}",
        a.verbose
    );
}

#[test]
fn tls_older_than_1_2_is_refused() {
    let tls = TlsGateway::start("b.test");
    let port = tls.port;

    let output = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "5",
            "-k",
            "--tlsv1.1",
            "--tls-max",
            "1.1",
        ])
        .arg("--resolve")
        .arg(format!("a.test:{port}:127.0.0.1"))
        .arg(format!("https://a.test:{port}/hello"))
        .output()
        .expect("run curl");

    assert!(!output.status.success(), "a TLS 1.1 handshake must fail");
}

#[test]
fn a_reload_serves_a_renewed_certificate_without_a_restart() {
    let tls = TlsGateway::start("b.test");
    let (ca, port) = (tls.ca(), tls.port);
    let before = curl_https(&ca, "a.test", port, "/hello", &[]);

    // Renew a.test's certificate (new key, new serial) and reload the same file.
    make_cert(tls.certs.path(), "a", "a.test,www.a.test");
    tls.gateway.rewrite_config_raw(&tls.config);
    tls.gateway.reload();
    let after = curl_https(&ca, "www.a.test", port, "/hello", &[]);

    assert_eq!(before.status, 200);
    assert_eq!(after.status, 200, "{}", after.verbose);
    assert!(
        after.verbose.contains("www.a.test") && !before.verbose.contains("www.a.test"),
        "the renewed certificate (which adds www.a.test) should be served: {}",
        after.verbose
    );
}

/// A gateway proxying `/` to `app` with compression on for text above 64 bytes.
fn compressing_gateway(app: &Upstream) -> Gateway {
    Gateway::start(
        &OneRoute::to(&[app])
            .section(r#"compression: { min_size: 64, types: ["text/"] }"#)
            .yaml(),
    )
}

fn get_raw(gateway: &Gateway, path: &str, accept_encoding: &str) -> (Option<String>, Vec<u8>) {
    let response = http_agent()
        .get(&gateway.url(path))
        .set("Accept-Encoding", accept_encoding)
        .call()
        .expect("GET");
    let encoding = response.header("Content-Encoding").map(str::to_string);
    let mut body = Vec::new();
    response
        .into_reader()
        .read_to_end(&mut body)
        .expect("read the body");
    (encoding, body)
}

#[test]
fn responses_are_compressed_with_each_encoding_offered() {
    let app = Upstream::start("app");
    let text = "portcullis compresses text at the edge. ".repeat(100);
    app.set_body(&text);
    app.set_header("Content-Type", "text/plain; charset=utf-8");
    let gateway = compressing_gateway(&app);

    let (gzip_encoding, gzip_body) = get_raw(&gateway, "/t", "gzip");
    let (br_encoding, _) = get_raw(&gateway, "/t", "br");
    let (zstd_encoding, zstd_body) = get_raw(&gateway, "/t", "zstd");
    let (plain_encoding, plain_body) = get_raw(&gateway, "/t", "identity");

    assert_eq!(gzip_encoding.as_deref(), Some("gzip"));
    let mut decoded = String::new();
    flate2::read::GzDecoder::new(&gzip_body[..])
        .read_to_string(&mut decoded)
        .expect("valid gzip");
    assert_eq!(decoded, text);

    assert_eq!(
        br_encoding, None,
        "brotli is not offered (see src/compression.rs)"
    );

    assert_eq!(zstd_encoding.as_deref(), Some("zstd"));
    let decoded = zstd::decode_all(&zstd_body[..]).expect("valid zstd");
    assert_eq!(String::from_utf8_lossy(&decoded), text);
    assert!(
        gzip_body.len() < text.len() / 5,
        "gzip should shrink repeated text"
    );

    assert_eq!(plain_encoding, None);
    assert_eq!(String::from_utf8_lossy(&plain_body), text);
}

#[test]
fn small_or_binary_responses_are_not_compressed() {
    let app = Upstream::start("app");
    app.set_body("tiny");
    app.set_header("Content-Type", "text/plain");
    let gateway = compressing_gateway(&app);
    let (encoding, _) = get_raw(&gateway, "/small", "gzip");
    assert_eq!(encoding, None, "below min_size");

    app.set_body(&"x".repeat(4096));
    app.set_header("Content-Type", "application/octet-stream");
    let (encoding, _) = get_raw(&gateway, "/binary", "gzip");
    assert_eq!(encoding, None, "not a listed type");
}

fn hygiene_gateway(app: &Upstream) -> Gateway {
    Gateway::start(&format!(
        r#"
upstreams:
  app:
    targets: [{{ address: "{}" }}]
plugins:
  request_size: {{ max_body: 1KiB, max_headers: 30 }}
routes:
  - name: api
    match: {{ path_prefix: /api }}
    upstream: app
    plugins:
      cors:
        allow_origins: ["https://app.example.com"]
        allow_methods: [GET, PUT]
        expose_headers: [X-Request-Id]
        max_age: 10m
  - name: internal
    match: {{ path_prefix: /internal }}
    upstream: app
    plugins:
      ip_restriction: {{ deny: ["127.0.0.0/8"] }}
  - name: office
    match: {{ path_prefix: /office }}
    upstream: app
    plugins:
      ip_restriction: {{ allow: ["127.0.0.1/32"] }}
"#,
        app.addr()
    ))
}

#[test]
fn cors_preflight_is_answered_at_the_edge_and_simple_requests_get_the_headers() {
    let app = Upstream::start("app");
    let gateway = hygiene_gateway(&app);
    let origin = ("Origin", "https://app.example.com");

    let preflight = gateway.request(
        "OPTIONS",
        "/api/orders",
        &[origin, ("Access-Control-Request-Method", "PUT")],
    );
    let refused = gateway.request(
        "OPTIONS",
        "/api/orders",
        &[
            ("Origin", "https://evil.test"),
            ("Access-Control-Request-Method", "PUT"),
        ],
    );
    let simple = gateway.request("GET", "/api/orders", &[origin]);

    assert_eq!(preflight.status, 204, "{preflight:?}");
    assert_eq!(
        preflight.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(
        preflight.header("access-control-allow-methods"),
        Some("GET, PUT")
    );
    assert_eq!(preflight.header("access-control-max-age"), Some("600"));
    assert_eq!(
        app.requests(),
        1,
        "only the simple GET reaches the upstream"
    );
    assert_gateway_error(&refused, 403, "FORBIDDEN");
    assert_eq!(simple.status, 200);
    assert_eq!(
        simple.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(
        simple.header("access-control-expose-headers"),
        Some("X-Request-Id")
    );
}

#[test]
fn address_lists_deny_and_allow_by_cidr() {
    let app = Upstream::start("app");
    let gateway = hygiene_gateway(&app);

    assert_gateway_error(&gateway.get("/internal/x"), 403, "FORBIDDEN");
    assert_eq!(gateway.get("/office/x").status, 200);
    assert_eq!(app.requests(), 1);
}

#[test]
fn the_admin_listener_refuses_addresses_outside_its_allow_list() {
    let routes = format!("\nroutes:\n{PING_ROUTE}");
    // Readiness cannot be probed through a refusing admin listener: start it allowing
    // loopback, then reload with the restrictive list.
    let gateway = Gateway::start(&routes);
    let restricted = extend_section(BASE_CONFIG, "admin", "  allow: [\"10.0.0.0/8\"]");
    gateway.rewrite_config_raw(&format!("{restricted}{routes}"));
    gateway.reload();

    let refused = gateway.admin_get("/metrics");
    assert_eq!(refused.status, 403, "{refused:?}");
    assert_eq!(
        gateway.get("/ping").status,
        200,
        "the public listener is not affected"
    );
}

#[test]
fn smuggling_attempts_are_refused_with_400() {
    let app = Upstream::start("app");
    let gateway = hygiene_gateway(&app);
    let addr = gateway.addr();

    let both = raw_exchange(
        &addr,
        b"POST /api/x HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    );
    let two_lengths = raw_exchange(
        &addr,
        b"POST /api/x HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
    );
    let bad_coding = raw_exchange(
        &addr,
        b"POST /api/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\nabcd",
    );
    let no_host = raw_exchange(&addr, b"GET /api/x HTTP/1.1\r\nConnection: close\r\n\r\n");

    assert!(both.starts_with("HTTP/1.1 400"), "{both}");
    assert!(both.contains("\"BAD_REQUEST\""), "a JSON error: {both}");
    assert!(two_lengths.starts_with("HTTP/1.1 400"), "{two_lengths}");
    assert!(bad_coding.starts_with("HTTP/1.1 400"), "{bad_coding}");
    assert!(no_host.starts_with("HTTP/1.1 400"), "{no_host}");
    assert_eq!(app.requests(), 0, "nothing ambiguous reaches the upstream");
}

#[test]
fn too_many_header_lines_get_431() {
    let app = Upstream::start("app");
    let gateway = hygiene_gateway(&app);
    let names: Vec<String> = (0..40).map(|i| format!("X-Filler-{i}")).collect();
    let headers: Vec<(&str, &str)> = names.iter().map(|name| (name.as_str(), "v")).collect();

    let answer = gateway.request("GET", "/api/x", &headers);

    assert_gateway_error(&answer, 431, "REQUEST_HEADERS_TOO_LARGE");
}

#[test]
fn brotli_is_refused_in_the_configuration_with_the_reason() {
    let dir = TestDir::new();
    let config = dir.write(
        "c.yaml",
        "listeners: [{ address: 127.0.0.1:1 }]\ncompression: { algorithms: [gzip, br] }\nroutes: []\n",
    );
    let output = common::run_portcullis(&["check", "-c", &config.display().to_string()]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success());
    assert!(
        stdout.contains("compression.algorithms[1]: brotli is not offered"),
        "{stdout}"
    );
}
