//! One request's counts under every rule of a `rate_limit` list, committed together: a
//! request is counted by every rule or by none, so a request that one rule refuses has
//! used none of another rule's quota.
//!
//! The rules count in stages, each all-or-nothing: first the local rules (their keys
//! locked together, all checked, then all counted), then the Redis rules (one script
//! checks every key, then counts in all of them). A stage that refuses gives back what
//! the earlier stages counted. On a Redis Cluster the keys of different rules live on
//! different nodes, where no one script reaches them all: there each key is a stage of
//! its own, so what a later rule refuses is given back (a compensation, not a
//! transaction).

use std::sync::Arc;

use super::local::Locked;
use super::redis::{CHECK, REFUND};
use super::sliding_window::{self, WindowState};
use super::token_bucket::BucketState;
use super::{Limits, LocalStore, OnError, Outcome, RedisBackend, Rule, Store};
use crate::phase_times::PhaseTimes;
use crate::Telemetry;

/// One key's state in a local store, as its rule's algorithm keeps it.
#[derive(Debug, Clone, Copy)]
pub enum Counter {
    /// A token bucket's.
    Bucket(BucketState),
    /// A sliding window's.
    Window(WindowState),
}

impl Default for Counter {
    fn default() -> Self {
        Self::Bucket(BucketState::default())
    }
}

impl Limits {
    /// Whether one more request fits `counter` at `now_ns`; counts nothing.
    fn peek(&self, counter: &mut Counter, now_ns: u64) -> Outcome {
        match (self, &mut *counter) {
            (Limits::TokenBucket(bucket), Counter::Bucket(state)) => bucket.peek(state, now_ns),
            (Limits::SlidingWindow(window), Counter::Window(state)) => window.peek(state, now_ns),
            // A store only ever holds its rule's kind; a fresh state of it is a fresh key.
            (Limits::TokenBucket(_), counter) => {
                *counter = Counter::Bucket(BucketState::default());
                self.peek(counter, now_ns)
            }
            (Limits::SlidingWindow(_), counter) => {
                *counter = Counter::Window(WindowState::default());
                self.peek(counter, now_ns)
            }
        }
    }

    /// Counts one request at `now_ns`, after a [`Limits::peek`] that allowed it.
    fn count(&self, counter: &mut Counter, now_ns: u64) {
        match (self, counter) {
            (Limits::TokenBucket(bucket), Counter::Bucket(state)) => bucket.count(state, now_ns),
            (Limits::SlidingWindow(window), Counter::Window(state)) => window.count(state, now_ns),
            _ => {}
        }
    }

    /// Gives back a request counted at `counted_ns`.
    fn refund(&self, counter: &mut Counter, counted_ns: u64) {
        match (self, counter) {
            (Limits::TokenBucket(bucket), Counter::Bucket(state)) => bucket.refund(state),
            (Limits::SlidingWindow(window), Counter::Window(state)) => {
                window.refund(state, counted_ns)
            }
            _ => {}
        }
    }
}

/// The counter keys of one request, one per rule, in rule order.
#[derive(Default)]
pub struct Keys {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Keys {
    /// Adds the next rule's key.
    pub fn push(&mut self, key: &[u8]) {
        self.bytes.extend_from_slice(key);
        self.ends.push(self.bytes.len());
    }

