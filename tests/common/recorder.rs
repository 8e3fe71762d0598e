//! An upstream that records the exact bytes it receives, and a raw client: for tests
//! that must show what crossed the wire, not what an HTTP library made of it.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use super::{bind_test_port, lock};

/// One request as a [`RecordingUpstream`] framed it.
#[derive(Debug, Clone)]
pub struct RawRequest {
    /// Which accepted connection it came on (0, 1, ...).
    pub connection: usize,
    /// The request line and header lines, without the blank line.
    pub head: String,
    /// The body, de-chunked when it was chunked.
    pub body: Vec<u8>,
}

impl RawRequest {
    /// `METHOD TARGET VERSION`.
    pub fn request_line(&self) -> &str {
        self.head.lines().next().unwrap_or("")
    }

    /// The request target.
    pub fn target(&self) -> &str {
        self.request_line().split(' ').nth(1).unwrap_or("")
    }

    /// Every value of header `name` (case-insensitive), as the bytes spelled it.
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        self.head
            .lines()
            .skip(1)
            .filter_map(|line| line.split_once(':'))
            .filter(|(field, _)| field.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.trim())
            .collect()
    }

    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.header_values(name).into_iter().next()
    }

    /// Whether a header line's name is spelled exactly `name` (case and `_` included, so
    /// a client's `X_Consumer_Id` or `X-Consumer-Id` is told from the gateway's
    /// `x-consumer-id`).
    pub fn has_header_spelled(&self, name: &str) -> bool {
        self.head
            .lines()
            .skip(1)
            .any(|line| line.split(':').next() == Some(name))
    }
}

#[derive(Default)]
struct Record {
    connections: Vec<Vec<u8>>,
    requests: Vec<RawRequest>,
}

/// A plain TCP server on loopback that keeps every byte of every connection and frames
/// requests the simple way (Content-Length digits, or chunked), answering each with
/// `200 ok`, even an `Upgrade` (it never switches protocols). Requests it frames are
/// recorded before it answers, so when the gateway's answer is back, the record is
/// complete.
pub struct RecordingUpstream {
    addr: SocketAddr,
    record: Arc<Mutex<Record>>,
    closing: Arc<AtomicBool>,
}

impl RecordingUpstream {
    pub fn start() -> RecordingUpstream {
        let listener = bind_test_port();
        let addr = listener.local_addr().expect("recorder address");
        let record = Arc::new(Mutex::new(Record::default()));
        let closing = Arc::new(AtomicBool::new(false));
        {
            let record = Arc::clone(&record);
            let closing = Arc::clone(&closing);
            thread::spawn(move || accept(listener, record, closing));
        }
        RecordingUpstream {
            addr,
            record,
            closing,
        }
    }

    /// `127.0.0.1:PORT`, as a target address in the config.
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// Every request framed so far, in arrival order.
    pub fn requests(&self) -> Vec<RawRequest> {
        lock(&self.record).requests.clone()
    }

    /// The bytes received on each connection so far.
    pub fn connections(&self) -> Vec<Vec<u8>> {
        lock(&self.record).connections.clone()
    }

    /// Every byte received, on every connection, as text (lossy).
    pub fn all_bytes(&self) -> String {
        let record = lock(&self.record);
        record
            .connections
            .iter()
            .map(|bytes| String::from_utf8_lossy(bytes).into_owned())
            .collect::<Vec<_>>()
            .join("\n--- next connection ---\n")
    }
}

