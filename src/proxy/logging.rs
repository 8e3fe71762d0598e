//! The request's record, written once it is done: the metrics it counts in (and its
//! route's plugins' and cache's), and its access log line.

use std::time::{Duration, SystemTime};

use pingora::proxy::Session;
use portcullis_plugins::ErrorCode;

use super::context::RequestCtx;
use super::spans;
use crate::model::cache::CacheStatus;
use crate::model::canary::Variant;
use crate::model::request::request_host;
use crate::runtime::state::State;
use crate::telemetry::access_log::Entry;
use crate::telemetry::metrics::{method_label, Metrics};

/// Counts the finished request and writes its access log line.
pub(super) fn record(session: &Session, ctx: &mut RequestCtx, state: &State) {
    let status = session
        .response_written()
        .map_or(0, |resp| resp.status.as_u16());
    let elapsed = ctx.started.elapsed();
    count(session, ctx, &state.metrics, status, elapsed);
    spans::export(session, ctx, status, elapsed);
    if state.access_log.enabled() {
        state
            .access_log
            .write(&entry(session, ctx, status, elapsed));
    }
}

fn count(
    session: &Session,
    ctx: &mut RequestCtx,
    metrics: &Metrics,
    status: u16,
    elapsed: Duration,
) {
    let mut status_buf = itoa_status(status);
    metrics
        .requests
        .with_label_values(&[
            ctx.route.as_ref().map_or("", |route| &*route.name),
            method_label(&session.req_header().method),
            status_text(&mut status_buf),
            ctx.upstream.as_ref().map_or("", |upstream| &*upstream.name),
            ctx.variant.or(ctx.split).map_or("", Variant::as_str),
        ])
        .inc();
    if let Some(route) = &ctx.route {
        route.duration.observe(elapsed.as_secs_f64());
        route.plugins.log(&mut ctx.plugins, status);
        // A background refresh (stale-while-revalidate) is not a client request.
        let background = session.subrequest_ctx.is_some();
        if let (Some(cache), Some(result), false) = (&route.cache, ctx.cache, background) {
            cache.count(result);
        }
    }
}

fn entry<'a>(
    session: &'a Session,
    ctx: &'a RequestCtx,
    status: u16,
    elapsed: Duration,
) -> Entry<'a> {
    let req = session.req_header();
    Entry {
        ts: SystemTime::now(),
        request_id: ctx.request_id(),
        trace_id: ctx
            .trace
            .as_ref()
            .map_or("", |trace| trace.trace_id.as_str()),
        client_ip: ctx.plugins.client_ip,
        method: req.method.as_str(),
        host: request_host(req),
        path: req.uri.path(),
        route: ctx.route.as_ref().map(|route| &*route.name),
        consumer: ctx.plugins.consumer.as_deref(),
        upstream: ctx.upstream.as_ref().map(|upstream| &*upstream.name),
        target: ctx.target.as_ref().map(|slot| &*slot.target().label),
        variant: ctx.variant.or(ctx.split).map(Variant::as_str),
        status,
        bytes_sent: session.body_bytes_sent(),
        duration_ms: elapsed.as_secs_f64() * 1000.0,
        upstream_ms: ctx.upstream_ms,
        cache: ctx.cache.map(CacheStatus::label),
        rate_limit: ctx.plugins.rate_limit_rule.as_deref(),
        error: ctx.error.map(ErrorCode::as_str),
    }
}

/// A status as decimal text without allocating.
fn itoa_status(status: u16) -> [u8; 3] {
    let status = status.min(999);
    [
        b'0' + (status / 100) as u8,
        b'0' + (status / 10 % 10) as u8,
        b'0' + (status % 10) as u8,
    ]
}

fn status_text(buf: &mut [u8; 3]) -> &str {
    std::str::from_utf8(buf).unwrap_or("000")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_written_as_three_digits() {
        for (status, text) in [(0, "000"), (200, "200"), (404, "404"), (599, "599")] {
            assert_eq!(status_text(&mut itoa_status(status)), text);
        }
        assert_eq!(status_text(&mut itoa_status(1200)), "999");
    }
}
