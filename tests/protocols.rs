//! What the client speaks and gets back: h2c with prior knowledge, HEAD on a `respond`
//! route, and the fallback pool when every target of a route's upstream is down.

mod common;

use std::process::Command;

use common::{eventually, raw_exchange, Gateway, Upstream, PING_ROUTE};

fn ping_gateway() -> Gateway {
    Gateway::start(&format!("\nroutes:\n{PING_ROUTE}"))
}

#[test]
fn h2c_with_prior_knowledge_is_served_over_http2() {
    let gateway = ping_gateway();

    let output = Command::new("curl")
        .args([
            "--http2-prior-knowledge",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_version} %{http_code}",
            &gateway.url("/ping"),
        ])
        .output()
        .unwrap_or_else(|e| panic!("this test needs the curl binary on PATH: {e}"));

    let printed = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        printed,
        "2 200",
        "curl --http2-prior-knowledge (exit {}, stderr {:?})",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn head_on_a_respond_route_gets_status_and_length_without_a_body() {
    let gateway = ping_gateway();

    let answer = raw_exchange(
        &gateway.addr(),
        b"HEAD /ping HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );

    let (head, body) = answer
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no complete header block: {answer:?}"));
    assert!(head.starts_with("HTTP/1.1 200"), "{answer:?}");
    let content_length = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().to_string())
        })
        .unwrap_or_else(|| panic!("no Content-Length: {answer:?}"));
    assert_eq!(content_length, "4", "the length of `pong`: {answer:?}");
    assert_eq!(body, "", "a HEAD answer must have no body: {answer:?}");
}

#[test]
fn route_uses_its_fallback_upstream_when_every_target_is_unhealthy() {
    let primary = Upstream::start("primary");
    let backup = Upstream::start("backup");
    let gateway = Gateway::start(&format!(
        r#"
upstreams:
  main:
    targets:
      - address: "{}"
    health_check: {{ type: http, path: /healthz, interval: 200ms, timeout: 500ms, healthy_threshold: 1, unhealthy_threshold: 1 }}
  spare:
    targets:
      - address: "{}"
routes:
  - name: all
    match: {{ path_prefix: / }}
    upstream: main
    fallback_upstream: spare
"#,
        primary.addr(),
        backup.addr()
    ));
    assert_eq!(gateway.get("/").body, "primary");

    primary.stop();
    eventually!(
        gateway.metric(
            "portcullis_upstream_target_healthy",
            &[("upstream", "main"), ("target", &primary.addr())],
        ) == Some(0.0),
        "the stopped primary should be marked unhealthy"
    );

    for _ in 0..5 {
        let response = gateway.get("/");
        assert_eq!(response.status, 200, "{response:?}");
        assert_eq!(response.body, "backup", "{response:?}");
    }
    assert_eq!(backup.requests(), 5);
}
