//! The first decision about a new connection, before any HTTP (and before TLS): which
//! listener it came to, whether the caps leave room for it, who its client is when it
//! starts with a PROXY header, and, on TLS listeners, whether the ClientHello arrives in
//! time. Pingora runs it as the pre-TLS callback of TLS listeners; the [`super::Gate`]
//! runs it for plain ones.

use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use pingora::listeners::PreTlsProcess;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::{GetSocketDigest, Peek};
use pingora::upstreams::peer::Tracer;
use pingora_error::{Error, ErrorType};
use prometheus::IntCounterVec;
use tokio::time::{timeout_at, Instant};

use super::limiter::{ListenerCount, Permit, Refusal};
use super::proxy_protocol::{self, NoHeader, ProxiedPeer};
use crate::model::connections::{ConnectionPolicy, ListenerPolicy};

/// The TLS record type of a handshake message (a ClientHello comes in one).
const TLS_HANDSHAKE: u8 = 0x16;
/// The largest TLS record payload (RFC 8446 §5.1) plus the room expansion may take.
const MAX_TLS_RECORD: usize = 16384 + 2048;

/// Admits or refuses new connections by the process's [`ConnectionPolicy`].
pub struct Admission {
    policy: Arc<ConnectionPolicy>,
    /// Open connections, one count per listener of `policy`.
    counts: Vec<Arc<ListenerCount>>,
    /// `portcullis_connections_refused_total{listener,reason}`.
    refused: IntCounterVec,
}

/// Why a connection is closed before it is served.
#[derive(Debug)]
pub enum Closed {
    /// Refused by the policy (counted in `portcullis_connections_refused_total`).
    Refused(Refusal),
    /// The TLS ClientHello did not arrive within the request head timeout.
    Silent,
    /// The peer closed before sending anything (a TCP health check, a port probe).
    PeerLeft,
}

impl Admission {
    /// Admission by `policy`, counting refusals in `refused`.
    pub fn new(policy: Arc<ConnectionPolicy>, refused: IntCounterVec) -> Self {
        // Every series exists from the start at 0, so `rate()` and alerts see the first
        // refusal.
        for listener in &policy.listeners {
            for refusal in Refusal::ALL {
                refused.with_label_values(&[&listener.label, refusal.as_str()]);
            }
        }
        let counts = policy
            .listeners
            .iter()
            .map(|l| ListenerCount::new(l.max_connections, l.max_connections_per_ip))
            .collect();
        Self {
            policy,
            counts,
            refused,
        }
    }

    /// The policy connections are admitted by.
    pub fn policy(&self) -> &Arc<ConnectionPolicy> {
        &self.policy
    }

    /// Admits `stream`, which was just accepted: on success it carries its places in the
    /// caps until it closes, and its peer is the client a PROXY header named.
    pub async fn admit(&self, stream: &mut L4Stream) -> Result<(), Closed> {
        let digest = stream.get_socket_digest();
        let addresses = digest.as_ref().and_then(|digest| {
            let local = digest.local_addr()?.as_inet()?;
            let peer = digest.peer_addr()?.as_inet()?;
            Some((*local, *peer))
        });
        let Some((local, peer)) = addresses else {
            // Not a TCP connection (a Unix socket): nothing to count or believe.
            return Ok(());
        };
        let Some((index, listener)) = self.policy.listener(local) else {
            return Ok(());
        };
        let deadline = Instant::now() + self.policy.request_header_timeout;
        match self
            .place(stream, listener, &self.counts[index], peer, deadline)
            .await
        {
            Ok(permit) => stream.tracer = Some(Tracer(Box::new(permit))),
            Err(Closed::Refused(refusal)) => {
                self.refused
                    .with_label_values(&[&listener.label, refusal.as_str()])
                    .inc();
                return Err(Closed::Refused(refusal));
            }
            Err(closed) => return Err(closed),
        }
        if listener.tls && !client_hello_arrives(stream, deadline).await {
            return Err(Closed::Silent);
        }
        Ok(())
    }

    async fn place(
        &self,
        stream: &mut L4Stream,
        listener: &ListenerPolicy,
        count: &Arc<ListenerCount>,
        peer: SocketAddr,
        deadline: Instant,
    ) -> Result<Permit, Closed> {
        let mut permit = count.admit().map_err(Closed::Refused)?;
        let trusted = &self.policy.client_address;
        let mut client = peer.ip();
        if listener.proxy_protocol {
            if !trusted.trusts(client) {
                count
                    .admit_client(&mut permit, client)
                    .map_err(Closed::Refused)?;
                return Err(untrusted(stream, deadline).await);
            }
            match timeout_at(deadline, proxy_protocol::read_header(stream)).await {
                Ok(Ok(ProxiedPeer::Client(address))) => {
                    proxy_protocol::set_peer(stream, address);
                    client = address.ip();
                }
                Ok(Ok(ProxiedPeer::Local)) => {}
                Ok(Err(NoHeader::PeerLeft)) => return Err(Closed::PeerLeft),
                Ok(Err(NoHeader::Invalid)) | Err(_) => {
                    return Err(Closed::Refused(Refusal::InvalidProxyHeader))
                }
            }
        }
        if !trusted.trusts(client) {
            count
                .admit_client(&mut permit, client)
                .map_err(Closed::Refused)?;
        }
        Ok(permit)
    }
}

/// Refuses a peer outside `trusted_proxies` on a PROXY protocol listener once it sends
/// its first byte (or `deadline` passes); one that leaves without a byte (a health check,
/// a port probe) is not counted.
async fn untrusted(stream: &mut L4Stream, deadline: Instant) -> Closed {
    match timeout_at(deadline, stream.try_peek(&mut [0u8])).await {
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => Closed::PeerLeft,
        _ => Closed::Refused(Refusal::UntrustedProxy),
    }
}

/// Waits (until `deadline`) for the first TLS record, which carries the ClientHello, and
/// leaves it unread for the handshake. Pingora bounds the rest of the handshake.
async fn client_hello_arrives(stream: &mut L4Stream, deadline: Instant) -> bool {
    let first_record = async {
        let mut header = [0u8; 5];
        stream.try_peek(&mut header).await.ok()?;
        if header[0] != TLS_HANDSHAKE {
            // Not TLS: the handshake refuses it at once.
            return Some(());
        }
        let length = usize::from(u16::from_be_bytes([header[3], header[4]])).min(MAX_TLS_RECORD);
        let mut record = vec![0u8; header.len() + length];
        stream.try_peek(&mut record).await.ok().map(drop)
    };
    matches!(timeout_at(deadline, first_record).await, Ok(Some(())))
}

#[async_trait]
impl PreTlsProcess for Admission {
    async fn process(&self, stream: &mut L4Stream) -> pingora_error::Result<()> {
        match self.admit(stream).await {
            Ok(()) => Ok(()),
            Err(Closed::Refused(refusal)) => {
                Error::e_explain(ErrorType::ConnectionClosed, refusal.as_str())
            }
            Err(Closed::Silent) => Error::e_explain(
                ErrorType::ConnectionClosed,
                "no TLS ClientHello within server.request_header_timeout",
            ),
            Err(Closed::PeerLeft) => {
                Error::e_explain(ErrorType::ConnectionClosed, "closed before a PROXY header")
            }
        }
    }
}
