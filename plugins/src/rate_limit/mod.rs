//! `rate_limit`: a list of rules, each counting requests by a key with a token bucket or
//! a sliding window, locally or in Redis. A request must pass every rule, and is counted
//! by all of them or by none ([`batch`]); the rule closest to its limit is described in
//! the response headers.

mod batch;
mod headers;
mod key;
mod local;
pub mod redis;
mod sliding_window;
mod token_bucket;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use pingora_http::{RequestHeader, ResponseHeader};
use serde::Deserialize;

pub use self::headers::{seconds, PolicyHeaders, RateLimitHeaders};
pub(crate) use self::key::write_counter_key;
pub use self::local::LocalStore;
pub use self::redis::{BackendError, OnError, RedisBackend, RedisConfig};
pub use self::sliding_window::{SlidingWindow, WindowState};
pub use self::token_bucket::{BucketState, TokenBucket};

use crate::units::{self, Duration};
use crate::{
    Entry, ErrorCode, KeyUse, Level, Phase, Plugin, PluginCtx, PluginEnv, Problem, Rejection,
    RequestKey, Telemetry,
};

/// One rule of `plugins.rate_limit` as written in the configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitRuleConfig {
    /// The rule's name: metric label, access-log value and header policy name.
    pub name: String,
    /// What requests are counted by (`client_ip`, `consumer`, `header:NAME`...).
    pub key: String,
    /// `token_bucket` or `sliding_window`.
    pub algorithm: Algorithm,
    /// token_bucket: tokens added per `per`.
    pub rate: Option<u64>,
    /// token_bucket: the refill period (default 1s).
    pub per: Option<Duration>,
    /// token_bucket: the bucket's capacity (default `rate`).
    pub burst: Option<u64>,
    /// sliding_window: requests per window.
    pub limit: Option<u64>,
    /// sliding_window: the window length.
    pub window: Option<Duration>,
    /// `local` (default) or `redis`.
    #[serde(default)]
    pub backend: Backend,
    /// Limits by consumer tier, replacing `rate`/`burst`/`limit` for that tier's consumers.
    #[serde(default)]
    pub tiers: BTreeMap<String, TierConfig>,
}

/// A tier's replacement limits.
#[derive(Debug, Clone, Default, Deserialize, Hash)]
#[serde(deny_unknown_fields)]
pub struct TierConfig {
    /// token_bucket rate.
    pub rate: Option<u64>,
    /// token_bucket burst (default: the tier's rate when it sets one).
    pub burst: Option<u64>,
    /// sliding_window limit.
    pub limit: Option<u64>,
}

/// Rate-limit algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    /// `burst` at once, then `rate` per `per`.
    TokenBucket,
    /// `limit` per sliding `window` (weighted two-window counter).
    SlidingWindow,
}

/// Where counters live.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// In this process.
    #[default]
    Local,
    /// In the top-level `redis`, shared by every gateway instance.
    Redis,
}

/// The verdict of one rule for one request, and what the headers say about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Whether the request may pass.
    pub allowed: bool,
    /// The quota of the policy (`q`, `X-RateLimit-Limit`): `rate` or `limit`.
    pub quota: u64,
    /// The policy's window (`w`): `per` or `window`.
    pub window_ns: u64,
    /// Requests that may still pass now (`r`, `X-RateLimit-Remaining`).
    pub remaining: u64,
    /// Time until the quota is whole again (`t`, `X-RateLimit-Reset`).
    pub reset_ns: u64,
    /// For a refused request: time until one would pass (`Retry-After`).
    pub retry_after_ns: u64,
}

/// The limits of a rule (or of one tier of it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Limits {
    TokenBucket(TokenBucket),
    SlidingWindow(SlidingWindow),
}

impl Limits {
    /// The policy's quota and window, as the headers describe them.
    fn quota_and_window_ns(&self) -> (u64, u64) {
        match self {
            Limits::TokenBucket(bucket) => (bucket.rate, bucket.per_ns),
            Limits::SlidingWindow(window) => (window.limit, window.window_ns),
        }
    }

    fn idle_ns(&self) -> u64 {
        match self {
            Limits::TokenBucket(bucket) => bucket.idle_ns(),
            Limits::SlidingWindow(window) => window.idle_ns(),
        }
    }
}

/// Where a rule's counters live.
enum Store {
    Local(Arc<batch::LocalCounters>),
    Redis(Arc<RedisBackend>),
}

