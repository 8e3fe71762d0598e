//! A JWKS endpoint on loopback whose document the test can change (key rotation) and
//! which counts the fetches it answers.

use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// A running JWKS server. Stops when dropped.
pub struct JwksServer {
    server: Arc<tiny_http::Server>,
    document: Arc<Mutex<String>>,
    fetches: Arc<AtomicUsize>,
    delay: Arc<Mutex<Duration>>,
    addr: String,
}

impl JwksServer {
    /// Serves `document` at `/jwks.json` on `listener`.
    pub fn start(listener: TcpListener, document: &str) -> JwksServer {
        let addr = listener.local_addr().expect("address").to_string();
        let server = Arc::new(tiny_http::Server::from_listener(listener, None).expect("server"));
        let document = Arc::new(Mutex::new(document.to_string()));
        let fetches = Arc::new(AtomicUsize::new(0));
        let delay = Arc::new(Mutex::new(Duration::ZERO));
        let (srv, doc, count, pause) = (
            Arc::clone(&server),
            Arc::clone(&document),
            Arc::clone(&fetches),
            Arc::clone(&delay),
        );
        thread::spawn(move || {
            for request in srv.incoming_requests() {
                count.fetch_add(1, Ordering::SeqCst);
                // A slow issuer is the behaviour under test, not a wait.
                thread::sleep(*pause.lock().unwrap_or_else(|e| e.into_inner()));
                let body = doc.lock().unwrap_or_else(|e| e.into_inner()).clone();
                let header = tiny_http::Header::from_bytes("Content-Type", "application/json")
                    .expect("header");
                let _ = request.respond(tiny_http::Response::from_string(body).with_header(header));
            }
        });
        JwksServer {
            server,
            document,
            fetches,
            delay,
            addr,
        }
    }

    /// The document's URL.
    pub fn url(&self) -> String {
        format!("http://{}/jwks.json", self.addr)
    }

    /// Publishes another document (a key rotation).
    pub fn publish(&self, document: &str) {
        *self.document.lock().unwrap_or_else(|e| e.into_inner()) = document.to_string();
    }

    /// Answers each fetch only after `delay` (a slow issuer).
    pub fn set_delay(&self, delay: Duration) {
        *self.delay.lock().unwrap_or_else(|e| e.into_inner()) = delay;
    }

    /// Fetches received so far.
    pub fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.server.unblock();
    }
}
