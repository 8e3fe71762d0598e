//! A real HAProxy (Debian's `haproxy`) in TCP mode in front of the gateway, announcing
//! each client with a PROXY protocol v2 header.

use std::fs::File;
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::{free_port, TestDir};

/// A running `haproxy` process, killed on drop.
pub struct HaProxy {
    child: Child,
    port: u16,
    dir: TestDir,
}

impl HaProxy {
    /// HAProxy listening on a port of its own and relaying every connection to
    /// `backend` (`IP:PORT`) with `send-proxy-v2`. Panics when haproxy is not installed.
    pub fn send_proxy_v2(backend: &str) -> HaProxy {
        let dir = TestDir::new();
        let port = free_port();
        let config = dir.write(
            "haproxy.cfg",
            &format!(
                "global\n  maxconn 256\n\
                 defaults\n  mode tcp\n  timeout connect 2s\n  timeout client 20s\n  timeout server 20s\n\
                 frontend edge\n  bind 127.0.0.1:{port}\n  default_backend gateway\n\
                 backend gateway\n  server gateway {backend} send-proxy-v2\n"
            ),
        );
        let log = File::create(dir.join("haproxy.log")).expect("create the haproxy log");
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run haproxy ({e}): install it with scripts/setup-debian.sh")
            });
        let mut haproxy = HaProxy { child, port, dir };
        haproxy.wait_until_listening();
        haproxy
    }

    fn wait_until_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Ok(Some(exit)) = self.child.try_wait() {
                panic!("haproxy exited ({exit}): {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "haproxy did not listen: {}",
                self.log()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// `127.0.0.1:PORT`, where HAProxy listens.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// What HAProxy printed.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("haproxy.log")).unwrap_or_default()
    }
}

impl Drop for HaProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
