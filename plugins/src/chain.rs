//! A route's compiled plugins, run in phase order.

use std::sync::Arc;

use pingora_http::{RequestHeader, ResponseHeader};

use crate::auth::failures::AuthFailureLimit;
use crate::auth::MISSING;
use crate::{Phase, Plugin, PluginCtx, Rejection, Telemetry};

/// The plugins of one route, sorted by [`Phase`], built once at config load.
#[derive(Clone, Default)]
pub struct PluginChain {
    plugins: Arc<[Arc<dyn Plugin>]>,
    auth: Option<Arc<AuthGuard>>,
}

/// What the auth phase of a chain reports to and is limited by.
pub struct AuthGuard {
    /// Where refused authentications are counted.
    pub telemetry: Arc<dyn Telemetry>,
    /// The per-client-IP cap on failed attempts, when configured.
    pub failure_limit: Option<Arc<AuthFailureLimit>>,
}

/// The `rule` label (and access-log `rate_limit`) of a refusal by `auth_failure_limit`.
const FAILURE_LIMIT_RULE: &str = "auth_failure_limit";

/// Reasons that say nothing about guessing credentials: no credential at all, or valid
/// credentials without a scope. They are not counted against the client's failure limit.
fn is_guess(reason: &str) -> bool {
    !matches!(reason, MISSING | "insufficient_scope" | "keys_unavailable")
}

impl PluginChain {
    /// Builds a chain; the order of `plugins` within a phase is kept.
    pub fn new(mut plugins: Vec<Arc<dyn Plugin>>) -> Self {
        plugins.sort_by_key(|plugin| plugin.phase());
        Self {
            plugins: plugins.into(),
            auth: None,
        }
    }

    /// Counts the auth phase's refusals in `guard` and applies its failure limit. Without
    /// a guard, refusals are returned uncounted.
    pub fn with_auth_guard(mut self, guard: Arc<AuthGuard>) -> Self {
        self.auth = Some(guard);
        self
    }

    /// Whether the chain has no plugins at all (the common fast path).
    pub fn is_empty(&self) -> bool {
        self.plugins.is_empty()
    }

