//! DNS service discovery of hostname targets: the grammar of `targets[].address`, what
//! each name last resolved to (kept across reloads, so a reload never empties a pool),
//! and the `ServiceDiscovery` that hands pingora-load-balancing a pool's literal and
//! discovered targets. The resolving itself (network I/O on a schedule) is
//! `runtime/discovery.rs`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use pingora::lb::discovery::ServiceDiscovery;
use pingora::lb::Backend;
use pingora::protocols::l4::socket::SocketAddr as PeerAddr;
use pingora::upstreams::peer::HttpPeer;
use prometheus::{HistogramVec, IntCounterVec, IntGaugeVec};

use super::{Target, TargetState};
use crate::config::{verdict, DnsConfig, Problem};

/// Where a configured target listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetAddress {
    /// An IP literal: one target, no DNS.
    Ip(SocketAddr),
    /// A hostname: one target per address it resolves to.
    Name(HostPort),
}

/// A hostname and the port its targets listen on.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostPort {
    /// The name, lower-cased, without a trailing dot.
    pub host: Arc<str>,
    /// The port.
    pub port: u16,
}

/// Parses `IP:PORT`, `[IPv6]:PORT` or `HOST:PORT`; never resolves anything.
pub fn parse_target_address(text: &str) -> Result<TargetAddress, String> {
    let text = text.trim();
    if let Ok(address) = text.parse::<SocketAddr>() {
        return Ok(TargetAddress::Ip(address));
    }
    let invalid = || format!("{text:?} is not an IP:PORT or HOST:PORT address");
    let (host, port) = text.rsplit_once(':').ok_or_else(invalid)?;
    let port: u16 = port.parse().map_err(|_| invalid())?;
    if port == 0 {
        return Err(format!("{text:?}: port 0 is not a port"));
    }
    let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    let labels_valid = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if !labels_valid {
        return Err(invalid());
    }
    // `300.1.1.1:80` is a mistyped IP, not a name to look up.
    if host
        .split('.')
        .all(|label| label.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(format!("{text:?} is not a valid IP address"));
    }
    Ok(TargetAddress::Name(HostPort {
        host: host.into(),
        port,
    }))
}

/// `dns.servers`: `IP` (port 53) or `IP:PORT` each.
pub fn compile_dns(config: &DnsConfig) -> Result<Vec<SocketAddr>, Vec<Problem>> {
    let mut problems = Vec::new();
    let mut servers = Vec::with_capacity(config.servers.len());
    for (i, server) in config.servers.iter().enumerate() {
        let text = server.trim();
        let parsed = text
            .parse::<SocketAddr>()
            .or_else(|_| text.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)));
        match parsed {
            Ok(address) if address.port() != 0 => servers.push(address),
            _ => problems.push(Problem::new(
                format!("dns.servers[{i}]"),
                format!("{server:?} is not an IP or IP:PORT address"),
            )),
        }
    }
    verdict(servers, problems)
}

/// What one name resolved to.
#[derive(Debug, Clone, Default)]
pub struct NameRecord {
    /// The addresses of the last good answer (empty until one came).
    pub addresses: Vec<IpAddr>,
    /// When the last good answer came.
    pub resolved_at: Option<DateTime<Utc>>,
    /// The last resolution's error, while the name is failing.
    pub error: Option<String>,
}

/// The names of one pool and what they last resolved to, shared by every configuration
/// that has the same pool with the same names.
#[derive(Default)]
pub struct DiscoveredSet {
    resolved: Mutex<Resolved>,
    running: AtomicBool,
    /// Advanced whenever a name's addresses change.
    generation: AtomicU64,
}

#[derive(Default)]
struct Resolved {
    names: BTreeMap<Arc<str>, NameRecord>,
    /// Traffic state of each discovered address, kept while the address stays in the set.
    states: HashMap<SocketAddr, Arc<TargetState>>,
    next_due: Option<Instant>,
}

impl DiscoveredSet {
    fn resolved(&self) -> MutexGuard<'_, Resolved> {
        self.resolved.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Claims the next resolution pass if it is due at `now` and none is running.
    pub fn claim(&self, now: Instant) -> bool {
        let due = self.resolved().next_due.is_none_or(|due| now >= due);
        due && !self.running.swap(true, Ordering::Acquire)
    }

    /// Ends the claimed pass; the next is due at `next`.
    pub fn finish(&self, next: Instant) {
        self.resolved().next_due = Some(next);
        self.running.store(false, Ordering::Release);
    }

