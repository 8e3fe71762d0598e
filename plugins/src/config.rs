//! The `plugins:` section of the configuration and how it becomes a [`PluginChain`].

use std::sync::Arc;

use serde::Deserialize;

use crate::concurrency_limit::{ConcurrencyLimit, ConcurrencyLimitConfig};
use crate::headers::{Headers, HeadersConfig};
use crate::rate_limit::{RateLimit, RateLimitRuleConfig};
use crate::request_size::{RequestSize, RequestSizeConfig};
use crate::{Plugin, PluginChain, PluginEnv};

/// The plugins configured globally or on a route. A route's entry replaces the global
/// entry of the same name.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginsConfig {
    /// Request body and header size limits.
    pub request_size: Option<RequestSizeConfig>,
    /// Request and response header rewriting.
    pub headers: Option<HeadersConfig>,
    /// JWT authentication (planned: issue #3).
    pub jwt: Option<serde_yaml::Value>,
    /// API key authentication (planned: issue #3).
    pub key_auth: Option<serde_yaml::Value>,
    /// Rate-limit rules; a request must pass all of them.
    pub rate_limit: Option<Vec<RateLimitRuleConfig>>,
    /// A cap on requests in flight per key.
    pub concurrency_limit: Option<ConcurrencyLimitConfig>,
    /// CORS (planned: issue #8).
    pub cors: Option<serde_yaml::Value>,
}

/// A configuration mistake found while building plugins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Dotted path of the offending field below the `plugins` section (`request_size.max_body`).
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl ConfigProblem {
    fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl PluginsConfig {
    /// Every mistake in this one section (global or a route's), with paths relative to it.
    pub fn problems(&self) -> Vec<ConfigProblem> {
        self.problems_in(&PluginEnv::check())
    }

    /// [`Self::problems`] against the facts of `env` (e.g. whether a `redis` section exists).
    pub fn problems_in(&self, env: &PluginEnv) -> Vec<ConfigProblem> {
        match build_chain(&PluginsConfig::default(), self, env) {
            Ok(_) => Vec::new(),
            Err(problems) => problems,
        }
    }

    fn planned(&self) -> [(&'static str, bool, u32); 3] {
        [
            ("jwt", self.jwt.is_some(), 3),
            ("key_auth", self.key_auth.is_some(), 3),
            ("cors", self.cors.is_some(), 8),
        ]
    }
}

/// Compiles the effective plugins of a route: the route's own entries, and the global
/// ones it does not replace.
pub fn build_chain(
    global: &PluginsConfig,
    route: &PluginsConfig,
    env: &PluginEnv,
) -> Result<PluginChain, Vec<ConfigProblem>> {
    let mut plugins: Vec<Arc<dyn Plugin>> = Vec::new();
    let mut problems = Vec::new();
    let mut add = |built: Result<Arc<dyn Plugin>, ConfigProblem>| match built {
        Ok(plugin) => plugins.push(plugin),
        Err(problem) => problems.push(problem),
    };

    if let Some(config) = route.request_size.as_ref().or(global.request_size.as_ref()) {
        add(RequestSize::new(config).map(|p| Arc::new(p) as Arc<dyn Plugin>));
    }
    if let Some(config) = route.headers.as_ref().or(global.headers.as_ref()) {
        add(Headers::new(config).map(|p| Arc::new(p) as Arc<dyn Plugin>));
    }
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
    for ((name, on_route, issue), (_, on_global, _)) in
        route.planned().into_iter().zip(global.planned())
    {
        if on_route || on_global {
            problems.push(ConfigProblem::new(
                name,
                format!("plugin not supported yet (planned in issue #{issue}); remove it"),
            ));
        }
    }

    if problems.is_empty() {
        Ok(PluginChain::new(plugins))
    } else {
        Err(problems)
    }
}
