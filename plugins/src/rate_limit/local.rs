//! The in-process counter store: exact per-key state in sharded maps with a fixed
//! capacity, so memory stays bounded whatever the number of keys.
//!
//! Why not pingora-limits: its count-min sketch over-counts when keys collide (a client
//! can be limited by another's traffic), and the rules promise exact counts. Here each
//! key has its own state; a key idle long enough for its state to be back at rest
//! (`idle_ns`) is forgotten, which changes nothing. Only when a shard is full of keys
//! that are all still active is one of them (the least recently seen of a small sample)
//! evicted early; that key starts afresh, so under such a flood of distinct keys a
//! limit can be under-enforced for the evicted keys, never over-enforced.

use std::collections::hash_map::{Entry, RandomState};
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

/// Shards: requests for different keys seldom wait on one another.
const SHARDS: usize = 32;
/// Keys per shard: 32 × 4,096 = 131,072 keys per rule, a few MiB at most.
const SHARD_CAPACITY: usize = 4_096;
/// Entries looked at to choose one to evict when a shard is full.
const EVICTION_SAMPLE: usize = 16;

struct Slot<S> {
    state: S,
    last_seen: u64,
}

type Shard<S> = Mutex<HashMap<u64, Slot<S>>>;

/// Per-key state of type `S` for one rule.
pub struct LocalStore<S> {
    shards: Box<[Shard<S>]>,
    hasher: RandomState,
    epoch: Instant,
    capacity: usize,
}

impl<S: Default> Default for LocalStore<S> {
    fn default() -> Self {
        Self::with_capacity(SHARD_CAPACITY)
    }
}

impl<S: Default> LocalStore<S> {
    /// A store holding at most `per_shard` keys in each of its shards.
    pub fn with_capacity(per_shard: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            epoch: Instant::now(),
            capacity: per_shard.max(1),
        }
    }

    /// Nanoseconds since the store was created: the clock of its states.
    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Runs `f` on the state of `key` at `now_ns`; states untouched for `idle_ns` are at
    /// rest and may be dropped to make room.
    pub fn with<R>(&self, key: &[u8], now_ns: u64, idle_ns: u64, f: impl FnOnce(&mut S) -> R) -> R {
        // 64 keyed bits: the chance that two live keys share a hash is negligible.
        let hash = self.hasher.hash_one(key);
        let shard = &self.shards[(hash as usize) % self.shards.len()];
        let mut map = shard.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= self.capacity && !map.contains_key(&hash) {
            make_room(&mut map, now_ns, idle_ns, self.capacity);
        }
        let slot = match map.entry(hash) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => entry.insert(Slot {
                state: S::default(),
                last_seen: now_ns,
            }),
        };
        if now_ns.saturating_sub(slot.last_seen) >= idle_ns {
            slot.state = S::default();
        }
        slot.last_seen = now_ns;
        f(&mut slot.state)
    }

    /// How many keys are held (for tests).
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }
}

fn make_room<S>(map: &mut HashMap<u64, Slot<S>>, now_ns: u64, idle_ns: u64, capacity: usize) {
    map.retain(|_, slot| now_ns.saturating_sub(slot.last_seen) < idle_ns);
    if map.len() >= capacity {
        let oldest = map
            .iter()
            .take(EVICTION_SAMPLE)
            .min_by_key(|(_, slot)| slot.last_seen)
            .map(|(hash, _)| *hash);
        if let Some(hash) = oldest {
            map.remove(&hash);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_key_has_its_own_state() {
        let store: LocalStore<u32> = LocalStore::default();
        for _ in 0..3 {
            store.with(b"a", 0, 1_000, |n| *n += 1);
        }
        store.with(b"b", 0, 1_000, |n| *n += 1);
        assert_eq!(store.with(b"a", 10, 1_000, |n| *n), 3);
        assert_eq!(store.with(b"b", 10, 1_000, |n| *n), 1);
    }

    #[test]
    fn memory_stays_bounded_and_idle_keys_go_first() {
        let store: LocalStore<u32> = LocalStore::with_capacity(8);
        for key in 0..10_000u32 {
            store.with(&key.to_le_bytes(), u64::from(key), 1_000_000, |n| *n += 1);
        }
        assert!(store.len() <= 8 * SHARDS, "{} keys held", store.len());
    }

    #[test]
    fn a_key_at_rest_starts_afresh() {
        let store: LocalStore<u32> = LocalStore::default();
        store.with(b"a", 0, 100, |n| *n += 5);
        assert_eq!(store.with(b"a", 100, 100, |n| *n), 0);
    }
}