    fn get(&self, rule: usize) -> &[u8] {
        let start = rule
            .checked_sub(1)
            .and_then(|before| self.ends.get(before))
            .copied()
            .unwrap_or(0);
        let end = self.ends.get(rule).copied().unwrap_or(start);
        self.bytes.get(start..end).unwrap_or_default()
    }
}

/// What the rules say about one request.
pub enum Verdict {
    /// Counted by every rule that could count it (a Redis rule whose backend failed open
    /// is left out): the outcomes, with the rules' indexes.
    Counted(Vec<(usize, Outcome)>),
    /// Refused by the rule at this index, with its outcome; counted by none.
    Refused(usize, Outcome),
    /// Redis failed under `on_error: deny`; counted by none.
    BackendDown,
}

/// [`count`] when every rule counts locally, which never waits; `None` when a rule
/// counts in Redis.
pub fn count_local(rules: &[Rule], keys: &Keys, tier: Option<&str>) -> Option<Verdict> {
    if rules
        .iter()
        .any(|rule| matches!(rule.store, Store::Redis(_)))
    {
        return None;
    }
    let stages = Stages { rules, keys, tier };
    let mut outcomes = Vec::with_capacity(rules.len());
    Some(match stages.count_local(&mut outcomes) {
        Ok(_) => Verdict::Counted(outcomes),
        Err(verdict) => verdict,
    })
}

/// Counts one request under `rules` (whose keys are `keys`), in every rule or in none.
pub async fn count(
    rules: &[Rule],
    keys: &Keys,
    tier: Option<&str>,
    telemetry: &dyn Telemetry,
    times: &mut PhaseTimes,
) -> Verdict {
    let stages = Stages { rules, keys, tier };
    let mut outcomes = Vec::with_capacity(rules.len());
    let local = match stages.count_local(&mut outcomes) {
        Ok(counted) => counted,
        Err(verdict) => return verdict,
    };
    let redis = rules
        .iter()
        .enumerate()
        .filter_map(|(i, rule)| match &rule.store {
            Store::Redis(backend) => Some((i, backend)),
            Store::Local(_) => None,
        });
    let mut in_redis = Vec::new();
    let mut backend = None;
    for (i, rule_backend) in redis {
        in_redis.push(i);
        backend = Some(rule_backend);
    }
    let Some(backend) = backend else {
        return Verdict::Counted(outcomes);
    };
    match stages
        .count_redis(backend, &in_redis, &mut outcomes, telemetry, times)
        .await
    {
        Ok(()) => Verdict::Counted(outcomes),
        Err(verdict) => {
            stages.refund_local(&local);
            verdict
        }
    }
}

/// The rules and keys of one request, counted stage by stage.
struct Stages<'a> {
    rules: &'a [Rule],
    keys: &'a Keys,
    tier: Option<&'a str>,
}

