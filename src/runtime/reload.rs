//! Hot reload: parse → compile → swap, or keep the running configuration.

use crate::config::{self, LoadedConfig, Problem, Problems};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::model::gateway::{source_hash, CompileContext, Gateway, ProcessSettings};
use crate::runtime::state::State;

/// Re-reads the configuration file and swaps it in; returns the new version, or every
/// problem (the running configuration stays in force).
pub fn reload(state: &State) -> Result<u64, Problems> {
    if let Some(source) = state.config_source() {
        // The document lives in etcd: read it again there rather than a file.
        log::info!(
            "reload requested: reading the configuration from {} again",
            source.source
        );
        source.resync();
        return Ok(state.gateway().version);
    }
    recorded(state, try_reload(state))
}

/// Compiles configuration `text` (from `file`, the name problems are reported under) and
/// swaps it in, as a reload does: same checks, same state kept, same logs and metrics.
pub fn apply_document(state: &State, file: &str, text: &str) -> Result<u64, Problems> {
    let loaded = config::parse(text).map_err(|problems| Problems {
        file: file.to_string(),
        problems,
    });
    let result = loaded.and_then(|config| {
        try_apply(
            state,
            file,
            &LoadedConfig {
                config,
                source: text.to_string(),
            },
        )
    });
    recorded(state, result)
}

/// Counts and logs a reload's outcome; keeps a refusal for /status.
fn recorded(state: &State, result: Result<u64, Problems>) -> Result<u64, Problems> {
    let outcome = if result.is_ok() { "success" } else { "failure" };
    state
        .metrics
        .config_reloads
        .with_label_values(&[outcome])
        .inc();
    match &result {
        Ok(version) => log::info!("configuration reloaded: version {version}"),
        Err(problems) => {
            let listed: Vec<String> = problems.problems.iter().map(ToString::to_string).collect();
            log::warn!(
                "configuration reload refused, version {} stays in force: {}: {}",
                state.gateway().version,
                problems.file,
                listed.join("; ")
            );
            state.refused_reload(problems);
        }
    }
    result
}

fn try_reload(state: &State) -> Result<u64, Problems> {
    let file = state.config_path.display().to_string();
    let loaded = config::load(&state.config_path)?;
    try_apply(state, &file, &loaded)
}

fn try_apply(state: &State, file: &str, loaded: &LoadedConfig) -> Result<u64, Problems> {
    let file = file.to_string();
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
    let needs_upgrade = process_changes(&current.process, &gateway.process);
    if !needs_upgrade.is_empty() {
        return Err(Problems {
            file,
            problems: needs_upgrade
                .into_iter()
                .map(|section| {
                    Problem::new(
                        section,
                        "changes only with a graceful upgrade (portcullis -u) or a restart; \
                         nothing was reloaded",
                    )
                })
                .collect(),
        });
    }
    state.swap(gateway);
    Ok(version)
}

/// The sections whose change a reload cannot apply: they are bound into the running
/// Pingora server (sockets, threads, the access log writer).
fn process_changes(running: &ProcessSettings, new: &ProcessSettings) -> Vec<&'static str> {
    let mut changed = Vec::new();
    if running.listeners != new.listeners
        || running.tls_listeners != new.tls_listeners
        || running.listener_connections != new.listener_connections
    {
        changed.push("listeners");
    }
    if running.admin != new.admin {
        changed.push("admin.address");
    }
    if running.server != new.server {
        changed.push("server");
    }
    if running.access_log != new.access_log {
        changed.push("access_log.target");
    }
    changed
}

/// Reloads the configuration whenever the process receives SIGHUP.
pub struct SighupReloader {
    state: Arc<State>,
}

impl SighupReloader {
    /// A reloader for `state`.
    pub fn new(state: Arc<State>) -> Self {
        Self { state }
    }
}

#[async_trait]
impl BackgroundService for SighupReloader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
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

/// How often `--watch` looks at the configuration file.
const WATCH_EVERY: Duration = Duration::from_secs(1);

/// Reloads the configuration when its file changes (`portcullis --watch`). The file is
/// re-read only when its modification time or size moved, and reloaded only when its
/// text differs from the configuration in force; a rejected text is not retried until it
/// changes again.
pub struct ConfigWatcher {
    state: Arc<State>,
}

impl ConfigWatcher {
    /// A watcher for the file `state` was loaded from.
    pub fn new(state: Arc<State>) -> Self {
        Self { state }
    }
}

/// What identifies a version of the file cheaply.
fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

#[async_trait]
impl BackgroundService for ConfigWatcher {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let path = self.state.config_path.clone();
        let mut last_stamp = stamp(&path);
        let mut last_hash = self.state.gateway().hash.clone();
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(WATCH_EVERY) => {}
            }
            let now = stamp(&path);
            if now == last_stamp {
                continue;
            }
            last_stamp = now;
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            let hash = source_hash(&text);
            if hash == last_hash || hash == self.state.gateway().hash {
                continue;
            }
            last_hash = hash;
            // Problems are logged and counted by `reload`.
            let _ = reload(&self.state);
        }
    }
}
