//! `key_auth`: API-key authentication. The key (from a header or a query parameter) is
//! hashed with SHA-256 and compared in constant time with the consumers' stored digests;
//! the key itself is never stored or logged.

use std::sync::Arc;

use http::HeaderName;
use pingora_http::RequestHeader;
use serde::Deserialize;

use crate::auth::{self, credentials};
use crate::consumers::Consumers;
use crate::{Entry, Level, Phase, Plugin, PluginCtx, PluginEnv, Problem, Rejection};

/// `plugins.key_auth` as written in the configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyAuthConfig {
    /// Header carrying the key. Default `X-Api-Key` when `query` is not set either.
    pub header: Option<String>,
    /// Query parameter carrying the key (read after the header, when both are set).
    pub query: Option<String>,
    /// Remove the key from the request before proxying it.
    #[serde(default)]
    pub hide_credentials: bool,
    /// Scopes the consumer must have (`consumers[].scopes`).
    #[serde(default)]
    pub required_scopes: Vec<String>,
}

/// The compiled `key_auth` plugin.
pub struct KeyAuth {
    header: Option<HeaderName>,
    query: Option<String>,
    hide_credentials: bool,
    required_scopes: Vec<String>,
    consumers: Arc<Consumers>,
}

impl Entry for KeyAuth {
    const NAME: &'static str = "key_auth";
    const PHASE: Phase = Phase::Auth;
    type Config = KeyAuthConfig;

    /// Checks `config`; keys are looked up in `env.consumers`.
    fn compile(config: &KeyAuthConfig, _: Level, env: &PluginEnv) -> Result<Self, Vec<Problem>> {
        let header = match (&config.header, &config.query) {
            (None, None) => Some(HeaderName::from_static("x-api-key")),
            (Some(name), _) => Some(HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                vec![Problem::new(
                    "header",
                    format!("{name:?} is not a valid header name"),
                )]
            })?),
            (None, Some(_)) => None,
        };
        if config.query.as_deref() == Some("") {
            return Err(vec![Problem::new("query", "must not be empty")]);
        }
        Ok(Self {
            header,
            query: config.query.clone(),
            hide_credentials: config.hide_credentials,
            required_scopes: config.required_scopes.clone(),
            consumers: Arc::clone(&env.consumers),
        })
    }
}

impl KeyAuth {
    /// The key, from the header or the query parameter; refused when it is given twice
    /// (two headers, two parameters, or both).
    fn key(&self, req: &RequestHeader) -> Result<Option<Vec<u8>>, Rejection> {
        let from_header = match &self.header {
            Some(name) => credentials::header(req, name)?.map(<[u8]>::to_vec),
            None => None,
        };
        let from_query = match self.query.as_deref() {
            Some(name) => credentials::query_param(req, name)?.map(String::into_bytes),
            None => None,
        };
        credentials::only(from_header.into_iter().chain(from_query), "API key")
    }

    fn hide(&self, req: &mut RequestHeader) {
        if let Some(name) = &self.header {
            req.remove_header(name);
        }
        if let Some(name) = &self.query {
            credentials::remove_query_param(req, name);
        }
    }
}

impl Plugin for KeyAuth {
    fn request_now(
        &self,
        req: &mut RequestHeader,
        ctx: &mut PluginCtx,
    ) -> Option<Result<(), Rejection>> {
        Some(self.authenticate(req, ctx))
    }
}

