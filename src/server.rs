//! Process bootstrap: the Pingora server, its listening services and background services.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use pingora::apps::http_app::HttpServer;
use pingora::apps::HttpServerOptions;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{RunArgs, Server};
use pingora::services::background::background_service;
use pingora::services::listening::Service;

use crate::config::{self, LoadedConfig, Problem, Problems};
use crate::model::connections::ConnectionPolicy;
use crate::model::gateway::{CompileContext, Gateway};
use crate::proxy::Proxy;
use crate::runtime::admin::Admin;
use crate::runtime::connections::{raise_open_file_limit, Admission, Gate};
use crate::runtime::health_checker::HealthChecker;
use crate::runtime::lifecycle::{Lifecycle, Signals};
use crate::runtime::reload::{ConfigWatcher, SighupReloader};
use crate::runtime::sni::{self, SniResolver};
use crate::runtime::state::State;
use crate::telemetry::access_log::AccessLog;
use crate::telemetry::metrics::Metrics;

/// How long a draining process may keep finishing requests when the configuration does
/// not say (Pingora's own default is 5 minutes). The process exits as soon as its last
/// client connection closes, so this only bounds a stuck drain.
const DEFAULT_GRACE_PERIOD_SECONDS: u64 = 30;

/// `server.pid_file` when not set.
pub const DEFAULT_PID_FILE: &str = "/tmp/portcullis.pid";
/// `server.upgrade_sock` when not set.
pub const DEFAULT_UPGRADE_SOCK: &str = "/tmp/portcullis_upgrade.sock";

/// How the process was asked to run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Detach and run in the background.
    pub daemon: bool,
    /// Take the listening sockets over from a running process (graceful upgrade).
    pub upgrade: bool,
    /// Reload whenever the configuration file changes.
    pub watch: bool,
}

/// Loads and compiles the configuration at `path`, and the connection policy it sets
/// (with `context.background` false, what `portcullis check` runs).
pub fn load_gateway(
    path: &Path,
    context: &CompileContext<'_>,
) -> Result<(LoadedConfig, Gateway, ConnectionPolicy), Problems> {
    let loaded = config::load(path)?;
    let mut problems = Vec::new();
    let gateway = Gateway::compile(&loaded.config, &loaded.source, context);
    let gateway = config::noted(gateway, &mut problems);
    let connections = config::noted(ConnectionPolicy::compile(&loaded.config), &mut problems);
    match (gateway, connections) {
        (Some(gateway), Some(connections)) => Ok((loaded, gateway, connections)),
        _ => Err(Problems {
            file: path.display().to_string(),
            problems,
        }),
    }
}

/// Starts the gateway on the configuration at `path` and serves until shut down.
pub fn run(path: &Path, options: RunOptions) -> Result<(), Problems> {
    let metrics = Arc::new(Metrics::new());
    // Validated here, activated by the lifecycle service once the server runs.
    let (loaded, gateway, connections) = load_gateway(path, &CompileContext::check(&metrics))?;
    let connections = Arc::new(connections);
    raise_open_file_limit(&connections);
    let config = loaded.config.clone();
    let access_log = AccessLog::new(
        &config.access_log.target,
        metrics.access_log_dropped.clone(),
    );
    let config_path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let admission = Arc::new(Admission::new(
        Arc::clone(&connections),
        metrics.connections_refused.clone(),
    ));
    let state = Arc::new(State::new(
        gateway,
        config_path,
        metrics,
        access_log.clone(),
    ));

    let mut server = Server::new_with_opt_and_conf(
        Opt {
            upgrade: options.upgrade,
            daemon: options.daemon,
            ..Opt::default()
        },
        server_conf(&config),
    );
    server.bootstrap();
    if !options.daemon {
        // Pingora writes the pid file only when it daemonizes; `portcullis upgrade` and
        // service managers find a foreground process through it too.
        let pid_file = &server.configuration.pid_file;
        if let Err(e) = std::fs::write(pid_file, format!("{}\n", std::process::id())) {
            log::warn!("cannot write the pid file {pid_file}: {e}");
        }
    }

    let mut proxy = pingora::proxy::http_proxy(
        &server.configuration,
        Proxy::new(Arc::clone(&state), Arc::clone(&connections)),
    );
    let mut server_options = HttpServerOptions::default();
    server_options.h2c = true;
    // With keep-alive off an idle HTTP/2 connection still needs a bound.
    server_options.h2_idle_timeout = connections
        .keepalive_timeout
        .or(Some(connections.request_header_timeout));
    proxy.server_options = Some(server_options);

    let mut proxy_service = Service::new(
        "portcullis proxy".to_string(),
        Gate::new(proxy, Arc::clone(&admission)),
    );
    proxy_service.endpoints().set_pre_tls_callback(admission);
    let process = state.gateway().process.clone();
    for address in &process.listeners {
        match process.tls_listeners.iter().find(|(tls, _)| tls == address) {
            Some((_, http2)) => {
                let resolver = SniResolver::new(Arc::clone(&state), *address);
                let settings = sni::settings(resolver, *http2).map_err(|e| Problems {
                    file: path.display().to_string(),
                    problems: vec![Problem::new("listeners", format!("TLS on {address}: {e}"))],
                })?;
                proxy_service.add_tls_with_settings(&address.to_string(), None, settings);
            }
            None => proxy_service.add_tcp(&address.to_string()),
        }
    }
    server.add_service(proxy_service);

    if let Some(admin) = &config.admin {
        let mut admin_service = Service::new(
            "portcullis admin".to_string(),
            HttpServer::new_app(Admin::new(Arc::clone(&state))),
        );
        admin_service.add_tcp(admin.address.trim());
        server.add_service(admin_service);
    }
    server.add_service(background_service(
        "health checks",
        HealthChecker::new(Arc::clone(&state)),
    ));
    server.add_service(background_service("access log", access_log.writer()));
    server.add_service(background_service(
        "reload on SIGHUP",
        SighupReloader::new(Arc::clone(&state)),
    ));
    if options.watch {
        server.add_service(background_service(
            "reload on file change",
            ConfigWatcher::new(Arc::clone(&state)),
        ));
    }
    let signals = Signals::new(
        Arc::clone(&state),
        Duration::from_secs(config.server.drain_delay_seconds),
    );
    server.add_service(background_service(
        "lifecycle",
        Lifecycle::new(state, loaded),
    ));

    log::info!("portcullis {} starting", env!("CARGO_PKG_VERSION"));
    server.run(RunArgs {
        shutdown_signal: Box::new(signals),
    });
    Ok(())
}

/// Pingora's settings for `config` (`server:`), with Portcullis's defaults.
pub fn server_conf(config: &config::Config) -> ServerConf {
    let server = &config.server;
    let defaults = ServerConf::default();
    ServerConf {
        threads: server.threads.unwrap_or(defaults.threads),
        pid_file: server
            .pid_file
            .clone()
            .unwrap_or_else(|| DEFAULT_PID_FILE.to_string()),
        upgrade_sock: server
            .upgrade_sock
            .clone()
            .unwrap_or_else(|| DEFAULT_UPGRADE_SOCK.to_string()),
        error_log: server.error_log.clone(),
        work_stealing: server.work_stealing.unwrap_or(defaults.work_stealing),
        grace_period_seconds: server
            .grace_period_seconds
            .or(Some(DEFAULT_GRACE_PERIOD_SECONDS)),
        graceful_shutdown_timeout_seconds: server
            .graceful_shutdown_timeout_seconds
            .or(defaults.graceful_shutdown_timeout_seconds),
        ..defaults
    }
}
