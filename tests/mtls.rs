//! Mutual TLS on listeners (`listeners[].tls.client_auth`): certificates made by the
//! openssl CLI, clients that are curl and a Rust openssl client, and the certificate
//! consumers of the `mtls` plugin.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use common::{
    extend_section, free_port, make_cert, run_portcullis, Gateway, Pki, TestDir, Upstream,
    Validity, BASE_CONFIG,
};
use openssl::ssl::{SslConnector, SslFiletype, SslMethod};

const HOST: &str = "mtls.test";

/// The certificates of a test: the listener's own (`edge`, for mtls.test), the client CA
/// `clients` and what it issued (`billing`, `reports`, `expired`, `revoked`), and a CA
/// the gateway does not trust (`stranger`) with its `intruder`.
fn pki(dir: &TestDir) -> Pki {
    make_cert(dir.path(), "edge", HOST);
    let pki = Pki::new(dir.path());
    pki.ca("clients");
    pki.ca("stranger");
    let spiffe = "URI:spiffe://acme.test/billing,DNS:billing.acme.test";
    pki.issue(
        "clients",
        "billing",
        "/O=Acme/CN=billing",
        spiffe,
        Validity::Current,
    );
    pki.issue(
        "clients",
        "reports",
        "/O=Acme/CN=reports",
        "DNS:reports.acme.test",
        Validity::Current,
    );
    pki.issue(
        "clients",
        "expired",
        "/O=Acme/CN=expired",
        "DNS:x.acme.test",
        Validity::Expired,
    );
    pki.issue(
        "clients",
        "revoked",
        "/O=Acme/CN=revoked",
        "DNS:r.acme.test",
        Validity::Current,
    );
    pki.revoke("clients", "revoked");
    pki.issue(
        "stranger",
        "intruder",
        "/O=Acme/CN=billing",
        "DNS:i.test",
        Validity::Current,
    );
    pki
}

/// A TLS listener item of `listeners:` with `client_auth` (YAML flow mapping).
fn tls_listener(pki: &Pki, port: u16, client_auth: &str) -> String {
    format!(
        "  - address: \"127.0.0.1:{port}\"\n    tls:\n      certificates: [{{ cert: \"{}\", key: \"{}\" }}]\n      client_auth: {client_auth}\n",
        pki.path("edge.pem"),
        pki.path("edge.key")
    )
}

/// What a TLS client got: the status and body, or why the exchange failed.
type Answer = Result<(u16, String), String>;

/// `curl https://mtls.test:PORT/path` with the client certificate `NAME.{pem,key}`.
fn curl(pki: &Pki, port: u16, path: &str, cert: Option<&str>, headers: &[&str]) -> Answer {
    curl_with(pki, port, path, cert, headers, &[])
}

/// [`curl`] with more arguments (`--http2`).
fn curl_with(
    pki: &Pki,
    port: u16,
    path: &str,
    cert: Option<&str>,
    headers: &[&str],
    extra: &[&str],
) -> Answer {
    let mut command = Command::new("curl");
    command.args(extra);
    command
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(pki.path("ca.pem"))
        .arg("--resolve")
        .arg(format!("{HOST}:{port}:127.0.0.1"))
        .args(["-w", "\n%{http_code}"]);
    if let Some(name) = cert {
        command
            .arg("--cert")
            .arg(pki.path(&format!("{name}.pem")))
            .arg("--key")
            .arg(pki.path(&format!("{name}.key")));
    }
    for header in headers {
        command.args(["-H", header]);
    }
    let output = command
        .arg(format!("https://{HOST}:{port}{path}"))
        .output()
        .expect("run curl (apt-get install curl)");
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, status) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    Ok((status.trim().parse().unwrap_or(0), body.to_string()))
}

