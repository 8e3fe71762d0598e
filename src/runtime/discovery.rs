//! The background service that resolves hostname targets: each pool's names when their
//! records expire (bounded by `discovery.min_interval`/`max_interval`), through the
//! name servers of `dns.servers` or `/etc/resolv.conf`. A pool re-reads its members
//! (pingora-load-balancing's `update`) whenever what its names resolve to changed,
//! including after a reload built it from an older read.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use hickory_resolver::config::{LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::{Resolver, TokioResolver};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use super::state::State;
use crate::model::upstream::Upstream;
use crate::telemetry::metrics::Metrics;

/// How often the service looks for passes that are due and changes to apply.
const TICK: Duration = Duration::from_millis(100);

/// How long one query may take before it counts as failed.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);

/// Resolves every pool's hostname targets on their schedule.
pub struct TargetDiscovery {
    state: Arc<State>,
    /// The resolver and the `dns.servers` it was built for (rebuilt when they change).
    resolver: Mutex<Option<(Vec<SocketAddr>, Arc<TokioResolver>)>>,
}

impl TargetDiscovery {
    /// A service for the pools of whatever configuration `state` holds.
    pub fn new(state: Arc<State>) -> Self {
        Self {
            state,
            resolver: Mutex::new(None),
        }
    }

    /// The resolver for `servers`, built on first use and when the servers change.
    fn resolver(&self, servers: &[SocketAddr]) -> Option<Arc<TokioResolver>> {
        let mut current = self.resolver.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((built_for, resolver)) = current.as_ref() {
            if built_for == servers {
                return Some(Arc::clone(resolver));
            }
        }
        match build_resolver(servers) {
            Ok(resolver) => {
                let resolver = Arc::new(resolver);
                *current = Some((servers.to_vec(), Arc::clone(&resolver)));
                Some(resolver)
            }
            Err(e) => {
                log::error!("cannot build the DNS resolver: {e}");
                None
            }
        }
    }

    /// Applies resolved changes to the pools and starts every pass that is due.
    async fn tick(&self) {
        let gateway = self.state.gateway();
        let now = Instant::now();
        let mut resolver = None;
        for upstream in gateway.upstreams.values() {
            let Some(discovery) = &upstream.discovery else {
                continue;
            };
            if discovery.take_change() {
                apply(upstream, &self.state.metrics).await;
            }
            if !discovery.set.claim(now) {
                continue;
            }
            if resolver.is_none() {
                resolver = self.resolver(&gateway.dns_servers);
            }
            let upstream = Arc::clone(upstream);
            let metrics = Arc::clone(&self.state.metrics);
            let resolver = resolver.clone();
            tokio::spawn(async move { resolve_pool(&upstream, resolver, &metrics).await });
        }
    }
}

/// Re-reads `upstream`'s members from what its names resolved to.
async fn apply(upstream: &Upstream, metrics: &Metrics) {
    if let Err(e) = upstream.refresh_members().await {
        log::warn!("upstream {}: cannot update the targets: {e}", upstream.name);
    }
    let discovered = upstream.discovery.as_ref().map_or(0, |discovery| {
        discovery
            .names
            .iter()
            .map(|name| discovery.set.addresses(name).len())
            .sum::<usize>()
    });
    metrics
        .discovered_targets
        .with_label_values(&[&upstream.name])
        .set(i64::try_from(discovered).unwrap_or(i64::MAX));
}

/// One pass over a pool's names. A failed or empty answer keeps the name's last good
/// addresses, counts in `portcullis_discovery_errors_total` and logs one warning until
/// the name resolves again.
async fn resolve_pool(
    upstream: &Upstream,
    resolver: Option<Arc<TokioResolver>>,
    metrics: &Metrics,
) {
    let Some(discovery) = &upstream.discovery else {
        return;
    };
    let mut valid_until: Option<Instant> = None;
    let mut failed = false;
    for host in &discovery.names {
        let answer = match &resolver {
            Some(resolver) => lookup(resolver, host).await,
            None => Err("no DNS resolver (see the error logged at start)".to_string()),
        };
        match answer {
            Ok((mut addresses, until)) => {
                if addresses.len() > discovery.max_addresses {
                    if discovery.set.addresses(host).len() != discovery.max_addresses {
                        log::warn!(
                            "upstream {}: {host} resolves to {} addresses; using the first {} (discovery.max_addresses)",
                            upstream.name,
                            addresses.len(),
                            discovery.max_addresses
                        );
                    }
                    addresses.truncate(discovery.max_addresses);
                }
                valid_until = Some(valid_until.map_or(until, |soonest| soonest.min(until)));
                if discovery.set.record_answer(host, addresses) {
                    log::info!("upstream {}: {host} resolves again", upstream.name);
                }
            }
            Err(error) => {
                failed = true;
                metrics
                    .discovery_errors
                    .with_label_values(&[&upstream.name])
                    .inc();
                let kept = discovery.set.addresses(host).len();
                if discovery.set.record_failure(host, error.clone()) {
                    log::warn!(
                        "upstream {}: cannot resolve {host}: {error}; keeping its last good {kept} address(es), retrying every {}",
                        upstream.name,
                        humantime::format_duration(discovery.min_interval)
                    );
                }
            }
        }
    }
    let now = Instant::now();
    let next = discovery.next_pass(now, if failed { None } else { valid_until });
    discovery.set.finish(next);
}

/// The sorted, distinct A and AAAA addresses of `host`, and when the records expire.
async fn lookup(resolver: &TokioResolver, host: &str) -> Result<(Vec<IpAddr>, Instant), String> {
    let answer = resolver.lookup_ip(host).await.map_err(|e| e.to_string())?;
    let mut addresses: Vec<IpAddr> = answer.iter().collect();
    addresses.sort();
    addresses.dedup();
    if addresses.is_empty() {
        return Err("the answer has no A or AAAA record".into());
    }
    Ok((addresses, answer.valid_until()))
}

/// A resolver for `servers` (UDP, then TCP for truncated answers), or the system's
/// configuration when there are none. It caches nothing: the schedule follows the TTLs.
fn build_resolver(servers: &[SocketAddr]) -> Result<TokioResolver, String> {
    let mut builder = if servers.is_empty() {
        Resolver::builder_tokio().map_err(|e| format!("reading /etc/resolv.conf: {e}"))?
    } else {
        let mut config = ResolverConfig::new();
        for server in servers {
            config.add_name_server(NameServerConfig::new(*server, Protocol::Udp));
            config.add_name_server(NameServerConfig::new(*server, Protocol::Tcp));
        }
        Resolver::builder_with_config(config, TokioConnectionProvider::default())
    };
    let options = builder.options_mut();
    options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    options.cache_size = 0;
    options.timeout = QUERY_TIMEOUT;
    options.attempts = 1;
    if !servers.is_empty() {
        // Explicit servers are the whole truth (split-horizon DNS, tests).
        options.use_hosts_file = ResolveHosts::Never;
    }
    Ok(builder.build())
}

#[async_trait]
impl BackgroundService for TargetDiscovery {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        self.state.activated().await;
        loop {
            self.tick().await;
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(TICK) => {}
            }
        }
    }
}