impl<'a> Stages<'a> {
    fn limits(&self, rule: usize) -> Option<&'a Limits> {
        Some(self.rules.get(rule)?.limits_for(self.tier))
    }

    /// The local rules' keys, locked together.
    fn lock_local(&self, rules: impl Iterator<Item = usize>) -> Locked<'a, Counter> {
        let (all, keys) = (self.rules, self.keys);
        Locked::lock(rules.filter_map(move |i| {
            let rule = all.get(i)?;
            match &rule.store {
                Store::Local(store) => Some((&**store, keys.get(i), rule.idle_ns)),
                Store::Redis(_) => None,
            }
        }))
    }

    /// Checks every local rule, then counts in all of them (or, when one refuses, in
    /// none). Returns the rules counted and the time (of their store) they were counted.
    fn count_local(
        &self,
        outcomes: &mut Vec<(usize, Outcome)>,
    ) -> Result<Vec<(usize, u64)>, Verdict> {
        let local: Vec<usize> = (0..self.rules.len())
            .filter(|&i| matches!(self.rules[i].store, Store::Local(_)))
            .collect();
        if local.is_empty() {
            return Ok(Vec::new());
        }
        let mut locked = self.lock_local(local.iter().copied());
        let mut counted = Vec::with_capacity(local.len());
        for (n, &i) in local.iter().enumerate() {
            let (Some(limits), Some((state, now_ns))) = (self.limits(i), locked.state(n)) else {
                continue;
            };
            let outcome = limits.peek(state, now_ns);
            if !outcome.allowed {
                return Err(Verdict::Refused(i, outcome));
            }
            outcomes.push((i, outcome));
            counted.push((n, i, now_ns));
        }
        for &(n, i, now_ns) in &counted {
            if let (Some(limits), Some((state, _))) = (self.limits(i), locked.state(n)) {
                limits.count(state, now_ns);
            }
        }
        Ok(counted
            .into_iter()
            .map(|(_, i, now_ns)| (i, now_ns))
            .collect())
    }

    /// Gives back what [`Stages::count_local`] counted.
    fn refund_local(&self, counted: &[(usize, u64)]) {
        let mut locked = self.lock_local(counted.iter().map(|(i, _)| *i));
        for (n, &(i, counted_ns)) in counted.iter().enumerate() {
            if let (Some(limits), Some((state, _))) = (self.limits(i), locked.state(n)) {
                limits.refund(state, counted_ns);
            }
        }
    }

    /// Counts the Redis rules `in_redis`: one script for all of them, or on a Cluster one
    /// per rule with what earlier ones counted given back when a later one refuses.
    async fn count_redis(
        &self,
        backend: &Arc<RedisBackend>,
        in_redis: &[usize],
        outcomes: &mut Vec<(usize, Outcome)>,
        telemetry: &dyn Telemetry,
        times: &mut PhaseTimes,
    ) -> Result<(), Verdict> {
        let group_size = if backend.is_cluster() {
            1
        } else {
            in_redis.len()
        };
        let mut refunds = RedisCall::default();
        for group in in_redis.chunks(group_size.max(1)) {
            let mut call = RedisCall::default();
            for &i in group {
                self.check_args(i, &mut call);
            }
            let start = times.now();
            let reply = backend.eval(&CHECK, &call.keys, &call.args).await;
            times.redis_call(start, reply.is_err());
            let reply = match reply {
                Ok(reply) => reply,
                Err(_) => {
                    telemetry.backend_error("redis");
                    if backend.on_error == OnError::Deny {
                        self.give_back(backend, &refunds).await;
                        return Err(Verdict::BackendDown);
                    }
                    continue;
                }
            };
            let mut group_outcomes = Vec::with_capacity(group.len());
            for (&i, reply) in group.iter().zip(reply.chunks(5)) {
                let Some(outcome) = self.redis_outcome(i, reply) else {
                    telemetry.backend_error("redis");
                    continue;
                };
                if !outcome.allowed {
                    self.give_back(backend, &refunds).await;
                    return Err(Verdict::Refused(i, outcome));
                }
                group_outcomes.push((i, outcome, reply.get(4).copied().unwrap_or(0)));
            }
            for (i, outcome, index) in group_outcomes {
                outcomes.push((i, outcome));
                self.refund_args(i, index, &mut refunds);
            }
        }
        Ok(())
    }

    async fn give_back(&self, backend: &RedisBackend, refunds: &RedisCall) {
        // A cluster's keys are on different nodes: one script per key.
        for (key, args) in refunds.keys.iter().zip(refunds.args.chunks(2)) {
            let _ = backend.eval(&REFUND, std::slice::from_ref(key), args).await;
        }
    }

    /// The key and arguments of rule `i` for [`CHECK`].
    fn check_args(&self, i: usize, call: &mut RedisCall) {
        let Some(limits) = self.limits(i) else { return };
        let (kind, a, b) = match limits {
            Limits::TokenBucket(bucket) => {
                let cost_us = cost_us(bucket);
                let capacity_us = cost_us * bucket.burst as f64;
                ("b", format!("{cost_us:.3}"), format!("{capacity_us:.3}"))
            }
            Limits::SlidingWindow(window) => {
                let window_us = (window.window_ns / 1_000).max(1);
                ("w", window.limit.to_string(), window_us.to_string())
            }
        };
        call.keys
            .push(super::redis_key(&self.rules[i].name, self.keys.get(i)));
        call.args.extend([kind.to_string(), a, b]);
    }

    /// The key and arguments of rule `i` for [`REFUND`], after [`CHECK`] counted it in
    /// window `index` (sliding window).
    fn refund_args(&self, i: usize, index: i64, refunds: &mut RedisCall) {
        let Some(limits) = self.limits(i) else { return };
        let (kind, arg) = match limits {
            Limits::TokenBucket(bucket) => ("b", format!("{:.3}", cost_us(bucket))),
            Limits::SlidingWindow(_) => ("w", index.to_string()),
        };
        refunds
            .keys
            .push(super::redis_key(&self.rules[i].name, self.keys.get(i)));
        refunds.args.extend([kind.to_string(), arg]);
    }

    /// Rule `i`'s outcome from its five integers of the [`CHECK`] reply.
    fn redis_outcome(&self, i: usize, reply: &[i64]) -> Option<Outcome> {
        let [allowed, a, b, c, _] = <[i64; 5]>::try_from(reply).ok()?;
        let [a, b, c] = [a, b, c].map(|n| u64::try_from(n).unwrap_or(0));
        Some(match self.limits(i)? {
            Limits::TokenBucket(bucket) => Outcome {
                allowed: allowed == 1,
                quota: bucket.rate,
                window_ns: bucket.per_ns,
                remaining: a,
                reset_ns: b.saturating_mul(1_000),
                retry_after_ns: c.saturating_mul(1_000),
            },
            Limits::SlidingWindow(window) => {
                let window_us = (window.window_ns / 1_000).max(1);
                let (previous, current, elapsed_us) = (a, b, c);
                let mut outcome = sliding_window::weigh(
                    window.limit,
                    window_us * 1_000,
                    (elapsed_us * 1_000).min(window_us * 1_000),
                    previous,
                    current,
                );
                // Redis decided; the weighing only supplies the header values.
                outcome.allowed = allowed == 1;
                outcome
            }
        })
    }
}

/// What one token costs in a Redis bucket: microseconds of its clock, maybe fractional.
fn cost_us(bucket: &super::TokenBucket) -> f64 {
    bucket.per_ns as f64 / 1_000.0 / bucket.rate.max(1) as f64
}

/// The keys and arguments of one script call.
#[derive(Default)]
struct RedisCall {
    keys: Vec<String>,
    args: Vec<String>,
}

/// The local stores' type.
pub type LocalCounters = LocalStore<Counter>;
