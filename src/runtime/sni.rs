//! TLS handshakes: each picks its certificate by SNI from the configuration in force.

use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::TlsAccept;
use pingora::protocols::tls::TlsRef;
use pingora::tls::ssl::NameType;

use super::state::State;

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
        if let Err(e) = certified.install(ssl) {
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
