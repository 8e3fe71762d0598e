//! Upstream pools: targets, balancing, active health, outlier ejection, retries,
//! connection settings and the in-flight bulkhead.

mod balancer;
mod compile;
mod discovery;
mod grpc_health;
mod health;
mod least_request;
mod outlier;
mod peak_ewma;
mod protocol;
mod retry_budget;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use pingora::lb::Backend;
use pingora::upstreams::peer::HttpPeer;
use portcullis_plugins::RequestKey;
use prometheus::{Histogram, IntCounter, IntGauge};

pub use balancer::Balancer;
pub use compile::compile_upstream;
pub use discovery::{
    compile_dns, parse_target_address, DiscoveredSet, Discovery, HostPort, NameRecord,
    TargetAddress,
};
pub use health::ActiveHealth;
pub use outlier::{Availability, Outcome, OutlierPolicy, OutlierState};
pub use peak_ewma::PeakEwma;
pub use retry_budget::RetryBudget;

use outlier::{PoolView, Transition};

/// One server of a pool: a configured IP literal, or one address a hostname resolved to.
/// Each `Backend` the balancer holds carries its `Arc<Target>` in its extensions, so a
/// selected backend leads straight to its target.
pub struct Target {
    /// Where it listens.
    pub address: SocketAddr,
    /// A number unique within the pool's life, for a request's set of tried targets.
    slot: usize,
    /// `address` as text, the `target` label of metrics and the access log.
    pub label: Arc<str>,
    /// Relative share of traffic.
    pub weight: u32,
    /// In-flight count, latency estimate and ejection state; shared with the previous
    /// configuration's target of the same pool and address, so a reload keeps them.
    pub state: Arc<TargetState>,
    backend: Backend,
    peer: HttpPeer,
    /// `portcullis_upstream_duration_seconds{upstream,target}`.
    pub duration: Histogram,
    /// `portcullis_upstream_target_ejected{upstream,target}`.
    ejected_gauge: IntGauge,
    /// `portcullis_upstream_ejections_total{upstream,target}`.
    ejections: IntCounter,
}

/// What the gateway has learnt about a target from the traffic it sent it.
#[derive(Debug, Default)]
pub struct TargetState {
    /// Requests in flight to the target.
    pub in_flight: AtomicU32,
    /// Response-time estimate, for `peak_ewma`.
    pub latency: PeakEwma,
    /// Passive health, for outlier ejection.
    pub outlier: OutlierState,
}

impl Target {
    /// The backend the balancer selects, carrying this target.
    fn selectable(target: &Arc<Self>) -> Backend {
        let mut backend = target.backend.clone();
        backend.ext.insert(Arc::clone(target));
        backend
    }
}

/// Milliseconds on a process-wide monotonic clock.
pub fn clock_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// When and how a failed attempt is retried.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Retries after the first try.
    pub attempts: u32,
    /// Pause before the first retry (doubling, jittered).
    pub backoff: Duration,
    /// Retry refused or timed-out connects (nothing was sent, so any method is safe).
    pub on_connect_failure: bool,
    /// Statuses whose answer is retried (idempotent requests only).
    pub on_status: Vec<u16>,
    /// Caps retries to a share of the requests; `None` leaves only `attempts`.
    pub budget: Option<Arc<RetryBudget>>,
}

/// Without `retries`: one retry of a failed connect, on another target.
impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 1,
            backoff: Duration::ZERO,
            on_connect_failure: true,
            on_status: Vec::new(),
            budget: None,
        }
    }
}

impl RetryPolicy {
    /// Whether the budget allows one more retry (and spends it).
    pub fn budget_allows(&self) -> bool {
        self.budget
            .as_ref()
            .is_none_or(|budget| budget.try_withdraw())
    }
}

