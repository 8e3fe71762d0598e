//! `jwks_url`: a JWKS fetched off the request path by one thread per URL, refreshed every
//! `jwks_refresh`, refetched early (at most once per 10 s) when a token names an unknown
//! `kid`. The request that named it, and every other request with an unknown kid while that
//! refetch runs, waits for the one refetch (at most [`REFETCH_WAIT`]) and is verified
//! against its keys. The last good set stays in service until a new one loads, so
//! signing-key rotation needs no restart, and a failed fetch never drops keys that work.

use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use tokio::sync::watch;

use super::keys::KeySet;

/// Fewest seconds between two refetches asked for by unknown kids.
const NUDGE_INTERVAL: Duration = Duration::from_secs(10);
/// Longest a request with an unknown kid waits for the refetch; past it the request is
/// refused as if the kid were still unknown (the refetch goes on).
pub const REFETCH_WAIT: Duration = Duration::from_secs(2);
/// A JWKS larger than this is refused (a few dozen keys take a few KiB).
const MAX_DOCUMENT: u64 = 1 << 20;
/// First retry delay after a failed fetch; doubles up to `LAST_RETRY` (or `jwks_refresh`
/// when shorter), so a route waiting for its first keys recovers soon after the issuer.
const FIRST_RETRY: Duration = Duration::from_millis(500);
const LAST_RETRY: Duration = Duration::from_secs(5);

/// A remote JWKS and the thread keeping it fresh. Dropping it (the configuration that
/// used it was replaced) stops the thread.
pub struct RemoteJwks {
    shared: Arc<Shared>,
}

/// What the fetcher thread and the request path share. The thread holds only this, so
/// it never keeps the [`RemoteJwks`] alive.
struct Shared {
    url: String,
    keys: ArcSwapOption<KeySet>,
    /// Milliseconds after `started` of the last refetch asked for by an unknown kid.
    last_nudge_ms: AtomicU64,
    started: Instant,
    wake: Condvar,
    orders: Mutex<Orders>,
    /// Whether a fetcher thread runs (false for `portcullis check`).
    fetching: bool,
    /// The number of the last fetch that completed, successfully or not.
    completed: watch::Sender<u64>,
}

#[derive(Default)]
struct Orders {
    refetch: bool,
    stop: bool,
    /// Fetches begun so far: the number of the latest.
    begun: u64,
    /// The number of the fetch that serves the last refetch asked for.
    asked: u64,
}

impl RemoteJwks {
    /// Starts fetching `url` every `refresh` when `background` is true; otherwise (for
    /// `portcullis check`) nothing is fetched and no key is ever available.
    pub fn start(url: &str, refresh: Duration, background: bool) -> Self {
        let shared = Arc::new(Shared {
            url: url.to_string(),
            keys: ArcSwapOption::empty(),
            last_nudge_ms: AtomicU64::new(u64::MAX),
            started: Instant::now(),
            wake: Condvar::new(),
            orders: Mutex::new(Orders::default()),
            fetching: background,
            completed: watch::Sender::new(0),
        });
        if background {
            let thread_shared = Arc::clone(&shared);
            let spawned = std::thread::Builder::new()
                .name("jwks-fetch".into())
                .spawn(move || fetch_loop(&thread_shared, refresh));
            if let Err(e) = spawned {
                log::error!("jwt: cannot start the JWKS fetcher for {url}: {e}");
            }
        }
        Self { shared }
    }

    /// The keys of the last successful fetch; `None` until one succeeded.
    pub fn keys(&self) -> arc_swap::Guard<Option<Arc<KeySet>>> {
        self.shared.keys.load()
    }

    /// A token named a kid the set lacks: asks for a refetch unless one was asked for less
    /// than 10 s ago, and waits (at most [`REFETCH_WAIT`]) for the refetch asked for, by
    /// this request or an earlier one, to complete; [`RemoteJwks::keys`] then holds what
    /// it found.
    pub async fn refetched(&self) {
        let Some(number) = self.ask_refetch() else {
            return;
        };
        let mut completed = self.shared.completed.subscribe();
        let done = completed.wait_for(|completed| *completed >= number);
        // Past the bound the request is answered with the keys in service.
        let _ = tokio::time::timeout(REFETCH_WAIT, done).await;
    }

