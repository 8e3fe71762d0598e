//! Raw client sockets for the connection tests: connecting from a chosen loopback
//! address, timing when the gateway closes a connection, trickling bytes like a
//! slowloris client, and PROXY protocol headers written by hand.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};

/// A TCP connection to `addr` from `source` (any address of 127.0.0.0/8 works on Linux
/// loopback), so one test can be several clients.
pub fn connect_from(source: IpAddr, addr: &str) -> TcpStream {
    let addr: SocketAddr = addr.parse().expect("an IP:PORT address");
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None).expect("socket");
    socket
        .bind(&SocketAddr::new(source, 0).into())
        .unwrap_or_else(|e| panic!("bind {source}: {e}"));
    socket
        .connect_timeout(&addr.into(), Duration::from_secs(2))
        .unwrap_or_else(|e| panic!("connect {addr} from {source}: {e}"));
    socket.into()
}

/// A TCP connection to `addr` from 127.0.0.1.
pub fn connect(addr: &str) -> TcpStream {
    connect_from([127, 0, 0, 1].into(), addr)
}

/// How long after this call the peer closed `stream` (end of stream or reset), or
/// `None` when it was still open after `limit`. Bytes the peer sends are read and
/// ignored.
pub fn time_until_closed(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        let left = limit.checked_sub(started.elapsed())?;
        stream
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .expect("set a read timeout");
        match stream.read(&mut buf) {
            Ok(0) => return Some(started.elapsed()),
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return None
            }
            Err(_) => return Some(started.elapsed()),
        }
    }
}

/// Writes `bytes` one byte every `interval` from another thread, like a slowloris
/// client; the thread ends when every byte is sent or a write fails, and tells how many
/// bytes went out.
pub fn trickle(stream: &TcpStream, bytes: &[u8], interval: Duration) -> JoinHandle<usize> {
    let mut writer = stream.try_clone().expect("clone the socket");
    let bytes = bytes.to_vec();
    thread::spawn(move || {
        for (sent, byte) in bytes.iter().enumerate() {
            if writer.write_all(&[*byte]).is_err() {
                return sent;
            }
            thread::sleep(interval);
        }
        bytes.len()
    })
}

/// Sends `request` on `stream` and reads the answer until the server closes the
/// connection or ten seconds pass.
pub fn exchange_on(stream: &mut TcpStream, request: &[u8]) -> String {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("set a read timeout");
    let _ = stream.write_all(request);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

/// Sends one keep-alive `GET path` on `stream` and reads exactly its answer (a
/// `Content-Length` body), leaving the connection open.
pub fn keep_alive_get(stream: &mut TcpStream, path: &str) -> String {
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .expect("send the request");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("set a read timeout");
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).expect("read the answer");
        assert!(n > 0, "closed before the whole answer: {answer:?}");
        answer.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&answer);
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            continue;
        };
        let length = head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse::<usize>().ok())?
            })
            .expect("a Content-Length answer");
        if body.len() >= length {
            return text.into_owned();
        }
    }
}

/// A PROXY protocol v1 header for a TCP connection from `source` to `destination`.
pub fn proxy_v1(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let family = if source.is_ipv4() { "TCP4" } else { "TCP6" };
    format!(
        "PROXY {family} {} {} {} {}\r\n",
        source.ip(),
        destination.ip(),
        source.port(),
        destination.port()
    )
    .into_bytes()
}

/// A PROXY protocol v2 `PROXY` header for a TCP/IPv4 connection from `source` to
/// `destination`.
pub fn proxy_v2(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let (SocketAddr::V4(source), SocketAddr::V4(destination)) = (source, destination) else {
        panic!("proxy_v2 writes IPv4 addresses only");
    };
    let mut header = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    // Version 2, command PROXY; TCP over IPv4; 12 bytes of addresses.
    header.extend([0x21, 0x11, 0, 12]);
    header.extend(source.ip().octets());
    header.extend(destination.ip().octets());
    header.extend(source.port().to_be_bytes());
    header.extend(destination.port().to_be_bytes());
    header
}
