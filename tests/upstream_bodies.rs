//! Upstream response bodies through the gateway, framed every way an HTTP/1.1 origin frames
//! them: Content-Length bodies around the body reader's 64 KiB buffer (0, 1, 64 KiB, one
//! byte more, larger), a body trickled in many small writes, chunked bodies, HEAD, 204 and 304
//! answers, and an origin that sends more than its Content-Length. Each answer comes back
//! whole on a keep-alive client connection, and the request after it is answered correctly
//! (pingora-core's body reader sizes its buffer to the Content-Length; vendor/README.md).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::{bind_test_port, connect, Gateway};

/// The body the origin sends for `n` bytes: not one repeated byte, so a shifted or
/// truncated body shows.
fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| b'a' + (i % 23) as u8).collect()
}

/// An origin answering by path, on keep-alive connections, counting the connections it
/// accepted:
/// - `/cl/N`: `N` bytes with `Content-Length: N`, in one write
/// - `/split/N`: the same, written 10 bytes at a time
/// - `/chunked/N`: `N` bytes in chunks of up to 1,000
/// - `/over`: `Content-Length: 5` and 16 bytes in the same write
/// - `/status/204`, `/status/304`: no body
///
/// HEAD is answered with the GET's header fields and no body.
struct Origin {
    addr: String,
    connections: Arc<AtomicUsize>,
}

impl Origin {
    fn start() -> Origin {
        let listener = bind_test_port();
        let addr = listener.local_addr().expect("origin address").to_string();
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&connections);
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                counter.fetch_add(1, SeqCst);
                thread::spawn(move || serve(stream));
            }
        });
        Origin { addr, connections }
    }

    fn connections(&self) -> usize {
        self.connections.load(SeqCst)
    }
}

fn serve(stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut reader = BufReader::new(stream.try_clone().expect("clone the origin stream"));
    let mut stream = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line == "\r\n" {
                break;
            }
        }
        let mut parts = request_line.split(' ');
        let head_only = parts.next() == Some("HEAD");
        let path = parts.next().unwrap_or("/").to_string();
        if answer(&mut stream, &path, head_only).is_err() {
            return;
        }
    }
}

