//! The error log line of a request the gateway could not proxy ("Fail to proxy: ...").
//!
//! Pingora writes one per failed request. With a pool down at 20k requests a second that is
//! 20k lines a second through the logger's lock and a blocking write to stderr, on the
//! worker threads. Every failure is already counted (`portcullis_requests_total` by status)
//! and is in the access log with its `error` code, so
//! the log gets the first [`LINES_PER_SECOND`] failures of each second, and the next line
//! it gets says how many were left out. A failure the client caused (it went away, or sent
//! bytes that are not a request) is not the gateway's: it is logged at debug.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

/// Failure lines written per second at most.
pub const LINES_PER_SECOND: u32 = 10;

/// A per-second budget of failure lines, shared by the worker threads without a lock.
pub struct FailureLog {
    started: Instant,
    /// The second (since `started`) that `lines` counts.
    second: AtomicU64,
    lines: AtomicU32,
    left_out: AtomicU64,
}

impl Default for FailureLog {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            second: AtomicU64::new(0),
            lines: AtomicU32::new(0),
            left_out: AtomicU64::new(0),
        }
    }
}

impl FailureLog {
    /// Whether a failure line may be written now; if so, how many were left out since the
    /// last one written.
    pub fn admit(&self) -> Option<u64> {
        self.admit_at(self.started.elapsed().as_secs())
    }

    fn admit_at(&self, now: u64) -> Option<u64> {
        let second = self.second.load(Ordering::Relaxed);
        // At a second's turn two threads may both reset the count: one line more, not less.
        if second != now
            && self
                .second
                .compare_exchange(second, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.lines.store(0, Ordering::Relaxed);
        }
        if self.lines.fetch_add(1, Ordering::Relaxed) < LINES_PER_SECOND {
            Some(self.left_out.swap(0, Ordering::Relaxed))
        } else {
            self.left_out.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_second_admits_its_budget_and_the_next_line_counts_the_rest() {
        let log = FailureLog::default();
        let admitted = (0..25).filter(|_| log.admit_at(0).is_some()).count();
        assert_eq!(admitted, LINES_PER_SECOND as usize);

        assert_eq!(
            log.admit_at(1),
            Some(15),
            "the first line of the next second"
        );
        assert_eq!(log.admit_at(1), Some(0));
        assert_eq!(
            log.admit_at(7),
            Some(0),
            "seconds without failures in between"
        );
    }

    #[test]
    fn threads_share_one_budget() {
        let log = std::sync::Arc::new(FailureLog::default());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let log = log.clone();
                std::thread::spawn(move || (0..100).filter(|_| log.admit_at(3).is_some()).count())
            })
            .collect();
        let admitted: usize = threads.into_iter().map(|t| t.join().expect("thread")).sum();
        assert_eq!(admitted, LINES_PER_SECOND as usize);
        assert_eq!(log.admit_at(4), Some(390));
    }
}