    /// Asks for a refetch (at most one per 10 s); returns the number of the fetch that
    /// serves the last one asked for, while it has not completed.
    fn ask_refetch(&self) -> Option<u64> {
        let shared = &self.shared;
        if !shared.fetching {
            return None;
        }
        let now = shared.started.elapsed().as_millis() as u64;
        let last = shared.last_nudge_ms.load(Ordering::Relaxed);
        let interval = NUDGE_INTERVAL.as_millis() as u64;
        let due = last == u64::MAX || now.saturating_sub(last) >= interval;
        let asked_now = due
            && shared
                .last_nudge_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok();
        let mut orders = lock(&shared.orders);
        if asked_now {
            orders.refetch = true;
            // A fetch under way began before the kid was seen: the next one serves it.
            orders.asked = orders.begun + 1;
            shared.wake.notify_one();
        }
        (orders.asked > *shared.completed.borrow()).then_some(orders.asked)
    }

    /// Installs a key set as if fetched (tests and benches).
    pub fn install(&self, keys: KeySet) {
        self.shared.keys.store(Some(Arc::new(keys)));
    }
}

impl Drop for RemoteJwks {
    fn drop(&mut self) {
        lock(&self.shared.orders).stop = true;
        self.shared.wake.notify_one();
    }
}

fn lock(orders: &Mutex<Orders>) -> std::sync::MutexGuard<'_, Orders> {
    orders.lock().unwrap_or_else(PoisonError::into_inner)
}

fn fetch_loop(shared: &Shared, refresh: Duration) {
    let agent = match agent() {
        Ok(agent) => agent,
        Err(e) => {
            log::error!("jwt: no TLS for the JWKS fetcher of {}: {e}", shared.url);
            return;
        }
    };
    let mut wait = Duration::ZERO;
    let mut failures: u32 = 0;
    loop {
        let number = {
            let orders = lock(&shared.orders);
            let (mut orders, _) = shared
                .wake
                .wait_timeout_while(orders, wait, |orders| !orders.stop && !orders.refetch)
                .unwrap_or_else(PoisonError::into_inner);
            if orders.stop {
                return;
            }
            orders.refetch = false;
            orders.begun += 1;
            orders.begun
        };
        match fetch(&agent, &shared.url) {
            Ok((keys, skipped)) => {
                if failures > 0 || shared.keys.load().is_none() {
                    log::info!(
                        "jwt: loaded {} key(s) from {}{}",
                        keys.len(),
                        shared.url,
                        if skipped.is_empty() {
                            String::new()
                        } else {
                            format!(" (skipped {})", skipped.join("; "))
                        }
                    );
                }
                shared.keys.store(Some(Arc::new(keys)));
                failures = 0;
                wait = refresh;
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                // First failure, then one line per 16 so a long outage does not flood.
                if failures == 1 || failures.is_multiple_of(16) {
                    let kept = if shared.keys.load().is_some() {
                        "keeping the previous keys"
                    } else {
                        "no keys yet: its routes answer 503 AUTH_KEYS_UNAVAILABLE"
                    };
                    log::warn!(
                        "jwt: fetching {} failed ({failures} in a row; {kept}): {e}",
                        shared.url
                    );
                }
                wait = FIRST_RETRY
                    .saturating_mul(1 << (failures - 1).min(16))
                    .min(LAST_RETRY)
                    .min(refresh);
            }
        }
        shared.completed.send_replace(number);
    }
}

fn agent() -> Result<ureq::Agent, native_tls::Error> {
    Ok(ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .tls_connector(Arc::new(native_tls::TlsConnector::new()?))
        .build())
}

fn fetch(agent: &ureq::Agent, url: &str) -> Result<(KeySet, Vec<String>), String> {
    let response = agent.get(url).call().map_err(|e| e.to_string())?;
    let mut body = Vec::new();
    response
        .into_reader()
        .take(MAX_DOCUMENT + 1)
        .read_to_end(&mut body)
        .map_err(|e| format!("reading the body: {e}"))?;
    if body.len() as u64 > MAX_DOCUMENT {
        return Err(format!("document larger than {MAX_DOCUMENT} bytes"));
    }
    KeySet::from_jwks(&body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_background_nothing_is_fetched_and_refetches_are_not_waited_for() {
        let remote = RemoteJwks::start("http://127.0.0.1:9/jwks.json", refresh(), false);
        assert!(remote.keys().is_none());
        assert_eq!(remote.ask_refetch(), None, "no fetcher to wait for");
        remote.install(KeySet::secret(b"0123456789abcdef0123456789abcdef"));
        assert!(remote.keys().is_some());
    }

    #[test]
    fn a_dropped_fetcher_stops_its_thread() {
        let remote = RemoteJwks::start("http://127.0.0.1:9/jwks.json", refresh(), true);
        let shared = Arc::clone(&remote.shared);
        drop(remote);
        let deadline = Instant::now() + Duration::from_secs(20);
        // The thread's clone is released when it returns.
        while Arc::strong_count(&shared) > 1 {
            assert!(Instant::now() < deadline, "fetcher thread still running");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn refresh() -> Duration {
        Duration::from_secs(300)
    }
}
