//! Several chat-core replicas on one database and one Redis, as on
//! Kubernetes: events fan out across replicas, a late subscriber on another
//! replica gets the run in flight from delta 0, and a replica killed
//! mid-run has its run taken over by another. Needs `TEST_REDIS_URL`.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::process::Stdio;
use std::time::Duration;

use chat_proto::chat::v1::{self as pb, session_event::Event};
use chat_testkit::TestDatabase;
use common::*;
use tokio::io::{AsyncBufReadExt, BufReader};

fn deltas_of(events: &[Event], run_id: &str) -> Vec<(u32, u32, String)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Delta(d) if d.run_id == run_id => Some((d.attempt, d.index, d.text.clone())),
            _ => None,
        })
        .collect()
}

/// Collects a subscription's events until `done` matches one.
async fn collect_until(
    events: &mut tonic::Streaming<pb::SessionEvent>,
    mut done: impl FnMut(&Event) -> bool,
) -> Vec<Event> {
    let mut seen = Vec::new();
    loop {
        let event = next_matching(events, |_| true).await;
        let stop = done(&event);
        seen.push(event);
        if stop {
            return seen;
        }
    }
}

fn completed(run_id: &str) -> impl FnMut(&Event) -> bool + '_ {
    move |e| matches!(e, Event::Run(r) if r.run_id == run_id && r.status() == pb::RunStatus::Completed)
}

/// Two chat-core replicas on one database and the shared Redis, with a
/// worker serving `echo` and `slow`, and a user's token; `None` (a skip)
/// without `TEST_REDIS_URL`.
struct Replicas {
    _db: TestDatabase,
    _worker: Worker,
    a: Core,
    b: Core,
    token: String,
}

async fn two_replicas(configure: impl Fn(&mut chat_core::Settings) + Copy) -> Option<Replicas> {
    chat_testkit::needs::redis()?;
    let db = TestDatabase::new().await.unwrap();
    let worker = spawn_worker_with(Some(SLOW_AGENTS)).await;
    let a = spawn_core_with(&db.url, &worker.url, configure).await;
    let b = spawn_core_with(&db.url, &worker.url, configure).await;
    let (_, token) = register(a.addr).await;
    Some(Replicas {
        _db: db,
        _worker: worker,
        a,
        b,
        token,
    })
}

#[tokio::test]
async fn a_message_sent_through_one_replica_streams_on_the_other() {
    let Some(Replicas {
        a,
        b,
        token,
        _db,
        _worker,
    }) = two_replicas(|_| {}).await
    else {
        return;
    };
    let session = create_session_with(a.addr, &token, "echo", "").await;
    let mut on_a = watch(a.addr, &token, &session.id).await;
    let mut on_b = watch(b.addr, &token, &session.id).await;

    let ack = start_send(a.addr, &token, &session.id, "m1", "across the replicas")
        .await
        .unwrap();
    let seen_a = collect_until(&mut on_a, completed(&ack.run_id)).await;
    let seen_b = collect_until(&mut on_b, completed(&ack.run_id)).await;
    assert_eq!(
        seen_a, seen_b,
        "both connections see the same events in the same order"
    );
    let seqs: Vec<_> = seen_b
        .iter()
        .filter_map(|e| {
            if let Event::Message(m) = e {
                Some(m.seq)
            } else {
                None
            }
        })
        .collect();
    assert_eq!(seqs, [1, 2]);
    assert!(deltas_of(&seen_b, &ack.run_id).len() >= 2);
}

#[tokio::test]
async fn a_late_subscriber_on_another_replica_gets_the_run_in_flight_from_delta_zero() {
    let Some(Replicas {
        a,
        b,
        token,
        _db,
        _worker,
    }) = two_replicas(|_| {}).await
    else {
        return;
    };
    let session = create_session_with(a.addr, &token, "slow", "").await;
    let mut on_a = watch(a.addr, &token, &session.id).await;
    let ack = start_send(a.addr, &token, &session.id, "m1", "one two three four five six")
        .await
        .unwrap();
    // Two deltas streamed before the other replica's subscriber arrives.
    next_matching(&mut on_a, |e| matches!(e, Event::Delta(d) if d.index == 1)).await;

    let request = pb::SubscribeRequest {
        session_id: session.id.clone(),
        after_seq: 1,
    };
    let mut on_b = client(b.addr)
        .await
        .subscribe(with_token(request, &token))
        .await
        .unwrap()
        .into_inner();
    let seen = collect_until(&mut on_b, completed(&ack.run_id)).await;
    let deltas = deltas_of(&seen, &ack.run_id);
    let indexes: Vec<_> = deltas.iter().map(|(_, i, _)| *i).collect();
    assert_eq!(
        indexes,
        (0..6).collect::<Vec<_>>(),
        "every delta once, from 0, in order"
    );
    let text: String = deltas.iter().map(|(_, _, t)| t.as_str()).collect();
    let Some(Event::Message(reply)) = seen.iter().find(|e| matches!(e, Event::Message(_))) else {
        panic!("no reply")
    };
    assert_eq!((reply.seq, reply.content.as_str()), (2, text.as_str()));
}

