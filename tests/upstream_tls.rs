//! TLS to upstreams (`upstreams.*.tls`): a target verified against a private CA, and a
//! target that demands a client certificate (`openssl s_server -Verify`), reached with
//! the configured certificate and refused without it.

mod common;

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, Gateway, Pki, TestDir, Validity};

/// `openssl s_server -www` demanding a client certificate from the `clients` CA.
struct TlsUpstream {
    child: Child,
    port: u16,
}

impl TlsUpstream {
    fn start(pki: &Pki) -> TlsUpstream {
        let port = free_port();
        let child = Command::new("openssl")
            .args([
                "s_server",
                "-quiet",
                "-www",
                "-Verify",
                "2",
                "-verify_return_error",
            ])
            .args(["-accept", &format!("127.0.0.1:{port}")])
            .args([
                "-cert",
                &pki.path("upstream.pem"),
                "-key",
                &pki.path("upstream.key"),
            ])
            .args(["-CAfile", &pki.path("clients.pem")])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run openssl s_server (apt-get install openssl)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "openssl s_server did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        TlsUpstream { child, port }
    }
}

impl Drop for TlsUpstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_target_that_demands_a_client_certificate_gets_the_configured_one() {
    let dir = TestDir::new();
    let pki = Pki::new(dir.path());
    pki.ca("servers");
    pki.ca("clients");
    pki.ca("stranger");
    pki.issue(
        "servers",
        "upstream",
        "/CN=upstream.test",
        "DNS:upstream.test",
        Validity::Current,
    );
    pki.issue(
        "clients",
        "gateway",
        "/O=Acme/CN=gateway",
        "DNS:gateway.test",
        Validity::Current,
    );
    pki.issue(
        "stranger",
        "impostor",
        "/CN=gateway",
        "DNS:gateway.test",
        Validity::Current,
    );
    let upstream = TlsUpstream::start(&pki);

    let pool = |name: &str, tls: &str| {
        format!(
            "  {name}:\n    targets: [{{ address: \"127.0.0.1:{}\" }}]\n    retries: {{ attempts: 1 }}\n    tls: {tls}\n",
            upstream.port
        )
    };
    let identity = format!(
        "client_cert: \"{}\", client_key: \"{}\"",
        pki.path("gateway.pem"),
        pki.path("gateway.key")
    );
    let servers = pki.path("servers.pem");
    let mut config = String::from("upstreams:\n");
    config += &pool(
        "secure",
        &format!("{{ sni: upstream.test, ca: \"{servers}\", {identity} }}"),
    );
    config += &pool(
        "anonymous",
        &format!("{{ sni: upstream.test, ca: \"{servers}\" }}"),
    );
    config += &pool(
        "impostor",
        &format!(
            "{{ sni: upstream.test, ca: \"{servers}\", client_cert: \"{}\", client_key: \"{}\" }}",
            pki.path("impostor.pem"),
            pki.path("impostor.key")
        ),
    );
    config += &pool(
        "untrusted",
        &format!(
            "{{ sni: upstream.test, ca: \"{}\", {identity} }}",
            pki.path("stranger.pem")
        ),
    );
    config += &pool(
        "misnamed",
        &format!("{{ sni: other.test, ca: \"{servers}\", {identity} }}"),
    );
    config += &pool("unverified", &format!("{{ verify: false, {identity} }}"));
    config += "routes:\n";
    for name in [
        "secure",
        "anonymous",
        "impostor",
        "untrusted",
        "misnamed",
        "unverified",
    ] {
        config +=
            &format!("  - name: {name}\n    match: {{ path: /{name} }}\n    upstream: {name}\n");
    }
    let gateway = Gateway::start(&config);

    let secure = gateway.get("/secure");
    assert_eq!(secure.status, 200, "{secure:?}");
    assert!(
        secure.body.contains("TLS") || secure.body.contains("Cipher"),
        "the s_server status page: {}",
        secure.body
    );
    let unverified = gateway.get("/unverified");
    assert_eq!(
        unverified.status, 200,
        "verify: false still presents the certificate"
    );

    for (path, why) in [
        ("/anonymous", "no client certificate"),
        (
            "/impostor",
            "a client certificate of a CA the target does not trust",
        ),
        (
            "/untrusted",
            "the target's certificate is not of the configured CA",
        ),
        (
            "/misnamed",
            "the target's certificate does not carry the SNI name",
        ),
    ] {
        let refused = gateway.get(path);
        assert_eq!(refused.status, 502, "{why}: {refused:?}");
    }
    assert_eq!(
        gateway.get("/secure").status,
        200,
        "still reachable after refusals"
    );
}
