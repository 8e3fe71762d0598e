//! `upstreams.NAME` → [`Upstream`].

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU32, AtomicUsize};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use pingora::lb::selection::{BackendIter, BackendSelection, Consistent, Random, RoundRobin};
use pingora::lb::{Backend, Backends, HealthRegistry, LoadBalancer};
use pingora::upstreams::peer::HttpPeer;
use portcullis_plugins::units::{within, LONGEST};
use portcullis_plugins::{KeyUse, RequestKey, Retained};

use super::discovery::{
    parse_target_address, DiscoveredSet, Discovery, PoolMembers, TargetAddress, TargetFactory,
};
use super::health::{build_health_check, ActiveHealth};
use super::least_request::{LeastRequest, PeakEwmaCost, PowerOfTwoChoices};
use super::protocol;
use super::{Balancer, Choice, OutlierPolicy, RetryBudget, RetryPolicy, TargetState, Upstream};
use crate::config::{noted, verdict, Problem};
use crate::config::{
    DiscoveryConfig, LoadBalancing, RetriesConfig, RetryCondition, UpstreamConfig,
};
use crate::model::upstream_tls::UpstreamTls;
use crate::telemetry::metrics::Metrics;

/// Pingora's weighted selection expands each weight unit into a slot; keep the table small.
const MAX_WEIGHT: u32 = 1000;

