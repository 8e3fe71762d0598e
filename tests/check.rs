//! The command line (SPEC §2): `portcullis check -c FILE` reports every problem as
//! `FILE: path.to.field: message`, `portcullis version` and `portcullis hash-key`.

mod common;

use std::process::Output;

use common::{free_port, render_config, run_portcullis, TestDir, BASE_CONFIG};

/// A valid config; each test breaks one or two things in it.
const VALID: &str = r#"
upstreams:
  app:
    targets:
      - address: "127.0.0.1:9001"
        weight: 3
      - address: "127.0.0.1:9002"
        weight: 1
    load_balancing: round_robin
    timeouts: { connect: 1s, read: 2s }
    health_check: { type: http, path: /healthz, interval: 2s, timeout: 1s }
routes:
  - name: api
    match: { path_prefix: /api, methods: [GET] }
    strip_prefix: true
    upstream: app
  - name: users
    match: { path_regex: "^/users/[0-9]+$" }
    upstream: app
  - name: ping
    match: { path: /ping }
    respond: { status: 200, body: pong }
"#;

/// [`VALID`] with the first occurrence of each `from` replaced by its `to`.
fn valid_except(edits: &[(&str, &str)]) -> String {
    edits.iter().fold(VALID.to_string(), |config, (from, to)| {
        assert!(config.contains(from), "{from:?} is not in the config");
        config.replacen(from, to, 1)
    })
}

/// One run of `portcullis check -c FILE`.
struct Check {
    file: String,
    output: Output,
}

impl Check {
    fn run(sections: &str) -> Check {
        let dir = TestDir::new();
        let config = render_config(
            &format!("{BASE_CONFIG}{sections}"),
            dir.path(),
            free_port(),
            free_port(),
        );
        let file = dir.write("portcullis.yaml", &config).display().to_string();
        let output = run_portcullis(&["check", "-c", &file]);
        Check { file, output }
    }

    fn text(&self) -> String {
        format!(
            "{}{}",
            String::from_utf8_lossy(&self.output.stdout),
            String::from_utf8_lossy(&self.output.stderr)
        )
    }

    /// The problems printed as `FILE: path.to.field: message`, as (path, message).
    fn problems(&self) -> Vec<(String, String)> {
        let prefix = format!("{}: ", self.file);
        self.text()
            .lines()
            .filter_map(|line| line.strip_prefix(&prefix)?.split_once(": "))
            .map(|(path, message)| (path.to_string(), message.to_string()))
            .collect()
    }

    /// Asserts that check failed with a problem at `path`; returns its message.
    fn problem_at(&self, path: &str) -> String {
        assert_eq!(self.output.status.code(), Some(1), "{}", self.text());
        let message = self
            .problems()
            .into_iter()
            .find(|(at, _)| at == path)
            .map(|(_, message)| message)
            .unwrap_or_else(|| {
                panic!(
                    "no \"{}: {path}: ...\" line in:\n{}",
                    self.file,
                    self.text()
                )
            });
        assert!(!message.trim().is_empty(), "empty message for {path}");
        message
    }
}

#[test]
fn valid_config_is_ok() {
    let check = Check::run(VALID);

    assert_eq!(check.output.status.code(), Some(0), "{}", check.text());
    assert!(
        check.text().contains("configuration ok"),
        "{}",
        check.text()
    );
}

#[test]
fn unknown_field_is_reported_at_its_own_path() {
    let check = Check::run(&valid_except(&[("path_prefix: /api", "pathprefix: /api")]));

    let message = check.problem_at("routes[0].match.pathprefix");
    assert!(message.contains("pathprefix"), "{message}");
}

#[test]
fn route_to_missing_upstream_is_reported() {
    let check = Check::run(&valid_except(&[("upstream: app", "upstream: nope")]));

    let message = check.problem_at("routes[0].upstream");
    assert!(message.contains("nope"), "{message}");
}

#[test]
fn unparsable_target_address_is_reported() {
    let check = Check::run(&valid_except(&[("127.0.0.1:9001", "not-an-address")]));

    check.problem_at("upstreams.app.targets[0].address");
}

#[test]
fn zero_weight_is_reported() {
    let check = Check::run(&valid_except(&[("weight: 3", "weight: 0")]));

    check.problem_at("upstreams.app.targets[0].weight");
}

