//! Hostile connections (issue #13): silent and slowloris clients, idle keep-alive and
//! HTTP/2 connections, stalled TLS handshakes and request bodies, and the caps per
//! listener and per client address. Every test ends by checking that a clean request on
//! a new connection is served.

mod common;

use std::io::Write;
use std::net::{IpAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use openssl::ssl::{HandshakeError, SslConnector, SslMethod};

use common::{
    connect, connect_from, edge_config, exchange_on, free_port, http_agent, keep_alive_get,
    make_cert, send, time_until_closed, trickle, wait_until, Gateway, RecordingUpstream, TestDir,
    EVENTUALLY,
};

const ROUTES: &str = r#"
routes:
  - name: ok
    match: { path: /ok }
    respond: { status: 200, body: "ok" }
"#;

const REFUSED: &str = "portcullis_connections_refused_total";

/// A request for `/ok` that asks to close the connection afterwards.
const GET_OK: &[u8] = b"GET /ok HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n";

fn gateway(server: &str, listener: &str, more_listeners: &str) -> Gateway {
    Gateway::start_raw(&edge_config(server, listener, more_listeners, ROUTES))
}

fn assert_served(gateway: &Gateway) {
    let response = gateway.get("/ok");
    assert_eq!(
        response.status, 200,
        "a clean request after the attack: {response:?}"
    );
}

/// Asserts the gateway closed `stream` between `at_least` and `at_most` from now.
fn assert_closed_between(stream: &mut TcpStream, at_least: Duration, at_most: Duration) {
    let closed = time_until_closed(stream, at_most)
        .unwrap_or_else(|| panic!("the connection was still open after {at_most:?}"));
    assert!(
        closed >= at_least,
        "closed after {closed:?}, expected at least {at_least:?}"
    );
}

fn loopback(last: u8) -> IpAddr {
    [127, 0, 0, last].into()
}

#[test]
fn a_silent_connection_is_closed_at_the_head_deadline() {
    let gateway = gateway("  request_header_timeout: 1s\n", "", "");

    let mut silent = connect(&gateway.addr());
    assert_closed_between(
        &mut silent,
        Duration::from_millis(800),
        Duration::from_secs(4),
    );

    assert_served(&gateway);
}

#[test]
fn slowloris_bytes_do_not_extend_the_head_deadline() {
    let gateway = gateway("  request_header_timeout: 2s\n", "", "");
    let head =
        b"GET /ok HTTP/1.1\r\nHost: test\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";

    let mut slow = connect(&gateway.addr());
    let writer = trickle(&slow, head, Duration::from_millis(500));
    assert_closed_between(
        &mut slow,
        Duration::from_millis(1700),
        Duration::from_millis(3500),
    );
    drop(slow);
    let sent = writer.join().expect("the writer thread");
    assert!(
        (3..head.len()).contains(&sent),
        "{sent} bytes went out before the close"
    );

    assert_served(&gateway);
}

#[test]
fn an_idle_keep_alive_connection_is_closed_at_keepalive_timeout() {
    let gateway = gateway(
        "  request_header_timeout: 1s\n  keepalive_timeout: 3s\n",
        "",
        "",
    );
    let mut client = connect(&gateway.addr());
    let first = keep_alive_get(&mut client, "/ok");
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");

    // Idle for longer than the head deadline but within keep-alive: still served.
    std::thread::sleep(Duration::from_millis(1500));
    let second = keep_alive_get(&mut client, "/ok");
    assert!(second.starts_with("HTTP/1.1 200"), "{second}");

    assert_closed_between(
        &mut client,
        Duration::from_millis(2700),
        Duration::from_secs(6),
    );
    assert_served(&gateway);
}

#[test]
fn a_slow_second_request_gets_its_own_head_deadline() {
    let gateway = gateway(
        "  request_header_timeout: 2s\n  keepalive_timeout: 30s\n",
        "",
        "",
    );
    let mut client = connect(&gateway.addr());
    let first = keep_alive_get(&mut client, "/ok");
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");

    let writer = trickle(&client, GET_OK, Duration::from_millis(500));
    assert_closed_between(
        &mut client,
        Duration::from_millis(1700),
        Duration::from_millis(3500),
    );
    drop(client);
    assert!(writer.join().expect("the writer thread") < GET_OK.len());
    assert_served(&gateway);
}

#[test]
fn http2_connections_need_a_preface_in_time_and_close_when_idle() {
    let gateway = gateway(
        "  request_header_timeout: 1s\n  keepalive_timeout: 3s\n",
        "",
        "",
    );
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

    let mut partial = connect(&gateway.addr());
    partial.write_all(&preface[..16]).expect("write");
    assert_closed_between(
        &mut partial,
        Duration::from_millis(800),
        Duration::from_secs(3),
    );

    // The preface and an empty SETTINGS frame, then nothing: an idle h2c connection.
    let mut idle = connect(&gateway.addr());
    let mut hello = preface.to_vec();
    hello.extend([0, 0, 0, 4, 0, 0, 0, 0, 0]);
    idle.write_all(&hello).expect("write");
    assert_closed_between(
        &mut idle,
        Duration::from_millis(2700),
        Duration::from_secs(6),
    );

    assert_served(&gateway);
}

#[test]
fn a_stalled_tls_handshake_is_closed_at_the_head_deadline() {
    let certs = TestDir::new();
    make_cert(certs.path(), "edge", "edge.test");
    let tls_port = free_port();
    let gateway = gateway(
        "  request_header_timeout: 1s\n",
        "",
        &format!(
            "  - address: \"127.0.0.1:{tls_port}\"\n    tls:\n      certificates:\n        - {{ cert: \"{0}/edge.pem\", key: \"{0}/edge.key\" }}\n",
            certs.path().display()
        ),
    );

    let mut stalled = connect(&format!("127.0.0.1:{tls_port}"));
    assert_closed_between(
        &mut stalled,
        Duration::from_millis(800),
        Duration::from_secs(4),
    );

    // A real ClientHello, then nothing: the server's flight is sent and never answered.
    // The rest of the handshake has the same deadline (Pingora alone would wait 60 s).
    let hello_only = connect(&format!("127.0.0.1:{tls_port}"));
    let mut server_side = hello_only.try_clone().expect("clone the socket");
    let connector = SslConnector::builder(SslMethod::tls())
        .expect("TLS client")
        .build();
    let started = std::time::Instant::now();
    let halfway = match connector.connect("edge.test", NeverReads(hello_only)) {
        Err(HandshakeError::WouldBlock(halfway)) => halfway,
        other => panic!("the client stops after its ClientHello: {other:?}"),
    };
    assert!(
        time_until_closed(&mut server_side, Duration::from_secs(4)).is_some(),
        "the connection was still open 4 s after its ClientHello"
    );
    let closed = started.elapsed();
    assert!(
        closed >= Duration::from_millis(800),
        "closed after {closed:?}, before the deadline"
    );
    drop(halfway);
    let stderr = gateway.stderr();
    assert!(
        !stderr.contains("ERROR"),
        "a client's stalled handshake is not the gateway's error:\n{stderr}"
    );

    let output = Command::new("curl")
        .args(["-sk", "--max-time", "10", "--resolve"])
        .arg(format!("edge.test:{tls_port}:127.0.0.1"))
        .arg(format!("https://edge.test:{tls_port}/ok"))
        .output()
        .expect("run curl (apt-get install curl)");
    assert_eq!(String::from_utf8_lossy(&output.stdout), "ok", "{output:?}");
    assert_served(&gateway);
}

/// A TLS client's transport that sends what the client writes and never gives it an
/// answer, so its handshake stops after the ClientHello.
#[derive(Debug)]
struct NeverReads(TcpStream);

impl std::io::Read for NeverReads {
    fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
        Err(std::io::ErrorKind::WouldBlock.into())
    }
}

