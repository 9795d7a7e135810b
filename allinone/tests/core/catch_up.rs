//! Subscribers that lose live events (they fell behind the bus, or the
//! shared bus was away) catch up from the database and the delta log: they
//! neither end nor miss how a run ended.

use crate::common;

use std::time::Duration;

use chat_proto::chat::v1::{self as pb, chat_service_client::ChatServiceClient, session_event::Event};
use chat_testkit::{PrivateRedis, TestDatabase};
use common::*;
use futures::StreamExt;

/// Everything a subscription yields until the run of `run_id` is reported
/// ended; panics on an error item or a stream that ends first.
async fn until_run_ends(events: &mut tonic::Streaming<pb::SessionEvent>, run_id: &str) -> Vec<Event> {
    let mut seen = Vec::new();
    loop {
        let item = tokio::time::timeout(Duration::from_secs(30), events.next())
            .await
            .expect("the run's end in time")
            .expect("the subscription stays open")
            .expect("the subscription yields no error");
        let Some(event) = item.event else { continue };
        let ended = matches!(&event, Event::Run(r) if r.run_id == run_id && r.status().is_terminal());
        seen.push(event);
        if ended {
            return seen;
        }
    }
}

/// A subscription to `session_id` on `addr` over its own connection with a
/// small receive window, so the server stops taking its events off the bus
/// as soon as the client stops reading.
async fn narrow_watch(url: &str, token: &str, session_id: &str) -> tonic::Streaming<pb::SessionEvent> {
    let narrow = tonic::transport::Endpoint::from_shared(url.to_owned())
        .unwrap()
        .initial_stream_window_size(Some(16 * 1024))
        .connect()
        .await
        .unwrap();
    let request = pb::SubscribeRequest {
        session_id: session_id.to_owned(),
        after_seq: 0,
    };
    ChatServiceClient::new(narrow)
        .subscribe(with_token(request, token))
        .await
        .unwrap()
        .into_inner()
}

/// The seqs of the messages among `seen`, in order.
fn message_seqs(seen: &[Event]) -> Vec<i64> {
    seen.iter()
        .filter_map(|e| match e {
            Event::Message(m) => Some(m.seq),
            _ => None,
        })
        .collect()
}

/// The first message and terminal run status (labelled by `runs`) among
/// `seen`, in order: `message <seq>`, `run <label> <status>`.
fn outline(seen: &[Event], runs: &[(&str, &str)]) -> Vec<String> {
    seen.iter()
        .filter_map(|e| match e {
            Event::Message(m) => Some(format!("message {}", m.seq)),
            Event::Run(r) if r.status().is_terminal() => {
                let label = runs
                    .iter()
                    .find(|(id, _)| *id == r.run_id)
                    .map_or(r.run_id.as_str(), |(_, label)| label);
                Some(format!("run {label} {}", r.status().as_str_name()))
            }
            _ => None,
        })
        .collect()
}

/// A client resuming with `after_seq` = the seq of its last message, whose
/// run has ended since, hears how that run ended: its reply and its terminal
/// status, in the subscription's opening (before the events of a message
/// sent after subscribing).
#[tokio::test]
async fn resuming_right_after_a_message_whose_run_ended_reports_that_runs_end() {
    // Arrange: message 1 answered (reply 2, run completed) before anyone resumes.
    let stack = spawn_stack().await;
    let addr = stack.core.addr;
    let (_, token) = register(addr).await;
    let session = create_session(addr, &token).await;
    let answered = send(addr, &token, &session.id, "first", "hello").await;
    let first = match &answered.first().and_then(|e| e.event.clone()) {
        Some(pb::send_message_event::Event::Ack(ack)) => ack.run_id.clone(),
        other => panic!("expected an ack first, got {other:?}"),
    };

    // Act: resume after message 1; the opening is read before `subscribe`
    // answers, so everything of the next message comes after it.
    let request = pb::SubscribeRequest {
        session_id: session.id.clone(),
        after_seq: 1,
    };
    let mut resumed = client(addr)
        .await
        .subscribe(with_token(request, &token))
        .await
        .unwrap()
        .into_inner();
    let second = start_send(addr, &token, &session.id, "second", "again")
        .await
        .unwrap()
        .run_id;
    let seen = until_run_ends(&mut resumed, &second).await;

    // Assert
    assert_eq!(
        outline(&seen, &[(&first, "first"), (&second, "second")]),
        [
            "message 2",
            "run first RUN_STATUS_COMPLETED",
            "message 3",
            "message 4",
            "run second RUN_STATUS_COMPLETED",
        ]
    );
}

