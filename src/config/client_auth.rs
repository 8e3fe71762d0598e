//! `listeners[].tls.client_auth` and `upstreams.*.tls` client certificates: mutual TLS in
//! both directions, as written.

use serde::Deserialize;

/// `listeners[].tls.client_auth`: clients present a certificate chaining to `ca`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientAuthConfig {
    /// PEM bundle of the CAs a client certificate must chain to.
    pub ca: String,
    /// `required`: the handshake fails without a valid certificate; `optional`: a client
    /// may present none (routes demand one with the `mtls` plugin).
    pub mode: ClientAuthMode,
    /// PEM certificate revocation list(s) of the CAs; a revoked client certificate
    /// fails the handshake.
    pub crl: Option<String>,
    /// The names of the headers that carry the verified certificate to the upstream.
    #[serde(default)]
    pub headers: ClientCertHeadersConfig,
}

/// `listeners[].tls.client_auth.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuthMode {
    /// Every client presents a valid certificate.
    Required,
    /// A client may present none; one it presents must be valid.
    Optional,
}

/// `listeners[].tls.client_auth.headers`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientCertHeadersConfig {
    /// The subject, RFC 2253 (`CN=client,O=Acme`).
    #[serde(default = "default_subject")]
    pub subject: String,
    /// The subject alternative names (`DNS:a.example, URI:spiffe://...`).
    #[serde(default = "default_sans")]
    pub sans: String,
    /// The SHA-256 fingerprint of the certificate (DER), 64 lowercase hex digits.
    #[serde(default = "default_sha256")]
    pub sha256: String,
}

impl Default for ClientCertHeadersConfig {
    fn default() -> Self {
        Self {
            subject: default_subject(),
            sans: default_sans(),
            sha256: default_sha256(),
        }
    }
}

fn default_subject() -> String {
    "X-Client-Cert-Subject".into()
}

fn default_sans() -> String {
    "X-Client-Cert-Sans".into()
}

fn default_sha256() -> String {
    "X-Client-Cert-Sha256".into()
}