fn answer(stream: &mut TcpStream, path: &str, head_only: bool) -> std::io::Result<()> {
    let size = |prefix: &str| path.strip_prefix(prefix).and_then(|n| n.parse().ok());
    if let Some(n) = size("/cl/") {
        let mut bytes = format!("HTTP/1.1 200 OK\r\nContent-Length: {n}\r\n\r\n").into_bytes();
        if !head_only {
            bytes.extend(pattern(n));
        }
        stream.write_all(&bytes)
    } else if let Some(n) = size("/split/") {
        stream.write_all(format!("HTTP/1.1 200 OK\r\nContent-Length: {n}\r\n\r\n").as_bytes())?;
        for piece in pattern(n).chunks(10) {
            stream.write_all(piece)?;
            thread::sleep(Duration::from_micros(200));
        }
        Ok(())
    } else if let Some(n) = size("/chunked/") {
        let mut bytes = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for chunk in pattern(n).chunks(1000) {
            bytes.extend(format!("{:x}\r\n", chunk.len()).as_bytes());
            bytes.extend(chunk);
            bytes.extend(b"\r\n");
        }
        bytes.extend(b"0\r\n\r\n");
        stream.write_all(&bytes)
    } else if path == "/over" {
        stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloEXTRA-BYTES!")
    } else if path == "/status/204" {
        stream.write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
    } else if path == "/status/304" {
        stream.write_all(b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\n\r\n")
    } else {
        stream.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
    }
}

fn gateway(origin: &Origin) -> Gateway {
    Gateway::start(&format!(
        r#"
upstreams:
  origin:
    targets: [{{ address: "{}" }}]
routes:
  - name: all
    match: {{ path_prefix: / }}
    upstream: origin
"#,
        origin.addr
    ))
}

/// One answer read off a keep-alive client connection.
struct Answer {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Answer {
    fn content_length(&self) -> Option<usize> {
        self.head.lines().find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
    }

    fn chunked(&self) -> bool {
        self.head.lines().any(|line| {
            line.split_once(':').is_some_and(|(name, value)| {
                name.eq_ignore_ascii_case("transfer-encoding") && value.trim() == "chunked"
            })
        })
    }
}

struct Client {
    reader: BufReader<TcpStream>,
}

impl Client {
    fn open(addr: &str) -> Client {
        let stream = connect(addr);
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("set a read timeout");
        Client {
            reader: BufReader::new(stream),
        }
    }

    fn request(&mut self, method: &str, path: &str) -> Answer {
        let request = format!("{method} {path} HTTP/1.1\r\nHost: test\r\n\r\n");
        self.reader
            .get_mut()
            .write_all(request.as_bytes())
            .expect("send the request");
        let mut head = String::new();
        loop {
            let mut line = String::new();
            let read = self.reader.read_line(&mut line).expect("read the head");
            assert!(read > 0, "closed after {head:?} ({method} {path})");
            if line == "\r\n" {
                break;
            }
            head += &line;
        }
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or(0);
        let mut answer = Answer {
            status,
            head,
            body: Vec::new(),
        };
        if method == "HEAD" || status == 204 || status == 304 {
            return answer;
        }
        if answer.chunked() {
            answer.body = self.dechunk();
        } else {
            let length = answer.content_length().expect("a Content-Length");
            answer.body = vec![0; length];
            self.reader
                .read_exact(&mut answer.body)
                .expect("read the body");
        }
        answer
    }

    fn dechunk(&mut self) -> Vec<u8> {
        let mut body = Vec::new();
        loop {
            let mut size = String::new();
            self.reader.read_line(&mut size).expect("read a chunk size");
            let size = usize::from_str_radix(size.trim(), 16).expect("a chunk size");
            let mut chunk = vec![0; size + 2];
            self.reader.read_exact(&mut chunk).expect("read a chunk");
            if size == 0 {
                return body;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    }
}

#[test]
fn content_length_bodies_of_every_size_come_back_whole_on_one_connection() {
    let origin = Origin::start();
    let gateway = gateway(&origin);
    let mut client = Client::open(&gateway.addr());
    for n in [0, 1, 64, 4096, 65_535, 65_536, 65_537, 200_000] {
        let answer = client.request("GET", &format!("/cl/{n}"));
        assert_eq!(answer.status, 200, "{n}: {}", answer.head);
        assert!(
            answer.body == pattern(n),
            "/cl/{n}: {} bytes",
            answer.body.len()
        );
        let answer = client.request("GET", &format!("/split/{}", n.min(3000)));
        assert!(answer.body == pattern(n.min(3000)), "/split/{n}");
    }
    // the origin's connection was reused throughout
    assert_eq!(origin.connections(), 1);
}

#[test]
fn chunked_bodies_come_back_whole() {
    let origin = Origin::start();
    let gateway = gateway(&origin);
    let mut client = Client::open(&gateway.addr());
    for n in [1, 999, 65_536, 100_001] {
        let answer = client.request("GET", &format!("/chunked/{n}"));
        assert_eq!(answer.status, 200, "{}", answer.head);
        assert!(answer.body == pattern(n), "/chunked/{n}");
    }
}

#[test]
fn bodiless_answers_leave_the_connections_usable() {
    let origin = Origin::start();
    let gateway = gateway(&origin);
    let mut client = Client::open(&gateway.addr());
    for n in [0, 100, 65_537] {
        let answer = client.request("HEAD", &format!("/cl/{n}"));
        assert_eq!(answer.status, 200, "{}", answer.head);
        assert_eq!(answer.content_length(), Some(n), "{}", answer.head);
    }
    assert_eq!(client.request("GET", "/status/204").status, 204);
    assert_eq!(client.request("GET", "/status/304").status, 304);
    let answer = client.request("GET", "/cl/10");
    assert!(answer.body == pattern(10));
    assert_eq!(origin.connections(), 1);
}

#[test]
fn an_origin_sending_past_its_content_length_loses_its_connection_not_the_next_answer() {
    let origin = Origin::start();
    let gateway = gateway(&origin);
    let mut client = Client::open(&gateway.addr());
    let answer = client.request("GET", "/cl/3");
    assert!(answer.body == pattern(3));
    assert_eq!(origin.connections(), 1);

    let answer = client.request("GET", "/over");
    assert_eq!(answer.status, 200, "{}", answer.head);
    assert_eq!(answer.body, b"hello");
    // the bytes past the body are never read as the next answer: that connection is closed
    for _ in 0..3 {
        let answer = client.request("GET", "/cl/7");
        assert_eq!(answer.status, 200, "{}", answer.head);
        assert!(answer.body == pattern(7));
    }
    assert_eq!(origin.connections(), 2);
}
