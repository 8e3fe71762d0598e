//! The compiled configuration: everything the request path reads, built once per load.
//!
//! Loading is parse → compile → swap: [`Gateway::compile`] checks the whole configuration
//! and reports every problem, and only a fully compiled `Gateway` is ever put in service.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::{HeaderName, HeaderValue, StatusCode};
use portcullis_plugins::auth::failures::AuthFailureLimit;
use portcullis_plugins::consumers::Consumers;
use portcullis_plugins::ip_restriction::IpRules;
use portcullis_plugins::rate_limit::RedisBackend;
use portcullis_plugins::{CompiledPlugins, Level, PluginChain, PluginEnv, Retained, RetainedSet};
use prometheus::{Histogram, IntGauge};
use sha2::{Digest, Sha256};

use crate::config::{
    noted, verdict, Config, ListenerConfig, Problem, RespondConfig, RouteConfig, ServerSection,
    TracingConfig,
};
use crate::model::cache::RouteCache;
use crate::model::canary::Canary;
use crate::model::client_cert;
use crate::model::compression::CompressionPolicy;
use crate::model::header_key::HeaderKey;
use crate::model::mirror::Mirror;
use crate::model::request::RequestLimits;
use crate::model::router::{Matcher, Router};
use crate::model::tls::CertStore;
use crate::model::tracing::{Otlp, OtlpContext};
use crate::model::upstream::{compile_dns, compile_upstream, Upstream};
use crate::model::websocket::{self, WebSocketRoute};
use crate::telemetry::metrics::Metrics;

/// A route, compiled.
pub struct Route {
    /// The route's name (metric and log label).
    pub name: Arc<str>,
    /// What the route does with a request.
    pub action: RouteAction,
    /// Remove the matched prefix before proxying.
    pub strip_prefix: bool,
    /// Forward the path bytes as the client sent them (`path.raw`) instead of the
    /// canonical path.
    pub raw_path: bool,
    /// The route's plugins, global ones included.
    pub plugins: PluginChain,
    /// `portcullis_request_duration_seconds{route}`.
    pub duration: Histogram,
    /// Response compression, if any (the global policy is one, shared by the routes).
    pub compression: Option<Arc<CompressionPolicy>>,
    /// The route's edge cache, when enabled.
    pub cache: Option<RouteCache>,
    /// The whole request's time limit, retries included (`routes[].timeout`).
    pub timeout: Option<std::time::Duration>,
    /// `websocket:`: the idle time of upgraded connections, when set.
    pub websocket: Option<WebSocketRoute>,
    /// `portcullis_websocket_connections{route}`.
    pub websocket_connections: IntGauge,
    /// A sampled copy of the accepted requests to another pool, when configured.
    pub mirror: Option<Mirror>,
}

impl Route {
    /// The compression policy of a route that compresses into its cache (both enabled):
    /// each variant is stored compressed once and served as stored.
    pub fn stored_compression(&self) -> Option<&CompressionPolicy> {
        self.cache.as_ref()?;
        self.compression.as_deref()
    }
}

/// What a route does.
pub enum RouteAction {
    /// Proxy to a pool (or the canary's), or to the fallback pool when the chosen one
    /// has no available target.
    Proxy {
        /// The pool.
        upstream: Arc<Upstream>,
        /// A share of the traffic to another pool.
        canary: Option<Canary>,
        /// Used when every target of `upstream` is unavailable.
        fallback: Option<Arc<Upstream>>,
    },
    /// Answer from the gateway.
    Respond(FixedResponse),
}

/// A `respond:` answer, prepared at load.
pub struct FixedResponse {
    /// Status code.
    pub status: StatusCode,
    /// Body.
    pub body: Bytes,
    /// Headers (besides Content-Length).
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// Request id and trace propagation settings.
pub struct Tracing {
    /// Continue or start `traceparent`.
    pub traceparent: bool,
    /// The request id header name, as an insert key.
    pub request_id_header: HeaderKey,
    /// Span export (`tracing.otlp`), when configured.
    pub otlp: Option<Otlp>,
}

/// Settings that only a restart (or graceful upgrade) can change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessSettings {
    /// Everything under `server:` (threads, pid file, upgrade socket, grace periods).
    pub server: ServerSection,
    /// Public listener addresses.
    pub listeners: Vec<SocketAddr>,
    /// The listeners that terminate TLS, and whether they offer HTTP/2.
    pub tls_listeners: Vec<(SocketAddr, bool)>,
    /// Each listener's PROXY protocol flag and connection caps.
    pub listener_connections: Vec<(bool, Option<u32>, Option<u32>)>,
    /// Admin listener address.
    pub admin: Option<SocketAddr>,
    /// Access log target.
    pub access_log: String,
}