/// A chat-core in its own process, to be killed with SIGKILL.
struct CoreProcess {
    child: tokio::process::Child,
    addr: std::net::SocketAddr,
}

async fn spawn_core_process(database_url: &str, worker_url: &str, redis_url: &str) -> CoreProcess {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_chat"))
        .arg("chat-core")
        .args([
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--database-url",
            database_url,
            "--migrate",
        ])
        .args([
            "--agent-worker-url",
            worker_url,
            "--jwt-secret",
            SECRET,
            "--redis-url",
            redis_url,
        ])
        .args([
            "--run-lease-ms",
            "600",
            "--log-format",
            "json",
            "--accept-user-tokens",
        ])
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let log: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            if log["message"] == "chat-core listening" {
                return log["addr"].as_str().unwrap().parse().unwrap();
            }
        }
        panic!("chat-core exited before listening")
    })
    .await
    .unwrap();
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    CoreProcess { child, addr }
}

#[tokio::test]
async fn a_replica_killed_mid_run_has_its_run_completed_by_another() {
    let Some(redis_url) = chat_testkit::needs::redis() else {
        return;
    };
    let db = TestDatabase::new().await.unwrap();
    let worker = spawn_worker_with(Some(SLOW_AGENTS)).await;
    let mut doomed = spawn_core_process(&db.url, &worker.url, &redis_url).await;
    let survivor = spawn_core_with(&db.url, &worker.url, |s| s.run_lease_ms = 600).await;
    let (_, token) = register(survivor.addr).await;
    let session = create_session_with(survivor.addr, &token, "slow", "").await;
    let mut observer = watch(survivor.addr, &token, &session.id).await;

    // Sent through the doomed replica, which therefore runs it.
    let ack = start_send(doomed.addr, &token, &session.id, "m1", "survive a crash please")
        .await
        .unwrap();
    next_matching(
        &mut observer,
        |e| matches!(e, Event::Delta(d) if d.run_id == ack.run_id),
    )
    .await;
    doomed.child.start_kill().unwrap();
    doomed.child.wait().await.unwrap();

    let seen = collect_until(&mut observer, completed(&ack.run_id)).await;
    assert!(
        seen.iter()
            .any(|e| matches!(e, Event::Run(r) if r.status() == pb::RunStatus::Retrying && r.attempt == 2)),
        "subscribers are told the run is retried"
    );
    let messages = history(survivor.addr, &token, &session.id).await;
    assert_eq!(
        messages.len(),
        2,
        "exactly one reply: the dead attempt stored nothing"
    );
    assert_eq!(messages[1].content, "survive a crash please");
    assert_eq!(messages[1].run_id.as_deref(), Some(ack.run_id.as_str()));
}

/// A cancel that reaches the replica not running the run: every observer,
/// on either replica, hears `cancelled`, and no delta of the run follows it.
/// The running replica stops the run at once: the session's next message
/// is answered long before the cancelled reply could have ended on its own
/// (15 s of words) or the runner's next lease renewal (20 s) would notice;
/// `next_matching` allows 15 s per event.
#[tokio::test]
async fn a_cancel_through_the_other_replica_stops_the_run_for_every_observer() {
    let Some(Replicas {
        a,
        b,
        token,
        _db,
        _worker,
    }) = two_replicas(|s| s.run_lease_ms = 60_000).await
    else {
        return;
    };
    let session = create_session_with(a.addr, &token, "slow", "").await;
    let mut on_a = watch(a.addr, &token, &session.id).await;
    let mut on_b = watch(b.addr, &token, &session.id).await;
    let long = "word ".repeat(100);
    let ack = start_send(a.addr, &token, &session.id, "m1", &long)
        .await
        .unwrap();
    let run_id = ack.run_id.clone();
    next_matching(&mut on_a, |e| matches!(e, Event::Delta(d) if d.run_id == run_id)).await;
    next_matching(&mut on_b, |e| matches!(e, Event::Delta(d) if d.run_id == run_id)).await;

    let request = pb::CancelRunRequest {
        session_id: session.id.clone(),
        run_id: run_id.clone(),
    };
    client(b.addr)
        .await
        .cancel_run(with_token(request, &token))
        .await
        .unwrap();
    let cancelled = |e: &Event| matches!(e, Event::Run(r) if r.run_id == run_id && r.status() == pb::RunStatus::Cancelled);
    collect_until(&mut on_a, cancelled).await;
    collect_until(&mut on_b, cancelled).await;

    // Up to the next turn's end, nothing more of the cancelled run.
    let next = start_send(a.addr, &token, &session.id, "m2", "next")
        .await
        .unwrap();
    for (name, observer) in [("a", &mut on_a), ("b", &mut on_b)] {
        let after = collect_until(observer, completed(&next.run_id)).await;
        assert_eq!(
            deltas_of(&after, &run_id),
            [],
            "observer on {name}: deltas of the cancelled run after `cancelled`"
        );
    }
    let stored = history(a.addr, &token, &session.id).await;
    assert_eq!(stored.len(), 3, "no reply stored for the cancelled run");
}
