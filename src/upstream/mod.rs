//! Upstream pools: targets, balancing, active health, connection settings and the
//! in-flight bulkhead.

mod balancer;
mod compile;
mod health;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pingora::lb::Backend;
use pingora::upstreams::peer::HttpPeer;
use prometheus::{Histogram, IntGauge};

pub use balancer::Balancer;
pub use compile::compile_upstream;
pub use health::{ActiveHealth, HealthChecker};

/// The index of a target in [`Upstream::targets`], stored in each `Backend`'s extensions
/// so a selected backend leads straight to its target's state.
#[derive(Debug, Clone, Copy)]
struct TargetIndex(usize);

/// One server of a pool.
pub struct Target {
    /// Where it listens.
    pub address: SocketAddr,
    /// `address` as text, the `target` label of metrics and the access log.
    pub label: Arc<str>,
    /// Relative share of traffic.
    pub weight: u32,
    /// Requests in flight to this target.
    pub in_flight: AtomicU32,
    backend: Backend,
    peer: HttpPeer,
    /// `portcullis_upstream_duration_seconds{upstream,target}`.
    pub duration: Histogram,
}

/// What `consistent_hash` hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashOn {
    /// Nothing: round robin and random ignore the key.
    Nothing,
    /// The client's IP address.
    ClientIp,
    /// The value of a request header.
    Header(http::HeaderName),
    /// The value of a cookie.
    Cookie(String),
    /// The authenticated consumer's id.
    Consumer,
    /// A claim of the verified JWT.
    Claim(String),
}

/// Retry behaviour for failed connects (nothing was sent, so any method is safe).
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Retries after the first try.
    pub attempts: u32,
    /// Pause before each retry.
    pub backoff: Duration,
}

/// A pool of targets and everything needed to send a request to one of them.
pub struct Upstream {
    /// The pool's configuration name.
    pub name: Arc<str>,
    /// The targets, in configuration order.
    pub targets: Vec<Target>,
    balancer: Box<dyn Balancer>,
    /// The balancing key.
    pub hash_on: HashOn,
    /// Connect-failure retries.
    pub retries: RetryPolicy,
    /// The bulkhead: most requests in flight, if limited.
    pub max_requests: Option<u32>,
    in_flight: AtomicU32,
    in_flight_gauge: IntGauge,
    /// Active health checking, if configured.
    pub health: Option<ActiveHealth>,
}

/// A slot in an upstream's bulkhead, released when dropped (on every path: success, error
/// or client abort, because the per-request context owning it is dropped).
pub struct UpstreamSlot {
    upstream: Arc<Upstream>,
}

impl Drop for UpstreamSlot {
    fn drop(&mut self) {
        self.upstream.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.upstream.in_flight_gauge.dec();
    }
}

/// A request's claim on one target, released when dropped.
pub struct TargetSlot {
    upstream: Arc<Upstream>,
    index: usize,
}

impl TargetSlot {
    /// The target held.
    pub fn target(&self) -> &Target {
        &self.upstream.targets[self.index]
    }

    /// The target's position in its pool.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The pool the target belongs to.
    pub fn upstream(&self) -> &Arc<Upstream> {
        &self.upstream
    }

    /// The peer to connect to (a clone of the target's precomputed peer).
    pub fn peer(&self) -> Box<HttpPeer> {
        Box::new(self.target().peer.clone())
    }
}

impl Drop for TargetSlot {
    fn drop(&mut self) {
        self.target().in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Upstream {
    /// Takes a bulkhead slot, or `None` when `max_requests` are already in flight.
    pub fn try_acquire(self: &Arc<Self>) -> Option<UpstreamSlot> {
        let previous = self.in_flight.fetch_add(1, Ordering::Relaxed);
        if self.max_requests.is_some_and(|max| previous >= max) {
            self.in_flight.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        self.in_flight_gauge.inc();
        Some(UpstreamSlot {
            upstream: Arc::clone(self),
        })
    }

    /// Requests in flight to the pool.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Chooses a healthy target for `key`, skipping the targets in `tried` (a bit set of
    /// target indexes already attempted by this request).
    pub fn select(self: &Arc<Self>, key: &[u8], tried: u64) -> Option<TargetSlot> {
        let accept = |backend: &Backend, healthy: bool| {
            healthy && target_index(backend).is_some_and(|index| tried & bit(index) == 0)
        };
        let backend = self.balancer.select(key, &accept)?;
        let index = target_index(&backend)?;
        self.targets[index]
            .in_flight
            .fetch_add(1, Ordering::Relaxed);
        Some(TargetSlot {
            upstream: Arc::clone(self),
            index,
        })
    }

    /// Whether active health checks consider the target healthy (always true without them).
    pub fn target_healthy(&self, target: &Target) -> bool {
        self.balancer.healthy(&target.backend)
    }

    /// Whether at least one target could take a request now.
    pub fn any_healthy(&self) -> bool {
        self.targets
            .iter()
            .any(|target| self.target_healthy(target))
    }
}

/// The bit of `index` in a `tried` set; pools larger than 64 targets share bits, which
/// can only make a retry skip a target it could have used.
pub fn bit(index: usize) -> u64 {
    1u64 << (index % 64)
}

fn target_index(backend: &Backend) -> Option<usize> {
    backend.ext.get::<TargetIndex>().map(|index| index.0)
}
