//! The request's walk: Pingora's `ProxyHttp` phases, in order, each short and delegating
//! to the router, the plugins and the upstream pools.

mod choice;
mod client;
mod client_cert;
mod compression;
mod connection;
mod context;
mod deadline;
mod errors;
mod failure_log;
pub mod forwarding;
mod grpc;
mod h2;
mod hygiene;
mod logging;
mod mirror;
mod respond;
mod retry;
mod span_times;
mod spans;
mod target;
pub mod trace;
mod websocket;

use std::any::Any;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use pingora::cache::key::HashBinary;
use pingora::cache::{CacheKey, CacheMeta, NoCacheReason, RespCacheable};
use pingora::connectors::http::Connector;
use pingora::prelude::HttpPeer;
use pingora::protocols::Digest;
use pingora::proxy::{
    range_header_filter, FailToProxy, ProxyHttp, ProxyWarnLogContext, RangeType, Session,
};
use pingora_error::{Error, ErrorSource, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use portcullis_plugins::{ErrorCode, Rejection};

pub use context::RequestCtx;
pub use errors::error_response;

use crate::model::cache::{self, policy, store, CacheStatus};
use crate::model::connections::ConnectionPolicy;
use crate::model::gateway::RouteAction;
use crate::model::upstream::Outcome;
use crate::runtime::connections;
use crate::runtime::state::State;
use choice::choose_target;
use connection::Connection;
use retry::Failure;

/// Most ranges a multi-range request may ask for (Pingora's default).
const MAX_RANGES: Option<usize> = Some(200);

/// The proxy service logic.
pub struct Proxy {
    state: Arc<State>,
    connections: Arc<ConnectionPolicy>,
    /// The client of the mirror pools (its own connection pool).
    mirror_connector: Arc<Connector>,
    failure_log: failure_log::FailureLog,
}

impl Proxy {
    /// Proxy logic serving whatever configuration `state` holds, on client connections
    /// governed by `connections`.
    pub fn new(state: Arc<State>, connections: Arc<ConnectionPolicy>) -> Self {
        Self {
            state,
            connections,
            mirror_connector: Arc::new(Connector::new(None)),
            failure_log: failure_log::FailureLog::default(),
        }
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
        client::head_received(session, &self.connections);
        compression::prepare(session);
        Ok(())
    }

    /// Request id, framing checks, route match, the route's plugins and local answers.
    /// Returns `true` when the gateway has answered itself.
    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        if ctx.connection.is_none() {
            ctx.connection = Some(Connection::open(&self.state.metrics.downstream_connections));
        }
        // Off unless the matched route asks for it (errors and 404s stay plain).
        compression::start(session, None);
        let gateway = self.state.gateway();
        client_cert::identify(session, ctx, &gateway);
        (ctx.request_id, ctx.trace) = trace::identify(session.req_header(), &gateway.tracing);
        spans::begin(ctx);
        ctx.plugins.client_ip = client::client_ip(session, &self.connections);
        ctx.peer_trusted = client::peer_ip(session)
            .is_some_and(|peer| self.connections.client_address.trusts(peer));
        let raw_head = (!session.is_http2()).then(|| session.downstream_session.to_h1_raw());
        let checked = grpc::inspect(session.req_header(), ctx)
            .and_then(|()| {
                hygiene::check(session.req_header(), raw_head.as_deref(), &gateway.requests)
            })
            .and_then(|()| {
                target::canonicalize_target(
                    session.req_header_mut(),
                    gateway.requests.merge_slashes,
                )
            });
        let client_target = match checked {
            Ok(client_target) => client_target,
            Err(rejection) => {
                ctx.gateway = Some(gateway);
                // The framing may be ambiguous: nothing more is read from this connection.
                session.set_keepalive(None);
                return respond::reject(session, ctx, rejection).await;
            }
        };
        ctx.client_target = client_target.raw;

        let Some((matcher, route)) = gateway.router.find(session.req_header()) else {
            ctx.gateway = Some(gateway);
            let rejection =
                Rejection::new(ErrorCode::RouteNotFound, "no route matches the request");
            return respond::reject(session, ctx, rejection).await;
        };
        let route = Arc::clone(route);
        if let Some(reason) = client_target.ambiguity.filter(|_| !route.raw_path) {
            ctx.gateway = Some(gateway);
            session.set_keepalive(None);
            let message =
                format!("the path holds {reason}, which an upstream may read as a separator");
            return respond::reject(session, ctx, Rejection::new(ErrorCode::BadRequest, message))
                .await;
        }
        if let Some(policy) = route.stored_compression() {
            // Compressed once, on insert: the downstream module stays off.
            ctx.encoding = compression::negotiate_stored(policy, session.req_header());
        } else if route.compression.is_some() {
            compression::start(session, route.compression.as_deref());
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
        if route.mirror.is_some() {
            mirror::start(session, ctx, &self.mirror_connector);
        }

        // The canary choice precedes the cache lookup: the cache key includes it.
        ctx.split = choice::split(session, ctx);
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
        spans::cache_lookup_started(ctx);
        Ok(())
    }

    fn cache_key_callback(&self, session: &Session, ctx: &mut RequestCtx) -> Result<CacheKey> {
        match &ctx.route {
            Some(route) => Ok(cache::cache_key(
                &route.name,
                ctx.split,
                session.req_header(),
                forwarded_proto(session),
            )),
            None => Error::e_explain(ErrorType::InternalError, "cache key without a route"),
        }
    }

    fn response_cache_filter(
        &self,
        _session: &Session,
        resp: &ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<RespCacheable> {
        let stored_compression = ctx.route.as_ref().and_then(|r| r.stored_compression());
        if stored_compression.is_some() && !compression::storable_under(resp, ctx.encoding) {
            return Ok(RespCacheable::Uncacheable(NoCacheReason::Custom(
                "encoded in another coding than the variant's",
            )));
        }
        // A canary request the stable pool answered (no canary target was available)
        // must not be stored under the canary's key.
        if ctx.variant != ctx.split && ctx.split.is_some() {
            return Ok(RespCacheable::Uncacheable(NoCacheReason::Custom(
                "served by another variant than the split chose",
            )));
        }
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
        let route = ctx.route.as_ref()?;
        let cache = route.cache.as_ref()?;
        // On a route that compresses into the cache, the variant is the negotiated
        // coding, not the raw Accept-Encoding: at most one entry per coding.
        let encoding = route.stored_compression().map(|_| {
            ctx.encoding
                .map_or("identity", |algorithm| algorithm.as_str())
        });
        policy::variance(cache, meta, req, encoding)
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
        spans::cache_lookup_ended(ctx);
        let Err(rejection) = choose_target(session, ctx) else {
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
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if ctx.mirror.is_some() {
            mirror::body_chunk(ctx, body.as_ref(), end_of_stream, &self.mirror_connector);
        }
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

    /// The peer for this attempt: the target chosen in `proxy_upstream_filter`, or, on a
    /// retry, another target of the pool after the backoff.
    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        ctx.attempts += 1;
        if ctx.attempts > 1 {
            retry::next_target(session, ctx).await?;
        }
        let Some(target) = &ctx.target else {
            ctx.error = Some(ErrorCode::UpstreamUnavailable);
            return Error::e_explain(ErrorType::HTTPStatus(503), "no available target");
        };
        ctx.tried |= target.tried_bit();
        let mut peer = target.peer();
        if let Some(left) = deadline::remaining(ctx) {
            if left.is_zero() {
                return Err(deadline::expired());
            }
            deadline::limit(&mut peer, left);
        }
        spans::connect_started(ctx);
        grpc::bound_read_timeout(&mut peer, ctx)?;
        websocket::upstream_idle(&mut peer, session.req_header(), ctx);
        Ok(peer)
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        reused: bool,
        _peer: &HttpPeer,
        _fd: std::os::unix::io::RawFd,
        _digest: Option<&Digest>,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        spans::connected(ctx, reused);
        Ok(())
    }

    /// A refused or timed-out connect: nothing was sent, so any method may be retried
    /// (on another target) when `retries.on` has `connect_failure` and the budget allows.
    fn fail_to_connect(
        &self,
        session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if let Some(target) = &mut ctx.target {
            target.record(Outcome::GatewayFailure);
        }
        h2::note_failure(&e, ctx);
        if retry::decide(Failure::Connect, session, ctx, &self.state.metrics) {
            e.set_retry(true);
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
        h2::note_failure(&e, ctx);
        if e.esource() == &ErrorSource::Upstream {
            if let Some(target) = &mut ctx.target {
                target.record(Outcome::GatewayFailure);
            }
        }
        e.retry.decide_reuse(client_reused);
        let retry = e.retry()
            && retry::decide(Failure::ReusedConnection, session, ctx, &self.state.metrics);
        e.set_retry(retry);
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

    fn suppress_error_log(&self, session: &Session, ctx: &RequestCtx, e: &Error) -> bool {
        // Pingora's line is replaced by this bounded one (see `failure_log`).
        if *e.esource() == ErrorSource::Downstream {
            log::debug!("client side: {e}, {}", self.request_summary(session, ctx));
        } else if let Some(left_out) = self.failure_log.admit() {
            let summary = self.request_summary(session, ctx);
            if left_out == 0 {
                log::error!("Fail to proxy: {e}, {summary}");
            } else {
                log::error!("Fail to proxy: {e}, {summary} ({left_out} failures not logged since the last line)");
            }
        }
        true
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let peer = client::peer_ip(session);
        forwarding::rewrite(upstream_request, ctx, peer, forwarded_proto(session))?;
        client_cert::forward(session, upstream_request);
        if let Some(route) = &ctx.route {
            route
                .plugins
                .upstream_request(upstream_request, &ctx.plugins);
            if let Some(policy) = route.stored_compression() {
                compression::ask_upstream(session, upstream_request, policy, ctx.encoding);
            }
        }
        ctx.upstream_sent_at = Some(Instant::now());
        Ok(())
    }

    /// On a route that compresses into the cache: the route's types and `min_size` decide,
    /// before the upstream compression context reads the response header.
    async fn adjust_upstream_modules(
        &self,
        session: &mut Session,
        upstream_response: &ResponseHeader,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(policy) = ctx.route.as_ref().and_then(|r| r.stored_compression()) {
            compression::adjust_upstream(session, policy, upstream_response);
        }
        Ok(())
    }

    /// Byte ranges are served from identity bytes only: a stored compressed variant
    /// (which a range request never selects, see `compression::negotiate_stored`)
    /// answers a range request whole.
    fn range_header_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        _ctx: &mut RequestCtx,
    ) -> RangeType {
        if resp.headers.contains_key(http::header::CONTENT_ENCODING) {
            return RangeType::None;
        }
        range_header_filter(session.req_header(), resp, MAX_RANGES)
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
        if deadline::passed(ctx) {
            return Err(deadline::expired());
        }
        let status = upstream_response.status.as_u16();
        if ctx
            .route
            .as_ref()
            .is_some_and(|r| r.stored_compression().is_some())
        {
            compression::filter_revalidation(session, upstream_response);
        }
        if let Some(target) = &mut ctx.target {
            if let Some(sent) = ctx.upstream_sent_at {
                let elapsed = sent.elapsed();
                target.target().duration.observe(elapsed.as_secs_f64());
                target.observe_latency(elapsed);
                ctx.upstream_ms = Some(elapsed.as_secs_f64() * 1000.0);
            }
            target.record(Outcome::of_status(status));
        }
        spans::upstream_answered(ctx, status);
        if retry::decide(Failure::Status(status), session, ctx, &self.state.metrics) {
            ctx.retrying_status = true;
            return Err(retry::status_error(status));
        }
        Ok(())
    }

    /// Body bytes past the route's deadline are not taken: the response is cut.
    fn upstream_response_body_filter(
        &self,
        _session: &mut Session,
        _body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<std::time::Duration>> {
        if deadline::passed(ctx) {
            return Err(deadline::expired());
        }
        Ok(None)
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        spans::cache_lookup_ended(ctx);
        if let Some(route) = &ctx.route {
            match route.stored_compression() {
                Some(policy) => compression::filter_stored_response(
                    session,
                    policy,
                    ctx.encoding,
                    upstream_response,
                ),
                None => compression::filter_response(
                    session,
                    route.compression.as_deref(),
                    upstream_response,
                ),
            }
        }
        if ctx.cache == Some(CacheStatus::Miss) {
            ctx.cache = Some(CacheStatus::from_phase(session.cache.phase()));
            if ctx.cache == Some(CacheStatus::Stale) {
                // A stale answer stands in for the upstream's failure: no error to report.
                ctx.error = None;
                ctx.rejection = None;
            }
        }
        websocket::accepted(session, upstream_response, ctx);
        respond::decorate(upstream_response, ctx);
        Ok(())
    }

    /// A request head Pingora could not read still gets a JSON error, with a request id.
    fn invalid_request_response(&self, e: &Error) -> Option<(ResponseHeader, Bytes)> {
        let request_id = trace::new_request_id_value();
        let (mut header, body) = error_response(
            &errors::unreadable_request(e),
            request_id.to_str().unwrap_or_default(),
        );
        let id_header = self.state.gateway().tracing.request_id_header.key();
        header.insert_header(id_header, request_id).ok()?;
        Some((header, body))
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        respond::proxy_failure(session, ctx, e).await
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut RequestCtx) {
        connections::request_finished();
        logging::record(session, ctx, &self.state);
    }
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
