//! A route's compiled plugins, split at build time into the plugins that run before
//! authentication, the auth group (of which any one may accept the request), and the
//! plugins that run after it.

use std::ops::Range;
use std::sync::Arc;

use pingora_http::{RequestHeader, ResponseHeader};

use crate::auth::failures::AuthFailureLimit;
use crate::auth::MISSING;
use crate::phase_times::{AuthTime, Interval};
use crate::{Entry, ErrorCode, Phase, Plugin, PluginCtx, Rejection, Telemetry};

/// One plugin of a chain, with the name and phase the chain orders and reports it by.
#[derive(Clone)]
pub(crate) struct Step {
    name: &'static str,
    phase: Phase,
    plugin: Arc<dyn Plugin>,
}

impl Step {
    /// The step of a compiled `plugins:` entry.
    pub(crate) fn of<P: Entry>(plugin: P) -> Self {
        Self {
            name: P::NAME,
            phase: P::PHASE,
            plugin: Arc::new(plugin),
        }
    }
}

/// The plugins of one route, sorted by [`Phase`], built once at config load.
#[derive(Clone, Default)]
pub struct PluginChain {
    steps: Arc<[Step]>,
    /// Where the auth group is in `steps`: the steps before it run first, then the group,
    /// then the steps after it.
    auth: Range<usize>,
    /// Only set when the auth group is not empty.
    guard: Option<Arc<AuthGuard>>,
}

/// What the auth phase of a chain reports to and is limited by.
pub(crate) struct AuthGuard {
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
    /// Builds a chain; the order of `steps` within a phase is kept.
    pub(crate) fn new(mut steps: Vec<Step>) -> Self {
        steps.sort_by_key(|step| step.phase);
        let start = steps.partition_point(|step| step.phase < Phase::Auth);
        let end = steps.partition_point(|step| step.phase <= Phase::Auth);
        Self {
            steps: steps.into(),
            auth: start..end,
            guard: None,
        }
    }

    /// Counts the auth group's refusals in `guard` and applies its failure limit. A chain
    /// without auth plugins has no auth phase and keeps no guard; without a guard,
    /// refusals are returned uncounted.
    pub(crate) fn with_auth_guard(mut self, guard: Arc<AuthGuard>) -> Self {
        if !self.auth.is_empty() {
            self.guard = Some(guard);
        }
        self
    }