/// The same exchange by a Rust openssl client (HTTP/1.1, one request).
fn rust_client(pki: &Pki, port: u16, path: &str, cert: Option<&str>) -> Answer {
    let mut connector = SslConnector::builder(SslMethod::tls()).map_err(|e| e.to_string())?;
    connector
        .set_ca_file(pki.path("ca.pem"))
        .map_err(|e| e.to_string())?;
    if let Some(name) = cert {
        connector
            .set_certificate_chain_file(pki.path(&format!("{name}.pem")))
            .map_err(|e| e.to_string())?;
        connector
            .set_private_key_file(pki.path(&format!("{name}.key")), SslFiletype::PEM)
            .map_err(|e| e.to_string())?;
    }
    let tcp = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let mut tls = connector
        .build()
        .connect(HOST, tcp)
        .map_err(|e| format!("handshake: {e}"))?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let mut response = String::new();
    tls.read_to_string(&mut response)
        .map_err(|e| format!("read: {e}"))?;
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no HTTP answer: {response:?}"))?;
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Ok((status, body.to_string()))
}

fn assert_refused(answer: Answer, what: &str) {
    assert!(
        answer.is_err(),
        "{what}: the handshake must fail, got {answer:?}"
    );
}

#[test]
fn required_mode_refuses_every_client_without_a_valid_certificate() {
    let dir = TestDir::new();
    let pki = pki(&dir);
    let app = Upstream::start("app");
    let port = free_port();
    let listener = tls_listener(
        &pki,
        port,
        &format!(
            "{{ ca: \"{}\", mode: required, crl: \"{}\", headers: {{ subject: X-Ssl-Subject }} }}",
            pki.path("clients.pem"),
            pki.path("clients.crl")
        ),
    );
    let config = extend_section(BASE_CONFIG, "listeners", &listener)
        + &format!(
            "upstreams:\n  app:\n    targets: [{{ address: \"{}\" }}]\nroutes:\n  - name: all\n    match: {{ path_prefix: / }}\n    upstream: app\n",
            app.addr()
        );
    let gateway = Gateway::start_raw(&config);

    assert_refused(
        curl(&pki, port, "/", None, &[]),
        "curl without a certificate",
    );
    assert_refused(
        rust_client(&pki, port, "/", None),
        "rust client without a certificate",
    );
    assert_refused(
        curl(&pki, port, "/", Some("intruder"), &[]),
        "a certificate of another CA",
    );
    assert_refused(
        curl(&pki, port, "/", Some("expired"), &[]),
        "an expired certificate",
    );
    assert_refused(
        curl(&pki, port, "/", Some("revoked"), &[]),
        "a revoked certificate",
    );
    assert_refused(
        rust_client(&pki, port, "/", Some("revoked")),
        "rust client, revoked",
    );
    assert_eq!(app.requests(), 0, "no refused client reaches the upstream");

    let spoofed = [
        "X-Client-Cert-Subject: CN=admin",
        "X-Ssl-Subject: CN=admin",
        "X-Client-Cert-Sha256: 00",
    ];
    let (status, _) = curl(&pki, port, "/orders", Some("billing"), &spoofed).expect("billing");
    assert_eq!(status, 200);
    let seen = app.last_request();
    assert_eq!(seen.header_values("X-Ssl-Subject"), ["CN=billing,O=Acme"]);
    assert_eq!(
        seen.header("X-Client-Cert-Subject"),
        None,
        "renamed, and the copy removed"
    );
    assert_eq!(
        seen.header_values("X-Client-Cert-Sans"),
        ["URI:spiffe://acme.test/billing, DNS:billing.acme.test"]
    );
    assert_eq!(
        seen.header_values("X-Client-Cert-Sha256"),
        [pki.fingerprint("billing")]
    );

    let (status, _) = curl_with(&pki, port, "/h2", Some("billing"), &spoofed, &["--http2"])
        .expect("billing over HTTP/2");
    assert_eq!(status, 200);
    let seen = app.last_request();
    assert_eq!(seen.path, "/h2");
    assert_eq!(
        seen.header_values("X-Ssl-Subject"),
        ["CN=billing,O=Acme"],
        "HTTP/2 too"
    );
    assert_eq!(seen.header("X-Client-Cert-Subject"), None);

    let (status, _) = rust_client(&pki, port, "/rust", Some("reports")).expect("reports");
    assert_eq!(status, 200);
    assert_eq!(
        app.last_request().header("X-Ssl-Subject"),
        Some("CN=reports,O=Acme")
    );

    // A plain listener never forwards a client's copies either.
    let plain = gateway.request("GET", "/plain", &[("X-Client-Cert-Subject", "CN=admin")]);
    assert_eq!(plain.status, 200);
    assert_eq!(app.last_request().header("X-Client-Cert-Subject"), None);
}

