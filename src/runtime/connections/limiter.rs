//! Counting open connections per listener and per client address, and refusing past the
//! caps. A [`Permit`] is taken when a connection is accepted and gives its places back
//! when the connection closes, whatever ends it.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use pingora::upstreams::peer::Tracing;

/// Why a connection was refused: the `reason` label of
/// `portcullis_connections_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The listener's `max_connections` is reached.
    MaxConnections,
    /// The client's `max_connections_per_ip` is reached.
    MaxConnectionsPerIp,
    /// A PROXY protocol listener was reached by a peer outside `trusted_proxies`.
    UntrustedProxy,
    /// The PROXY header was malformed, or did not arrive in time.
    InvalidProxyHeader,
}

impl Refusal {
    /// Every reason, so each listener's series can start at zero.
    pub const ALL: [Refusal; 4] = [
        Self::MaxConnections,
        Self::MaxConnectionsPerIp,
        Self::UntrustedProxy,
        Self::InvalidProxyHeader,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MaxConnections => "max_connections",
            Self::MaxConnectionsPerIp => "max_connections_per_ip",
            Self::UntrustedProxy => "proxy_protocol_untrusted",
            Self::InvalidProxyHeader => "proxy_protocol_invalid",
        }
    }
}

/// Shards of the per-address counts: a connection locks one shard for a hash-map update,
/// so accepts on different threads seldom wait for each other.
const SHARDS: usize = 32;

/// The open connections of one listener.
#[derive(Debug)]
pub struct ListenerCount {
    open: AtomicU32,
    max: Option<u32>,
    per_ip: Option<PerIpCount>,
}

#[derive(Debug)]
struct PerIpCount {
    max: u32,
    hasher: RandomState,
    shards: Box<[Mutex<HashMap<IpAddr, u32>>]>,
}

impl ListenerCount {
    /// Counts for a listener with these caps (`None`: unlimited).
    pub fn new(max: Option<u32>, max_per_ip: Option<u32>) -> Arc<Self> {
        Arc::new(Self {
            open: AtomicU32::new(0),
            max,
            per_ip: max_per_ip.map(|max| PerIpCount {
                max,
                hasher: RandomState::new(),
                shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            }),
        })
    }

    /// Takes a place for a new connection, unless the listener is full.
    pub fn admit(self: &Arc<Self>) -> Result<Permit, Refusal> {
        let taken = self.open.fetch_add(1, Ordering::AcqRel);
        let permit = Permit {
            listener: Some(Arc::clone(self)),
            client: None,
        };
        match self.max {
            // Dropping the permit gives the place back.
            Some(max) if taken >= max => Err(Refusal::MaxConnections),
            _ => Ok(permit),
        }
    }

    /// Adds `client` to `permit`, unless the address has all its places. Trusted proxies
    /// are not counted: many clients share their address.
    pub fn admit_client(
        self: &Arc<Self>,
        permit: &mut Permit,
        client: IpAddr,
    ) -> Result<(), Refusal> {
        let Some(per_ip) = &self.per_ip else {
            return Ok(());
        };
        let mut shard = per_ip.shard(client);
        let open = shard.entry(client).or_insert(0);
        if *open >= per_ip.max {
            return Err(Refusal::MaxConnectionsPerIp);
        }
        *open += 1;
        permit.client = Some(client);
        Ok(())
    }

    /// Open connections right now.
    #[cfg(test)]
    pub fn open(&self) -> u32 {
        self.open.load(Ordering::Acquire)
    }

    fn release(&self, client: Option<IpAddr>) {
        self.open.fetch_sub(1, Ordering::AcqRel);
        let (Some(per_ip), Some(client)) = (&self.per_ip, client) else {
            return;
        };
        let mut shard = per_ip.shard(client);
        if let Some(open) = shard.get_mut(&client) {
            *open -= 1;
            if *open == 0 {
                shard.remove(&client);
            }
        }
    }
}

impl PerIpCount {
    fn shard(&self, client: IpAddr) -> std::sync::MutexGuard<'_, HashMap<IpAddr, u32>> {
        let index = self.hasher.hash_one(client) as usize % self.shards.len();
        // A panic while holding a shard leaves plain counts behind: keep using them.
        self.shards[index]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// One connection's places; released on drop. It rides in the accepted socket's tracer
/// slot, so it lives exactly as long as the socket (TLS handshake included).
#[derive(Debug)]
pub struct Permit {
    listener: Option<Arc<ListenerCount>>,
    client: Option<IpAddr>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(listener) = self.listener.take() {
            listener.release(self.client);
        }
    }
}

impl Tracing for Permit {
    fn on_connected(&self) {}

    fn on_disconnected(&self) {}

    /// Pingora clones tracers only for upstream peers; a clone holds no places, so a
    /// connection's places are never given back twice.
    fn boxed_clone(&self) -> Box<dyn Tracing> {
        Box::new(Permit {
            listener: None,
            client: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listener_cap_refuses_until_a_connection_closes() {
        let count = ListenerCount::new(Some(2), None);
        let first = count.admit().expect("room");
        let _second = count.admit().expect("room");
        assert_eq!(count.admit().expect_err("full"), Refusal::MaxConnections);
        assert_eq!(count.open(), 2, "a refused connection gives its place back");
        drop(first);
        assert!(count.admit().is_ok());
    }

    #[test]
    fn the_per_address_cap_counts_each_address_alone() {
        let count = ListenerCount::new(None, Some(1));
        let a: IpAddr = [192, 0, 2, 1].into();
        let b: IpAddr = [192, 0, 2, 2].into();
        let mut first = count.admit().expect("room");
        count.admit_client(&mut first, a).expect("room for a");
        let mut second = count.admit().expect("room");
        assert_eq!(
            count.admit_client(&mut second, a).expect_err("a is full"),
            Refusal::MaxConnectionsPerIp
        );
        count.admit_client(&mut second, b).expect("room for b");
        drop(first);
        let mut third = count.admit().expect("room");
        count.admit_client(&mut third, a).expect("a has room again");
    }

    #[test]
    fn a_clone_of_a_permit_holds_nothing() {
        let count = ListenerCount::new(Some(1), None);
        let permit = count.admit().expect("room");
        drop(permit.boxed_clone());
        assert_eq!(count.open(), 1);
        drop(permit);
        assert_eq!(count.open(), 0);
    }
}