/// A subscriber that stops reading while a long reply streams falls
/// thousands of events behind a bus that holds eight. When it reads again it
/// gets a consistent account (deltas without a hole, the stored reply, the
/// run's end), not an error that ends its subscription.
#[tokio::test]
async fn a_subscriber_that_falls_behind_catches_up_instead_of_ending() {
    let db = TestDatabase::new().await.unwrap();
    let worker = spawn_worker().await;
    let core = spawn_core_with(&db.url, &worker.url, |s| {
        s.subscriber_buffer_batches = 8;
        s.max_content_bytes = 256 * 1024;
    })
    .await;
    let (_, token) = register(core.addr).await;
    let session = create_session(core.addr, &token).await;

    // A client whose small receive window fills at once, so the server stops
    // taking its events off the bus.
    let mut behind = narrow_watch(&core.url, &token, &session.id).await;

    let words: Vec<String> = (0..30_000).map(|i| format!("w{i}")).collect();
    let content = words.join(" ");
    let events = send(core.addr, &token, &session.id, "long", &content).await;
    let run_id = match &events.first().and_then(|e| e.event.clone()) {
        Some(pb::send_message_event::Event::Ack(ack)) => ack.run_id.clone(),
        other => panic!("expected an ack first, got {other:?}"),
    };

    let seen = until_run_ends(&mut behind, &run_id).await;
    let Some(Event::Run(end)) = seen.last() else {
        unreachable!()
    };
    assert_eq!(end.status(), pb::RunStatus::Completed);
    let reply = seen
        .iter()
        .find_map(|e| match e {
            Event::Message(m) if m.run_id.as_deref() == Some(run_id.as_str()) => Some(m),
            _ => None,
        })
        .expect("the stored reply reaches the subscriber that fell behind");
    assert_eq!(reply.content, content);
    let mut next = 0;
    let mut streamed = String::new();
    for event in &seen {
        if let Event::Delta(d) = event {
            assert_eq!(d.index, next, "deltas without a hole or a repeat");
            next += 1;
            streamed.push_str(&d.text);
        }
    }
    assert!(
        next < 30_000,
        "the subscriber was meant to fall behind, yet it received all {next} deltas"
    );
    assert!(
        content.starts_with(&streamed),
        "deltas spell the start of the reply"
    );
    assert_eq!(message_seqs(&seen), [1, 2], "each message once, in order");
}

