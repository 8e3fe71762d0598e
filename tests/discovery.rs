//! Hostname targets resolved through a real DNS server (dnsmasq): every A record is a
//! target, the set follows the records under keep-alive load without a failed request,
//! a dead DNS server leaves the last good set serving, a name that does not resolve yet
//! answers 503 until it does, and `check` never resolves.

mod common;

use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::{
    assert_gateway_error, eventually, free_port, render_config, run_portcullis, Dnsmasq, Gateway,
    TestDir, Traffic, BASE_CONFIG,
};

/// An HTTP server on `IP:PORT` answering 200 with its IP, counting requests.
struct Host {
    ip: &'static str,
    requests: Arc<AtomicUsize>,
    server: Arc<tiny_http::Server>,
}

impl Host {
    fn start(ip: &'static str, listener: TcpListener) -> Host {
        let server = Arc::new(
            tiny_http::Server::from_listener(listener, None)
                .unwrap_or_else(|e| panic!("serve on {ip}: {e}")),
        );
        let requests = Arc::new(AtomicUsize::new(0));
        let (accepting, counted) = (Arc::clone(&server), Arc::clone(&requests));
        thread::spawn(move || {
            for request in accepting.incoming_requests() {
                let counted = Arc::clone(&counted);
                thread::spawn(move || {
                    counted.fetch_add(1, SeqCst);
                    let _ = request.respond(tiny_http::Response::from_string(ip));
                });
            }
        });
        Host {
            ip,
            requests,
            server,
        }
    }

    fn requests(&self) -> usize {
        self.requests.load(SeqCst)
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.server.unblock();
    }
}

/// Three servers on 127.0.0.2-4, one port (Linux routes all of 127/8 to loopback).
fn hosts() -> (u16, Vec<Host>) {
    const IPS: [&str; 3] = ["127.0.0.2", "127.0.0.3", "127.0.0.4"];
    for _ in 0..20 {
        let port = free_port();
        let listeners: Vec<_> = IPS
            .iter()
            .filter_map(|ip| TcpListener::bind((*ip, port)).ok())
            .collect();
        if listeners.len() == IPS.len() {
            let hosts = IPS
                .iter()
                .zip(listeners)
                .map(|(ip, listener)| Host::start(ip, listener))
                .collect();
            return (port, hosts);
        }
    }
    panic!("no port free on 127.0.0.2-4");
}

fn config(dns: &Dnsmasq, address: &str) -> String {
    format!(
        r#"
dns:
  servers: ["{}"]
upstreams:
  app:
    targets: [{{ address: "{address}" }}]
    discovery: {{ min_interval: 500ms, max_interval: 2s }}
routes:
  - name: all
    match: {{ path_prefix: / }}
    upstream: app
"#,
        dns.addr()
    )
}

/// One TTL (1 s) plus the longest interval (2 s) plus a margin for a loaded machine.
const WITHIN_A_TTL: Duration = Duration::from_secs(4);

