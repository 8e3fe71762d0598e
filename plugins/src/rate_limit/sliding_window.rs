//! The sliding window: the weighted two-window counter. The previous fixed window's count
//! is weighted by how much of it still overlaps the sliding window, so a client cannot
//! send `limit` at the end of one window and `limit` again at the start of the next.

use super::Outcome;

/// The limits of one sliding-window rule (or of one tier of it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SlidingWindow {
    /// Requests allowed per window.
    pub limit: u64,
    /// The window length in nanoseconds.
    pub window_ns: u64,
}

/// One key's counters: the current fixed window's index and the counts of it and of the
/// window before.
#[derive(Debug, Clone, Copy, Default)]
pub struct WindowState {
    index: u64,
    current: u64,
    previous: u64,
}

impl SlidingWindow {
    /// Nanoseconds after which an untouched key's counters are both zero.
    pub fn idle_ns(&self) -> u64 {
        self.window_ns.saturating_mul(2)
    }

    /// Counts one request at `now_ns` if the weighted count stays within the limit.
    pub fn check(&self, state: &mut WindowState, now_ns: u64) -> Outcome {
        let verdict = self.peek(state, now_ns);
        if verdict.allowed {
            self.count(state, now_ns);
        }
        verdict
    }

    /// Whether one more request fits at `now_ns`; only moves the counters to the window of
    /// `now_ns`, counts nothing.
    pub fn peek(&self, state: &mut WindowState, now_ns: u64) -> Outcome {
        let window = self.window_ns.max(1);
        self.advance(state, now_ns);
        let elapsed = now_ns % window;
        weigh(self.limit, window, elapsed, state.previous, state.current)
    }

    /// Counts one request at `now_ns` (after a [`SlidingWindow::peek`] that allowed it).
    pub fn count(&self, state: &mut WindowState, now_ns: u64) {
        self.advance(state, now_ns);
        state.current += 1;
    }

    /// Gives back a request counted by [`SlidingWindow::count`] at `counted_ns`: from
    /// the window it was counted in, while that window still weighs.
    pub fn refund(&self, state: &mut WindowState, counted_ns: u64) {
        let index = counted_ns / self.window_ns.max(1);
        if state.index == index {
            state.current = state.current.saturating_sub(1);
        } else if state.index == index + 1 {
            state.previous = state.previous.saturating_sub(1);
        }
    }

    fn advance(&self, state: &mut WindowState, now_ns: u64) {
        let index = now_ns / self.window_ns.max(1);
        if index != state.index {
            state.previous = if index == state.index + 1 {
                state.current
            } else {
                0
            };
            state.current = 0;
            state.index = index;
        }
    }
}

/// The verdict for one more request with `previous` and `current` counted so far and
/// `elapsed` nanoseconds into the current window. Shared by the local store and the
/// Redis script's caller, which gets the raw counts back.
pub fn weigh(limit: u64, window: u64, elapsed: u64, previous: u64, current: u64) -> Outcome {
    let (w, e) = (u128::from(window), u128::from(elapsed));
    let (p, c, l) = (u128::from(previous), u128::from(current), u128::from(limit));
    // Counts scaled by the window length: the previous window weighs (w - e) / w.
    let used = p * (w - e) + c * w;
    let allowed = used + w <= l * w;
    let used_after = if allowed { used + w } else { used };
    let remaining = u64::try_from((l * w).saturating_sub(used_after) / w).unwrap_or(0);
    let reset_ns = window - elapsed;
    let retry_after_ns = if allowed {
        0
    } else {
        retry_after(l, w, e, p, c)
    };
    Outcome {
        allowed,
        quota: limit,
        window_ns: window,
        remaining,
        reset_ns,
        retry_after_ns,
    }
}

