//! The export thread: a single-threaded Tokio runtime of its own (the request path's
//! runtimes never wait on a collector) that batches queued spans and exports them.

use std::collections::HashMap;
use std::sync::mpsc as std_mpsc;

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry_otlp::tonic_types::metadata::MetadataMap;
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::trace::{SpanData, SpanExporter as _};
use opentelemetry_sdk::Resource;
use prometheus::IntCounter;
use tokio::sync::{mpsc, oneshot};

use super::{ExportSettings, OtlpProtocol, BATCH_DELAY, MAX_BATCH};

/// What the export thread owns.
pub(super) struct Worker {
    pub settings: ExportSettings,
    pub spans: mpsc::Receiver<SpanData>,
    pub stop: oneshot::Receiver<()>,
    pub dropped: IntCounter,
}

impl Worker {
    /// Builds the exporter (telling `built` how that went), then exports until stopped or
    /// until every sender is gone (the configuration that held it was replaced).
    pub fn run(mut self, built: std_mpsc::Sender<Result<(), String>>) {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(e) => {
                let _ = built.send(Err(format!("cannot start the export runtime: {e}")));
                return;
            }
        };
        runtime.block_on(async move {
            // The gRPC channel is created (lazily connected) inside this runtime.
            let mut exporter = match build_exporter(&self.settings) {
                Ok(exporter) => exporter,
                Err(message) => {
                    let _ = built.send(Err(message));
                    return;
                }
            };
            let _ = built.send(Ok(()));
            self.export_until_stopped(&exporter).await;
            let _ = exporter.shutdown_with_timeout(self.settings.timeout);
        });
    }

    async fn export_until_stopped(&mut self, exporter: &opentelemetry_otlp::SpanExporter) {
        // A batch is never larger than the queue: what the thread holds outside the
        // queue stays within the bound too (`max_queue` queued plus one batch).
        let most = MAX_BATCH.min(self.settings.max_queue).max(1);
        let mut batch = Vec::with_capacity(most);
        let mut tick = tokio::time::interval(BATCH_DELAY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let room = most - batch.len();
            tokio::select! {
                _ = &mut self.stop => break,
                _ = tick.tick() => {
                    if !batch.is_empty() {
                        self.export(exporter, &mut batch).await;
                    }
                }
                received = self.spans.recv_many(&mut batch, room), if room > 0 => {
                    if received == 0 {
                        break;
                    }
                    if batch.len() >= most {
                        self.export(exporter, &mut batch).await;
                    }
                }
            }
        }
        // What is still queued goes out before the thread ends.
        self.spans.close();
        while self.spans.recv_many(&mut batch, most).await > 0 {
            self.export(exporter, &mut batch).await;
        }
        self.export(exporter, &mut batch).await;
    }

    /// Exports `batch` (emptying it); its spans count as dropped when the collector does
    /// not take them in time.
    async fn export(&self, exporter: &opentelemetry_otlp::SpanExporter, batch: &mut Vec<SpanData>) {
        if batch.is_empty() {
            return;
        }
        let spans = std::mem::replace(batch, Vec::with_capacity(batch.capacity()));
        let count = spans.len() as u64;
        let exported = tokio::time::timeout(self.settings.timeout, exporter.export(spans)).await;
        if !matches!(exported, Ok(Ok(()))) {
            self.dropped.inc_by(count);
            log::debug!("trace export of {count} spans failed: {exported:?}");
        }
    }
}

/// The OTLP exporter `settings` describe, with the `service.name` resource.
fn build_exporter(settings: &ExportSettings) -> Result<opentelemetry_otlp::SpanExporter, String> {
    let builder = opentelemetry_otlp::SpanExporter::builder();
    let built = match settings.protocol {
        OtlpProtocol::HttpProtobuf => {
            let headers: HashMap<String, String> = settings
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            builder
                .with_http()
                .with_endpoint(settings.endpoint.clone())
                .with_protocol(Protocol::HttpBinary)
                .with_timeout(settings.timeout)
                .with_headers(headers)
                .build()
        }
        OtlpProtocol::Grpc => {
            let mut headers = HeaderMap::new();
            for (name, value) in &settings.headers {
                let name = HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| format!("header {name:?} is not a valid name"))?;
                let value = HeaderValue::from_str(value)
                    .map_err(|_| format!("header {name:?} has a value that cannot be sent"))?;
                headers.insert(name, value);
            }
            let metadata = MetadataMap::from_headers(headers);
            builder
                .with_tonic()
                .with_endpoint(settings.endpoint.clone())
                .with_protocol(Protocol::Grpc)
                .with_timeout(settings.timeout)
                .with_metadata(metadata)
                .build()
        }
    };
    let mut exporter = built.map_err(|e| e.to_string())?;
    exporter.set_resource(
        &Resource::builder_empty()
            .with_service_name(settings.service_name.clone())
            .build(),
    );
    Ok(exporter)
}
