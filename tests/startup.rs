//! Starting, running and stopping as an operator sees it at the default log level: one
//! line per listener when serving begins, one when asked to stop, health flips and
//! reloads as one line each; and bad input (a busy port, a missing configuration file,
//! an unreadable certificate, a pid file where none can be written) as one line naming
//! the thing and a non-zero exit, never a retry loop or a panic.

mod common;

use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::{
    bind_test_port, eventually, extend_section, free_port, make_cert, render_config, Gateway,
    OneRoute, TestDir, Upstream, BASE_CONFIG,
};

/// Longer than any start-up that fails should take (a busy port is retried for 1 s here).
const EXIT_TIMEOUT: Duration = Duration::from_secs(15);

/// A process run to its end: its exit status, stderr and how long it ran.
struct Finished {
    status: ExitStatus,
    stderr: String,
    took: Duration,
}

impl Finished {
    /// The one line of stderr; fails unless there is exactly one and no panic.
    fn one_line(&self) -> &str {
        let lines: Vec<&str> = self
            .stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect();
        assert_eq!(
            lines.len(),
            1,
            "expected one line on stderr, got:\n{}",
            self.stderr
        );
        assert!(!self.stderr.contains("panicked"), "{}", self.stderr);
        lines[0]
    }
}

/// Runs `portcullis -c CONFIG` without `RUST_LOG` until it exits; a process still running
/// after [`EXIT_TIMEOUT`] (retrying forever) is killed and fails the test.
fn run_until_exit(config: &Path) -> Finished {
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .arg("-c")
        .arg(config)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the portcullis binary");
    let mut status = None;
    common::wait_until(EXIT_TIMEOUT, || {
        status = child.try_wait().ok().flatten();
        status.is_some()
    });
    let Some(status) = status else {
        let _ = child.kill();
        let output = child
            .wait_with_output()
            .expect("output of the killed gateway");
        panic!(
            "still running after {EXIT_TIMEOUT:?}; stderr:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    let output = child.wait_with_output().expect("stderr of the gateway");
    Finished {
        status,
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        took: started.elapsed(),
    }
}

/// Writes a configuration in `dir` from `template` (see `render_config`) with the public
/// listener on `listen`.
fn write_config(dir: &TestDir, template: &str, listen: u16) -> std::path::PathBuf {
    dir.write(
        "portcullis.yaml",
        &render_config(template, dir.path(), listen, free_port()),
    )
}

#[test]
fn serving_and_stopping_are_announced_at_the_default_log_level() {
    let app = Upstream::start("app");
    let routes = OneRoute::to(&[&app])
        .route("cache: { default_ttl: 60s }")
        .yaml();
    let mut gateway = Gateway::start_with_default_log(&format!("{BASE_CONFIG}{routes}"));
    let admin = gateway.admin_url("/");

    eventually!(
        gateway.stderr().contains(&format!(
            "portcullis {} serving 1 route and 1 upstream",
            env!("CARGO_PKG_VERSION")
        )),
        "no serving line:\n{}",
        gateway.stderr()
    );
    let stderr = gateway.stderr();
    assert!(
        stderr.contains(&format!(
            "listening on {} (HTTP/1.1 and h2c)",
            gateway.addr()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("admin endpoints on {admin}")),
        "{stderr}"
    );
    // The first use of the cache: pingora-cache would warn about a missing dictionary.
    assert_eq!(gateway.get("/doc").status, 200);
    assert_eq!(gateway.get("/doc").header("x-cache"), Some("HIT"));
    let pid_file = gateway.config_path().with_file_name("portcullis.pid");
    assert!(pid_file.exists());

    gateway.signal("TERM");
    let exit = gateway.wait_for_exit(Duration::from_secs(10));
    assert!(exit.is_some_and(|status| status.success()), "{exit:?}");
    let stderr = gateway.stderr();
    assert_eq!(stderr.matches("stopping on SIGTERM").count(), 1, "{stderr}");
    assert!(
        !stderr.contains("WARN"),
        "a warning nobody can act on:\n{stderr}"
    );
    assert!(!pid_file.exists(), "the pid file outlived the process");
}

#[test]
fn an_interrupted_process_removes_its_pid_file() {
    let mut gateway =
        Gateway::start_with_default_log(&format!("{BASE_CONFIG}routes:\n{}", common::PING_ROUTE));
    let pid_file = gateway.config_path().with_file_name("portcullis.pid");
    assert_eq!(gateway.pid_from_file(), Some(gateway.pid()));

    gateway.signal("INT");

    assert!(gateway.wait_for_exit(Duration::from_secs(10)).is_some());
    assert!(
        gateway.stderr().contains("stopping on SIGINT"),
        "{}",
        gateway.stderr()
    );
    assert!(!pid_file.exists(), "the pid file outlived the process");
}

#[test]
fn a_health_flip_is_one_line_naming_pool_and_target() {
    let app = Upstream::start("app");
    let routes = OneRoute::to(&[&app])
        .upstream(
            "health_check: { path: /healthz, interval: 100ms, healthy_threshold: 1, unhealthy_threshold: 1 }",
        )
        .yaml();
    let gateway = Gateway::start_with_default_log(&format!("{BASE_CONFIG}{routes}"));
    let target = format!("upstream app target {}", app.addr());

    app.set_healthy(false);
    eventually!(
        gateway
            .stderr()
            .contains(&format!("{target} becomes unhealthy")),
        "no unhealthy line:\n{}",
        gateway.stderr()
    );
    app.set_healthy(true);
    eventually!(
        gateway
            .stderr()
            .contains(&format!("{target} becomes healthy")),
        "no healthy line:\n{}",
        gateway.stderr()
    );

    let stderr = gateway.stderr();
    assert_eq!(
        stderr.matches(&target).count(),
        2,
        "one line per flip:\n{stderr}"
    );
    assert!(!stderr.contains("Backend {"), "a debug dump:\n{stderr}");
}

#[test]
fn reloads_are_logged_at_info_and_refusals_at_warn_with_their_problems() {
    let ping = format!("routes:\n{}", common::PING_ROUTE);
    let gateway = Gateway::start_with_default_log(&format!("{BASE_CONFIG}{ping}"));

    gateway.rewrite_config(&format!(
        "{ping}  - name: pong\n    match: {{ path: /pong }}\n    respond: {{ body: ping }}\n"
    ));
    gateway.reload();
    gateway.rewrite_config("routes:\n  - name: broken\n    upstream: nowhere\n");
    assert_eq!(gateway.admin_post("/reload", &[], "").status, 400);

    let stderr = gateway.stderr();
    let line = |needle: &str| {
        stderr
            .lines()
            .find(|line| line.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} line in:\n{stderr}"))
            .to_string()
    };
    assert!(line("configuration reloaded: version 2").contains("INFO"));
    let refused = line("configuration reload refused");
    assert!(refused.contains("WARN"), "{refused}");
    assert!(refused.contains("version 2 stays in force"), "{refused}");
    assert!(refused.contains("routes[0].upstream"), "{refused}");
}

#[test]
fn a_busy_port_is_one_line_and_a_failed_exit_after_the_retry_window() {
    let dir = TestDir::new();
    let taken = bind_test_port();
    let port = taken.local_addr().expect("address").port();
    let template = BASE_CONFIG.replace("server:\n", "server:\n  bind_retry: 1s\n");
    let config = write_config(&dir, &format!("{template}routes: []\n"), port);

    let run = run_until_exit(&config);

    assert_eq!(run.status.code(), Some(1), "{}", run.stderr);
    let line = run.one_line();
    assert!(
        line.contains(&format!(
            "listeners[0].address: cannot listen on 127.0.0.1:{port}"
        )),
        "{line}"
    );
    assert!(
        line.contains("Address already in use (os error 98)"),
        "{line}"
    );
    assert!(
        run.took >= Duration::from_secs(1),
        "gave up after {:?}",
        run.took
    );
    drop(taken);
}

#[test]
fn a_missing_configuration_file_is_one_line() {
    let dir = TestDir::new();
    let missing = dir.join("nowhere.yaml");

    let run = run_until_exit(&missing);

    assert_eq!(run.status.code(), Some(1), "{}", run.stderr);
    let line = run.one_line();
    assert!(line.contains(&missing.display().to_string()), "{line}");
    assert!(line.contains("No such file or directory"), "{line}");
}

#[test]
fn an_unreadable_certificate_is_one_line_naming_it() {
    let dir = TestDir::new();
    make_cert(dir.path(), "edge", "localhost");
    // A directory where the certificate should be: read() fails even for root.
    std::fs::create_dir(dir.join("not-a-file.pem")).expect("mkdir");
    for cert in ["{dir}/missing.pem", "{dir}/not-a-file.pem"] {
        let template = BASE_CONFIG.replace(
            "listeners:\n  - address: \"127.0.0.1:{listen}\"\n",
            &format!(
                "listeners:\n  - address: \"127.0.0.1:{{listen}}\"\n    tls: {{ certificates: [{{ cert: \"{cert}\", key: \"{{dir}}/edge.key\" }}] }}\n"
            ),
        );
        let config = write_config(&dir, &format!("{template}routes: []\n"), free_port());

        let run = run_until_exit(&config);

        assert_eq!(run.status.code(), Some(1), "{}", run.stderr);
        let line = run.one_line();
        let path = cert.replace("{dir}", &dir.path().display().to_string());
        assert!(
            line.contains("listeners[0].tls.certificates[0].cert: cannot read"),
            "{line}"
        );
        assert!(line.contains(&path), "{line}");
    }
}

#[test]
fn a_pid_file_in_a_missing_directory_is_one_line() {
    let dir = TestDir::new();
    let template = BASE_CONFIG.replace("{dir}/portcullis.pid", "{dir}/missing/portcullis.pid");
    let config = write_config(&dir, &format!("{template}routes: []\n"), free_port());

    let run = run_until_exit(&config);

    assert_eq!(run.status.code(), Some(1), "{}", run.stderr);
    let line = run.one_line();
    assert!(
        line.contains("server.pid_file: cannot write the pid file"),
        "{line}"
    );
    assert!(line.contains("missing/portcullis.pid"), "{line}");
}

#[test]
fn sigusr2_hands_the_sockets_to_a_new_process_of_the_same_binary() {
    let mut gateway = Gateway::start(&format!("routes:\n{}", common::PING_ROUTE));
    let old = gateway.pid();

    gateway.signal("USR2");

    let new = eventually!(within(Duration::from_secs(15)),
        let pid = gateway.pid_from_file();
        pid.is_some_and(|pid| pid != old),
        "no new pid in the pid file: {pid:?}\n{}", gateway.stderr()
    );
    assert!(
        gateway.stderr().contains("upgrading on SIGUSR2"),
        "{}",
        gateway.stderr()
    );
    let exit = gateway.wait_for_exit(Duration::from_secs(20));
    assert!(
        exit.is_some_and(|status| status.success()),
        "old process: {exit:?}"
    );
    assert_eq!(gateway.get("/ping").status, 200, "served by pid {new:?}");
    assert_eq!(
        gateway.pid_from_file(),
        new,
        "the new process keeps its pid file"
    );
}

#[test]
fn failed_requests_are_logged_a_few_lines_a_second_and_client_hang_ups_not_at_all() {
    let slow = Upstream::start("slow");
    slow.set_delay(Duration::from_millis(1500));
    let nothing_listens = free_port();
    let base = extend_section(BASE_CONFIG, "server", "  request_header_timeout: 1s\n");
    let gateway = Gateway::start_with_default_log(&format!(
        "{base}upstreams:
  down:
    targets: [{{ address: \"127.0.0.1:{nothing_listens}\" }}]
    retries: {{ attempts: 0 }}
  slow:
    targets: [{{ address: \"{slow}\" }}]
routes:
{ping}  - name: down
    match: {{ path_prefix: /down }}
    upstream: down
  - name: slow
    match: {{ path_prefix: /slow }}
    upstream: slow
",
        slow = slow.addr(),
        ping = common::PING_ROUTE,
    ));

    // A pool that refuses every connection, asked 200 times as fast as one client can.
    let started = Instant::now();
    for _ in 0..200 {
        assert_eq!(gateway.get("/down").status, 502);
    }
    let seconds = started.elapsed().as_secs() + 1;
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(gateway.get("/down").status, 502);

    // Clients that hang up: mid-head, while the upstream answers, and one that never
    // finishes its head (closed by request_header_timeout).
    for _ in 0..5 {
        let mut half = common::connect(&gateway.addr());
        std::io::Write::write_all(&mut half, b"GET /ping HTTP/1.1\r\nHo").expect("write");
        drop(half);
        let mut waiting = common::connect(&gateway.addr());
        std::io::Write::write_all(&mut waiting, b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
            .expect("write");
        drop(waiting);
    }
    let mut stalled = common::connect(&gateway.addr());
    std::io::Write::write_all(&mut stalled, b"GET /ping HTTP/1.1\r\n").expect("write");
    assert!(
        common::time_until_closed(&mut stalled, Duration::from_secs(5)).is_some(),
        "the header timeout closed the connection"
    );
    eventually!(
        slow.requests() == 5,
        "the upstream saw the hung-up requests"
    );
    std::thread::sleep(Duration::from_millis(2000));
    assert_eq!(gateway.wait_for_access_log(206).len(), 206);

    let stderr = gateway.stderr();
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains("ERROR"))
        .collect();
    assert!(
        errors
            .iter()
            .all(|line| line.contains("Fail to proxy") && line.contains("/down")),
        "only the refused pool's failures are errors:\n{stderr}"
    );
    let budget = 10 * (seconds as usize + 1);
    assert!(
        !errors.is_empty() && errors.len() <= budget,
        "{} error lines for 201 failures in {seconds} s (at most {budget}):\n{stderr}",
        errors.len()
    );
    assert!(
        errors
            .last()
            .is_some_and(|line| line.contains("failures not logged since the last line")),
        "the line after a full second counts what was left out:\n{stderr}"
    );
}