impl Write for NeverReads {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.write(bytes)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// Opens `count` connections and has each served once, so all are surely admitted, then
/// keeps them open (idle keep-alive).
fn hold_connections(count: usize, open: impl Fn() -> TcpStream) -> Vec<TcpStream> {
    (0..count)
        .map(|_| {
            let mut connection = open();
            let answer = keep_alive_get(&mut connection, "/ok");
            assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
            connection
        })
        .collect()
}

#[test]
fn the_per_address_cap_refuses_past_the_cap_and_counts_it() {
    let gateway = gateway(
        "  request_header_timeout: 10s\n",
        "    max_connections_per_ip: 2\n",
        "",
    );
    let listener = gateway.addr();
    let hostile = loopback(2);
    let held = hold_connections(2, || connect_from(hostile, &listener));

    let mut refused = connect_from(hostile, &listener);
    assert_closed_between(&mut refused, Duration::ZERO, Duration::from_secs(1));
    let labels = [
        ("listener", listener.as_str()),
        ("reason", "max_connections_per_ip"),
    ];
    assert_eq!(gateway.metric(REFUSED, &labels), Some(1.0));
    // Another address still gets in while 127.0.0.2 is at its cap.
    assert_served(&gateway);

    drop(held);
    let served_again = wait_until(EVENTUALLY, || {
        exchange_on(&mut connect_from(hostile, &listener), GET_OK).starts_with("HTTP/1.1 200")
    });
    assert!(
        served_again,
        "127.0.0.2 is served again once its connections closed"
    );
}

#[test]
fn the_listener_cap_refuses_past_the_cap_and_counts_it() {
    let capped_port = free_port();
    let capped = format!("127.0.0.1:{capped_port}");
    let gateway = gateway(
        "  request_header_timeout: 10s\n",
        "",
        &format!("  - address: \"{capped}\"\n    max_connections: 2\n"),
    );
    let held = hold_connections(2, || connect(&capped));

    let mut refused = connect(&capped);
    assert_closed_between(&mut refused, Duration::ZERO, Duration::from_secs(1));
    let labels = [("listener", capped.as_str()), ("reason", "max_connections")];
    assert_eq!(gateway.metric(REFUSED, &labels), Some(1.0));
    assert_served(&gateway);

    drop(held);
    let served_again = wait_until(EVENTUALLY, || {
        exchange_on(&mut connect(&capped), GET_OK).starts_with("HTTP/1.1 200")
    });
    assert!(
        served_again,
        "the capped listener serves again once connections closed"
    );
}

#[test]
fn caps_beyond_the_open_file_limit_are_warned_about_at_start() {
    let gateway = gateway("  max_connections: 100000000\n", "", "");
    assert!(
        wait_until(EVENTUALLY, || gateway.stderr().contains("open-file limit")),
        "no warning: {}",
        gateway.stderr()
    );
    assert_served(&gateway);
}

#[test]
fn a_reload_cannot_change_connection_settings_bound_at_start() {
    let gateway = gateway("", "", "");
    gateway.rewrite_config_raw(&edge_config(
        "  trusted_proxies: [127.0.0.1/32]\n",
        "    proxy_protocol: true\n",
        "",
        ROUTES,
    ));

    let refused = send(&http_agent(), "POST", &gateway.admin_url("/reload"), &[]);

    assert_eq!(refused.status, 400, "{refused:?}");
    assert!(refused.body.contains("listeners"), "{refused:?}");
    assert!(refused.body.contains("server"), "{refused:?}");
    assert_served(&gateway);
}

/// Resident memory of process `pid`, in KiB.
fn resident_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// An idle keep-alive connection holds no request-sized buffer (issue #18): plain listeners
/// read without Pingora's 64 KiB L4 read buffer, and the next request's 4 KiB header buffer
/// is allocated when that request arrives (vendor/README.md), so each idle connection adds
/// well under 64 KiB of resident memory (about 90 KiB with the L4 buffer, 27 KiB with the
/// header buffer, 23 KiB in a debug build with neither).
#[test]
fn idle_keep_alive_connections_hold_no_request_sized_buffer() {
    const CONNECTIONS: u64 = 400;
    let gateway = gateway("", "", "");
    let mut warm: Vec<TcpStream> = (0..16).map(|_| connect(&gateway.addr())).collect();
    for stream in &mut warm {
        assert!(keep_alive_get(stream, "/ok").starts_with("HTTP/1.1 200"));
    }
    let before = resident_kib(gateway.pid());
    let mut idle = Vec::new();
    for _ in 0..CONNECTIONS {
        let mut stream = connect(&gateway.addr());
        let answer = keep_alive_get(&mut stream, "/ok");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        idle.push(stream);
    }
    let per_connection = resident_kib(gateway.pid()).saturating_sub(before) / CONNECTIONS;
    assert!(
        per_connection < 48,
        "{per_connection} KiB resident per idle keep-alive connection"
    );
    drop(idle);
    assert_served(&gateway);
}

#[test]
fn a_stalled_request_body_gets_408_at_body_read_timeout_on_http1_and_http2() {
    let upstream = RecordingUpstream::start();
    let gateway = Gateway::start_raw(&edge_config(
        "  body_read_timeout: 1s\n",
        "",
        "",
        &format!(
            "{ROUTES}  - name: upload\n    match: {{ path: /upload }}\n    upstream: app\n\
             upstreams:\n  app:\n    targets: [{{ address: \"{}\" }}]\n",
            upstream.addr()
        ),
    ));

    // HTTP/1.1: five of the 100 body bytes, then nothing.
    let mut h1 = connect(&gateway.addr());
    h1.write_all(b"POST /upload HTTP/1.1\r\nHost: test\r\nContent-Length: 100\r\n\r\nhello")
        .expect("write");
    let started = std::time::Instant::now();
    h1.set_read_timeout(Some(Duration::from_secs(4)))
        .expect("read timeout");
    let mut answer = Vec::new();
    let _ = std::io::Read::read_to_end(&mut h1, &mut answer);
    let took = started.elapsed();
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        (Duration::from_millis(800)..Duration::from_secs(4)).contains(&took),
        "closed after {took:?}"
    );
    assert!(
        answer.starts_with("HTTP/1.1 408") && answer.contains("REQUEST_TIMEOUT"),
        "{answer}"
    );

    // HTTP/2 (h2c): a stream whose body starts and never ends.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (ended, took) = runtime.block_on(async {
        let socket = tokio::net::TcpStream::connect(gateway.addr())
            .await
            .expect("connect");
        let (mut client, connection) = h2::client::handshake(socket).await.expect("h2c");
        tokio::spawn(connection);
        let request = http::Request::post(format!("http://{}/upload", gateway.addr()))
            .header("content-length", "100")
            .body(())
            .expect("request");
        let started = std::time::Instant::now();
        let (response, mut body) = client.send_request(request, false).expect("stream");
        body.send_data(bytes::Bytes::from_static(b"hello"), false)
            .expect("data");
        let ended = tokio::time::timeout(Duration::from_secs(4), response).await;
        // The stream stays open on the client's side until here.
        drop(body);
        (ended, started.elapsed())
    });
    let response = ended
        .expect("the stalled HTTP/2 stream was still open after 4 s")
        .expect("an answer on the stream");
    assert!(took >= Duration::from_millis(800), "ended after {took:?}");
    assert_eq!(response.status(), 408, "{response:?}");

    assert!(
        upstream.requests().is_empty(),
        "no truncated body became a request: {}",
        upstream.all_bytes()
    );
    assert_served(&gateway);
}
