//! A real `redis-server` of the test's own, on a free port, that the test can kill and
//! restart on the same port. A machine without `redis-server` fails the test loudly
//! (scripts/setup-debian.sh installs it).

use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use super::{eventually, free_port, TestDir};

pub struct RedisServer {
    port: u16,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts `redis-server` without persistence on a port of its own and waits until it
    /// accepts connections.
    pub fn start() -> RedisServer {
        let mut server = RedisServer {
            port: free_port(),
            child: None,
        };
        server.restart();
        server
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (its data goes with it); connecting is then refused.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port, empty.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "redis-server is already running");
        self.child = Some(spawn_redis(self.port, &[], None));
        wait_listening(self.port);
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Three `redis-server` masters forming a Redis Cluster (`redis-cli --cluster create`),
/// each on a free port, with their cluster files in a directory of their own.
pub struct RedisCluster {
    ports: Vec<u16>,
    nodes: Vec<Child>,
    _dir: TestDir,
}

impl RedisCluster {
    pub fn start() -> RedisCluster {
        let dir = TestDir::new();
        let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let nodes = ports
            .iter()
            .map(|port| {
                let nodes_file = format!("nodes-{port}.conf");
                // The bus port defaults to port + 10000, which lies in the kernel's
                // ephemeral range where any outgoing connection may hold it; a bus port
                // of the harness's own cannot be taken.
                let bus_port = free_port().to_string();
                let cluster = [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    &nodes_file,
                    "--cluster-port",
                    &bus_port,
                ];
                spawn_redis(*port, &cluster, Some(dir.path()))
            })
            .collect();
        let cluster = RedisCluster {
            ports,
            nodes,
            _dir: dir,
        };
        for port in &cluster.ports {
            wait_listening(*port);
        }
        let addresses: Vec<String> = cluster
            .ports
            .iter()
            .map(|port| format!("127.0.0.1:{port}"))
            .collect();
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run redis-cli ({e}); it comes with redis-server"));
        assert!(
            created.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&created.stdout)
        );
        for port in &cluster.ports {
            eventually!(
                Command::new("redis-cli")
                    .args(["-p", &port.to_string(), "cluster", "info"])
                    .output()
                    .is_ok_and(|out| {
                        String::from_utf8_lossy(&out.stdout).contains("cluster_state:ok")
                    }),
                "the cluster node on port {port} never reported cluster_state:ok"
            );
        }
        cluster
    }

    /// `redis+cluster://127.0.0.1:P1,127.0.0.1:P2,...`.
    pub fn url(&self) -> String {
        let nodes: Vec<String> = self
            .ports
            .iter()
            .map(|port| format!("127.0.0.1:{port}"))
            .collect();
        format!("redis+cluster://{}", nodes.join(","))
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            let _ = node.kill();
            let _ = node.wait();
        }
    }
}

/// Starts `redis-server` without persistence on `port` with `args`, its files in `dir`.
fn spawn_redis(port: u16, args: &[&str], dir: Option<&Path>) -> Child {
    let mut command = Command::new("redis-server");
    command
        .args(["--port", &port.to_string()])
        .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .args(args);
    if let Some(dir) = dir {
        command.arg("--dir").arg(dir);
    }
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run redis-server ({e}); install it: scripts/setup-debian.sh")
        })
}

fn wait_listening(port: u16) {
    eventually!(
        TcpStream::connect(("127.0.0.1", port)).is_ok(),
        "redis-server did not listen on port {port}"
    );
}
