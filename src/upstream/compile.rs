//! `upstreams.NAME` → [`Upstream`].

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU32;
use std::sync::Arc;
use std::time::Duration;

use pingora::lb::discovery::Static;
use pingora::lb::selection::{BackendIter, BackendSelection, Consistent, Random, RoundRobin};
use pingora::lb::{Backend, Backends, LoadBalancer};
use pingora::protocols::l4::socket::SocketAddr as PeerAddr;
use pingora::upstreams::peer::HttpPeer;

use super::health::{build_health_check, ActiveHealth};
use super::{Balancer, HashOn, RetryPolicy, Target, TargetIndex, Upstream};
use crate::config::schema::{LoadBalancing, UpstreamConfig};
use crate::config::Problem;
use crate::metrics::Metrics;

/// Pingora's weighted selection expands each weight unit into a slot; keep the table small.
const MAX_WEIGHT: u32 = 1000;

/// Compiles one upstream pool; `path` is its config path (`upstreams.NAME`).
pub fn compile_upstream(
    name: &str,
    config: &UpstreamConfig,
    path: &str,
    metrics: &Metrics,
) -> Result<Upstream, Vec<Problem>> {
    let mut problems = Vec::new();
    let not_yet = |problems: &mut Vec<Problem>, field: &str, issue: u32| {
        problems.push(Problem::planned(format!("{path}.{field}"), issue))
    };
    if config.outlier_detection.is_some() {
        not_yet(&mut problems, "outlier_detection", 5);
    }
    if matches!(
        config.load_balancing,
        LoadBalancing::LeastRequest | LoadBalancing::PeakEwma
    ) {
        not_yet(&mut problems, "load_balancing", 5);
    }
    let retries = match &config.retries {
        None => RetryPolicy {
            attempts: 1,
            backoff: Duration::ZERO,
        },
        Some(retries) => {
            if retries.budget_percent.is_some() {
                not_yet(&mut problems, "retries.budget_percent", 5);
            }
            for (i, reason) in retries.on.iter().enumerate() {
                match reason.as_str() {
                    "connect_failure" => {}
                    "502" | "503" | "504" => not_yet(&mut problems, &format!("retries.on[{i}]"), 5),
                    other => problems.push(Problem::new(
                        format!("{path}.retries.on[{i}]"),
                        format!("unknown retry condition {other:?}; use connect_failure, 502, 503 or 504"),
                    )),
                }
            }
            let on_connect_failure =
                retries.on.is_empty() || retries.on.iter().any(|r| r == "connect_failure");
            RetryPolicy {
                attempts: if on_connect_failure {
                    retries.attempts
                } else {
                    0
                },
                backoff: retries.backoff.map(|d| d.0).unwrap_or_default(),
            }
        }
    };

    let hash_on = match (&config.load_balancing, config.hash_on.as_deref()) {
        (LoadBalancing::ConsistentHash, None) => {
            problems.push(Problem::new(
                format!("{path}.hash_on"),
                "consistent_hash needs hash_on (client_ip, header:NAME or cookie:NAME)",
            ));
            HashOn::Nothing
        }
        (LoadBalancing::ConsistentHash, Some(key)) => match parse_hash_on(key) {
            Ok(hash_on) => hash_on,
            Err(message) => {
                problems.push(Problem::new(format!("{path}.hash_on"), message));
                HashOn::Nothing
            }
        },
        (_, Some(_)) => {
            problems.push(Problem::new(
                format!("{path}.hash_on"),
                "only used with load_balancing: consistent_hash",
            ));
            HashOn::Nothing
        }
        (_, None) => HashOn::Nothing,
    };

    if config.targets.is_empty() {
        problems.push(Problem::new(
            format!("{path}.targets"),
            "needs at least one target",
        ));
    }
    if config.max_requests == Some(0) {
        problems.push(Problem::new(
            format!("{path}.max_requests"),
            "must be greater than 0",
        ));
    }
    let peer_template = peer_template(config);
    let mut seen = BTreeSet::new();
    let mut targets = Vec::with_capacity(config.targets.len());
    let mut backends = BTreeSet::new();
    for (i, target) in config.targets.iter().enumerate() {
        let target_path = format!("{path}.targets[{i}]");
        let address: SocketAddr = match target.address.trim().parse() {
            Ok(address) => address,
            Err(_) => {
                problems.push(Problem::new(
                    format!("{target_path}.address"),
                    format!("{:?} is not an IP:PORT address", target.address),
                ));
                continue;
            }
        };
        if !seen.insert(address) {
            problems.push(Problem::new(
                format!("{target_path}.address"),
                format!("{address} is listed twice"),
            ));
        }
        if target.weight == 0 || target.weight > MAX_WEIGHT {
            problems.push(Problem::new(
                format!("{target_path}.weight"),
                format!("must be between 1 and {MAX_WEIGHT}"),
            ));
            continue;
        }
        let mut backend = Backend {
            addr: PeerAddr::Inet(address),
            weight: target.weight as usize,
            ext: Default::default(),
        };
        backend.ext.insert(TargetIndex(targets.len()));
        let mut peer = peer_template.clone();
        peer._address = PeerAddr::Inet(address);
        let label: Arc<str> = address.to_string().into();
        targets.push(Target {
            address,
            label: Arc::clone(&label),
            weight: target.weight,
            in_flight: AtomicU32::new(0),
            backend: backend.clone(),
            peer,
            duration: metrics.upstream_duration.with_label_values(&[name, &label]),
        });
        backends.insert(backend);
    }

    let health_check = match &config.health_check {
        Some(health) => {
            match build_health_check(name, health, &format!("{path}.health_check"), metrics) {
                Ok(check) => Some((check, ActiveHealth::new(health.interval.0))),
                Err(mut more) => {
                    problems.append(&mut more);
                    None
                }
            }
        }
        None => None,
    };

    if !problems.is_empty() {
        return Err(problems);
    }
    let (check, health) = match health_check {
        Some((check, health)) => (Some(check), Some(health)),
        None => (None, None),
    };
    let balancer: Box<dyn Balancer> = match config.load_balancing {
        LoadBalancing::Random => Box::new(load_balancer::<Random>(backends, check)),
        LoadBalancing::ConsistentHash => Box::new(load_balancer::<Consistent>(backends, check)),
        _ => Box::new(load_balancer::<RoundRobin>(backends, check)),
    };
    Ok(Upstream {
        name: name.into(),
        targets,
        balancer,
        hash_on,
        retries,
        max_requests: config.max_requests,
        in_flight: AtomicU32::new(0),
        in_flight_gauge: metrics.upstream_in_flight.with_label_values(&[name]),
        health,
    })
}

