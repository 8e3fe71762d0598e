//! gRPC through the gateway (issue 14, item 2): a real gRPC server and client (grpcio,
//! `tests/tools/grpc_echo.py`) over h2c and over TLS on both sides; unary, server-streaming
//! and bidirectional calls with their trailers; the gateway's refusals as gRPC status;
//! `grpc-timeout`; gRPC health checks; an HTTP/1-only upstream configured as h2c.

mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{eventually, free_port, make_cert, metric_value, Gateway, TestDir, BASE_CONFIG};
use serde_json::Value;

const TOOL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tools/grpc_echo.py");
/// sha256("test"): the key `test` of consumer `acme`.
const KEY_DIGEST: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

/// The grpcio test server (`grpc_echo.py serve`), killed on drop.
struct GrpcServer {
    child: Child,
    port: u16,
}

impl GrpcServer {
    /// Serves test.Echo and grpc.health.v1 over h2c, or over TLS with `DIR/NAME.{pem,key}`.
    fn start(tls: Option<(&Path, &str)>) -> GrpcServer {
        let port = free_port();
        let mut command = Command::new("python3");
        command.arg(TOOL).arg("serve").arg(port.to_string());
        if let Some((dir, name)) = tls {
            command
                .arg("--cert")
                .arg(dir.join(format!("{name}.pem")))
                .arg("--key")
                .arg(dir.join(format!("{name}.key")));
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 runs (scripts/setup-debian.sh installs grpcio)");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the server's first line");
        assert_eq!(
            line.trim(),
            "ready",
            "grpc_echo.py serve did not start (pip install grpcio grpcio-health-checking)"
        );
        GrpcServer { child, port }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One call with the grpcio client (`grpc_echo.py call`); `args` after the method.
fn call(target: &str, method: &str, args: &[&str]) -> Value {
    let output = Command::new("python3")
        .arg(TOOL)
        .arg("call")
        .arg(target)
        .arg(method)
        .args(args)
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "grpc_echo.py call failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("one JSON object")
}

fn messages(result: &Value) -> Vec<&str> {
    result["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m.as_str().expect("text"))
        .collect()
}

/// Upstream `grpc` (one target, `protocol` and `more` lines) and a route for test.Echo.
fn grpc_sections(target: &str, pool: &str, route: &str) -> String {
    format!(
        "upstreams:\n  grpc:\n    targets: [{{ address: \"{target}\" }}]\n{pool}\
         routes:\n  - name: echo\n    match: {{ path_prefix: /test.Echo }}\n    upstream: grpc\n{route}"
    )
}

/// Unary, server-streaming (in order) and ping-pong bidirectional calls, with trailers.
fn assert_calls_pass(target: &str, tls: &[&str]) {
    let unary = call(target, "unary", &[tls, &["--message", "hello"]].concat());
    assert_eq!(unary["code"], "OK", "{unary}");
    assert_eq!(messages(&unary), ["hello"]);
    assert_eq!(
        unary["trailers"]["x-trailer"], "kept",
        "trailers lost: {unary}"
    );

    let streamed = call(target, "count", &[tls, &["--message", "20"]].concat());
    assert_eq!(streamed["code"], "OK", "{streamed}");
    let expected: Vec<String> = (0..20).map(|i| i.to_string()).collect();
    assert_eq!(messages(&streamed), expected, "stream out of order");
    assert_eq!(streamed["trailers"]["x-trailer"], "counted");

    let chat = call(
        target,
        "chat",
        &[tls, &["--message", "a", "--message", "b", "--message", "c"]].concat(),
    );
    assert_eq!(chat["code"], "OK", "{chat}");
    assert_eq!(messages(&chat), ["echo:a", "echo:b", "echo:c"]);
    assert_eq!(chat["trailers"]["x-trailer"], "chatted");
}

#[test]
fn unary_streaming_and_bidi_calls_pass_over_h2c() {
    let server = GrpcServer::start(None);
    let gateway = Gateway::start(&grpc_sections(&server.addr(), "    protocol: h2c\n", ""));

    assert_calls_pass(&gateway.addr(), &[]);
    let log = gateway.wait_for_access_log(3);
    assert!(
        log.iter().all(|line| line["status"] == 200),
        "access log: {log:?}"
    );
}

/// A gateway with a TLS listener (certificate for `localhost` from `certs`) and `sections`.
fn tls_gateway(certs: &Path, sections: &str) -> (Gateway, String) {
    let port = free_port();
    let listener = format!(
        "  - address: \"127.0.0.1:{port}\"\n    tls:\n      certificates:\n        - {{ cert: \"{0}/edge.pem\", key: \"{0}/edge.key\" }}\n",
        certs.display()
    );
    let config = common::extend_section(BASE_CONFIG, "listeners", &listener);
    (
        Gateway::start_raw(&format!("{config}{sections}")),
        format!("127.0.0.1:{port}"),
    )
}

#[test]
fn calls_pass_over_tls_on_both_sides_with_h2_and_auto() {
    let certs = TestDir::new();
    make_cert(certs.path(), "edge", "localhost");
    make_cert(certs.path(), "backend", "localhost");
    let server = GrpcServer::start(Some((certs.path(), "backend")));
    let ca = certs.join("ca.pem").display().to_string();
    let client_tls = ["--ca", &ca, "--authority", "localhost"];

    for protocol in ["h2", "auto"] {
        let pool =
            format!("    protocol: {protocol}\n    tls: {{ sni: localhost, verify: false }}\n");
        let (_gateway, tls_addr) =
            tls_gateway(certs.path(), &grpc_sections(&server.addr(), &pool, ""));
        assert_calls_pass(&tls_addr, &client_tls);
    }
}

#[test]
fn gateway_refusals_come_back_as_grpc_status() {
    let server = GrpcServer::start(None);
    let down = format!("127.0.0.1:{}", free_port());
    let gateway = Gateway::start(&format!(
        "consumers:\n  - {{ id: acme, api_keys: [\"sha256:{KEY_DIGEST}\"] }}\n\
         upstreams:\n  grpc:\n    protocol: h2c\n    targets: [{{ address: \"{}\" }}]\n\
         \x20 gone:\n    protocol: h2c\n    targets: [{{ address: \"{down}\" }}]\n    retries: {{ attempts: 0 }}\n\
         routes:\n\
         \x20 - name: keyed\n    match: {{ path_prefix: /test.Echo, headers: {{ x-route: keyed }} }}\n    upstream: grpc\n    plugins: {{ key_auth: {{}} }}\n\
         \x20 - name: limited\n    match: {{ path_prefix: /test.Echo, headers: {{ x-route: limited }} }}\n    upstream: grpc\n\
         \x20   plugins: {{ rate_limit: [{{ name: one, key: route, algorithm: sliding_window, limit: 1, window: 1m }}] }}\n\
         \x20 - name: gone\n    match: {{ path_prefix: /test.Echo, headers: {{ x-route: gone }} }}\n    upstream: gone\n",
        server.addr()
    ));
    let target = gateway.addr();
    let route = |name: &str| format!("x-route={name}");

    let unauthenticated = call(&target, "unary", &["--metadata", &route("keyed")]);
    assert_eq!(
        unauthenticated["code"], "UNAUTHENTICATED",
        "{unauthenticated}"
    );
    assert!(!unauthenticated["details"].as_str().unwrap_or("").is_empty());
    let keyed = [
        "--metadata",
        &route("keyed"),
        "--metadata",
        "x-api-key=test",
        "--message",
        "k",
    ];
    assert_eq!(call(&target, "unary", &keyed)["code"], "OK");

    let first = call(&target, "unary", &["--metadata", &route("limited")]);
    assert_eq!(first["code"], "OK", "{first}");
    let limited = call(&target, "unary", &["--metadata", &route("limited")]);
    assert_eq!(limited["code"], "RESOURCE_EXHAUSTED", "{limited}");

    let unrouted = call(&target, "unary", &["--metadata", "x-route=none"]);
    assert_eq!(unrouted["code"], "UNIMPLEMENTED", "{unrouted}");

    let unavailable = call(
        &target,
        "count",
        &["--metadata", &route("gone"), "--message", "2"],
    );
    assert_eq!(unavailable["code"], "UNAVAILABLE", "{unavailable}");
    assert!(
        unavailable["details"]
            .as_str()
            .unwrap_or("")
            .contains("gone"),
        "the message names the pool: {unavailable}"
    );
}

/// A cleartext HTTP/2 server that accepts every stream and never answers (a hung
/// upstream that ignores `grpc-timeout`), on its own runtime.
fn silent_h2c_server(runtime: &tokio::runtime::Runtime) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address").to_string();
    listener.set_nonblocking(true).expect("nonblocking");
    runtime.spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut connection) = h2::server::handshake(socket).await else {
                    return;
                };
                let mut held = Vec::new();
                while let Some(Ok(stream)) = connection.accept().await {
                    held.push(stream);
                }
            });
        }
    });
    addr
}

