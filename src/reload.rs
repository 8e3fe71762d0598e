//! Hot reload: parse → compile → swap, or keep the running configuration.

use crate::config::{self, Problem, Problems};
use crate::gateway::{CompileContext, Gateway};
use crate::state::State;

/// Re-reads the configuration file and swaps it in; returns the new version, or every
/// problem (the running configuration stays in force).
pub fn reload(state: &State) -> Result<u64, Problems> {
    let result = try_reload(state);
    let outcome = if result.is_ok() { "success" } else { "failure" };
    state
        .metrics
        .config_reloads
        .with_label_values(&[outcome])
        .inc();
    match &result {
        Ok(version) => log::warn!("configuration reloaded: version {version}"),
        Err(problems) => log::error!("configuration reload rejected:\n{problems}"),
    }
    result
}

fn try_reload(state: &State) -> Result<u64, Problems> {
    let file = state.config_path.display().to_string();
    let loaded = config::load(&state.config_path)?;
    let current = state.gateway();
    let version = current.version + 1;
    let context = CompileContext {
        version,
        metrics: &state.metrics,
        previous: Some(&current),
        background: true,
    };
    let gateway =
        Gateway::compile(&loaded.config, &loaded.source, &context).map_err(|problems| {
            Problems {
                file: file.clone(),
                problems,
            }
        })?;
    if gateway.process != current.process {
        return Err(Problems {
            file,
            problems: vec![Problem::new(
                "",
                "listeners, admin.address, server.threads and access_log.target change only with \
                 a restart or graceful upgrade (portcullis -u); nothing was reloaded",
            )],
        });
    }
    state.swap(gateway);
    Ok(version)
}

/// Reloads the configuration whenever the process receives SIGHUP.
pub struct SighupReloader {
    state: std::sync::Arc<State>,
}

impl SighupReloader {
    /// A reloader for `state`.
    pub fn new(state: std::sync::Arc<State>) -> Self {
        Self { state }
    }
}

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for SighupReloader {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(hangups) => hangups,
            Err(e) => {
                log::error!("cannot listen for SIGHUP, reload only through the admin API: {e}");
                return;
            }
        };
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                received = hangups.recv() => {
                    if received.is_none() {
                        return;
                    }
                    // Problems are logged and counted by `reload`.
                    let _ = reload(&self.state);
                }
            }
        }
    }
}
