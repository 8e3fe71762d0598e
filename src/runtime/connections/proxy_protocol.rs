//! Reading a PROXY protocol header (v1 text or v2 binary, parsed by the `ppp` crate) from
//! the start of a connection, and making the address it names the connection's peer.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;

use bytes::BytesMut;
use pingora::protocols::l4::socket::SocketAddr as PeerAddr;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::{GetSocketDigest, SocketDigest};
use ppp::{v1, v2, HeaderResult, PartialResult};
use tokio::io::AsyncReadExt;

/// The longest header accepted: a v1 line is at most 107 bytes; a v2 header is 16 bytes
/// plus addresses and TLVs, which load balancers keep to a few hundred bytes.
const MAX_HEADER: usize = 4096;

/// What a PROXY header says about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxiedPeer {
    /// The client the proxy relays.
    Client(SocketAddr),
    /// A connection of the proxy's own (v2 `LOCAL`, v1 `UNKNOWN`, or a non-IP family,
    /// e.g. a health check): the peer stays the proxy.
    Local,
}

/// Why no PROXY header was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoHeader {
    /// The bytes are not a valid header (or the connection ended inside one).
    Invalid,
    /// The peer closed without sending a byte: a TCP health check or a port probe.
    PeerLeft,
}

/// Reads the header at the start of `stream`, leaving every byte after it unread.
pub async fn read_header(stream: &mut L4Stream) -> Result<ProxiedPeer, NoHeader> {
    let mut buf = BytesMut::with_capacity(256);
    loop {
        match stream.read_buf(&mut buf).await {
            Ok(0) | Err(_) if buf.is_empty() => return Err(NoHeader::PeerLeft),
            Ok(0) | Err(_) => return Err(NoHeader::Invalid),
            Ok(_) => {}
        }
        let (peer, length) = match parse(&buf) {
            Parsed::Incomplete if buf.len() < MAX_HEADER => continue,
            Parsed::Incomplete | Parsed::Invalid => return Err(NoHeader::Invalid),
            Parsed::Complete(peer, length) => (peer, length),
        };
        let rest = buf.split_off(length);
        stream.rewind(&rest);
        return Ok(peer);
    }
}

enum Parsed {
    Complete(ProxiedPeer, usize),
    Incomplete,
    Invalid,
}

fn parse(bytes: &[u8]) -> Parsed {
    let result = HeaderResult::parse(bytes);
    if result.is_incomplete() {
        return Parsed::Incomplete;
    }
    match result {
        HeaderResult::V1(Ok(header)) => {
            let peer = match header.addresses {
                v1::Addresses::Tcp4(a) => client(a.source_address.into(), a.source_port),
                v1::Addresses::Tcp6(a) => client(a.source_address.into(), a.source_port),
                v1::Addresses::Unknown => ProxiedPeer::Local,
            };
            Parsed::Complete(peer, header.header.len())
        }
        HeaderResult::V2(Ok(header)) => {
            let peer = match (header.command, header.addresses) {
                (v2::Command::Proxy, v2::Addresses::IPv4(a)) => {
                    client(a.source_address.into(), a.source_port)
                }
                (v2::Command::Proxy, v2::Addresses::IPv6(a)) => {
                    client(a.source_address.into(), a.source_port)
                }
                _ => ProxiedPeer::Local,
            };
            Parsed::Complete(peer, header.len())
        }
        HeaderResult::V1(Err(_)) | HeaderResult::V2(Err(_)) => Parsed::Invalid,
    }
}

fn client(ip: IpAddr, port: u16) -> ProxiedPeer {
    ProxiedPeer::Client(SocketAddr::new(ip, port))
}

/// Makes `client` the peer address every later layer (the HTTP session's
/// `client_addr()`, the access log, `X-Forwarded-For`) sees for `stream`.
pub fn set_peer(stream: &mut L4Stream, client: SocketAddr) {
    let digest = SocketDigest::from_raw_fd(stream.as_raw_fd());
    // A fresh digest has nothing cached yet, so this first value is the one kept.
    let _ = digest.peer_addr.set(Some(PeerAddr::Inet(client)));
    stream.set_socket_digest(digest);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(bytes: &[u8]) -> Option<(ProxiedPeer, usize)> {
        match parse(bytes) {
            Parsed::Complete(peer, length) => Some((peer, length)),
            _ => None,
        }
    }

    fn v2_tcp4(command: u8) -> Vec<u8> {
        let mut header = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
        header.extend([0x20 | command, 0x11, 0, 12]);
        header.extend([203, 0, 113, 7, 10, 0, 0, 1]);
        header.extend(4711u16.to_be_bytes());
        header.extend(443u16.to_be_bytes());
        header
    }

    #[test]
    fn v1_names_the_client_and_its_length() {
        let line = b"PROXY TCP4 203.0.113.7 10.0.0.1 4711 443\r\nGET / HTTP/1.1\r\n";
        let (peer, length) = parsed(line).expect("complete");
        assert_eq!(
            peer,
            ProxiedPeer::Client("203.0.113.7:4711".parse().expect("addr"))
        );
        assert_eq!(&line[length..length + 3], b"GET");
        let v6 = b"PROXY TCP6 2001:db8::7 2001:db8::1 4711 443\r\n";
        assert!(matches!(parsed(v6), Some((ProxiedPeer::Client(a), _)) if a.is_ipv6()));
        let unknown = b"PROXY UNKNOWN\r\n";
        assert_eq!(parsed(unknown), Some((ProxiedPeer::Local, unknown.len())));
    }

    #[test]
    fn v2_names_the_client_and_local_keeps_the_proxy() {
        let mut proxy = v2_tcp4(1);
        let length = proxy.len();
        proxy.extend(b"GET /");
        assert_eq!(
            parsed(&proxy),
            Some((
                ProxiedPeer::Client("203.0.113.7:4711".parse().expect("addr")),
                length
            ))
        );
        assert_eq!(
            parsed(&v2_tcp4(0)).map(|(peer, _)| peer),
            Some(ProxiedPeer::Local)
        );
    }

    #[test]
    fn partial_headers_wait_and_garbage_is_refused() {
        assert!(matches!(parse(b"PROXY TCP4 203.0"), Parsed::Incomplete));
        assert!(matches!(parse(&v2_tcp4(1)[..20]), Parsed::Incomplete));
        assert!(matches!(parse(b"GET / HTTP/1.1\r\n"), Parsed::Invalid));
        assert!(matches!(
            parse(b"PROXY TCP4 banana 10.0.0.1 1 2\r\n"),
            Parsed::Invalid
        ));
        let mut bad_version = v2_tcp4(1);
        bad_version[12] = 0x31;
        assert!(matches!(parse(&bad_version), Parsed::Invalid));
    }
}