/// One loaded configuration, compiled.
pub struct Gateway {
    /// 1 for the configuration loaded at start, +1 per successful reload.
    pub version: u64,
    /// SHA-256 of the configuration file, hex.
    pub hash: String,
    /// When it was loaded.
    pub loaded_at: DateTime<Utc>,
    /// Routes in precedence order.
    pub router: Router<Arc<Route>>,
    /// Pools by name.
    pub upstreams: BTreeMap<String, Arc<Upstream>>,
    /// Name servers for hostname targets (`dns.servers`); empty means the system's.
    pub dns_servers: Vec<SocketAddr>,
    /// Request id and traceparent settings.
    pub tracing: Tracing,
    /// The bounds of a request head and the path rule.
    pub requests: RequestLimits,
    /// Bearer token for admin POSTs.
    pub admin_token: Option<String>,
    /// Who may use the admin listener.
    pub admin_allow: IpRules,
    /// Certificates of the TLS listeners, by listener address.
    pub tls: BTreeMap<SocketAddr, CertStore>,
    /// Headers only the gateway sets (the client-certificate headers of every listener
    /// and the defaults, `X-Portcullis-Mirror`): removed from every client request.
    pub reserved_headers: Box<[HeaderName]>,
    /// Settings that need a restart to change.
    pub process: ProcessSettings,
    /// Plugin state (rate-limit counters, key caches) the next configuration may take over.
    pub retained: Arc<RetainedSet>,
}

/// What a configuration is compiled against, besides its own text.
pub struct CompileContext<'a> {
    /// The version the compiled configuration gets.
    pub version: u64,
    /// Every metric.
    pub metrics: &'a Arc<Metrics>,
    /// The configuration being replaced: state it holds for what is unchanged carries over.
    pub previous: Option<&'a Gateway>,
    /// Whether plugins may start background work (false for `portcullis check`).
    pub background: bool,
}

impl<'a> CompileContext<'a> {
    /// Compiling only to validate (`portcullis check`).
    pub fn check(metrics: &'a Arc<Metrics>) -> Self {
        Self {
            version: 1,
            metrics,
            previous: None,
            background: false,
        }
    }
}

