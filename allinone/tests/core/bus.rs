//! The `EventBus` suite: runs against the in-process bus always, and against
//! Redis when `TEST_REDIS_URL` is set, including two buses standing in for
//! two chat-core replicas.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use chat_core::bus::{BusItem, EventBus, InProcessBus, RedisBus};
use chat_proto::chat::v1::{self as pb, session_event::Event};
use futures::StreamExt;
use futures::stream::BoxStream;

/// Every bus implementation under test, as (name, publisher side, subscriber side).
async fn buses() -> Vec<(&'static str, Arc<dyn EventBus>, Arc<dyn EventBus>)> {
    buses_holding(128).await
}

/// The buses, with subscribers that may fall `buffer` publishes behind.
async fn buses_holding(buffer: usize) -> Vec<(&'static str, Arc<dyn EventBus>, Arc<dyn EventBus>)> {
    let memory: Arc<dyn EventBus> = Arc::new(InProcessBus::new(buffer));
    let mut all = vec![("in-process", memory.clone(), memory)];
    if let Some(url) = chat_testkit::needs::shared_redis() {
        let a: Arc<dyn EventBus> = Arc::new(RedisBus::connect(&url, buffer).await.expect("redis"));
        let b: Arc<dyn EventBus> = Arc::new(RedisBus::connect(&url, buffer).await.expect("redis"));
        all.push(("redis, same replica", a.clone(), a.clone()));
        all.push(("redis, across replicas", a, b));
    }
    all
}

fn delta(session_id: &str, index: u32) -> pb::SessionEvent {
    pb::SessionEvent {
        event: Some(Event::Delta(pb::Delta {
            session_id: session_id.into(),
            run_id: "r".into(),
            index,
            text: format!("t{index}"),
            attempt: 1,
        })),
    }
}

async fn next_index(stream: &mut BoxStream<'static, BusItem>) -> u32 {
    let item = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("event arrives")
        .unwrap();
    match item {
        BusItem::Event(event) => match &event.event {
            Some(Event::Delta(d)) => d.index,
            other => panic!("unexpected event {other:?}"),
        },
        BusItem::Lagged(n) => panic!("lagged by {n}"),
        BusItem::Resync => panic!("unexpected resync"),
    }
}

fn session() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[tokio::test]
async fn every_subscriber_gets_every_event_in_publish_order() {
    for (name, publisher, subscriber) in buses().await {
        let id = session();
        let mut first = subscriber.subscribe(&id).await;
        let mut second = subscriber.subscribe(&id).await;
        for i in 0..100 {
            publisher.publish(&id, delta(&id, i)).await;
        }
        for i in 0..100 {
            assert_eq!(next_index(&mut first).await, i, "{name}");
            assert_eq!(next_index(&mut second).await, i, "{name}");
        }
    }
}

/// A run's deltas relayed together travel as one publish: a subscriber that
/// may fall four publishes behind still gets a thousand of them, in order,
/// without lagging; four single publishes past that, it does lag.
#[tokio::test]
async fn a_batch_is_one_publish_however_many_events_it_holds() {
    for (name, publisher, subscriber) in buses_holding(4).await {
        let id = session();
        let mut events = subscriber.subscribe(&id).await;
        let batch = (0..1000).map(|i| delta(&id, i)).collect();
        publisher.publish_batch(&id, batch, None).await;
        for i in 0..1000 {
            assert_eq!(next_index(&mut events).await, i, "{name}");
        }

        // A marker publish on another session of the same subscriber side
        // tells when the five publishes below have reached it.
        let marker = session();
        let mut arrived = subscriber.subscribe(&marker).await;
        for i in 0..5 {
            publisher.publish(&id, delta(&id, i)).await;
        }
        publisher.publish(&marker, delta(&marker, 0)).await;
        assert_eq!(next_index(&mut arrived).await, 0, "{name}");
        let first = tokio::time::timeout(Duration::from_secs(5), events.next()).await;
        assert!(
            matches!(first, Ok(Some(BusItem::Lagged(1)))),
            "{name}: five publishes into four slots: {first:?}"
        );
        for i in 1..5 {
            assert_eq!(next_index(&mut events).await, i, "{name}");
        }
    }
}

#[tokio::test]
async fn events_stay_within_their_session() {
    for (name, publisher, subscriber) in buses().await {
        let (a, b) = (session(), session());
        let mut on_a = subscriber.subscribe(&a).await;
        publisher.publish(&b, delta(&b, 7)).await;
        publisher.publish(&a, delta(&a, 1)).await;
        assert_eq!(
            next_index(&mut on_a).await,
            1,
            "{name}: session b's event must not reach a"
        );
    }
}

