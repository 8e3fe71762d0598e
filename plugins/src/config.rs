//! The `plugins:` section of the configuration, compiled once per section, and how a
//! route's [`PluginChain`] is assembled from its own section and the global one.

use std::sync::Arc;

use serde::Deserialize;

use crate::concurrency_limit::{ConcurrencyLimit, ConcurrencyLimitConfig};
use crate::cors::{Cors, CorsConfig};
use crate::headers::{Headers, HeadersConfig};
use crate::ip_restriction::{IpRestriction, IpRestrictionConfig};
use crate::jwt::{Jwt, JwtConfig};
use crate::key_auth::{KeyAuth, KeyAuthConfig};
use crate::mtls::{Mtls, MtlsConfig};
use crate::rate_limit::{RateLimit, RateLimitRuleConfig};
use crate::request_size::{RequestSize, RequestSizeConfig};
use crate::{AuthGuard, Entry, Level, PluginChain, PluginEnv, Problem, Step};

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
    /// Client-certificate authentication (certificates verified by the listener).
    pub mtls: Option<MtlsConfig>,
    /// Rate-limit rules; a request must pass all of them.
    pub rate_limit: Option<Vec<RateLimitRuleConfig>>,
    /// A cap on requests in flight per key.
    pub concurrency_limit: Option<ConcurrencyLimitConfig>,
    /// CORS preflights and response headers.
    pub cors: Option<CorsConfig>,
    /// Client address allow/deny lists.
    pub ip_restriction: Option<IpRestrictionConfig>,
}

/// One `plugins:` section (the global one or a route's), compiled once.
#[derive(Clone, Default)]
pub struct CompiledPlugins {
    /// One slot per entry of [`PluginsConfig`], in the same order in every section, so
    /// that a route's slot and the global slot of the same entry line up.
    slots: Vec<Option<Step>>,
    /// The auth phase's reporting and failure limit, for chains with an auth plugin.
    guard: Option<Arc<AuthGuard>>,
}

impl CompiledPlugins {
    /// Compiles every entry of `config`; problem paths are relative to the section
    /// (`jwt.issuer`, `rate_limit[0].rate`).
    pub fn compile(
        config: &PluginsConfig,
        level: Level,
        env: &PluginEnv,
    ) -> Result<Self, Vec<Problem>> {
        let mut section = Section {
            level,
            env,
            slots: Vec::with_capacity(8),
            problems: Vec::new(),
        };
        section.entry::<RequestSize>(config.request_size.as_ref());
        section.entry::<Headers>(config.headers.as_ref());
        section.entry::<Cors>(config.cors.as_ref());
        section.entry::<IpRestriction>(config.ip_restriction.as_ref());
        // key_auth before jwt: when both are configured, key_auth always runs (so
        // hide_credentials always applies) and jwt is tried when it refuses.
        section.entry::<KeyAuth>(config.key_auth.as_ref());
        section.entry::<Jwt>(config.jwt.as_ref());
        section.entry::<Mtls>(config.mtls.as_ref());
        section.entry::<ConcurrencyLimit>(config.concurrency_limit.as_ref());
        section.entry::<RateLimit>(config.rate_limit.as_ref());
        if !section.problems.is_empty() {
            return Err(section.problems);
        }
        Ok(Self {
            slots: section.slots,
            guard: Some(Arc::new(AuthGuard {
                telemetry: Arc::clone(&env.telemetry),
                failure_limit: env.auth_failure_limit.clone(),
            })),
        })
    }

    /// The chain of a route whose own section this is: its entries, and the entries of
    /// `global` it does not replace (a route's entry replaces the global entry of the
    /// same name). Nothing is compiled again.
    pub fn chain(&self, global: &CompiledPlugins) -> PluginChain {
        let steps = (0..self.slots.len().max(global.slots.len()))
            .filter_map(|i| self.step(i).or_else(|| global.step(i)).cloned())
            .collect();
        let chain = PluginChain::new(steps);
        match self.guard.as_ref().or(global.guard.as_ref()) {
            Some(guard) => chain.with_auth_guard(Arc::clone(guard)),
            None => chain,
        }
    }

    fn step(&self, slot: usize) -> Option<&Step> {
        self.slots.get(slot)?.as_ref()
    }
}