#[test]
fn bad_duration_is_reported() {
    let check = Check::run(&valid_except(&[("connect: 1s", "connect: soon")]));

    check.problem_at("upstreams.app.timeouts.connect");
}

#[test]
fn invalid_regex_is_reported() {
    let check = Check::run(&valid_except(&[("^/users/[0-9]+$", "^/users/(")]));

    check.problem_at("routes[1].match.path_regex");
}

#[test]
fn every_problem_is_reported() {
    let check = Check::run(&valid_except(&[
        ("upstream: app", "upstream: nope"),
        ("weight: 3", "weight: 0"),
    ]));

    check.problem_at("routes[0].upstream");
    check.problem_at("upstreams.app.targets[0].weight");
}

#[test]
fn every_parse_problem_of_every_section_is_reported() {
    let check = Check::run(&valid_except(&[
        ("path_prefix: /api", "pathprefix: /api"),
        ("weight: 3", "weight: heavy"),
        ("connect: 1s", "connect: soon"),
        ("strip_prefix: true", "strip_prefix: sometimes"),
        ("name: users", "nmae: users"),
        ("body: pong", "body: [pong]"),
    ]));

    check.problem_at("routes[0].match.pathprefix");
    check.problem_at("upstreams.app.targets[0].weight");
    check.problem_at("upstreams.app.timeouts.connect");
    check.problem_at("routes[0].strip_prefix");
    check.problem_at("routes[1].nmae");
    check.problem_at("routes[1]");
    // routes[1] is left out to find the problems after it; they keep their own index.
    check.problem_at("routes[2].respond.body");
}

#[test]
fn version_prints_the_version() {
    let output = run_portcullis(&["version"]);

    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    assert!(stdout.contains(env!("CARGO_PKG_VERSION")), "{stdout}");
}

#[test]
fn version_names_the_commit_pingora_and_its_features() {
    let output = run_portcullis(&["version"]);

    let stdout = String::from_utf8_lossy(&output.stdout);
    let commit = stdout
        .lines()
        .find_map(|line| line.strip_prefix("commit: "))
        .unwrap_or_else(|| panic!("no commit line: {stdout}"));
    // Built from this git checkout, so the commit is known.
    assert!(
        commit.len() >= 7 && commit.chars().all(|c| c.is_ascii_hexdigit()),
        "{stdout}"
    );
    assert!(stdout.contains("pingora: 0.9.1 (features: "), "{stdout}");
    assert!(stdout.contains("openssl"), "{stdout}");
}

#[test]
fn hash_key_reads_the_key_from_standard_input() {
    use std::io::Write;
    use std::process::{Command, Stdio};

    let hash = |stdin: &str| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .arg("hash-key")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run portcullis hash-key");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes())
            .expect("write the key");
        child.wait_with_output().expect("hash-key output")
    };
    let from_argument = run_portcullis(&["hash-key", "demo-key"]);
    let expected = String::from_utf8_lossy(&from_argument.stdout).to_string();
    assert!(expected.starts_with("sha256:"), "{expected}");

    for input in ["demo-key\n", "demo-key", "demo-key\r\n"] {
        let output = hash(input);
        assert!(output.status.success(), "{output:?}");
        assert_eq!(
            String::from_utf8_lossy(&output.stdout),
            expected,
            "{input:?}"
        );
    }
    let empty = hash("");
    assert_eq!(empty.status.code(), Some(1), "{empty:?}");
    assert!(String::from_utf8_lossy(&empty.stderr).contains("no key given"));

    let help = run_portcullis(&["hash-key", "--help"]);
    assert!(String::from_utf8_lossy(&help.stdout).contains("standard input"));
}

