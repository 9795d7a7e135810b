//! What replaying stored history costs a user: each page of stored messages a
//! subscription reads counts against `REPLAY_RATE_LIMIT` pages per minute,
//! so subscribing again and again cannot turn a small frame into megabytes
//! of replay. The first page of a subscribe is refused when the budget is
//! spent (`rate_limited`); further pages of a long history wait for it.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

use super::ServiceError;

/// Messages read per page of replay.
pub const REPLAY_PAGE: u64 = 200;

type KeyedLimiter = RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock>;

/// Each user's replay allowance, in pages; unlimited when built with 0.
#[derive(Clone)]
pub struct ReplayBudget {
    limiter: Option<Arc<KeyedLimiter>>,
}

impl ReplayBudget {
    /// `pages_per_minute` per user, with as many at once; 0 for no limit.
    pub fn new(pages_per_minute: u32) -> Self {
        let limiter = NonZeroU32::new(pages_per_minute).map(|pages| {
            let limiter = Arc::new(RateLimiter::keyed(Quota::per_minute(pages)));
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(prune(Arc::downgrade(&limiter)));
            }
            limiter
        });
        Self { limiter }
    }

    /// Charges the first page of a replay: refused when the user's budget is spent.
    pub fn charge_first(&self, user_id: &str) -> Result<(), ServiceError> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        limiter
            .check_key(&user_id.to_owned())
            .map_err(|not_until| ServiceError::RateLimited {
                message: "too many subscribes: history replay is rate limited",
                retry_after: not_until.wait_time_from(DefaultClock::default().now()),
            })
    }

    /// Charges a further page of a replay, waiting for the budget.
    pub async fn charge_next(&self, user_id: &str) {
        if let Some(limiter) = &self.limiter {
            limiter.until_key_ready(&user_id.to_owned()).await;
        }
    }
}

async fn prune(limiter: std::sync::Weak<KeyedLimiter>) {
    let mut ticks = tokio::time::interval(Duration::from_secs(60));
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let Some(limiter) = limiter.upgrade() else { return };
        limiter.retain_recent();
        limiter.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn first_pages_beyond_the_budget_are_refused_with_a_retry_hint() {
        let budget = ReplayBudget::new(2);
        budget.charge_first("u1").expect("first");
        budget.charge_first("u1").expect("second");
        match budget.charge_first("u1") {
            Err(ServiceError::RateLimited { retry_after, .. }) => {
                assert!(retry_after > Duration::ZERO && retry_after <= Duration::from_secs(30));
            }
            other => panic!("expected rate_limited, got {other:?}"),
        }
        budget.charge_first("u2").expect("another user's budget");
        assert!(ReplayBudget::new(0).charge_first("u1").is_ok(), "0 is no limit");
    }
}
