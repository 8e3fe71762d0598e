//! The process's life around its configuration: activating it once the process really
//! runs, readiness, and draining at shutdown. Readiness is decided here and only here:
//! ready once the first health-check pass is done and every public listener accepts; not
//! ready from SIGTERM or shutdown on. What an operator reads about it is logged here too:
//! where the process listens once it serves, and one line when it is asked to stop.
//!
//! Pingora forks when it daemonizes (`-d`), and threads started before the fork do not
//! survive it. So the configuration is first compiled for validation only (no background
//! work), and compiled again here, inside the running server, with plugins allowed to
//! start their background work (key fetchers, backend connections).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch, ShutdownWatch};
use pingora::services::background::BackgroundService;

use super::state::State;
use crate::config::LoadedConfig;
use crate::model::gateway::{CompileContext, Gateway};

/// How often draining looks at the open connections.
const DRAIN_POLL: Duration = Duration::from_millis(20);
/// Longest the access log gets to write its last lines before the process exits.
const LOG_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest a stopping process waits for etcd to revoke its status key's lease.
const LEASE_RELEASE_TIMEOUT: Duration = Duration::from_secs(1);

/// Activates the configuration at start, declares the process ready once it can serve,
/// drains and exits at shutdown.
pub struct Lifecycle {
    state: Arc<State>,
    initial: Mutex<Option<LoadedConfig>>,
    pid_file: PathBuf,
}

impl Lifecycle {
    /// The lifecycle of a process that starts on `initial` (already validated) and has
    /// written its pid to `pid_file`.
    pub fn new(state: Arc<State>, initial: LoadedConfig, pid_file: PathBuf) -> Self {
        Self {
            state,
            initial: Mutex::new(Some(initial)),
            pid_file,
        }
    }

    /// Compiles the initial configuration again, this time with background work allowed,
    /// and puts it in service.
    fn activate(&self) {
        let initial = self
            .initial
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(loaded) = initial {
            let context = CompileContext {
                version: 1,
                metrics: &self.state.metrics,
                previous: None,
                background: true,
            };
            match Gateway::compile(&loaded.config, &loaded.source, &context) {
                Ok(gateway) => self.state.swap(gateway),
                // It compiled a moment ago; only a plugin's start-up can fail here.
                Err(problems) => {
                    for problem in problems {
                        log::error!("activating the configuration: {problem}");
                    }
                }
            }
        }
        self.state.mark_activated();
    }

    /// Returns once the process can serve: the first health-check pass is done and the
    /// public listeners accept (Pingora may start the admin service before the proxy
    /// service has bound its sockets).
    async fn serving(&self) {
        self.state.health_checked().await;
        let process = self.state.gateway().process.clone();
        let addresses: Vec<SocketAddr> = process
            .listeners
            .iter()
            .chain(&process.admin)
            .copied()
            .collect();
        wait_until_accepting(&addresses).await;
    }

    /// One line per listener and for the admin listener, then what is served.
    fn announce(&self) {
        let gateway = self.state.gateway();
        let process = &gateway.process;
        for address in &process.listeners {
            let protocols = match process.tls_listeners.iter().find(|(tls, _)| tls == address) {
                Some((_, true)) => "TLS, HTTP/2 and HTTP/1.1",
                Some((_, false)) => "TLS, HTTP/1.1",
                None => "HTTP/1.1 and h2c",
            };
            log::info!("listening on {address} ({protocols})");
        }
        if let Some(admin) = process.admin {
            log::info!("admin endpoints on http://{admin}/ (metrics, status, reload)");
        }
        let count = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
        log::info!(
            "portcullis {} serving {} and {} (configuration version {}, pid {})",
            env!("CARGO_PKG_VERSION"),
            count(gateway.router.iter().count(), "route"),
            count(gateway.upstreams.len(), "upstream"),
            gateway.version,
            std::process::id()
        );
    }

    /// Waits until every client connection is closed (Pingora stops accepting and closes
    /// idle keep-alive connections at shutdown; busy ones close after their response),
    /// writes out the access log and exits, instead of sleeping out the whole grace period.
    async fn drain(&self) {
        let started = Instant::now();
        if let Some(source) = self.state.config_source() {
            // No new connections from here on: the fleet stops waiting for this process.
            source.release(LEASE_RELEASE_TIMEOUT).await;
        }
        let connections = &self.state.metrics.downstream_connections;
        while connections.get() > 0 {
            tokio::time::sleep(DRAIN_POLL).await;
        }
        self.state.access_log.flush(LOG_FLUSH_TIMEOUT);
        let gateway = self.state.gateway();
        if let Some(export) = gateway
            .tracing
            .otlp
            .as_ref()
            .and_then(|o| o.export.as_ref())
        {
            // Blocks this background thread only: the spans of the last requests go out.
            export.flush(LOG_FLUSH_TIMEOUT);
        }
        release_pid_file(&self.pid_file);
        log::debug!("drained in {:?}; exiting", started.elapsed());
        std::process::exit(0);
    }
}