/// A pool of targets and everything needed to send a request to one of them.
pub struct Upstream {
    /// The pool's configuration name.
    pub name: Arc<str>,
    /// The pool's members (literal and discovered targets), health and selection.
    balancer: Box<dyn Balancer>,
    /// The members as an array, replaced whenever the membership changes: a one-target
    /// pool, and round robin, choose from it without the balancer.
    choice: ArcSwap<Choice>,
    /// `load_balancing: round_robin`.
    round_robin: bool,
    /// DNS discovery of hostname targets, when the pool has any.
    pub discovery: Option<Discovery>,
    /// The balancing key.
    pub hash_on: Option<RequestKey>,
    /// Retries.
    pub retries: RetryPolicy,
    /// Passive outlier ejection, if configured.
    pub outlier: Option<OutlierPolicy>,
    /// Held while deciding an ejection, so `max_ejection_percent` holds.
    ejection_lock: Mutex<()>,
    /// The balancer reads the targets' latency (`peak_ewma`).
    tracks_latency: bool,
    /// The bulkhead: most requests in flight, if limited.
    pub max_requests: Option<u32>,
    /// Requests in flight to the pool; shared with the previous configuration's pool of
    /// the same name, so `max_requests` counts requests still running on it.
    in_flight: Arc<AtomicU32>,
    in_flight_gauge: IntGauge,
    /// Active health checking, if configured.
    pub health: Option<ActiveHealth>,
    /// Panic mode: below this percent of healthy targets, balance across all of them.
    pub panic_threshold: u32,
    panic: AtomicBool,
    panic_gauge: IntGauge,
    panic_entered: IntCounter,
}

/// The pool's members in the balancer's order (by address), for the choices that need
/// no `LoadBalancer::select` (which builds a `HashSet`, a boxed iterator and clones of
/// the chosen `Backend` on every call).
struct Choice {
    targets: Box<[Arc<Target>]>,
    /// Round robin: each target's index repeated by its weight, as pingora's `Weighted`
    /// lays them out.
    weighted: Box<[u16]>,
    /// Round robin's counter, restarted with each membership as pingora's is.
    next: AtomicUsize,
}

/// Bound on the targets visited per round-robin choice (the balancer's bound).
const MAX_ITERATIONS: usize = 256;

impl Choice {
    fn of(members: &BTreeSet<Backend>) -> Self {
        let targets: Box<[Arc<Target>]> = members.iter().filter_map(target_of).cloned().collect();
        // Pingora's `Weighted` holds at most 2^16 backends; a larger pool (not
        // configurable: 1024 addresses per name at most) keeps the balancer.
        let weighted = if targets.len() <= usize::from(u16::MAX) {
            (0u16..)
                .zip(targets.iter())
                .flat_map(|(index, target)| std::iter::repeat_n(index, target.weight as usize))
                .collect()
        } else {
            Box::default()
        };
        Self {
            targets,
            weighted,
            next: AtomicUsize::new(0),
        }
    }

    /// Pingora's weighted round robin: the first candidate from the weighted slots, the
    /// next ones from the targets, each step advancing the shared counter.
    fn round_robin(&self, accept: impl Fn(&Arc<Target>) -> bool) -> Option<&Arc<Target>> {
        if self.weighted.is_empty() {
            return None;
        }
        let first = self.next.fetch_add(1, Ordering::Relaxed) % self.weighted.len();
        let mut candidate = &self.targets[usize::from(self.weighted[first])];
        for _ in 0..MAX_ITERATIONS {
            if accept(candidate) {
                return Some(candidate);
            }
            let next = self.next.fetch_add(1, Ordering::Relaxed) % self.targets.len();
            candidate = &self.targets[next];
        }
        None
    }
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
    target: Arc<Target>,
    /// This request is the half-open probe of an ejected target.
    probe: bool,
    /// An outcome was recorded (the probe, if any, is resolved).
    recorded: bool,
}

impl TargetSlot {
    /// The target held.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// The target's bit in a request's set of tried targets.
    pub fn tried_bit(&self) -> u64 {
        bit(self.target.slot)
    }

    /// The pool the target belongs to.
    pub fn upstream(&self) -> &Arc<Upstream> {
        &self.upstream
    }

    /// The peer to connect to (a clone of the target's precomputed peer).
    pub fn peer(&self) -> Box<HttpPeer> {
        Box::new(self.target().peer.clone())
    }

    /// Whether this request is the half-open probe of an ejected target.
    pub fn is_probe(&self) -> bool {
        self.probe
    }

    /// Records how the attempt went, for outlier detection; only the first call counts.
    pub fn record(&mut self, outcome: Outcome) {
        if std::mem::replace(&mut self.recorded, true) {
            return;
        }
        self.upstream.record(&self.target, outcome, self.probe);
    }

