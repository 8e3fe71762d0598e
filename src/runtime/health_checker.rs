//! The one background service that runs the active health checks of whatever pools the
//! configuration in force has, each at its interval (so a reload needs no new service).

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use super::state::State;

/// How often the checker looks for passes that are due.
const TICK: Duration = Duration::from_millis(50);

/// Runs every pool's active checks at its interval.
pub struct HealthChecker {
    state: Arc<State>,
}

impl HealthChecker {
    /// A checker for the pools of whatever configuration `state` holds.
    pub fn new(state: Arc<State>) -> Self {
        Self { state }
    }

    /// Starts every pass that is due; returns their handles.
    fn spawn_due(&self) -> Vec<tokio::task::JoinHandle<()>> {
        let gateway = self.state.gateway();
        let now_ms = elapsed_ms(self.state.started);
        let mut started = Vec::new();
        for upstream in gateway.upstreams.values() {
            // Panic mode follows health and ejections: one flag the requests read.
            upstream.refresh_panic();
            let Some(health) = &upstream.health else {
                continue;
            };
            if !health.claim(now_ms) {
                continue;
            }
            let upstream = Arc::clone(upstream);
            let clock = self.state.started;
            started.push(tokio::spawn(async move {
                upstream.run_health_check().await;
                if let Some(health) = &upstream.health {
                    health.finish(elapsed_ms(clock));
                }
            }));
        }
        started
    }
}

/// Milliseconds since `clock`, the checker's time base.
fn elapsed_ms(clock: Instant) -> u64 {
    u64::try_from(clock.elapsed().as_millis()).unwrap_or(u64::MAX)
}

#[async_trait]
impl BackgroundService for HealthChecker {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        self.state.activated().await;
        let first_pass = Instant::now();
        for pass in self.spawn_due() {
            let _ = pass.await;
        }
        log::debug!("first health-check pass done in {:?}", first_pass.elapsed());
        // Readiness waits for one full pass over every pool.
        self.state.mark_health_checked();
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(TICK) => {
                    self.spawn_due();
                }
            }
        }
    }
}
