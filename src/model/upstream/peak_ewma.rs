//! Peak EWMA latency (Finagle, Linkerd): a moving average of a target's response time
//! that jumps up to any slower observation at once and decays back over ~10 s, so a
//! target that turns slow loses traffic immediately and wins it back gradually.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// How fast old observations fade (Finagle's default decay time).
const DECAY_MS: f64 = 10_000.0;

/// One target's latency estimate. Updates race benignly: a lost update only drops one
/// observation.
#[derive(Debug, Default)]
pub struct PeakEwma {
    /// The estimate in nanoseconds, as `f64` bits.
    estimate_ns: AtomicU64,
    /// When it was last updated, in [`super::clock_ms`] time.
    stamp_ms: AtomicU64,
}

impl PeakEwma {
    /// Records one response time.
    pub fn observe(&self, rtt_ns: f64, now_ms: u64) {
        let current = self.decayed(now_ms);
        let next = if rtt_ns > current {
            rtt_ns
        } else {
            let weight = self.weight(now_ms);
            current * weight + rtt_ns * (1.0 - weight)
        };
        self.estimate_ns.store(next.to_bits(), Relaxed);
        self.stamp_ms.store(now_ms, Relaxed);
    }

    /// The estimate at `now_ms`, decayed for the time since the last observation.
    pub fn decayed(&self, now_ms: u64) -> f64 {
        f64::from_bits(self.estimate_ns.load(Relaxed)) * self.weight(now_ms)
    }

    fn weight(&self, now_ms: u64) -> f64 {
        let elapsed = now_ms.saturating_sub(self.stamp_ms.load(Relaxed)) as f64;
        (-elapsed / DECAY_MS).exp()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_answer_counts_at_once_and_fades_over_time() {
        let ewma = PeakEwma::default();
        ewma.observe(1e6, 0);
        ewma.observe(50e6, 1);
        assert!(ewma.decayed(1) > 49e6, "the peak is taken as is");
        assert!(
            ewma.decayed(10_001) < 20e6,
            "after one decay time it is down to ~37%"
        );
        ewma.observe(1e6, 10_002);
        assert!(ewma.decayed(10_002) < 20e6);
    }
}
