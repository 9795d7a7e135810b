//! The in-process store: one governor keyed limiter per tier.

use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

use super::{Decision, Policies, Policy, RateLimitError, RateLimitStore, Tier};

/// How often keys whose allowance is back in full are forgotten.
const PRUNE_INTERVAL: Duration = Duration::from_secs(60);

type KeyedLimiter =
    RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock, StateInformationMiddleware>;

/// Limits held in this process: right for one gateway, not shared across replicas.
#[derive(Debug)]
pub struct MemoryStore {
    tiers: [(Policy, KeyedLimiter); 5],
}

impl MemoryStore {
    /// Builds the limiters and, inside a Tokio runtime, a task that prunes idle keys.
    pub fn new(policies: Policies) -> Arc<Self> {
        let limiter = |policy: Policy| {
            let quota = Quota::with_period(policy.interval())
                .unwrap_or_else(|| Quota::per_second(policy.limit))
                .allow_burst(policy.limit);
            (
                policy,
                RateLimiter::keyed(quota).with_middleware::<StateInformationMiddleware>(),
            )
        };
        let store = Arc::new(Self {
            tiers: Tier::ALL.map(|tier| limiter(policies.get(tier))),
        });
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(prune(Arc::downgrade(&store)));
        }
        store
    }

    fn tier(&self, tier: Tier) -> &(Policy, KeyedLimiter) {
        &self.tiers[tier.index()]
    }
}

async fn prune(store: Weak<MemoryStore>) {
    let mut ticks = tokio::time::interval(PRUNE_INTERVAL);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let Some(store) = store.upgrade() else { return };
        for (_, limiter) in &store.tiers {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

#[async_trait]
impl RateLimitStore for MemoryStore {
    async fn check(&self, tier: Tier, key: &str) -> Result<Decision, RateLimitError> {
        let (policy, limiter) = self.tier(tier);
        let limit = policy.limit.get();
        let interval = policy.interval();
        Ok(match limiter.check_key(&key.to_owned()) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity().min(limit);
                Decision {
                    allowed: true,
                    limit,
                    remaining,
                    reset: interval * (limit - remaining),
                    retry_after: Duration::ZERO,
                }
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(limiter.clock().now());
                Decision {
                    allowed: false,
                    limit,
                    remaining: 0,
                    reset: wait + interval * (limit - 1),
                    retry_after: wait,
                }
            }
        })
    }
}