impl Gateway {
    /// Checks and compiles `config` (whose file text is `source`), reporting every problem.
    pub fn compile(
        config: &Config,
        source: &str,
        context: &CompileContext<'_>,
    ) -> Result<Self, Vec<Problem>> {
        let metrics: &Metrics = context.metrics;
        let mut problems = Vec::new();
        let retained = match context.previous {
            Some(previous) => Retained::after(Arc::clone(&previous.retained)),
            None => Retained::fresh(),
        };
        let consumers = Consumers::compile(&config.consumers).unwrap_or_else(|more| {
            problems.extend(more);
            Consumers::default()
        });
        let auth_failure_limit = config.auth_failure_limit.as_ref().and_then(|limit| {
            AuthFailureLimit::retained(limit, &retained)
                .map_err(|p| problems.push(p))
                .ok()
        });
        let mut plugin_env = PluginEnv {
            telemetry: Arc::clone(context.metrics) as _,
            retained,
            background: context.background,
            consumers: Arc::new(consumers),
            auth_failure_limit,
            redis: None,
        };
        if let Some(redis) = &config.redis {
            match RedisBackend::new(redis, &plugin_env.retained, context.background) {
                Ok(backend) => plugin_env.redis = Some(Arc::new(backend)),
                Err(problem) => problems.push(problem.under("redis")),
            }
        }
        let process = noted(compile_process(config), &mut problems);
        let otlp_context = OtlpContext {
            metrics,
            retained: &plugin_env.retained,
            background: context.background,
        };
        let tracing = noted(
            compile_tracing(&config.tracing, &otlp_context),
            &mut problems,
        );
        let requests = noted(RequestLimits::compile(&config.server), &mut problems);
        let global_plugins = CompiledPlugins::compile(&config.plugins, Level::Global, &plugin_env)
            .unwrap_or_else(|more| {
                problems.extend(more.into_iter().map(|p| p.under("plugins")));
                CompiledPlugins::default()
            });

        let admin_allow = match &config.admin {
            Some(admin) => IpRules::new("admin", &admin.allow, &[]).unwrap_or_else(|problem| {
                problems.push(problem);
                IpRules::default()
            }),
            None => IpRules::default(),
        };
        let compression = match &config.compression {
            Some(global) => noted(
                CompressionPolicy::compile(global, "compression"),
                &mut problems,
            )
            .flatten()
            .map(Arc::new),
            None => None,
        };

        let dns_servers = noted(compile_dns(&config.dns), &mut problems).unwrap_or_default();
        let mut upstreams = BTreeMap::new();
        for (name, upstream) in &config.upstreams {
            let path = format!("upstreams.{name}");
            if !is_config_name(name) {
                problems.push(Problem::new(
                    &path,
                    "names use letters, digits, '-', '_' and '.'",
                ));
            }
            let compiled = compile_upstream(name, upstream, &path, metrics, &plugin_env.retained);
            if let Some(compiled) = noted(compiled, &mut problems) {
                upstreams.insert(name.clone(), Arc::new(compiled));
            }
        }

        let shared = RouteContext {
            config,
            upstreams: &upstreams,
            metrics,
            plugin_env: &plugin_env,
            global_plugins: &global_plugins,
            compression: compression.as_ref(),
        };
        let mut routes = Vec::with_capacity(config.routes.len());
        let mut names = std::collections::HashSet::new();
        for (i, route) in config.routes.iter().enumerate() {
            let path = format!("routes[{i}]");
            if !names.insert(route.name.as_str()) {
                problems.push(Problem::new(
                    format!("{path}.name"),
                    "another route has this name",
                ));
            }
            routes.extend(noted(compile_route(route, &path, &shared), &mut problems));
        }

        let (Some((process, tls)), Some(tracing), Some(requests)) = (process, tracing, requests)
        else {
            return Err(problems);
        };
        verdict(
            Self {
                version: context.version,
                hash: source_hash(source),
                loaded_at: Utc::now(),
                router: Router::new(routes),
                upstreams,
                dns_servers,
                tracing,
                requests,
                admin_token: config.admin.as_ref().and_then(|admin| admin.token.clone()),
                admin_allow,
                reserved_headers: client_cert::reserved_headers(
                    tls.values()
                        .filter_map(|store| store.client_auth().map(|auth| &**auth)),
                ),
                tls,
                process,
                retained: plugin_env.retained.into_set(),
            },
            problems,
        )
    }
}
/// The settings bound into the running server (`server`, `listeners`, `admin.address`,
/// `access_log.target`), with the certificates of the TLS listeners.
fn compile_process(
    config: &Config,
) -> Result<(ProcessSettings, BTreeMap<SocketAddr, CertStore>), Vec<Problem>> {
    let mut problems = Vec::new();
    let listeners = noted(compile_listeners(&config.listeners), &mut problems);
    let admin = config
        .admin
        .as_ref()
        .and_then(|admin| match admin.address.parse() {
            Ok(address) => Some(address),
            Err(_) => {
                problems.push(Problem::new(
                    "admin.address",
                    format!("{:?} is not an IP:PORT address", admin.address),
                ));
                None
            }
        });
    problems.extend(crate::model::server::check(&config.server));
    if config.access_log.format != "json" {
        problems.push(Problem::new("access_log.format", "only json is supported"));
    }
    if config.access_log.target.trim().is_empty() {
        problems.push(Problem::new(
            "access_log.target",
            "use stdout, off or a file path",
        ));
    }
    let Some(listeners) = listeners else {
        return Err(problems);
    };
    let process = ProcessSettings {
        server: config.server.clone(),
        listeners: listeners.addresses,
        tls_listeners: listeners.tls,
        listener_connections: config
            .listeners
            .iter()
            .map(|l| {
                (
                    l.proxy_protocol,
                    l.max_connections,
                    l.max_connections_per_ip,
                )
            })
            .collect(),
        admin,
        access_log: config.access_log.target.clone(),
    };
    verdict((process, listeners.certificates), problems)
}

