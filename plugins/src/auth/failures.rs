//! `auth_failure_limit`: a cap on failed authentication attempts per client IP, so one
//! address cannot try credentials at speed (credential stuffing).
//!
//! Failures are counted in a fixed window with pingora-limits' count-min sketch: memory is
//! bounded whatever the number of addresses, nothing is locked on the request path, and an
//! estimate can only over-count (two addresses sharing every cell), never under-count.

use std::hash::Hash;
use std::net::IpAddr;

use pingora_limits::rate::Rate;
use serde::Deserialize;

use crate::units::Duration;
use crate::{ErrorCode, Problem, Rejection, Retained};

/// `auth_failure_limit:` as written in the configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthFailureLimitConfig {
    /// Failed attempts allowed per client IP in one window.
    pub limit: u32,
    /// The window.
    #[serde(default = "AuthFailureLimitConfig::default_window")]
    pub window: Duration,
}

impl AuthFailureLimitConfig {
    fn default_window() -> Duration {
        Duration(std::time::Duration::from_secs(60))
    }
}

/// Counts refused authentications per client IP and refuses clients over the limit.
pub struct AuthFailureLimit {
    limit: isize,
    window_secs: u64,
    failures: Rate,
}

impl AuthFailureLimit {
    /// Checks the configuration and builds the limit, taking over the counters of the
    /// previous configuration when its limit and window were the same.
    pub fn retained(
        config: &AuthFailureLimitConfig,
        retained: &Retained,
    ) -> Result<std::sync::Arc<Self>, Problem> {
        if config.limit == 0 {
            return Err(Problem::new(
                "auth_failure_limit.limit",
                "must be at least 1",
            ));
        }
        let window = config.window.within(
            "auth_failure_limit.window",
            std::time::Duration::from_secs(1),
            crate::units::LONGEST,
        )?;
        let key = format!("{}/{}", config.limit, window.as_millis());
        Ok(retained.get_or_insert_with(&key, || Self {
            limit: config.limit as isize,
            window_secs: window.as_secs(),
            failures: Rate::new(window),
        }))
    }

    /// A 429 when `client` already failed `limit` times in the current window.
    pub fn check(&self, client: Option<IpAddr>) -> Result<(), Rejection> {
        let Some(client) = client else {
            return Ok(());
        };
        if self.failures.observe(&Key(client), 0) >= self.limit {
            return Err(Rejection::new(
                ErrorCode::RateLimited,
                "too many failed authentication attempts",
            )
            .retry_after(self.window_secs));
        }
        Ok(())
    }

    /// Counts one refused authentication of `client`.
    pub fn record_failure(&self, client: Option<IpAddr>) {
        if let Some(client) = client {
            self.failures.observe(&Key(client), 1);
        }
    }
}

/// Hashes an address with a tag, so its cells differ from other users of the same type.
#[derive(Hash)]
struct Key(IpAddr);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_is_refused_after_limit_failures_and_others_are_not() {
        let config = AuthFailureLimitConfig {
            limit: 3,
            window: Duration(std::time::Duration::from_secs(60)),
        };
        let limit = AuthFailureLimit::retained(&config, &Retained::fresh()).expect("valid");
        let stuffer: IpAddr = "192.0.2.1".parse().expect("ip");
        let other: IpAddr = "192.0.2.2".parse().expect("ip");
        for _ in 0..3 {
            assert!(limit.check(Some(stuffer)).is_ok());
            limit.record_failure(Some(stuffer));
        }
        let refused = limit.check(Some(stuffer)).expect_err("over the limit");
        assert_eq!(refused.code, ErrorCode::RateLimited);
        assert_eq!(refused.retry_after, Some(60));
        assert!(limit.check(Some(other)).is_ok());
        assert!(limit.check(None).is_ok());
    }

    #[test]
    fn zero_and_sub_second_settings_are_refused() {
        let zero = AuthFailureLimitConfig {
            limit: 0,
            window: Duration(std::time::Duration::from_secs(60)),
        };
        assert!(AuthFailureLimit::retained(&zero, &Retained::fresh()).is_err());
        let short = AuthFailureLimitConfig {
            limit: 1,
            window: Duration(std::time::Duration::from_millis(10)),
        };
        assert!(AuthFailureLimit::retained(&short, &Retained::fresh()).is_err());
    }
}
