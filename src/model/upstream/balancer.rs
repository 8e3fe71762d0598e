//! One object-safe face for pingora-load-balancing's `LoadBalancer<S>`, whatever its
//! selection algorithm, so a pool holds `Box<dyn Balancer>` and a new algorithm is a new
//! `BackendSelection` impl, not a new match arm.

use std::future::Future;
use std::pin::Pin;

use pingora::lb::selection::{BackendIter, BackendSelection};
use pingora::lb::{Backend, LoadBalancer};

/// A health-check pass in progress.
pub type HealthCheckPass<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// Target choice over a pool's backends, honouring active health.
pub trait Balancer: Send + Sync {
    /// The first backend, in the algorithm's order for `key`, that `accept` takes;
    /// `accept` also receives the backend's active-health verdict.
    fn select(&self, key: &[u8], accept: &dyn Fn(&Backend, bool) -> bool) -> Option<Backend>;

    /// Whether active health checks currently consider `backend` healthy.
    fn healthy(&self, backend: &Backend) -> bool;

    /// Runs one pass of the pool's active health checks.
    fn run_health_check(&self) -> HealthCheckPass<'_>;
}

/// Bound on the backends visited per selection: enough to walk every target of a
/// weighted pool (each weight unit is a slot), small enough to stay cheap.
const MAX_ITERATIONS: usize = 256;

impl<S> Balancer for LoadBalancer<S>
where
    S: BackendSelection + Send + Sync + 'static,
    S::Iter: BackendIter,
{
    fn select(&self, key: &[u8], accept: &dyn Fn(&Backend, bool) -> bool) -> Option<Backend> {
        self.select_with(key, MAX_ITERATIONS, accept)
    }

    fn healthy(&self, backend: &Backend) -> bool {
        self.backends().ready(backend)
    }

    fn run_health_check(&self) -> HealthCheckPass<'_> {
        Box::pin(self.backends().run_health_check(true))
    }
}
