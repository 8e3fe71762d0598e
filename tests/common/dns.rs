//! A real DNS server for discovery tests: dnsmasq (Debian `dnsmasq-base`) on a free
//! loopback port, answering only from a hosts file the test rewrites (then SIGHUPs it).
//! Records carry a 1 s TTL.

use std::fs;
use std::net::UdpSocket;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{wait_until, TestDir};

const DNSMASQ: &str = "/usr/sbin/dnsmasq";

/// A running dnsmasq, killed on drop.
pub struct Dnsmasq {
    child: Option<Child>,
    port: u16,
    hosts: PathBuf,
    _dir: TestDir,
}

impl Dnsmasq {
    /// Starts dnsmasq answering `records` (`(ip, name)` pairs). Fails loudly without it.
    pub fn start(records: &[(&str, &str)]) -> Dnsmasq {
        assert!(
            std::path::Path::new(DNSMASQ).exists(),
            "{DNSMASQ} is missing: install the Debian package dnsmasq-base (scripts/setup-debian.sh)"
        );
        let dir = TestDir::new();
        // dnsmasq started as root drops to `nobody`, who must still read the hosts file.
        let _ = fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755));
        let hosts = dir.join("hosts");
        for _ in 0..20 {
            let port = free_udp_port();
            write_hosts(&hosts, records);
            let mut child = Command::new(DNSMASQ)
                .args([
                    "--no-daemon",
                    &format!("--port={port}"),
                    "--listen-address=127.0.0.1",
                    "--bind-interfaces",
                    "--no-resolv",
                    "--no-hosts",
                    &format!("--addn-hosts={}", hosts.display()),
                    "--local-ttl=1",
                    "--conf-file=/dev/null",
                    "--pid-file=",
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn dnsmasq");
            let answering = wait_until(Duration::from_secs(3), || {
                child.try_wait().ok().flatten().is_none() && answers(port)
            });
            if answering {
                return Dnsmasq {
                    child: Some(child),
                    port,
                    hosts,
                    _dir: dir,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("dnsmasq did not start on any free port");
    }

    /// `127.0.0.1:PORT`, for `dns.servers`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Replaces the records and has dnsmasq re-read them.
    pub fn set_records(&self, records: &[(&str, &str)]) {
        write_hosts(&self.hosts, records);
        let pid = self.child.as_ref().expect("dnsmasq is running").id();
        let status = Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "SIGHUP dnsmasq");
    }

    /// Kills dnsmasq: queries then time out.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        self.kill();
    }
}

fn write_hosts(path: &PathBuf, records: &[(&str, &str)]) {
    let text: String = records
        .iter()
        .map(|(ip, name)| format!("{ip} {name}\n"))
        .collect();
    fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    let _ = fs::set_permissions(path, fs::Permissions::from_mode(0o644));
}

fn free_udp_port() -> u16 {
    let port = super::free_port();
    // The TCP port is ours; the UDP one must be free too.
    match UdpSocket::bind(("127.0.0.1", port)) {
        Ok(_) => port,
        Err(_) => free_udp_port(),
    }
}

/// Whether a DNS server on `port` answers a query (any answer).
fn answers(port: u16) -> bool {
    let Ok(socket) = UdpSocket::bind("127.0.0.1:0") else {
        return false;
    };
    let _ = socket.set_read_timeout(Some(Duration::from_millis(200)));
    // A query for `probe.` type A.
    let query = [
        0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 5, b'p', b'r', b'o', b'b', b'e', 0, 0, 1,
        0, 1,
    ];
    if socket.send_to(&query, ("127.0.0.1", port)).is_err() {
        return false;
    }
    let mut buffer = [0u8; 512];
    matches!(socket.recv_from(&mut buffer), Ok((n, _)) if n >= 12 && buffer[..2] == [0x12, 0x34])
}