/// A gRPC call with a raw HTTP/2 client (no deadline of its own): the response head and
/// how long it took.
fn raw_grpc_call(
    runtime: &tokio::runtime::Runtime,
    gateway: &str,
    headers: &[(&str, &str)],
) -> (http::response::Parts, Duration) {
    runtime.block_on(async {
        let socket = tokio::net::TcpStream::connect(gateway)
            .await
            .expect("connect");
        let (mut client, connection) = h2::client::handshake(socket).await.expect("h2c");
        tokio::spawn(connection);
        let mut request = http::Request::post(format!("http://{gateway}/test.Echo/Unary"))
            .header("content-type", "application/grpc")
            .header("te", "trailers");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let started = Instant::now();
        let (response, mut body) = client
            .send_request(request.body(()).expect("request"), false)
            .expect("send");
        body.send_data(bytes::Bytes::from_static(b"\0\0\0\0\x01x"), true)
            .expect("body");
        let response = tokio::time::timeout(Duration::from_secs(10), response)
            .await
            .expect("an answer within 10 s")
            .expect("a response");
        let (parts, _) = response.into_parts();
        (parts, started.elapsed())
    })
}

#[test]
fn grpc_timeout_bounds_the_wait_for_the_upstream() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let hung = silent_h2c_server(&runtime);
    let gateway = Gateway::start(&grpc_sections(&hung, "    protocol: h2c\n", ""));

    let (head, elapsed) = raw_grpc_call(&runtime, &gateway.addr(), &[("grpc-timeout", "300m")]);
    assert_eq!(head.status, 200, "trailers-only gRPC answer");
    assert_eq!(
        head.headers["grpc-status"], "4",
        "DEADLINE_EXCEEDED: {head:?}"
    );
    assert_eq!(head.headers["content-type"], "application/grpc");
    assert!(head.headers.contains_key("x-request-id"));
    assert!(
        elapsed >= Duration::from_millis(250) && elapsed < Duration::from_secs(3),
        "answered after {elapsed:?}, not at the 300 ms deadline"
    );

    let (head, _) = raw_grpc_call(&runtime, &gateway.addr(), &[("grpc-timeout", "soon")]);
    assert_eq!(
        head.headers["grpc-status"], "3",
        "INVALID_ARGUMENT: {head:?}"
    );
    assert!(head.headers["grpc-message"]
        .to_str()
        .unwrap_or("")
        .contains("grpc-timeout"));
}

