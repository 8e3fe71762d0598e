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
use std::sync::{Mutex, MutexGuard, PoisonError};
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

type Map<S> = HashMap<u64, Slot<S>>;
type Shard<S> = Mutex<Map<S>>;

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
        let (shard, hash) = self.locate(key);
        let mut map = shard.lock().unwrap_or_else(PoisonError::into_inner);
        f(self.slot(&mut map, hash, now_ns, idle_ns))
    }

    /// The shard holding `key`, and the key's hash (its id in the shard).
    fn locate(&self, key: &[u8]) -> (&Shard<S>, u64) {
        // 64 keyed bits: the chance that two live keys share a hash is negligible.
        let hash = self.hasher.hash_one(key);
        (&self.shards[(hash as usize) % self.shards.len()], hash)
    }

    /// The state of the key `hash` in its (locked) shard at `now_ns`: made, or reset when
    /// it has been at rest for `idle_ns`.
    fn slot<'m>(&self, map: &'m mut Map<S>, hash: u64, now_ns: u64, idle_ns: u64) -> &'m mut S {
        if map.len() >= self.capacity && !map.contains_key(&hash) {
            make_room(map, now_ns, idle_ns, self.capacity);
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
        &mut slot.state
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

/// The states of several keys, each in a store of its own (one request's keys under its
/// rules), locked together: what is decided on them while locked, no other request sees
/// half done. Shards are locked in address order, so two requests never wait on each
/// other in a cycle.
pub struct Locked<'a, S> {
    /// The keys as given: store, shard (index into `guards`), hash and idle time.
    keys: Vec<(&'a LocalStore<S>, usize, u64, u64)>,
    guards: Vec<(&'a Shard<S>, MutexGuard<'a, Map<S>>)>,
}

impl<'a, S: Default> Locked<'a, S> {
    /// Locks the shards of `keys` (store, key, idle time of its states).
    pub fn lock(keys: impl Iterator<Item = (&'a LocalStore<S>, &'a [u8], u64)>) -> Self {
        let located: Vec<_> = keys
            .map(|(store, key, idle_ns)| {
                let (shard, hash) = store.locate(key);
                (store, shard, hash, idle_ns)
            })
            .collect();
        let mut shards: Vec<&'a Shard<S>> = located.iter().map(|(_, shard, ..)| *shard).collect();
        shards.sort_by_key(|shard| std::ptr::from_ref(*shard));
        shards.dedup_by_key(|shard| std::ptr::from_ref(*shard));
        let guards: Vec<_> = shards
            .into_iter()
            .map(|shard| {
                let guard = shard.lock().unwrap_or_else(PoisonError::into_inner);
                (shard, guard)
            })
            .collect();
        let keys = located
            .into_iter()
            .map(|(store, shard, hash, idle_ns)| {
                let index = guards
                    .iter()
                    .position(|(locked, _)| std::ptr::eq(*locked, shard))
                    .unwrap_or_default();
                (store, index, hash, idle_ns)
            })
            .collect();
        Self { keys, guards }
    }

    /// The state of the `i`th key given to [`Locked::lock`], at its store's clock, which
    /// is returned with it.
    pub fn state(&mut self, i: usize) -> Option<(&mut S, u64)> {
        let (store, shard, hash, idle_ns) = *self.keys.get(i)?;
        let now_ns = store.now_ns();
        let (_, map) = self.guards.get_mut(shard)?;
        Some((store.slot(map, hash, now_ns, idle_ns), now_ns))
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
    fn keys_locked_together_are_each_their_own() {
        let (a, b): (LocalStore<u32>, LocalStore<u32>) = Default::default();
        let keys = [
            (&a, &b"x"[..], u64::MAX),
            (&b, &b"x"[..], u64::MAX),
            (&a, &b"y"[..], u64::MAX),
        ];
        {
            let mut locked = Locked::lock(keys.iter().copied());
            for (i, add) in [1, 10, 100].into_iter().enumerate() {
                let (state, _) = locked.state(i).expect("a key given");
                *state += add;
            }
            assert!(locked.state(3).is_none());
        }
        assert_eq!(a.with(b"x", 0, u64::MAX, |n| *n), 1);
        assert_eq!(b.with(b"x", 0, u64::MAX, |n| *n), 10);
        assert_eq!(a.with(b"y", 0, u64::MAX, |n| *n), 100);
    }

    #[test]
    fn a_key_at_rest_starts_afresh() {
        let store: LocalStore<u32> = LocalStore::default();
        store.with(b"a", 0, 100, |n| *n += 5);
        assert_eq!(store.with(b"a", 100, 100, |n| *n), 0);
    }
}
