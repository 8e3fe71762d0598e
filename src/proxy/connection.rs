//! Counting client connections for `portcullis_downstream_connections`.
//!
//! Pingora has no per-connection hook, but it carries a value from one request to the
//! next on an HTTP/1.x keep-alive connection. A [`Connection`] is created with the first
//! request, handed from request to request, and dropped with the connection. An HTTP/2
//! stream has no such carrier, so each stream counts while it is open.

use std::any::Any;
use std::sync::Arc;

use prometheus::IntGauge;

/// One open client connection; counted from creation until the last holder drops it.
pub struct Connection {
    gauge: IntGauge,
}

impl Connection {
    /// Counts a new connection.
    pub fn open(gauge: &IntGauge) -> Arc<Self> {
        gauge.inc();
        Arc::new(Self {
            gauge: gauge.clone(),
        })
    }

    /// The connection a previous request on the same keep-alive connection handed over.
    pub fn handed_over(value: Box<dyn Any + Send + Sync>) -> Option<Arc<Self>> {
        value.downcast::<Arc<Self>>().ok().map(|boxed| *boxed)
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}