/// A section being compiled: the slots filled so far and the problems found.
struct Section<'a> {
    level: Level,
    env: &'a PluginEnv,
    slots: Vec<Option<Step>>,
    problems: Vec<Problem>,
}

impl Section<'_> {
    /// Compiles the entry `P` when it is configured, into the next slot; its problems are
    /// placed under its name.
    fn entry<P: Entry>(&mut self, config: Option<&P::Config>) {
        let step = config.and_then(|config| match P::compile(config, self.level, self.env) {
            Ok(plugin) => Some(Step::of(plugin)),
            Err(problems) => {
                self.problems
                    .extend(problems.into_iter().map(|problem| problem.under(P::NAME)));
                None
            }
        });
        self.slots.push(step);
    }
}

/// The problems of a `plugins:` section written in YAML, compiled at route level.
#[cfg(test)]
pub(crate) fn section_problems(yaml: &str) -> Vec<Problem> {
    let config: PluginsConfig = serde_yaml::from_str(yaml).expect("yaml");
    CompiledPlugins::compile(&config, Level::Route, &PluginEnv::check())
        .err()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ErrorCode, PluginCtx, Rejection};
    use pingora_http::RequestHeader;

    fn section(yaml: &str, level: Level, env: &PluginEnv) -> CompiledPlugins {
        let config: PluginsConfig = serde_yaml::from_str(yaml).expect("yaml");
        CompiledPlugins::compile(&config, level, env).unwrap_or_else(|p| panic!("{p:?}"))
    }

    async fn run(chain: &PluginChain, route: &str) -> Result<(), Rejection> {
        let mut req = RequestHeader::build("GET", b"/", None).expect("request");
        let mut ctx = PluginCtx {
            route: route.into(),
            client_ip: Some([192, 0, 2, 1].into()),
            ..PluginCtx::default()
        };
        chain.request(&mut req, &mut ctx).await
    }

    const ONE_PER_HOUR: &str =
        "rate_limit: [{name: r, key: client_ip, algorithm: token_bucket, rate: 1, per: 1h}]";

    #[test]
    fn a_routes_entry_replaces_the_global_one_of_the_same_name() {
        let env = PluginEnv::check();
        let global = section(
            "{request_size: {max_body: 1kb}, headers: {request_add: {X-A: '1'}}}",
            Level::Global,
            &env,
        );
        let own = section(
            "{headers: {request_add: {X-B: '2'}}, ip_restriction: {deny: [10.0.0.0/8]}}",
            Level::Route,
            &env,
        );
        let chain = own.chain(&global);
        assert_eq!(
            chain.names().collect::<Vec<_>>(),
            ["request_size", "ip_restriction", "headers"]
        );
        let mut req = RequestHeader::build("GET", b"/", None).expect("request");
        chain.upstream_request(&mut req, &PluginCtx::default());
        assert!(
            req.headers.get("x-a").is_none(),
            "the global headers entry is replaced"
        );
        assert!(req.headers.get("x-b").is_some());
    }

    #[tokio::test]
    async fn global_limits_count_across_routes_and_route_limits_per_route() {
        let env = PluginEnv::check();
        let global = section(ONE_PER_HOUR, Level::Global, &env);
        let bare = CompiledPlugins::compile(&PluginsConfig::default(), Level::Route, &env)
            .expect("empty section");
        let (a, b) = (bare.chain(&global), bare.chain(&global));
        assert!(run(&a, "a").await.is_ok());
        let shared = run(&b, "b").await.expect_err("one counter for every route");
        assert_eq!(shared.code, ErrorCode::RateLimited);

        let own = section(ONE_PER_HOUR, Level::Route, &env);
        let (c, d) = (own.chain(&global), own.chain(&global));
        assert!(run(&c, "c").await.is_ok());
        assert!(
            run(&d, "d").await.is_ok(),
            "route-level counters are per route"
        );
        assert!(run(&c, "c").await.is_err());
    }

    #[test]
    fn problems_are_placed_under_their_entry() {
        let paths = |yaml: &str| -> Vec<String> {
            section_problems(yaml).into_iter().map(|p| p.path).collect()
        };
        assert_eq!(
            paths("{request_size: {}, concurrency_limit: {key: nope, max: 1}}"),
            ["request_size", "concurrency_limit.key"]
        );
        assert_eq!(paths("rate_limit: []"), ["rate_limit"]);
    }
}