#[async_trait]
impl BackgroundService for Lifecycle {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        self.activate();
        tokio::select! {
            () = self.serving() => {
                self.state.mark_serving();
                self.announce();
            }
            _ = shutdown.changed() => {}
        }
        let _ = shutdown.wait_for(|stopping| *stopping).await;
        self.state.mark_draining();
        self.drain().await;
    }
}

/// Removes the pid file if it still names this process (after a graceful upgrade it names
/// the process that took over, and stays).
pub fn release_pid_file(path: &Path) {
    let ours = std::fs::read_to_string(path)
        .is_ok_and(|text| text.trim() == std::process::id().to_string());
    if ours {
        if let Err(e) = std::fs::remove_file(path) {
            log::warn!("cannot remove the pid file {}: {e}", path.display());
        }
    }
}

/// Returns once a TCP connect to every listener address succeeds (wildcard addresses are
/// tried on loopback).
async fn wait_until_accepting(listeners: &[SocketAddr]) {
    for address in listeners {
        let mut probe = *address;
        if probe.ip().is_unspecified() {
            probe.set_ip(match probe.ip() {
                IpAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
                IpAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
            });
        }
        while tokio::net::TcpStream::connect(probe).await.is_err() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Pingora's signal handling (SIGQUIT upgrade, SIGTERM graceful stop, SIGINT fast stop),
/// with SIGTERM first turning `/readyz` to 503 for `server.drain_delay_seconds` while
/// everything keeps serving, and SIGUSR2 starting a graceful upgrade from inside.
pub struct Signals {
    state: Arc<State>,
    drain_delay: Duration,
    /// The executable as it was at start: after a package upgrade replaced the file, the
    /// same path starts the new binary.
    binary: Option<PathBuf>,
}

impl Signals {
    /// Signal handling for `state`'s process.
    pub fn new(state: Arc<State>, drain_delay: Duration) -> Self {
        Self {
            state,
            drain_delay,
            binary: std::env::current_exe().ok(),
        }
    }

    /// Runs `portcullis upgrade` for this process (it starts the binary at the same path,
    /// then sends this process SIGQUIT). Started from here, the new process is a child of
    /// the service, so a service manager (systemd's cgroup, its `PIDFile=`) keeps it.
    fn upgrade(&self) {
        let Some(binary) = &self.binary else {
            log::warn!("SIGUSR2: cannot find this binary's path; no upgrade");
            return;
        };
        let arguments = match self.state.config_source() {
            Some(source) => source.run_arguments(),
            None => vec!["-c".into(), self.state.config_path.clone().into_os_string()],
        };
        let started = std::process::Command::new(binary)
            .arg("upgrade")
            .args(arguments)
            .stdin(std::process::Stdio::null())
            .spawn();
        match started {
            Ok(mut upgrade) => {
                log::info!("upgrading on SIGUSR2: {} takes over", binary.display());
                // Reaped here; its own errors go to the same log.
                std::thread::spawn(move || upgrade.wait());
            }
            Err(e) => log::warn!("SIGUSR2: cannot start {}: {e}", binary.display()),
        }
    }
}

#[async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut quit), Ok(mut terminate), Ok(mut interrupt), Ok(mut upgrade)) = (
            signal(SignalKind::quit()),
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::user_defined2()),
        ) else {
            log::error!("cannot install signal handlers; stopping");
            return ShutdownSignal::FastShutdown;
        };
        // SIGUSR2 starts an upgrade, whose SIGQUIT then ends the wait for a stop.
        let stopping = self.stopping(&mut quit, &mut terminate, &mut interrupt);
        tokio::pin!(stopping);
        loop {
            tokio::select! {
                signal = &mut stopping => return signal,
                _ = upgrade.recv() => self.upgrade(),
            }
        }
    }
}

impl Signals {
    /// Waits for the signal that stops this process, and says how.
    async fn stopping(
        &self,
        quit: &mut tokio::signal::unix::Signal,
        terminate: &mut tokio::signal::unix::Signal,
        interrupt: &mut tokio::signal::unix::Signal,
    ) -> ShutdownSignal {
        tokio::select! {
            _ = quit.recv() => {
                self.state.mark_handed_over();
                log::info!("stopping on SIGQUIT: handing the listening sockets over, then draining");
                ShutdownSignal::GracefulUpgrade
            }
            _ = terminate.recv() => {
                self.state.mark_draining();
                if self.drain_delay.is_zero() {
                    log::info!("stopping on SIGTERM: draining");
                } else {
                    log::info!(
                        "stopping on SIGTERM: not ready; serving {:?} more, then draining",
                        self.drain_delay
                    );
                }
                tokio::time::sleep(self.drain_delay).await;
                ShutdownSignal::GracefulTerminate
            }
            _ = interrupt.recv() => {
                log::info!("stopping on SIGINT: requests in flight are cut off");
                ShutdownSignal::FastShutdown
            }
        }
    }
}
