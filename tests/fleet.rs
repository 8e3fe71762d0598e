//! A fleet on one etcd (issue #16): a real `etcd`, three gateway processes started with
//! `--config-source`, one `redis-server` for their shared rate limits, and
//! `portcullis config push` / `fleet status` run as an operator would.

mod common;

use std::fs;
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::{
    eventually, free_port, wait_until, EtcdServer, RedisServer, TestDir, Traffic, Upstream,
};

const PREFIX: &str = "edge";
/// The key `portcullis hash-key test` digests to.
const KEY_DIGEST: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

/// The fleet's document: each node fills in its ports and directory from its environment.
fn document(app: &Upstream, redis: &RedisServer, extra_routes: &str) -> String {
    format!(
        r#"server:
  threads: 2
  pid_file: "${{NODE_DIR}}/portcullis.pid"
  upgrade_sock: "${{NODE_DIR}}/upgrade.sock"
  grace_period_seconds: 2
listeners:
  - address: "127.0.0.1:${{NODE_LISTEN}}"
admin:
  address: "127.0.0.1:${{NODE_ADMIN}}"
access_log: {{ target: "${{NODE_DIR}}/access.log", format: json }}
redis: {{ url: "{redis}", timeout: 500ms, on_error: deny }}
consumers:
  - {{ id: acme, api_keys: ["sha256:{KEY_DIGEST}"] }}
upstreams:
  app:
    targets: [{{ address: "{app}" }}]
routes:
  - name: live
    match: {{ path: /live }}
    respond: {{ status: 200, body: live }}
  - name: items
    match: {{ path_prefix: /items }}
    upstream: app
  - name: limited
    match: {{ path_prefix: /limited }}
    upstream: app
    plugins:
      key_auth: {{ header: X-Api-Key }}
      rate_limit:
        - {{ name: per-consumer, key: consumer, algorithm: sliding_window, limit: 100, window: 1m, backend: redis }}
{extra_routes}"#,
        redis = redis.url(),
        app = app.addr(),
    )
}

/// A route `/new` answering `fresh`, as an item of `routes:`.
const NEW_ROUTE: &str =
    "  - name: new\n    match: { path: /new }\n    respond: { status: 200, body: fresh }\n";

/// One gateway process following the fleet's etcd source.
struct Node {
    id: String,
    listen: u16,
    admin: u16,
    dir: TestDir,
    child: Option<Child>,
}

impl Node {
    /// A node (not started) whose bootstrap keeps a cache file unless `cache` is false.
    fn new(id: &str, cache: bool) -> Node {
        let dir = TestDir::new();
        let cache_line = if cache {
            format!("  cache_file: {}\n", dir.join("cache.yaml").display())
        } else {
            String::new()
        };
        dir.write(
            "bootstrap.yaml",
            &format!("config_source:\n  node_id: {id}\n  dial_timeout: 1s\n{cache_line}"),
        );
        Node {
            id: id.to_string(),
            listen: free_port(),
            admin: free_port(),
            dir,
            child: None,
        }
    }