/// Nanoseconds until the weighted count leaves room for one more request.
fn retry_after(l: u128, w: u128, e: u128, p: u128, c: u128) -> u64 {
    let room = l.saturating_sub(1) * w;
    let wait = if c < l {
        // Within this window, as the previous window's weight shrinks:
        // p * (w - e') + c * w <= room  <=>  e' >= w - (room - c * w) / p.
        let target = w - (room - c * w) / p.max(1);
        target.saturating_sub(e).max(1)
    } else if c == 0 || l == 0 {
        w - e
    } else {
        // In the next window, where this window becomes the previous one.
        let target = w - room / c;
        (w - e) + target
    };
    u64::try_from(wait).unwrap_or(u64::MAX)
}

/// The same algorithm for Redis, on the Redis server's clock, as Lua functions of the
/// rate-limit scripts (`redis.rs`). `window` checks one key, a hash with the window index
/// and both counts (limit; window in µs), and returns the reply {allowed, previous,
/// current (before this request), elapsed_us, index} (the caller weighs the counts with
/// [`weigh`]) and, when allowed, the function that counts; `window_refund` gives back a
/// request counted in window `index`.
pub const REDIS_FUNCTIONS: &str = r#"
local function window(key, now, limit, window)
  local index = math.floor(now / window)
  local elapsed = now - index * window
  local saved = redis.call('HMGET', key, 'i', 'c', 'p')
  local current, previous = 0, 0
  local saved_index = tonumber(saved[1])
  if saved_index == index then
    current, previous = tonumber(saved[2]) or 0, tonumber(saved[3]) or 0
  elseif saved_index == index - 1 then
    previous = tonumber(saved[2]) or 0
  end
  local reply = {0, previous, current, elapsed, index}
  if previous * (window - elapsed) + (current + 1) * window > limit * window then
    return reply, nil
  end
  reply[1] = 1
  return reply, function()
    redis.call('HSET', key, 'i', index, 'c', current + 1, 'p', previous)
    redis.call('PEXPIRE', key, math.ceil(2 * window / 1000) + 1000)
  end
end
local function window_refund(key, index)
  local saved = tonumber(redis.call('HGET', key, 'i'))
  local field = nil
  if saved == index then field = 'c' elseif saved == index + 1 then field = 'p' end
  if field and (tonumber(redis.call('HGET', key, field)) or 0) > 0 then
    redis.call('HINCRBY', key, field, -1)
  end
end
"#;

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;

    #[test]
    fn no_double_burst_across_the_window_boundary() {
        let rule = SlidingWindow {
            limit: 10,
            window_ns: 10 * SECOND,
        };
        let mut state = WindowState::default();
        let end_of_window = 19 * SECOND;
        let passed = (0..20)
            .filter(|_| rule.check(&mut state, end_of_window).allowed)
            .count();
        assert_eq!(passed, 10);
        // Just after the boundary the previous window still weighs ~100%.
        let after = 20 * SECOND + SECOND / 10;
        assert!(!rule.check(&mut state, after).allowed);
        // Halfway through, half of it is left: five more pass.
        let halfway = 25 * SECOND;
        let passed = (0..20)
            .filter(|_| rule.check(&mut state, halfway).allowed)
            .count();
        assert_eq!(passed, 5);
    }

    #[test]
    fn retry_after_points_at_the_first_moment_a_request_passes() {
        let rule = SlidingWindow {
            limit: 4,
            window_ns: 4 * SECOND,
        };
        let mut state = WindowState::default();
        for _ in 0..4 {
            assert!(rule.check(&mut state, 4 * SECOND).allowed);
        }
        let refused = rule.check(&mut state, 5 * SECOND);
        assert!(!refused.allowed);
        let at = 5 * SECOND + refused.retry_after_ns;
        assert!(!rule.check(&mut state, at - SECOND / 100).allowed);
        assert!(rule.check(&mut state, at).allowed);
    }

    #[test]
    fn remaining_counts_down() {
        let rule = SlidingWindow {
            limit: 3,
            window_ns: SECOND,
        };
        let mut state = WindowState::default();
        let remaining: Vec<u64> = (0..4)
            .map(|_| rule.check(&mut state, 0).remaining)
            .collect();
        assert_eq!(remaining, [2, 1, 0, 0]);
    }
}