#[test]
fn cache_settings_are_checked_at_their_path() {
    for (cache, path) in [
        (
            r#"{ max_size: 0, vary: ["not a header"], default_ttl: soon }"#,
            "routes[0].cache.default_ttl",
        ),
        (
            r#"{ max_size: 0, vary: ["not a header"] }"#,
            "routes[0].cache.max_size",
        ),
        (r#"{ vary: ["not a header"] }"#, "routes[0].cache.vary[0]"),
    ] {
        let check = Check::run(&valid_except(&[(
            "    strip_prefix: true\n",
            &format!("    strip_prefix: true\n    cache: {cache}\n"),
        )]));
        check.problem_at(path);
    }
}

#[test]
fn traffic_management_fields_are_checked() {
    let traffic = "    health_check: { type: http, path: /healthz, interval: 2s, timeout: 1s }\n    \
                   load_balancing: peak_ewma\n    \
                   retries: { attempts: 2, on: [connect_failure, 502, \"503\", 418], budget_percent: 20 }\n    \
                   outlier_detection: { consecutive_5xx: 0, max_ejection_percent: 150, \
                   base_ejection_time: 1m, max_ejection_time: 10s }\n";
    let canary = "    strip_prefix: true\n    \
                  canary: { upstream: nope, weight: 120, sticky_on: user, force_header: \"X Canary\" }\n";
    let check = Check::run(&valid_except(&[
        ("    load_balancing: round_robin\n", ""),
        (
            "    health_check: { type: http, path: /healthz, interval: 2s, timeout: 1s }\n",
            traffic,
        ),
        ("    strip_prefix: true\n", canary),
    ]));

    let expected = [
        "upstreams.app.retries.on[3]",
        "upstreams.app.outlier_detection.consecutive_5xx",
        "upstreams.app.outlier_detection.max_ejection_percent",
        "upstreams.app.outlier_detection.max_ejection_time",
        "routes[0].canary.upstream",
        "routes[0].canary.weight",
        "routes[0].canary.sticky_on",
        "routes[0].canary.force_header",
    ];
    for path in expected {
        check.problem_at(path);
    }
    // Nothing else is reported: the traffic fields themselves are accepted.
    let unexpected: Vec<_> = check
        .problems()
        .into_iter()
        .filter(|(path, _)| !expected.contains(&path.as_str()))
        .collect();
    assert!(unexpected.is_empty(), "{unexpected:?}");
}

#[test]
fn a_complete_traffic_configuration_is_ok() {
    let check = Check::run(&valid_except(&[
        ("load_balancing: round_robin", "load_balancing: least_request"),
        (
            "    strip_prefix: true\n",
            "    strip_prefix: true\n    fallback_upstream: app\n    \
             canary: { upstream: app, weight: 2.5, sticky_on: \"jwt:sub\", force_header: X-Canary }\n",
        ),
        (
            "    timeouts: { connect: 1s, read: 2s }\n",
            "    timeouts: { connect: 1s, read: 2s }\n    \
             retries: { attempts: 2, on: [connect_failure, 502, 503, 504], backoff: 25ms, budget_percent: 20 }\n    \
             max_requests: 1024\n    \
             outlier_detection: { consecutive_5xx: 5, consecutive_gateway_failure: 3, \
             failure_percentage_threshold: 50, failure_percentage_request_volume: 20, interval: 10s, \
             base_ejection_time: 30s, max_ejection_time: 300s, max_ejection_percent: 50 }\n",
        ),
    ]));

    assert_eq!(check.output.status.code(), Some(0), "{}", check.text());
}

#[test]
fn the_packaged_configuration_is_ok_and_agrees_with_the_unit() {
    let conf = concat!(env!("CARGO_MANIFEST_DIR"), "/conf/debian/portcullis.yaml");
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/conf/portcullis.service"
    ))
    .expect("conf/portcullis.service");

    let output = run_portcullis(&["check", "-c", conf]);

    assert!(output.status.success(), "{output:?}");
    let config: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(conf).expect("config")).expect("YAML");
    let pid_file = config["server"]["pid_file"]
        .as_str()
        .expect("server.pid_file");
    let upgrade_sock = config["server"]["upgrade_sock"]
        .as_str()
        .expect("upgrade_sock");
    assert!(unit.contains(&format!("\nPIDFile={pid_file}\n")), "{unit}");
    assert!(unit.contains("\nRuntimeDirectory=portcullis\n"), "{unit}");
    assert!(
        upgrade_sock.starts_with("/run/portcullis/"),
        "{upgrade_sock}"
    );
    assert!(
        unit.contains("\nExecReload=/bin/kill -HUP $MAINPID\n"),
        "{unit}"
    );
}