#[test]
fn the_target_set_follows_the_records_under_load_without_a_failed_request() {
    let (port, hosts) = hosts();
    let dns = Dnsmasq::start(&[("127.0.0.2", "api.test")]);
    let gateway = Gateway::start(&config(&dns, &format!("api.test:{port}")));
    eventually!(gateway.get("/").status == 200, "api.test never served");

    let traffic = Traffic::start(&gateway.url("/"), 4);
    // Added: 127.0.0.3 takes traffic within one TTL.
    let added = Instant::now();
    dns.set_records(&[("127.0.0.2", "api.test"), ("127.0.0.3", "api.test")]);
    eventually!(
        within(WITHIN_A_TTL),
        hosts[1].requests() > 0,
        "the added record got no traffic"
    );
    eprintln!("an added record took traffic after {:?}", added.elapsed());
    // Replaced: 127.0.0.4 in, 127.0.0.2 out (it drains: no new requests).
    dns.set_records(&[("127.0.0.3", "api.test"), ("127.0.0.4", "api.test")]);
    eventually!(
        within(WITHIN_A_TTL),
        hosts[2].requests() > 0,
        "the added record got no traffic"
    );
    thread::sleep(Duration::from_millis(300));
    let removed = hosts[0].requests();
    thread::sleep(Duration::from_secs(1));
    assert_eq!(
        hosts[0].requests(),
        removed,
        "the removed target {} still gets new requests",
        hosts[0].ip
    );
    let report = traffic.stop();
    assert!(report.sent > 100, "too little traffic: {report:?}");
    assert!(report.failures.is_empty(), "failed requests: {report:?}");
    assert!(
        !gateway.metrics().contains(&format!("127.0.0.2:{port}")),
        "the removed target's series should be gone"
    );

    let status = gateway.status_json();
    let name = &status["upstreams"]["app"]["discovery"]["names"]["api.test"];
    assert_eq!(
        name["addresses"],
        serde_json::json!(["127.0.0.3", "127.0.0.4"]),
        "{status}"
    );
    assert!(name["resolved_at"].is_string(), "{status}");
    let targets: Vec<_> = status["upstreams"]["app"]["targets"]
        .as_array()
        .expect("targets")
        .iter()
        .map(|target| target["address"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        targets,
        [format!("127.0.0.3:{port}"), format!("127.0.0.4:{port}")]
    );
}

#[test]
fn a_dead_dns_server_leaves_the_last_good_set_serving() {
    let (port, hosts) = hosts();
    let mut dns = Dnsmasq::start(&[("127.0.0.2", "api.test"), ("127.0.0.3", "api.test")]);
    let gateway = Gateway::start(&config(&dns, &format!("api.test:{port}")));
    eventually!(
        {
            gateway.get("/");
            hosts[0].requests() > 0 && hosts[1].requests() > 0
        },
        "both records should serve"
    );
    dns.kill();
    let errors = || gateway.metric("portcullis_discovery_errors_total", &[("upstream", "app")]);
    eventually!(
        // Each failed pass waits out the query timeout (2 s, UDP then TCP).
        within(Duration::from_secs(15)),
        errors().unwrap_or(0.0) >= 2.0,
        "resolution errors not counted: {:?}",
        errors()
    );
    let before = (hosts[0].requests(), hosts[1].requests());
    for _ in 0..20 {
        assert_eq!(gateway.get("/").status, 200);
    }
    assert!(
        hosts[0].requests() > before.0 && hosts[1].requests() > before.1,
        "the last good set should keep serving"
    );
    let status = gateway.status_json();
    let name = &status["upstreams"]["app"]["discovery"]["names"]["api.test"];
    assert!(name["error"].is_string(), "{status}");
    assert_eq!(
        name["addresses"].as_array().map(Vec::len),
        Some(2),
        "{status}"
    );
    let warnings = gateway.stderr().matches("cannot resolve api.test").count();
    assert_eq!(
        warnings,
        1,
        "one warning per failing spell: {}",
        gateway.stderr()
    );
}

#[test]
fn a_name_that_does_not_resolve_yet_answers_503_until_it_does() {
    let (port, hosts) = hosts();
    let dns = Dnsmasq::start(&[("127.0.0.9", "other.test")]);
    let gateway = Gateway::start(&config(&dns, &format!("later.test:{port}")));
    let response = gateway.get("/");
    assert_gateway_error(&response, 503, "UPSTREAM_UNAVAILABLE");

    dns.set_records(&[("127.0.0.4", "later.test")]);
    eventually!(
        within(WITHIN_A_TTL),
        gateway.get("/").status == 200,
        "never served once resolvable"
    );
    assert!(hosts[2].requests() > 0);
}

#[test]
fn literals_and_names_mix_in_one_pool() {
    let (port, hosts) = hosts();
    let dns = Dnsmasq::start(&[("127.0.0.3", "api.test")]);
    let sections = config(&dns, &format!("api.test:{port}")).replace(
        &format!(r#"[{{ address: "api.test:{port}" }}]"#),
        &format!(r#"[{{ address: "127.0.0.2:{port}" }}, {{ address: "api.test:{port}" }}]"#),
    );
    let gateway = Gateway::start(&sections);
    eventually!(
        {
            gateway.get("/");
            hosts[0].requests() > 0 && hosts[1].requests() > 0
        },
        "both the literal and the discovered target should serve"
    );
}

#[test]
fn check_accepts_hostnames_without_resolving_them_and_names_bad_values() {
    let dir = TestDir::new();
    let write = |sections: &str| {
        let config = render_config(&format!("{BASE_CONFIG}{sections}"), dir.path(), 1, 2);
        dir.write("portcullis.yaml", &config).display().to_string()
    };
    // Nothing answers on this DNS server and the name does not exist: check passes.
    let good = write(
        r#"
dns:
  servers: ["127.0.0.1:9"]
upstreams:
  app:
    targets: [{ address: "never.invalid:8080" }, { address: "[::1]:8080" }]
routes:
  - name: all
    match: { path_prefix: / }
    upstream: app
"#,
    );
    let output = run_portcullis(&["check", "-c", &good]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let bad = write(
        r#"
dns:
  servers: ["not-an-ip"]
upstreams:
  app:
    targets: [{ address: "api.internal" }, { address: "300.1.1.1:80" }, { address: "ok.internal:80" }]
    discovery: { min_interval: 30s, max_interval: 10s, max_addresses: 0 }
    healthy_panic_threshold: 150
routes:
  - name: all
    match: { path_prefix: / }
    upstream: app
"#,
    );
    let output = run_portcullis(&["check", "-c", &bad]);
    assert!(!output.status.success());
    let text = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    for path in [
        "dns.servers[0]",
        "upstreams.app.targets[0].address",
        "upstreams.app.targets[1].address",
        "upstreams.app.discovery.min_interval",
        "upstreams.app.discovery.max_addresses",
        "upstreams.app.healthy_panic_threshold",
    ] {
        assert!(
            text.contains(&format!(": {path}: ")),
            "{path} not reported:\n{text}"
        );
    }
}

#[test]
fn a_reload_keeps_the_discovered_set_even_with_dns_down() {
    let (port, hosts) = hosts();
    let mut dns = Dnsmasq::start(&[("127.0.0.2", "api.test"), ("127.0.0.3", "api.test")]);
    let sections = config(&dns, &format!("api.test:{port}"));
    let gateway = Gateway::start(&sections);
    eventually!(
        {
            gateway.get("/");
            hosts[0].requests() > 0 && hosts[1].requests() > 0
        },
        "both records should serve"
    );
    dns.kill();
    // An unrelated change: the pool keeps its names, so it keeps what they resolved to.
    gateway.rewrite_config(&sections.replace("name: all", "name: everything"));
    gateway.reload();
    eventually!(
        gateway.status_json()["version"] == 2,
        "the reload was not applied"
    );
    let before = (hosts[0].requests(), hosts[1].requests());
    for _ in 0..20 {
        assert_eq!(gateway.get("/").status, 200);
    }
    assert!(
        hosts[0].requests() > before.0 && hosts[1].requests() > before.1,
        "the reloaded pool should serve the last good set"
    );
}

#[test]
fn a_large_answer_is_capped_at_max_addresses() {
    // 70 A records: more than a 512-byte UDP answer holds, so the resolver goes on over
    // TCP; the pool takes the first 5 and says so once.
    let names: Vec<String> = (1..=70).map(|i| format!("127.0.1.{i}")).collect();
    let records: Vec<(&str, &str)> = names.iter().map(|ip| (ip.as_str(), "big.test")).collect();
    let dns = Dnsmasq::start(&records);
    let sections = config(&dns, "big.test:9").replace(
        "discovery: { min_interval: 500ms, max_interval: 2s }",
        "discovery: { min_interval: 500ms, max_interval: 2s, max_addresses: 5 }",
    );
    let gateway = Gateway::start(&sections);
    let targets = eventually!(
        let targets = gateway.status_json()["upstreams"]["app"]["targets"].clone();
        targets.as_array().map(Vec::len) == Some(5),
        "not capped at 5: {targets}"
    );
    assert_eq!(targets[0]["address"], "127.0.1.1:9", "{targets}");
    thread::sleep(Duration::from_millis(1500));
    let warnings = gateway.stderr().matches("resolves to 70 addresses").count();
    assert_eq!(warnings, 1, "one warning: {}", gateway.stderr());
}
