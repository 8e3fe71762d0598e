//! Upstream servers for the gateway to proxy to: real HTTP on loopback, with counters,
//! a record of what they received, a health switch, and stop/restart.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use super::{bind_test_port, eventually, lock};

/// The path on which every [`Upstream`] answers health checks.
pub const HEALTH_PATH: &str = "/healthz";

/// How many received requests an [`Upstream`] remembers.
const RECORDED_REQUESTS: usize = 256;

/// A request as an [`Upstream`] received it.
#[derive(Debug, Clone)]
pub struct ReceivedRequest {
    pub method: String,
    /// Path and query, e.g. `/users?page=2`.
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl ReceivedRequest {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.header_values(name).into_iter().next()
    }

    /// Every value of header `name` (case-insensitive), in order.
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(field, _)| field.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
            .collect()
    }
}

/// What an [`Upstream`] answers to every request but health checks.
#[derive(Debug, Clone)]
struct Reply {
    status: u16,
    /// `None` answers with the upstream's name.
    body: Option<String>,
    delay: Duration,
    /// Extra response headers.
    headers: Vec<(String, String)>,
}

/// Shared between an [`Upstream`] handle and the threads serving it.
struct UpstreamState {
    name: String,
    healthy: AtomicBool,
    closing: AtomicBool,
    reply: Mutex<Reply>,
    requests: AtomicUsize,
    health_checks: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    received: Mutex<VecDeque<ReceivedRequest>>,
}

impl UpstreamState {
    fn answer(&self, mut request: tiny_http::Request) {
        if request.url() == HEALTH_PATH {
            self.health_checks.fetch_add(1, SeqCst);
            let (status, body) = if self.healthy.load(SeqCst) {
                (200, "ok")
            } else {
                (503, "unhealthy")
            };
            let _ =
                request.respond(tiny_http::Response::from_string(body).with_status_code(status));
            return;
        }

        let mut body = String::new();
        let _ = request.as_reader().read_to_string(&mut body);
        let received = ReceivedRequest {
            method: request.method().to_string(),
            path: request.url().to_string(),
            headers: request
                .headers()
                .iter()
                .map(|h| (h.field.to_string(), h.value.to_string()))
                .collect(),
            body,
        };
        {
            let mut recent = lock(&self.received);
            if recent.len() == RECORDED_REQUESTS {
                recent.pop_front();
            }
            recent.push_back(received);
        }
        self.requests.fetch_add(1, SeqCst);

        let reply = lock(&self.reply).clone();
        let in_flight = self.in_flight.fetch_add(1, SeqCst) + 1;
        self.max_in_flight.fetch_max(in_flight, SeqCst);
        // The configured delay is the behaviour under test (a slow server), not a wait.
        thread::sleep(reply.delay);
        self.in_flight.fetch_sub(1, SeqCst);

        let body = reply.body.unwrap_or_else(|| self.name.clone());
        let response = reply.headers.iter().fold(
            tiny_http::Response::from_string(body).with_status_code(reply.status),
            |response, (name, value)| {
                let header = tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes())
                    .unwrap_or_else(|()| panic!("invalid test header {name}: {value}"));
                response.with_header(header)
            },
        );
        let _ = request.respond(response);
    }
}

/// A real HTTP/1.1 server on `127.0.0.1` (tiny_http, one thread per request). By
/// default it answers 200 with its own name as the body, so a client can count which
/// target served it; `/healthz` answers 200, or 503 after `set_healthy(false)`.
/// It counts and records what it receives, and can be stopped (listening socket and
/// every open connection closed, like a killed process) and restarted on the same port.
pub struct Upstream {
    name: String,
    addr: SocketAddr,
    backend_addr: SocketAddr,
    backend: Arc<tiny_http::Server>,
    front: Mutex<Option<Front>>,
    state: Arc<UpstreamState>,
}

