//! The request's walk: Pingora's `ProxyHttp` phases, in order, each short and delegating
//! to the router, the plugins and the upstream pools.

mod choice;
mod connection;
mod context;
mod errors;
pub mod forwarding;
mod hygiene;
mod respond;
mod retry;
pub mod trace;

use std::any::Any;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use pingora::cache::key::HashBinary;
use pingora::cache::{CacheKey, CacheMeta, NoCacheReason, RespCacheable};
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, ProxyWarnLogContext, Session};
use pingora_error::{Error, ErrorSource, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use portcullis_plugins::{ErrorCode, Rejection};

pub use context::RequestCtx;
pub use errors::error_response;

use crate::access_log::Entry;
use crate::cache::{self, policy, store, CacheStatus};
use crate::canary::Variant;
use crate::compression;
use crate::gateway::RouteAction;
use crate::metrics::method_label;
use crate::model::connections::ConnectionPolicy;
use crate::runtime::connections;
use crate::state::State;
use crate::upstream::{bit, Outcome};
use choice::{balancing_key, choose_target};
use connection::Connection;
use retry::{backoff, retriable_request, status_reason};
use trace::TraceContext;

/// The proxy service logic.
pub struct Proxy {
    state: Arc<State>,
    connections: Arc<ConnectionPolicy>,
}

impl Proxy {
    /// Proxy logic serving whatever configuration `state` holds, on client connections
    /// governed by `connections`.
    pub fn new(state: Arc<State>, connections: Arc<ConnectionPolicy>) -> Self {
        Self { state, connections }
    }
}

#[async_trait]
impl ProxyHttp for Proxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::new()
    }

    async fn early_request_filter(
        &self,
        session: &mut Session,
        _ctx: &mut RequestCtx,
    ) -> Result<()> {
        connections::head_received();
        connection_timeouts(session, &self.connections);
        compression::prepare(session);
        Ok(())
    }

    /// Route match, plugins, local answers, pool and target choice. Returns `true` when
    /// the gateway has answered itself.
    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        if ctx.connection.is_none() {
            ctx.connection = Some(Connection::open(&self.state.metrics.downstream_connections));
        }
        // Off unless the matched route asks for it (errors and 404s stay plain).
        compression::start(session, None);
        let gateway = self.state.gateway();
        identify(session, ctx, &gateway.tracing);
        ctx.plugins.client_ip = self
            .connections
            .client_address
            .resolve(peer_ip(session), &session.req_header().headers);
        let checked = hygiene::check(session.req_header(), || {
            session.downstream_session.to_h1_raw()
        });
        if let Err(rejection) = checked {
            ctx.gateway = Some(gateway);
            return respond::reject(session, ctx, rejection).await;
        }

        let Some((matcher, route)) = gateway.router.find(session.req_header()) else {
            ctx.gateway = Some(gateway);
            let rejection =
                Rejection::new(ErrorCode::RouteNotFound, "no route matches the request");
            return respond::reject(session, ctx, rejection).await;
        };
        let route = Arc::clone(route);
        if route.compression.is_some() {
            compression::start(session, route.compression.as_ref());
        }
        ctx.strip_len = route
            .strip_prefix
            .then(|| matcher.prefix().map(|p| p.trim_end_matches('/').len()))
            .flatten();
        ctx.plugins.route = Arc::clone(&route.name);
        ctx.route = Some(Arc::clone(&route));
        ctx.gateway = Some(gateway);

        if !route.plugins.is_empty() {
            if let Err(rejection) = route
                .plugins
                .request(session.req_header_mut(), &mut ctx.plugins)
                .await
            {
                return respond::reject(session, ctx, rejection).await;
            }
            if let Some(answer) = ctx.plugins.answer.take() {
                return respond::answer(session, ctx, answer).await;
            }
        }

        match &route.action {
            RouteAction::Respond(fixed) => respond::fixed(session, ctx, fixed).await,
            // The pool and target are chosen once the cache cannot answer
            // (`proxy_upstream_filter`), so cache hits never touch the pool.
            RouteAction::Proxy { .. } => Ok(false),
        }
    }

    /// Turns the route's cache on for this request, unless the request bypasses it.
    /// Runs after `request_filter`: the route's plugins (auth included) have already
    /// accepted the request, so a cached response is never served past them.
    fn request_cache_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<()> {
        let Some(cache) = ctx.route.as_ref().and_then(|route| route.cache.as_ref()) else {
            return Ok(());
        };
        let authenticated = ctx.plugins.consumer.is_some();
        if policy::request_bypass(cache, session.req_header(), authenticated).is_some() {
            ctx.cache = Some(CacheStatus::Bypass);
            return Ok(());
        }
        session.cache.enable(
            cache.store,
            Some(cache.store.eviction()),
            None,
            Some(store::cache_lock()),
            None,
        );
        session.cache.set_max_file_size_bytes(cache.max_object_size);
        ctx.cache = Some(CacheStatus::Miss);
        Ok(())
    }

    fn cache_key_callback(&self, session: &Session, ctx: &mut RequestCtx) -> Result<CacheKey> {
        match &ctx.route {
            Some(route) => Ok(cache::cache_key(&route.name, session.req_header())),
            None => Error::e_explain(ErrorType::InternalError, "cache key without a route"),
        }
    }

    fn response_cache_filter(
        &self,
        _session: &Session,
        resp: &ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<RespCacheable> {
        Ok(
            match ctx.route.as_ref().and_then(|route| route.cache.as_ref()) {
                Some(cache) => policy::response_cacheable(cache, resp),
                None => RespCacheable::Uncacheable(NoCacheReason::NeverEnabled),
            },
        )
    }

    fn cache_vary_filter(
        &self,
        meta: &CacheMeta,
        ctx: &mut RequestCtx,
        req: &RequestHeader,
    ) -> Option<HashBinary> {
        let cache = ctx.route.as_ref()?.cache.as_ref()?;
        policy::variance(cache, meta, req)
    }

    /// Stale answers: always while revalidating (the stored `stale-while-revalidate`
    /// window is checked by pingora-cache), and on upstream failure: connect or read
    /// errors, 5xx, or no available target (within the `stale-if-error` window).
    fn should_serve_stale(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
        error: Option<&Error>,
    ) -> bool {
        let Some(error) = error else { return true };
        error.esource() == &ErrorSource::Upstream
            || matches!(error.etype(), ErrorType::HTTPStatus(status) if *status >= 500)
            || ctx.error == Some(ErrorCode::UpstreamUnavailable)
    }

    /// The cache could not answer: choose the pool and target. With no available
    /// target and a stale response to fall back on, the refusal waits in the context
    /// so the stale-if-error path can still answer.
    async fn proxy_upstream_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<bool> {
        let Some(route) = ctx.route.clone() else {
            return Ok(true);
        };
        let RouteAction::Proxy {
            upstream,
            canary,
            fallback,
        } = &route.action
        else {
            return Ok(true);
        };
        let canary = canary
            .as_ref()
            .filter(|canary| canary.choose(session.req_header(), &ctx.plugins) == Variant::Canary);
        let pools = [
            canary.map(|canary| (&canary.upstream, Variant::Canary)),
            Some((upstream, Variant::Stable)),
            fallback
                .as_ref()
                .map(|fallback| (fallback, Variant::Stable)),
        ];
        let Err(rejection) = choose_target(session, ctx, pools) else {
            return Ok(true);
        };
        if rejection.code == ErrorCode::UpstreamUnavailable && session.cache.can_serve_stale_error()
        {
            ctx.error = Some(rejection.code);
            ctx.rejection = Some(rejection);
            return Ok(true);
        }
        respond::reject(session, ctx, rejection).await?;
        Ok(false)
    }

    /// Hands the connection's counter to the next request on a keep-alive connection.
    fn persist_connection_context(
        &self,
        _session: &Session,
        ctx: &RequestCtx,
    ) -> Option<Box<dyn Any + Send + Sync>> {
        let connection = ctx.connection.as_ref()?;
        Some(Box::new(Arc::clone(connection)))
    }

    fn on_connection_reuse(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
        previous: Box<dyn Any + Send + Sync>,
    ) {
        ctx.connection = Connection::handed_over(previous);
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let Some(chunk) = body else { return Ok(()) };
        ctx.body_bytes += chunk.len() as u64;
        let Some(route) = &ctx.route else {
            return Ok(());
        };
        if let Err(rejection) = route.plugins.request_body(ctx.body_bytes, &mut ctx.plugins) {
            let status = rejection.code.status().as_u16();
            ctx.rejection = Some(rejection);
            return Error::e_explain(ErrorType::HTTPStatus(status), "request body refused");
        }
        Ok(())
    }

    /// The peer for this attempt: the target chosen in `request_filter`, or, on a retry,
    /// another target of the pool after the backoff.
    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        ctx.attempts += 1;
        if ctx.attempts > 1 {
            let Some(upstream) = ctx.upstream.clone() else {
                return Error::e_explain(ErrorType::InternalError, "retry without an upstream");
            };
            if !upstream.retries.backoff.is_zero() {
                tokio::time::sleep(backoff(upstream.retries.backoff, ctx.attempts - 1)).await;
            }
            let key = balancing_key(session, &ctx.plugins, upstream.hash_on.as_ref());
            let retry_target = upstream
                .select(&key, ctx.tried)
                // With every other target tried, go back to one already tried.
                .or_else(|| upstream.select(&key, 0));
            ctx.target = retry_target;
        }
        let Some(target) = &ctx.target else {
            ctx.error = Some(ErrorCode::UpstreamUnavailable);
            return Error::e_explain(ErrorType::HTTPStatus(503), "no available target");
        };
        ctx.tried |= bit(target.index());
        Ok(target.peer())
    }

    /// A refused or timed-out connect: nothing was sent, so any method may be retried
    /// (on another target) when `retries.on` has `connect_failure` and the budget allows.
    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if let Some(target) = &mut ctx.target {
            target.record(Outcome::GatewayFailure);
        }
        if let Some(upstream) = &ctx.upstream {
            let policy = &upstream.retries;
            if policy.on_connect_failure
                && ctx.attempts <= policy.attempts
                && policy.budget_allows()
            {
                e.set_retry(true);
                self.state
                    .metrics
                    .retries
                    .with_label_values(&[&upstream.name, "connect_failure"])
                    .inc();
            }
        }
        e
    }

    /// An error once connected. A status retry decided in `upstream_response_filter`
    /// stands; any other error counts as a gateway failure of the target, and is retried
    /// only as Pingora would (a stale reused connection), for retriable requests.
    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        if std::mem::take(&mut ctx.retrying_status) {
            return e;
        }
        let mut e = e.more_context(format!("Peer: {peer}"));
        if e.esource() == &ErrorSource::Upstream {
            if let Some(target) = &mut ctx.target {
                target.record(Outcome::GatewayFailure);
            }
        }
        if retriable_request(session) {
            e.retry.decide_reuse(client_reused);
        } else {
            e.set_retry(false);
        }
        if let (true, Some(upstream)) = (e.retry(), &ctx.upstream) {
            self.state
                .metrics
                .retries
                .with_label_values(&[&upstream.name, "reused_connection"])
                .inc();
        }
        e
    }

    fn suppress_proxy_warn_log(
        &self,
        _session: &Session,
        _ctx: &RequestCtx,
        _error: &Error,
        context: ProxyWarnLogContext,
    ) -> bool {
        // Every retry is counted in portcullis_retries_total; no log line per request.
        matches!(context, ProxyWarnLogContext::UpstreamRetry)
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(strip_len) = ctx.strip_len {
            let path = forwarding::stripped_path_and_query(&upstream_request.uri, strip_len);
            upstream_request.set_raw_path(path.as_bytes())?;
        }
        forwarding::remove_hop_by_hop(upstream_request);
        forwarding::add_forwarded(upstream_request, peer_ip(session), forwarded_proto(session));
        if let Some(gateway) = &ctx.gateway {
            upstream_request.insert_header(
                gateway.tracing.request_id_header.clone(),
                ctx.request_id.as_str(),
            )?;
        }
        if let Some(trace) = &ctx.trace {
            upstream_request.insert_header("traceparent", trace.header())?;
        }
        upstream_request.remove_header(&forwarding::VARIANT);
        if let Some(variant) = ctx.variant {
            upstream_request.insert_header(forwarding::VARIANT, variant.as_str())?;
        }
        // Only the gateway says who the consumer is: a client's own copy never passes.
        upstream_request.remove_header(&forwarding::CONSUMER_ID);
        if let Some(consumer) = &ctx.plugins.consumer {
            upstream_request.insert_header(forwarding::CONSUMER_ID, &**consumer)?;
        }
        if let Some(route) = &ctx.route {
            route
                .plugins
                .upstream_request(upstream_request, &ctx.plugins);
        }
        ctx.upstream_sent_at = Some(Instant::now());
        Ok(())
    }

    /// Timing, the target's outcome for outlier detection and peak EWMA, and status
    /// retries: a retried status is turned into a retryable error here, before anything
    /// of the answer reaches the client.
    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let status = upstream_response.status.as_u16();
        if let Some(target) = &mut ctx.target {
            if let Some(sent) = ctx.upstream_sent_at {
                let elapsed = sent.elapsed();
                target.target().duration.observe(elapsed.as_secs_f64());
                target.observe_latency(elapsed);
                ctx.upstream_ms = Some(elapsed.as_secs_f64() * 1000.0);
            }
            target.record(Outcome::of_status(status));
        }
        if let Some(upstream) = &ctx.upstream {
            let policy = &upstream.retries;
            if policy.on_status.contains(&status)
                && ctx.attempts <= policy.attempts
                && retriable_request(session)
                && policy.budget_allows()
            {
                self.state
                    .metrics
                    .retries
                    .with_label_values(&[&upstream.name, status_reason(status)])
                    .inc();
                ctx.retrying_status = true;
                let mut e = Error::explain(
                    ErrorType::HTTPStatus(status),
                    "upstream answered with a retried status",
                );
                e.as_up();
                e.set_retry(true);
                return Err(e);
            }
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(route) = &ctx.route {
            compression::filter_response(session, route.compression.as_ref(), upstream_response);
        }
        if ctx.cache == Some(CacheStatus::Miss) {
            ctx.cache = Some(CacheStatus::from_phase(session.cache.phase()));
            if ctx.cache == Some(CacheStatus::Stale) {
                // A stale answer stands in for the upstream's failure: no error to report.
                ctx.error = None;
                ctx.rejection = None;
            }
        }
        respond::decorate(upstream_response, ctx);
        Ok(())
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let rejection = ctx
            .rejection
            .take()
            .unwrap_or_else(|| rejection_for(e, ctx));
        let code = rejection.code.status().as_u16();
        let client_gone = e.esource() == &ErrorSource::Downstream
            && matches!(
                e.etype(),
                ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed
            );
        if client_gone {
            ctx.error = Some(rejection.code);
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        }
        if session.response_written().is_none() {
            let _ = respond::reject(session, ctx, rejection).await;
        } else {
            ctx.error = Some(rejection.code);
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut RequestCtx) {
        connections::request_finished();
        let status = session
            .response_written()
            .map_or(0, |resp| resp.status.as_u16());
        let route_name = ctx.route.as_ref().map(|route| &*route.name);
        let upstream_name = ctx.upstream.as_ref().map(|upstream| &*upstream.name);
        let variant = ctx.variant.map(Variant::as_str);
        let req = session.req_header();
        let elapsed = ctx.started.elapsed();

        let metrics = &self.state.metrics;
        let mut status_buf = itoa_status(status);
        metrics
            .requests
            .with_label_values(&[
                route_name.unwrap_or(""),
                method_label(&req.method),
                status_text(&mut status_buf),
                upstream_name.unwrap_or(""),
                variant.unwrap_or(""),
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

        let log = &self.state.access_log;
        if log.enabled() {
            let target = ctx.target.as_ref().map(|slot| &*slot.target().label);
            log.write(&Entry {
                ts: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                request_id: &ctx.request_id,
                trace_id: ctx
                    .trace
                    .as_ref()
                    .map_or("", |trace| trace.trace_id.as_str()),
                client_ip: ctx.plugins.client_ip.map(|ip| ip.to_string()),
                method: req.method.as_str(),
                host: crate::router::request_host(req),
                path: req.uri.path(),
                route: route_name,
                consumer: ctx.plugins.consumer.as_deref(),
                upstream: upstream_name,
                target,
                variant,
                status,
                bytes_sent: session.body_bytes_sent(),
                duration_ms: elapsed.as_secs_f64() * 1000.0,
                upstream_ms: ctx.upstream_ms,
                cache: ctx.cache.map(CacheStatus::label),
                rate_limit: ctx.plugins.rate_limit_rule.as_deref(),
                error: ctx.error.map(ErrorCode::as_str),
            });
        }
    }
}

/// Sets the request id (kept when valid, else generated) and the trace context.
fn identify(session: &Session, ctx: &mut RequestCtx, tracing: &crate::gateway::Tracing) {
    let req = session.req_header();
    ctx.request_id = match req.headers.get(&tracing.request_id_header) {
        Some(id) if trace::valid_request_id(id.as_bytes()) => {
            String::from_utf8_lossy(id.as_bytes()).into_owned()
        }
        _ => trace::new_request_id(),
    };
    if tracing.traceparent {
        let incoming = req.headers.get("traceparent").map(|value| value.as_bytes());
        ctx.trace = Some(TraceContext::continue_or_start(incoming));
    }
}

/// Keep-alive for as long as `server.keepalive_timeout` (unless Pingora already turned
/// it off for a shutdown) and the body read timeout; HTTP/2 sessions ignore both.
fn connection_timeouts(session: &mut Session, policy: &ConnectionPolicy) {
    if session.get_keepalive().is_some() {
        // Whole seconds, rounded up: Pingora reads `Some(0)` as "no timeout".
        let seconds = policy
            .keepalive_timeout
            .map(|t| t.as_secs() + u64::from(t.subsec_nanos() > 0));
        session.set_keepalive(seconds);
    }
    session.set_read_timeout(Some(policy.body_read_timeout));
}

/// The connection's peer: the TCP peer, or the client a trusted PROXY header named.
fn peer_ip(session: &Session) -> Option<IpAddr> {
    session
        .client_addr()
        .and_then(|addr| addr.as_inet())
        .map(|addr| addr.ip())
}

fn forwarded_proto(session: &Session) -> &'static str {
    let tls = session
        .digest()
        .is_some_and(|digest| digest.ssl_digest.is_some());
    if tls {
        "https"
    } else {
        "http"
    }
}

/// The client-facing error for a proxy failure.
fn rejection_for(e: &Error, ctx: &RequestCtx) -> Rejection {
    let upstream = ctx.upstream.as_ref().map_or("upstream", |u| &*u.name);
    let (code, message) = match e.etype() {
        ErrorType::HTTPStatus(503) if ctx.error == Some(ErrorCode::UpstreamUnavailable) => (
            ErrorCode::UpstreamUnavailable,
            format!("{upstream} has no healthy target"),
        ),
        ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout => (
            ErrorCode::UpstreamTimeout,
            format!("{upstream} did not answer in time"),
        ),
        ErrorType::HTTPStatus(400) | ErrorType::InvalidHTTPHeader => {
            (ErrorCode::BadRequest, "malformed request".to_string())
        }
        _ => match e.esource() {
            ErrorSource::Upstream => (
                ErrorCode::UpstreamError,
                format!("{upstream} failed: {}", e.etype().as_str()),
            ),
            ErrorSource::Downstream => (ErrorCode::BadRequest, "malformed request".to_string()),
            ErrorSource::Internal | ErrorSource::Unset => {
                log::error!("request {} failed inside the gateway: {e}", ctx.request_id);
                (ErrorCode::Internal, "internal error".to_string())
            }
        },
    };
    Rejection::new(code, message)
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
