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
    let memory: Arc<dyn EventBus> = Arc::new(InProcessBus::default());
    let mut all = vec![("in-process", memory.clone(), memory)];
    if let Some(url) = chat_testkit::needs::shared_redis() {
        let a: Arc<dyn EventBus> = Arc::new(RedisBus::connect(&url, 4096).await.expect("redis"));
        let b: Arc<dyn EventBus> = Arc::new(RedisBus::connect(&url, 4096).await.expect("redis"));
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