impl Drop for RecordingUpstream {
    fn drop(&mut self) {
        self.closing.store(true, SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

fn accept(listener: TcpListener, record: Arc<Mutex<Record>>, closing: Arc<AtomicBool>) {
    for stream in listener.incoming() {
        if closing.load(SeqCst) {
            return;
        }
        let Ok(stream) = stream else { continue };
        let connection = {
            let mut record = lock(&record);
            record.connections.push(Vec::new());
            record.connections.len() - 1
        };
        let record = Arc::clone(&record);
        thread::spawn(move || {
            let _ = serve(stream, connection, &record);
        });
    }
}

fn serve(mut stream: TcpStream, connection: usize, record: &Mutex<Record>) -> io::Result<()> {
    let mut pending = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let read = stream.read(&mut chunk)?;
        if read == 0 {
            return Ok(());
        }
        pending.extend_from_slice(&chunk[..read]);
        let mut answers = Vec::new();
        {
            let mut record = lock(record);
            record.connections[connection].extend_from_slice(&chunk[..read]);
            while let Some((request, used)) = frame(&pending, connection) {
                pending.drain(..used);
                answers.push(request.clone());
                record.requests.push(request);
            }
        }
        for request in answers {
            let body: &[u8] = if request.request_line().starts_with("HEAD ") {
                b""
            } else {
                b"ok"
            };
            stream.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Upstream: recorder\r\n\r\n",
            )?;
            stream.write_all(body)?;
            let close = request
                .header_values("connection")
                .iter()
                .any(|value| value.eq_ignore_ascii_case("close"));
            if close {
                let _ = stream.shutdown(Shutdown::Both);
                return Ok(());
            }
        }
    }
}

/// One complete request at the start of `bytes`, and how many bytes it took.
fn frame(bytes: &[u8], connection: usize) -> Option<(RawRequest, usize)> {
    let end = bytes.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&bytes[..end]).into_owned();
    let mut request = RawRequest {
        connection,
        head,
        body: Vec::new(),
    };
    let start = end + 4;
    let chunked = request
        .header_values("transfer-encoding")
        .iter()
        .any(|value| value.eq_ignore_ascii_case("chunked"));
    if chunked {
        let (body, used) = dechunk(&bytes[start..])?;
        request.body = body;
        return Some((request, start + used));
    }
    // A naive server: a Content-Length it cannot read as a number means no body.
    let length = request
        .header("content-length")
        .and_then(|value| value.parse::<usize>().ok())
        .unwrap_or(0);
    let body = bytes.get(start..start + length)?;
    request.body = body.to_vec();
    Some((request, start + length))
}

fn dechunk(bytes: &[u8]) -> Option<(Vec<u8>, usize)> {
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let line_end = at + bytes[at..].windows(2).position(|w| w == b"\r\n")?;
        let size_text = String::from_utf8_lossy(&bytes[at..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        at = line_end + 2;
        if size == 0 {
            let trailer_end = at + bytes[at..].windows(2).position(|w| w == b"\r\n")?;
            return Some((body, trailer_end + 2));
        }
        body.extend_from_slice(bytes.get(at..at + size)?);
        at += size + 2;
    }
}

/// What a raw client read back for one request.
#[derive(Debug, Clone)]
pub struct RawAnswer {
    /// The status code of the first response (0 when none arrived).
    pub status: u16,
    /// Everything read.
    pub text: String,
    /// Whether the server closed the connection after the response.
    pub closed: bool,
}

impl RawAnswer {
    /// The `code` of the gateway's JSON error, if the body is one.
    pub fn error_code(&self) -> Option<String> {
        let body = self.text.split_once("\r\n\r\n")?.1;
        let json: serde_json::Value = serde_json::from_str(body.trim()).ok()?;
        json["error"]["code"].as_str().map(str::to_string)
    }
}

/// Writes `request` to `addr` on a new connection and reads the first response. When
/// `until_closed`, reads on until the server closes (failing after ten seconds);
/// otherwise stops after the first response's body.
pub fn raw_request(addr: &str, request: &[u8], until_closed: bool) -> RawAnswer {
    let mut connection = RawConnection::open(addr);
    connection.send(request);
    connection.read_answer(until_closed)
}

/// A client connection for raw bytes, kept open across requests.
pub struct RawConnection {
    addr: String,
    stream: TcpStream,
    /// Bytes read past the last answer.
    unread: Vec<u8>,
}

impl RawConnection {
    pub fn open(addr: &str) -> RawConnection {
        let stream = super::sockets::connect(addr);
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("set a read timeout");
        RawConnection {
            addr: addr.to_string(),
            stream,
            unread: Vec::new(),
        }
    }

    /// Writes `bytes`; the server may refuse before reading them all, so a short write
    /// is not an error.
    pub fn send(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes);
    }

    /// Reads the next response (see [`raw_request`] for `until_closed`).
    pub fn read_answer(&mut self, until_closed: bool) -> RawAnswer {
        let mut read = std::mem::take(&mut self.unread);
        let mut chunk = [0u8; 16 * 1024];
        let mut closed = false;
        loop {
            if !until_closed {
                if let Some(end) = response_end(&read) {
                    self.unread = read.split_off(end);
                    break;
                }
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(n) => read.extend_from_slice(&chunk[..n]),
                // A reset after the answer arrived is a close too; a timeout is not.
                Err(e) if !read.is_empty() => {
                    closed = !matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    );
                    break;
                }
                Err(e) => panic!("reading from {}: {e} (read so far: {read:?})", self.addr),
            }
        }
        let text = String::from_utf8_lossy(&read).into_owned();
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or(0);
        RawAnswer {
            status,
            text,
            closed,
        }
    }
}

/// Where the first complete response in `bytes` ends.
fn response_end(bytes: &[u8]) -> Option<usize> {
    let end = bytes.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&bytes[..end]).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|value| value.trim().parse::<usize>().ok())
        .unwrap_or(0);
    (bytes.len() >= end + 4 + length).then_some(end + 4 + length)
}