/// `listeners`, compiled: each address parsed once.
#[derive(Default)]
struct Listeners {
    addresses: Vec<SocketAddr>,
    /// The listeners that terminate TLS, and whether they offer HTTP/2.
    tls: Vec<(SocketAddr, bool)>,
    certificates: BTreeMap<SocketAddr, CertStore>,
}

fn compile_listeners(listeners: &[ListenerConfig]) -> Result<Listeners, Vec<Problem>> {
    let mut problems = Vec::new();
    if listeners.is_empty() {
        problems.push(Problem::new("listeners", "needs at least one listener"));
    }
    let mut compiled = Listeners::default();
    for (i, listener) in listeners.iter().enumerate() {
        let Ok(address) = listener.address.parse::<SocketAddr>() else {
            problems.push(Problem::new(
                format!("listeners[{i}].address"),
                format!("{:?} is not an IP:PORT address", listener.address),
            ));
            continue;
        };
        compiled.addresses.push(address);
        if let Some(tls) = &listener.tls {
            compiled.tls.push((address, tls.http2));
            let path = format!("listeners[{i}].tls");
            if let Some(store) = noted(CertStore::compile(tls, &path), &mut problems) {
                compiled.certificates.insert(address, store);
            }
        }
    }
    verdict(compiled, problems)
}

fn compile_tracing(
    config: &TracingConfig,
    context: &OtlpContext<'_>,
) -> Result<Tracing, Vec<Problem>> {
    let mut problems = Vec::new();
    let otlp = config
        .otlp
        .as_ref()
        .and_then(|otlp| noted(Otlp::compile(otlp, context), &mut problems));
    let request_id_header =
        HeaderName::from_bytes(config.request_id_header.as_bytes()).map_err(|_| {
            problems.push(Problem::new(
                "tracing.request_id_header",
                "not a valid header name",
            ))
        });
    match request_id_header {
        Ok(request_id_header) => verdict(
            Tracing {
                traceparent: config.traceparent,
                request_id_header: HeaderKey::new(request_id_header),
                otlp,
            },
            problems,
        ),
        Err(()) => Err(problems),
    }
}

/// What every route is compiled against.
struct RouteContext<'a> {
    config: &'a Config,
    upstreams: &'a BTreeMap<String, Arc<Upstream>>,
    metrics: &'a Metrics,
    plugin_env: &'a PluginEnv,
    /// The global `plugins` section, compiled once for every route.
    global_plugins: &'a CompiledPlugins,
    /// The global compression policy, shared by the routes without their own.
    compression: Option<&'a Arc<CompressionPolicy>>,
}