    fn command(&self, etcd: &EtcdServer) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_portcullis"));
        command
            .arg("run")
            .arg("--config-source")
            .arg(etcd.url(PREFIX))
            .arg("-c")
            .arg(self.dir.join("bootstrap.yaml"))
            .env("NODE_LISTEN", self.listen.to_string())
            .env("NODE_ADMIN", self.admin.to_string())
            .env("NODE_DIR", self.dir.path())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        command
    }

    /// Starts the process and waits until `/readyz` answers 200.
    fn start(&mut self, etcd: &EtcdServer) {
        let stderr = fs::File::options()
            .create(true)
            .append(true)
            .open(self.dir.join("stderr.log"))
            .expect("stderr log");
        let child = self
            .command(etcd)
            .stderr(stderr)
            .spawn()
            .expect("spawn portcullis");
        self.child = Some(child);
        let readyz = format!("http://127.0.0.1:{}/readyz", self.admin);
        let ready = wait_until(Duration::from_secs(20), || {
            ureq::get(&readyz)
                .timeout(Duration::from_millis(500))
                .call()
                .is_ok()
        });
        assert!(
            ready,
            "node {} never became ready:\n{}",
            self.id,
            self.stderr()
        );
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.listen)
    }

    /// The status of `GET path` (0 for a transport error).
    fn status_of(&self, path: &str, headers: &[(&str, &str)]) -> u16 {
        let mut request = ureq::get(&self.url(path)).timeout(Duration::from_secs(2));
        for (name, value) in headers {
            request = request.set(name, value);
        }
        match request.call() {
            Ok(response) => response.status(),
            Err(ureq::Error::Status(status, _)) => status,
            Err(_) => 0,
        }
    }

    fn admin_json(&self, path: &str) -> serde_json::Value {
        let url = format!("http://127.0.0.1:{}{path}", self.admin);
        ureq::get(&url)
            .call()
            .expect("admin answers")
            .into_json()
            .expect("admin JSON")
    }

    fn metrics(&self) -> String {
        let url = format!("http://127.0.0.1:{}/metrics", self.admin);
        ureq::get(&url)
            .call()
            .expect("metrics")
            .into_string()
            .expect("text")
    }

    fn stderr(&self) -> String {
        fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("--- node {} stderr ---\n{}", self.id, self.stderr());
        }
        // A process that took over in an upgrade is only in the pid file.
        if let Ok(pid) = fs::read_to_string(self.dir.join("portcullis.pid")) {
            let _ = Command::new("kill").arg("-KILL").arg(pid.trim()).status();
        }
        self.stop();
    }
}

/// etcd, Redis, one upstream and three nodes on one document.
struct Fleet {
    etcd: EtcdServer,
    redis: RedisServer,
    app: Upstream,
    nodes: Vec<Node>,
    files: TestDir,
}

impl Fleet {
    fn start() -> Fleet {
        let etcd = EtcdServer::start();
        let redis = RedisServer::start();
        let app = Upstream::start("app");
        let mut fleet = Fleet {
            etcd,
            redis,
            app,
            nodes: Vec::new(),
            files: TestDir::new(),
        };
        let pushed = fleet.push(&fleet.document(""), &["--wait"]);
        assert!(pushed.status.success(), "first push: {}", text(&pushed));
        for id in ["node-a", "node-b", "node-c"] {
            let mut node = Node::new(id, true);
            node.start(&fleet.etcd);
            fleet.nodes.push(node);
        }
        fleet
    }

    fn document(&self, extra_routes: &str) -> String {
        document(&self.app, &self.redis, extra_routes)
    }

    /// Runs `portcullis config push -c FILE --config-source URL ARGS`.
    fn push(&self, document: &str, args: &[&str]) -> Output {
        let file = self.files.write("pushed.yaml", document);
        Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(["config", "push", "-c"])
            .arg(&file)
            .arg("--config-source")
            .arg(self.etcd.url(PREFIX))
            .args(args)
            // Validated where it is pushed, with the push's own environment.
            .env("NODE_LISTEN", "1")
            .env("NODE_ADMIN", "2")
            .env("NODE_DIR", self.files.path())
            .output()
            .expect("run portcullis config push")
    }