    /// The configuration names of the plugins, in run order.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.plugins.iter().map(|plugin| plugin.name())
    }

    /// Runs every request hook in phase order and stops at the first rejection, or at the
    /// first plugin that answers the request itself ([`PluginCtx::answer`]).
    ///
    /// Auth plugins are alternatives: the request passes the auth phase as soon as one of
    /// them accepts it. If all refuse, the most telling refusal is returned (a presented
    /// but bad credential before a missing one), counted once, and the challenges of the
    /// other 401 refusals are added to it.
    pub async fn request(
        &self,
        req: &mut RequestHeader,
        ctx: &mut PluginCtx,
    ) -> Result<(), Rejection> {
        let mut refusals: Vec<(&'static str, Rejection)> = Vec::new();
        let mut auth_started = false;
        let mut auth_passed = false;
        let mut auth_done = false;
        for plugin in self.plugins.iter() {
            let phase = plugin.phase();
            if phase > Phase::Auth && auth_started && !auth_done {
                auth_done = true;
                self.finish_auth(auth_passed, std::mem::take(&mut refusals), ctx)?;
            }
            if phase == Phase::Auth {
                if !auth_started {
                    auth_started = true;
                    self.check_failure_limit(ctx)?;
                }
                if auth_passed {
                    continue;
                }
                match plugin.request(req, ctx).await {
                    Ok(()) => auth_passed = true,
                    Err(refusal) => refusals.push((plugin.name(), refusal)),
                }
                continue;
            }
            plugin.request(req, ctx).await?;
            if ctx.answer.is_some() {
                return Ok(());
            }
        }
        if auth_started && !auth_done {
            self.finish_auth(auth_passed, refusals, ctx)?;
        }
        Ok(())
    }

    fn check_failure_limit(&self, ctx: &mut PluginCtx) -> Result<(), Rejection> {
        let Some(guard) = &self.auth else {
            return Ok(());
        };
        let Some(limit) = &guard.failure_limit else {
            return Ok(());
        };
        limit.check(ctx.client_ip).inspect_err(|_| {
            guard.telemetry.rate_limited(&ctx.route, FAILURE_LIMIT_RULE);
            ctx.rate_limit_rule = Some(FAILURE_LIMIT_RULE.into());
        })
    }

    fn finish_auth(
        &self,
        passed: bool,
        mut refusals: Vec<(&'static str, Rejection)>,
        ctx: &PluginCtx,
    ) -> Result<(), Rejection> {
        if passed || refusals.is_empty() {
            return Ok(());
        }
        let chosen = refusals
            .iter()
            .position(|(_, refusal)| refusal.auth_reason != Some(MISSING))
            .unwrap_or(0);
        let (plugin, mut refusal) = refusals.swap_remove(chosen);
        if refusal.code == crate::ErrorCode::Unauthorized {
            for (_, other) in refusals.iter().filter(|(_, r)| r.code == refusal.code) {
                for (name, value) in &other.headers {
                    if name == http::header::WWW_AUTHENTICATE
                        && !refusal.headers.iter().any(|(n, v)| n == name && v == value)
                    {
                        refusal.headers.push((name.clone(), value.clone()));
                    }
                }
            }
        }
        if let (Some(guard), Some(reason)) = (&self.auth, refusal.auth_reason) {
            guard.telemetry.auth_failure(&ctx.route, plugin, reason);
            if let Some(limit) = guard.failure_limit.as_ref().filter(|_| is_guess(reason)) {
                limit.record_failure(ctx.client_ip);
            }
        }
        Err(refusal)
    }

    /// Runs every request-body hook; `total` counts the body bytes received so far.
    pub fn request_body(&self, total: u64, ctx: &mut PluginCtx) -> Result<(), Rejection> {
        self.plugins
            .iter()
            .try_for_each(|plugin| plugin.request_body(total, ctx))
    }

    /// Lets every plugin adjust the request about to go upstream.
    pub fn upstream_request(&self, req: &mut RequestHeader, ctx: &PluginCtx) {
        for plugin in self.plugins.iter() {
            plugin.upstream_request(req, ctx);
        }
    }

    /// Lets every plugin adjust the response about to go to the client.
    pub fn response(&self, resp: &mut ResponseHeader, ctx: &mut PluginCtx) {
        for plugin in self.plugins.iter() {
            plugin.response(resp, ctx);
        }
    }

    /// Tells every plugin that the request is over.
    pub fn log(&self, ctx: &mut PluginCtx, status: u16) {
        for plugin in self.plugins.iter() {
            plugin.log(ctx, status);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::failures::AuthFailureLimitConfig;
    use crate::{ErrorCode, Retained};
    use std::sync::Mutex;

    /// An auth plugin that refuses with `reason`, or accepts when `reason` is `None`.
    struct FakeAuth(&'static str, Option<&'static str>);

    #[async_trait::async_trait]
    impl Plugin for FakeAuth {
        fn name(&self) -> &'static str {
            self.0
        }
        fn phase(&self) -> Phase {
            Phase::Auth
        }
        async fn request(&self, _: &mut RequestHeader, _: &mut PluginCtx) -> Result<(), Rejection> {
            match self.1 {
                None => Ok(()),
                Some(reason) => Err(crate::auth::bearer_refusal(reason, reason)),
            }
        }
    }

    #[derive(Default)]
    struct Counted(Mutex<Vec<String>>);

    impl Telemetry for Counted {
        fn auth_failure(&self, route: &str, plugin: &'static str, reason: &'static str) {
            self.0
                .lock()
                .expect("lock")
                .push(format!("{route}/{plugin}/{reason}"));
        }
        fn rate_limited(&self, route: &str, rule: &str) {
            self.0
                .lock()
                .expect("lock")
                .push(format!("{route}/429/{rule}"));
        }
    }

    fn chain(plugins: Vec<FakeAuth>, telemetry: &Arc<Counted>, limit: u32) -> PluginChain {
        let config = AuthFailureLimitConfig {
            limit,
            window: crate::units::Duration(std::time::Duration::from_secs(60)),
        };
        let failure_limit =
            AuthFailureLimit::retained(&config, &Retained::fresh()).expect("valid limit");
        PluginChain::new(
            plugins
                .into_iter()
                .map(|p| Arc::new(p) as Arc<dyn Plugin>)
                .collect(),
        )
        .with_auth_guard(Arc::new(AuthGuard {
            telemetry: Arc::clone(telemetry) as Arc<dyn Telemetry>,
            failure_limit: Some(failure_limit),
        }))
    }

    async fn run(chain: &PluginChain) -> Result<(), Rejection> {
        let mut req = RequestHeader::build("GET", b"/", None).expect("request");
        let mut ctx = PluginCtx {
            route: "r".into(),
            client_ip: Some("192.0.2.9".parse().expect("ip")),
            ..PluginCtx::default()
        };
        chain.request(&mut req, &mut ctx).await
    }

    #[tokio::test]
    async fn one_accepting_auth_plugin_is_enough_and_nothing_is_counted() {
        let counted = Arc::new(Counted::default());
        let chain = chain(
            vec![FakeAuth("key_auth", Some(MISSING)), FakeAuth("jwt", None)],
            &counted,
            5,
        );
        assert!(run(&chain).await.is_ok());
        assert!(counted.0.lock().expect("lock").is_empty());
    }

    #[tokio::test]
    async fn the_presented_credentials_refusal_wins_and_carries_both_challenges() {
        let counted = Arc::new(Counted::default());
        let chain = chain(
            vec![
                FakeAuth("key_auth", Some(MISSING)),
                FakeAuth("jwt", Some("expired")),
            ],
            &counted,
            5,
        );
        let refusal = run(&chain).await.expect_err("refused");
        assert_eq!(refusal.auth_reason, Some("expired"));
        assert_eq!(refusal.headers.len(), 2, "{:?}", refusal.headers);
        assert_eq!(*counted.0.lock().expect("lock"), ["r/jwt/expired"]);
    }

    #[tokio::test]
    async fn guesses_count_towards_the_limit_and_missing_credentials_do_not() {
        let counted = Arc::new(Counted::default());
        let missing = chain(vec![FakeAuth("jwt", Some(MISSING))], &counted, 2);
        for _ in 0..5 {
            assert_eq!(
                run(&missing).await.expect_err("refused").code,
                ErrorCode::Unauthorized
            );
        }
        let guessing = chain(vec![FakeAuth("jwt", Some("bad_signature"))], &counted, 2);
        assert_eq!(
            run(&guessing).await.expect_err("1").code,
            ErrorCode::Unauthorized
        );
        assert_eq!(
            run(&guessing).await.expect_err("2").code,
            ErrorCode::Unauthorized
        );
        assert_eq!(
            run(&guessing).await.expect_err("3").code,
            ErrorCode::RateLimited
        );
        assert_eq!(
            counted.0.lock().expect("lock").last().map(String::as_str),
            Some("r/429/auth_failure_limit")
        );
    }
}
