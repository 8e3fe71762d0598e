//! A real `etcd` (Debian's `etcd-server`) of the test's own: a one-member cluster on free
//! client and peer ports with its data in a directory of its own, which the test can kill
//! and restart with its data kept. A machine without `etcd` fails the test loudly
//! (scripts/setup-debian.sh installs it).

use std::fs::File;
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};

use super::{eventually, free_port, TestDir};

pub struct EtcdServer {
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
    dir: TestDir,
}

impl EtcdServer {
    /// Starts etcd and waits until it answers on its client port.
    pub fn start() -> EtcdServer {
        let mut server = EtcdServer {
            client_port: free_port(),
            peer_port: free_port(),
            child: None,
            dir: TestDir::new(),
        };
        server.restart();
        server
    }

    /// `127.0.0.1:PORT` of the client listener.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// `etcd://127.0.0.1:PORT/PREFIX`.
    pub fn url(&self, prefix: &str) -> String {
        format!("etcd://{}/{prefix}", self.endpoint())
    }

    /// Kills etcd at once (SIGKILL); its data stays for [`EtcdServer::restart`].
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts etcd again on the same ports and data.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "etcd is already running");
        let client = format!("http://127.0.0.1:{}", self.client_port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.dir.join("etcd.log"))
            .expect("etcd log file");
        let child = Command::new("etcd")
            .args(["--name", "test"])
            .arg("--data-dir")
            .arg(self.dir.join("data"))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("test={peer}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start etcd ({e}); install Debian's etcd-server (scripts/setup-debian.sh)")
            });
        self.child = Some(child);
        let port = self.client_port;
        eventually!(
            TcpStream::connect(("127.0.0.1", port)).is_ok(),
            "etcd never listened on port {port}"
        );
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.kill();
    }
}
