//! The real client address (issue #13): X-Forwarded-For believed only from trusted
//! proxies, PROXY protocol v1 and v2 (raw headers and a real HAProxy), and the hostile
//! cases: forged headers, PROXY headers from untrusted peers, malformed headers. What the
//! upstream received, the access log's `client_ip` and a per-client rate limit show who
//! the gateway took for the client.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::process::Command;

use common::{
    connect_from, edge_config, exchange_on, free_port, make_cert, proxy_v1, proxy_v2, Gateway,
    HaProxy, TestDir, Upstream,
};

const REFUSED: &str = "portcullis_connections_refused_total";

/// One request per client address per minute, so a 429 tells who the client was.
fn sections(app: &Upstream) -> String {
    format!(
        r#"
upstreams:
  app:
    targets: [{{ address: "{}" }}]
plugins:
  rate_limit:
    - {{ name: per-ip, key: client_ip, algorithm: sliding_window, limit: 1, window: 1m }}
routes:
  - name: app
    match: {{ path_prefix: / }}
    upstream: app
"#,
        app.addr()
    )
}

fn loopback(last: u8) -> IpAddr {
    [127, 0, 0, last].into()
}

/// `GET /` with extra raw header lines, from `source`, on a new connection; the status.
fn get_from(source: IpAddr, addr: &str, header_lines: &str) -> u16 {
    let request =
        format!("GET / HTTP/1.1\r\nHost: test\r\n{header_lines}Connection: close\r\n\r\n");
    status_of(&exchange_on(
        &mut connect_from(source, addr),
        request.as_bytes(),
    ))
}

fn status_of(answer: &str) -> u16 {
    answer
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|status| status.parse().ok())
        .unwrap_or(0)
}

fn forwarded_for(app: &Upstream) -> String {
    app.last_request()
        .header_values("X-Forwarded-For")
        .join(", ")
}

/// The `client_ip` of the last `count` access log lines.
fn logged_clients(gateway: &Gateway, count: usize) -> Vec<String> {
    let lines = gateway.wait_for_access_log(count);
    lines[lines.len() - count..]
        .iter()
        .map(|line| line["client_ip"].as_str().unwrap_or("").to_string())
        .collect()
}

#[test]
fn an_untrusted_peer_cannot_choose_its_client_address() {
    let app = Upstream::start("app");
    let gateway = Gateway::start_raw(&edge_config(
        "  trusted_proxies: [10.0.0.0/8]\n",
        "",
        "",
        &sections(&app),
    ));
    let addr = gateway.addr();

    assert_eq!(
        get_from(loopback(1), &addr, "X-Forwarded-For: 198.51.100.1\r\n"),
        200
    );
    assert_eq!(forwarded_for(&app), "198.51.100.1, 127.0.0.1");
    // Another forged address is still the same client: the rate limit says so.
    assert_eq!(
        get_from(loopback(1), &addr, "X-Forwarded-For: 198.51.100.2\r\n"),
        429
    );
    assert_eq!(logged_clients(&gateway, 2), ["127.0.0.1", "127.0.0.1"]);

    assert_eq!(
        get_from(loopback(3), &addr, ""),
        200,
        "a clean client is served"
    );
}

