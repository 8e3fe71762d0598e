//! TLS handshakes: each picks its certificate by SNI from the configuration in force,
//! and, on listeners with `client_auth`, verifies the client's certificate against the
//! CA bundle in force and hands the verified certificate to the connection.

use std::any::Any;
use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::TlsAccept;
use pingora::protocols::tls::TlsRef;
use pingora::tls::ssl::{NameType, SslVerifyMode};

use pingora_error::{ErrorType, OrErr};

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
        if let Some(client_auth) = store.client_auth() {
            if let Err(e) = client_auth.request_certificate(ssl) {
                // Without its verification settings the handshake must not go on: no
                // certificate is installed either, so it fails.
                log::error!(
                    "TLS on {}: cannot ask for a client certificate: {e}",
                    self.listener
                );
                ssl.set_verify(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT);
            }
        }
    }

    /// The verified client certificate, computed once for the connection; requests read
    /// it from the connection's TLS digest.
    async fn handshake_complete_callback(
        &self,
        ssl: &TlsRef,
    ) -> Option<Arc<dyn Any + Send + Sync>> {
        let gateway = self.state.gateway();
        let client_auth = gateway.tls.get(&self.listener)?.client_auth()?;
        let verified = client_auth.verified(ssl)?;
        Some(Arc::new(verified))
    }
}

/// Pingora's TLS settings for a listener: Mozilla intermediate (TLS 1.2 and 1.3 only),
/// certificates from `resolver`, HTTP/2 by ALPN when asked for.
pub fn settings(resolver: SniResolver, http2: bool) -> pingora_error::Result<TlsSettings> {
    let mut settings = TlsSettings::with_callbacks(Box::new(resolver))?;
    // OpenSSL refuses to resume a session of a handshake that verified a client
    // certificate unless a session id context is set.
    settings.set_session_id_context(b"portcullis").or_err(
        ErrorType::InternalError,
        "cannot set the TLS session id context",
    )?;
    if http2 {
        settings.enable_h2();
    }
    Ok(settings)
}
