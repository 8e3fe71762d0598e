//! Zero downtime: configuration reloads, a graceful binary upgrade and a graceful stop,
//! each while clients keep sending requests — not one of which may fail.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::{
    eventually, extend_section, http_agent, run_portcullis, Gateway, HttpResponse, Traffic,
    Upstream, BASE_CONFIG,
};

/// [`BASE_CONFIG`] with the process settings of these tests, then `sections`: an admin
/// token for `POST /reload`, a one-second drain delay after SIGTERM, and a grace period
/// far longer than any test waits.
fn config(sections: &str) -> String {
    let server =
        "  error_log: \"{dir}/error.log\"\n  grace_period_seconds: 60\n  drain_delay_seconds: 1";
    let process = extend_section(BASE_CONFIG, "server", server);
    format!(
        "{}{sections}",
        extend_section(&process, "admin", "  token: secret")
    )
}

/// A pool of `a` and `b` with the given weights, the `api` route to it, and `extra`
/// routes after it.
fn pool_config(a: &Upstream, b: &Upstream, weights: (u32, u32), extra: &str) -> String {
    config(&format!(
        r#"
upstreams:
  app:
    targets:
      - {{ address: "{}", weight: {} }}
      - {{ address: "{}", weight: {} }}
routes:
  - name: api
    match: {{ path_prefix: /api }}
    upstream: app
{extra}"#,
        a.addr(),
        weights.0,
        b.addr(),
        weights.1
    ))
}

const OLD_ROUTE: &str = r#"  - name: old
    match: { path: /old }
    respond: { status: 200, body: old }
"#;

const NEW_ROUTE: &str = r#"  - name: new
    match: { path: /new }
    respond: { status: 200, body: new }
"#;

fn reload(gateway: &Gateway) -> HttpResponse {
    gateway.admin_post("/reload", &[("Authorization", "Bearer secret")], "")
}

fn assert_reloaded(gateway: &Gateway) {
    let answer = reload(gateway);
    assert_eq!(answer.status, 200, "reload: {answer:?}");
}

/// Share of the requests `a` and `b` received since `before` that went to `b`.
fn share_of_b(a: &Upstream, b: &Upstream, before: (usize, usize)) -> f64 {
    let (a_count, b_count) = (a.requests() - before.0, b.requests() - before.1);
    b_count as f64 / (a_count + b_count).max(1) as f64
}

#[test]
fn reloads_add_remove_and_reweight_while_traffic_flows_without_a_failed_request() {
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    let gateway = Gateway::start_raw(&pool_config(&a, &b, (1, 1), OLD_ROUTE));
    let traffic = Traffic::start(&gateway.url("/api/items"), 4);
    eventually!(traffic.sent() > 50, "the client loops sent too little");

    // Add a route: served by the very next request.
    gateway.rewrite_config_raw(&pool_config(
        &a,
        &b,
        (1, 1),
        &format!("{OLD_ROUTE}{NEW_ROUTE}"),
    ));
    assert_reloaded(&gateway);
    assert_eq!(gateway.get("/new").body, "new");

    // Remove a route.
    gateway.rewrite_config_raw(&pool_config(&a, &b, (1, 1), NEW_ROUTE));
    assert_reloaded(&gateway);
    assert_eq!(gateway.get("/old").status, 404);

    // An invalid file is refused with the field's path; traffic does not notice.
    gateway.rewrite_config_raw(&pool_config(&a, &b, (1, 0), NEW_ROUTE));
    let refused = reload(&gateway);
    assert_eq!(refused.status, 400, "{refused:?}");
    assert!(
        refused.body.contains("upstreams.app.targets[1].weight"),
        "{refused:?}"
    );

    // Re-weight: b now gets three requests out of four.
    gateway.rewrite_config_raw(&pool_config(&a, &b, (1, 3), NEW_ROUTE));
    assert_reloaded(&gateway);
    let before = (a.requests(), b.requests());
    for _ in 0..200 {
        assert_eq!(gateway.get("/api/x").status, 200);
    }
    let share = share_of_b(&a, &b, before);
    assert!(
        (0.70..=0.80).contains(&share),
        "b should get 75% ±5% after the re-weight, got {share:.3}"
    );

    let report = traffic.stop();
    assert!(report.sent > 100, "too little traffic: {report:?}");
    assert!(
        report.failures.is_empty(),
        "{} of {} requests failed: {:?}",
        report.failures.len(),
        report.sent,
        &report.failures[..report.failures.len().min(10)]
    );
    assert_eq!(gateway.status_json()["version"], 4);
}

