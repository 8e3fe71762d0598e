//! The gate every client connection passes: it admits plain connections (TLS ones were
//! admitted before their handshake), then serves the connection under its [`Clock`] and
//! closes it the moment a deadline passes.

use std::sync::Arc;

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;

use super::admission::Admission;
use super::clock::Clock;
use super::stream::TimedStream;

/// Wraps the HTTP application `app` (Pingora's proxy) with admission and deadlines.
pub struct Gate<A> {
    app: Arc<A>,
    admission: Arc<Admission>,
}

impl<A> Gate<A> {
    /// A gate in front of `app`.
    pub fn new(app: A, admission: Arc<Admission>) -> Self {
        Self {
            app: Arc::new(app),
            admission,
        }
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Gate<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let stream = if stream.as_any().is::<L4Stream>() {
            let mut plain = stream.into_any().downcast::<L4Stream>().ok()?;
            self.admission.admit(&mut plain).await.ok()?;
            plain as Stream
        } else {
            stream
        };
        let clock = Clock::start(self.admission.policy());
        let stream: Stream = Box::new(TimedStream::new(stream, Arc::clone(&clock)));
        let serve = clock.scope(self.app.process_new(stream, shutdown));
        let sleep = tokio::time::sleep(self.admission.policy().request_header_timeout);
        tokio::pin!(serve, sleep);
        // The clock is polled after the connection, so it sees every move the
        // connection's reads and phases just made. Dropping `serve` closes the socket.
        tokio::select! {
            biased;
            reused = &mut serve => reused,
            () = std::future::poll_fn(|cx| clock.poll_expired(sleep.as_mut(), cx)) => None,
        }
    }

    async fn cleanup(&self) {
        self.app.cleanup().await;
    }
}
