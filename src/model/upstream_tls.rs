//! `upstreams.*.tls`, compiled: the private CA a target's certificate must chain to and
//! the client certificate presented to targets that ask for one, read and checked at load
//! and set on the pool's peer template.

use std::sync::Arc;

use pingora::prelude::HttpPeer;
use pingora::tls::pkey::PKey;
use pingora::utils::tls::CertKey;

use crate::config::{Problem, UpstreamTlsConfig};
use crate::model::client_cert::read_certificates;

/// What `upstreams.NAME.tls` adds to each connection to a target.
#[derive(Clone, Default)]
pub struct UpstreamTls {
    ca: Option<Arc<Box<[pingora::tls::x509::X509]>>>,
    client: Option<Arc<CertKey>>,
}

impl UpstreamTls {
    /// Reads the files of `config` (at `path`, e.g. `upstreams.app.tls`).
    pub fn compile(config: &UpstreamTlsConfig, path: &str) -> Result<Self, Vec<Problem>> {
        let mut problems = Vec::new();
        if config.verify && config.sni.as_deref().is_none_or(str::is_empty) {
            problems.push(Problem::new(
                format!("{path}.sni"),
                "verify: true needs the name the targets' certificates carry (or verify: false)",
            ));
        }
        let ca = config.ca.as_deref().and_then(|file| {
            read_certificates(file, &format!("{path}.ca"))
                .map_err(|problem| problems.push(problem))
                .ok()
        });
        if ca.is_some() && !config.verify {
            problems.push(Problem::new(
                format!("{path}.ca"),
                "a CA is only used with verify: true",
            ));
        }
        let client = match (&config.client_cert, &config.client_key) {
            (None, None) => None,
            (Some(cert), Some(key)) => client_pair(cert, key, path)
                .map_err(|problem| problems.push(problem))
                .ok(),
            (Some(_), None) => {
                problems.push(Problem::new(
                    format!("{path}.client_key"),
                    "client_cert needs its client_key",
                ));
                None
            }
            (None, Some(_)) => {
                problems.push(Problem::new(
                    format!("{path}.client_cert"),
                    "client_key needs its client_cert",
                ));
                None
            }
        };
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Self {
            ca: ca.map(|certs| Arc::new(certs.into_boxed_slice())),
            client: client.map(Arc::new),
        })
    }

    /// Sets the CA and the client certificate on a pool's peer template.
    pub fn apply(&self, peer: &mut HttpPeer) {
        peer.options.ca = self.ca.clone();
        peer.client_cert_key = self.client.clone();
    }
}

/// The client certificate chain and its key, checked to belong together.
fn client_pair(cert: &str, key: &str, path: &str) -> Result<CertKey, Problem> {
    let chain = read_certificates(cert, &format!("{path}.client_cert"))?;
    let key_at = format!("{path}.client_key");
    let pem =
        std::fs::read(key).map_err(|e| Problem::new(&key_at, format!("cannot read {key}: {e}")))?;
    let key_pair = PKey::private_key_from_pem(&pem)
        .map_err(|_| Problem::new(&key_at, format!("{key}: not a PEM private key")))?;
    if !chain[0]
        .public_key()
        .is_ok_and(|public| public.public_eq(&key_pair))
    {
        return Err(Problem::new(
            key_at,
            format!("{key} does not belong to the certificate {cert}"),
        ));
    }
    Ok(CertKey::new(chain, key_pair))
}
