//! `listeners:` and `admin:` — where the gateway accepts connections, and the TLS it
//! terminates there.

use serde::Deserialize;

use super::default_true;
use super::ClientAuthConfig;

/// One public listener.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// `IP:PORT` to bind.
    pub address: String,
    /// TLS termination; absent means plain HTTP (and h2c).
    pub tls: Option<ListenerTlsConfig>,
    /// Every connection starts with a PROXY protocol header (v1 or v2), accepted only
    /// from `server.trusted_proxies`.
    #[serde(default)]
    pub proxy_protocol: bool,
    /// Overrides `server.max_connections` for this listener.
    pub max_connections: Option<u32>,
    /// Overrides `server.max_connections_per_ip` for this listener.
    pub max_connections_per_ip: Option<u32>,
}

/// `admin:` — the operator endpoints of SPEC §6.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// `IP:PORT`; keep it on loopback or a private interface.
    pub address: String,
    /// Bearer token required on every POST.
    pub token: Option<String>,
    /// When not empty, only clients in these networks (CIDR or single addresses) may use
    /// the admin listener.
    #[serde(default)]
    pub allow: Vec<String>,
}

/// `listeners[].tls`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerTlsConfig {
    /// Certificate/key pairs; each serves the names in its certificate (subject
    /// alternative names, else the common name). The first is the default for clients
    /// that send no or an unknown server name.
    pub certificates: Vec<CertificateConfig>,
    /// Offer HTTP/2 by ALPN (HTTP/1.1 stays available).
    #[serde(default = "default_true")]
    pub http2: bool,
    /// Client certificates (mutual TLS); absent means clients present none.
    pub client_auth: Option<ClientAuthConfig>,
}

/// One certificate chain and its private key, PEM files.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateConfig {
    /// The certificate, followed by its intermediates.
    pub cert: String,
    /// The private key.
    pub key: String,
}
