//! Tokens already verified, so a client sending the same token on every request pays for
//! its signature once (an RS256 verification costs about as much as proxying the request).
//!
//! A direct-mapped table of a fixed number of slots, each an atomically swapped entry:
//! lookups take no lock, memory is bounded, and a collision just replaces the older
//! entry. An entry is used only for the exact same token string, verified under the very
//! key set in service now (a JWKS refresh starts over), and `exp`/`nbf` are checked again
//! on every hit. Only tokens that passed every check (claims and scopes) are stored.

use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use serde_json::{Map, Value};

use super::keys::KeySet;
use crate::consumers::Consumer;

/// Slots per `jwt` plugin instance.
const SLOTS: usize = 1024;

/// What a verified token established.
pub struct Verified {
    /// The token's claims.
    pub claims: Arc<Map<String, Value>>,
    /// The consumer its subject maps to.
    pub consumer: Option<Arc<Consumer>>,
    exp: Option<u64>,
    nbf: Option<u64>,
}

impl Verified {
    /// Records a verification's outcome.
    pub fn new(claims: Arc<Map<String, Value>>, consumer: Option<Arc<Consumer>>) -> Self {
        let time = |name: &str| claims.get(name).and_then(Value::as_u64);
        Self {
            exp: time("exp"),
            nbf: time("nbf"),
            claims,
            consumer,
        }
    }

    /// Whether the token is still within its validity at `now` (same rule as the
    /// verifier: `exp` and `nbf` with `leeway`).
    fn current(&self, now: u64, leeway: u64) -> bool {
        self.exp
            .is_some_and(|exp| exp >= now.saturating_sub(leeway))
            && self.nbf.is_none_or(|nbf| nbf <= now.saturating_add(leeway))
    }
}

struct Entry {
    token: Box<str>,
    /// Holding the set keeps its address from being reused by a later set.
    keys: Arc<KeySet>,
    verified: Arc<Verified>,
}

/// The verified-token table of one `jwt` plugin.
pub struct TokenCache {
    slots: Box<[ArcSwapOption<Entry>]>,
    hasher: RandomState,
    leeway: u64,
}

impl TokenCache {
    /// An empty table; `leeway` is the plugin's, in seconds.
    pub fn new(leeway: u64) -> Self {
        Self {
            slots: (0..SLOTS).map(|_| ArcSwapOption::empty()).collect(),
            hasher: RandomState::new(),
            leeway,
        }
    }

    fn slot(&self, token: &str) -> &ArcSwapOption<Entry> {
        let index = self.hasher.hash_one(token) as usize % self.slots.len();
        &self.slots[index]
    }

    /// The earlier outcome for `token` under `keys`, if still valid at `now`.
    pub fn get(&self, token: &str, keys: &Arc<KeySet>, now: u64) -> Option<Arc<Verified>> {
        let entry = self.slot(token).load();
        let entry = entry.as_ref()?;
        (Arc::ptr_eq(&entry.keys, keys)
            && *entry.token == *token
            && entry.verified.current(now, self.leeway))
        .then(|| Arc::clone(&entry.verified))
    }

    /// Remembers that `token` passed under `keys`.
    pub fn insert(&self, token: &str, keys: &Arc<KeySet>, verified: Arc<Verified>) {
        self.slot(token).store(Some(Arc::new(Entry {
            token: token.into(),
            keys: Arc::clone(keys),
            verified,
        })));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn verified(claims: Value) -> Arc<Verified> {
        Arc::new(Verified::new(
            Arc::new(claims.as_object().cloned().expect("object")),
            None,
        ))
    }

    #[test]
    fn a_hit_needs_the_same_token_the_same_keys_and_a_current_token() {
        let cache = TokenCache::new(10);
        let keys = Arc::new(KeySet::secret(b"0123456789abcdef0123456789abcdef"));
        let other_keys = Arc::new(KeySet::secret(b"0123456789abcdef0123456789abcdef"));
        cache.insert("tok", &keys, verified(json!({"exp": 1000, "nbf": 900})));

        assert!(cache.get("tok", &keys, 1000).is_some());
        assert!(cache.get("tok", &keys, 1010).is_some(), "within the leeway");
        assert!(cache.get("tok", &keys, 1011).is_none(), "expired");
        assert!(cache.get("tok", &keys, 889).is_none(), "not yet valid");
        assert!(
            cache.get("tok", &other_keys, 1000).is_none(),
            "another key set"
        );
        assert!(cache.get("tok2", &keys, 1000).is_none());
    }

    #[test]
    fn a_token_without_exp_is_never_served_from_the_cache() {
        let cache = TokenCache::new(0);
        let keys = Arc::new(KeySet::secret(b"0123456789abcdef0123456789abcdef"));
        cache.insert("tok", &keys, verified(json!({"sub": "u"})));
        assert!(cache.get("tok", &keys, 1).is_none());
    }
}
