//! When the phases a trace shows began and ended: recorded by the chain (auth, rate
//! limit) and the rate-limit plugin (the Redis round trip) only for a request whose trace
//! is exported, so an unsampled request reads no clock and allocates nothing here.

use std::time::Instant;

/// A phase's start and end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interval {
    /// When it began.
    pub start: Instant,
    /// When it ended.
    pub end: Instant,
}

impl Interval {
    /// From `start` until now.
    pub fn since(start: Instant) -> Self {
        Self {
            start,
            end: Instant::now(),
        }
    }
}

/// The auth group's time, the plugin that decided and what it decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthTime {
    /// The whole group, from the failure-limit check to the decision.
    pub interval: Interval,
    /// The plugin that accepted the request, or whose refusal was returned.
    pub plugin: &'static str,
    /// `accepted`, or the refusal's reason (`missing`, `invalid`, ...).
    pub outcome: &'static str,
}

/// The Redis round trips of one rate-limit check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedisTime {
    /// From the first script call's start to the last one's end.
    pub interval: Interval,
    /// Script calls made (one per rule on a Cluster).
    pub calls: u32,
    /// Whether a call failed (Redis down or a bad reply).
    pub failed: bool,
}

/// The phase times of one request; all `None` while `recording` is false.
#[derive(Debug, Default, Clone, Copy)]
pub struct PhaseTimes {
    /// Set by the core when the request's trace is exported.
    pub recording: bool,
    /// The auth group, when the route has one and it ran.
    pub auth: Option<AuthTime>,
    /// The rate-limit phase, when the route has one and it ran.
    pub rate_limit: Option<Interval>,
    /// The Redis round trips of the rate-limit phase, when a rule is in Redis.
    pub redis: Option<RedisTime>,
}

impl PhaseTimes {
    /// Now, when recording (the only clock read an unsampled request would otherwise pay).
    pub fn now(&self) -> Option<Instant> {
        self.recording.then(Instant::now)
    }

    /// Adds one Redis script call that started at `start` (recording only).
    pub fn redis_call(&mut self, start: Option<Instant>, failed: bool) {
        let Some(start) = start else { return };
        let end = Instant::now();
        let time = self.redis.get_or_insert(RedisTime {
            interval: Interval { start, end },
            calls: 0,
            failed: false,
        });
        time.interval.end = end;
        time.calls += 1;
        time.failed |= failed;
    }
}
