//! Canary routing: a route sends `weight` percent of its traffic to another pool.
//!
//! With `sticky_on`, the variant is a pure function of the sticky value: its hash, taken
//! modulo 10 000, is compared with `weight × 100`. So one user always sees the same
//! variant, the choice survives restarts and reloads (the hash is fixed, not seeded),
//! and raising the weight only adds users to the canary: everyone canary at 5% is
//! still canary at 10%.

use std::sync::Arc;

use http::HeaderName;
use pingora_http::RequestHeader;
use portcullis_plugins::{KeyUse, PluginCtx, RequestKey};

use crate::config::{verdict, CanaryConfig, Problem};
use crate::model::upstream::Upstream;

/// Which pool a request went to, as the upstream (`X-Portcullis-Variant`), the metrics
/// and the access log see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// The route's own upstream.
    Stable,
    /// The canary upstream.
    Canary,
}

impl Variant {
    /// `stable` or `canary`.
    pub fn as_str(self) -> &'static str {
        match self {
            Variant::Stable => "stable",
            Variant::Canary => "canary",
        }
    }
}

/// Buckets the sticky hash falls into; a weight of 1% is 100 of them.
const BUCKETS: u64 = 10_000;

/// A route's canary split, compiled.
pub struct Canary {
    /// The canary pool.
    pub upstream: Arc<Upstream>,
    /// Buckets (of 10 000) that go to the canary.
    threshold: u64,
    /// What keeps a user on one variant; `None` draws every request on its own.
    sticky_on: Option<RequestKey>,
    force_header: Option<HeaderName>,
}

impl Canary {
    /// Checks and compiles `config`; `upstream` is the canary pool, already looked up
    /// (when it is `None` the caller has reported why, and only `config`'s own problems
    /// are added).
    pub fn compile(
        config: &CanaryConfig,
        upstream: Option<Arc<Upstream>>,
        path: &str,
    ) -> Result<Self, Vec<Problem>> {
        let mut problems = Vec::new();
        if !(0.0..=100.0).contains(&config.weight) {
            problems.push(Problem::new(
                format!("{path}.weight"),
                "must be between 0 and 100",
            ));
        }
        let sticky_on = sticky_key(config.sticky_on.as_deref(), path, &mut problems);
        let force_header = match config.force_header.as_deref() {
            None => None,
            Some(name) => match HeaderName::from_bytes(name.as_bytes()) {
                Ok(name) => Some(name),
                Err(_) => {
                    problems.push(Problem::new(
                        format!("{path}.force_header"),
                        format!("{name:?} is not a valid header name"),
                    ));
                    None
                }
            },
        };
        let Some(upstream) = upstream else {
            return Err(problems);
        };
        let canary = Self {
            upstream,
            threshold: (config.weight * 100.0).round() as u64,
            sticky_on,
            force_header,
        };
        verdict(canary, problems)
    }

    /// The variant for this request: forced by the force header, else by the sticky
    /// value's bucket, else drawn at random. `key` is the request's reused key buffer.
    pub fn choose(&self, req: &RequestHeader, ctx: &PluginCtx, key: &mut Vec<u8>) -> Variant {
        if let Some(forced) = self
            .force_header
            .as_ref()
            .and_then(|name| req.headers.get(name))
        {
            let forced = forced.as_bytes();
            if forced.eq_ignore_ascii_case(b"always") {
                return Variant::Canary;
            }
            if forced.eq_ignore_ascii_case(b"never") {
                return Variant::Stable;
            }
        }
        key.clear();
        let sticky = (self.sticky_on.as_ref()).is_some_and(|on| on.write_value(req, ctx, key));
        let bucket = if sticky {
            sticky_bucket(key)
        } else {
            use rand::Rng;
            rand::thread_rng().gen_range(0..BUCKETS)
        };
        if bucket < self.threshold {
            Variant::Canary
        } else {
            Variant::Stable
        }
    }

    /// The percentage of traffic sent to the canary (to 0.01).
    pub fn weight(&self) -> f64 {
        self.threshold as f64 * 100.0 / BUCKETS as f64
    }

    /// The force header, which the upstream does not need to see.
    pub fn force_header(&self) -> Option<&HeaderName> {
        self.force_header.as_ref()
    }
}

