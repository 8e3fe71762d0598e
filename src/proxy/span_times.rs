//! When the phases of an exported request ran (the server's side: cache lookup, upstream
//! connect and response; the plugins record auth and rate limit in their own context).
//! Kept apart from the span building (`spans.rs`) so the request context can hold it.

use std::time::{Instant, SystemTime};

use portcullis_plugins::phase_times::Interval;

/// When the phases of an exported request ran, besides what the plugins record.
#[derive(Debug, Clone)]
pub struct RequestSpans {
    /// The wall clock at `RequestCtx::started`: span times are this plus monotonic offsets.
    pub(super) wall_start: SystemTime,
    /// When the cache lookup began, until it ends.
    pub(super) cache_start: Option<Instant>,
    pub(super) cache: Option<Interval>,
    /// When the last attempt's connection was asked for, until it is ready.
    pub(super) connect_start: Option<Instant>,
    /// The last attempt's connection, and whether it was a reused one.
    pub(super) connect: Option<(Interval, bool)>,
    /// From sending the request upstream to its response head.
    pub(super) upstream: Option<Interval>,
    pub(super) upstream_status: u16,
}

impl RequestSpans {
    /// Recording from a request that started at `started`.
    pub fn new(started: Instant) -> Self {
        Self {
            wall_start: SystemTime::now() - started.elapsed(),
            cache_start: None,
            cache: None,
            connect_start: None,
            connect: None,
            upstream: None,
            upstream_status: 0,
        }
    }
}