    /// `portcullis fleet status`: exit code and output.
    fn status(&self) -> (Option<i32>, String) {
        let output = Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(["fleet", "status", "--config-source"])
            .arg(self.etcd.url(PREFIX))
            .output()
            .expect("run portcullis fleet status");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.code() != Some(2),
            "fleet status failed: {}",
            text(&output)
        );
        (output.status.code(), stdout)
    }

    /// Writes `value` at `PREFIX/config` directly, as `etcdctl put` would: no validation.
    fn raw_put(&self, value: impl Into<Vec<u8>>) {
        let key = format!("/{PREFIX}/config");
        runtime().block_on(async {
            let mut client = self.etcd_client().await;
            client.put(key, value, None).await.expect("raw put");
        });
    }

    /// The etcd store's current revision.
    fn revision(&self) -> i64 {
        runtime().block_on(async {
            let mut client = self.etcd_client().await;
            let response = client.get("/", None).await.expect("read etcd");
            response.header().expect("a header").revision()
        })
    }

    /// The ids under `PREFIX/nodes/` now.
    fn node_ids(&self) -> Vec<String> {
        let prefix = format!("/{PREFIX}/nodes/");
        runtime().block_on(async {
            let mut client = self.etcd_client().await;
            let options = etcd_client::GetOptions::new()
                .with_prefix()
                .with_keys_only();
            let response = client
                .get(prefix.as_str(), Some(options))
                .await
                .expect("read");
            response
                .kvs()
                .iter()
                .map(|kv| node_id(&prefix, kv))
                .collect()
        })
    }

    /// Every write under `PREFIX/nodes/` after `revision`, in order: ("PUT" or "DELETE",
    /// node id). etcd replays them from its history.
    fn node_events_since(&self, revision: i64) -> Vec<(&'static str, String)> {
        let prefix = format!("/{PREFIX}/nodes/");
        runtime().block_on(async {
            let mut client = self.etcd_client().await;
            let options = etcd_client::WatchOptions::new()
                .with_prefix()
                .with_start_revision(revision + 1);
            let mut stream = client
                .watch(prefix.as_str(), Some(options))
                .await
                .expect("watch");
            let mut events = Vec::new();
            // The replay arrives at once; a quiet half second means it is complete.
            while let Ok(Ok(Some(message))) =
                tokio::time::timeout(Duration::from_millis(500), stream.message()).await
            {
                for event in message.events() {
                    let Some(kv) = event.kv() else { continue };
                    let id = node_id(&prefix, kv);
                    let kind = match event.event_type() {
                        etcd_client::EventType::Put => "PUT",
                        etcd_client::EventType::Delete => "DELETE",
                    };
                    events.push((kind, id));
                }
            }
            events
        })
    }

    async fn etcd_client(&self) -> etcd_client::Client {
        let endpoint = format!("http://{}", self.etcd.endpoint());
        etcd_client::Client::connect([endpoint], None)
            .await
            .expect("connect to etcd")
    }

    /// Keep-alive client loops on `path` of every node. The loops use a `respond` route,
    /// which the gateway answers itself: what they measure is the configuration swap, not
    /// the test upstream (a tiny_http server that, shared by three gateways on a loaded
    /// machine, has been seen to leave one of the first requests unanswered).
    fn traffic(&self, path: &str) -> Vec<Traffic> {
        self.nodes
            .iter()
            .map(|node| Traffic::start(&node.url(path), 2))
            .collect()
    }
}

