//! The errors the gateway answers itself (SPEC §4), and a plugin's way of asking for one.

use http::{HeaderName, HeaderValue, StatusCode};

/// Every error code of SPEC §4 with its status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum_macros::EnumIter)]
pub enum ErrorCode {
    BadRequest,
    Unauthorized,
    Forbidden,
    RouteNotFound,
    PayloadTooLarge,
    /// 408: the request body stopped arriving for `server.body_read_timeout`.
    RequestTimeout,
    /// 414: the request target is over `server.max_request_target`.
    UriTooLong,
    /// 431: the request's header block is over `server.max_header_bytes` or
    /// `server.max_header_count`, or a route's `request_size` limits.
    HeadersTooLarge,
    RateLimited,
    ConcurrencyLimited,
    UpstreamError,
    UpstreamUnavailable,
    UpstreamOverloaded,
    RateLimitBackendDown,
    /// 503: a `jwt` route whose signing keys (JWKS) have not loaded yet.
    AuthKeysUnavailable,
    UpstreamTimeout,
    /// A failure inside the gateway itself (a bug, never expected).
    Internal,
}

impl ErrorCode {
    /// Every code, in declaration order.
    pub fn all() -> impl Iterator<Item = ErrorCode> {
        <Self as strum::IntoEnumIterator>::iter()
    }

    /// The machine-readable code sent in the error body.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "BAD_REQUEST",
            Self::Unauthorized => "UNAUTHORIZED",
            Self::Forbidden => "FORBIDDEN",
            Self::RouteNotFound => "ROUTE_NOT_FOUND",
            Self::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            Self::RequestTimeout => "REQUEST_TIMEOUT",
            Self::UriTooLong => "URI_TOO_LONG",
            Self::HeadersTooLarge => "REQUEST_HEADERS_TOO_LARGE",
            Self::RateLimited => "RATE_LIMITED",
            Self::ConcurrencyLimited => "CONCURRENCY_LIMITED",
            Self::UpstreamError => "UPSTREAM_ERROR",
            Self::UpstreamUnavailable => "UPSTREAM_UNAVAILABLE",
            Self::UpstreamOverloaded => "UPSTREAM_OVERLOADED",
            Self::RateLimitBackendDown => "RATE_LIMIT_BACKEND_DOWN",
            Self::AuthKeysUnavailable => "AUTH_KEYS_UNAVAILABLE",
            Self::UpstreamTimeout => "UPSTREAM_TIMEOUT",
            Self::Internal => "INTERNAL_ERROR",
        }
    }

    /// The HTTP status that goes with the code.
    pub fn status(self) -> StatusCode {
        match self {
            Self::BadRequest => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::RouteNotFound => StatusCode::NOT_FOUND,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::UriTooLong => StatusCode::URI_TOO_LONG,
            Self::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::RateLimited | Self::ConcurrencyLimited => StatusCode::TOO_MANY_REQUESTS,
            Self::UpstreamError => StatusCode::BAD_GATEWAY,
            Self::UpstreamUnavailable
            | Self::UpstreamOverloaded
            | Self::RateLimitBackendDown
            | Self::AuthKeysUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// A request refused by the gateway: the error response to send instead of proxying.
#[derive(Debug, Clone)]
pub struct Rejection {
    /// The error code (and so the status).
    pub code: ErrorCode,
    /// A human-readable explanation; never echoes credentials.
    pub message: String,
    /// Seconds after which a retry may succeed (`Retry-After` and the body's `retry_after`).
    pub retry_after: Option<u64>,
    /// Extra response headers (e.g. `WWW-Authenticate`).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// For an auth plugin's refusal: the `reason` label of
    /// `portcullis_auth_failures_total` (`missing`, `expired`, ...).
    pub auth_reason: Option<&'static str>,
}

impl Rejection {
    /// A rejection with no extra headers.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            retry_after: None,
            headers: Vec::new(),
            auth_reason: None,
        }
    }

    /// Marks the rejection as an auth plugin's refusal for `reason`, counted by the chain
    /// when no other auth plugin of the route accepts the request.
    pub fn auth_failure(mut self, reason: &'static str) -> Self {
        self.auth_reason = Some(reason);
        self
    }

    /// Adds `Retry-After`.
    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// Adds a response header.
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }
}