#[test]
fn behind_a_trusted_proxy_the_right_most_untrusted_address_is_the_client() {
    let app = Upstream::start("app");
    let gateway = Gateway::start_raw(&edge_config(
        "  trusted_proxies: [127.0.0.1/32, 10.0.0.0/8]\n",
        "",
        "",
        &sections(&app),
    ));
    let addr = gateway.addr();

    let lines = "X-Forwarded-For: 198.51.100.1\r\nX-Forwarded-For: 203.0.113.7, 10.0.0.2\r\n";
    assert_eq!(get_from(loopback(1), &addr, lines), 200);
    assert_eq!(
        forwarded_for(&app),
        "198.51.100.1, 203.0.113.7, 10.0.0.2, 127.0.0.1",
        "every line kept in order, the peer appended"
    );
    // A different client behind the same proxy has its own limit; the same one has not.
    let other = "X-Forwarded-For: 203.0.113.7, 203.0.113.8\r\n";
    assert_eq!(get_from(loopback(1), &addr, other), 200);
    assert_eq!(
        get_from(loopback(1), &addr, "X-Forwarded-For: 203.0.113.7\r\n"),
        429
    );
    // 127.0.0.2 is not a trusted proxy: its header is not believed.
    assert_eq!(
        get_from(loopback(2), &addr, "X-Forwarded-For: 203.0.113.9\r\n"),
        200
    );
    assert_eq!(
        logged_clients(&gateway, 4),
        ["203.0.113.7", "203.0.113.8", "203.0.113.7", "127.0.0.2"]
    );

    assert_eq!(
        get_from(loopback(3), &addr, ""),
        200,
        "a clean client is served"
    );
}

/// A gateway whose second listener speaks PROXY protocol and trusts only 127.0.0.1;
/// returns it with that listener's address.
fn proxy_protocol_gateway(app: &Upstream) -> (Gateway, String) {
    let proxied = format!("127.0.0.1:{}", free_port());
    let gateway = Gateway::start_raw(&edge_config(
        "  trusted_proxies: [127.0.0.1/32]\n  request_header_timeout: 2s\n",
        "",
        &format!("  - address: \"{proxied}\"\n    proxy_protocol: true\n"),
        &sections(app),
    ));
    (gateway, proxied)
}

