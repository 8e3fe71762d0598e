//! Outlier ejection: passive health per target, with Envoy's semantics. Answers the
//! gateway sees (5xx, gateway failures, the failure share of an interval) eject a target
//! for `base_ejection_time × times ejected` (capped); when that time is up exactly one
//! probe request is let through (half-open): success returns the target, failure
//! re-ejects it for longer.
//!
//! The state is atomics per target, read on every selection without locks; only an
//! ejection (rare) takes the pool's lock, so that `max_ejection_percent` holds when
//! several targets fail at once.

use std::sync::atomic::{
    AtomicBool, AtomicU32, AtomicU64, Ordering::Acquire, Ordering::Relaxed, Ordering::Release,
};
use std::sync::Mutex;
use std::time::Duration;

use portcullis_plugins::units::LONGEST;

use crate::config::OutlierDetectionConfig;
use crate::config::Problem;

/// What one attempt to a target came to, as outlier detection counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Any answer below 500.
    Success,
    /// A 5xx answer other than 502, 503, 504.
    ServerError,
    /// Connect refused or timed out, 502, 503, 504, a broken or timed-out exchange.
    GatewayFailure,
}

impl Outcome {
    /// The outcome of an answer with this status.
    pub fn of_status(status: u16) -> Self {
        match status {
            502..=504 => Outcome::GatewayFailure,
            500..=599 => Outcome::ServerError,
            _ => Outcome::Success,
        }
    }
}

/// `outlier_detection`, compiled: times in milliseconds.
#[derive(Debug, Clone)]
pub struct OutlierPolicy {
    consecutive_5xx: u32,
    consecutive_gateway_failure: Option<u32>,
    failure_percentage: Option<(u32, u32)>,
    interval_ms: u64,
    base_ejection_ms: u64,
    max_ejection_ms: u64,
    max_ejection_percent: u32,
}

impl OutlierPolicy {
    /// Checks and compiles `config`; `path` is its config path.
    pub fn compile(config: &OutlierDetectionConfig, path: &str) -> Result<Self, Vec<Problem>> {
        let mut problems = Vec::new();
        let mut positive = |field: &str, value: u64| {
            if value == 0 {
                problems.push(Problem::new(
                    format!("{path}.{field}"),
                    "must be greater than 0",
                ));
            }
        };
        positive("consecutive_5xx", config.consecutive_5xx.into());
        if let Some(n) = config.consecutive_gateway_failure {
            positive("consecutive_gateway_failure", n.into());
        }
        positive("interval", millis(config.interval.0));
        positive("base_ejection_time", millis(config.base_ejection_time.0));
        positive("max_ejection_percent", config.max_ejection_percent.into());
        for (field, value) in [
            ("interval", config.interval),
            ("base_ejection_time", config.base_ejection_time),
            ("max_ejection_time", config.max_ejection_time),
        ] {
            let at = format!("{path}.{field}");
            if let Err(problem) = value.within(&at, Duration::ZERO, LONGEST) {
                problems.push(problem);
            }
        }
        if config.max_ejection_percent > 100 {
            problems.push(Problem::new(
                format!("{path}.max_ejection_percent"),
                "must be at most 100",
            ));
        }
        if let Some(threshold) = config.failure_percentage_threshold {
            if !(1..=100).contains(&threshold) {
                problems.push(Problem::new(
                    format!("{path}.failure_percentage_threshold"),
                    "must be between 1 and 100",
                ));
            }
        }
        if config.max_ejection_time.0 < config.base_ejection_time.0 {
            problems.push(Problem::new(
                format!("{path}.max_ejection_time"),
                "must be at least base_ejection_time",
            ));
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Self {
            consecutive_5xx: config.consecutive_5xx,
            consecutive_gateway_failure: config.consecutive_gateway_failure,
            failure_percentage: config
                .failure_percentage_threshold
                .map(|threshold| (threshold, config.failure_percentage_request_volume.max(1))),
            interval_ms: millis(config.interval.0),
            base_ejection_ms: millis(config.base_ejection_time.0),
            max_ejection_ms: millis(config.max_ejection_time.0),
            max_ejection_percent: config.max_ejection_percent,
        })
    }

    /// How many of `targets` may be ejected at once (always at least one, as in Envoy).
    pub fn max_ejected(&self, targets: usize) -> usize {
        (targets * self.max_ejection_percent as usize / 100).max(1)
    }
}