    /// Records the time to the response headers, for `peak_ewma`.
    pub fn observe_latency(&self, elapsed: Duration) {
        if !self.upstream.tracks_latency {
            return;
        }
        self.target()
            .state
            .latency
            .observe(elapsed.as_nanos() as f64, clock_ms());
    }
}

impl Drop for TargetSlot {
    fn drop(&mut self) {
        let state = &self.target().state;
        state.in_flight.fetch_sub(1, Ordering::Relaxed);
        if self.probe && !self.recorded {
            state.outlier.release_probe();
        }
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

    /// The pool's current targets (literal and discovered), in address order.
    pub fn targets(&self) -> Vec<Arc<Target>> {
        self.balancer
            .members()
            .iter()
            .filter_map(|backend| target_of(backend).cloned())
            .collect()
    }

    /// Chooses a target for `key` that active health checks and outlier detection both
    /// let serve, skipping the targets in `tried` (a bit set of targets already
    /// attempted by this request). An ejected target whose time is up is chosen as its
    /// one half-open probe. In panic mode every target may serve.
    pub fn select(self: &Arc<Self>, key: &[u8], tried: u64) -> Option<TargetSlot> {
        if self.panic.load(Ordering::Relaxed) {
            return self.select_in_panic(key, tried);
        }
        let mut skip = tried;
        // Each pass either succeeds or adds a bit to `skip` (a probe taken by a
        // concurrent request): 65 passes cover every bit, so this ends.
        for _ in 0..=64 {
            let accept = |target: &Target, healthy: bool| {
                healthy
                    && skip & bit(target.slot) == 0
                    && self.availability(target) != Availability::Ejected
            };
            let target = self.choose(key, &accept)?;
            let state = &target.state;
            let probe = match self.availability(&target) {
                Availability::InService => false,
                Availability::ProbeDue if state.outlier.claim_probe() => true,
                _ => {
                    skip |= bit(target.slot);
                    continue;
                }
            };
            state.in_flight.fetch_add(1, Ordering::Relaxed);
            return Some(TargetSlot {
                upstream: Arc::clone(self),
                target,
                probe,
                recorded: false,
            });
        }
        None
    }

    /// The first target, in the pool's balancing order for `key`, that `accept` takes
    /// (it also receives the target's active-health verdict). A one-target pool and
    /// round robin choose from the member array; the other algorithms ask the balancer.
    fn choose(&self, key: &[u8], accept: &dyn Fn(&Target, bool) -> bool) -> Option<Arc<Target>> {
        let choice = self.choice.load();
        let accept_target =
            |target: &Arc<Target>| accept(target, self.balancer.healthy(&target.backend));
        match &*choice.targets {
            [] => return None,
            // Every algorithm's only candidate.
            [only] => return accept_target(only).then(|| Arc::clone(only)),
            _ if self.round_robin && !choice.weighted.is_empty() => {
                return choice.round_robin(accept_target).cloned();
            }
            _ => {}
        }
        let accept_backend = |backend: &Backend, healthy: bool| {
            target_of(backend).is_some_and(|target| accept(target, healthy))
        };
        let backend = self.balancer.select(key, &accept_backend)?;
        target_of(&backend).cloned()
    }

    /// Panic mode: any target not yet tried, whatever its health or ejection.
    fn select_in_panic(self: &Arc<Self>, key: &[u8], tried: u64) -> Option<TargetSlot> {
        let accept = |target: &Target, _healthy: bool| tried & bit(target.slot) == 0;
        let target = self.choose(key, &accept)?;
        target.state.in_flight.fetch_add(1, Ordering::Relaxed);
        Some(TargetSlot {
            upstream: Arc::clone(self),
            target,
            probe: false,
            recorded: false,
        })
    }

    /// Whether the pool is in panic mode.
    pub fn in_panic(&self) -> bool {
        self.panic.load(Ordering::Relaxed)
    }

    /// Re-evaluates panic mode from the targets' active health and ejections (run by the
    /// runtime on a short tick, so the request path only reads a flag).
    pub fn refresh_panic(&self) {
        if self.panic_threshold == 0 {
            return;
        }
        let targets = self.targets();
        let now_ms = clock_ms();
        let healthy = targets
            .iter()
            .filter(|target| {
                self.target_healthy(target)
                    && (!self.target_ejected(target)
                        || target.state.outlier.availability(now_ms) != Availability::Ejected)
            })
            .count();
        // An empty pool has nothing to balance across.
        let panic =
            !targets.is_empty() && healthy * 100 < targets.len() * self.panic_threshold as usize;
        if self.panic.swap(panic, Ordering::Relaxed) == panic {
            return;
        }
        self.panic_gauge.set(i64::from(panic));
        if panic {
            self.panic_entered.inc();
            log::warn!(
                "upstream {} in panic mode: {healthy} of {} targets healthy, below {}%; balancing across all targets",
                self.name,
                targets.len(),
                self.panic_threshold
            );
        } else {
            log::info!(
                "upstream {} left panic mode: {healthy} of {} targets healthy",
                self.name,
                targets.len()
            );
        }
    }

    /// Runs one pass of the pool's active health checks.
    pub async fn run_health_check(&self) {
        self.balancer.run_health_check().await;
    }

    /// Re-reads the pool's membership from its discovery (after a DNS pass): added
    /// targets start taking traffic, removed ones take no new requests.
    pub async fn refresh_members(&self) -> pingora_error::Result<()> {
        let updated = self.balancer.update().await;
        // Read back whatever the balancer now holds (a concurrent refresh included).
        self.choice
            .store(Arc::new(Choice::of(&self.balancer.members())));
        updated
    }

    /// Whether active health checks consider the target healthy (always true without them).
    pub fn target_healthy(&self, target: &Target) -> bool {
        self.balancer.healthy(&target.backend)
    }

    /// Whether outlier detection has the target ejected (a probe may be due).
    pub fn target_ejected(&self, target: &Target) -> bool {
        self.outlier.is_some() && target.state.outlier.is_ejected()
    }

    /// Outlier detection's verdict on the target; without it (it may have been removed
    /// by a reload while the target was ejected) every target is in service.
    fn availability(&self, target: &Target) -> Availability {
        let outlier = &target.state.outlier;
        // The clock is read only for ejected targets: selection costs no clock read.
        if self.outlier.is_none() || !outlier.is_ejected() {
            return Availability::InService;
        }
        outlier.availability(clock_ms())
    }

    /// Seconds until a target of an unavailable pool may serve again: the earliest end
    /// of an ejection among healthy targets, else 1 (waiting for active checks).
    pub fn retry_after(&self) -> u64 {
        let now_ms = clock_ms();
        self.targets()
            .iter()
            .filter(|target| self.target_healthy(target) && self.target_ejected(target))
            .map(|target| {
                target
                    .state
                    .outlier
                    .ejected_until_ms()
                    .saturating_sub(now_ms)
            })
            .min()
            .map_or(1, |ms| ms.div_ceil(1000).max(1))
    }

    fn record(&self, target: &Target, outcome: Outcome, probe: bool) {
        let Some(policy) = &self.outlier else { return };
        let members = self.balancer.members();
        let ejected = || {
            members
                .iter()
                .filter_map(target_of)
                .filter(|target| target.state.outlier.is_ejected())
                .count()
        };
        let pool = PoolView {
            size: members.len(),
            ejected: &ejected,
            lock: &self.ejection_lock,
        };
        match target
            .state
            .outlier
            .record(outcome, probe, policy, clock_ms(), &pool)
        {
            Transition::None => {}
            Transition::Ejected => {
                target.ejected_gauge.set(1);
                target.ejections.inc();
                log::warn!(
                    "upstream {} target {} ejected by outlier detection",
                    self.name,
                    target.label
                );
            }
            Transition::Returned => {
                target.ejected_gauge.set(0);
                log::info!(
                    "upstream {} target {} returned to service after a successful probe",
                    self.name,
                    target.label
                );
            }
        }
    }
}

/// The bit of `index` in a `tried` set; pools larger than 64 targets share bits, which
/// can only make a retry skip a target it could have used.
pub fn bit(index: usize) -> u64 {
    1u64 << (index % 64)
}

fn target_of(backend: &Backend) -> Option<&Arc<Target>> {
    backend.ext.get::<Arc<Target>>()
}

/// A one-target pool for unit tests.
#[cfg(test)]
pub fn test_pool(name: &str) -> Upstream {
    let config: crate::config::UpstreamConfig =
        serde_yaml::from_str("targets: [{ address: 127.0.0.1:9 }]").expect("valid test pool");
    let metrics = crate::telemetry::metrics::Metrics::new();
    compile_upstream(
        name,
        &config,
        name,
        &metrics,
        &portcullis_plugins::Retained::fresh(),
    )
    .unwrap_or_else(|problems| panic!("test pool: {problems:?}"))
}

#[cfg(test)]
mod tests {
    use std::future::Future;

