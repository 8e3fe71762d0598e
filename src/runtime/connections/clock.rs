//! One connection's deadline, moved by what the connection is doing:
//!
//! - **head**: from the connection's start, or from the first byte of a later request,
//!   the whole request head must arrive within `request_header_timeout`; more bytes do
//!   not extend it (the slowloris defence);
//! - **busy**: a request is being served; body reads have their own idle timeout;
//! - **idle**: between two HTTP/1 requests, for at most `keepalive_timeout`;
//! - **h2**: once the HTTP/2 preface has arrived, Pingora's idle timeout governs.
//!
//! The connection's own task moves the clock: its reads (through
//! [`super::stream::TimedStream`]) and the proxy phases of HTTP/1 requests (through
//! [`head_received`] and [`request_finished`]). [`Clock::poll_expired`] is polled after
//! the connection in the same task, so it always sees the latest deadline.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

use crate::model::connections::ConnectionPolicy;

tokio::task_local! {
    /// The clock of the HTTP/1 connection whose task is running.
    static CONNECTION: Arc<Clock>;
}

/// The HTTP/2 connection preface (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// `preface` once the bytes read are known not to be an HTTP/2 preface.
const NOT_H2: u8 = u8::MAX;

const HEAD: u8 = 0;
const BUSY: u8 = 1;
const IDLE: u8 = 2;
const H2: u8 = 3;

/// `deadline` when there is none.
const NO_DEADLINE: u64 = u64::MAX;

/// A connection's phase and deadline (milliseconds after `started`).
#[derive(Debug)]
pub struct Clock {
    started: Instant,
    phase: AtomicU8,
    deadline: AtomicU64,
    /// Bytes of the HTTP/2 preface read so far, or [`NOT_H2`].
    preface: AtomicU8,
    request_header_timeout: Duration,
    keepalive_timeout: Option<Duration>,
}

impl Clock {
    /// The clock of a connection that starts now: its first request head is due within
    /// `request_header_timeout`.
    pub fn start(policy: &ConnectionPolicy) -> Arc<Self> {
        let clock = Self {
            started: Instant::now(),
            phase: AtomicU8::new(HEAD),
            deadline: AtomicU64::new(NO_DEADLINE),
            preface: AtomicU8::new(0),
            request_header_timeout: policy.request_header_timeout,
            keepalive_timeout: policy.keepalive_timeout,
        };
        clock.set(HEAD, Some(policy.request_header_timeout));
        Arc::new(clock)
    }

    /// Runs `future` (the connection's HTTP processing) with this clock reachable from
    /// the proxy phases.
    pub fn scope<F: Future>(self: &Arc<Self>, future: F) -> impl Future<Output = F::Output> {
        CONNECTION.scope(Arc::clone(self), future)
    }

    /// Bytes were read from the client.
    pub fn on_read(&self, bytes: &[u8]) {
        let matched = self.preface.load(Ordering::Relaxed);
        if usize::from(matched) < H2_PREFACE.len() {
            self.follow_preface(matched, bytes);
        }
        if self.phase.load(Ordering::Relaxed) == IDLE {
            self.set(HEAD, Some(self.request_header_timeout));
        }
    }

    fn follow_preface(&self, matched: u8, bytes: &[u8]) {
        let at = usize::from(matched);
        let n = bytes.len().min(H2_PREFACE.len() - at);
        if bytes[..n] != H2_PREFACE[at..at + n] {
            self.preface.store(NOT_H2, Ordering::Relaxed);
            return;
        }
        let matched = at + n;
        self.preface.store(matched as u8, Ordering::Relaxed);
        if matched == H2_PREFACE.len() {
            self.set(H2, None);
        }
    }

    fn set(&self, phase: u8, timeout: Option<Duration>) {
        let deadline = timeout.map_or(NO_DEADLINE, |timeout| {
            let at = self.started.elapsed() + timeout;
            u64::try_from(at.as_millis()).unwrap_or(NO_DEADLINE - 1)
        });
        self.deadline.store(deadline, Ordering::Relaxed);
        self.phase.store(phase, Ordering::Relaxed);
    }