#[tokio::test]
async fn a_later_subscriber_sees_only_later_events_and_a_dropped_one_frees_nothing_shared() {
    for (name, publisher, subscriber) in buses().await {
        let id = session();
        let mut early = subscriber.subscribe(&id).await;
        publisher.publish(&id, delta(&id, 0)).await;
        assert_eq!(next_index(&mut early).await, 0, "{name}");
        let mut late = subscriber.subscribe(&id).await;
        let dropped = subscriber.subscribe(&id).await;
        drop(dropped);
        publisher.publish(&id, delta(&id, 1)).await;
        assert_eq!(
            next_index(&mut late).await,
            1,
            "{name}: the late subscriber starts at the next event"
        );
        assert_eq!(
            next_index(&mut early).await,
            1,
            "{name}: dropping one subscriber keeps the others"
        );
    }
}

/// A subscription Redis does not confirm in time on a live connection (here
/// Redis is paused; under load it can be slow) is retried in the background:
/// once confirmed, the session's subscribers are told to re-read the
/// database, for what other replicas published meanwhile, and then hear
/// them again.
#[tokio::test]
async fn a_failed_subscribe_is_retried_and_its_subscribers_resync() {
    use fred::prelude::*;
    let Some(redis) = chat_testkit::PrivateRedis::start().await else {
        return;
    };
    let subscriber = RedisBus::connect(&redis.url(), 16).await.unwrap();
    let publisher = RedisBus::connect(&redis.url(), 16).await.unwrap();
    let admin = Builder::from_config(Config::from_url(&redis.url()).unwrap())
        .build()
        .unwrap();
    admin.init().await.unwrap();
    // Longer than the bus's command timeout: the subscription below is not
    // confirmed in time.
    let _: Value = admin
        .custom(
            fred::types::CustomCommand::new_static("CLIENT", None, false),
            vec!["PAUSE", "1500", "ALL"],
        )
        .await
        .unwrap();

    let id = session();
    let mut events = subscriber.subscribe(&id).await;
    let first = tokio::time::timeout(Duration::from_secs(10), events.next()).await;
    assert!(
        matches!(first, Ok(Some(BusItem::Resync))),
        "once a retry subscribes, the subscriber is asked to resync: {first:?}"
    );
    publisher.publish(&id, delta(&id, 3)).await;
    assert_eq!(
        next_index(&mut events).await,
        3,
        "another replica's events arrive once subscribed"
    );
}

/// Two replicas' buses on a private `redis-server`, `replica` reaching it
/// through `proxy`, whose link can be cut.
struct CutOffReplica {
    _redis: chat_testkit::PrivateRedis,
    proxy: chat_testkit::CuttableProxy,
    replica: RedisBus,
    other: RedisBus,
}

impl CutOffReplica {
    /// `None` (the test skipped) without `redis-server`.
    async fn start() -> Option<Self> {
        let redis = chat_testkit::PrivateRedis::start().await?;
        let proxy = chat_testkit::CuttableProxy::start(chat_testkit::socket_addr_of(&redis.url()).unwrap())
            .await
            .unwrap();
        let through_proxy = chat_testkit::with_host(&redis.url(), proxy.addr());
        let replica = RedisBus::connect(&through_proxy, 16).await.unwrap();
        let other = RedisBus::connect(&redis.url(), 16).await.unwrap();
        Some(Self {
            _redis: redis,
            proxy,
            replica,
            other,
        })
    }
}