    use pingora::lb::discovery::Static;
    use pingora::lb::selection::RoundRobin;
    use pingora::lb::{Backends, LoadBalancer};

    use super::*;

    fn pool(yaml: &str) -> Arc<Upstream> {
        let config: crate::config::UpstreamConfig =
            serde_yaml::from_str(yaml).expect("valid test pool");
        let metrics = crate::telemetry::metrics::Metrics::new();
        let retained = portcullis_plugins::Retained::fresh();
        let pool = compile_upstream("t", &config, "t", &metrics, &retained);
        Arc::new(pool.unwrap_or_else(|problems| panic!("test pool: {problems:?}")))
    }

    /// pingora-load-balancing's weighted round robin over the same members.
    fn reference(pool: &Upstream) -> LoadBalancer<RoundRobin> {
        let members = Static::new((*pool.balancer.members()).clone());
        let balancer = LoadBalancer::from_backends(Backends::new(members));
        {
            let mut update = std::pin::pin!(balancer.update());
            let mut context = std::task::Context::from_waker(std::task::Waker::noop());
            assert!(update.as_mut().poll(&mut context).is_ready());
        }
        balancer
    }

    #[test]
    fn round_robin_chooses_what_pingoras_weighted_round_robin_chooses() {
        let pool = pool(
            "targets: [{address: 127.0.0.1:9003, weight: 2}, {address: 127.0.0.1:9001}, \
             {address: 127.0.0.1:9002, weight: 3}]\nload_balancing: round_robin",
        );
        let reference = reference(&pool);
        let choice = pool.choice.load();
        assert_eq!(choice.targets.len(), 3);
        let refused: [Option<u16>; 3] = [None, Some(9002), Some(9001)];
        for refused in refused {
            for _ in 0..100 {
                let ours = choice
                    .round_robin(|target| Some(target.address.port()) != refused)
                    .map(|target| target.address);
                let theirs = reference
                    .select_with(b"", MAX_ITERATIONS, |backend, _| {
                        backend.addr.as_inet().map(|addr| addr.port()) != refused
                    })
                    .map(|backend| backend.addr);
                assert_eq!(ours, theirs.and_then(|addr| addr.as_inet().copied()));
            }
        }
        // Nothing acceptable: both give up.
        assert!(choice.round_robin(|_| false).is_none());
    }