/// Compiles one upstream pool; `path` is its config path (`upstreams.NAME`). State that
/// must survive a reload (per-target ejection, latency and in-flight state, active health,
/// the retry budget) is taken from `retained` when the previous configuration had it.
pub fn compile_upstream(
    name: &str,
    config: &UpstreamConfig,
    path: &str,
    metrics: &Metrics,
    retained: &Retained,
) -> Result<Upstream, Vec<Problem>> {
    let mut problems = Vec::new();
    let outlier = config.outlier_detection.as_ref().and_then(|outlier| {
        let compiled = OutlierPolicy::compile(outlier, &format!("{path}.outlier_detection"));
        noted(compiled, &mut problems)
    });
    let retries = match &config.retries {
        None => Some(RetryPolicy::default()),
        Some(retries) => noted(
            compile_retries(name, retries, path, retained),
            &mut problems,
        ),
    };

    let hash_on = match (&config.load_balancing, config.hash_on.as_deref()) {
        (LoadBalancing::ConsistentHash, None) => {
            problems.push(Problem::new(
                format!("{path}.hash_on"),
                format!(
                    "consistent_hash needs hash_on ({})",
                    KeyUse::Affinity.forms()
                ),
            ));
            None
        }
        (LoadBalancing::ConsistentHash, Some(key)) => {
            match RequestKey::parse(key, KeyUse::Affinity) {
                Ok(hash_on) => Some(hash_on),
                Err(message) => {
                    problems.push(Problem::new(format!("{path}.hash_on"), message));
                    None
                }
            }
        }
        (_, Some(_)) => {
            problems.push(Problem::new(
                format!("{path}.hash_on"),
                "only used with load_balancing: consistent_hash",
            ));
            None
        }
        (_, None) => None,
    };

    if config.targets.is_empty() {
        problems.push(Problem::new(
            format!("{path}.targets"),
            "needs at least one target",
        ));
    }
    problems.extend(timeout_problems(config, path));
    problems.extend(protocol::problems(config, path));
    if config.max_requests == Some(0) {
        problems.push(Problem::new(
            format!("{path}.max_requests"),
            "must be greater than 0",
        ));
    }
    if config.healthy_panic_threshold > 100 {
        problems.push(Problem::new(
            format!("{path}.healthy_panic_threshold"),
            "a percent: between 0 (off) and 100",
        ));
    }
    let mut peer = peer_template(config);
    if let Some(tls) = &config.tls {
        let compiled = UpstreamTls::compile(tls, &format!("{path}.tls"));
        if let Some(tls) = noted(compiled, &mut problems) {
            tls.apply(&mut peer);
        }
    }
    let factory = TargetFactory {
        upstream: name.into(),
        peer,
        duration: metrics.upstream_duration.clone(),
        ejected: metrics.target_ejected.clone(),
        ejections: metrics.ejections.clone(),
        healthy: metrics.target_healthy.clone(),
        next_slot: AtomicUsize::new(0),
    };
    let mut seen = BTreeSet::new();
    let mut literals = Vec::with_capacity(config.targets.len());
    let mut names = Vec::new();
    for (i, target) in config.targets.iter().enumerate() {
        let target_path = format!("{path}.targets[{i}]");
        let address = match parse_target_address(&target.address) {
            Ok(address) => address,
            Err(message) => {
                problems.push(Problem::new(format!("{target_path}.address"), message));
                continue;
            }
        };
        let listed = match &address {
            TargetAddress::Ip(ip) => ip.to_string(),
            TargetAddress::Name(name) => format!("{}:{}", name.host, name.port),
        };
        if !seen.insert(listed.clone()) {
            problems.push(Problem::new(
                format!("{target_path}.address"),
                format!("{listed} is listed twice"),
            ));
        }
        if target.weight == 0 || target.weight > MAX_WEIGHT {
            problems.push(Problem::new(
                format!("{target_path}.weight"),
                format!("must be between 1 and {MAX_WEIGHT}"),
            ));
            continue;
        }
        match address {
            TargetAddress::Ip(address) => {
                let state = retained.get_or_insert_with::<TargetState>(
                    &format!("upstream/{name}/target/{address}"),
                    TargetState::default,
                );
                literals.push(Arc::new(factory.target(
                    address,
                    target.weight,
                    state,
                    None,
                )));
            }
            TargetAddress::Name(host) => names.push((host, target.weight)),
        }
    }
    let discovery = if names.is_empty() {
        None
    } else {
        let compiled = compile_discovery(name, &config.discovery, &names, path, retained);
        noted(compiled, &mut problems)
    };
    // Health checks reach targets the way requests do (protocol, TLS).
    let pool_peer = factory.peer.clone();
    let members = PoolMembers::new(
        literals,
        names,
        discovery
            .as_ref()
            .map(|discovery| Arc::clone(&discovery.set)),
        factory,
    );

    let health_check = config.health_check.as_ref().and_then(|health| {
        let at = format!("{path}.health_check");
        let check = build_health_check(name, health, &at, metrics, &pool_peer);
        let check = noted(check, &mut problems)?;
        // The same checks of the same pool keep their targets' health across a reload
        // (keyed by address, whatever the weight).
        let key = format!(
            "upstream/{name}/health/{health:?}/{:?}/{:?}",
            config.protocol, config.tls
        );
        let registry = retained.get_or_insert_with::<HealthRegistry>(&key, || {
            let registry = HealthRegistry::with_equivalence(address_key);
            registry.set_health_check(check);
            registry
        });
        Some((registry, ActiveHealth::new(health.interval.0)))
    });

    let Some(retries) = retries else {
        return Err(problems);
    };
    if !problems.is_empty() {
        return Err(problems);
    }
    let (registry, health) = match health_check {
        Some((registry, health)) => (Some(registry), Some(health)),
        None => (None, None),
    };
    let balancer: Box<dyn Balancer> = match config.load_balancing {
        LoadBalancing::RoundRobin => Box::new(load_balancer::<RoundRobin>(members, registry)),
        LoadBalancing::Random => Box::new(load_balancer::<Random>(members, registry)),
        LoadBalancing::ConsistentHash => Box::new(load_balancer::<Consistent>(members, registry)),
        LoadBalancing::LeastRequest => Box::new(PowerOfTwoChoices::new(
            load_balancer::<Random>(members, registry),
            LeastRequest,
        )),
        LoadBalancing::PeakEwma => Box::new(PowerOfTwoChoices::new(
            load_balancer::<Random>(members, registry),
            PeakEwmaCost,
        )),
    };
    let choice = ArcSwap::from_pointee(Choice::of(&balancer.members()));
    Ok(Upstream {
        name: name.into(),
        balancer,
        choice,
        round_robin: config.load_balancing == LoadBalancing::RoundRobin,
        discovery,
        hash_on,
        retries,
        outlier,
        ejection_lock: Default::default(),
        tracks_latency: config.load_balancing == LoadBalancing::PeakEwma,
        max_requests: config.max_requests,
        in_flight: retained.get_or_insert_with::<AtomicU32>(
            &format!("upstream/{name}/in_flight"),
            AtomicU32::default,
        ),
        in_flight_gauge: metrics.upstream_in_flight.with_label_values(&[name]),
        health,
        panic_threshold: config.healthy_panic_threshold,
        panic: Default::default(),
        panic_gauge: metrics.panic_mode.with_label_values(&[name]),
        panic_entered: metrics.panic_mode_entered.with_label_values(&[name]),
    })
}

