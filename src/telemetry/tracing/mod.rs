//! OpenTelemetry span export over OTLP: a bounded queue the request path hands finished
//! spans to without waiting, and one export thread that batches them to the collector.
//!
//! The queue is ours rather than the SDK's `BatchSpanProcessor`, because the SDK does not
//! say how many spans it dropped: here every span that is not exported is counted in
//! `portcullis_trace_spans_dropped_total`, whether the queue was full (the collector is
//! slow or down), the export failed (refused, unreachable, 5xx) or it timed out. The spans
//! are the SDK's [`SpanData`], built once the request is over, and the exporter is
//! `opentelemetry-otlp`'s (http/protobuf or gRPC).

mod worker;

use std::collections::BTreeMap;
use std::sync::mpsc as std_mpsc;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use opentelemetry::InstrumentationScope;
use opentelemetry_sdk::trace::SpanData;
use prometheus::IntCounter;
use tokio::sync::{mpsc, oneshot};

pub use crate::config::OtlpProtocol;

/// Spans exported in one request to the collector at most.
const MAX_BATCH: usize = 512;
/// How long a span waits for a batch to fill before it is sent anyway.
const BATCH_DELAY: Duration = Duration::from_millis(500);

/// Where and how spans are exported: `tracing.otlp`, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportSettings {
    /// The URL spans are sent to (for http/protobuf, with its `/v1/traces` path).
    pub endpoint: String,
    /// The transport.
    pub protocol: OtlpProtocol,
    /// Headers (gRPC metadata) sent with every export.
    pub headers: BTreeMap<String, String>,
    /// `service.name`.
    pub service_name: String,
    /// Longest one export may take.
    pub timeout: Duration,
    /// Spans waiting for export at most.
    pub max_queue: usize,
}

/// A running export: the queue's sending end and the export thread.
pub struct SpanExport {
    queue: mpsc::Sender<SpanData>,
    dropped: IntCounter,
    scope: InstrumentationScope,
    /// Asks the export thread to send what is queued and stop; taken by [`Self::flush`].
    stop: Mutex<Option<(oneshot::Sender<()>, std_mpsc::Receiver<()>)>>,
}

impl SpanExport {
    /// Starts the export thread and its exporter; fails when the exporter cannot be built
    /// (the endpoint or a header is not usable).
    pub fn start(settings: ExportSettings, dropped: IntCounter) -> Result<Self, String> {
        let (queue, spans) = mpsc::channel(settings.max_queue.max(1));
        let (stop, stopped) = oneshot::channel();
        let (done_tx, done) = std_mpsc::channel();
        let (built_tx, built) = std_mpsc::channel();
        let worker = worker::Worker {
            settings,
            spans,
            stop: stopped,
            dropped: dropped.clone(),
        };
        std::thread::Builder::new()
            .name("otlp-export".into())
            .spawn(move || {
                worker.run(built_tx);
                let _ = done_tx.send(());
            })
            .map_err(|e| format!("cannot start the export thread: {e}"))?;
        match built.recv() {
            Ok(Ok(())) => {}
            Ok(Err(message)) => return Err(message),
            Err(_) => return Err("the export thread stopped while starting".into()),
        }
        Ok(Self {
            queue,
            dropped,
            scope: InstrumentationScope::builder("portcullis")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
            stop: Mutex::new(Some((stop, done))),
        })
    }

    /// The instrumentation scope every span carries.
    pub fn scope(&self) -> &InstrumentationScope {
        &self.scope
    }

    /// Queues a finished span without waiting; a full queue drops it (counted).
    pub fn submit(&self, span: SpanData) {
        if self.queue.try_send(span).is_err() {
            self.dropped.inc();
        }
    }

    /// Exports what is queued and stops the export thread, waiting `timeout` at most
    /// (at shutdown). Spans submitted afterwards are dropped and counted.
    pub fn flush(&self, timeout: Duration) {
        let taken = self
            .stop
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some((stop, done)) = taken {
            let _ = stop.send(());
            let _ = done.recv_timeout(timeout);
        }
    }
}

impl std::fmt::Debug for SpanExport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpanExport").finish_non_exhaustive()
    }
}
