//! The `plugins:` section of the configuration and how it becomes a [`PluginChain`].

use std::sync::Arc;

use serde::Deserialize;

use crate::concurrency_limit::{ConcurrencyLimit, ConcurrencyLimitConfig};
use crate::cors::{Cors, CorsConfig};
use crate::headers::{Headers, HeadersConfig};
use crate::ip_restriction::{IpRestriction, IpRestrictionConfig};
use crate::jwt::{Jwt, JwtConfig};
use crate::key_auth::{KeyAuth, KeyAuthConfig};
use crate::rate_limit::{RateLimit, RateLimitRuleConfig};
use crate::request_size::{RequestSize, RequestSizeConfig};
use crate::{AuthGuard, Plugin, PluginChain, PluginEnv, Problem};

/// The plugins configured globally or on a route. A route's entry replaces the global
/// entry of the same name.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginsConfig {
    /// Request body and header size limits.
    pub request_size: Option<RequestSizeConfig>,
    /// Request and response header rewriting.
    pub headers: Option<HeadersConfig>,
    /// JWT authentication.
    pub jwt: Option<JwtConfig>,
    /// API key authentication.
    pub key_auth: Option<KeyAuthConfig>,
    /// Rate-limit rules; a request must pass all of them.
    pub rate_limit: Option<Vec<RateLimitRuleConfig>>,
    /// A cap on requests in flight per key.
    pub concurrency_limit: Option<ConcurrencyLimitConfig>,
    /// CORS preflights and response headers.
    pub cors: Option<CorsConfig>,
    /// Client address allow/deny lists.
    pub ip_restriction: Option<IpRestrictionConfig>,
}

impl PluginsConfig {
    /// Every mistake in this one section (global or a route's), with paths relative to it.
    pub fn problems(&self) -> Vec<Problem> {
        self.problems_in(&PluginEnv::check())
    }

    /// [`Self::problems`] against the facts of `env` (e.g. whether a `redis` section exists).
    pub fn problems_in(&self, env: &PluginEnv) -> Vec<Problem> {
        match build_chain(&PluginsConfig::default(), self, env) {
            Ok(_) => Vec::new(),
            Err(problems) => problems,
        }
    }
}

/// Compiles the effective plugins of a route: the route's own entries, and the global
/// ones it does not replace.
pub fn build_chain(
    global: &PluginsConfig,
    route: &PluginsConfig,
    env: &PluginEnv,
) -> Result<PluginChain, Vec<Problem>> {
    let mut plugins: Vec<Arc<dyn Plugin>> = Vec::new();
    let mut problems = Vec::new();
    let mut add = |built: Result<Arc<dyn Plugin>, Problem>| match built {
        Ok(plugin) => plugins.push(plugin),
        Err(problem) => problems.push(problem),
    };

    if let Some(config) = route.request_size.as_ref().or(global.request_size.as_ref()) {
        add(RequestSize::new(config).map(|p| Arc::new(p) as Arc<dyn Plugin>));
    }
    if let Some(config) = route.headers.as_ref().or(global.headers.as_ref()) {
        add(Headers::new(config).map(|p| Arc::new(p) as Arc<dyn Plugin>));
    }
    if let Some(config) = route.cors.as_ref().or(global.cors.as_ref()) {
        add(Cors::new(config).map(|p| Arc::new(p) as Arc<dyn Plugin>));
    }
    if let Some(config) = route
        .ip_restriction
        .as_ref()
        .or(global.ip_restriction.as_ref())
    {
        add(IpRestriction::new(config).map(|p| Arc::new(p) as Arc<dyn Plugin>));
    }
    // key_auth before jwt: when both are configured, key_auth always runs (so
    // hide_credentials always applies) and jwt is tried when it refuses.
    let key_auth = route.key_auth.as_ref().or(global.key_auth.as_ref());
    if let Some(config) = key_auth {
        add(KeyAuth::new(config, env).map(|p| Arc::new(p) as Arc<dyn Plugin>));
    }
    let jwt = route.jwt.as_ref().or(global.jwt.as_ref());
    if let Some(config) = jwt {
        add(Jwt::new(config, env).map(|p| Arc::new(p) as Arc<dyn Plugin>));
    }
    let has_auth = key_auth.is_some() || jwt.is_some();
    if let Some(config) = route
        .concurrency_limit
        .as_ref()
        .or(global.concurrency_limit.as_ref())
    {
        let route_level = route.concurrency_limit.is_some();
        add(ConcurrencyLimit::new(config, route_level, env).map(|p| Arc::new(p) as Arc<dyn Plugin>));
    }
    let rate_limit = match (&route.rate_limit, &global.rate_limit) {
        (Some(rules), _) => Some((rules, true)),
        (None, Some(rules)) => Some((rules, false)),
        (None, None) => None,
    };
    if let Some((rules, route_level)) = rate_limit {
        match RateLimit::new(rules, route_level, env) {
            Ok(plugin) => plugins.push(Arc::new(plugin)),
            Err(mut more) => problems.append(&mut more),
        }
    }
    if problems.is_empty() {
        let chain = PluginChain::new(plugins);
        Ok(if has_auth {
            chain.with_auth_guard(Arc::new(AuthGuard {
                telemetry: Arc::clone(&env.telemetry),
                failure_limit: env.auth_failure_limit.clone(),
            }))
        } else {
            chain
        })
    } else {
        Err(problems)
    }
}