    /// The version of the addresses: it changes whenever a name's addresses do.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Records a good answer for `host`; true when the name was failing until now.
    pub fn record_answer(&self, host: &Arc<str>, addresses: Vec<IpAddr>) -> bool {
        let mut resolved = self.resolved();
        let record = resolved.names.entry(Arc::clone(host)).or_default();
        if record.addresses != addresses {
            record.addresses = addresses;
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
        record.resolved_at = Some(Utc::now());
        record.error.take().is_some()
    }

    /// Records a failed or empty answer for `host` (its last good addresses stay); true
    /// when the name was not failing until now.
    pub fn record_failure(&self, host: &Arc<str>, error: String) -> bool {
        let mut resolved = self.resolved();
        let record = resolved.names.entry(Arc::clone(host)).or_default();
        record.error.replace(error).is_none()
    }

    /// Every name's record, for `/status`.
    pub fn records(&self) -> BTreeMap<Arc<str>, NameRecord> {
        self.resolved().names.clone()
    }

    /// The last good addresses of `host`.
    pub fn addresses(&self, host: &str) -> Vec<IpAddr> {
        self.resolved()
            .names
            .get(host)
            .map(|record| record.addresses.clone())
            .unwrap_or_default()
    }

    /// The traffic state of each of `addresses`; the state of addresses no longer
    /// discovered is let go (requests still running on them hold their own reference).
    fn states_for(&self, addresses: &[SocketAddr]) -> Vec<Arc<TargetState>> {
        let mut resolved = self.resolved();
        let mut kept = HashMap::with_capacity(addresses.len());
        let states = addresses
            .iter()
            .map(|address| {
                let state = resolved.states.remove(address).unwrap_or_default();
                kept.insert(*address, Arc::clone(&state));
                state
            })
            .collect();
        resolved.states = kept;
        states
    }
}

/// A pool's hostname targets and their re-resolution schedule.
pub struct Discovery {
    /// Each distinct name of the pool.
    pub names: Vec<Arc<str>>,
    /// What they resolved to.
    pub set: Arc<DiscoveredSet>,
    /// Shortest time between resolutions (and the retry time after a failure).
    pub min_interval: Duration,
    /// Longest time between resolutions.
    pub max_interval: Duration,
    /// Most addresses taken from one answer.
    pub max_addresses: usize,
    /// The set's generation the pool's members were last read at.
    pub applied: AtomicU64,
}

impl Discovery {
    /// Whether the set changed since the pool's members were last read; if so, the
    /// caller re-reads them (and this records that it did).
    pub fn take_change(&self) -> bool {
        let generation = self.set.generation();
        self.applied.swap(generation, Ordering::AcqRel) != generation
    }

    /// When the next pass is due, given the soonest expiry of the records just read
    /// (`None` after a failure): the TTL bounded by the intervals.
    pub fn next_pass(&self, now: Instant, valid_until: Option<Instant>) -> Instant {
        let wait = valid_until.map_or(self.min_interval, |until| {
            until
                .saturating_duration_since(now)
                .clamp(self.min_interval, self.max_interval)
        });
        now + wait
    }
}

/// Builds the [`Target`]s of one pool: its peer settings and metric families.
pub(super) struct TargetFactory {
    pub(super) upstream: Arc<str>,
    pub(super) peer: HttpPeer,
    pub(super) duration: HistogramVec,
    pub(super) ejected: IntGaugeVec,
    pub(super) ejections: IntCounterVec,
    pub(super) healthy: IntGaugeVec,
    pub(super) next_slot: AtomicUsize,
}

impl TargetFactory {
    /// A target at `address`; `host` is the name it was discovered under, the TLS server
    /// name when `tls.sni` does not set one.
    pub(super) fn target(
        &self,
        address: SocketAddr,
        weight: u32,
        state: Arc<TargetState>,
        host: Option<&str>,
    ) -> Target {
        let mut peer = self.peer.clone();
        peer._address = PeerAddr::Inet(address);
        if let Some(host) = host.filter(|_| peer.is_tls() && peer.sni.is_empty()) {
            peer.sni = host.to_string();
        }
        let label: Arc<str> = address.to_string().into();
        let upstream = &*self.upstream;
        Target {
            address,
            slot: self.next_slot.fetch_add(1, Ordering::Relaxed),
            duration: self.duration.with_label_values(&[upstream, &label]),
            ejected_gauge: self.ejected.with_label_values(&[upstream, &label]),
            ejections: self.ejections.with_label_values(&[upstream, &label]),
            label,
            weight,
            state,
            backend: Backend {
                addr: PeerAddr::Inet(address),
                weight: weight as usize,
                ext: Default::default(),
            },
            peer,
        }
    }

