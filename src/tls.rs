//! TLS termination: certificates chosen by SNI from the configuration in force, so a
//! reload that changes a certificate file serves it on the next handshake without
//! touching established connections.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use openssl::asn1::{Asn1Time, Asn1TimeRef};
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::TlsAccept;
use pingora::protocols::tls::TlsRef;
use pingora::tls::ext::{ssl_add_chain_cert, ssl_use_certificate, ssl_use_private_key};
use pingora::tls::nid::Nid;
use pingora::tls::pkey::{PKey, Private};
use pingora::tls::ssl::NameType;
use pingora::tls::x509::X509;
use serde::Deserialize;

use crate::config::Problem;
use crate::state::State;

/// `listeners[].tls` as written in the configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerTlsConfig {
    /// Certificate/key pairs; each serves the names in its certificate (subject
    /// alternative names, else the common name). The first is the default for clients
    /// that send no or an unknown server name.
    pub certificates: Vec<CertificateConfig>,
    /// Offer HTTP/2 by ALPN (HTTP/1.1 stays available).
    #[serde(default = "yes")]
    pub http2: bool,
}

fn yes() -> bool {
    true
}

/// One certificate chain and its private key, PEM files.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateConfig {
    /// The certificate, followed by its intermediates.
    pub cert: String,
    /// The private key.
    pub key: String,
}

/// A certificate chain with its key, parsed.
pub struct CertifiedKey {
    chain: Vec<X509>,
    key: PKey<Private>,
}

/// The certificates of one listener, indexed by the names they serve.
pub struct CertStore {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `*.example.com` is stored under `example.com`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
    /// Each certificate's first DNS name and its notAfter as a Unix time.
    expiries: Vec<(String, i64)>,
}

impl CertStore {
    /// Reads and checks every certificate of `config` (at `path`).
    pub fn load(
        config: &ListenerTlsConfig,
        path: &str,
        problems: &mut Vec<Problem>,
    ) -> Option<Self> {
        if config.certificates.is_empty() {
            problems.push(Problem::new(
                format!("{path}.certificates"),
                "list at least one { cert, key }",
            ));
            return None;
        }
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        let mut default = None;
        let mut expiries = Vec::new();
        for (i, pair) in config.certificates.iter().enumerate() {
            let at = format!("{path}.certificates[{i}]");
            let Some((certified, names)) = load_pair(pair, &at, problems) else {
                continue;
            };
            if let Some(not_after) = unix_time(certified.chain[0].not_after()) {
                expiries.push((names[0].to_ascii_lowercase(), not_after));
            }
            let certified = Arc::new(certified);
            for name in names {
                let name = name.to_ascii_lowercase();
                match name.strip_prefix("*.") {
                    Some(parent) => wildcard.entry(parent.to_string()),
                    None => exact.entry(name),
                }
                .or_insert_with(|| Arc::clone(&certified));
            }
            default.get_or_insert(certified);
        }
        Some(Self {
            exact,
            wildcard,
            default: default?,
            expiries,
        })
    }

    /// Each certificate's first DNS name and when it expires (notAfter, a Unix time).
    pub fn expiries(&self) -> impl Iterator<Item = (&str, i64)> {
        self.expiries
            .iter()
            .map(|(name, not_after)| (name.as_str(), *not_after))
    }

    /// The certificate for `server_name`: an exact name, else a wildcard one level up,
    /// else the default.
    pub fn select(&self, server_name: Option<&str>) -> &Arc<CertifiedKey> {
        let Some(name) = server_name.map(str::to_ascii_lowercase) else {
            return &self.default;
        };
        self.exact
            .get(&name)
            .or_else(|| {
                name.split_once('.')
                    .and_then(|(_, parent)| self.wildcard.get(parent))
            })
            .unwrap_or(&self.default)
    }
}