    /// Ready once the current deadline has passed. Registers a timer for the current
    /// deadline only: it must be polled again after anything that moves the clock (the
    /// connection's task does so, polling it after the connection).
    pub fn poll_expired(&self, mut sleep: Pin<&mut Sleep>, cx: &mut Context<'_>) -> Poll<()> {
        let deadline = self.deadline.load(Ordering::Relaxed);
        if deadline == NO_DEADLINE {
            return Poll::Pending;
        }
        let at = self.started + Duration::from_millis(deadline);
        if sleep.deadline() != at {
            sleep.as_mut().reset(at);
        }
        sleep.poll(cx)
    }
}

/// Called once an HTTP/1 request head has been parsed: the head deadline is met.
pub fn head_received() {
    let _ = CONNECTION.try_with(|clock| {
        if matches!(clock.phase.load(Ordering::Relaxed), HEAD | IDLE) {
            clock.set(BUSY, None);
        }
    });
}

/// Called when an HTTP/1 request is done: the connection may idle until the next one.
pub fn request_finished() {
    let _ = CONNECTION.try_with(|clock| {
        if let (BUSY, Some(keepalive)) =
            (clock.phase.load(Ordering::Relaxed), clock.keepalive_timeout)
        {
            clock.set(IDLE, Some(keepalive));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> ConnectionPolicy {
        let config = crate::config::parse("listeners: [{address: '127.0.0.1:1'}]").expect("parses");
        ConnectionPolicy::compile(&config).expect("valid")
    }

    fn phase(clock: &Clock) -> u8 {
        clock.phase.load(Ordering::Relaxed)
    }

    #[tokio::test]
    async fn an_http1_connection_walks_head_busy_idle_head() {
        let clock = Clock::start(&policy());
        assert_eq!(phase(&clock), HEAD);
        clock
            .scope(async {
                clock.on_read(b"GET / HTTP/1.1\r\n");
                head_received();
                assert_eq!(phase(&clock), BUSY);
                request_finished();
                assert_eq!(phase(&clock), IDLE);
                let idle_deadline = clock.deadline.load(Ordering::Relaxed);
                assert!(idle_deadline >= 60_000, "{idle_deadline}");
                clock.on_read(b"G");
                assert_eq!(phase(&clock), HEAD);
                assert!(clock.deadline.load(Ordering::Relaxed) < 11_000);
            })
            .await;
    }

    #[tokio::test]
    async fn more_head_bytes_do_not_move_the_deadline() {
        let clock = Clock::start(&policy());
        let deadline = clock.deadline.load(Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(20)).await;
        clock.on_read(b"GET /");
        clock.on_read(b" HTTP/1.1\r\n");
        assert_eq!(clock.deadline.load(Ordering::Relaxed), deadline);
    }

    #[test]
    fn the_h2_preface_ends_the_head_deadline_even_in_pieces() {
        let clock = Clock::start(&policy());
        clock.on_read(&H2_PREFACE[..5]);
        assert_eq!(phase(&clock), HEAD);
        clock.on_read(&H2_PREFACE[5..]);
        assert_eq!(phase(&clock), H2);
        assert_eq!(clock.deadline.load(Ordering::Relaxed), NO_DEADLINE);

        let http1 = Clock::start(&policy());
        http1.on_read(b"PRI / HTTP/1.1\r\n");
        http1.on_read(&H2_PREFACE[16..]);
        assert_eq!(phase(&http1), HEAD);
    }

    #[test]
    fn phases_outside_a_connection_scope_do_nothing() {
        head_received();
        request_finished();
    }

    #[tokio::test]
    async fn the_clock_expires_at_its_deadline() {
        let config = crate::config::parse(
            "server: {request_header_timeout: 50ms}\nlisteners: [{address: '127.0.0.1:1'}]",
        )
        .expect("parses");
        let clock = Clock::start(&ConnectionPolicy::compile(&config).expect("valid"));
        let sleep = tokio::time::sleep(Duration::from_secs(3600));
        tokio::pin!(sleep);
        let started = std::time::Instant::now();
        std::future::poll_fn(|cx| clock.poll_expired(sleep.as_mut(), cx)).await;
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(40), "{waited:?}");
        assert!(waited < Duration::from_secs(2), "{waited:?}");
    }
}
