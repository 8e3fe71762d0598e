//! `jwt`: bearer-token authentication. Tokens are verified against an HMAC secret or a
//! JWKS (file, or URL refreshed in the background); verified claims, the mapped consumer
//! and `claims_to_headers` travel on to later phases and the upstream.

mod claims;
mod config;
mod fetch;
mod keys;
mod verify;

use std::sync::Arc;

use http::HeaderName;
use pingora_http::RequestHeader;

use crate::auth::{self, credentials};
use crate::consumers::Consumers;
use crate::{ConfigProblem, ErrorCode, Phase, Plugin, PluginCtx, PluginEnv, Rejection};

pub use config::{Audience, JwtConfig, KeySource};
pub use fetch::RemoteJwks;
pub use keys::{KeyKind, KeySet};
pub use verify::{ClaimRules, Failure, Verifier};

/// The compiled `jwt` plugin.
pub struct Jwt {
    keys: KeySource,
    verifier: Verifier,
    required_scopes: Vec<String>,
    claim_headers: Vec<(String, HeaderName)>,
    cookie: Option<String>,
    query: Option<String>,
    consumers: Arc<Consumers>,
}

impl Jwt {
    /// Checks `config`, loads its keys (or takes over / starts the JWKS fetcher).
    pub fn new(config: &JwtConfig, env: &PluginEnv) -> Result<Self, ConfigProblem> {
        let algorithms = config.algorithms()?;
        let claim_headers = config.claim_headers()?;
        let keys = config.key_source(env)?;
        let audience = config.audiences();
        let verifier = Verifier::new(
            &algorithms,
            &ClaimRules {
                issuer: config.issuer.as_deref(),
                audience: &audience,
                leeway: config.leeway.map_or(0, |leeway| leeway.0.as_secs()),
            },
        );
        Ok(Self {
            keys,
            verifier,
            required_scopes: config.required_scopes.clone(),
            claim_headers,
            cookie: config.cookie.clone(),
            query: config.query.clone(),
            consumers: Arc::clone(&env.consumers),
        })
    }

    fn token(&self, req: &RequestHeader) -> Option<String> {
        credentials::bearer(req)
            .map(str::to_string)
            .or_else(|| {
                self.cookie
                    .as_deref()
                    .and_then(|name| credentials::cookie(req, name))
                    .map(str::to_string)
            })
            .or_else(|| {
                self.query
                    .as_deref()
                    .and_then(|name| credentials::query_param(req, name))
            })
    }

    fn authenticate(&self, token: &str, ctx: &mut PluginCtx) -> Result<(), Rejection> {
        let claims = match &self.keys {
            KeySource::Loaded(keys) => self.verifier.verify(token, keys),
            KeySource::Remote(remote) => {
                let loaded = remote.keys();
                let Some(keys) = loaded.as_ref() else {
                    return Err(Rejection::new(
                        ErrorCode::AuthKeysUnavailable,
                        "the signing keys of this route are not loaded yet",
                    )
                    .retry_after(1)
                    .auth_failure("keys_unavailable"));
                };
                let verified = self.verifier.verify(token, keys);
                if matches!(&verified, Err(failure) if failure.reason == "unknown_kid") {
                    remote.nudge();
                }
                verified
            }
        }
        .map_err(|failure| auth::bearer_refusal(failure.reason, failure.message))?;
        if !auth::has_scopes(&self.required_scopes, claims::scopes(&claims)) {
            return Err(auth::scope_refusal(&self.required_scopes, "Bearer"));
        }
        if let Some(consumer) =
            claims::subject(&claims).and_then(|sub| self.consumers.by_jwt_subject(sub))
        {
            ctx.consumer = Some(Arc::clone(&consumer.id));
            ctx.consumer_tier = consumer.tier.clone();
        }
        ctx.claims = Some(Arc::new(claims));
        Ok(())
    }
}

#[async_trait::async_trait]
impl Plugin for Jwt {
    fn name(&self) -> &'static str {
        "jwt"
    }

    fn phase(&self) -> Phase {
        Phase::Auth
    }

    async fn request(&self, req: &mut RequestHeader, ctx: &mut PluginCtx) -> Result<(), Rejection> {
        let Some(token) = self.token(req) else {
            return Err(auth::bearer_refusal(
                auth::MISSING,
                "a bearer token is required",
            ));
        };
        self.authenticate(&token, ctx)
    }

    /// Inbound copies of the `claims_to_headers` headers never pass, whichever auth
    /// plugin accepted the request; the verified claims' values replace them.
    fn upstream_request(&self, req: &mut RequestHeader, ctx: &PluginCtx) {
        for (claim, header) in &self.claim_headers {
            req.remove_header(header);
            let value = ctx
                .claims
                .as_ref()
                .and_then(|claims| claims.get(claim))
                .and_then(claims::header_value);
            if let Some(value) = value {
                // A valid name and value: inserting cannot fail.
                let _ = req.insert_header(header.clone(), value);
            }
        }
    }
}