fn load_pair(
    pair: &CertificateConfig,
    at: &str,
    problems: &mut Vec<Problem>,
) -> Option<(CertifiedKey, Vec<String>)> {
    let read = |file: &str, field: &str, problems: &mut Vec<Problem>| match std::fs::read(file) {
        Ok(bytes) => Some(bytes),
        Err(e) => {
            problems.push(Problem::new(
                format!("{at}.{field}"),
                format!("{file}: {e}"),
            ));
            None
        }
    };
    let (cert_pem, key_pem) = (
        read(&pair.cert, "cert", problems),
        read(&pair.key, "key", problems),
    );
    let chain = match X509::stack_from_pem(&cert_pem?) {
        Ok(chain) if !chain.is_empty() => chain,
        _ => {
            problems.push(Problem::new(
                format!("{at}.cert"),
                format!("{}: no PEM certificate in it", pair.cert),
            ));
            return None;
        }
    };
    let key = match PKey::private_key_from_pem(&key_pem?) {
        Ok(key) => key,
        Err(_) => {
            problems.push(Problem::new(
                format!("{at}.key"),
                format!("{}: not a PEM private key", pair.key),
            ));
            return None;
        }
    };
    let leaf = &chain[0];
    if !leaf.public_key().is_ok_and(|public| public.public_eq(&key)) {
        problems.push(Problem::new(
            format!("{at}.key"),
            format!(
                "{} does not belong to the certificate {}",
                pair.key, pair.cert
            ),
        ));
        return None;
    }
    let names = names_of(leaf);
    if names.is_empty() {
        problems.push(Problem::new(
            format!("{at}.cert"),
            "the certificate names no host (no DNS subject alternative name or common name)",
        ));
        return None;
    }
    Some((CertifiedKey { chain, key }, names))
}

/// `time` as seconds since the Unix epoch.
fn unix_time(time: &Asn1TimeRef) -> Option<i64> {
    let since_epoch = Asn1Time::from_unix(0).ok()?.diff(time).ok()?;
    Some(i64::from(since_epoch.days) * 86_400 + i64::from(since_epoch.secs))
}

/// The DNS names a certificate serves: its subject alternative names, or its common
/// name when it has none (RFC 6125).
fn names_of(cert: &X509) -> Vec<String> {
    let alternative: Vec<String> = cert
        .subject_alt_names()
        .map(|names| {
            names
                .iter()
                .filter_map(|name| name.dnsname().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    if !alternative.is_empty() {
        return alternative;
    }
    cert.subject_name()
        .entries_by_nid(Nid::COMMONNAME)
        .filter_map(|entry| entry.data().to_string().ok())
        .collect()
}

/// Picks the certificate for each handshake on one listener from the configuration in
/// force.
pub struct SniResolver {
    state: Arc<State>,
    listener: SocketAddr,
}

impl SniResolver {
    /// A resolver for the listener bound to `listener`.
    pub fn new(state: Arc<State>, listener: SocketAddr) -> Self {
        Self { state, listener }
    }
}

#[async_trait]
impl TlsAccept for SniResolver {
    async fn certificate_callback(&self, ssl: &mut TlsRef) {
        let gateway = self.state.gateway();
        let Some(store) = gateway.tls.get(&self.listener) else {
            return; // the handshake fails: no certificate
        };
        let certified = store.select(ssl.servername(NameType::HOST_NAME));
        let installed = ssl_use_certificate(ssl, &certified.chain[0])
            .and_then(|()| ssl_use_private_key(ssl, &certified.key))
            .and_then(|()| {
                certified.chain[1..]
                    .iter()
                    .try_for_each(|intermediate| ssl_add_chain_cert(ssl, intermediate))
            });
        if let Err(e) = installed {
            log::error!(
                "TLS on {}: cannot install the certificate: {e}",
                self.listener
            );
        }
    }
}

/// Pingora's TLS settings for a listener: Mozilla intermediate (TLS 1.2 and 1.3 only),
/// certificates from `resolver`, HTTP/2 by ALPN when asked for.
pub fn settings(resolver: SniResolver, http2: bool) -> pingora_error::Result<TlsSettings> {
    let mut settings = TlsSettings::with_callbacks(Box::new(resolver))?;
    if http2 {
        settings.enable_h2();
    }
    Ok(settings)
}