struct Rule {
    name: Arc<str>,
    key: RequestKey,
    limits: Limits,
    tiers: Vec<(String, Limits)>,
    /// The header values of `limits`, then of each tier in `tiers`' order.
    policies: Vec<PolicyHeaders>,
    store: Store,
    /// Longest time a key's state takes to come to rest, over every tier.
    idle_ns: u64,
}

impl Rule {
    fn limits_for(&self, tier: Option<&str>) -> &Limits {
        tier.and_then(|tier| self.tiers.iter().find(|(name, _)| name == tier))
            .map_or(&self.limits, |(_, limits)| limits)
    }

    fn policy_for(&self, tier: Option<&str>) -> Option<&PolicyHeaders> {
        let index = tier
            .and_then(|tier| self.tiers.iter().position(|(name, _)| name == tier))
            .map_or(0, |i| i + 1);
        self.policies.get(index)
    }

    fn headers(&self, tier: Option<&str>, outcome: Outcome) -> Option<RateLimitHeaders> {
        Some(RateLimitHeaders {
            rule: Arc::clone(&self.name),
            outcome,
            policy: self.policy_for(tier)?.clone(),
        })
    }
}

/// `portcullis:rl:{rule|key}`: the hash tag keeps the key on one cluster slot; long values
/// (arbitrary header contents) are replaced by their SHA-1 so keys stay short.
fn redis_key(rule: &str, key: &[u8]) -> String {
    let key = String::from_utf8_lossy(key);
    if key.len() <= 128 {
        format!("portcullis:rl:{{{rule}|{key}}}")
    } else {
        let digest = sha1_smol::Sha1::from(&*key).digest();
        format!("portcullis:rl:{{{rule}|#{digest}}}")
    }
}

/// The compiled `rate_limit` plugin.
pub struct RateLimit {
    rules: Vec<Rule>,
    /// Route-level rules count per route (their key values are prefixed by the route);
    /// rules of the global `plugins` section share their counters across every route.
    route_level: bool,
    /// Some rule counts in Redis: the request hook may wait.
    in_redis: bool,
    telemetry: Arc<dyn Telemetry>,
}

impl Entry for RateLimit {
    const NAME: &'static str = "rate_limit";
    const PHASE: Phase = Phase::RateLimit;
    type Config = Vec<RateLimitRuleConfig>;

