//! `jwt`: bearer-token authentication. Tokens are verified against an HMAC secret or a
//! JWKS (file, or URL refreshed in the background); verified claims, the mapped consumer
//! and `claims_to_headers` travel on to later phases and the upstream.

mod cache;
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
use crate::{Entry, ErrorCode, Level, Phase, Plugin, PluginCtx, PluginEnv, Problem, Rejection};

pub use cache::{TokenCache, Verified};
pub use config::{Audience, JwtConfig, KeySource};
pub use fetch::RemoteJwks;
pub use keys::{KeyKind, KeySet};
pub use verify::{ClaimRules, Failure, Verifier, UNKNOWN_KID};

/// The compiled `jwt` plugin.
pub struct Jwt {
    keys: KeySource,
    verifier: Verifier,
    required_scopes: Vec<String>,
    claim_headers: Vec<(String, HeaderName)>,
    cookie: Option<String>,
    query: Option<String>,
    consumers: Arc<Consumers>,
    cache: TokenCache,
}

impl Entry for Jwt {
    const NAME: &'static str = "jwt";
    const PHASE: Phase = Phase::Auth;
    type Config = JwtConfig;

    /// Checks `config`, loads its keys (or takes over / starts the JWKS fetcher).
    fn compile(config: &JwtConfig, _: Level, env: &PluginEnv) -> Result<Self, Vec<Problem>> {
        Self::new(config, env).map_err(|problem| vec![problem])
    }
}

impl Jwt {
    fn new(config: &JwtConfig, env: &PluginEnv) -> Result<Self, Problem> {
        let algorithms = config.algorithms()?;
        let claim_headers = config.claim_headers()?;
        let keys = config.key_source(env)?;
        let audience = config.audiences();
        let leeway = config.leeway()?;
        let verifier = Verifier::new(
            &algorithms,
            &ClaimRules {
                issuer: config.issuer.as_deref(),
                audience: &audience,
                leeway,
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
            cache: TokenCache::new(leeway),
        })
    }

    /// The token, from `Authorization: Bearer`, the cookie or the query parameter;
    /// refused when it is given twice (in two places, or twice in one).
    fn token(&self, req: &RequestHeader) -> Result<Option<String>, Rejection> {
        let bearer = credentials::bearer(req).map(str::to_string);
        let cookie = match self.cookie.as_deref() {
            Some(name) => credentials::cookie(req, name)?.map(str::to_string),
            None => None,
        };
        let query = match self.query.as_deref() {
            Some(name) => credentials::query_param(req, name)?,
            None => None,
        };
        credentials::only(
            bearer.into_iter().chain(cookie).chain(query),
            "bearer token",
        )
    }

    async fn authenticate(&self, token: &str, ctx: &mut PluginCtx) -> Result<(), Rejection> {
        let keys = self.keys()?;
        let verified = match self.verified(token, &keys) {
            // A kid the set lacks may be a rotation: wait for the refetch it asks for, then
            // verify against the set in service (which a fetch that completed since the
            // first check may have replaced too).
            Err(refusal) if refusal.auth_reason == Some(UNKNOWN_KID) => {
                if let KeySource::Remote(remote) = &self.keys {
                    remote.refetched().await;
                }
                let current = self.keys()?;
                if Arc::ptr_eq(&current, &keys) {
                    return Err(refusal);
                }
                self.verified(token, &current)?
            }
            verified => verified?,
        };
        Self::accept(&verified, ctx);
        Ok(())
    }

    /// Records the verified token's consumer and claims.
    fn accept(verified: &Verified, ctx: &mut PluginCtx) {
        if let Some(consumer) = &verified.consumer {
            ctx.consumer = Some(Arc::clone(&consumer.id));
            ctx.consumer_tier = consumer.tier.clone();
        }
        ctx.claims = Some(Arc::clone(&verified.claims));
    }

    /// The key set in service.
    fn keys(&self) -> Result<Arc<KeySet>, Rejection> {
        match &self.keys {
            KeySource::Loaded(keys) => Ok(Arc::clone(keys)),
            KeySource::Remote(remote) => remote.keys().as_ref().cloned().ok_or_else(|| {
                Rejection::new(
                    ErrorCode::AuthKeysUnavailable,
                    "the signing keys of this route are not loaded yet",
                )
                .retry_after(1)
                .auth_failure("keys_unavailable")
            }),
        }
    }

    /// The token verified under `keys`, from the cache of verified tokens when it is there.
    fn verified(&self, token: &str, keys: &Arc<KeySet>) -> Result<Arc<Verified>, Rejection> {
        let now = jsonwebtoken::get_current_timestamp();
        if let Some(hit) = self.cache.get(token, keys, now) {
            return Ok(hit);
        }
        let verified = Arc::new(self.verify(token, keys)?);
        self.cache.insert(token, keys, Arc::clone(&verified));
        Ok(verified)
    }

    /// Signature, claims and scopes; the consumer the subject maps to.
    fn verify(&self, token: &str, keys: &KeySet) -> Result<Verified, Rejection> {
        let claims = self
            .verifier
            .verify(token, keys)
            .map_err(|failure| auth::bearer_refusal(failure.reason, failure.message))?;
        if !auth::has_scopes(&self.required_scopes, claims::scopes(&claims)) {
            return Err(auth::scope_refusal(&self.required_scopes, "Bearer"));
        }
        let consumer = claims::subject(&claims)
            .and_then(|sub| self.consumers.by_jwt_subject(sub))
            .cloned();
        Ok(Verified::new(Arc::new(claims), consumer))
    }
}

#[async_trait::async_trait]
impl Plugin for Jwt {
    async fn request(&self, req: &mut RequestHeader, ctx: &mut PluginCtx) -> Result<(), Rejection> {
        let Some(token) = self.token(req)? else {
            return Err(auth::bearer_refusal(
                auth::MISSING,
                "a bearer token is required",
            ));
        };
        self.authenticate(&token, ctx).await
    }

    /// Decided now unless the token names a key the remote set lacks (a rotation, which
    /// waits for a refetch in [`Plugin::request`]).
    fn request_now(
        &self,
        req: &mut RequestHeader,
        ctx: &mut PluginCtx,
    ) -> Option<Result<(), Rejection>> {
        let token = match self.token(req) {
            Ok(Some(token)) => token,
            Ok(None) => {
                return Some(Err(auth::bearer_refusal(
                    auth::MISSING,
                    "a bearer token is required",
                )))
            }
            Err(refusal) => return Some(Err(refusal)),
        };
        let keys = match self.keys() {
            Ok(keys) => keys,
            Err(refusal) => return Some(Err(refusal)),
        };
        match self.verified(&token, &keys) {
            Err(refusal)
                if refusal.auth_reason == Some(UNKNOWN_KID)
                    && matches!(self.keys, KeySource::Remote(_)) =>
            {
                None
            }
            Err(refusal) => Some(Err(refusal)),
            Ok(verified) => {
                Self::accept(&verified, ctx);
                Some(Ok(()))
            }
        }
    }

    /// Inbound copies of the `claims_to_headers` headers (underscored look-alikes
    /// included) never pass, whichever auth plugin accepted the request; the verified
    /// claims' values replace them.
    fn upstream_request(&self, req: &mut RequestHeader, ctx: &PluginCtx) {
        crate::lookalike::remove_lookalikes(req, |name| {
            self.claim_headers
                .iter()
                .any(|(_, header)| header.as_str() == name)
        });
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