/// Python's own HTTP/1.1 server (`python3 -m http.server`), killed on drop.
struct Http1Server(Child, u16);

impl Drop for Http1Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn an_http1_upstream_configured_as_h2c_is_a_clear_502_naming_the_pool() {
    let port = free_port();
    let dir = TestDir::new();
    let child = Command::new("python3")
        .args([
            "-m",
            "http.server",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 runs");
    let app = Http1Server(child, port);
    let addr = format!("127.0.0.1:{}", app.1);
    eventually!(
        std::net::TcpStream::connect(&addr).is_ok(),
        "http.server never listened"
    );
    let gateway = Gateway::start(&grpc_sections(
        &addr,
        "    protocol: h2c\n    retries: { attempts: 0 }\n",
        "",
    ));

    let started = Instant::now();
    let response = gateway.request("GET", "/test.Echo/Unary", &[]);
    assert_eq!(response.status, 502, "{response:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    let grpc = call(&gateway.addr(), "unary", &[]);
    assert_eq!(grpc["code"], "UNAVAILABLE", "{grpc}");
    eventually!(
        gateway.stderr().contains("upstream grpc target")
            && gateway.stderr().contains("HTTP/2 failed"),
        "no log line names the pool and the protocol:\n{}",
        gateway.diagnostics()
    );
}

#[test]
fn grpc_health_checks_use_the_standard_protocol() {
    let server = GrpcServer::start(None);
    let check = |service: &str| {
        format!(
            "    protocol: h2c\n    health_check: {{ type: grpc, service: \"{service}\", interval: 100ms, timeout: 1s, healthy_threshold: 1, unhealthy_threshold: 1 }}\n"
        )
    };
    let gateway = Gateway::start(&format!(
        "upstreams:\n  serving:\n    targets: [{{ address: \"{0}\" }}]\n{1}\
         \x20 unknown:\n    targets: [{{ address: \"{0}\" }}]\n{2}\
         routes:\n  - name: echo\n    match: {{ path_prefix: /test.Echo }}\n    upstream: serving\n",
        server.addr(),
        check("test.Echo"),
        check("no.Such"),
    ));
    let healthy = |pool: &str| {
        metric_value(
            &gateway.metrics(),
            "portcullis_upstream_target_healthy",
            &[("upstream", pool), ("target", &server.addr())],
        )
    };
    eventually!(
        healthy("unknown") == Some(0.0),
        "a NOT_FOUND service must fail its check: {:?}\n{}",
        healthy("unknown"),
        gateway.diagnostics()
    );
    assert_eq!(healthy("serving"), Some(1.0), "{}", gateway.diagnostics());
    assert_eq!(
        call(&gateway.addr(), "unary", &["--message", "up"])["code"],
        "OK"
    );
}

#[test]
fn protocol_problems_are_reported_at_their_field() {
    let dir = TestDir::new();
    let check = |yaml: &str| {
        let file = dir.write("check.yaml", yaml);
        let output = common::run_portcullis(&["check", "-c", file.to_str().expect("utf-8")]);
        assert!(!output.status.success(), "check passed:\n{yaml}");
        let mut said = String::from_utf8_lossy(&output.stdout).into_owned();
        said.push_str(&String::from_utf8_lossy(&output.stderr));
        said
    };
    let stderr = check(
        "listeners: [{address: '127.0.0.1:1'}]\n\
         upstreams:\n  a: {protocol: h2, targets: [{address: '127.0.0.1:2'}]}\n\
         \x20 b: {protocol: h2c, tls: {}, targets: [{address: '127.0.0.1:2'}]}\n\
         \x20 c: {protocol: http1, targets: [{address: '127.0.0.1:2'}], health_check: {type: grpc}}\n\
         routes: [{name: r, upstream: a, websocket: {idle_timeout: 0s}}]\n",
    );
    for expected in [
        "upstreams.a.protocol",
        "upstreams.b.protocol",
        "upstreams.c.health_check.type",
        "routes[0].websocket.idle_timeout",
    ] {
        assert!(
            stderr.contains(expected),
            "no problem at {expected}:\n{stderr}"
        );
    }
    let stderr = check(
        "listeners: [{address: '127.0.0.1:1'}]\n\
         upstreams:\n  d: {protocol: h3, targets: [{address: '127.0.0.1:2'}]}\n",
    );
    assert!(stderr.contains("upstreams.d.protocol"), "{stderr}");
}