/// Whether a target may take a request now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Availability {
    /// In service.
    InService,
    /// Ejected, the ejection time is up and no probe is out: the next request probes.
    ProbeDue,
    /// Ejected (or its probe is in flight).
    Ejected,
}

/// What recording an outcome changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Nothing visible.
    None,
    /// The target was ejected (again).
    Ejected,
    /// A successful probe returned the target to service.
    Returned,
}

/// One target's passive-health state. It outlives reloads that keep the target.
#[derive(Debug, Default)]
pub struct OutlierState {
    consecutive_5xx: AtomicU32,
    consecutive_gateway: AtomicU32,
    window_start_ms: AtomicU64,
    window_requests: AtomicU32,
    window_failures: AtomicU32,
    ejected: AtomicBool,
    ejected_until_ms: AtomicU64,
    /// Ejections remembered for the next ejection time; fades by one per interval in
    /// service.
    ejections: AtomicU32,
    returned_at_ms: AtomicU64,
    probing: AtomicBool,
}

impl OutlierState {
    /// Whether the target is ejected (a probe may be due).
    pub fn is_ejected(&self) -> bool {
        self.ejected.load(Relaxed)
    }

    /// When the current ejection ends, in [`super::clock_ms`] time.
    pub fn ejected_until_ms(&self) -> u64 {
        self.ejected_until_ms.load(Relaxed)
    }

    /// Ejections remembered for the next ejection time.
    pub fn ejections(&self) -> u32 {
        self.ejections.load(Relaxed)
    }

    /// Whether the target may take a request at `now_ms`.
    pub fn availability(&self, now_ms: u64) -> Availability {
        // Acquire pairs with the Release in `eject`: seeing `ejected` means seeing its end.
        if !self.ejected.load(Acquire) {
            Availability::InService
        } else if now_ms >= self.ejected_until_ms.load(Relaxed) && !self.probing.load(Relaxed) {
            Availability::ProbeDue
        } else {
            Availability::Ejected
        }
    }

    /// Claims the one probe of an ejected target whose time is up; false if another
    /// request got it first.
    pub fn claim_probe(&self) -> bool {
        !self.probing.swap(true, Relaxed)
    }

    /// Gives an unanswered probe back (the request ended before an outcome), so the next
    /// request probes instead.
    pub fn release_probe(&self) {
        self.probing.store(false, Relaxed);
    }

    /// Records the outcome of an attempt; `probe` says whether it was the half-open
    /// probe. `pool` sees the other targets, for `max_ejection_percent`.
    pub fn record(
        &self,
        outcome: Outcome,
        probe: bool,
        policy: &OutlierPolicy,
        now_ms: u64,
        pool: &PoolView<'_>,
    ) -> Transition {
        if probe {
            self.probing.store(false, Relaxed);
            return if outcome == Outcome::Success {
                self.consecutive_5xx.store(0, Relaxed);
                self.consecutive_gateway.store(0, Relaxed);
                self.returned_at_ms.store(now_ms, Relaxed);
                self.ejected.store(false, Release);
                Transition::Returned
            } else {
                self.eject(policy, now_ms);
                Transition::Ejected
            };
        }
        if self.ejected.load(Relaxed) {
            // An answer to a request sent before the ejection: it changes nothing.
            return Transition::None;
        }
        let mut trip = self.count_window(outcome, policy, now_ms);
        match outcome {
            Outcome::Success => {
                self.consecutive_5xx.store(0, Relaxed);
                self.consecutive_gateway.store(0, Relaxed);
            }
            Outcome::ServerError => {
                self.consecutive_gateway.store(0, Relaxed);
                trip |= self.consecutive_5xx.fetch_add(1, Relaxed) + 1 >= policy.consecutive_5xx;
            }
            Outcome::GatewayFailure => {
                trip |= self.consecutive_5xx.fetch_add(1, Relaxed) + 1 >= policy.consecutive_5xx;
                let gateway = self.consecutive_gateway.fetch_add(1, Relaxed) + 1;
                trip |= policy
                    .consecutive_gateway_failure
                    .is_some_and(|limit| gateway >= limit);
            }
        }
        if !trip {
            return Transition::None;
        }
        let _ejecting = pool.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.consecutive_5xx.store(0, Relaxed);
        self.consecutive_gateway.store(0, Relaxed);
        if self.ejected.load(Relaxed) || pool.ejected() >= policy.max_ejected(pool.size) {
            return Transition::None;
        }
        self.eject(policy, now_ms);
        Transition::Ejected
    }