#[test]
fn certificate_consumers_get_their_scopes_tier_and_own_rate_limit() {
    let dir = TestDir::new();
    let pki = pki(&dir);
    let app = Upstream::start("app");
    let port = free_port();
    let listener = tls_listener(
        &pki,
        port,
        &format!("{{ ca: \"{}\", mode: optional }}", pki.path("clients.pem")),
    );
    let config = extend_section(BASE_CONFIG, "listeners", &listener)
        + &format!(
            r#"consumers:
  - {{ id: billing, tier: gold, scopes: [invoices], client_certs: ["subject:CN=billing,O=Acme"] }}
  - {{ id: reports, client_certs: ["sha256:{}"] }}
upstreams:
  app:
    targets: [{{ address: "{}" }}]
routes:
  - name: open
    match: {{ path_prefix: /open }}
    upstream: app
  - name: api
    match: {{ path_prefix: /api }}
    upstream: app
    plugins:
      mtls: {{}}
      rate_limit: [{{ name: per-consumer, key: consumer, algorithm: token_bucket, rate: 2, per: 1h }}]
  - name: invoices
    match: {{ path_prefix: /invoices }}
    upstream: app
    plugins: {{ mtls: {{ required_scopes: [invoices] }} }}
"#,
            pki.fingerprint("reports"),
            app.addr()
        );
    let gateway = Gateway::start_raw(&config);

    // Optional: no certificate is fine where no route demands one.
    assert_eq!(curl(&pki, port, "/open", None, &[]).expect("open").0, 200);
    let (status, body) = curl(&pki, port, "/api/x", None, &[]).expect("no cert");
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("\"UNAUTHORIZED\""), "{body}");
    // A certificate a client presents must still be valid.
    assert_refused(
        curl(&pki, port, "/open", Some("intruder"), &[]),
        "another CA",
    );

    for _ in 0..2 {
        assert_eq!(
            curl(&pki, port, "/api/x", Some("billing"), &[])
                .expect("billing")
                .0,
            200
        );
    }
    assert_eq!(app.last_request().header("X-Consumer-Id"), Some("billing"));
    let (status, body) = curl(&pki, port, "/api/x", Some("billing"), &[]).expect("limited");
    assert_eq!(status, 429, "billing's own limit: {body}");
    let (status, _) = curl(&pki, port, "/api/x", Some("reports"), &[]).expect("reports");
    assert_eq!(status, 200, "reports has a bucket of its own");
    assert_eq!(app.last_request().header("X-Consumer-Id"), Some("reports"));

    assert_eq!(
        curl(&pki, port, "/invoices", Some("billing"), &[])
            .expect("scoped")
            .0,
        200
    );
    assert_eq!(
        curl(&pki, port, "/invoices", Some("reports"), &[])
            .expect("no scope")
            .0,
        403
    );
    let failures = gateway
        .metric(
            "portcullis_auth_failures_total",
            &[("route", "api"), ("plugin", "mtls"), ("reason", "missing")],
        )
        .unwrap_or(0.0);
    assert_eq!(failures, 1.0);
}