    /// Drops the metric series of a target that left the set, so DNS churn does not
    /// grow the exposition (a request still draining on it observes into nothing).
    fn forget(&self, target: &Target) {
        let labels = [&*self.upstream, &*target.label];
        let _ = self.duration.remove_label_values(&labels);
        let _ = self.ejected.remove_label_values(&labels);
        let _ = self.ejections.remove_label_values(&labels);
        let _ = self.healthy.remove_label_values(&labels);
    }
}

/// A pool's membership as pingora-load-balancing discovers it: the literal targets, then
/// each name's last good addresses (an address already listed keeps its first weight).
pub(super) struct PoolMembers {
    pub(super) literals: Vec<Arc<Target>>,
    pub(super) names: Vec<(HostPort, u32)>,
    pub(super) set: Option<Arc<DiscoveredSet>>,
    pub(super) factory: TargetFactory,
    /// The discovered targets of the last pass, so a target that stays is the same one.
    discovered: Mutex<HashMap<SocketAddr, Arc<Target>>>,
}

impl PoolMembers {
    pub(super) fn new(
        literals: Vec<Arc<Target>>,
        names: Vec<(HostPort, u32)>,
        set: Option<Arc<DiscoveredSet>>,
        factory: TargetFactory,
    ) -> Self {
        Self {
            literals,
            names,
            set,
            factory,
            discovered: Mutex::default(),
        }
    }
}

#[async_trait]
impl ServiceDiscovery for PoolMembers {
    /// Reads the addresses resolved so far; never waits (resolution runs elsewhere).
    async fn discover(&self) -> pingora_error::Result<(BTreeSet<Backend>, HashMap<u64, bool>)> {
        let mut backends: BTreeSet<Backend> =
            self.literals.iter().map(Target::selectable).collect();
        let Some(set) = &self.set else {
            return Ok((backends, HashMap::new()));
        };
        let mut seen: HashSet<SocketAddr> = self.literals.iter().map(|t| t.address).collect();
        let mut wanted = Vec::new();
        for (name, weight) in &self.names {
            for ip in set.addresses(&name.host) {
                let address = SocketAddr::new(ip, name.port);
                if seen.insert(address) {
                    wanted.push((address, *weight, &name.host));
                }
            }
        }
        let addresses: Vec<SocketAddr> = wanted.iter().map(|(address, ..)| *address).collect();
        let states = set.states_for(&addresses);
        let mut discovered = self
            .discovered
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut next = HashMap::with_capacity(wanted.len());
        for ((address, weight, host), state) in wanted.into_iter().zip(states) {
            let target = discovered
                .remove(&address)
                .filter(|target| target.weight == weight)
                .unwrap_or_else(|| {
                    Arc::new(self.factory.target(address, weight, state, Some(host)))
                });
            backends.insert(Target::selectable(&target));
            next.insert(address, target);
        }
        for gone in std::mem::replace(&mut *discovered, next).values() {
            self.factory.forget(gone);
        }
        Ok((backends, HashMap::new()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_names_and_mistakes() {
        assert_eq!(
            parse_target_address("127.0.0.1:80"),
            Ok(TargetAddress::Ip("127.0.0.1:80".parse().expect("ip")))
        );
        assert!(matches!(
            parse_target_address("[::1]:8080"),
            Ok(TargetAddress::Ip(_))
        ));
        let Ok(TargetAddress::Name(name)) = parse_target_address("API.internal.:8080") else {
            panic!("a hostname");
        };
        assert_eq!((&*name.host, name.port), ("api.internal", 8080));
        for bad in [
            "api.internal",
            "api.internal:0",
            "api.internal:70000",
            ":80",
            "300.1.1.1:80",
            "::1:80",
            "-bad.example:80",
            "a..b:80",
            "sp ace:80",
        ] {
            assert!(
                parse_target_address(bad).is_err(),
                "{bad} should be refused"
            );
        }
    }

    #[test]
    fn the_ttl_is_bounded_by_the_intervals() {
        let discovery = Discovery {
            names: Vec::new(),
            set: Arc::default(),
            min_interval: Duration::from_secs(1),
            max_interval: Duration::from_secs(60),
            max_addresses: 64,
            applied: AtomicU64::new(0),
        };
        let now = Instant::now();
        let at = |ttl: u64| discovery.next_pass(now, Some(now + Duration::from_secs(ttl))) - now;
        assert_eq!(at(0), Duration::from_secs(1));
        assert_eq!(at(30), Duration::from_secs(30));
        assert_eq!(at(3600), Duration::from_secs(60));
        assert_eq!(discovery.next_pass(now, None) - now, Duration::from_secs(1));
    }

    #[test]
    fn a_failure_keeps_the_last_good_answer() {
        let set = DiscoveredSet::default();
        let host: Arc<str> = "api.internal".into();
        let ip: IpAddr = "127.0.0.2".parse().expect("ip");
        assert!(!set.record_answer(&host, vec![ip]));
        assert!(set.record_failure(&host, "timed out".into()));
        assert!(!set.record_failure(&host, "timed out".into()));
        assert_eq!(set.addresses("api.internal"), vec![ip]);
        assert!(set.record_answer(&host, vec![ip]));
    }
}
