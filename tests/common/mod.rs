//! Test harness: a real `portcullis` process and real upstream servers on loopback.
//!
//! A test reads as config, requests, assertions:
//!
//! ```ignore
//! let app = Upstream::start("app");
//! let gateway = Gateway::start(&format!(
//!     "upstreams:\n  app:\n    targets:\n      - address: \"{}\"\nroutes: ...",
//!     app.addr()
//! ));
//!
//! let response = gateway.get("/api/users");
//!
//! assert_eq!(response.status, 200);
//! assert_eq!(app.last_request().path, "/api/users");
//! ```
//!
//! Every gateway and upstream gets ports of its own and writes into its own temporary
//! directory, so tests run in parallel and never depend on each other.

// Each test crate uses a different part of the harness.
#![allow(dead_code)]

mod certs;
mod config;
mod dns;
mod etcd;
mod gateway;
mod haproxy;
mod http;
mod lint;
mod listeners;
mod metrics;
mod pki;
mod recorder;
mod redis;
mod sockets;
mod traffic;
mod upstream;

// The harness's surface; each test crate imports only part of it.
#[allow(unused_imports)]
pub use self::{
    certs::make_cert,
    config::{extend_section, render_config, OneRoute, BASE_CONFIG, PING_ROUTE},
    dns::Dnsmasq,
    etcd::EtcdServer,
    gateway::{run_portcullis, Gateway},
    haproxy::HaProxy,
    http::{
        assert_gateway_error, http_agent, raw_exchange, raw_exchange_bytes, send, send_body,
        HttpResponse,
    },
    lint::{Answer, Exchanges},
    listeners::edge_config,
    metrics::{metric_value, sample_names},
    pki::{Pki, Validity},
    recorder::{raw_request, RawAnswer, RawConnection, RawRequest, RecordingUpstream},
    redis::{RedisCluster, RedisServer},
    sockets::{
        connect, connect_from, exchange_on, keep_alive_get, proxy_v1, proxy_v2, time_until_closed,
        trickle,
    },
    traffic::{Traffic, TrafficReport},
    upstream::{ReceivedRequest, Upstream, HEALTH_PATH},
};

use std::collections::hash_map::RandomState;
use std::collections::BTreeSet;
use std::fs;
use std::hash::BuildHasher;
use std::net::TcpListener;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

/// How long a condition that should soon hold (a health check flipping, a log flush)
/// may take before the test gives up.
pub const EVENTUALLY: Duration = Duration::from_secs(5);

/// The ports the harness hands out. They lie below the kernel's ephemeral range
/// (Linux 32768–60999, BSD and macOS 49152–65535), so no `bind(0)` or outgoing
/// connection of a parallel test can take a port between the moment it is chosen here
/// and the moment the gateway binds it.
const TEST_PORTS: Range<u16> = 20_000..32_000;

/// A listener on a port of [`TEST_PORTS`] that this process has not handed out before.
pub fn bind_test_port() -> TcpListener {
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let mut handed_out = lock(&HANDED_OUT);
    // Start at a random place, so parallel test processes seldom try the same ports.
    let span = TEST_PORTS.len() as u64;
    let start = RandomState::new().hash_one(process::id()) % span;
    (0..span)
        .map(|i| TEST_PORTS.start + ((start + i) % span) as u16)
        // A port found taken is skipped from then on, like one handed out.
        .filter(|&port| handed_out.insert(port))
        .find_map(|port| TcpListener::bind(("127.0.0.1", port)).ok())
        .unwrap_or_else(|| panic!("no free port left in {TEST_PORTS:?}"))
}

/// A port on 127.0.0.1 that is free and that nothing else in this process will use:
/// for a gateway to listen on, or for a target where nothing listens.
pub fn free_port() -> u16 {
    bind_test_port()
        .local_addr()
        .expect("local address of a bound port")
        .port()
}

/// Polls `condition` until it holds or `timeout` passes; says whether it held. Tests say
/// what must hold with [`eventually!`]; this is for waits that may end either way.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Fails the test unless a condition holds within [`EVENTUALLY`], polling it as
/// [`wait_until`] does; the message is formatted like `assert!`'s, once the wait is over.
///
/// ```ignore
/// eventually!(app.requests() == 2, "the two requests never arrived");
/// // Another bound, for a wait that is part of what the test measures:
/// eventually!(within(Duration::from_secs(15)), gateway.get("/").status == 200, "...");
/// // Polls a value and returns the one that passed; the message sees the last one:
/// let stale = eventually!(let response = gateway.get("/doc");
///     response.status == 200, "never served: {response:?}");
/// ```
macro_rules! eventually {
    (within($timeout:expr), let $value:ident = $probe:expr; $condition:expr, $($message:tt)+) => {{
        let mut last = None;
        let held = $crate::common::wait_until($timeout, || {
            let $value = $probe;
            let held = $condition;
            last = Some($value);
            held
        });
        let $value = last.expect("wait_until polls at least once");
        assert!(held, $($message)+);
        $value
    }};
    (within($timeout:expr), $condition:expr, $($message:tt)+) => {
        assert!($crate::common::wait_until($timeout, || $condition), $($message)+)
    };
    ($($condition_and_message:tt)+) => {
        $crate::common::eventually!(within($crate::common::EVENTUALLY), $($condition_and_message)+)
    };
}
#[allow(unused_imports)]
pub(crate) use eventually;

/// Locks a mutex, ignoring poisoning: a test that panicked while holding it must not
/// turn every later `Drop` into a double panic.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A directory of its own under the system temp dir, removed on drop unless the test
/// failed (then it is kept for a post-mortem and its path is printed).
pub struct TestDir {
    path: PathBuf,
}

impl TestDir {
    pub fn new() -> TestDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "portcullis-test-{}-{}",
            process::id(),
            NEXT.fetch_add(1, SeqCst)
        );
        let path = std::env::temp_dir().join(name);
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        TestDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Writes `contents` to `name` inside the directory and returns the file's path.
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.join(name);
        fs::write(&path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("test files kept in {}", self.path.display());
        } else {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}