    /// Counts the outcome in the failure-percentage window; says whether the window that
    /// just closed had too many failures (evaluated when it closes, like Envoy's timer).
    fn count_window(&self, outcome: Outcome, policy: &OutlierPolicy, now_ms: u64) -> bool {
        let Some((threshold, volume)) = policy.failure_percentage else {
            return false;
        };
        let start = self.window_start_ms.load(Relaxed);
        let mut trip = false;
        if now_ms.saturating_sub(start) >= policy.interval_ms
            && self
                .window_start_ms
                .compare_exchange(start, now_ms, Relaxed, Relaxed)
                .is_ok()
        {
            let requests = self.window_requests.swap(0, Relaxed);
            let failures = self.window_failures.swap(0, Relaxed);
            trip = requests >= volume
                && u64::from(failures) * 100 >= u64::from(threshold) * u64::from(requests);
        }
        self.window_requests.fetch_add(1, Relaxed);
        if outcome != Outcome::Success {
            self.window_failures.fetch_add(1, Relaxed);
        }
        trip
    }

    fn eject(&self, policy: &OutlierPolicy, now_ms: u64) {
        let remembered = if self.ejected.load(Relaxed) {
            // A failed probe: no time was spent in service, nothing fades.
            self.ejections.load(Relaxed)
        } else {
            let in_service = now_ms.saturating_sub(self.returned_at_ms.load(Relaxed));
            let faded = in_service / policy.interval_ms.max(1);
            let faded = u32::try_from(faded).unwrap_or(u32::MAX);
            self.ejections.load(Relaxed).saturating_sub(faded)
        };
        let ejections = remembered.saturating_add(1);
        self.ejections.store(ejections, Relaxed);
        let time = policy
            .base_ejection_ms
            .saturating_mul(u64::from(ejections))
            .min(policy.max_ejection_ms);
        self.ejected_until_ms
            .store(now_ms.saturating_add(time), Relaxed);
        self.window_requests.store(0, Relaxed);
        self.window_failures.store(0, Relaxed);
        self.ejected.store(true, Release);
    }
}

/// What an ejection needs to know about the pool: its size, how many of its targets are
/// ejected, and the lock that makes "count, then eject" one step.
pub struct PoolView<'a> {
    /// Targets in the pool.
    pub size: usize,
    /// Counts the pool's ejected targets.
    pub ejected: &'a dyn Fn() -> usize,
    /// Held while deciding an ejection.
    pub lock: &'a Mutex<()>,
}

