//! The retry budget (Finagle's `RetryBudget`): each request to a pool deposits
//! `budget_percent`/100 of a retry, each retry withdraws a whole one, and the balance is
//! capped at a small reserve, so retries add at most `budget_percent` on top of the
//! request rate (plus the reserve) however hard the upstream fails: no retry storm.

use std::sync::atomic::{AtomicI64, Ordering::Relaxed};

/// One retry, in the balance's unit.
const RETRY: i64 = 1000;

/// Retries allowed beyond the percentage: what lets a quiet pool retry at all.
pub const RESERVE_RETRIES: i64 = 10;

/// A pool's retry budget. Lock-free; it outlives reloads that keep the percentage.
#[derive(Debug)]
pub struct RetryBudget {
    deposit: i64,
    /// Thousandths of a retry.
    balance: AtomicI64,
}

impl RetryBudget {
    /// A budget of `percent` retries per 100 requests, starting with the full reserve.
    pub fn new(percent: u32) -> Self {
        Self {
            deposit: i64::from(percent) * RETRY / 100,
            balance: AtomicI64::new(RESERVE_RETRIES * RETRY),
        }
    }

    /// Credits one request.
    pub fn deposit(&self) {
        let cap = RESERVE_RETRIES * RETRY;
        let _ = self.balance.fetch_update(Relaxed, Relaxed, |balance| {
            (balance < cap).then(|| (balance + self.deposit).min(cap))
        });
    }

    /// Takes one retry from the budget; false when it is spent.
    pub fn try_withdraw(&self) -> bool {
        self.balance
            .fetch_update(Relaxed, Relaxed, |balance| {
                (balance >= RETRY).then_some(balance - RETRY)
            })
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_stay_within_the_share_plus_the_reserve() {
        let budget = RetryBudget::new(20);
        let mut retries = 0;
        for _ in 0..1000 {
            budget.deposit();
            if budget.try_withdraw() {
                retries += 1;
            }
        }
        // 20% of 1000 requests, plus the reserve (less the one deposit made while full).
        assert!(
            (200..=200 + RESERVE_RETRIES).contains(&retries),
            "{retries}"
        );
    }

    #[test]
    fn the_balance_never_grows_past_the_reserve() {
        let budget = RetryBudget::new(100);
        for _ in 0..1000 {
            budget.deposit();
        }
        let retries = (0..100).filter(|_| budget.try_withdraw()).count() as i64;
        assert_eq!(retries, RESERVE_RETRIES);
    }
}
