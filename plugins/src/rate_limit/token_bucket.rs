//! The token bucket, as GCRA: a bucket of `burst` tokens refilled at `rate` per `per`,
//! kept as one number (the "theoretical arrival time" of the next request).
//!
//! Time is scaled by `rate` so that one request costs exactly `per` nanoseconds of
//! scaled time: the arithmetic is integral and `burst` requests at once pass exactly.

use super::Outcome;

/// The limits of one token-bucket rule (or of one tier of it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenBucket {
    /// Tokens added per `per_ns`.
    pub rate: u64,
    /// The refill period in nanoseconds.
    pub per_ns: u64,
    /// Bucket capacity: requests that may pass at once.
    pub burst: u64,
}

/// One key's bucket: the scaled time at which the bucket is full again.
#[derive(Debug, Clone, Copy, Default)]
pub struct BucketState {
    tat: u128,
}

impl TokenBucket {
    /// Nanoseconds after which an untouched bucket is full again, so its state can go.
    pub fn idle_ns(&self) -> u64 {
        let full = u128::from(self.burst) * u128::from(self.per_ns) / u128::from(self.rate.max(1));
        u64::try_from(full).unwrap_or(u64::MAX)
    }

    /// Takes one token at `now_ns` if there is one.
    pub fn check(&self, state: &mut BucketState, now_ns: u64) -> Outcome {
        let outcome = self.peek(state, now_ns);
        if outcome.allowed {
            self.count(state, now_ns);
        }
        outcome
    }

    /// Whether a token may be taken at `now_ns`, and what the bucket would hold after it;
    /// the bucket is left as it is.
    pub fn peek(&self, state: &BucketState, now_ns: u64) -> Outcome {
        let rate = u128::from(self.rate.max(1));
        let cost = u128::from(self.per_ns);
        let capacity = u128::from(self.burst) * cost;
        let now = u128::from(now_ns) * rate;
        let tat = state.tat.max(now);
        let after = tat + cost;
        let to_ns = |scaled: u128| u64::try_from(scaled.div_ceil(rate)).unwrap_or(u64::MAX);
        let mut outcome = Outcome {
            allowed: after - now <= capacity,
            quota: self.rate,
            window_ns: self.per_ns,
            remaining: 0,
            reset_ns: to_ns(tat - now),
            retry_after_ns: 0,
        };
        if outcome.allowed {
            outcome.remaining =
                u64::try_from((capacity - (after - now)) / cost.max(1)).unwrap_or(0);
            outcome.reset_ns = to_ns(after - now);
        } else {
            outcome.retry_after_ns = to_ns(after - capacity - now);
        }
        outcome
    }

    /// Takes one token at `now_ns` (after a [`TokenBucket::peek`] that allowed it).
    pub fn count(&self, state: &mut BucketState, now_ns: u64) {
        let now = u128::from(now_ns) * u128::from(self.rate.max(1));
        state.tat = state.tat.max(now) + u128::from(self.per_ns);
    }

    /// Gives back a token taken by [`TokenBucket::count`].
    pub fn refund(&self, state: &mut BucketState) {
        state.tat = state.tat.saturating_sub(u128::from(self.per_ns));
    }
}

/// The same algorithm for Redis, in microseconds of the Redis server's clock (so every
/// gateway instance shares one clock), as Lua functions of the rate-limit scripts
/// (`redis.rs`). `bucket` checks one key (cost: µs per token, may be fractional; capacity:
/// µs) and returns the reply {allowed, remaining, reset_us, retry_us, 0} and, when
/// allowed, the function that counts; `bucket_refund` gives a counted token back.
pub const REDIS_FUNCTIONS: &str = r#"
local function bucket(key, now, cost, capacity)
  local tat = tonumber(redis.call('GET', key)) or now
  if tat < now then tat = now end
  local after = tat + cost
  if after - now > capacity + 0.5 then
    return {0, 0, math.ceil(tat - now), math.ceil(after - capacity - now), 0}, nil
  end
  local reply = {1, math.floor((capacity - (after - now)) / cost + 0.0001), math.ceil(after - now), 0, 0}
  return reply, function()
    redis.call('SET', key, string.format('%.3f', after), 'PX', math.ceil((after - now) / 1000) + 1000)
  end
end
local function bucket_refund(key, cost)
  local tat = tonumber(redis.call('GET', key))
  if tat then redis.call('SET', key, string.format('%.3f', tat - cost), 'KEEPTTL') end
end
"#;

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;

    #[test]
    fn burst_passes_at_once_then_rate_per_period() {
        let bucket = TokenBucket {
            rate: 2,
            per_ns: SECOND,
            burst: 5,
        };
        let mut state = BucketState::default();
        let start = 100 * SECOND;
        let passed = (0..10)
            .filter(|_| bucket.check(&mut state, start).allowed)
            .count();
        assert_eq!(passed, 5);
        // Half a second later one token (rate 2/s) is back, and only one.
        let later = start + SECOND / 2;
        assert!(bucket.check(&mut state, later).allowed);
        assert!(!bucket.check(&mut state, later).allowed);
    }

    #[test]
    fn remaining_counts_down_and_reset_counts_to_full() {
        let bucket = TokenBucket {
            rate: 10,
            per_ns: SECOND,
            burst: 3,
        };
        let mut state = BucketState::default();
        let first = bucket.check(&mut state, SECOND);
        assert_eq!((first.remaining, first.reset_ns), (2, SECOND / 10));
        let second = bucket.check(&mut state, SECOND);
        assert_eq!((second.remaining, second.reset_ns), (1, 2 * SECOND / 10));
        bucket.check(&mut state, SECOND);
        let refused = bucket.check(&mut state, SECOND);
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after_ns, SECOND / 10);
    }

    #[test]
    fn fractional_rates_stay_exact() {
        let bucket = TokenBucket {
            rate: 3,
            per_ns: SECOND,
            burst: 1,
        };
        let mut state = BucketState::default();
        assert!(bucket.check(&mut state, 0).allowed);
        assert!(!bucket.check(&mut state, SECOND / 3).allowed);
        assert!(bucket.check(&mut state, SECOND / 3 + 1).allowed);
    }
}