impl PoolView<'_> {
    fn ejected(&self) -> usize {
        (self.ejected)()
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(yaml: &str) -> OutlierPolicy {
        let config: OutlierDetectionConfig = serde_yaml::from_str(yaml).expect("valid config");
        OutlierPolicy::compile(&config, "test").unwrap_or_else(|p| panic!("{p:?}"))
    }

    /// Records `outcome` for target `index` of `pool`, as the upstream does.
    fn record(
        pool: &[OutlierState],
        index: usize,
        outcome: Outcome,
        probe: bool,
        policy: &OutlierPolicy,
        now_ms: u64,
    ) -> Transition {
        let lock = Mutex::new(());
        let ejected = || pool.iter().filter(|t| t.is_ejected()).count();
        let view = PoolView {
            size: pool.len(),
            ejected: &ejected,
            lock: &lock,
        };
        pool[index].record(outcome, probe, policy, now_ms, &view)
    }

    #[test]
    fn consecutive_failures_eject_and_a_success_resets_the_count() {
        let policy = policy("{consecutive_5xx: 3, max_ejection_percent: 100}");
        let pool = [OutlierState::default()];
        record(&pool, 0, Outcome::ServerError, false, &policy, 0);
        record(&pool, 0, Outcome::ServerError, false, &policy, 0);
        record(&pool, 0, Outcome::Success, false, &policy, 0);
        record(&pool, 0, Outcome::ServerError, false, &policy, 0);
        assert_eq!(
            record(&pool, 0, Outcome::GatewayFailure, false, &policy, 0),
            Transition::None
        );
        assert_eq!(
            record(&pool, 0, Outcome::ServerError, false, &policy, 0),
            Transition::Ejected
        );
        assert_eq!(pool[0].availability(29_999), Availability::Ejected);
        assert_eq!(pool[0].availability(30_000), Availability::ProbeDue);
    }

    #[test]
    fn gateway_failures_have_their_own_streak() {
        let policy = policy("{consecutive_gateway_failure: 2, max_ejection_percent: 100}");
        let pool = [OutlierState::default()];
        record(&pool, 0, Outcome::GatewayFailure, false, &policy, 0);
        record(&pool, 0, Outcome::ServerError, false, &policy, 0);
        record(&pool, 0, Outcome::GatewayFailure, false, &policy, 0);
        assert!(
            !pool[0].is_ejected(),
            "a 500 breaks the gateway-failure streak"
        );
        record(&pool, 0, Outcome::GatewayFailure, false, &policy, 0);
        assert!(pool[0].is_ejected());
    }

    #[test]
    fn one_probe_at_a_time_and_its_outcome_decides() {
        let policy =
            policy("{consecutive_5xx: 1, base_ejection_time: 1s, max_ejection_percent: 100}");
        let pool = [OutlierState::default()];
        record(&pool, 0, Outcome::ServerError, false, &policy, 0);
        assert!(pool[0].claim_probe());
        assert!(!pool[0].claim_probe());
        assert_eq!(pool[0].availability(1_000), Availability::Ejected);
        // A failed probe doubles the ejection.
        assert_eq!(
            record(&pool, 0, Outcome::ServerError, true, &policy, 1_000),
            Transition::Ejected
        );
        assert_eq!(pool[0].availability(2_999), Availability::Ejected);
        assert_eq!(pool[0].availability(3_000), Availability::ProbeDue);
        assert!(pool[0].claim_probe());
        assert_eq!(
            record(&pool, 0, Outcome::Success, true, &policy, 3_000),
            Transition::Returned
        );
        assert_eq!(pool[0].availability(3_000), Availability::InService);
    }

    #[test]
    fn the_ejection_multiplier_fades_with_time_in_service() {
        let policy = policy(
            "{consecutive_5xx: 1, interval: 1s, base_ejection_time: 1s, max_ejection_percent: 100}",
        );
        let pool = [OutlierState::default()];
        record(&pool, 0, Outcome::ServerError, false, &policy, 0);
        pool[0].claim_probe();
        record(&pool, 0, Outcome::ServerError, true, &policy, 1_000); // ejected twice
        pool[0].claim_probe();
        record(&pool, 0, Outcome::Success, true, &policy, 3_000);
        // 1 s in service fades one ejection: the next one lasts 2 × 1 s, not 3 × 1 s.
        record(&pool, 0, Outcome::ServerError, false, &policy, 4_000);
        assert_eq!(pool[0].ejected_until_ms(), 6_000);
    }

    #[test]
    fn max_ejection_percent_keeps_targets_in_service() {
        let policy = policy("{consecutive_5xx: 1, max_ejection_percent: 50}");
        let pool = [
            OutlierState::default(),
            OutlierState::default(),
            OutlierState::default(),
        ];
        assert_eq!(
            record(&pool, 0, Outcome::ServerError, false, &policy, 0),
            Transition::Ejected
        );
        assert_eq!(
            record(&pool, 1, Outcome::ServerError, false, &policy, 0),
            Transition::None
        );
        assert_eq!(policy.max_ejected(1), 1, "one target may always be ejected");
    }

    #[test]
    fn a_high_failure_share_ejects_when_the_interval_closes() {
        let policy = policy("{consecutive_5xx: 100, failure_percentage_threshold: 50, failure_percentage_request_volume: 4, interval: 1s, max_ejection_percent: 100}");
        let pool = [OutlierState::default()];
        for (i, outcome) in [
            Outcome::Success,
            Outcome::ServerError,
            Outcome::Success,
            Outcome::ServerError,
        ]
        .into_iter()
        .enumerate()
        {
            record(&pool, 0, outcome, false, &policy, 100 + i as u64);
        }
        assert!(!pool[0].is_ejected());
        assert_eq!(
            record(&pool, 0, Outcome::Success, false, &policy, 1_000),
            Transition::Ejected
        );
    }
}