/// `upstreams.NAME.discovery` for a pool with hostname targets. What the names resolved
/// to is kept across reloads while the pool keeps the same names.
fn compile_discovery(
    name: &str,
    config: &DiscoveryConfig,
    names: &[(super::HostPort, u32)],
    path: &str,
    retained: &Retained,
) -> Result<Discovery, Vec<Problem>> {
    let mut problems = Vec::new();
    let at = |field: &str| format!("{path}.discovery.{field}");
    let shortest = Duration::from_millis(100);
    for (field, value) in [
        ("min_interval", config.min_interval),
        ("max_interval", config.max_interval),
    ] {
        if let Err(problem) = value.within(&at(field), shortest, LONGEST) {
            problems.push(problem);
        }
    }
    if config.min_interval.0 > config.max_interval.0 {
        problems.push(Problem::new(
            at("min_interval"),
            format!(
                "{} is longer than max_interval ({})",
                humantime::format_duration(config.min_interval.0),
                humantime::format_duration(config.max_interval.0)
            ),
        ));
    }
    if let Err(problem) = within(&at("max_addresses"), config.max_addresses, 1, 1024) {
        problems.push(problem);
    }
    let mut hosts: Vec<Arc<str>> = names
        .iter()
        .map(|(name, _)| Arc::clone(&name.host))
        .collect();
    hosts.sort();
    hosts.dedup();
    let key = format!("upstream/{name}/discovery/{}", hosts.join(","));
    let set = retained.get_or_insert_with::<DiscoveredSet>(&key, DiscoveredSet::default);
    // Read before the members are: a change in between only causes one more re-read.
    let applied = set.generation().into();
    let discovery = Discovery {
        set,
        applied,
        names: hosts,
        min_interval: config.min_interval.0,
        max_interval: config.max_interval.0,
        max_addresses: config.max_addresses as usize,
    };
    verdict(discovery, problems)
}

fn load_balancer<S>(members: PoolMembers, registry: Option<Arc<HealthRegistry>>) -> LoadBalancer<S>
where
    S: BackendSelection + 'static,
    S::Iter: BackendIter,
{
    let discovery = Box::new(members);
    let view = match registry {
        Some(registry) => Backends::new_with_health_registry(discovery, registry),
        None => Backends::new(discovery),
    };
    let balancer = LoadBalancer::from_backends(view);
    // The pool's discovery reads what was resolved so far: it never waits or fails.
    let _ = futures_now(balancer.update());
    balancer
}

/// Polls a future that is known to complete without waiting (the first membership read).
fn futures_now<F: std::future::Future>(future: F) -> Option<F::Output> {
    use std::task::{Context, Poll, Waker};
    let mut future = std::pin::pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => Some(output),
        Poll::Pending => None,
    }
}

