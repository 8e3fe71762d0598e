//! The request's spans: the phases record when they ran in [`RequestSpans`] (only for a
//! request whose trace is exported, so an unsampled one reads no extra clock and
//! allocates nothing), and once the request is over its spans are built and queued for
//! export: the server span (OTel HTTP semantic conventions) and, under it, auth, rate
//! limit (with its Redis round trip), cache lookup, upstream connect and upstream
//! response, whose id the upstream's `traceparent` carries.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::KeyValue;
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};
use pingora::proxy::Session;
use portcullis_plugins::phase_times::Interval;
use rand::Rng;

use super::context::RequestCtx;
use super::span_times::RequestSpans;
use crate::model::cache::CacheStatus;
use crate::model::request::{request_host, request_port};
use crate::telemetry::tracing::SpanExport;

/// Recording starts for `ctx` when its trace is exported.
pub fn begin(ctx: &mut RequestCtx) {
    if !ctx.trace.as_ref().is_some_and(|trace| trace.exported()) {
        return;
    }
    ctx.plugins.times.recording = true;
    ctx.spans = Some(Box::new(RequestSpans::new(ctx.started)));
}

/// The cache lookup begins (the route's cache is on for this request).
pub fn cache_lookup_started(ctx: &mut RequestCtx) {
    if let Some(spans) = &mut ctx.spans {
        spans.cache_start = Some(Instant::now());
    }
}

/// The cache lookup is over (a miss goes upstream, a hit answers).
pub fn cache_lookup_ended(ctx: &mut RequestCtx) {
    if let Some(spans) = &mut ctx.spans {
        if let Some(start) = spans.cache_start.take() {
            spans.cache = Some(Interval::since(start));
        }
    }
}

/// An attempt asks for a connection to its target.
pub fn connect_started(ctx: &mut RequestCtx) {
    if let Some(spans) = &mut ctx.spans {
        spans.connect_start = Some(Instant::now());
    }
}

/// The attempt's connection is ready (`reused`: taken from the pool).
pub fn connected(ctx: &mut RequestCtx, reused: bool) {
    if let Some(spans) = &mut ctx.spans {
        if let Some(start) = spans.connect_start.take() {
            spans.connect = Some((Interval::since(start), reused));
        }
    }
}

/// The upstream's response head arrived with `status`.
pub fn upstream_answered(ctx: &mut RequestCtx, status: u16) {
    let sent = ctx.upstream_sent_at;
    if let (Some(spans), Some(sent)) = (&mut ctx.spans, sent) {
        spans.upstream = Some(Interval::since(sent));
        spans.upstream_status = status;
    }
}

