//! Process bootstrap: the Pingora server, its listening services and background services.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pingora::apps::http_app::HttpServer;
use pingora::apps::HttpServerOptions;
use pingora::listeners::ListenerConfig;
use pingora::protocols::l4::stream::L4BufferSettings;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{RunArgs, Server};
use pingora::services::background::background_service;
use pingora::services::listening::Service;

use crate::config::{self, LoadedConfig, Problem, Problems};
use crate::model::connections::ConnectionPolicy;
use crate::model::gateway::{CompileContext, Gateway, ProcessSettings};
use crate::proxy::Proxy;
use crate::runtime::admin::Admin;
use crate::runtime::config_source::etcd::EtcdWatcher;
use crate::runtime::config_source::{Document, SourceStatus};
use crate::runtime::connections::{raise_open_file_limit, Admission, Gate};
use crate::runtime::discovery::TargetDiscovery;
use crate::runtime::health_checker::HealthChecker;
use crate::runtime::lifecycle::{self, Lifecycle, Signals};
use crate::runtime::reload::{ConfigWatcher, SighupReloader};
use crate::runtime::sni::{self, SniResolver};
use crate::runtime::state::State;
use crate::telemetry::access_log::AccessLog;
use crate::telemetry::metrics::Metrics;

/// How long a draining process may keep finishing requests when the configuration does
/// not say (Pingora's own default is 5 minutes). The process exits as soon as its last
/// client connection closes, so this only bounds a stuck drain.
const DEFAULT_GRACE_PERIOD_SECONDS: u64 = 30;

/// `server.bind_retry` when not set: long enough for a process that is stopping to let
/// go of its port, short enough that a port taken for good is reported at once.
const DEFAULT_BIND_RETRY: Duration = Duration::from_secs(5);
/// Pause between two tries to bind an address in use.
const BIND_RETRY_STEP: Duration = Duration::from_millis(100);

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
    compile_loaded(&path.display().to_string(), loaded, context)
}

/// Compiles a configuration read already; `file` names it in problems.
pub fn compile_loaded(
    file: &str,
    loaded: LoadedConfig,
    context: &CompileContext<'_>,
) -> Result<(LoadedConfig, Gateway, ConnectionPolicy), Problems> {
    let mut problems = Vec::new();
    let gateway = Gateway::compile(&loaded.config, &loaded.source, context);
    let gateway = config::noted(gateway, &mut problems);
    let connections = config::noted(ConnectionPolicy::compile(&loaded.config), &mut problems);
    match (gateway, connections) {
        (Some(gateway), Some(connections)) => Ok((loaded, gateway, connections)),
        _ => Err(Problems {
            file: file.to_string(),
            problems,
        }),
    }
}

/// Starts the gateway on the configuration at `path` and serves until shut down.
/// Plaintext listeners read without an L4 buffer: the HTTP/1 session reads the header into
/// its own buffer and bodies into theirs, so Pingora's default 64 KiB read buffer only added
/// a copy — and 64 KiB of heap to every idle keep-alive connection
/// (docs/performance-attribution.md, K1).
const PLAIN_LISTENER_BUFFERS: L4BufferSettings = L4BufferSettings {
    read: Some(0),
    write: None,
};

/// TLS listeners keep a read buffer of one TLS record (16 KiB of plaintext plus the record
/// overhead), so OpenSSL reads a record in one system call instead of header then body.
const TLS_LISTENER_BUFFERS: L4BufferSettings = L4BufferSettings {
    read: Some(16 * 1024 + 325),
    write: None,
};

pub fn run(path: &Path, options: RunOptions) -> Result<(), Problems> {
    let loaded = config::load(path)?;
    let config_path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    serve(
        &path.display().to_string(),
        loaded,
        config_path,
        options,
        None,
    )
}

/// Starts the gateway on `document`, read from the etcd source of `status` (or from its
/// cache), and keeps it on the latest revision until shut down.
pub fn run_from_source(
    status: Arc<SourceStatus>,
    document: &Document,
    options: RunOptions,
) -> Result<(), Problems> {
    let file = format!(
        "{} (revision {})",
        status.source.config_key(),
        document.revision
    );
    let config = config::parse(&document.text).map_err(|problems| Problems {
        file: file.clone(),
        problems,
    })?;
    let loaded = LoadedConfig {
        config,
        source: document.text.clone(),
    };
    // SIGHUP re-reads etcd; the path only names where the configuration came from.
    let config_path = status
        .bootstrap
        .config_source
        .cache_file
        .as_ref()
        .map_or_else(|| PathBuf::from(status.source.config_key()), PathBuf::from);
    serve(&file, loaded, config_path, options, Some(status))
}

