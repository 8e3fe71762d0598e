//! The per-request state plugins share with the core and with each other.

use std::net::IpAddr;
use std::sync::Arc;

use http::{HeaderName, HeaderValue};

use crate::phase_times::PhaseTimes;

/// What a plugin may know about, and record for, the request being processed.
///
/// The core fills the routing facts before the first plugin runs; plugins fill the
/// identity and policy facts (consumer, the rule that rejected) that later phases and the
/// access log read.
#[derive(Debug, Default)]
pub struct PluginCtx {
    /// The name of the matched route.
    pub route: Arc<str>,
    /// The client's address: the connection's peer, or the client a trusted proxy named
    /// (`server.trusted_proxies`).
    pub client_ip: Option<IpAddr>,
    /// The authenticated consumer, once an auth plugin accepted the request. The core
    /// sends it upstream as `X-Consumer-Id` and logs it.
    pub consumer: Option<Arc<str>>,
    /// The consumer's tier (`consumers[].tier`), for rate-limit rules keyed on tier.
    pub consumer_tier: Option<Arc<str>>,
    /// The certificate the client presented on a listener with `client_auth`, verified
    /// there; the `mtls` plugin maps it to a consumer.
    pub client_cert: Option<Arc<ClientCertificate>>,
    /// The claims of the JWT that authenticated the request, for `jwt:CLAIM` keys.
    pub claims: Option<Arc<serde_json::Map<String, serde_json::Value>>>,
    /// Headers to add to the response sent to the client, whatever its origin.
    pub response_headers: Vec<(HeaderName, HeaderValue)>,
    /// The name of the rate-limit rule that rejected the request, for the access log.
    pub rate_limit_rule: Option<Arc<str>>,
    /// A response a plugin answers with itself instead of proxying (a CORS preflight).
    /// Setting it ends the request phase; the core sends it.
    pub answer: Option<Answer>,
    /// Plugin-private per-request state, keyed by type.
    pub extensions: http::Extensions,
    /// When auth, the rate limit and its Redis round trip ran, for the request's trace
    /// (recorded only when the core sets `times.recording`).
    pub times: PhaseTimes,
}

/// A successful response a plugin gives itself (errors are [`crate::Rejection`]s).
#[derive(Debug, Clone)]
pub struct Answer {
    /// The status, e.g. 204 for a preflight.
    pub status: http::StatusCode,
    /// Its headers; the body is empty.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// A client certificate the listener verified (mutual TLS), as computed once per
/// connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertificate {
    /// The subject in RFC 2253 form (`CN=client,O=Acme`).
    pub subject: String,
    /// The subject alternative names (`DNS:a.example`, `URI:spiffe://...`).
    pub sans: Vec<String>,
    /// The SHA-256 digest of the certificate (DER).
    pub sha256: [u8; 32],
}