/// While Redis is away, a run answered by one replica is published there
/// only. When Redis returns, a subscriber on the other replica hears of the
/// message, the reply and how the run ended, in that order.
#[tokio::test]
async fn after_a_redis_outage_a_subscriber_hears_how_runs_ended_meanwhile() {
    let Some(mut redis) = PrivateRedis::start().await else {
        return;
    };
    let db = TestDatabase::new().await.unwrap();
    let worker = spawn_worker().await;
    let url = redis.url();
    let a = spawn_core_with(&db.url, &worker.url, |s| s.redis_url = Some(url.clone().into())).await;
    let b = spawn_core_with(&db.url, &worker.url, |s| s.redis_url = Some(url.clone().into())).await;
    let (_, token) = register(a.addr).await;
    let session = create_session(a.addr, &token).await;
    let mut remote = watch(b.addr, &token, &session.id).await;

    redis.stop().await;
    let events = send(a.addr, &token, &session.id, "during", "while redis is away").await;
    let run_id = match &events.first().and_then(|e| e.event.clone()) {
        Some(pb::send_message_event::Event::Ack(ack)) => ack.run_id.clone(),
        other => panic!("expected an ack first, got {other:?}"),
    };
    assert!(
        events.iter().any(|e| matches!(&e.event,
            Some(pb::send_message_event::Event::SessionEvent(ev))
                if matches!(&ev.event, Some(Event::Run(r)) if r.status() == pb::RunStatus::Completed))),
        "the replica that ran it answered without redis"
    );
    redis.restart().await;

    let seen = until_run_ends(&mut remote, &run_id).await;
    let order: Vec<String> = seen
        .iter()
        .filter_map(|e| match e {
            Event::Message(m) => Some(format!("message {}", m.seq)),
            Event::Run(r) if r.run_id == run_id && r.status().is_terminal() => {
                Some(format!("run {}", r.status().as_str_name()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(order, ["message 1", "message 2", "run RUN_STATUS_COMPLETED"]);
}

/// Many long replies at once, run by one replica and followed by subscribers
/// of the other through Redis; the subscribers read nothing until every run
/// is over, and each may fall only 64 events behind. Every subscriber ends
/// with every message once, in order, and every run's end; the deltas it
/// got have no hole and no repeat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_load_every_subscriber_of_the_other_replica_ends_in_a_correct_state() {
    const SESSIONS: usize = 16;
    const TURNS: usize = 3;
    if chat_testkit::needs::redis().is_none() {
        return;
    }
    let db = TestDatabase::new().await.unwrap();
    let worker = spawn_worker().await;
    let a = spawn_core(&db.url, &worker.url).await;
    let b = spawn_core_with(&db.url, &worker.url, |s| s.subscriber_buffer_batches = 64).await;
    let (_, token) = register(a.addr).await;
    let content = (0..1000).map(|i| format!("w{i}")).collect::<Vec<_>>().join(" ");

    let clients = (0..SESSIONS).map(|i| {
        let (token, content) = (token.clone(), content.clone());
        let (a, b) = (a.addr, b.addr);
        async move {
            let session = create_session(a, &token).await;
            let mut on_b = narrow_watch(&format!("http://{b}"), &token, &session.id).await;
            let mut run_ids = Vec::new();
            for turn in 0..TURNS {
                // Returns once the run is over.
                let events = send(a, &token, &session.id, &format!("s{i}-{turn}"), &content).await;
                match &events[0].event {
                    Some(pb::send_message_event::Event::Ack(ack)) => run_ids.push(ack.run_id.clone()),
                    other => panic!("ack first: {other:?}"),
                }
            }
            // Everything until the last run's end: runs end in order.
            let seen = until_run_ends(&mut on_b, run_ids.last().unwrap()).await;
            (run_ids, seen)
        }
    });
    for (run_ids, seen) in futures::future::join_all(clients).await {
        assert_eq!(
            message_seqs(&seen),
            (1..=(2 * TURNS) as i64).collect::<Vec<_>>(),
            "every message once, in order"
        );
        for run_id in &run_ids {
            let ends: Vec<_> = seen
                .iter()
                .filter(|e| matches!(e, Event::Run(r) if &r.run_id == run_id && r.status().is_terminal()))
                .collect();
            assert_eq!(ends.len(), 1, "run {run_id} ends once: {ends:?}");
            let mut next = 0;
            let mut streamed = String::new();
            for event in &seen {
                if let Event::Delta(d) = event
                    && &d.run_id == run_id
                {
                    assert_eq!(d.index, next, "run {run_id}: a hole or a repeat");
                    next += 1;
                    streamed.push_str(&d.text);
                }
            }
            assert!(
                content.starts_with(&streamed),
                "run {run_id}: deltas spell the reply"
            );
        }
    }
}

/// Once a run's reply is stored and announced, its delta log is gone from
/// Redis (dropped in the same round trip as the last publish): catching up
/// reads the stored reply, and no log waits for its expiry.
#[tokio::test]
async fn a_runs_delta_log_is_dropped_once_its_reply_is_stored() {
    use fred::prelude::*;
    let Some(redis) = PrivateRedis::start().await else {
        return;
    };
    let db = TestDatabase::new().await.unwrap();
    let worker = spawn_worker().await;
    let url = redis.url();
    let core = spawn_core_with(&db.url, &worker.url, |s| s.redis_url = Some(url.clone().into())).await;
    let (_, token) = register(core.addr).await;
    let session = create_session(core.addr, &token).await;

    let events = send(
        core.addr,
        &token,
        &session.id,
        "long",
        "one two three four five six",
    )
    .await;
    let run_id = match &events.first().and_then(|e| e.event.clone()) {
        Some(pb::send_message_event::Event::Ack(ack)) => ack.run_id.clone(),
        other => panic!("expected an ack first, got {other:?}"),
    };
    let deltas = events
        .iter()
        .filter(|e| {
            matches!(&e.event, Some(pb::send_message_event::Event::SessionEvent(ev))
                if matches!(&ev.event, Some(Event::Delta(_))))
        })
        .count();
    assert!(deltas > 0, "the reply streamed deltas, so it had a log");

    let client = Builder::from_config(Config::from_url(&url).unwrap())
        .build()
        .unwrap();
    client.init().await.unwrap();
    let key = format!("chat:run:{run_id}:1:deltas");
    // The DEL follows the last publish in one pipeline: a moment after the
    // client heard the run end.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let exists: i64 = client.exists(&key).await.unwrap();
        if exists == 0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{key} outlived its run");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
