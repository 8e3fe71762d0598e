//! What plugins are built with: the facts of one configuration load that are not in a
//! plugin's own config section (metrics sink, state carried over from the previous load).

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::auth::failures::AuthFailureLimit;
use crate::consumers::Consumers;

/// Counters plugins report into. The core implements it with its Prometheus metrics;
/// label values passed here are configuration names or static strings, never request data.
pub trait Telemetry: Send + Sync {
    /// `portcullis_auth_failures_total{route,plugin,reason}`.
    fn auth_failure(&self, _route: &str, _plugin: &'static str, _reason: &'static str) {}
    /// `portcullis_rate_limited_total{route,rule}`.
    fn rate_limited(&self, _route: &str, _rule: &str) {}
    /// `portcullis_rate_limit_backend_errors_total{backend}`.
    fn backend_error(&self, _backend: &'static str) {}
}

/// A [`Telemetry`] that counts nothing (tests, `portcullis check`).
pub struct NoTelemetry;

impl Telemetry for NoTelemetry {}

/// The context every plugin of one configuration load is built in.
pub struct PluginEnv {
    /// Where plugins count what they see.
    pub telemetry: Arc<dyn Telemetry>,
    /// State carried over from the previous configuration (rate-limit counters, JWKS
    /// caches...), so that a reload does not reset it.
    pub retained: Retained,
    /// Whether plugins may start background work (key fetches, connections). False for
    /// `portcullis check`, which only validates.
    pub background: bool,
    /// The `consumers:` section, compiled (API key digests, JWT subject patterns).
    pub consumers: Arc<Consumers>,
    /// The per-client-IP cap on failed authentications (`auth_failure_limit`), if set.
    pub auth_failure_limit: Option<Arc<AuthFailureLimit>>,
    /// The top-level `redis` section, compiled, for rules with `backend: redis`.
    pub redis: Option<Arc<crate::rate_limit::RedisBackend>>,
}

impl PluginEnv {
    /// An environment for validation only: no telemetry, nothing retained, no background work.
    pub fn check() -> Self {
        Self {
            telemetry: Arc::new(NoTelemetry),
            retained: Retained::fresh(),
            background: false,
            consumers: Arc::default(),
            auth_failure_limit: None,
            redis: None,
        }
    }
}

type Entries = HashMap<(TypeId, String), Arc<dyn Any + Send + Sync>>;

/// The state a configuration's plugins hold, keyed by type and a plugin-chosen key.
/// The compiled configuration keeps it so the next load can take over what it still uses.
#[derive(Default)]
pub struct RetainedSet {
    entries: Mutex<Entries>,
}

impl RetainedSet {
    /// How many entries are held.
    pub fn len(&self) -> usize {
        lock(&self.entries).len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Builds the [`RetainedSet`] of a new configuration, taking over entries of the previous
/// one by key. Entries the new configuration does not ask for are dropped with the old
/// configuration, so state of removed rules does not accumulate.
pub struct Retained {
    previous: Option<Arc<RetainedSet>>,
    current: Arc<RetainedSet>,
}

impl Retained {
    /// Nothing to take over (first load).
    pub fn fresh() -> Self {
        Self {
            previous: None,
            current: Arc::default(),
        }
    }

    /// Takes over from the set of the configuration being replaced.
    pub fn after(previous: Arc<RetainedSet>) -> Self {
        Self {
            previous: Some(previous),
            current: Arc::default(),
        }
    }

    /// The state of type `T` under `key`: the same `Arc` as the previous configuration's
    /// when it had one, else `make()`. The key must change whenever the state would no
    /// longer be valid (e.g. include the rule's algorithm and limits).
    pub fn get_or_insert_with<T: Any + Send + Sync>(
        &self,
        key: &str,
        make: impl FnOnce() -> T,
    ) -> Arc<T> {
        let id = (TypeId::of::<T>(), key.to_string());
        let mut current = lock(&self.current.entries);
        let found = current.get(&id).cloned().or_else(|| {
            self.previous
                .as_ref()
                .and_then(|previous| lock(&previous.entries).get(&id).cloned())
        });
        let entry = found.unwrap_or_else(|| Arc::new(make()));
        current.insert(id, Arc::clone(&entry));
        entry
            .downcast::<T>()
            .expect("retained entries are stored under their own TypeId")
    }

    /// The set to keep with the compiled configuration.
    pub fn into_set(self) -> Arc<RetainedSet> {
        self.current
    }
}

fn lock(entries: &Mutex<Entries>) -> std::sync::MutexGuard<'_, Entries> {
    entries.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn state_survives_into_the_next_load_only_when_asked_for() {
        let first = Retained::fresh();
        let counter = first.get_or_insert_with("rule-a", || AtomicU64::new(0));
        counter.fetch_add(5, Ordering::Relaxed);
        first.get_or_insert_with("rule-b", || AtomicU64::new(7));
        let first = first.into_set();

        let second = Retained::after(first);
        let again = second.get_or_insert_with("rule-a", || AtomicU64::new(0));
        assert_eq!(again.load(Ordering::Relaxed), 5);
        let second = second.into_set();
        assert_eq!(second.len(), 1, "rule-b was not asked for and is dropped");

        let third = Retained::after(second);
        let fresh = third.get_or_insert_with("rule-b", || AtomicU64::new(0));
        assert_eq!(fresh.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn the_same_key_with_another_type_is_another_entry() {
        let retained = Retained::fresh();
        retained.get_or_insert_with("k", || 1u32);
        let other = retained.get_or_insert_with("k", || String::from("x"));
        assert_eq!(*other, "x");
    }
}
