//! Retries: the one decision every phase that sees a failed attempt asks (counted in
//! `portcullis_retries_total`), which requests may be sent twice, the backoff, and the
//! target of the next attempt.

use std::time::Duration;

use pingora::proxy::Session;
use pingora_error::{Error, ErrorType, Result};

use super::choice::balancing_key;
use super::context::RequestCtx;
use crate::telemetry::metrics::Metrics;

/// A failed attempt, as the retry decision sees it.
#[derive(Debug, Clone, Copy)]
pub(super) enum Failure {
    /// The connect was refused or timed out: nothing was sent.
    Connect,
    /// The upstream answered with this status.
    Status(u16),
    /// The exchange broke on a pooled connection the upstream had already closed, which
    /// Pingora retries on its own (outside `retries.attempts`).
    ReusedConnection,
}

impl Failure {
    /// The `reason` label.
    fn reason(self) -> &'static str {
        match self {
            Failure::Connect => "connect_failure",
            Failure::Status(502) => "502",
            Failure::Status(503) => "503",
            Failure::Status(504) => "504",
            Failure::Status(_) => "status",
            Failure::ReusedConnection => "reused_connection",
        }
    }
}

/// Whether a failed attempt is tried again, counted when it is: the pool's `retries`
/// cover the failure, attempts remain, the request may be sent twice (always, when
/// nothing was sent), and the retry budget allows it (spending from it).
pub(super) fn decide(
    failure: Failure,
    session: &Session,
    ctx: &RequestCtx,
    metrics: &Metrics,
) -> bool {
    let upstream = ctx.upstream.as_deref();
    let retry = match failure {
        Failure::ReusedConnection => retriable_request(session),
        Failure::Connect | Failure::Status(_) => upstream.is_some_and(|upstream| {
            let policy = &upstream.retries;
            let covered = match failure {
                Failure::Status(status) => policy.on_status.contains(&status),
                _ => policy.on_connect_failure,
            };
            covered
                && ctx.attempts <= policy.attempts
                && (matches!(failure, Failure::Connect) || retriable_request(session))
                // Last: only a retry that happens spends from the budget.
                && policy.budget_allows()
        }),
    };
    if let (true, Some(upstream)) = (retry, upstream) {
        metrics
            .retries
            .with_label_values(&[&upstream.name, failure.reason()])
            .inc();
    }
    retry
}

/// The error that has Pingora retry an attempt answered with a retried status.
pub(super) fn status_error(status: u16) -> Box<Error> {
    let mut e = Error::explain(
        ErrorType::HTTPStatus(status),
        "upstream answered with a retried status",
    );
    e.as_up();
    e.set_retry(true);
    e
}

/// Chooses the target of a retry after the backoff: another target of the pool, or,
/// with every other target tried, one already tried.
pub(super) async fn next_target(session: &Session, ctx: &mut RequestCtx) -> Result<()> {
    let Some(upstream) = ctx.upstream.clone() else {
        return Error::e_explain(ErrorType::InternalError, "retry without an upstream");
    };
    let hash_on = upstream.hash_on.as_ref();
    let key = balancing_key(session, &ctx.plugins, hash_on, &mut ctx.key);
    if !upstream.retries.backoff.is_zero() {
        tokio::time::sleep(backoff(upstream.retries.backoff, ctx.attempts - 1)).await;
    }
    ctx.target = upstream
        .select(key, ctx.tried)
        .or_else(|| upstream.select(key, 0));
    Ok(())
}

/// Whether the request may be sent twice: an idempotent method (GET, HEAD, OPTIONS,
/// PUT, DELETE) or an `Idempotency-Key`, and a body that is still fully buffered.
fn retriable_request(session: &Session) -> bool {
    let req = session.req_header();
    let idempotent = matches!(
        req.method,
        http::Method::GET
            | http::Method::HEAD
            | http::Method::OPTIONS
            | http::Method::PUT
            | http::Method::DELETE
    ) || req.headers.contains_key("idempotency-key");
    idempotent && !session.as_ref().retry_buffer_truncated()
}

/// Jittered exponential backoff: `base × 2^(retry-1)`, scaled by a random 50–100%.
fn backoff(base: Duration, retry: u32) -> Duration {
    use rand::Rng;
    let exponential = base.saturating_mul(1u32 << retry.saturating_sub(1).min(10));
    exponential.mul_f64(rand::thread_rng().gen_range(0.5..=1.0))
}
