//! The process's life around its configuration: activating it once the process really
//! runs, readiness, and draining at shutdown. Readiness is decided here and only here:
//! ready once the first health-check pass is done and every public listener accepts; not
//! ready from SIGTERM or shutdown on.
//!
//! Pingora forks when it daemonizes (`-d`), and threads started before the fork do not
//! survive it. So the configuration is first compiled for validation only (no background
//! work), and compiled again here, inside the running server, with plugins allowed to
//! start their background work (key fetchers, backend connections).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
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

/// Activates the configuration at start, declares the process ready once it can serve,
/// drains and exits at shutdown.
pub struct Lifecycle {
    state: Arc<State>,
    initial: Mutex<Option<LoadedConfig>>,
}

impl Lifecycle {
    /// The lifecycle of a process that starts on `initial` (already validated).
    pub fn new(state: Arc<State>, initial: LoadedConfig) -> Self {
        Self {
            state,
            initial: Mutex::new(Some(initial)),
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
        let listeners = self.state.gateway().process.listeners.clone();
        wait_until_accepting(&listeners).await;
    }

    /// Waits until every client connection is closed (Pingora stops accepting and closes
    /// idle keep-alive connections at shutdown; busy ones close after their response),
    /// writes out the access log and exits, instead of sleeping out the whole grace period.
    async fn drain(&self) {
        let started = Instant::now();
        let connections = &self.state.metrics.downstream_connections;
        while connections.get() > 0 {
            tokio::time::sleep(DRAIN_POLL).await;
        }
        self.state.access_log.flush(LOG_FLUSH_TIMEOUT);
        log::warn!("drained in {:?}; exiting", started.elapsed());
        std::process::exit(0);
    }
}

#[async_trait]
impl BackgroundService for Lifecycle {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        self.activate();
        tokio::select! {
            () = self.serving() => self.state.mark_serving(),
            _ = shutdown.changed() => {}
        }
        let _ = shutdown.wait_for(|stopping| *stopping).await;
        self.state.mark_draining();
        self.drain().await;
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
/// everything keeps serving.
pub struct Signals {
    state: Arc<State>,
    drain_delay: Duration,
}

impl Signals {
    /// Signal handling for `state`'s process.
    pub fn new(state: Arc<State>, drain_delay: Duration) -> Self {
        Self { state, drain_delay }
    }
}

#[async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut quit), Ok(mut terminate), Ok(mut interrupt)) = (
            signal(SignalKind::quit()),
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            log::error!("cannot install signal handlers; stopping");
            return ShutdownSignal::FastShutdown;
        };
        tokio::select! {
            _ = quit.recv() => {
                log::warn!("SIGQUIT: handing the sockets over and draining");
                ShutdownSignal::GracefulUpgrade
            }
            _ = terminate.recv() => {
                self.state.mark_draining();
                log::warn!(
                    "SIGTERM: not ready; serving {:?} more, then draining",
                    self.drain_delay
                );
                tokio::time::sleep(self.drain_delay).await;
                ShutdownSignal::GracefulTerminate
            }
            _ = interrupt.recv() => ShutdownSignal::FastShutdown,
        }
    }
}
