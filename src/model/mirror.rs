//! Request mirroring (`routes[].mirror`), compiled: which requests are copied (a share,
//! per request or sticky on a key, as canary splits choose), how large a copy may be,
//! how many may be in flight, and their counters.

use std::sync::Arc;

use pingora_http::RequestHeader;
use portcullis_plugins::{PluginCtx, RequestKey};
use prometheus::IntCounter;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::{verdict, MirrorConfig, Problem};
use crate::model::canary::{sticky_bucket, sticky_key};
use crate::model::upstream::Upstream;
use crate::telemetry::metrics::Metrics;

/// Buckets a request falls into; 0.01% is one of them.
const BUCKETS: u64 = 10_000;

/// What became of a sampled request's copy (`result` of
/// `portcullis_mirror_requests_total`).
pub struct MirrorCounters {
    /// Sent, and the mirror answered (whatever its status).
    pub sent: IntCounter,
    /// Sent, but the mirror could not be reached or did not answer in time.
    pub failed: IntCounter,
    /// Not sent: `max_in_flight` copies were already in flight.
    pub dropped: IntCounter,
    /// Not sent: the body is larger than `max_body`.
    pub too_large: IntCounter,
    /// Not sent: the mirror pool has no available target.
    pub unavailable: IntCounter,
}

/// A route's mirror, compiled.
pub struct Mirror {
    /// The pool that receives the copies.
    pub upstream: Arc<Upstream>,
    threshold: u64,
    sticky_on: Option<RequestKey>,
    /// The largest body copied, in bytes.
    pub max_body: u64,
    in_flight: Arc<Semaphore>,
    /// Outcomes, labelled with the route.
    pub counters: MirrorCounters,
}

impl Mirror {
    /// Checks and compiles `config` of route `route`; `upstream` is the mirror pool,
    /// already looked up (when `None` the caller reported why).
    pub fn compile(
        config: &MirrorConfig,
        upstream: Option<Arc<Upstream>>,
        route: &str,
        metrics: &Metrics,
        path: &str,
    ) -> Result<Self, Vec<Problem>> {
        let mut problems = Vec::new();
        if !(0.0..=100.0).contains(&config.percent) {
            problems.push(Problem::new(
                format!("{path}.percent"),
                "must be between 0 and 100",
            ));
        }
        if config.max_in_flight == 0 {
            problems.push(Problem::new(
                format!("{path}.max_in_flight"),
                "must be at least 1",
            ));
        }
        let sticky_on = sticky_key(config.sticky_on.as_deref(), path, &mut problems);
        let Some(upstream) = upstream else {
            return Err(problems);
        };
        let counter = |result: &str| metrics.mirror_requests.with_label_values(&[route, result]);
        let mirror = Self {
            upstream,
            threshold: (config.percent * 100.0).round() as u64,
            sticky_on,
            max_body: config.max_body.0,
            in_flight: Arc::new(Semaphore::new(config.max_in_flight as usize)),
            counters: MirrorCounters {
                sent: counter("sent"),
                failed: counter("failed"),
                dropped: counter("dropped"),
                too_large: counter("too_large"),
                unavailable: counter("unavailable"),
            },
        };
        verdict(mirror, problems)
    }

    /// Whether this request is copied: by its sticky value's bucket, else by a draw.
    /// `key` is the request's reused key buffer.
    pub fn samples(&self, req: &RequestHeader, ctx: &PluginCtx, key: &mut Vec<u8>) -> bool {
        if self.threshold == 0 {
            return false;
        }
        key.clear();
        let sticky = (self.sticky_on.as_ref()).is_some_and(|on| on.write_value(req, ctx, key));
        let bucket = if sticky {
            sticky_bucket(key)
        } else {
            use rand::Rng;
            rand::thread_rng().gen_range(0..BUCKETS)
        };
        bucket < self.threshold
    }

    /// A place among the copies in flight, or `None` (counted as dropped) when all
    /// `max_in_flight` are taken.
    pub fn try_slot(&self) -> Option<OwnedSemaphorePermit> {
        let slot = Arc::clone(&self.in_flight).try_acquire_owned().ok();
        if slot.is_none() {
            self.counters.dropped.inc();
        }
        slot
    }
}
