//! Background client traffic for zero-downtime tests: threads that each keep one
//! kept-alive connection busy with requests and record every failure.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use super::http::http_agent;
use super::lock;

/// Client loops running until [`Traffic::stop`].
pub struct Traffic {
    running: Arc<AtomicBool>,
    sent: Arc<AtomicUsize>,
    failures: Arc<Mutex<Vec<String>>>,
    threads: Vec<JoinHandle<()>>,
}

/// What the loops saw.
#[derive(Debug)]
pub struct TrafficReport {
    /// Requests that got an answer.
    pub sent: usize,
    /// Every request that failed: a transport error, or a status other than 200.
    pub failures: Vec<String>,
}

impl Traffic {
    /// Starts `clients` loops, each sending `GET url` back to back over its own
    /// kept-alive connection.
    pub fn start(url: &str, clients: usize) -> Traffic {
        let running = Arc::new(AtomicBool::new(true));
        let sent = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..clients)
            .map(|_| {
                let (url, running, sent, failures) = (
                    url.to_string(),
                    Arc::clone(&running),
                    Arc::clone(&sent),
                    Arc::clone(&failures),
                );
                thread::spawn(move || {
                    let agent = http_agent();
                    while running.load(SeqCst) {
                        let failure = match agent.get(&url).call() {
                            Ok(response) if response.status() == 200 => None,
                            Ok(response) => Some(format!("status {}", response.status())),
                            Err(ureq::Error::Status(status, response)) => Some(format!(
                                "status {status}: {}",
                                response.into_string().unwrap_or_default()
                            )),
                            Err(error) => Some(format!("transport: {error}")),
                        };
                        sent.fetch_add(1, SeqCst);
                        if let Some(failure) = failure {
                            lock(&failures).push(failure);
                        }
                        thread::sleep(Duration::from_millis(2));
                    }
                })
            })
            .collect();
        Traffic {
            running,
            sent,
            failures,
            threads,
        }
    }

    /// Requests answered so far.
    pub fn sent(&self) -> usize {
        self.sent.load(SeqCst)
    }

    /// Stops the loops and reports.
    pub fn stop(self) -> TrafficReport {
        self.running.store(false, SeqCst);
        for thread in self.threads {
            let _ = thread.join();
        }
        let failures = std::mem::take(&mut *lock(&self.failures));
        TrafficReport {
            sent: self.sent.load(SeqCst),
            failures,
        }
    }
}