    #[test]
    fn one_target_pools_choose_their_target_unless_tried_or_refused() {
        for algorithm in ["round_robin", "random", "least_request", "peak_ewma"] {
            let pool = pool(&format!(
                "targets: [{{address: 127.0.0.1:9001}}]\nload_balancing: {algorithm}"
            ));
            let slot = pool.select(b"", 0).expect("the only target");
            assert_eq!(slot.target().address.port(), 9001);
            assert_eq!(slot.target().state.in_flight.load(Ordering::Relaxed), 1);
            let tried = slot.tried_bit();
            drop(slot);
            assert!(pool.select(b"", tried).is_none(), "{algorithm}");
        }
        let hashed = pool(
            "targets: [{address: 127.0.0.1:9001}]\nload_balancing: consistent_hash\n\
             hash_on: header:x-user",
        );
        assert!(hashed.select(b"user-1", 0).is_some());
    }

    #[test]
    fn the_member_array_follows_the_balancers_members() {
        let pool = pool("targets: [{address: 127.0.0.1:9001}, {address: 127.0.0.1:9002}]");
        let addresses: Vec<_> = pool
            .choice
            .load()
            .targets
            .iter()
            .map(|t| t.address)
            .collect();
        let members: Vec<_> = pool.targets().iter().map(|t| t.address).collect();
        assert_eq!(addresses, members);
        let weighted = &pool.choice.load().weighted;
        assert_eq!(&weighted[..], &[0, 1]);
    }
}