    /// Whether the chain has no plugins at all (the common fast path).
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// The configuration names of the plugins, in run order.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.steps.iter().map(|step| step.name)
    }

    /// Runs the request hooks in phase order and stops at the first rejection, or at the
    /// first plugin that answers the request itself ([`PluginCtx::answer`]): the plugins
    /// before the auth group, the auth group, then the plugins after it.
    pub async fn request(
        &self,
        req: &mut RequestHeader,
        ctx: &mut PluginCtx,
    ) -> Result<(), Rejection> {
        let (before, after) = (&self.steps[..self.auth.start], &self.steps[self.auth.end..]);
        run_until_answered(before, req, ctx).await?;
        if ctx.answer.is_some() {
            return Ok(());
        }
        self.authenticate(req, ctx).await?;
        run_until_answered(after, req, ctx).await
    }

    /// The auth group: the request passes as soon as one of its plugins accepts it. If
    /// all refuse, the most telling refusal is returned (a presented but bad credential
    /// before a missing one), counted once, and the challenges of the other 401 refusals
    /// are added to it.
    async fn authenticate(
        &self,
        req: &mut RequestHeader,
        ctx: &mut PluginCtx,
    ) -> Result<(), Rejection> {
        let group = &self.steps[self.auth.clone()];
        if group.is_empty() {
            return Ok(());
        }
        let start = ctx.times.now();
        let verdict = self.run_auth_group(group, req, ctx).await;
        if let Some(start) = start {
            let (plugin, outcome) = match &verdict {
                Ok(plugin) => (*plugin, "accepted"),
                Err((plugin, refusal)) => (*plugin, refusal.auth_reason.unwrap_or("refused")),
            };
            ctx.times.auth = Some(AuthTime {
                interval: Interval::since(start),
                plugin,
                outcome,
            });
        }
        verdict.map(drop).map_err(|(_, refusal)| refusal)
    }

    /// The auth group's verdict with the plugin that decided it (`auth_failure_limit`
    /// when the client's failure limit refused before any plugin ran).
    async fn run_auth_group(
        &self,
        group: &[Step],
        req: &mut RequestHeader,
        ctx: &mut PluginCtx,
    ) -> Result<&'static str, (&'static str, Rejection)> {
        self.check_failure_limit(ctx)
            .map_err(|refusal| (FAILURE_LIMIT_RULE, refusal))?;
        let mut refusals = Vec::new();
        for step in group {
            let verdict = match step.plugin.request_now(req, ctx) {
                Some(verdict) => verdict,
                None => step.plugin.request(req, ctx).await,
            };
            match verdict {
                Ok(()) => return Ok(step.name),
                // Credentials the upstream could read differently end the group: no
                // other plugin may accept the request.
                Err(refusal) if refusal.code == ErrorCode::BadRequest => {
                    return Err(self.refusal(vec![(step.name, refusal)], ctx));
                }
                Err(refusal) => refusals.push((step.name, refusal)),
            }
        }
        Err(self.refusal(refusals, ctx))
    }

    fn check_failure_limit(&self, ctx: &mut PluginCtx) -> Result<(), Rejection> {
        let Some(guard) = &self.guard else {
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

    /// The refusal of the whole group, from the refusals of each of its (one or more)
    /// plugins, with the plugin whose refusal it is.
    fn refusal(
        &self,
        mut refusals: Vec<(&'static str, Rejection)>,
        ctx: &PluginCtx,
    ) -> (&'static str, Rejection) {
        let chosen = refusals
            .iter()
            .position(|(_, refusal)| refusal.auth_reason != Some(MISSING))
            .unwrap_or(0);
        let (plugin, mut refusal) = refusals.swap_remove(chosen);
        if refusal.code == ErrorCode::Unauthorized {
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
        if let (Some(guard), Some(reason)) = (&self.guard, refusal.auth_reason) {
            guard.telemetry.auth_failure(&ctx.route, plugin, reason);
            if let Some(limit) = guard.failure_limit.as_ref().filter(|_| is_guess(reason)) {
                limit.record_failure(ctx.client_ip);
            }
        }
        (plugin, refusal)
    }

    /// Runs every request-body hook; `total` counts the body bytes received so far.
    pub fn request_body(&self, total: u64, ctx: &mut PluginCtx) -> Result<(), Rejection> {
        self.plugins()
            .try_for_each(|plugin| plugin.request_body(total, ctx))
    }

    /// Lets every plugin adjust the request about to go upstream.
    pub fn upstream_request(&self, req: &mut RequestHeader, ctx: &PluginCtx) {
        self.plugins()
            .for_each(|plugin| plugin.upstream_request(req, ctx));
    }

    /// Lets every plugin adjust the response about to go to the client.
    pub fn response(&self, resp: &mut ResponseHeader, ctx: &mut PluginCtx) {
        self.plugins().for_each(|plugin| plugin.response(resp, ctx));
    }

    /// Tells every plugin that the request is over.
    pub fn log(&self, ctx: &mut PluginCtx, status: u16) {
        self.plugins().for_each(|plugin| plugin.log(ctx, status));
    }

    fn plugins(&self) -> impl Iterator<Item = &dyn Plugin> {
        self.steps.iter().map(|step| &*step.plugin)
    }
}

/// Runs the request hooks of `steps` in order, up to the first rejection or answer.
async fn run_until_answered(
    steps: &[Step],
    req: &mut RequestHeader,
    ctx: &mut PluginCtx,
) -> Result<(), Rejection> {
    for step in steps {
        let start = (step.phase == Phase::RateLimit)
            .then(|| ctx.times.now())
            .flatten();
        let verdict = match step.plugin.request_now(req, ctx) {
            Some(verdict) => verdict,
            None => step.plugin.request(req, ctx).await,
        };
        if let Some(start) = start {
            // Several rate_limit steps (global and route) make one phase.
            let began = ctx.times.rate_limit.map_or(start, |phase| phase.start);
            ctx.times.rate_limit = Some(Interval::since(began));
        }
        verdict?;
        if ctx.answer.is_some() {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::failures::AuthFailureLimitConfig;
    use crate::{ErrorCode, Retained};
    use std::sync::Mutex;

    /// An auth plugin named `name` that refuses with `reason`, or accepts when `reason` is
    /// `None`.
    fn fake_auth(name: &'static str, reason: Option<&'static str>) -> Step {
        fake(
            name,
            Phase::Auth,
            reason.map(|r| crate::auth::bearer_refusal(r, r)),
        )
    }

    /// A plugin of `phase` that refuses with `refusal`, or accepts.
    fn fake(name: &'static str, phase: Phase, refusal: Option<Rejection>) -> Step {
        Step {
            name,
            phase,
            plugin: Arc::new(Fake(refusal)),
        }
    }

    struct Fake(Option<Rejection>);

    #[async_trait::async_trait]
    impl Plugin for Fake {
        async fn request(&self, _: &mut RequestHeader, _: &mut PluginCtx) -> Result<(), Rejection> {
            match &self.0 {
                None => Ok(()),
                Some(refusal) => Err(refusal.clone()),
            }
        }
    }

    /// A plugin that decides now (`Some`) or only when awaited (`None`: refuses then).
    struct NowOrLater(Option<Result<(), Rejection>>);

    #[async_trait::async_trait]
    impl Plugin for NowOrLater {
        async fn request(&self, _: &mut RequestHeader, _: &mut PluginCtx) -> Result<(), Rejection> {
            assert!(self.0.is_none(), "awaited although it decided now");
            Err(Rejection::new(ErrorCode::Forbidden, "decided later"))
        }

        fn request_now(
            &self,
            _: &mut RequestHeader,
            _: &mut PluginCtx,
        ) -> Option<Result<(), Rejection>> {
            self.0.clone()
        }
    }

    fn now_or_later(phase: Phase, verdict: Option<Result<(), Rejection>>) -> Step {
        Step {
            name: "now_or_later",
            phase,
            plugin: Arc::new(NowOrLater(verdict)),
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

    fn chain(steps: Vec<Step>, telemetry: &Arc<Counted>, limit: u32) -> PluginChain {
        let config = AuthFailureLimitConfig {
            limit,
            window: crate::units::Duration(std::time::Duration::from_secs(60)),
        };
        let failure_limit =
            AuthFailureLimit::retained(&config, &Retained::fresh()).expect("valid limit");
        PluginChain::new(steps).with_auth_guard(Arc::new(AuthGuard {
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
            vec![fake_auth("key_auth", Some(MISSING)), fake_auth("jwt", None)],
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
                fake_auth("key_auth", Some(MISSING)),
                fake_auth("jwt", Some("expired")),
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
        let missing = chain(vec![fake_auth("jwt", Some(MISSING))], &counted, 2);
        for _ in 0..5 {
            assert_eq!(
                run(&missing).await.expect_err("refused").code,
                ErrorCode::Unauthorized
            );
        }
        let guessing = chain(vec![fake_auth("jwt", Some("bad_signature"))], &counted, 2);
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

    #[tokio::test]
    async fn a_refusal_before_the_auth_group_skips_it_and_nothing_is_counted() {
        let counted = Arc::new(Counted::default());
        let too_large = Rejection::new(ErrorCode::PayloadTooLarge, "too large");
        let chain = chain(
            vec![
                fake_auth("jwt", Some("bad_signature")),
                fake("limit", Phase::RateLimit, None),
                fake("size", Phase::Admission, Some(too_large)),
            ],
            &counted,
            1,
        );
        assert_eq!(chain.names().collect::<Vec<_>>(), ["size", "jwt", "limit"]);
        for _ in 0..3 {
            let refusal = run(&chain).await.expect_err("refused before auth");
            assert_eq!(refusal.code, ErrorCode::PayloadTooLarge);
        }
        assert!(counted.0.lock().expect("lock").is_empty());
    }

    #[tokio::test]
    async fn the_auth_group_refusal_stops_the_plugins_after_it() {
        let counted = Arc::new(Counted::default());
        let limited = Rejection::new(ErrorCode::RateLimited, "limited");
        let chain = chain(
            vec![
                fake("limit", Phase::RateLimit, Some(limited)),
                fake_auth("jwt", Some(MISSING)),
            ],
            &counted,
            5,
        );
        let refusal = run(&chain).await.expect_err("refused");
        assert_eq!(refusal.code, ErrorCode::Unauthorized);
    }

    #[tokio::test]
    async fn a_chain_without_auth_plugins_has_no_auth_guard() {
        let counted = Arc::new(Counted::default());
        let guessing = chain(vec![fake_auth("jwt", Some("bad_signature"))], &counted, 1);
        assert!(run(&guessing).await.is_err());
        assert_eq!(
            run(&guessing).await.expect_err("over the limit").code,
            ErrorCode::RateLimited
        );
        // The same guard (the client is over its limit) on a chain without auth plugins.
        let guard = guessing.guard.clone().expect("an auth group has a guard");
        let open =
            PluginChain::new(vec![fake("limit", Phase::RateLimit, None)]).with_auth_guard(guard);
        assert!(open.guard.is_none());
        let counted_before = counted.0.lock().expect("lock").len();
        assert!(run(&open).await.is_ok());
        assert_eq!(counted.0.lock().expect("lock").len(), counted_before);
    }

    #[tokio::test]
    async fn a_verdict_given_now_is_not_awaited_and_one_that_waits_is() {
        let telemetry = Arc::new(Counted::default());
        for phase in [Phase::Auth, Phase::RateLimit] {
            let now = chain(vec![now_or_later(phase, Some(Ok(())))], &telemetry, 10);
            assert!(run(&now).await.is_ok());
            let refused = Rejection::new(ErrorCode::RateLimited, "now");
            let now = chain(
                vec![now_or_later(phase, Some(Err(refused)))],
                &telemetry,
                10,
            );
            let verdict = run(&now).await;
            assert_eq!(verdict.map_err(|r| r.code), Err(ErrorCode::RateLimited));
            let later = chain(vec![now_or_later(phase, None)], &telemetry, 10);
            let verdict = run(&later).await;
            assert_eq!(verdict.map_err(|r| r.code), Err(ErrorCode::Forbidden));
        }
    }
}
