//! One suite for every `RateLimitStore`: in memory always, Redis when `TEST_REDIS_URL` is set.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use gateway::ratelimit::{MemoryStore, Policies, Policy, RateLimitStore, RedisStore, Tier};

fn policies() -> Policies {
    let policy = |limit: u32, millis: u64| Policy {
        limit: NonZeroU32::new(limit).expect("non-zero"),
        window: Duration::from_millis(millis),
    };
    Policies {
        // One request back every 2 s: the checks below fit in that on a loaded machine.
        api: policy(3, 6_000),
        auth: policy(1, 60_000),
        account: policy(1, 60_000),
        messages: policy(2, 60_000),
        frames: policy(2, 60_000),
    }
}

async fn store_suite(store: Arc<dyn RateLimitStore>) -> anyhow::Result<()> {
    let key = uuid::Uuid::new_v4().to_string();

    // Up to the limit, with the remaining allowance counting down.
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let decision = store.check(Tier::Api, &key).await?;
        assert!(decision.allowed, "{decision:?}");
        assert_eq!(decision.limit, 3);
        remaining.push(decision.remaining);
    }
    assert_eq!(remaining, [2, 1, 0]);

    // Then denied, told when to retry: about one interval (window / limit).
    let denied = store.check(Tier::Api, &key).await?;
    assert!(!denied.allowed, "{denied:?}");
    assert_eq!(denied.remaining, 0);
    assert!(
        denied.retry_after > Duration::ZERO && denied.retry_after <= Duration::from_millis(2_000),
        "{denied:?}"
    );
    assert!(denied.reset >= denied.retry_after, "{denied:?}");

    // Other keys and other tiers count separately.
    assert!(store.check(Tier::Api, &format!("{key}-other")).await?.allowed);
    let auth = store.check(Tier::Auth, &key).await?;
    assert!(auth.allowed && auth.limit == 1 && auth.remaining == 0, "{auth:?}");
    assert!(!store.check(Tier::Auth, &key).await?.allowed);

    // Several tiers counted in turn (one round trip on Redis): a tier after
    // the one that refuses is not counted.
    let turn = format!("{key}-turn");
    let both = store.check_in_turn(&[Tier::Auth, Tier::Messages], &turn).await?;
    let shape: Vec<_> = both.iter().map(|d| (d.allowed, d.limit, d.remaining)).collect();
    assert_eq!(shape, [(true, 1, 0), (true, 2, 1)], "{both:?}");
    let refused = store.check_in_turn(&[Tier::Auth, Tier::Messages], &turn).await?;
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(
        !refused[0].allowed && refused[0].retry_after > Duration::ZERO,
        "{refused:?}"
    );
    let messages = store.check(Tier::Messages, &turn).await?;
    assert!(messages.allowed && messages.remaining == 0, "{messages:?}");

    // The allowance comes back as time passes.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let decision = store.check(Tier::Api, &key).await?;
        if decision.allowed {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no recovery: {decision:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

#[tokio::test]
async fn memory_store_passes_the_suite() -> anyhow::Result<()> {
    store_suite(MemoryStore::new(policies())).await
}

#[tokio::test]
async fn redis_store_passes_the_suite() -> anyhow::Result<()> {
    let Some(url) = chat_testkit::needs::redis() else {
        return Ok(());
    };
    let prefix = format!("test:{}", uuid::Uuid::new_v4());
    store_suite(Arc::new(RedisStore::connect(&url, &prefix, policies()).await?)).await
}

#[tokio::test]
async fn concurrent_checks_on_redis_never_exceed_the_limit() -> anyhow::Result<()> {
    let Some(url) = chat_testkit::needs::redis() else {
        return Ok(());
    };
    let prefix = format!("test:{}", uuid::Uuid::new_v4());
    let mut slow = policies();
    slow.messages = Policy {
        limit: NonZeroU32::new(10).expect("non-zero"),
        window: Duration::from_secs(600),
    };
    let store = Arc::new(RedisStore::connect(&url, &prefix, slow).await?);
    let checks = (0..50).map(|_| {
        let store = store.clone();
        tokio::spawn(async move { store.check(Tier::Messages, "racer").await })
    });
    let mut allowed = 0;
    for check in checks {
        allowed += usize::from(check.await??.allowed);
    }
    assert_eq!(allowed, 10);
    Ok(())
}