#[test]
fn ca_bundles_are_reread_on_reload_and_a_bad_one_keeps_the_old_config() {
    let dir = TestDir::new();
    let pki = pki(&dir);
    let bundle = pki.path("bundle.pem");
    std::fs::copy(pki.path("clients.pem"), &bundle).expect("bundle");
    let port = free_port();
    let listener = tls_listener(
        &pki,
        port,
        &format!("{{ ca: \"{bundle}\", mode: required }}"),
    );
    let config = extend_section(BASE_CONFIG, "listeners", &listener)
        + "routes:\n  - name: hello\n    match: { path: /hello }\n    respond: { status: 200, body: hi }\n";
    let gateway = Gateway::start_raw(&config);
    assert_eq!(
        curl(&pki, port, "/hello", Some("billing"), &[])
            .expect("before")
            .0,
        200
    );

    std::fs::copy(pki.path("stranger.pem"), &bundle).expect("swap the CA");
    gateway.reload();
    assert_refused(
        curl(&pki, port, "/hello", Some("billing"), &[]),
        "the old CA is gone",
    );
    assert_eq!(
        curl(&pki, port, "/hello", Some("intruder"), &[])
            .expect("new CA")
            .0,
        200
    );

    std::fs::write(&bundle, "not a certificate\n").expect("break the CA");
    let refused = gateway.admin_post("/reload", &[], "");
    assert_ne!(refused.status, 200, "{refused:?}");
    assert!(
        refused.body.contains("listeners[1].tls.client_auth.ca"),
        "{}",
        refused.body
    );
    assert_eq!(
        curl(&pki, port, "/hello", Some("intruder"), &[])
            .expect("kept")
            .0,
        200
    );
}

#[test]
fn check_reports_bad_certificate_files_with_their_paths() {
    let dir = TestDir::new();
    let pki = pki(&dir);
    let not_pem = pki.path("not.pem");
    std::fs::write(&not_pem, "hello\n").expect("write");
    let port = free_port();
    let listener = tls_listener(
        &pki,
        port,
        &format!("{{ ca: \"{not_pem}\", mode: required, crl: \"{}\", headers: {{ sans: \"bad header\" }} }}", pki.path("stranger.pem")),
    );
    let config = extend_section(BASE_CONFIG, "listeners", &listener)
        + &format!(
            r#"consumers:
  - {{ id: x, client_certs: ["sha256:1234", "CN=x"] }}
upstreams:
  app:
    targets: [{{ address: "127.0.0.1:9" }}]
    tls: {{ sni: app.test, ca: "{not_pem}", client_cert: "{}", client_key: "{}" }}
  other:
    targets: [{{ address: "127.0.0.1:9" }}]
    tls: {{ client_cert: "{}" }}
routes:
  - name: all
    match: {{ path_prefix: / }}
    upstream: app
    plugins: {{ mtls: {{}} }}
"#,
            pki.path("billing.pem"),
            pki.path("reports.key"),
            pki.path("billing.pem"),
        );
    let file = dir.path().join("bad.yaml");
    let config = common::render_config(&config, dir.path(), free_port(), free_port());
    std::fs::write(&file, config).expect("write config");
    let file = file.display().to_string();
    let output = run_portcullis(&["check", "-c", &file]);
    let text = String::from_utf8_lossy(&output.stderr).into_owned()
        + &String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{text}");
    for path in [
        "listeners[1].tls.client_auth.ca: ",
        "listeners[1].tls.client_auth.headers.sans: ",
        "consumers[0].client_certs[0]: ",
        "consumers[0].client_certs[1]: ",
        "upstreams.app.tls.ca: ",
        "upstreams.app.tls.client_key: ",
        "upstreams.other.tls.sni: ",
        "upstreams.other.tls.client_key: ",
    ] {
        assert!(
            text.contains(&format!("{file}: {path}")),
            "no {path} in:\n{text}"
        );
    }
}