fn peer_template(config: &UpstreamConfig) -> HttpPeer {
    let (tls, sni) = match &config.tls {
        Some(tls) => (true, tls.sni.clone().unwrap_or_default()),
        None => (false, String::new()),
    };
    let mut peer = HttpPeer::new("0.0.0.0:1", tls, sni);
    let timeouts = &config.timeouts;
    peer.options.connection_timeout =
        Some(timeouts.connect.map_or(Duration::from_secs(5), |d| d.0));
    peer.options.read_timeout = Some(timeouts.read.map_or(Duration::from_secs(60), |d| d.0));
    peer.options.write_timeout = Some(timeouts.write.map_or(Duration::from_secs(60), |d| d.0));
    peer.options.idle_timeout = Some(timeouts.idle.map_or(Duration::from_secs(60), |d| d.0));
    if let Some(tls) = &config.tls {
        peer.options.verify_cert = tls.verify;
        peer.options.verify_hostname = tls.verify;
    }
    protocol::apply(&mut peer, config.protocol);
    peer
}

/// `upstreams.NAME.timeouts`: connect, read and write must leave time to work; an idle
/// time of 0 keeps no connection for reuse.
fn timeout_problems(config: &UpstreamConfig, path: &str) -> Vec<Problem> {
    let timeouts = &config.timeouts;
    let working = Duration::from_millis(1);
    [
        ("connect", timeouts.connect, working),
        ("read", timeouts.read, working),
        ("write", timeouts.write, working),
        ("idle", timeouts.idle, Duration::ZERO),
    ]
    .into_iter()
    .filter_map(|(field, value, min)| {
        let at = format!("{path}.timeouts.{field}");
        value?.within(&at, min, LONGEST).err()
    })
    .collect()
}

/// Health is shared by address: a weight change keeps the target's health.
fn address_key(backend: &Backend) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    backend.addr.hash(&mut hasher);
    hasher.finish()
}

/// `upstreams.NAME.retries`: attempts, conditions, backoff and budget.
fn compile_retries(
    name: &str,
    retries: &RetriesConfig,
    path: &str,
    retained: &Retained,
) -> Result<RetryPolicy, Vec<Problem>> {
    let mut problems = Vec::new();
    let mut on_connect_failure = retries.on.is_empty();
    let mut on_status = Vec::new();
    for (i, condition) in retries.on.iter().enumerate() {
        let status = match condition {
            RetryCondition::Status(status) => Some(*status),
            RetryCondition::Named(name) if name == "connect_failure" => {
                on_connect_failure = true;
                continue;
            }
            RetryCondition::Named(name) => name.parse().ok(),
        };
        match status {
            Some(status @ 502..=504) => on_status.push(status),
            _ => problems.push(Problem::new(
                format!("{path}.retries.on[{i}]"),
                format!(
                    "unknown retry condition {condition:?}; use connect_failure, 502, 503 or 504"
                ),
            )),
        }
    }
    // Pingora tries a request at most 16 times, whatever the attempts.
    if let Err(problem) = within(&format!("{path}.retries.attempts"), retries.attempts, 0, 15) {
        problems.push(problem);
    }
    let backoff = retries.backoff.unwrap_or_default();
    let most_backoff = Duration::from_secs(60);
    if let Err(problem) = backoff.within(
        &format!("{path}.retries.backoff"),
        Duration::ZERO,
        most_backoff,
    ) {
        problems.push(problem);
    }
    let budget = match retries.budget_percent {
        None => None,
        Some(percent) if !(1..=100).contains(&percent) => {
            problems.push(Problem::new(
                format!("{path}.retries.budget_percent"),
                "must be between 1 and 100",
            ));
            None
        }
        Some(percent) => Some(retained.get_or_insert_with::<RetryBudget>(
            &format!("upstream/{name}/retry_budget/{percent}"),
            || RetryBudget::new(percent),
        )),
    };
    let policy = RetryPolicy {
        attempts: retries.attempts,
        backoff: retries.backoff.map(|d| d.0).unwrap_or_default(),
        on_connect_failure,
        on_status,
        budget,
    };
    verdict(policy, problems)
}
