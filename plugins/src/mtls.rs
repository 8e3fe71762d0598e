//! `mtls`: authentication by client certificate. The listener verifies the certificate
//! (`listeners[].tls.client_auth`); this plugin maps it to a consumer by its SHA-256
//! fingerprint or its subject (`consumers[].client_certs`), so the consumer gets its
//! scopes, tier and rate limits as with an API key or a JWT. On a listener whose
//! `client_auth` is `optional`, this is how a route demands a certificate.

use std::sync::Arc;

use pingora_http::RequestHeader;
use serde::Deserialize;

use crate::auth::{self, MISSING};
use crate::consumers::Consumers;
use crate::{Entry, ErrorCode, Level, Phase, Plugin, PluginCtx, PluginEnv, Problem, Rejection};

/// `plugins.mtls` as written in the configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MtlsConfig {
    /// Scopes the consumer must have (`consumers[].scopes`).
    #[serde(default)]
    pub required_scopes: Vec<String>,
}

/// The compiled `mtls` plugin.
pub struct Mtls {
    required_scopes: Vec<String>,
    consumers: Arc<Consumers>,
}

impl Entry for Mtls {
    const NAME: &'static str = "mtls";
    const PHASE: Phase = Phase::Auth;
    type Config = MtlsConfig;

    /// Certificates are looked up in `env.consumers`.
    fn compile(config: &MtlsConfig, _: Level, env: &PluginEnv) -> Result<Self, Vec<Problem>> {
        Ok(Self {
            required_scopes: config.required_scopes.clone(),
            consumers: Arc::clone(&env.consumers),
        })
    }
}

/// 401 without a challenge: a certificate is asked for in the handshake, not by HTTP.
fn refusal(reason: &'static str, message: &str) -> Rejection {
    Rejection::new(ErrorCode::Unauthorized, message).auth_failure(reason)
}

impl Mtls {
    /// The request hook's verdict; never waits.
    fn decide(&self, _: &mut RequestHeader, ctx: &mut PluginCtx) -> Result<(), Rejection> {
        let Some(cert) = &ctx.client_cert else {
            return Err(refusal(
                MISSING,
                "a client certificate is required (TLS with a certificate the listener trusts)",
            ));
        };
        let Some(consumer) = self.consumers.by_client_cert(&cert.sha256, &cert.subject) else {
            return Err(refusal(
                "unknown_certificate",
                "the client certificate belongs to no consumer",
            ));
        };
        if !auth::has_scopes(
            &self.required_scopes,
            consumer.scopes.iter().map(String::as_str),
        ) {
            return Err(Rejection::new(
                ErrorCode::Forbidden,
                "the credentials lack a required scope",
            )
            .auth_failure("insufficient_scope"));
        }
        ctx.consumer = Some(Arc::clone(&consumer.id));
        ctx.consumer_tier = consumer.tier.clone();
        Ok(())
    }
}

impl Plugin for Mtls {
    fn request_now(
        &self,
        req: &mut RequestHeader,
        ctx: &mut PluginCtx,
    ) -> Option<Result<(), Rejection>> {
        Some(self.decide(req, ctx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consumers::ConsumerConfig;
    use crate::ClientCertificate;

    fn plugin(required_scopes: &[&str]) -> Mtls {
        let consumers = Consumers::compile(&[ConsumerConfig {
            id: "billing".into(),
            api_keys: Vec::new(),
            scopes: vec!["invoices:read".into()],
            tier: Some("gold".into()),
            jwt_subjects: Vec::new(),
            client_certs: vec!["subject:CN=billing,O=Acme".into()],
        }])
        .expect("valid");
        let mut env = PluginEnv::check();
        env.consumers = Arc::new(consumers);
        let config = MtlsConfig {
            required_scopes: required_scopes.iter().map(|s| s.to_string()).collect(),
        };
        Mtls::compile(&config, Level::Route, &env).expect("valid")
    }

    async fn run(plugin: &Mtls, subject: Option<&str>) -> (Result<(), Rejection>, PluginCtx) {
        let mut ctx = PluginCtx {
            client_cert: subject.map(|subject| {
                Arc::new(ClientCertificate {
                    subject: subject.into(),
                    sans: Vec::new(),
                    sha256: [7; 32],
                })
            }),
            ..PluginCtx::default()
        };
        let mut req = RequestHeader::build("GET", b"/", None).expect("request");
        let result = plugin.request(&mut req, &mut ctx).await;
        (result, ctx)
    }

    #[tokio::test]
    async fn a_known_certificate_makes_the_consumer() {
        let (result, ctx) = run(&plugin(&[]), Some("CN=billing,O=Acme")).await;
        assert!(result.is_ok());
        assert_eq!(ctx.consumer.as_deref(), Some("billing"));
        assert_eq!(ctx.consumer_tier.as_deref(), Some("gold"));
    }

    #[tokio::test]
    async fn no_or_unknown_certificates_are_401_with_their_reason() {
        let (missing, _) = run(&plugin(&[]), None).await;
        assert_eq!(missing.expect_err("missing").auth_reason, Some(MISSING));
        let (unknown, _) = run(&plugin(&[]), Some("CN=other")).await;
        let unknown = unknown.expect_err("unknown");
        assert_eq!(
            (unknown.code, unknown.auth_reason),
            (ErrorCode::Unauthorized, Some("unknown_certificate"))
        );
    }

    #[tokio::test]
    async fn a_consumer_without_the_scope_is_403() {
        let (result, _) = run(&plugin(&["invoices:write"]), Some("CN=billing,O=Acme")).await;
        let refused = result.expect_err("no scope");
        assert_eq!(refused.code, ErrorCode::Forbidden);
    }
}
