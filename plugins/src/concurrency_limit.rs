//! `concurrency_limit`: at most `max` requests in flight per key. A request's slot is
//! held by a guard in its context, so it is released however the request ends (answer,
//! error, client gone).

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, PoisonError};

use pingora_http::RequestHeader;
use serde::Deserialize;

use crate::rate_limit::write_counter_key;
use crate::{
    Entry, ErrorCode, KeyUse, Level, Phase, Plugin, PluginCtx, PluginEnv, Problem, Rejection,
    RequestKey,
};

const SHARDS: usize = 32;

/// `plugins.concurrency_limit` as written in the configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConcurrencyLimitConfig {
    /// What requests are counted by (same keys as `rate_limit`).
    pub key: String,
    /// Requests in flight allowed per key value.
    pub max: u32,
}

/// In-flight counts per key; only keys with requests in flight are held, so memory is
/// bounded by the number of requests in flight.
#[derive(Default)]
pub struct InFlight {
    shards: [Mutex<HashMap<u64, u32>>; SHARDS],
    hasher: RandomState,
}

impl InFlight {
    /// Takes a slot for `key` unless `max` are taken.
    pub fn try_acquire(self: &Arc<Self>, key: &[u8], max: u32) -> Option<Slot> {
        let hash = self.hasher.hash_one(key);
        let mut shard = self.shard(hash);
        let count = shard.entry(hash).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(Slot {
            in_flight: Arc::clone(self),
            hash,
        })
    }

    /// Requests in flight for `key`.
    pub fn count(&self, key: &[u8]) -> u32 {
        let hash = self.hasher.hash_one(key);
        self.shard(hash).get(&hash).copied().unwrap_or(0)
    }

    fn shard(&self, hash: u64) -> std::sync::MutexGuard<'_, HashMap<u64, u32>> {
        self.shards[(hash as usize) % SHARDS]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// One request's place; dropping it frees the place.
pub struct Slot {
    in_flight: Arc<InFlight>,
    hash: u64,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut shard = self.in_flight.shard(self.hash);
        if let Some(count) = shard.get_mut(&self.hash) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                shard.remove(&self.hash);
            }
        }
    }
}

/// The slot as kept in the request's extensions (which need `Clone`).
#[derive(Clone)]
struct HeldSlot(#[allow(dead_code)] Arc<Slot>);

/// The compiled `concurrency_limit` plugin.
pub struct ConcurrencyLimit {
    key: RequestKey,
    max: u32,
    /// Route-level limits count per route; the global section's count across routes.
    route_level: bool,
    in_flight: Arc<InFlight>,
}

impl Entry for ConcurrencyLimit {
    const NAME: &'static str = "concurrency_limit";
    const PHASE: Phase = Phase::Concurrency;
    type Config = ConcurrencyLimitConfig;

    /// Checks the configuration; counts carry over reloads that keep the key.
    fn compile(
        config: &ConcurrencyLimitConfig,
        level: Level,
        env: &PluginEnv,
    ) -> Result<Self, Vec<Problem>> {
        let key = RequestKey::parse(&config.key, KeyUse::Limit)
            .map_err(|message| vec![Problem::new("key", message)])?;
        if config.max == 0 {
            return Err(vec![Problem::new("max", "must be at least 1")]);
        }
        let identity = format!("{}|{}", Self::NAME, config.key);
        Ok(Self {
            key,
            max: config.max,
            route_level: level == Level::Route,
            in_flight: env
                .retained
                .get_or_insert_with(&identity, InFlight::default),
        })
    }
}

impl ConcurrencyLimit {
    /// The request hook's verdict; never waits.
    fn decide(&self, req: &mut RequestHeader, ctx: &mut PluginCtx) -> Result<(), Rejection> {
        let mut key = Vec::with_capacity(64);
        write_counter_key(&self.key, self.route_level, req, ctx, &mut key);
        match self.in_flight.try_acquire(&key, self.max) {
            Some(slot) => {
                ctx.extensions.insert(HeldSlot(Arc::new(slot)));
                Ok(())
            }
            None => Err(Rejection::new(
                ErrorCode::ConcurrencyLimited,
                format!("more than {} requests in flight", self.max),
            )
            .retry_after(1)),
        }
    }
}

impl Plugin for ConcurrencyLimit {
    fn request_now(
        &self,
        req: &mut RequestHeader,
        ctx: &mut PluginCtx,
    ) -> Option<Result<(), Rejection>> {
        Some(self.decide(req, ctx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_capped_and_freed_on_drop() {
        let in_flight = Arc::new(InFlight::default());
        let held: Vec<Slot> = (0..3)
            .filter_map(|_| in_flight.try_acquire(b"k", 3))
            .collect();
        assert_eq!(held.len(), 3);
        assert!(in_flight.try_acquire(b"k", 3).is_none());
        assert!(
            in_flight.try_acquire(b"other", 3).is_some(),
            "keys are apart"
        );
        drop(held);
        assert_eq!(in_flight.count(b"k"), 0);
        assert!(in_flight.try_acquire(b"k", 3).is_some());
    }

    #[tokio::test]
    async fn the_slot_lives_as_long_as_the_request_context() {
        let config = ConcurrencyLimitConfig {
            key: "consumer".into(),
            max: 1,
        };
        let plugin =
            ConcurrencyLimit::compile(&config, Level::Global, &PluginEnv::check()).expect("valid");
        let mut req = RequestHeader::build("GET", b"/", None).expect("request");
        let mut first = PluginCtx {
            consumer: Some("acme".into()),
            ..PluginCtx::default()
        };
        let mut second = PluginCtx {
            consumer: Some("acme".into()),
            ..PluginCtx::default()
        };
        assert!(plugin.request(&mut req, &mut first).await.is_ok());
        let refused = plugin
            .request(&mut req, &mut second)
            .await
            .expect_err("full");
        assert_eq!(refused.code, ErrorCode::ConcurrencyLimited);
        drop(first);
        assert!(plugin.request(&mut req, &mut second).await.is_ok());
    }
}
