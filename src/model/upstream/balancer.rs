//! One object-safe face for pingora-load-balancing's `LoadBalancer<S>`, whatever its
//! selection algorithm, so a pool holds `Box<dyn Balancer>` and a new algorithm is a new
//! `BackendSelection` impl, not a new match arm.

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use pingora::lb::selection::{BackendIter, BackendSelection};
use pingora::lb::{Backend, LoadBalancer};

/// A health-check pass in progress.
pub type HealthCheckPass<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// A membership update in progress.
pub type MembershipUpdate<'a> =
    Pin<Box<dyn Future<Output = pingora_error::Result<()>> + Send + 'a>>;

/// Target choice over a pool's backends, honouring active health.
pub trait Balancer: Send + Sync {
    /// The first backend, in the algorithm's order for `key`, that `accept` takes;
    /// `accept` also receives the backend's active-health verdict.
    fn select(&self, key: &[u8], accept: &dyn Fn(&Backend, bool) -> bool) -> Option<Backend>;

    /// Whether active health checks currently consider `backend` healthy.
    fn healthy(&self, backend: &Backend) -> bool;

    /// Runs one pass of the pool's active health checks.
    fn run_health_check(&self) -> HealthCheckPass<'_>;

    /// The current members.
    fn members(&self) -> Arc<BTreeSet<Backend>>;

    /// Re-reads the members from the pool's discovery and rebuilds the selection.
    fn update(&self) -> MembershipUpdate<'_>;
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

    fn members(&self) -> Arc<BTreeSet<Backend>> {
        self.backends().get_backend()
    }

    fn update(&self) -> MembershipUpdate<'_> {
        Box::pin(LoadBalancer::update(self))
    }
}