/// The node id of a key under `prefix` (`PREFIX/nodes/`).
fn node_id(prefix: &str, kv: &etcd_client::KeyValue) -> String {
    let key = String::from_utf8_lossy(kv.key());
    key.strip_prefix(prefix).unwrap_or(&key).to_string()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn text(output: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout ---\n{}--- stderr ---\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Stops the loops and fails on any failed request.
fn assert_no_failures(traffic: Vec<Traffic>) {
    for loops in traffic {
        let report = loops.stop();
        assert!(report.sent > 0, "no request was sent");
        assert!(
            report.failures.is_empty(),
            "{} of {} requests failed: {:?}",
            report.failures.len(),
            report.sent,
            &report.failures[..report.failures.len().min(5)]
        );
    }
}

#[test]
fn one_push_reaches_every_node_within_a_second_under_load() {
    let fleet = Fleet::start();
    let traffic = fleet.traffic("/live");
    for loops in &traffic {
        eventually!(loops.sent() >= 20, "the client loops never got going");
    }
    for node in &fleet.nodes {
        assert_eq!(node.status_of("/items", &[]), 200, "proxied by {}", node.id);
    }

    let pushed_at = Instant::now();
    let pushed = fleet.push(&fleet.document(NEW_ROUTE), &[]);
    assert!(pushed.status.success(), "{}", text(&pushed));
    let stdout = String::from_utf8_lossy(&pushed.stdout);
    assert!(stdout.starts_with("revision "), "{stdout}");
    for node in &fleet.nodes {
        eventually!(
            within(Duration::from_secs(1)),
            node.status_of("/new", &[]) == 200,
            "node {} did not serve the new route within 1 s of the push",
            node.id
        );
    }
    let converged = pushed_at.elapsed();

    assert_no_failures(traffic);
    assert!(converged < Duration::from_secs(1), "took {converged:?}");
    let revision: f64 = stdout["revision ".len()..]
        .trim()
        .parse()
        .expect("revision");
    for node in &fleet.nodes {
        let metrics = node.metrics();
        assert!(
            metrics.contains(&format!("portcullis_config_revision {revision}")),
            "{metrics}"
        );
        assert!(metrics.contains("portcullis_config_source_up 1"));
        let status = node.admin_json("/status");
        assert_eq!(status["config_source"]["applied_revision"], revision as i64);
        assert_eq!(status["config_source"]["url"], fleet.etcd.url(PREFIX));
    }
}

#[test]
fn an_invalid_document_is_refused_by_push_and_by_every_node() {
    let fleet = Fleet::start();
    let broken =
        fleet.document("  - name: broken\n    match: { path: /broken }\n    upstream: nowhere\n");

    let refused = fleet.push(&broken, &[]);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    let stdout = String::from_utf8_lossy(&refused.stdout);
    assert!(stdout.contains("routes[3].upstream"), "{}", text(&refused));
    let (code, status) = fleet.status();
    assert_eq!(code, Some(0), "nothing was written: {status}");

    // Forced in past the validation, as a raw etcd write.
    fleet.raw_put(broken.as_str());
    for node in &fleet.nodes {
        eventually!(
            !node.admin_json("/status")["config_source"]["refused"].is_null(),
            "node {} never reported the refusal",
            node.id
        );
        assert_eq!(node.status_of("/items", &[]), 200, "still serving");
        assert!(node.stderr().contains("routes[3].upstream"), "logged");
    }
    let (code, status) = fleet.status();
    assert_eq!(code, Some(1), "{status}");
    let lines: Vec<&str> = status.lines().collect();
    assert_eq!(lines.len(), 3, "one line per node: {status}");
    for (line, node) in lines.iter().zip(&fleet.nodes) {
        assert!(line.starts_with(&node.id), "{line}");
        assert!(
            line.contains(&format!("127.0.0.1:{}", node.listen)),
            "{line}"
        );
        assert!(line.contains("refused revision"), "{line}");
        assert!(line.contains("routes[3].upstream"), "{line}");
    }

    // Bytes that are not text are refused the same way.
    fleet.raw_put(vec![b'r', b'o', 0xff, 0xfe, b'\n']);
    for node in &fleet.nodes {
        eventually!(
            node.admin_json("/status")["config_source"]["refused"]["problems"]
                .to_string()
                .contains("not UTF-8"),
            "node {} never refused the binary value",
            node.id
        );
        assert_eq!(node.status_of("/items", &[]), 200, "still serving");
    }

    // Two operators: a push on a revision that moved on is refused, nothing written.
    let stale = fleet.push(&fleet.document(NEW_ROUTE), &["--expect-revision", "1"]);
    assert_eq!(stale.status.code(), Some(3), "{}", text(&stale));

    let fixed = fleet.push(&fleet.document(NEW_ROUTE), &["--wait", "--timeout", "10s"]);
    assert!(fixed.status.success(), "{}", text(&fixed));
    let report = String::from_utf8_lossy(&fixed.stdout);
    assert_eq!(report.matches("healthy").count(), 3, "{report}");
    for node in &fleet.nodes {
        assert_eq!(node.status_of("/new", &[]), 200);
        assert!(node.admin_json("/status")["config_source"]["refused"].is_null());
    }
}

#[test]
fn an_etcd_outage_fails_no_request_and_a_later_push_applies() {
    let mut fleet = Fleet::start();
    let traffic = fleet.traffic("/live");
    for loops in &traffic {
        eventually!(loops.sent() >= 20, "the client loops never got going");
    }

    fleet.etcd.kill();
    for node in &fleet.nodes {
        eventually!(
            node.metrics().contains("portcullis_config_source_up 0"),
            "node {} never noticed etcd was gone",
            node.id
        );
    }
    thread::sleep(Duration::from_secs(5));
    fleet.etcd.restart();

    let pushed = fleet.push(&fleet.document(NEW_ROUTE), &["--wait", "--timeout", "20s"]);
    assert!(pushed.status.success(), "{}", text(&pushed));
    for node in &fleet.nodes {
        assert_eq!(node.status_of("/new", &[]), 200, "node {}", node.id);
        assert!(node.metrics().contains("portcullis_config_source_up 1"));
    }
    assert_no_failures(traffic);
}

#[test]
fn a_per_consumer_limit_holds_across_the_nodes() {
    let fleet = Fleet::start();
    let key = [("X-Api-Key", "test")];

    let statuses: Vec<u16> = (0..150)
        .map(|i| fleet.nodes[i % 3].status_of("/limited", &key))
        .collect();

    let passed = statuses.iter().filter(|&&status| status == 200).count();
    let limited = statuses.iter().filter(|&&status| status == 429).count();
    assert_eq!((passed, limited), (100, 50), "{statuses:?}");
}

#[test]
fn with_etcd_down_a_node_starts_from_its_cache_or_exits_clearly() {
    let mut fleet = Fleet::start();
    let mut node = fleet.nodes.remove(0);
    let cache = node.dir.join("cache.yaml");
    assert!(cache.exists(), "the applied document was cached");
    node.stop();
    fleet.etcd.kill();

    node.start(&fleet.etcd);
    assert_eq!(node.status_of("/items", &[]), 200);
    assert!(node.stderr().contains("starting from the cache file"));
    assert!(node.metrics().contains("portcullis_config_source_up 0"));

    let uncached = Node::new("node-d", false);
    let started = Instant::now();
    let output = uncached.command(&fleet.etcd).output().expect("run");
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot read /edge/config") && stderr.contains("cache_file"),
        "{stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));

    // etcd back: the cached node catches up on a push made meanwhile.
    fleet.etcd.restart();
    let pushed = fleet.push(&fleet.document(NEW_ROUTE), &[]);
    assert!(pushed.status.success(), "{}", text(&pushed));
    eventually!(
        within(Duration::from_secs(15)),
        node.status_of("/new", &[]) == 200,
        "the node never caught up"
    );
}

#[test]
fn a_graceful_upgrade_reads_its_configuration_from_etcd() {
    let mut fleet = Fleet::start();
    let before = fleet.revision();
    let node = &fleet.nodes[0];
    let traffic = vec![Traffic::start(&node.url("/items"), 2)];
    let old_pid = node.admin_json("/status")["pid"].as_u64().expect("pid");

    let upgraded = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["upgrade", "--config-source"])
        .arg(fleet.etcd.url(PREFIX))
        .arg("-c")
        .arg(node.dir.join("bootstrap.yaml"))
        .env("NODE_LISTEN", node.listen.to_string())
        .env("NODE_ADMIN", node.admin.to_string())
        .env("NODE_DIR", node.dir.path())
        // The new process daemonizes and keeps what it inherited open: files, not pipes.
        .stdout(fs::File::create(node.dir.join("upgrade.log")).expect("log"))
        .stderr(fs::File::create(node.dir.join("upgrade.err")).expect("log"))
        .status()
        .expect("run portcullis upgrade");
    let upgrade_log = fs::read_to_string(node.dir.join("upgrade.err")).unwrap_or_default();
    assert!(upgraded.success(), "{upgraded}: {upgrade_log}");

    eventually!(
        node.admin_json("/status")["pid"].as_u64() != Some(old_pid),
        "the new process never answered"
    );
    // Both processes accept until Pingora's close timeout ends: `--wait` waits for both,
    // so a new connection gets the new route from either.
    let pushed = fleet.push(&fleet.document(NEW_ROUTE), &["--wait", "--timeout", "10s"]);
    assert!(pushed.status.success(), "{}", text(&pushed));
    for _ in 0..20 {
        assert_eq!(node.status_of("/new", &[]), 200);
    }
    assert_no_failures(traffic);

    let old = fleet.nodes[0].child.as_mut().expect("the old process");
    eventually!(
        within(Duration::from_secs(20)),
        old.try_wait().is_ok_and(|exited| exited.is_some()),
        "the old process never exited"
    );
    // The old process reported apart from the moment it handed over, revoked that report
    // before it exited (a lease left to expire would still be there), and never touched
    // the new process's report.
    let draining = format!("node-a/draining-{old_pid}");
    let events = fleet.node_events_since(before);
    let moved = events.iter().position(|e| *e == ("PUT", draining.clone()));
    let revoked = events
        .iter()
        .rposition(|e| *e == ("DELETE", draining.clone()));
    assert!(
        moved.is_some() && revoked > moved,
        "{draining} was not published and then revoked: {events:?}"
    );
    let new_report = events
        .iter()
        .rposition(|e| *e == ("PUT", "node-a".to_string()))
        .expect("the new process reported as node-a");
    assert!(
        !events[new_report..].contains(&("DELETE", "node-a".to_string())),
        "{events:?}"
    );
    assert_eq!(fleet.node_ids(), ["node-a", "node-b", "node-c"]);
}