fn request_after(header: &[u8]) -> Vec<u8> {
    let mut bytes = header.to_vec();
    bytes.extend_from_slice(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    bytes
}

#[test]
fn proxy_protocol_v1_and_v2_from_a_trusted_peer_name_the_client() {
    let app = Upstream::start("app");
    let (gateway, proxied) = proxy_protocol_gateway(&app);
    let destination: SocketAddr = proxied.parse().expect("address");

    let v1 = proxy_v1("203.0.113.7:4711".parse().expect("addr"), destination);
    let answer = exchange_on(
        &mut connect_from(loopback(1), &proxied),
        &request_after(&v1),
    );
    assert_eq!(status_of(&answer), 200, "{answer}");
    assert_eq!(forwarded_for(&app), "203.0.113.7");

    let v2 = proxy_v2("198.51.100.4:4711".parse().expect("addr"), destination);
    let answer = exchange_on(
        &mut connect_from(loopback(1), &proxied),
        &request_after(&v2),
    );
    assert_eq!(status_of(&answer), 200, "{answer}");
    assert_eq!(forwarded_for(&app), "198.51.100.4");

    assert_eq!(logged_clients(&gateway, 2), ["203.0.113.7", "198.51.100.4"]);
    assert_eq!(get_from(loopback(1), &gateway.addr(), ""), 200);
}

#[test]
fn proxy_headers_from_untrusted_peers_or_malformed_are_refused() {
    let app = Upstream::start("app");
    let (gateway, proxied) = proxy_protocol_gateway(&app);
    let destination: SocketAddr = proxied.parse().expect("address");
    let forged = proxy_v1("203.0.113.7:4711".parse().expect("addr"), destination);
    let refused = |reason| gateway.metric(REFUSED, &[("listener", &proxied), ("reason", reason)]);

    let answer = exchange_on(
        &mut connect_from(loopback(2), &proxied),
        &request_after(&forged),
    );
    assert_eq!(answer, "", "127.0.0.2 is not a trusted proxy");
    assert_eq!(refused("proxy_protocol_untrusted"), Some(1.0));

    let mut truncated_v2 = proxy_v2("203.0.113.7:4711".parse().expect("addr"), destination);
    truncated_v2.truncate(20);
    let malformed: [&[u8]; 5] = [
        b"PROXY TCP4 banana 127.0.0.1 1 2\r\n",
        b"PROXY TCP4 203.0.113.7 127.0.0.1 4711\r\n",
        b"\r\n\r\n\0\r\nQUIT\n\x99\x11\x00\x0c",
        &[0xff; 300],
        b"",
    ];
    for header in malformed {
        let answer = exchange_on(
            &mut connect_from(loopback(1), &proxied),
            &request_after(header),
        );
        assert_eq!(answer, "", "refused: {header:?}");
    }
    // A header that stops short is refused at the head deadline.
    let answer = exchange_on(&mut connect_from(loopback(1), &proxied), &truncated_v2);
    assert_eq!(answer, "");
    assert_eq!(refused("proxy_protocol_invalid"), Some(6.0));
    assert_eq!(app.requests(), 0, "nothing refused reached the upstream");

    let clean = proxy_v2("198.51.100.4:4711".parse().expect("addr"), destination);
    let answer = exchange_on(
        &mut connect_from(loopback(1), &proxied),
        &request_after(&clean),
    );
    assert_eq!(status_of(&answer), 200, "{answer}");
    assert_eq!(get_from(loopback(1), &gateway.addr(), ""), 200);
}

#[test]
fn haproxy_in_front_hands_over_the_client_address() {
    let app = Upstream::start("app");
    let (gateway, proxied) = proxy_protocol_gateway(&app);
    let haproxy = HaProxy::send_proxy_v2(&proxied);

    // HAProxy connects from 127.0.0.1 (trusted); the client comes from 127.0.0.2.
    assert_eq!(
        get_from(loopback(2), &haproxy.addr(), ""),
        200,
        "{}",
        haproxy.log()
    );
    assert_eq!(forwarded_for(&app), "127.0.0.2");
    assert_eq!(
        get_from(loopback(2), &haproxy.addr(), ""),
        429,
        "the rate limit counts 127.0.0.2, not HAProxy"
    );
    assert_eq!(get_from(loopback(3), &haproxy.addr(), ""), 200);
    assert_eq!(
        logged_clients(&gateway, 3),
        ["127.0.0.2", "127.0.0.2", "127.0.0.3"]
    );
    assert_eq!(get_from(loopback(1), &gateway.addr(), ""), 200);
}

#[test]
fn haproxy_in_front_of_a_tls_listener_hands_over_the_client_address() {
    let app = Upstream::start("app");
    let certs = TestDir::new();
    make_cert(certs.path(), "edge", "edge.test");
    let tls = format!("127.0.0.1:{}", free_port());
    let gateway = Gateway::start_raw(&edge_config(
        "  trusted_proxies: [127.0.0.1/32]\n",
        "",
        &format!(
            "  - address: \"{tls}\"\n    proxy_protocol: true\n    tls:\n      certificates:\n        - {{ cert: \"{0}/edge.pem\", key: \"{0}/edge.key\" }}\n",
            certs.path().display()
        ),
        &sections(&app),
    ));
    let haproxy = HaProxy::send_proxy_v2(&tls);
    let port = haproxy
        .addr()
        .rsplit_once(':')
        .map(|(_, p)| p.to_string())
        .unwrap_or_default();

    let output = Command::new("curl")
        .args([
            "-sk",
            "--max-time",
            "10",
            "--interface",
            "127.0.0.2",
            "-w",
            "%{http_code}",
        ])
        .arg("--resolve")
        .arg(format!("edge.test:{port}:127.0.0.1"))
        .arg(format!("https://edge.test:{port}/"))
        .output()
        .expect("run curl (apt-get install curl)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.ends_with("200"), "{output:?} {}", haproxy.log());
    assert_eq!(forwarded_for(&app), "127.0.0.2");
    assert_eq!(
        app.last_request().header("X-Forwarded-Proto"),
        Some("https")
    );
    assert_eq!(logged_clients(&gateway, 1), ["127.0.0.2"]);
    assert_eq!(get_from(loopback(1), &gateway.addr(), ""), 200);
}