/// The `sticky_on` key at `{path}.sticky_on`, when set; a key that does not parse is a
/// problem there (canary and mirror sample clients the same way).
pub(crate) fn sticky_key(
    value: Option<&str>,
    path: &str,
    problems: &mut Vec<Problem>,
) -> Option<RequestKey> {
    match RequestKey::parse(value?, KeyUse::Affinity) {
        Ok(key) => Some(key),
        Err(message) => {
            problems.push(Problem::new(format!("{path}.sticky_on"), message));
            None
        }
    }
}

/// The bucket (0..10 000) of a sticky value: FNV-1a, then MurmurHash3's finalizer so
/// that similar values spread evenly. Fixed, so every process agrees.
pub fn sticky_bucket(value: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in value {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    hash ^= hash >> 33;
    hash % BUCKETS
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::request::testing::request;

    fn canary(weight: f64, sticky_on: &str) -> Canary {
        Canary {
            upstream: Arc::new(crate::model::upstream::test_pool("canary")),
            threshold: (weight * 100.0).round() as u64,
            sticky_on: RequestKey::parse(sticky_on, KeyUse::Affinity).ok(),
            force_header: Some(HeaderName::from_static("x-canary")),
        }
    }

    fn consumer_ctx(consumer: &str) -> PluginCtx {
        PluginCtx {
            consumer: Some(consumer.into()),
            ..PluginCtx::default()
        }
    }

    #[test]
    fn a_consumer_always_sees_the_same_variant() {
        let canary = canary(50.0, "consumer");
        let req = request(&[]);
        for user in 0..100 {
            let ctx = consumer_ctx(&format!("user-{user}"));
            let first = canary.choose(&req, &ctx, &mut Vec::new());
            assert!((0..20).all(|_| canary.choose(&req, &ctx, &mut Vec::new()) == first));
        }
    }

    #[test]
    fn raising_the_weight_keeps_every_canary_user() {
        let (five, ten) = (canary(5.0, "consumer"), canary(10.0, "consumer"));
        let req = request(&[]);
        let users: Vec<_> = (0..5000).map(|i| consumer_ctx(&format!("u{i}"))).collect();
        let at = |c: &Canary| -> Vec<bool> {
            users
                .iter()
                .map(|ctx| c.choose(&req, ctx, &mut Vec::new()) == Variant::Canary)
                .collect()
        };
        let (at_five, at_ten) = (at(&five), at(&ten));
        assert!(at_five.iter().zip(&at_ten).all(|(five, ten)| !five || *ten));
        let count = |v: &[bool]| v.iter().filter(|c| **c).count();
        assert!(
            (200..=300).contains(&count(&at_five)),
            "{}",
            count(&at_five)
        );
        assert!((400..=600).contains(&count(&at_ten)), "{}", count(&at_ten));
    }

    #[test]
    fn jwt_claims_are_sticky_keys() {
        let canary = canary(50.0, "jwt:sub");
        let req = request(&[]);
        let split: Vec<_> = (0..200)
            .map(|i| {
                let mut claims = serde_json::Map::new();
                claims.insert("sub".into(), format!("user-{i}").into());
                let ctx = PluginCtx {
                    claims: Some(Arc::new(claims)),
                    ..PluginCtx::default()
                };
                let first = canary.choose(&req, &ctx, &mut Vec::new());
                assert_eq!(canary.choose(&req, &ctx, &mut Vec::new()), first);
                first
            })
            .collect();
        assert!(split.contains(&Variant::Canary) && split.contains(&Variant::Stable));
    }

    #[test]
    fn the_force_header_overrides_the_weight() {
        let (none, all) = (canary(0.0, "consumer"), canary(100.0, "consumer"));
        let ctx = consumer_ctx("someone");
        let always = request(&[("X-Canary", "always")]);
        let never = request(&[("X-Canary", "Never")]);
        assert_eq!(none.choose(&always, &ctx, &mut Vec::new()), Variant::Canary);
        assert_eq!(all.choose(&never, &ctx, &mut Vec::new()), Variant::Stable);
        assert_eq!(
            all.choose(&request(&[]), &ctx, &mut Vec::new()),
            Variant::Canary
        );
        assert_eq!(
            none.choose(&request(&[]), &ctx, &mut Vec::new()),
            Variant::Stable
        );
    }
}