/// Cuts `proxy` and waits until `bus`, behind it, knows Redis is away.
async fn cut_off(proxy: &chat_testkit::CuttableProxy, bus: &RedisBus) {
    proxy.cut();
    tokio::time::timeout(Duration::from_secs(10), async {
        while bus.is_connected() != Some(false) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the replica notices that Redis is away");
}

/// What a replica could deliver only to its own subscribers while its link
/// to Redis was down reaches the other replicas' subscribers once the link
/// is back: it names the session, and they catch up from the database. Their
/// own links stayed up, so no reconnect of theirs would have them do it.
#[tokio::test]
async fn a_replica_back_on_redis_has_the_others_catch_up_on_what_it_delivered_locally() {
    let Some(replicas) = CutOffReplica::start().await else {
        return;
    };
    let (publisher, subscriber, proxy) = (&replicas.replica, &replicas.other, &replicas.proxy);
    let id = session();
    let mut events = subscriber.subscribe(&id).await;

    cut_off(proxy, publisher).await;
    publisher.publish(&id, delta(&id, 1)).await;
    proxy.restore();

    assert!(
        comes(&mut events, |item| matches!(item, BusItem::Resync)).await,
        "the other replica's subscriber must be asked to catch up"
    );
}

/// A cancelled run's id reaches every replica's listener (the one executing
/// it stops it at once), and a revocation reaches only revocation listeners.
#[tokio::test]
async fn cancellations_and_revocations_reach_every_replica_each_on_its_own_stream() {
    for (name, publisher, subscriber) in buses().await {
        let mut cancelled = subscriber.cancellations();
        let mut revoked = subscriber.revocations();
        // Ids this test published: other tests share Redis's notice channels.
        let mut ours = Vec::new();
        // Each kind published first in turn: each stream gets its own kind only, in order.
        for cancellation_first in [true, false] {
            let (run_id, user_id) = (session(), session());
            ours.extend([run_id.clone(), user_id.clone()]);
            if cancellation_first {
                publisher.publish_cancellation(&run_id).await;
            }
            publisher.publish_revocation(&user_id).await;
            if !cancellation_first {
                publisher.publish_cancellation(&run_id).await;
            }
            assert_eq!(
                next_notice(&mut cancelled, &ours).await,
                run_id,
                "{name}: the cancelled run"
            );
            assert_eq!(
                next_notice(&mut revoked, &ours).await,
                user_id,
                "{name}: the revoked user"
            );
        }
    }
}

/// The next notice on `stream` that is one of `ours`, skipping those other
/// tests publish meanwhile.
async fn next_notice(stream: &mut BoxStream<'static, String>, ours: &[String]) -> String {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let id = stream.next().await.expect("the stream stays open");
            if ours.contains(&id) {
                return id;
            }
        }
    })
    .await
    .expect("a notice arrives")
}

/// Notices published on either side while one replica's link to Redis was
/// down reach the other side once the link is back: what the cut-off
/// replica could tell only itself is published then (it owes it), and what
/// the other published meanwhile is read back from Redis (the notice lists)
/// when the cut-off replica subscribes again. Late, rather than at the
/// tokens' expiry or the run's next lease renewal.
#[tokio::test]
async fn notices_published_on_either_side_of_a_cut_reach_the_other_side_once_it_is_mended() {
    let Some(replicas) = CutOffReplica::start().await else {
        return;
    };
    let (away, other, proxy) = (&replicas.replica, &replicas.other, &replicas.proxy);
    let (mut away_revoked, mut away_cancelled) = (away.revocations(), away.cancellations());
    let (mut other_revoked, mut other_cancelled) = (other.revocations(), other.cancellations());

    cut_off(proxy, away).await;
    let (away_user, away_run, other_user, other_run) = (session(), session(), session(), session());
    away.publish_revocation(&away_user).await;
    away.publish_cancellation(&away_run).await;
    assert!(
        hears(&mut away_revoked, &away_user).await,
        "the cut-off replica tells itself at once"
    );
    other.publish_revocation(&other_user).await;
    other.publish_cancellation(&other_run).await;
    proxy.restore();

    let expected = [
        (
            &mut other_revoked,
            &away_user,
            "the other replica hears the revocation owed to it",
        ),
        (
            &mut other_cancelled,
            &away_run,
            "the other replica hears the cancellation owed to it",
        ),
        (
            &mut away_revoked,
            &other_user,
            "the replica back on Redis hears the revocation published while it was away",
        ),
        (
            &mut away_cancelled,
            &other_run,
            "the replica back on Redis hears the cancellation published while it was away",
        ),
    ];
    for (stream, id, what) in expected {
        assert!(hears(stream, id).await, "{what}");
    }
}

/// Whether `expected` comes on `stream` within 10 s (other notices may come first).
async fn hears(stream: &mut BoxStream<'static, String>, expected: &str) -> bool {
    comes(stream, |id| id == expected).await
}

/// Whether an item that is `wanted` comes on `stream` within 10 s (others may come first).
async fn comes<T>(stream: &mut BoxStream<'static, T>, wanted: impl Fn(&T) -> bool) -> bool {
    tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(item) = stream.next().await {
            if wanted(&item) {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false)
}
