//! The gateway under test: a `portcullis` process started from a config string.

use std::fs::{self, File};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Barrier;
use std::thread;
use std::time::Duration;

use serde_json::Value;

use super::config::{render_config, BASE_CONFIG};
use super::http::{http_agent, send, send_body, HttpResponse};
use super::metrics::metric_value;
use super::{eventually, free_port, wait_until, TestDir, EVENTUALLY};

/// How long a gateway may take to answer 200 on `/readyz`.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// A running `portcullis` process with its own config, ports and log files. Killed on
/// drop; when the test failed, its config and logs are printed.
pub struct Gateway {
    child: Child,
    listen: u16,
    admin: u16,
    agent: ureq::Agent,
    dir: TestDir,
}

impl Gateway {
    /// Starts a gateway whose config is [`BASE_CONFIG`] followed by `sections` (the
    /// test's `upstreams:`, `routes:`, ...), and waits until `/readyz` answers 200.
    pub fn start(sections: &str) -> Gateway {
        Gateway::start_raw(&format!("{BASE_CONFIG}{sections}"))
    }

    /// Starts a gateway from a complete config template (see [`render_config`] for
    /// its placeholders) and waits until `/readyz` answers 200.
    pub fn start_raw(template: &str) -> Gateway {
        Gateway::start_raw_with_args(template, &[])
    }

