//! A real `redis-server` of the test's own, on a free port, that the test can kill and
//! restart on the same port. A machine without `redis-server` fails the test loudly
//! (scripts/setup-debian.sh installs it).

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};

use super::{free_port, wait_until, EVENTUALLY};

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
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run redis-server ({e}); install it: scripts/setup-debian.sh")
            });
        self.child = Some(child);
        let port = self.port;
        assert!(
            wait_until(EVENTUALLY, || TcpStream::connect(("127.0.0.1", port))
                .is_ok()),
            "redis-server did not listen on port {port}"
        );
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