impl Upstream {
    pub fn start(name: &str) -> Upstream {
        let state = Arc::new(UpstreamState {
            name: name.to_string(),
            healthy: AtomicBool::new(true),
            closing: AtomicBool::new(false),
            reply: Mutex::new(Reply {
                status: 200,
                body: None,
                delay: Duration::ZERO,
                headers: Vec::new(),
            }),
            requests: AtomicUsize::new(0),
            health_checks: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            received: Mutex::new(VecDeque::new()),
        });
        let backend =
            Arc::new(tiny_http::Server::http("127.0.0.1:0").expect("start a tiny_http server"));
        let backend_addr = backend
            .server_addr()
            .to_ip()
            .expect("tiny_http listens on an IP address");
        {
            let backend = Arc::clone(&backend);
            let state = Arc::clone(&state);
            thread::spawn(move || loop {
                match backend.recv() {
                    Ok(request) => {
                        let state = Arc::clone(&state);
                        thread::spawn(move || state.answer(request));
                    }
                    Err(_) if state.closing.load(SeqCst) => break,
                    Err(_) => continue,
                }
            });
        }
        let listener = bind_test_port();
        let addr = listener.local_addr().expect("upstream address");
        Upstream {
            name: name.to_string(),
            addr,
            backend_addr,
            backend,
            front: Mutex::new(Some(Front::start(listener, backend_addr))),
            state,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `127.0.0.1:PORT`, as a target address in the config.
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Requests received, health checks excluded.
    pub fn requests(&self) -> usize {
        self.state.requests.load(SeqCst)
    }

    /// Health check requests received.
    pub fn health_checks(&self) -> usize {
        self.state.health_checks.load(SeqCst)
    }

    /// The most requests that were ever being answered at once.
    pub fn max_in_flight(&self) -> usize {
        self.state.max_in_flight.load(SeqCst)
    }

    /// The last requests received (health checks excluded), oldest first.
    pub fn received(&self) -> Vec<ReceivedRequest> {
        lock(&self.state.received).iter().cloned().collect()
    }

    /// The last request received; panics if there was none.
    pub fn last_request(&self) -> ReceivedRequest {
        lock(&self.state.received)
            .back()
            .cloned()
            .unwrap_or_else(|| panic!("upstream {} received no request", self.name))
    }

    /// Answer every request (but health checks) with this status.
    pub fn set_status(&self, status: u16) {
        lock(&self.state.reply).status = status;
    }

    /// Answer every request (but health checks) with this body instead of the name.
    pub fn set_body(&self, body: &str) {
        lock(&self.state.reply).body = Some(body.to_string());
    }

    /// Add this header to every answer (but health checks).
    pub fn set_header(&self, name: &str, value: &str) {
        lock(&self.state.reply)
            .headers
            .push((name.to_string(), value.to_string()));
    }

    /// Stop adding the headers of [`Upstream::set_header`].
    pub fn clear_headers(&self) {
        lock(&self.state.reply).headers.clear();
    }

    /// Wait this long before answering each request (but health checks).
    pub fn set_delay(&self, delay: Duration) {
        lock(&self.state.reply).delay = delay;
    }

    /// Whether `/healthz` answers 200 (true) or 503 (false).
    pub fn set_healthy(&self, healthy: bool) {
        self.state.healthy.store(healthy, SeqCst);
    }

    /// Closes the listening socket and every open connection; connecting is then
    /// refused, as if the process had been killed.
    pub fn stop(&self) {
        if let Some(front) = lock(&self.front).take() {
            front.stop(self.addr);
        }
    }

    /// Listens again on the same port after [`Upstream::stop`].
    pub fn restart(&self) {
        let mut front = lock(&self.front);
        assert!(front.is_none(), "upstream {} is already running", self.name);
        let listener = eventually!(let listener = TcpListener::bind(self.addr).ok();
            listener.is_some(),
            "upstream {} could not bind {} again",
            self.name,
            self.addr
        );
        *front = listener.map(|listener| Front::start(listener, self.backend_addr));
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop();
        self.state.closing.store(true, SeqCst);
        self.backend.unblock();
    }
}

/// The public socket of an [`Upstream`]. Each accepted connection is relayed to the
/// tiny_http server behind it, because tiny_http keeps accepted connections open after
/// its server is dropped; holding them here lets [`Front::stop`] close them all, so
/// the gateway sees what a killed process would do, not a server that never answers.
struct Front {
    closing: Arc<AtomicBool>,
    acceptor: JoinHandle<()>,
    connections: Arc<Mutex<HashMap<u64, TcpStream>>>,
}

impl Front {
    fn start(listener: TcpListener, backend: SocketAddr) -> Front {
        let closing = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(Mutex::new(HashMap::new()));
        let acceptor = {
            let closing = Arc::clone(&closing);
            let connections = Arc::clone(&connections);
            thread::spawn(move || {
                static NEXT_ID: AtomicU64 = AtomicU64::new(0);
                for client in listener.incoming() {
                    if closing.load(SeqCst) {
                        break; // dropping `listener` closes the socket
                    }
                    let Ok(client) = client else { continue };
                    let Ok(server) = TcpStream::connect(backend) else {
                        continue;
                    };
                    let id = NEXT_ID.fetch_add(1, SeqCst);
                    if let Err(e) = relay(id, client, server, &connections) {
                        eprintln!("upstream relay: {e}");
                    }
                }
            })
        };
        Front {
            closing,
            acceptor,
            connections,
        }
    }

    fn stop(self, addr: SocketAddr) {
        self.closing.store(true, SeqCst);
        // Wake the acceptor from `accept()`, so it sees `closing` and drops the listener.
        let _ = TcpStream::connect(addr);
        let _ = self.acceptor.join();
        for (_, connection) in lock(&self.connections).drain() {
            let _ = connection.shutdown(Shutdown::Both);
        }
    }
}

/// Copies bytes both ways between `client` and `server` until either side closes.
fn relay(
    id: u64,
    client: TcpStream,
    server: TcpStream,
    connections: &Arc<Mutex<HashMap<u64, TcpStream>>>,
) -> io::Result<()> {
    lock(connections).insert(id, client.try_clone()?);
    let (client_reader, server_writer) = (client.try_clone()?, server.try_clone()?);
    thread::spawn(move || {
        let _ = io::copy(&mut &server, &mut &client);
        let _ = client.shutdown(Shutdown::Write);
    });
    let connections = Arc::clone(connections);
    thread::spawn(move || {
        let _ = io::copy(&mut &client_reader, &mut &server_writer);
        let _ = server_writer.shutdown(Shutdown::Write);
        lock(&connections).remove(&id);
    });
    Ok(())
}
