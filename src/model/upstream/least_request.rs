//! Power of two choices (Mitzenmacher): draw two distinct available targets at random
//! (weighted) and send to the cheaper one. `least_request` prices a target by its
//! requests in flight; `peak_ewma` by latency × in-flight (see `peak_ewma.rs`). Two draws
//! avoid the herd that always picking the global minimum causes, at O(1) cost.

use std::collections::BTreeSet;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use pingora::lb::selection::Random;
use pingora::lb::{Backend, LoadBalancer};

use super::balancer::{Balancer, HealthCheckPass, MembershipUpdate};
use super::{clock_ms, Target, TargetState};

/// How a power-of-two balancer prices a target: lower is better.
pub trait Cost: Send + Sync {
    /// The cost of sending one more request to `state`, whose weight is `weight`.
    fn cost(&self, state: &TargetState, weight: usize, now_ms: u64) -> f64;
}

/// `least_request`: requests in flight, relative to the weight.
pub struct LeastRequest;

impl Cost for LeastRequest {
    fn cost(&self, state: &TargetState, weight: usize, _now_ms: u64) -> f64 {
        f64::from(state.in_flight.load(Relaxed) + 1) / weight.max(1) as f64
    }
}

/// `peak_ewma`: the peak-EWMA latency times the requests in flight (plus the one to be
/// sent), relative to the weight.
pub struct PeakEwmaCost;

impl Cost for PeakEwmaCost {
    fn cost(&self, state: &TargetState, weight: usize, now_ms: u64) -> f64 {
        let in_flight = f64::from(state.in_flight.load(Relaxed) + 1);
        // A target without observations costs like a 1 µs one, so it is tried soon.
        let latency = state.latency.decayed(now_ms).max(1_000.0);
        latency * in_flight / weight.max(1) as f64
    }
}

/// Bound on the random draws per pick.
const MAX_ITERATIONS: usize = 64;

/// Power of two choices over pingora-load-balancing's weighted random selection.
pub struct PowerOfTwoChoices<C> {
    random: LoadBalancer<Random>,
    /// Backends in the pool: with one, there is no second choice to draw.
    backends: AtomicUsize,
    cost: C,
}

impl<C: Cost> PowerOfTwoChoices<C> {
    /// Picks over `random`'s backends by `cost`.
    pub fn new(random: LoadBalancer<Random>, cost: C) -> Self {
        let backends = AtomicUsize::new(random.backends().get_backend().len());
        Self {
            random,
            backends,
            cost,
        }
    }

    fn price(&self, backend: &Backend, now_ms: u64) -> f64 {
        backend.ext.get::<Arc<Target>>().map_or(f64::MAX, |target| {
            self.cost.cost(&target.state, backend.weight, now_ms)
        })
    }
}

impl<C: Cost> Balancer for PowerOfTwoChoices<C> {
    fn select(&self, key: &[u8], accept: &dyn Fn(&Backend, bool) -> bool) -> Option<Backend> {
        let first = self.random.select_with(key, MAX_ITERATIONS, accept)?;
        if self.backends.load(Relaxed) < 2 {
            return Some(first);
        }
        let second = self
            .random
            .select_with(key, MAX_ITERATIONS, |backend, healthy| {
                backend.addr != first.addr && accept(backend, healthy)
            });
        let Some(second) = second else {
            return Some(first);
        };
        let now_ms = clock_ms();
        if self.price(&second, now_ms) < self.price(&first, now_ms) {
            Some(second)
        } else {
            Some(first)
        }
    }

    fn healthy(&self, backend: &Backend) -> bool {
        self.random.healthy(backend)
    }

    fn run_health_check(&self) -> HealthCheckPass<'_> {
        self.random.run_health_check()
    }

    fn members(&self) -> Arc<BTreeSet<Backend>> {
        self.random.members()
    }

    fn update(&self) -> MembershipUpdate<'_> {
        Box::pin(async move {
            self.random.update().await?;
            self.backends.store(self.random.members().len(), Relaxed);
            Ok(())
        })
    }
}
