//! The certificates of the TLS listeners, compiled: read and checked at load, indexed by
//! the names they serve. The handshake picks from the configuration in force
//! (`runtime/sni.rs`), so a reload that changes a certificate file serves it on the
//! next handshake without touching established connections.

use std::collections::HashMap;
use std::sync::Arc;

use openssl::asn1::{Asn1Time, Asn1TimeRef};
use pingora::protocols::tls::TlsRef;
use pingora::tls::error::ErrorStack;
use pingora::tls::ext::{ssl_add_chain_cert, ssl_use_certificate, ssl_use_private_key};
use pingora::tls::nid::Nid;
use pingora::tls::pkey::{PKey, Private};
use pingora::tls::x509::X509;

use crate::config::{noted, verdict, CertificateConfig, ListenerTlsConfig, Problem};
use crate::model::client_cert::ClientAuth;

/// A certificate chain with its key, parsed.
pub struct CertifiedKey {
    chain: Vec<X509>,
    key: PKey<Private>,
}

impl CertifiedKey {
    /// Presents this certificate, its intermediates and its key in a handshake.
    pub fn install(&self, ssl: &mut TlsRef) -> Result<(), ErrorStack> {
        ssl_use_certificate(ssl, &self.chain[0])?;
        ssl_use_private_key(ssl, &self.key)?;
        self.chain[1..]
            .iter()
            .try_for_each(|intermediate| ssl_add_chain_cert(ssl, intermediate))
    }
}

/// The certificates of one listener, indexed by the names they serve.
pub struct CertStore {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `*.example.com` is stored under `example.com`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
    /// Each certificate's first DNS name and its notAfter as a Unix time.
    expiries: Vec<(String, i64)>,
    /// Client certificates asked of every handshake, when configured.
    client_auth: Option<Arc<ClientAuth>>,
}

impl CertStore {
    /// Reads and checks every certificate of `config` (at `path`).
    pub fn compile(config: &ListenerTlsConfig, path: &str) -> Result<Self, Vec<Problem>> {
        if config.certificates.is_empty() {
            return Err(vec![Problem::new(
                format!("{path}.certificates"),
                "list at least one { cert, key }",
            )]);
        }
        let mut problems = Vec::new();
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        let mut default = None;
        let mut expiries = Vec::new();
        for (i, pair) in config.certificates.iter().enumerate() {
            let at = format!("{path}.certificates[{i}]");
            let Some((certified, names)) = noted(load_pair(pair, &at), &mut problems) else {
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
        let client_auth = config.client_auth.as_ref().and_then(|client_auth| {
            noted(
                ClientAuth::compile(client_auth, &format!("{path}.client_auth")),
                &mut problems,
            )
        });
        let Some(default) = default else {
            return Err(problems);
        };
        verdict(
            Self {
                exact,
                wildcard,
                default,
                expiries,
                client_auth: client_auth.map(Arc::new),
            },
            problems,
        )
    }

    /// The listener's client-certificate verification, when configured.
    pub fn client_auth(&self) -> Option<&Arc<ClientAuth>> {
        self.client_auth.as_ref()
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

/// Reads one certificate/key pair; the two files are checked independently, so a
/// problem with each is reported.
fn load_pair(
    pair: &CertificateConfig,
    at: &str,
) -> Result<(CertifiedKey, Vec<String>), Vec<Problem>> {
    let problem = |field: &str, message: String| Problem::new(format!("{at}.{field}"), message);
    let read = |file: &str, field: &str| {
        std::fs::read(file).map_err(|e| problem(field, format!("cannot read {file}: {e}")))
    };
    let chain = read(&pair.cert, "cert").and_then(|pem| match X509::stack_from_pem(&pem) {
        Ok(chain) if !chain.is_empty() => Ok(chain),
        _ => Err(problem(
            "cert",
            format!("{}: no PEM certificate in it", pair.cert),
        )),
    });
    let key = read(&pair.key, "key").and_then(|pem| {
        PKey::private_key_from_pem(&pem)
            .map_err(|_| problem("key", format!("{}: not a PEM private key", pair.key)))
    });
    let (chain, key) = match (chain, key) {
        (Ok(chain), Ok(key)) => (chain, key),
        (chain, key) => return Err([chain.err(), key.err()].into_iter().flatten().collect()),
    };
    let leaf = &chain[0];
    if !leaf.public_key().is_ok_and(|public| public.public_eq(&key)) {
        return Err(vec![problem(
            "key",
            format!(
                "{} does not belong to the certificate {}",
                pair.key, pair.cert
            ),
        )]);
    }
    let names = names_of(leaf);
    if names.is_empty() {
        return Err(vec![problem(
            "cert",
            "the certificate names no host (no DNS subject alternative name or common name)"
                .to_string(),
        )]);
    }
    Ok((CertifiedKey { chain, key }, names))
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
