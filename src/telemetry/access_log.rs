//! The JSON access log (SPEC §8): lines are formatted on the request path and handed to a
//! writer thread through a bounded channel, so a slow disk never stalls a request.

use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use prometheus::IntGauge;
use serde::Serialize;

/// Lines buffered between the request path and the writer before new ones are dropped.
const QUEUE: usize = 64 * 1024;
/// Longest a written line waits in the write buffer.
const FLUSH_EVERY: Duration = Duration::from_millis(500);
/// How often the writer looks for queued lines (the queue holds far more than arrives in
/// this time at any realistic rate).
const POLL_EVERY: Duration = Duration::from_millis(10);

/// One access log record. Credentials are never fields of it.
#[derive(Serialize)]
pub struct Entry<'a> {
    pub ts: String,
    pub request_id: &'a str,
    pub trace_id: &'a str,
    pub client_ip: Option<String>,
    pub method: &'a str,
    pub host: &'a str,
    pub path: &'a str,
    pub route: Option<&'a str>,
    pub consumer: Option<&'a str>,
    pub upstream: Option<&'a str>,
    pub target: Option<&'a str>,
    pub variant: Option<&'a str>,
    pub status: u16,
    pub bytes_sent: usize,
    pub duration_ms: f64,
    pub upstream_ms: Option<f64>,
    pub cache: Option<&'a str>,
    pub rate_limit: Option<&'a str>,
    pub error: Option<&'a str>,
}

/// Where access log lines go.
#[derive(Clone)]
pub struct AccessLog {
    sender: Option<SyncSender<String>>,
    /// Set by [`AccessLog::flush`]; the writer clears it once everything queued is written.
    flush_requested: Arc<AtomicBool>,
    receiver: Arc<Mutex<Option<Receiver<String>>>>,
    target: String,
    dropped: IntGauge,
}

impl AccessLog {
    /// A log to `target` (`stdout`, `off` or a file path); nothing is written until the
    /// [`AccessLogWriter`] service runs.
    pub fn new(target: &str, dropped: IntGauge) -> Self {
        let (sender, receiver) = if target == "off" {
            (None, None)
        } else {
            let (sender, receiver) = sync_channel(QUEUE);
            (Some(sender), Some(receiver))
        };
        Self {
            sender,
            flush_requested: Arc::new(AtomicBool::new(false)),
            receiver: Arc::new(Mutex::new(receiver)),
            target: target.to_string(),
            dropped,
        }
    }

    /// Whether lines are written at all (skip building entries when not).
    pub fn enabled(&self) -> bool {
        self.sender.is_some()
    }

    /// Queues one entry; drops it (and counts the drop) if the writer is behind.
    pub fn write(&self, entry: &Entry<'_>) {
        let Some(sender) = &self.sender else { return };
        let Ok(line) = serde_json::to_string(entry) else {
            return;
        };
        match sender.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => self.dropped.inc(),
        }
    }

    /// Writes out every line queued so far, waiting at most `timeout` (at shutdown).
    pub fn flush(&self, timeout: Duration) {
        if self.sender.is_none() {
            return;
        }
        self.flush_requested.store(true, Ordering::Release);
        let deadline = Instant::now() + timeout;
        while self.flush_requested.load(Ordering::Acquire) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// The background service that writes queued lines.
    pub fn writer(&self) -> AccessLogWriter {
        AccessLogWriter { log: self.clone() }
    }
}

/// Drains the access log queue on a thread of its own.
pub struct AccessLogWriter {
    log: AccessLog,
}

#[async_trait]
impl BackgroundService for AccessLogWriter {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let receiver = match self.log.receiver.lock() {
            Ok(mut slot) => slot.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        let Some(receiver) = receiver else { return };
        let sink: Box<dyn Write + Send> = if self.log.target == "stdout" {
            Box::new(std::io::stdout())
        } else {
            match OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.log.target)
            {
                Ok(file) => Box::new(file),
                Err(e) => {
                    log::error!("access log {}: {e}; access logging is off", self.log.target);
                    return;
                }
            }
        };
        // A plain thread: file writes block, and must not block a runtime worker.
        let writer = std::thread::Builder::new()
            .name("access-log".into())
            .spawn({
                let flush_requested = Arc::clone(&self.log.flush_requested);
                move || {
                    drain(
                        receiver,
                        BufWriter::with_capacity(64 * 1024, sink),
                        &flush_requested,
                    )
                }
            });
        if let Err(e) = writer {
            log::error!("cannot start the access log writer: {e}");
            return;
        }
        let _ = shutdown.changed().await;
    }
}

/// Writes queued lines until every sender is gone. The writer polls instead of blocking
/// on the channel: a blocked receiver would make every request's send a futex wake-up and
/// a context switch, which cost more than formatting the line.
fn drain(
    receiver: Receiver<String>,
    mut out: BufWriter<Box<dyn Write + Send>>,
    flush_requested: &AtomicBool,
) {
    let mut last_flush = Instant::now();
    loop {
        // Read before draining: every line queued before a flush request is drained below.
        let flushing = flush_requested.load(Ordering::Acquire);
        loop {
            match receiver.try_recv() {
                Ok(line) => {
                    let _ = out.write_all(line.as_bytes());
                    let _ = out.write_all(b"\n");
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    let _ = out.flush();
                    return;
                }
            }
        }
        if flushing || last_flush.elapsed() >= FLUSH_EVERY {
            let _ = out.flush();
            last_flush = Instant::now();
        }
        if flushing {
            flush_requested.store(false, Ordering::Release);
        }
        std::thread::sleep(POLL_EVERY);
    }
}