#[test]
fn watch_reloads_when_the_file_changes() {
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    let template = pool_config(&a, &b, (1, 1), OLD_ROUTE);
    let gateway = Gateway::start_raw_with_args(&template, &["--watch"]);

    gateway.rewrite_config_raw(&pool_config(&a, &b, (1, 1), NEW_ROUTE));

    eventually!(
        within(Duration::from_secs(10)),
        gateway.get("/new").status == 200,
        "the changed file was not picked up"
    );
    assert_eq!(gateway.get("/old").status, 404);
    assert_eq!(gateway.status_json()["version"], 2);
}

#[test]
fn sigterm_turns_readiness_off_finishes_in_flight_requests_and_exits() {
    let slow = Upstream::start("slow");
    slow.set_delay(Duration::from_millis(1500));
    let mut gateway = Gateway::start_raw(&config(&format!(
        r#"
upstreams:
  slow:
    targets: [{{ address: "{}" }}]
routes:
  - name: slow
    match: {{ path: /slow }}
    upstream: slow
"#,
        slow.addr()
    )));
    let url = gateway.url("/slow");
    let in_flight = thread::spawn(move || {
        let started = Instant::now();
        let response = http_agent().get(&url).call();
        (response.map(|r| r.status()).ok(), started.elapsed())
    });
    eventually!(slow.requests() == 1, "the slow request never arrived");

    let signalled = Instant::now();
    gateway.signal("TERM");

    // During the drain delay: not ready, but still serving.
    eventually!(
        within(Duration::from_millis(800)),
        matches!(
            http_agent().get(&gateway.admin_url("/readyz")).call(),
            Err(ureq::Error::Status(503, _))
        ),
        "/readyz should answer 503 once SIGTERM is received"
    );
    let (status, _) = in_flight.join().expect("client thread");
    assert_eq!(status, Some(200), "the in-flight request must complete");
    let exit = gateway.wait_for_exit(Duration::from_secs(15));
    assert!(
        exit.is_some_and(|status| status.success()),
        "the gateway should exit by itself once drained: {exit:?}"
    );
    assert!(
        signalled.elapsed() < Duration::from_secs(10),
        "draining should end with the last connection, not the 60 s grace period: {:?}",
        signalled.elapsed()
    );
}

#[test]
fn graceful_upgrade_under_keepalive_traffic_loses_nothing_and_the_new_process_answers() {
    let (fast, slow) = (Upstream::start("fast"), Upstream::start("slow"));
    slow.set_delay(Duration::from_secs(2));
    let mut gateway = Gateway::start_raw(&config(&format!(
        r#"
upstreams:
  fast:
    targets: [{{ address: "{}" }}]
  slow:
    targets: [{{ address: "{}" }}]
routes:
  - name: fast
    match: {{ path: /fast }}
    upstream: fast
  - name: slow
    match: {{ path: /slow }}
    upstream: slow
"#,
        fast.addr(),
        slow.addr()
    )));
    let old_pid = gateway.pid();
    assert_eq!(gateway.status_json()["pid"], old_pid);
    let traffic = Traffic::start(&gateway.url("/fast"), 4);
    let slow_url = gateway.url("/slow");
    let slow_request =
        thread::spawn(move || http_agent().get(&slow_url).call().map(|r| r.status()).ok());
    eventually!(slow.requests() == 1, "the slow request never arrived");

    let config_path = gateway.config_path();
    let upgrade = run_portcullis(&["upgrade", "-c", &config_path.display().to_string()]);
    assert!(
        upgrade.status.success(),
        "portcullis upgrade failed: {}{}",
        String::from_utf8_lossy(&upgrade.stdout),
        String::from_utf8_lossy(&upgrade.stderr)
    );
    let new_pid = gateway
        .pid_from_file()
        .expect("the new process wrote its pid");
    assert_ne!(new_pid, old_pid);

    assert_eq!(
        slow_request.join().expect("client thread"),
        Some(200),
        "the slow request in flight during the upgrade must complete"
    );
    // New connections reach the new process once the old one stops accepting.
    eventually!(
        within(Duration::from_secs(15)),
        {
            let status: serde_json::Value = http_agent()
                .get(&gateway.admin_url("/status"))
                .call()
                .ok()
                .and_then(|response| response.into_json().ok())
                .unwrap_or_default();
            status["pid"] == new_pid
        },
        "the new process never answered /status"
    );
    let exit = gateway.wait_for_exit(Duration::from_secs(15));
    assert!(exit.is_some(), "the old process should exit once drained");
    thread::sleep(Duration::from_millis(300));

    let report = traffic.stop();
    assert!(report.sent > 100, "too little traffic: {report:?}");
    assert!(
        report.failures.is_empty(),
        "{} of {} requests failed across the upgrade: {:?}",
        report.failures.len(),
        report.sent,
        &report.failures[..report.failures.len().min(10)]
    );
    let answer = gateway.get("/fast");
    assert_eq!(answer.status, 200, "{answer:?}");
}