/// Builds the request's spans and queues them (`status`: what the client got, 0 when
/// nothing was sent).
pub fn export(session: &Session, ctx: &RequestCtx, status: u16, elapsed: Duration) {
    let (Some(spans), Some(trace)) = (&ctx.spans, &ctx.trace) else {
        return;
    };
    let Some(export) = ctx
        .gateway
        .as_ref()
        .and_then(|gateway| gateway.tracing.otlp.as_ref())
        .and_then(|otlp| otlp.export.as_deref())
    else {
        return;
    };
    let (Ok(trace_id), Ok(server_id)) = (
        TraceId::from_hex(trace.trace_id.as_str()),
        SpanId::from_hex(trace.span_id.as_str()),
    ) else {
        return;
    };
    let builder = Builder {
        export,
        trace_id,
        spans,
        started: ctx.started,
    };
    let req = session.req_header();
    let method = req.method.as_str().to_string();
    let route = ctx.route.as_ref().map(|route| route.name.to_string());
    let mut attributes = vec![
        KeyValue::new("http.request.method", method.clone()),
        KeyValue::new("url.path", req.uri.path().to_string()),
        KeyValue::new("portcullis.request_id", ctx.request_id().to_string()),
    ];
    if let Some(route) = &route {
        attributes.push(KeyValue::new("http.route", route.clone()));
    }
    if status != 0 {
        attributes.push(KeyValue::new(
            "http.response.status_code",
            i64::from(status),
        ));
    }
    let host = request_host(req);
    if !host.is_empty() {
        attributes.push(KeyValue::new("server.address", host.to_string()));
    }
    if let Some(port) = request_port(req) {
        attributes.push(KeyValue::new("server.port", i64::from(port)));
    }
    if let Some(ip) = ctx.plugins.client_ip {
        attributes.push(KeyValue::new("client.address", ip.to_string()));
    }
    let name = match &route {
        Some(route) => format!("{method} {route}"),
        None => method.clone(),
    };
    let server_status = if status >= 500 || status == 0 {
        Status::error(format!("answered {status}"))
    } else {
        Status::Unset
    };
    let end = ctx.started + elapsed;
    builder.submit(Span {
        id: server_id,
        parent: trace.parent_id.map_or(SpanId::INVALID, SpanId::from),
        remote_parent: trace.parent_id.is_some(),
        kind: SpanKind::Server,
        name: name.into(),
        interval: Interval {
            start: ctx.started,
            end,
        },
        attributes,
        status: server_status,
    });

    let times = &ctx.plugins.times;
    if let Some(auth) = times.auth {
        builder.child(
            server_id,
            "auth",
            auth.interval,
            vec![
                KeyValue::new("portcullis.auth.plugin", auth.plugin),
                KeyValue::new("portcullis.auth.outcome", auth.outcome),
            ],
        );
    }
    if let Some(interval) = times.rate_limit {
        let mut attributes = vec![KeyValue::new(
            "portcullis.rate_limit.outcome",
            if ctx.plugins.rate_limit_rule.is_some() {
                "refused"
            } else {
                "allowed"
            },
        )];
        if let Some(rule) = &ctx.plugins.rate_limit_rule {
            attributes.push(KeyValue::new(
                "portcullis.rate_limit.rule",
                rule.to_string(),
            ));
        }
        let rate_limit = builder.child(server_id, "rate_limit", interval, attributes);
        if let Some(redis) = times.redis {
            builder.submit(Span {
                id: new_span_id(),
                parent: rate_limit,
                remote_parent: false,
                kind: SpanKind::Client,
                name: "rate_limit redis".into(),
                interval: redis.interval,
                attributes: vec![
                    KeyValue::new("db.system.name", "redis"),
                    KeyValue::new("db.operation.name", "EVALSHA"),
                    KeyValue::new("portcullis.redis.calls", i64::from(redis.calls)),
                ],
                status: if redis.failed {
                    Status::error("redis call failed")
                } else {
                    Status::Unset
                },
            });
        }
    }
    if let Some(interval) = spans.cache {
        let result = ctx.cache.map_or("", CacheStatus::label);
        builder.child(
            server_id,
            "cache lookup",
            interval,
            vec![KeyValue::new("portcullis.cache.result", result)],
        );
    }
    let target = ctx.target.as_ref().map(|slot| slot.target());
    let peer = |attributes: &mut Vec<KeyValue>| {
        if let Some(target) = target {
            push_address(attributes, target.address);
            attributes.push(KeyValue::new("portcullis.target", target.label.to_string()));
        }
        if let Some(upstream) = &ctx.upstream {
            attributes.push(KeyValue::new(
                "portcullis.upstream",
                upstream.name.to_string(),
            ));
        }
    };
    if let Some((interval, reused)) = spans.connect {
        let mut attributes = vec![KeyValue::new("portcullis.connection.reused", reused)];
        peer(&mut attributes);
        builder.child(server_id, "upstream connect", interval, attributes);
    }
    if let (Some(interval), Some(upstream_id)) = (spans.upstream, trace.upstream_span) {
        let status = spans.upstream_status;
        let mut attributes = vec![
            KeyValue::new("http.request.method", method),
            KeyValue::new("http.response.status_code", i64::from(status)),
            KeyValue::new("portcullis.upstream.attempts", i64::from(ctx.attempts)),
        ];
        peer(&mut attributes);
        builder.submit(Span {
            id: SpanId::from(upstream_id),
            parent: server_id,
            remote_parent: false,
            kind: SpanKind::Client,
            name: "upstream response".into(),
            interval,
            attributes,
            // A client span is in error on any 4xx or 5xx (HTTP semantic conventions).
            status: if status >= 400 {
                Status::error(format!("upstream answered {status}"))
            } else {
                Status::Unset
            },
        });
    }
}

fn push_address(attributes: &mut Vec<KeyValue>, address: SocketAddr) {
    attributes.push(KeyValue::new("server.address", address.ip().to_string()));
    attributes.push(KeyValue::new("server.port", i64::from(address.port())));
}

fn new_span_id() -> SpanId {
    SpanId::from(rand::thread_rng().gen_range(1..=u64::MAX))
}

/// One span of the request, before it becomes the SDK's [`SpanData`].
struct Span {
    id: SpanId,
    parent: SpanId,
    remote_parent: bool,
    kind: SpanKind,
    name: Cow<'static, str>,
    interval: Interval,
    attributes: Vec<KeyValue>,
    status: Status,
}

/// Turns the request's [`Span`]s into [`SpanData`] and queues them.
struct Builder<'a> {
    export: &'a SpanExport,
    trace_id: TraceId,
    spans: &'a RequestSpans,
    started: Instant,
}

impl Builder<'_> {
    fn wall(&self, at: Instant) -> SystemTime {
        self.spans.wall_start + at.saturating_duration_since(self.started)
    }

    /// Queues an internal span under `parent` and returns its id.
    fn child(
        &self,
        parent: SpanId,
        name: &'static str,
        interval: Interval,
        attributes: Vec<KeyValue>,
    ) -> SpanId {
        let id = new_span_id();
        self.submit(Span {
            id,
            parent,
            remote_parent: false,
            kind: SpanKind::Internal,
            name: name.into(),
            interval,
            attributes,
            status: Status::Unset,
        });
        id
    }

    fn submit(&self, span: Span) {
        self.export.submit(SpanData {
            span_context: SpanContext::new(
                self.trace_id,
                span.id,
                TraceFlags::SAMPLED,
                false,
                TraceState::NONE,
            ),
            parent_span_id: span.parent,
            parent_span_is_remote: span.remote_parent,
            span_kind: span.kind,
            name: span.name,
            start_time: self.wall(span.interval.start),
            end_time: self.wall(span.interval.end),
            attributes: span.attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: span.status,
            instrumentation_scope: self.export.scope().clone(),
        });
    }
}