    /// Compiles the rules.
    fn compile(
        configs: &Vec<RateLimitRuleConfig>,
        level: Level,
        env: &PluginEnv,
    ) -> Result<Self, Vec<Problem>> {
        let mut problems = Vec::new();
        let mut rules = Vec::new();
        let mut names = HashSet::new();
        if configs.is_empty() {
            problems.push(Problem::new("", "needs at least one rule"));
        }
        for (i, config) in configs.iter().enumerate() {
            let path = format!("[{i}]");
            if !names.insert(config.name.as_str()) {
                problems.push(Problem::new(
                    format!("{path}.name"),
                    "another rule has this name",
                ));
            }
            match compile_rule(config, &path, env) {
                Ok(rule) => rules.push(rule),
                Err(problem) => problems.push(problem),
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let in_redis = rules
            .iter()
            .any(|rule| matches!(rule.store, Store::Redis(_)));
        Ok(Self {
            rules,
            route_level: level == Level::Route,
            in_redis,
            telemetry: Arc::clone(&env.telemetry),
        })
    }
}

fn compile_rule(
    config: &RateLimitRuleConfig,
    path: &str,
    env: &PluginEnv,
) -> Result<Rule, Problem> {
    let name = &config.name;
    let plain = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
    if name.is_empty() || name.len() > 64 || !name.bytes().all(plain) {
        return Err(Problem::new(
            format!("{path}.name"),
            "use 1-64 letters, digits, '-', '_' or '.'",
        ));
    }
    let key = RequestKey::parse(&config.key, KeyUse::Limit)
        .map_err(|message| Problem::new(format!("{path}.key"), message))?;
    let base = match config.algorithm {
        Algorithm::TokenBucket => {
            let fields = Fields::new(path, "token_bucket");
            fields.foreign(&[
                ("limit", config.limit.is_some()),
                ("window", config.window.is_some()),
            ])?;
            let rate = fields.required("rate", config.rate)?;
            let per_ns = fields.at_least_1ms("per", config.per.unwrap_or(Duration(SECOND)))?;
            let burst = fields.positive("burst", config.burst)?.unwrap_or(rate);
            Limits::TokenBucket(TokenBucket {
                rate,
                per_ns,
                burst,
            })
        }
        Algorithm::SlidingWindow => {
            let fields = Fields::new(path, "sliding_window");
            fields.foreign(&[
                ("rate", config.rate.is_some()),
                ("per", config.per.is_some()),
                ("burst", config.burst.is_some()),
            ])?;
            let limit = fields.required("limit", config.limit)?;
            let window = config
                .window
                .ok_or_else(|| fields.problem("window", "sliding_window needs a window"))?;
            let window_ns = fields.at_least_1ms("window", window)?;
            Limits::SlidingWindow(SlidingWindow { limit, window_ns })
        }
    };
    let mut tiers = Vec::new();
    for (tier, overrides) in &config.tiers {
        let tier_path = format!("{path}.tiers.{tier}");
        let limits = match base {
            Limits::TokenBucket(bucket) => {
                let fields = Fields::new(&tier_path, "token_bucket");
                fields.foreign(&[("limit", overrides.limit.is_some())])?;
                let rate = fields.positive("rate", overrides.rate)?;
                // A tier that sets its rate gets a burst of that rate by default.
                let default_burst = rate.unwrap_or(bucket.burst);
                Limits::TokenBucket(TokenBucket {
                    rate: rate.unwrap_or(bucket.rate),
                    burst: fields
                        .positive("burst", overrides.burst)?
                        .unwrap_or(default_burst),
                    ..bucket
                })
            }
            Limits::SlidingWindow(window) => {
                let fields = Fields::new(&tier_path, "sliding_window");
                fields.foreign(&[
                    ("rate", overrides.rate.is_some()),
                    ("burst", overrides.burst.is_some()),
                ])?;
                let limit = fields
                    .positive("limit", overrides.limit)?
                    .unwrap_or(window.limit);
                Limits::SlidingWindow(SlidingWindow { limit, ..window })
            }
        };
        tiers.push((tier.clone(), limits));
    }
    let idle_ns = tiers
        .iter()
        .map(|(_, limits)| limits.idle_ns())
        .fold(base.idle_ns(), u64::max);
    // Counters carry over a reload only while everything that gives them meaning is unchanged.
    let identity = format!(
        "{}|{name}|{:?}|{base:?}|{tiers:?}",
        RateLimit::NAME,
        config.key
    );
    let store = match config.backend {
        Backend::Redis => Store::Redis(env.redis.clone().ok_or_else(|| {
            Problem::new(
                format!("{path}.backend"),
                "backend redis needs the top-level redis section",
            )
        })?),
        Backend::Local => Store::Local(
            env.retained
                .get_or_insert_with(&identity, LocalStore::default),
        ),
    };
    let policies = std::iter::once(&base)
        .chain(tiers.iter().map(|(_, limits)| limits))
        .map(|limits| {
            let (quota, window_ns) = limits.quota_and_window_ns();
            PolicyHeaders::new(name, quota, window_ns).map_err(|_| {
                Problem::new(
                    format!("{path}.name"),
                    "must be usable in a header value (visible ASCII)",
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Rule {
        name: name.as_str().into(),
        key,
        limits: base,
        tiers,
        policies,
        store,
        idle_ns,
    })
}

const SECOND: std::time::Duration = std::time::Duration::from_secs(1);

/// The largest rate, burst or limit: a billion requests per period keeps every count and
/// a Redis bucket's cost per token (at least a nanosecond of `per`) exact.
const MOST_REQUESTS: u64 = 1_000_000_000;

/// The checks of a rule's (or a tier's) fields for one algorithm.
struct Fields<'a> {
    path: &'a str,
    algorithm: &'static str,
}

impl<'a> Fields<'a> {
    fn new(path: &'a str, algorithm: &'static str) -> Self {
        Self { path, algorithm }
    }

    fn problem(&self, field: &str, message: impl Into<String>) -> Problem {
        Problem::new(format!("{}.{field}", self.path), message)
    }

    /// A problem at the first of `fields` that is set: they belong to the other algorithm.
    fn foreign(&self, fields: &[(&str, bool)]) -> Result<(), Problem> {
        match fields.iter().find(|(_, set)| *set) {
            Some((field, _)) => {
                Err(self.problem(field, format!("not a field of {}", self.algorithm)))
            }
            None => Ok(()),
        }
    }

    /// A count of requests or tokens: at least 1, at most [`MOST_REQUESTS`].
    fn positive(&self, field: &str, value: Option<u64>) -> Result<Option<u64>, Problem> {
        let path = format!("{}.{field}", self.path);
        value
            .map(|value| units::within(&path, value, 1, MOST_REQUESTS))
            .transpose()
    }

    fn required(&self, field: &str, value: Option<u64>) -> Result<u64, Problem> {
        self.positive(field, value)?
            .ok_or_else(|| self.problem(field, format!("{} needs a {field}", self.algorithm)))
    }

    /// A period in nanoseconds: at least 1ms, at most [`units::LONGEST`].
    fn at_least_1ms(&self, field: &str, value: Duration) -> Result<u64, Problem> {
        let path = format!("{}.{field}", self.path);
        let period = value.within(&path, std::time::Duration::from_millis(1), units::LONGEST)?;
        Ok(u64::try_from(period.as_nanos()).unwrap_or(u64::MAX))
    }
}

/// Which of two allowed outcomes is closer to its limit: the smaller share remaining.
fn closer(candidate: &Outcome, current: &Outcome) -> bool {
    u128::from(candidate.remaining) * u128::from(current.quota.max(1))
        < u128::from(current.remaining) * u128::from(candidate.quota.max(1))
}

#[async_trait::async_trait]
impl Plugin for RateLimit {
    async fn request(&self, req: &mut RequestHeader, ctx: &mut PluginCtx) -> Result<(), Rejection> {
        let keys = self.keys(req, ctx);
        let verdict = batch::count(
            &self.rules,
            &keys,
            ctx.consumer_tier.as_deref(),
            &*self.telemetry,
            &mut ctx.times,
        )
        .await;
        self.conclude(verdict, ctx)
    }

    /// Rules that all count locally decide without waiting.
    fn request_now(
        &self,
        req: &mut RequestHeader,
        ctx: &mut PluginCtx,
    ) -> Option<Result<(), Rejection>> {
        if self.in_redis {
            return None;
        }
        let keys = self.keys(req, ctx);
        let verdict = batch::count_local(&self.rules, &keys, ctx.consumer_tier.as_deref())?;
        Some(self.conclude(verdict, ctx))
    }

    fn response(&self, resp: &mut ResponseHeader, ctx: &mut PluginCtx) {
        if let Some(headers) = ctx.extensions.get::<RateLimitHeaders>() {
            headers.apply(resp);
        }
    }
}

impl RateLimit {
    /// The counter key of each rule for this request.
    fn keys(&self, req: &RequestHeader, ctx: &PluginCtx) -> batch::Keys {
        let mut keys = batch::Keys::default();
        let mut key = Vec::with_capacity(64);
        for rule in &self.rules {
            write_counter_key(&rule.key, self.route_level, req, ctx, &mut key);
            keys.push(&key);
        }
        keys
    }

    /// The request's fate from the rules' verdict: headers for the response of the rule
    /// closest to its limit, or the refusal.
    fn conclude(&self, verdict: batch::Verdict, ctx: &mut PluginCtx) -> Result<(), Rejection> {
        match verdict {
            batch::Verdict::Counted(outcomes) => {
                let closest = outcomes
                    .into_iter()
                    .reduce(|best, candidate| {
                        if closer(&candidate.1, &best.1) {
                            candidate
                        } else {
                            best
                        }
                    })
                    .and_then(|(i, outcome)| {
                        self.rules
                            .get(i)?
                            .headers(ctx.consumer_tier.as_deref(), outcome)
                    });
                if let Some(headers) = closest {
                    ctx.extensions.insert(headers);
                }
                Ok(())
            }
            batch::Verdict::Refused(i, outcome) => {
                let name = self
                    .rules
                    .get(i)
                    .map_or_else(|| Arc::from(""), |rule| Arc::clone(&rule.name));
                self.telemetry.rate_limited(&ctx.route, &name);
                ctx.rate_limit_rule = Some(Arc::clone(&name));
                if let Some(headers) = self
                    .rules
                    .get(i)
                    .and_then(|rule| rule.headers(ctx.consumer_tier.as_deref(), outcome))
                {
                    ctx.extensions.insert(headers);
                }
                let retry_after = seconds(outcome.retry_after_ns).max(1);
                Err(Rejection::new(
                    ErrorCode::RateLimited,
                    format!("rate limit {name} exceeded"),
                )
                .retry_after(retry_after))
            }
            batch::Verdict::BackendDown => Err(Rejection::new(
                ErrorCode::RateLimitBackendDown,
                "the rate-limit backend is unavailable",
            )
            .retry_after(1)),
        }
    }
}

#[cfg(test)]
mod tests;
