//! What one request carries from phase to phase.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::HeaderValue;
use pingora::protocols::http::compression::Algorithm;
use portcullis_plugins::{ErrorCode, PluginCtx, Rejection};

use super::connection::Connection;
use super::mirror::MirrorCopy;
use super::span_times::RequestSpans;
use super::trace::TraceContext;

use crate::model::cache::CacheStatus;
use crate::model::canary::Variant;
use crate::model::gateway::{Gateway, Route};
use crate::model::upstream::{TargetSlot, Upstream, UpstreamSlot};
use crate::model::websocket::WebSocketGuard;

/// Per-request state: each phase records what it learnt here and later phases read it.
/// Dropping it releases the request's bulkhead and target slots, whatever path ended it.
pub struct RequestCtx {
    /// When the request's header was received.
    pub started: Instant,
    /// The client connection, counted while open.
    pub connection: Option<Arc<Connection>>,
    /// The configuration the request started on (kept for its whole life).
    pub gateway: Option<Arc<Gateway>>,
    /// The matched route.
    pub route: Option<Arc<Route>>,
    /// Bytes of the matched prefix that `strip_prefix` removes.
    pub strip_len: Option<usize>,
    /// The target as the client sent it, when canonicalisation changed it (forwarded
    /// instead of the canonical one on routes with `path.raw`).
    pub client_target: Option<Box<str>>,
    /// Whether the connection's peer is a trusted proxy (`server.trusted_proxies`), whose
    /// `X-Forwarded-Host` and other `X-Forwarded-*` headers are kept; a client's never are.
    pub peer_trusted: bool,
    /// The request id (kept from the client or generated): one value shared by the
    /// upstream request, the response and the access log.
    pub request_id: HeaderValue,
    /// The W3C trace context.
    pub trace: Option<TraceContext>,
    /// When the phases ran, for an exported trace only (boxed: most requests have none).
    pub spans: Option<Box<RequestSpans>>,
    /// The state plugins share.
    pub plugins: PluginCtx,
    /// The canary split's choice, made once the plugins accepted the request and before
    /// the cache lookup (a cached route keeps each variant's answers apart); `None` on a
    /// route without a canary.
    pub split: Option<Variant>,
    /// The variant of the pool that served the request: the split's choice, or stable when
    /// the canary had no available target (stable without a canary).
    pub variant: Option<Variant>,
    /// The bytes of the request's sticky or balancing key: one buffer reused by the canary
    /// split, the target choice and the retries.
    pub key: Vec<u8>,
    /// The pool serving the request (the route's, its canary's, or the fallback).
    pub upstream: Option<Arc<Upstream>>,
    /// The request's place in the pool's bulkhead.
    pub upstream_slot: Option<UpstreamSlot>,
    /// The target of the current attempt.
    pub target: Option<TargetSlot>,
    /// Targets already tried (bit set over target indexes).
    pub tried: u64,
    /// Attempts made so far (1 after the first `upstream_peer`).
    pub attempts: u32,
    /// The last attempt's answer had a status that is being retried.
    pub retrying_status: bool,
    /// When the request was handed to the upstream connection.
    pub upstream_sent_at: Option<Instant>,
    /// Time to the upstream's response headers, in milliseconds.
    pub upstream_ms: Option<f64>,
    /// Request body bytes received so far.
    pub body_bytes: u64,
    /// A refusal decided in a phase that can only fail with a bare error (the body
    /// filter); the error handler answers with it.
    pub rejection: Option<Rejection>,
    /// The error code the gateway answered with, if any.
    pub error: Option<ErrorCode>,
    /// On a route that compresses into its cache: the coding this request is answered
    /// with and stored under (`None`: identity), negotiated once in `request_filter`.
    pub encoding: Option<Algorithm>,
    /// On a route with a cache: what the cache did (`Miss` until the response says more).
    pub cache: Option<CacheStatus>,
    /// A gRPC call: the gateway's refusals are answered as gRPC status.
    pub grpc: bool,
    /// The call's `grpc-timeout`, which bounds the wait for the upstream.
    pub deadline: Option<Duration>,
    /// An upgraded WebSocket, counted while open.
    pub websocket: Option<WebSocketGuard>,
    /// The copy of a mirrored request, while its body is still arriving.
    pub mirror: Option<Box<MirrorCopy>>,
}

impl RequestCtx {
    /// A fresh context for a new request.
    pub fn new() -> Self {
        Self {
            started: Instant::now(),
            connection: None,
            gateway: None,
            route: None,
            strip_len: None,
            client_target: None,
            peer_trusted: false,
            request_id: HeaderValue::from_static(""),
            trace: None,
            spans: None,
            plugins: PluginCtx::default(),
            split: None,
            variant: None,
            key: Vec::new(),
            upstream: None,
            upstream_slot: None,
            target: None,
            tried: 0,
            attempts: 0,
            retrying_status: false,
            upstream_sent_at: None,
            upstream_ms: None,
            body_bytes: 0,
            rejection: None,
            error: None,
            encoding: None,
            cache: None,
            grpc: false,
            deadline: None,
            websocket: None,
            mirror: None,
        }
    }
}

impl RequestCtx {
    /// The request id as text (empty before the request was identified).
    pub fn request_id(&self) -> &str {
        // Always visible ASCII: a checked client id or hex digits.
        self.request_id.to_str().unwrap_or_default()
    }
}

impl Default for RequestCtx {
    fn default() -> Self {
        Self::new()
    }
}