impl KeyAuth {
    /// The key's consumer, or the refusal; never waits.
    fn authenticate(&self, req: &mut RequestHeader, ctx: &mut PluginCtx) -> Result<(), Rejection> {
        let key = self.key(req)?;
        // Hidden whatever the outcome: a key never reaches the upstream, even when
        // another auth plugin of the route accepts the request.
        if self.hide_credentials {
            self.hide(req);
        }
        let Some(key) = key else {
            return Err(auth::key_refusal(auth::MISSING, "an API key is required"));
        };
        let Some(consumer) = self.consumers.by_api_key(&key) else {
            return Err(auth::key_refusal("unknown_key", "the API key is not valid"));
        };
        if !auth::has_scopes(
            &self.required_scopes,
            consumer.scopes.iter().map(String::as_str),
        ) {
            return Err(auth::scope_refusal(&self.required_scopes, "Key"));
        }
        ctx.consumer = Some(Arc::clone(&consumer.id));
        ctx.consumer_tier = consumer.tier.clone();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consumers::{hash_api_key, ConsumerConfig};
    use crate::ErrorCode;

    fn plugin(config: KeyAuthConfig) -> KeyAuth {
        let consumers = Consumers::compile(&[ConsumerConfig {
            id: "acme".into(),
            api_keys: vec![hash_api_key("s3cret")],
            scopes: vec!["orders:read".into()],
            tier: Some("gold".into()),
            jwt_subjects: Vec::new(),
            client_certs: Vec::new(),
        }])
        .expect("valid");
        let mut env = PluginEnv::check();
        env.consumers = Arc::new(consumers);
        KeyAuth::compile(&config, Level::Route, &env).expect("valid")
    }

    fn request(target: &str, headers: &[(&str, &str)]) -> RequestHeader {
        let mut req = RequestHeader::build("GET", target.as_bytes(), None).expect("request");
        for (name, value) in headers {
            req.append_header(name.to_string(), *value).expect("header");
        }
        req
    }

    async fn run(plugin: &KeyAuth, req: &mut RequestHeader) -> (Result<(), Rejection>, PluginCtx) {
        let mut ctx = PluginCtx::default();
        let result = plugin.request(req, &mut ctx).await;
        (result, ctx)
    }

    #[tokio::test]
    async fn a_known_key_in_the_default_header_makes_the_consumer() {
        let plugin = plugin(KeyAuthConfig::default());
        let mut req = request("/", &[("x-api-key", "s3cret")]);
        let (result, ctx) = run(&plugin, &mut req).await;
        assert!(result.is_ok());
        assert_eq!(ctx.consumer.as_deref(), Some("acme"));
        assert_eq!(ctx.consumer_tier.as_deref(), Some("gold"));
        assert!(
            req.headers.get("x-api-key").is_some(),
            "not hidden by default"
        );
    }

    #[tokio::test]
    async fn unknown_and_missing_keys_are_401_with_their_reason() {
        let plugin = plugin(KeyAuthConfig::default());
        let (unknown, _) = run(&plugin, &mut request("/", &[("x-api-key", "guess")])).await;
        let unknown = unknown.expect_err("unknown");
        assert_eq!(
            (unknown.code, unknown.auth_reason),
            (ErrorCode::Unauthorized, Some("unknown_key"))
        );
        let (missing, _) = run(&plugin, &mut request("/", &[])).await;
        assert_eq!(missing.expect_err("missing").auth_reason, Some("missing"));
    }

    #[tokio::test]
    async fn a_query_key_is_hidden_from_the_upstream() {
        let plugin = plugin(KeyAuthConfig {
            query: Some("api_key".into()),
            hide_credentials: true,
            ..KeyAuthConfig::default()
        });
        let mut req = request("/orders?api_key=s3cret&page=2", &[]);
        let (result, ctx) = run(&plugin, &mut req).await;
        assert!(result.is_ok());
        assert_eq!(ctx.consumer.as_deref(), Some("acme"));
        assert_eq!(req.uri.to_string(), "/orders?page=2");
    }

    #[tokio::test]
    async fn a_consumer_without_the_scope_is_403() {
        let plugin = plugin(KeyAuthConfig {
            required_scopes: vec!["orders:write".into()],
            ..KeyAuthConfig::default()
        });
        let (result, _) = run(&plugin, &mut request("/", &[("x-api-key", "s3cret")])).await;
        let refused = result.expect_err("no scope");
        assert_eq!(refused.code, ErrorCode::Forbidden);
        assert_eq!(refused.auth_reason, Some("insufficient_scope"));
    }
}