    /// [`Gateway::start_raw`] with extra command-line arguments (e.g. `--watch`).
    pub fn start_raw_with_args(template: &str, args: &[&str]) -> Gateway {
        let log = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into());
        Gateway::launch(template, args, Some(&log))
    }

    /// [`Gateway::start_raw`] without `RUST_LOG`, so the gateway logs what an operator
    /// sees by default.
    pub fn start_with_default_log(template: &str) -> Gateway {
        Gateway::launch(template, &[], None)
    }

    fn launch(template: &str, args: &[&str], rust_log: Option<&str>) -> Gateway {
        let dir = TestDir::new();
        let (listen, admin) = (free_port(), free_port());
        let config = dir.write(
            "portcullis.yaml",
            &render_config(template, dir.path(), listen, admin),
        );
        let log_file = |name: &str| {
            let path = dir.join(name);
            File::create(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()))
        };
        let mut command = Command::new(env!("CARGO_BIN_EXE_portcullis"));
        command.arg("-c").arg(&config).args(args);
        match rust_log {
            Some(filter) => command.env("RUST_LOG", filter),
            None => command.env_remove("RUST_LOG"),
        };
        let child = command
            .stdin(Stdio::null())
            .stdout(log_file("stdout.log"))
            .stderr(log_file("stderr.log"))
            .spawn()
            .expect("spawn the portcullis binary");
        let mut gateway = Gateway {
            child,
            listen,
            admin,
            agent: http_agent(),
            dir,
        };
        gateway.wait_until_ready();
        gateway
    }

    fn wait_until_ready(&mut self) {
        let probe = ureq::AgentBuilder::new()
            .timeout(Duration::from_millis(500))
            .build();
        let readyz = self.admin_url("/readyz");
        let mut exited = None;
        let ready = wait_until(READY_TIMEOUT, || {
            exited = self.child.try_wait().ok().flatten();
            exited.is_some()
                || matches!(probe.get(&readyz).call(), Ok(response) if response.status() == 200)
        });
        if let Some(exit) = exited {
            panic!("the gateway exited ({exit}) before it was ready; its logs follow");
        }
        assert!(
            ready,
            "the gateway was not ready within {READY_TIMEOUT:?}; its logs follow"
        );
    }

    /// The process id of the gateway, e.g. to send it a signal.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The pid in the gateway's pid file: after an upgrade, the process that took over.
    pub fn pid_from_file(&self) -> Option<u32> {
        fs::read_to_string(self.dir.join("portcullis.pid"))
            .ok()
            .and_then(|text| text.trim().parse().ok())
    }

    /// The configuration file the gateway runs on.
    pub fn config_path(&self) -> std::path::PathBuf {
        self.dir.join("portcullis.yaml")
    }

    /// Sends `signal` (e.g. `"TERM"`) to the gateway process started by the test.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {}", self.pid());
    }

    /// Waits up to `timeout` for the process started by the test to exit.
    pub fn wait_for_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let mut exit = None;
        wait_until(timeout, || {
            exit = self.child.try_wait().ok().flatten();
            exit.is_some()
        });
        exit
    }

    /// Rewrites the config file with [`BASE_CONFIG`] followed by `sections`, rendered
    /// with this gateway's directory and ports; the running gateway reads it on reload.
    pub fn rewrite_config(&self, sections: &str) {
        self.rewrite_config_raw(&format!("{BASE_CONFIG}{sections}"));
    }

    /// Rewrites the config file from a complete template (see [`render_config`]).
    pub fn rewrite_config_raw(&self, template: &str) {
        self.dir.write(
            "portcullis.yaml",
            &render_config(template, self.dir.path(), self.listen, self.admin),
        );
    }

    /// The config file, stderr and stdout, for a failing test's output.
    pub fn diagnostics(&self) -> String {
        let read = |name: &str| fs::read_to_string(self.dir.join(name)).unwrap_or_default();
        format!(
            "--- config ({}) ---\n{}\n--- gateway stderr ---\n{}\n--- gateway stdout ---\n{}",
            self.dir.join("portcullis.yaml").display(),
            read("portcullis.yaml"),
            tail(&read("stderr.log"), 200),
            tail(&read("stdout.log"), 50),
        )
    }

    /// The gateway's stderr so far.
    pub fn stderr(&self) -> String {
        fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default()
    }

    /// The public listener's address, `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.listen)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.listen)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin)
    }

    /// `GET path` on the public listener.
    pub fn get(&self, path: &str) -> HttpResponse {
        self.request("GET", path, &[])
    }

    /// A request on the public listener, over a kept-alive connection.
    pub fn request(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
        send(&self.agent, method, &self.url(path), headers)
    }

    /// `GET path` from `clients` threads at once, each on a connection of its own; the
    /// answers come in the order of the threads.
    pub fn get_concurrently(&self, path: &str, clients: usize) -> Vec<HttpResponse> {
        let url = self.url(path);
        let start_together = Barrier::new(clients);
        thread::scope(|scope| {
            let requests: Vec<_> = (0..clients)
                .map(|_| {
                    scope.spawn(|| {
                        start_together.wait();
                        send(&http_agent(), "GET", &url, &[])
                    })
                })
                .collect();
            requests
                .into_iter()
                .map(|request| request.join().expect("client thread"))
                .collect()
        })
    }

    /// `POST path` with `body` on the public listener.
    pub fn post(&self, path: &str, headers: &[(&str, &str)], body: &str) -> HttpResponse {
        send_body(&self.agent, "POST", &self.url(path), headers, body)
    }

    /// `GET path` on the admin listener.
    pub fn admin_get(&self, path: &str) -> HttpResponse {
        send(&self.agent, "GET", &self.admin_url(path), &[])
    }

    /// `POST path` with `body` on the admin listener.
    pub fn admin_post(&self, path: &str, headers: &[(&str, &str)], body: &str) -> HttpResponse {
        send_body(&self.agent, "POST", &self.admin_url(path), headers, body)
    }

    /// `POST /reload` (without an admin token), which must be accepted.
    pub fn reload(&self) {
        let reloaded = self.admin_post("/reload", &[], "");
        assert_eq!(reloaded.status, 200, "POST /reload: {reloaded:?}");
    }

    /// The Prometheus text of `GET /metrics`.
    pub fn metrics(&self) -> String {
        let response = self.admin_get("/metrics");
        assert_eq!(response.status, 200, "GET /metrics: {response:?}");
        response.body
    }

    /// One metric from `/metrics`: see [`metric_value`].
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        metric_value(&self.metrics(), name, labels)
    }

    /// `GET /status` as JSON.
    pub fn status_json(&self) -> Value {
        let response = self.admin_get("/status");
        assert_eq!(response.status, 200, "GET /status: {response:?}");
        response.json()
    }

    /// The `/status` entry of the target at `address` in `upstream`.
    pub fn target_status(&self, upstream: &str, address: &str) -> Value {
        let status = self.status_json();
        status["upstreams"][upstream]["targets"]
            .as_array()
            .and_then(|targets| targets.iter().find(|t| t["address"] == address))
            .cloned()
            .unwrap_or_else(|| panic!("target {address} of {upstream} not in /status: {status}"))
    }

    /// The access log file as written so far.
    pub fn access_log_text(&self) -> String {
        fs::read_to_string(self.dir.join("access.log")).unwrap_or_default()
    }

    /// The access log lines written so far, each parsed as JSON.
    pub fn access_log_lines(&self) -> Vec<Value> {
        self.access_log_text()
            .lines()
            .filter(|line| !line.trim().is_empty())
            .map(|line| {
                serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("access log line is not JSON ({e}): {line}"))
            })
            .collect()
    }

    /// Waits until the (buffered) access log holds at least `count` lines, and
    /// returns them.
    pub fn wait_for_access_log(&self, count: usize) -> Vec<Value> {
        eventually!(let lines = self.access_log_lines();
            lines.len() >= count,
            "expected {count} access log lines within {EVENTUALLY:?}, got {}: {lines:?}",
            lines.len()
        )
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A process that took over through a graceful upgrade is not the test's child.
        if let Some(pid) = self.pid_from_file().filter(|pid| *pid != self.child.id()) {
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(pid.to_string())
                .status();
        }
        if thread::panicking() {
            eprintln!("{}", self.diagnostics());
        }
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Runs the `portcullis` binary with `args` (e.g. `check -c FILE`) to completion.
pub fn run_portcullis(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run the portcullis binary")
}