fn compile_route(
    route: &RouteConfig,
    path: &str,
    shared: &RouteContext<'_>,
) -> Result<(Matcher, Arc<Route>), Vec<Problem>> {
    let RouteContext {
        config,
        upstreams,
        metrics,
        plugin_env,
        global_plugins,
        compression: global_compression,
    } = *shared;
    let mut problems = Vec::new();
    if !is_config_name(&route.name) {
        problems.push(Problem::new(
            format!("{path}.name"),
            "names use letters, digits, '-', '_' and '.'",
        ));
    }
    let matcher = noted(
        Matcher::compile(&route.matcher, &format!("{path}.match")),
        &mut problems,
    );
    if route.strip_prefix && route.matcher.path_prefix.is_none() {
        problems.push(Problem::new(
            format!("{path}.strip_prefix"),
            "needs match.path_prefix",
        ));
    }
    if route.strip_prefix && route.path.raw {
        problems.push(Problem::new(
            format!("{path}.strip_prefix"),
            "cannot strip a prefix from a raw path (path.raw: true)",
        ));
    }
    let cache = route.cache.as_ref().and_then(|cache| {
        let cache_path = format!("{path}.cache");
        if route.respond.is_some() && cache.enabled {
            problems.push(Problem::new(
                &cache_path,
                "needs an upstream (respond routes are answered by the gateway)",
            ));
        }
        noted(
            RouteCache::compile(&route.name, cache, &cache_path, metrics),
            &mut problems,
        )
        .flatten()
    });
    let plugins = match CompiledPlugins::compile(&route.plugins, Level::Route, plugin_env) {
        Ok(own) => own.chain(global_plugins),
        Err(more) => {
            let route_plugins = format!("{path}.plugins");
            problems.extend(more.into_iter().map(|p| p.under(&route_plugins)));
            PluginChain::default()
        }
    };

    let compression = match &route.compression {
        Some(own) => noted(
            CompressionPolicy::compile(own, &format!("{path}.compression")),
            &mut problems,
        )
        .flatten()
        .map(Arc::new),
        None => global_compression.cloned(),
    };

    let lookup = |field: &str, name: &str, problems: &mut Vec<Problem>| {
        let found = upstreams.get(name).cloned();
        if found.is_none() && !config.upstreams.contains_key(name) {
            problems.push(Problem::new(
                format!("{path}.{field}"),
                format!("no upstream named {name:?}"),
            ));
        }
        found
    };
    let action = match (&route.upstream, &route.respond) {
        (Some(upstream), None) => {
            let upstream = lookup("upstream", upstream, &mut problems);
            let fallback = route
                .fallback_upstream
                .as_deref()
                .and_then(|name| lookup("fallback_upstream", name, &mut problems));
            let canary = route.canary.as_ref().and_then(|canary| {
                let pool = lookup("canary.upstream", &canary.upstream, &mut problems);
                noted(
                    Canary::compile(canary, pool, &format!("{path}.canary")),
                    &mut problems,
                )
            });
            upstream.map(|upstream| RouteAction::Proxy {
                upstream,
                canary,
                fallback,
            })
        }
        (None, Some(respond)) => noted(
            compile_respond(respond, &format!("{path}.respond")),
            &mut problems,
        )
        .map(RouteAction::Respond),
        _ => {
            problems.push(Problem::new(
                path,
                "set exactly one of upstream and respond",
            ));
            None
        }
    };

    let websocket = route.websocket.as_ref().and_then(|websocket| {
        noted(
            WebSocketRoute::compile(websocket, &format!("{path}.websocket")).map_err(|p| vec![p]),
            &mut problems,
        )
    });
    let mirror = route.mirror.as_ref().and_then(|mirror| {
        let pool = lookup("mirror.upstream", &mirror.upstream, &mut problems);
        let compiled = Mirror::compile(
            mirror,
            pool,
            &route.name,
            metrics,
            &format!("{path}.mirror"),
        );
        noted(compiled, &mut problems)
    });
    let timeout = route.timeout.and_then(|timeout| {
        let at = format!("{path}.timeout");
        if route.respond.is_some() {
            problems.push(Problem::new(&at, "only for routes with an upstream"));
        }
        let shortest = std::time::Duration::from_millis(1);
        let checked = timeout.within(&at, shortest, portcullis_plugins::units::LONGEST);
        checked.map_err(|problem| problems.push(problem)).ok()
    });
    let (Some(matcher), Some(action)) = (matcher, action) else {
        return Err(problems);
    };
    let compiled = Route {
        name: route.name.as_str().into(),
        action,
        strip_prefix: route.strip_prefix,
        raw_path: route.path.raw,
        plugins,
        compression,
        duration: metrics
            .request_duration
            .with_label_values(&[route.name.as_str()]),
        cache,
        timeout,
        websocket,
        websocket_connections: websocket::connections_gauge(metrics, &route.name),
        mirror,
    };
    verdict((matcher, Arc::new(compiled)), problems)
}

fn compile_respond(respond: &RespondConfig, path: &str) -> Result<FixedResponse, Vec<Problem>> {
    let mut problems = Vec::new();
    let status = match StatusCode::from_u16(respond.status) {
        Ok(status) if status.as_u16() >= 200 => Some(status),
        _ => {
            problems.push(Problem::new(format!("{path}.status"), "must be 200-999"));
            None
        }
    };
    let mut headers = Vec::new();
    for (name, value) in &respond.headers {
        match (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            (Ok(name), Ok(value)) => headers.push((name, value)),
            _ => problems.push(Problem::new(
                format!("{path}.headers.{name}"),
                "not a valid header",
            )),
        }
    }
    if !headers
        .iter()
        .any(|(name, _)| name == http::header::CONTENT_TYPE)
    {
        headers.push((
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        ));
    }
    let Some(status) = status else {
        return Err(problems);
    };
    let fixed = FixedResponse {
        status,
        body: Bytes::from(respond.body.clone()),
        headers,
    };
    verdict(fixed, problems)
}

/// Route and upstream names become metric labels and log fields: keep them plain.
fn is_config_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The configuration hash shown in /status: SHA-256 of the file's text, hex.
pub fn source_hash(source: &str) -> String {
    hex(&Sha256::digest(source.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