fn serve(
    file: &str,
    loaded: LoadedConfig,
    config_path: PathBuf,
    options: RunOptions,
    source: Option<Arc<SourceStatus>>,
) -> Result<(), Problems> {
    let metrics = Arc::new(Metrics::new());
    // Validated here, activated by the lifecycle service once the server runs.
    let (loaded, gateway, connections) =
        compile_loaded(file, loaded, &CompileContext::check(&metrics))?;
    let connections = Arc::new(connections);
    raise_open_file_limit(&connections);
    let config = loaded.config.clone();
    let access_log = AccessLog::new(
        &config.access_log.target,
        metrics.access_log_dropped.clone(),
    );
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

    let fail = |problem| Problems {
        file: file.to_string(),
        problems: vec![problem],
    };
    let conf = server_conf(&config);
    let pid_file = PathBuf::from(&conf.pid_file);
    check_pid_file(&pid_file).map_err(fail)?;
    if !options.upgrade {
        // A process taking over receives its sockets from the old one instead of binding.
        let retry = config.server.bind_retry.map_or(DEFAULT_BIND_RETRY, |d| d.0);
        check_bindable(&state.gateway().process, retry).map_err(fail)?;
    }

    let mut server = Server::new_with_opt_and_conf(
        Opt {
            upgrade: options.upgrade,
            daemon: options.daemon,
            ..Opt::default()
        },
        conf,
    );
    server.bootstrap();
    if !options.daemon {
        // Pingora writes the pid file only when it daemonizes; `portcullis upgrade` and
        // service managers find a foreground process through it too.
        std::fs::write(&pid_file, format!("{}\n", std::process::id())).map_err(|e| {
            fail(Problem::new(
                "server.pid_file",
                format!("cannot write the pid file {}: {e}", pid_file.display()),
            ))
        })?;
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
    // The PROXY header, the ClientHello and the rest of the TLS handshake, all within the
    // head deadline of the connection (Pingora's default is 60 s).
    proxy_service
        .endpoints()
        .set_handshake_timeout(connections.request_header_timeout);
    let process = state.gateway().process.clone();
    for address in &process.listeners {
        match process.tls_listeners.iter().find(|(tls, _)| tls == address) {
            Some((_, http2)) => {
                let resolver = SniResolver::new(Arc::clone(&state), *address);
                let settings = sni::settings(resolver, *http2).map_err(|e| Problems {
                    file: file.to_string(),
                    problems: vec![Problem::new("listeners", format!("TLS on {address}: {e}"))],
                })?;
                proxy_service.add_listener(
                    ListenerConfig::tcp(address.to_string())
                        .tls(settings)
                        .l4_buffer(TLS_LISTENER_BUFFERS),
                );
            }
            None => proxy_service.add_listener(
                ListenerConfig::tcp(address.to_string()).l4_buffer(PLAIN_LISTENER_BUFFERS),
            ),
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
    server.add_service(background_service(
        "DNS discovery",
        TargetDiscovery::new(Arc::clone(&state)),
    ));
    server.add_service(background_service("access log", access_log.writer()));
    server.add_service(background_service(
        "reload on SIGHUP",
        SighupReloader::new(Arc::clone(&state)),
    ));
    if let Some(source) = source {
        state.set_config_source(Arc::clone(&source));
        server.add_service(background_service(
            "configuration from etcd",
            EtcdWatcher::new(Arc::clone(&state), source),
        ));
    }
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
        Lifecycle::new(state, loaded, pid_file.clone()),
    ));

    log::debug!("portcullis {} starting", env!("CARGO_PKG_VERSION"));
    server.run(RunArgs {
        shutdown_signal: Box::new(signals),
    });
    // Only a fast shutdown (SIGINT) gets here; a drained process exits from the lifecycle.
    lifecycle::release_pid_file(&pid_file);
    Ok(())
}

/// Fails when the pid file cannot be created where `server.pid_file` says (a directory
/// that does not exist, no permission), before anything starts; its content is left as
/// it is (during an upgrade it names the process being replaced).
fn check_pid_file(path: &Path) -> Result<(), Problem> {
    let existed = path.exists();
    let opened = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path);
    if let Err(e) = opened {
        return Err(Problem::new(
            "server.pid_file",
            format!("cannot write the pid file {}: {e}", path.display()),
        ));
    }
    if !existed {
        // Daemonizing moves an existing pid file aside; leave nothing to move.
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

/// Binds every listener and the admin address once and lets go, so an address that
/// cannot be used is reported and the process exits, instead of Pingora retrying it in
/// the background while the rest of the server runs. An address in use is tried again
/// until `retry` has passed since the first try.
fn check_bindable(process: &ProcessSettings, retry: Duration) -> Result<(), Problem> {
    let deadline = Instant::now() + retry;
    let addresses = process
        .listeners
        .iter()
        .enumerate()
        .map(|(i, address)| (format!("listeners[{i}].address"), *address))
        .chain(
            process
                .admin
                .map(|admin| ("admin.address".to_string(), admin)),
        );
    for (field, address) in addresses {
        bind_once(address, deadline, retry).map_err(|message| Problem::new(field, message))?;
    }
    Ok(())
}

fn bind_once(address: SocketAddr, deadline: Instant, retry: Duration) -> Result<(), String> {
    let mut warned = false;
    loop {
        match std::net::TcpListener::bind(address) {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                if !warned {
                    log::debug!("{address} is in use; trying again for up to {retry:?}");
                    warned = true;
                }
                std::thread::sleep(BIND_RETRY_STEP);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                return Err(format!(
                    "cannot listen on {address}: {e} (still in use after {retry:?})"
                ));
            }
            Err(e) => return Err(format!("cannot listen on {address}: {e}")),
        }
    }
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