fn load_balancer<S>(
    backends: BTreeSet<Backend>,
    check: Option<Box<dyn pingora::lb::health_check::HealthCheck + Send + Sync>>,
) -> LoadBalancer<S>
where
    S: BackendSelection + 'static,
    S::Iter: BackendIter,
{
    let mut balancer = LoadBalancer::from_backends(Backends::new(Static::new(backends)));
    if let Some(check) = check {
        balancer.set_health_check(check);
    }
    // Static discovery resolves immediately and never fails.
    let _ = futures_now(balancer.update());
    balancer
}

/// Polls a future that is known to complete without waiting (static discovery).
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
    peer
}

fn parse_hash_on(key: &str) -> Result<HashOn, String> {
    match key.split_once(':') {
        None if key == "client_ip" => Ok(HashOn::ClientIp),
        Some(("header", name)) => http::HeaderName::from_bytes(name.as_bytes())
            .map(HashOn::Header)
            .map_err(|_| format!("{name:?} is not a valid header name")),
        Some(("cookie", name)) if !name.is_empty() => Ok(HashOn::Cookie(name.to_string())),
        None if key == "consumer" => Ok(HashOn::Consumer),
        Some(("jwt", claim)) if !claim.is_empty() => Ok(HashOn::Claim(claim.to_string())),
        _ => Err(format!(
            "{key:?} is not one of client_ip, header:NAME, cookie:NAME, consumer, jwt:CLAIM"
        )),
    }
}
