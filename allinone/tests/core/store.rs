//! The `ChatStore` suite: runs against SQLite always, and against Postgres
//! when `TEST_DATABASE_URL` is set (each test gets a fresh database).

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use crate::common::fresh_store;
use chat_core::bus::{BusItem, EventBus, InProcessBus};
use chat_core::domain::{
    Actor, ClientMsgId, Message, MessageRole, Run, RunStatus, SessionChange, SessionId, SessionStatus, UserId,
};
use chat_core::lifecycle::{AfterReply, RunLifecycle, SessionEffect};
use chat_core::store::{
    self, Appended, ChatStore, Lease, MessageQuery, NewMessage, NewSession, RunCompletion, SessionFilter,
    SessionQuery, StoreError, Transition,
};
use chat_proto::chat::v1::session_event::Event;
use chat_proto::chat::v1::{Presence, SessionEvent};
use futures::StreamExt;

async fn user_and_session(store: &Arc<dyn ChatStore>) -> (UserId, SessionId) {
    let user = store
        .create_user(&format!("u{}", uuid::Uuid::new_v4().simple()), "hash")
        .await
        .unwrap();
    let session = store
        .create_session(NewSession {
            owner_id: user.id.clone(),
            title: String::new(),
            agent: "echo".into(),
            metadata: "{}".into(),
            concurrency: None,
        })
        .await
        .unwrap();
    (user.id, session.id)
}

fn lease(owner: &str) -> Lease {
    Lease {
        owner: owner.to_owned(),
        duration_ms: 60_000,
    }
}

fn user_message(session_id: &SessionId, client_msg_id: &str, content: &str) -> NewMessage {
    NewMessage {
        session_id: session_id.clone(),
        role: MessageRole::User,
        content: content.to_owned(),
        client_msg_id: Some(ClientMsgId::parse(client_msg_id).unwrap()),
        start_run: true,
        reject_if_busy: false,
        author: None,
        claim: None,
        metadata: None,
    }
}

#[tokio::test]
async fn seq_starts_at_one_and_has_no_gaps() {
    let (store, _db) = fresh_store().await;
    let (_, session) = user_and_session(&store).await;
    for i in 1..=5 {
        let appended = store
            .append_message(user_message(&session, &format!("m{i}"), "hi"))
            .await
            .unwrap();
        assert_eq!(appended.message.seq, i);
        assert!(!appended.duplicate);
    }
    let stored = store.get_session(&session).await.unwrap().unwrap();
    assert_eq!(stored.last_seq, 5);
    assert_eq!(stored.title, "hi", "the first message names the session");
}

/// The title comes from the first message's first non-blank line, and a
/// later message leaves it alone.
#[tokio::test]
async fn the_first_message_names_the_session_and_later_ones_do_not() {
    let (store, _db) = fresh_store().await;
    let (_, session) = user_and_session(&store).await;
    for (id, content) in [
        ("a", "\n  Where is my card? \nIt was sent"),
        ("b", "Another question"),
    ] {
        store
            .append_message(user_message(&session, id, content))
            .await
            .unwrap();
    }
    let stored = store.get_session(&session).await.unwrap().unwrap();
    assert_eq!(stored.title, "Where is my card?");
}

#[tokio::test]
async fn repeated_client_msg_id_returns_the_original_message_and_run() {
    let (store, _db) = fresh_store().await;
    let (_, session) = user_and_session(&store).await;
    let first = store
        .append_message(user_message(&session, "same", "hello"))
        .await
        .unwrap();
    let again = store
        .append_message(user_message(&session, "same", "hello"))
        .await
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(again.message.id, first.message.id);
    assert_eq!(again.run.unwrap().id, first.run.unwrap().id);
    let all = store
        .list_messages(MessageQuery {
            session_id: session,
            after_seq: Some(0),
            before_seq: None,
            limit: 100,
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 1);
}

/// Sends `count` user messages to `session` at once, each with its own
/// client message id, claiming at the send under `claim`.
async fn send_concurrently(
    store: &Arc<dyn ChatStore>,
    session: &SessionId,
    count: usize,
    claim: Option<Lease>,
) -> Vec<Appended> {
    let tasks: Vec<_> = (0..count)
        .map(|i| {
            let store = store.clone();
            let message = NewMessage {
                claim: claim.clone(),
                ..user_message(session, &format!("c{i}"), "x")
            };
            tokio::spawn(async move { store.append_message(message).await })
        })
        .collect();
    let mut sent = Vec::new();
    for task in tasks {
        sent.push(task.await.unwrap().unwrap());
    }
    sent
}

#[tokio::test]
async fn concurrent_sends_get_distinct_consecutive_seqs() {
    let (store, _db) = fresh_store().await;
    let (_, session) = user_and_session(&store).await;
    let sent = send_concurrently(&store, &session, 20, None).await;
    let mut seqs: Vec<_> = sent.iter().map(|appended| appended.message.seq).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=20).collect::<Vec<_>>());
}

/// Each send counts the session's active runs after it holds the session's
/// lock, so of many concurrent sends to an idle session exactly one claims
/// its run; counted before the lock (a snapshot older than the previous
/// sender's commit), several would.
#[tokio::test]
async fn of_concurrent_sends_to_an_idle_session_exactly_one_claims_its_run() {
    let (store, _db) = fresh_store().await;
    let (_, session) = user_and_session(&store).await;
    let sent = send_concurrently(&store, &session, 20, Some(lease("a"))).await;
    let claimed: Vec<_> = sent
        .iter()
        .filter_map(|appended| appended.run.as_ref())
        .filter(|run| run.status == RunStatus::Running)
        .map(|run| run.user_seq)
        .collect();
    assert_eq!(
        claimed,
        [1],
        "only the first message's run is claimed at the send"
    );
    let active = store.active_runs(&session).await.unwrap();
    assert_eq!(active.len(), 20);
    let running: Vec<_> = active.iter().filter(|r| r.status == RunStatus::Running).collect();
    assert_eq!(running.len(), 1);
}

#[tokio::test]
async fn concurrent_duplicates_store_one_message() {
    let (store, _db) = fresh_store().await;
    let (_, session) = user_and_session(&store).await;
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            let session = session.clone();
            tokio::spawn(async move { store.append_message(user_message(&session, "dup", "x")).await })
        })
        .collect();
    let mut ids = std::collections::HashSet::new();
    for task in tasks {
        ids.insert(task.await.unwrap().unwrap().message.id);
    }
    assert_eq!(ids.len(), 1);
}

#[tokio::test]
async fn runs_are_claimed_in_message_order_and_completed_with_a_reply() {
    let (store, _db) = fresh_store().await;
    let (_, session) = user_and_session(&store).await;
    let a = store
        .append_message(user_message(&session, "a", "first"))
        .await
        .unwrap();
    let b = store
        .append_message(user_message(&session, "b", "second"))
        .await
        .unwrap();
    let run = store
        .claim_next_run(&session, &lease("a"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(run.id, a.run.unwrap().id);
    assert_eq!(run.attempt, 1);
    let completed = store
        .complete_run(RunCompletion {
            run_id: run.id.clone(),
            session_id: session.clone(),
            agent: "echo".into(),
            content: "first".into(),
            first_delta_at: None,
            started_at: run.started_at,
            lease: lease("a"),
            tool_calls: None,
        })
        .await
        .unwrap();
    let reply = completed.message;
    assert_eq!(
        reply.seq, 3,
        "the reply takes the next seq after both user messages"
    );
    assert_eq!(reply.run_id.as_deref(), Some(run.id.as_str()));
    assert_eq!(
        store.get_run(&run.id).await.unwrap().unwrap().status,
        RunStatus::Completed
    );
    let next = completed
        .next
        .claimed()
        .expect("the reply's commit claims the session's next run");
    assert_eq!(next.id, b.run.unwrap().id);
    assert_eq!((next.status, next.attempt), (RunStatus::Running, 1));
    let stored = store.get_run(&next.id).await.unwrap().unwrap();
    assert_eq!(
        (stored.status, stored.lease_owner.as_deref()),
        (RunStatus::Running, Some("a")),
        "claimed in the store under the completion's lease"
    );
    assert!(
        store
            .claim_next_run(&session, &lease("b"))
            .await
            .unwrap()
            .is_none(),
        "nothing is left to claim"
    );
}

/// A send to a session with nothing else to run claims its run as it is
/// queued, under the lease it was given; behind another run it is queued.
#[tokio::test]
async fn a_send_to_an_idle_session_claims_its_run_in_the_same_transaction() {
    let (store, _db) = fresh_store().await;
    let (_, session) = user_and_session(&store).await;
    let first = store
        .append_message(NewMessage {
            claim: Some(lease("a")),
            ..user_message(&session, "a", "first")
        })
        .await
        .unwrap();
    let run = first.run.unwrap();
    assert_eq!((run.status, run.attempt), (RunStatus::Running, 1));
    let stored = store.get_run(&run.id).await.unwrap().unwrap();
    assert_eq!(
        (stored.status, stored.attempt, stored.lease_owner.as_deref()),
        (RunStatus::Running, 1, Some("a"))
    );
    assert!(stored.holds_live_lease(chat_core::domain::now_ms()));
    assert!(
        store
            .claim_next_run(&session, &lease("b"))
            .await
            .unwrap()
            .is_none(),
        "another replica cannot take a run claimed at the send"
    );
    let second = store
        .append_message(NewMessage {
            claim: Some(lease("a")),
            ..user_message(&session, "b", "second")
        })
        .await
        .unwrap();
    assert_eq!(
        second.run.unwrap().status,
        RunStatus::Queued,
        "a run behind another waits its turn"
    );
    let completed = store
        .complete_run(RunCompletion {
            run_id: run.id.clone(),
            session_id: session.clone(),
            agent: "echo".into(),
            content: "first".into(),
            first_delta_at: None,
            started_at: run.started_at,
            lease: lease("a"),
            tool_calls: None,
        })
        .await
        .unwrap();
    assert_eq!(completed.next.claimed().map(|r| r.user_seq), Some(2));
}

/// A resend of a stored message gets the original's ack even where a new
/// message would be refused: the session ended, or (reject policy) it is
/// busy with that very message's run.
#[tokio::test]
async fn a_resend_gets_the_original_where_a_new_message_is_refused() {
    let (store, _db) = fresh_store().await;
    let (_, session) = user_and_session(&store).await;
    let busy = |id: &str| NewMessage {
        reject_if_busy: true,
        ..user_message(&session, id, "x")
    };
    let original = store.append_message(busy("a")).await.unwrap();
    let again = store.append_message(busy("a")).await.unwrap();
    assert!(again.duplicate);
    assert_eq!(again.message.id, original.message.id);
    assert!(matches!(
        store.append_message(busy("b")).await,
        Err(StoreError::Busy)
    ));
    store
        .transition_session(&session, Transition::new(SessionChange::End, Actor::Owner))
        .await
        .unwrap();
    let after_end = store.append_message(busy("a")).await.unwrap();
    assert!(after_end.duplicate);
    assert_eq!(after_end.message.id, original.message.id);
    assert!(matches!(
        store.append_message(busy("c")).await,
        Err(StoreError::Conflict(_))
    ));
}

#[tokio::test]
async fn a_cancelled_run_cannot_be_completed() {
    let (store, _db) = fresh_store().await;
    let (_, session) = user_and_session(&store).await;
    store
        .append_message(user_message(&session, "a", "x"))
        .await
        .unwrap();
    let run = store
        .claim_next_run(&session, &lease("a"))
        .await
        .unwrap()
        .unwrap();
    assert!(
        store
            .finish_run(&run.id, RunStatus::Cancelled, None, None)
            .await
            .unwrap()
    );
    let completion = RunCompletion {
        run_id: run.id.clone(),
        session_id: session.clone(),
        agent: "echo".into(),
        content: "late".into(),
        first_delta_at: None,
        started_at: None,
        lease: lease("a"),
        tool_calls: None,
    };
    assert!(matches!(
        store.complete_run(completion).await,
        Err(StoreError::Conflict(_))
    ));
    let stored = store.get_session(&session).await.unwrap().unwrap();
    assert_eq!(stored.last_seq, 1, "the rolled-back reply leaves no gap");
    assert!(
        !store
            .finish_run(&run.id, RunStatus::Failed, None, None)
            .await
            .unwrap(),
        "terminal runs stay terminal"
    );
}

#[tokio::test]
async fn only_the_lease_holder_ends_a_run_it_runs() {
    let (store, _db) = fresh_store().await;
    let (_, session) = user_and_session(&store).await;
    store
        .append_message(user_message(&session, "a", "x"))
        .await
        .unwrap();
    let run = store
        .claim_next_run(&session, &lease("b"))
        .await
        .unwrap()
        .unwrap();

    // A replica that lost the run (here, never had it) cannot fail it...
    let stale = store
        .finish_run(&run.id, RunStatus::Failed, Some("stale".into()), Some("a"))
        .await
        .unwrap();
    assert!(!stale, "a stale replica ended a run another replica holds");
    // ...the holder can, and so can a cancel, which names no owner.
    assert!(
        store
            .finish_run(&run.id, RunStatus::Failed, None, Some("b"))
            .await
            .unwrap()
    );
}

/// The completion of `run` with `content` by the replica `owner`.
fn completion(run: &Run, content: &str, owner: &str) -> RunCompletion {
    RunCompletion {
        run_id: run.id.clone(),
        session_id: run.session_id.clone(),
        agent: "echo".into(),
        content: content.into(),
        first_delta_at: None,
        started_at: None,
        lease: lease(owner),
        tool_calls: None,
    }
}

/// A replica whose run was taken over (its lease lapsed) still ends its
/// attempt the way it would have: with a reply, a failure or a cancel. None
/// of it may be stored or announced; clients hear one outcome, the new
/// owner's.
#[tokio::test]
async fn a_replica_that_lost_its_lease_neither_ends_nor_announces_the_run() {
    let (store, _db) = fresh_store().await;
    let (_, session) = user_and_session(&store).await;
    store
        .append_message(user_message(&session, "a", "x"))
        .await
        .unwrap();
    let bus: Arc<dyn EventBus> = Arc::new(InProcessBus::default());
    let runs = RunLifecycle::new(store.clone(), bus.clone());
    let mut events = bus.subscribe(session.as_str()).await;
    let stale = store
        .claim_next_run(&session, &lease("a"))
        .await
        .unwrap()
        .unwrap();
    store.release_leases("a").await.unwrap();
    let taken = store
        .claim_next_run(&session, &lease("b"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((&taken.id, taken.attempt), (&stale.id, 2));

    // Replica a, unaware, ends its attempt every way it can.
    let after = runs
        .complete(
            &stale,
            stale.attempt,
            completion(&stale, "stale", "a"),
            SessionEffect::None,
        )
        .await;
    assert!(matches!(after, AfterReply::Unknown), "{after:?}");
    runs.record_end(&stale, RunStatus::Failed, "stale", "a").await;
    runs.record_end(&stale, RunStatus::Cancelled, "", "a").await;
    // Replica b completes it.
    runs.complete(
        &taken,
        taken.attempt,
        completion(&taken, "fresh", "b"),
        SessionEffect::None,
    )
    .await;

    // Everything published so far, up to a marker published last.
    bus.publish(
        session.as_str(),
        SessionEvent {
            event: Some(Event::Presence(Presence::default())),
        },
    )
    .await;
    let mut heard = Vec::new();
    loop {
        let item = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .expect("the session's events")
            .expect("the subscription lasts");
        let BusItem::Event(event) = item else {
            panic!("the subscription lost events");
        };
        heard.push(match &event.event {
            Some(Event::Message(m)) => format!("message {}", m.content),
            Some(Event::Run(r)) => format!("run {} attempt {}", r.status().as_str_name(), r.attempt),
            Some(Event::Presence(_)) => break,
            other => format!("{other:?}"),
        });
    }
    assert_eq!(
        heard,
        ["message fresh", "run RUN_STATUS_COMPLETED attempt 2"],
        "the stale replica announced nothing"
    );
    let run = store.get_run(&stale.id).await.unwrap().unwrap();
    assert_eq!((run.status, run.attempt), (RunStatus::Completed, 2));
    let stored = store
        .list_messages(MessageQuery {
            session_id: session.clone(),
            after_seq: Some(0),
            before_seq: None,
            limit: 10,
        })
        .await
        .unwrap();
    let contents: Vec<_> = stored.iter().map(|m| m.content.as_str()).collect();
    assert_eq!(contents, ["x", "fresh"], "the stale reply is not stored");
}

#[tokio::test]
async fn a_live_lease_keeps_other_replicas_out_until_it_expires() {
    let (store, _db) = fresh_store().await;
    let (_, session) = user_and_session(&store).await;
    store
        .append_message(user_message(&session, "a", "x"))
        .await
        .unwrap();
    store
        .append_message(user_message(&session, "b", "y"))
        .await
        .unwrap();
    // Short, but long enough for the claim and renewals below on a loaded machine.
    let short = Lease {
        owner: "a".into(),
        duration_ms: 2_000,
    };
    let run = store.claim_next_run(&session, &short).await.unwrap().unwrap();
    assert!(
        store
            .claim_next_run(&session, &lease("b"))
            .await
            .unwrap()
            .is_none(),
        "one run per session: the second run waits while the first is leased"
    );
    assert!(store.renew_lease(&run.id, &short).await.unwrap());
    assert!(
        !store.renew_lease(&run.id, &lease("b")).await.unwrap(),
        "only the owner renews"
    );

    // The owner dies: once its lease lapses the orphan scan finds the session
    // and another replica takes the same run over as a new attempt.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !store.orphaned_sessions(60_000).await.unwrap().contains(&session) {
        assert!(
            std::time::Instant::now() < deadline,
            "expired lease never reported"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let taken = store
        .claim_next_run(&session, &lease("b"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((taken.id.as_str(), taken.attempt), (run.id.as_str(), 2));
    assert!(
        !store.renew_lease(&run.id, &short).await.unwrap(),
        "the old owner lost it"
    );
    let late = RunCompletion {
        run_id: run.id.clone(),
        session_id: session.clone(),
        agent: "echo".into(),
        content: "stale".into(),
        first_delta_at: None,
        started_at: None,
        lease: lease("a"),
        tool_calls: None,
    };
    assert!(
        matches!(store.complete_run(late).await, Err(StoreError::Conflict(_))),
        "a stale owner cannot commit"
    );
}

#[tokio::test]
async fn released_leases_are_taken_over_at_once() {
    let (store, _db) = fresh_store().await;
    let (_, session) = user_and_session(&store).await;
    store
        .append_message(user_message(&session, "a", "x"))
        .await
        .unwrap();
    let run = store
        .claim_next_run(&session, &lease("a"))
        .await
        .unwrap()
        .unwrap();
    store.release_leases("a").await.unwrap();
    assert!(store.orphaned_sessions(60_000).await.unwrap().contains(&session));
    let taken = store
        .claim_next_run(&session, &lease("b"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(taken.id, run.id);
}

#[tokio::test]
async fn reject_policy_refuses_a_message_while_a_run_is_active() {
    let (store, _db) = fresh_store().await;
    let (_, session) = user_and_session(&store).await;
    store
        .append_message(user_message(&session, "a", "x"))
        .await
        .unwrap();
    let refused = store
        .append_message(NewMessage {
            reject_if_busy: true,
            author: None,
            metadata: None,
            ..user_message(&session, "b", "y")
        })
        .await;
    assert!(matches!(refused, Err(StoreError::Busy)));
    assert_eq!(
        store.get_session(&session).await.unwrap().unwrap().last_seq,
        1,
        "nothing was stored"
    );
    let run = store
        .claim_next_run(&session, &lease("a"))
        .await
        .unwrap()
        .unwrap();
    store
        .finish_run(&run.id, RunStatus::Failed, Some("x".into()), None)
        .await
        .unwrap();
    let accepted = store
        .append_message(NewMessage {
            reject_if_busy: true,
            author: None,
            metadata: None,
            ..user_message(&session, "b", "y")
        })
        .await;
    assert_eq!(accepted.unwrap().message.seq, 2);
}

/// The status check that matters is the one inside the appending
/// transaction: a session ended after the caller looked at it takes no
/// message, whatever the caller saw.
#[tokio::test]
async fn an_ended_or_expired_session_refuses_messages_inside_the_append() {
    let (store, _db) = fresh_store().await;
    for change in [SessionChange::End, SessionChange::Expire] {
        let (_, session) = user_and_session(&store).await;
        store
            .transition_session(
                &session,
                Transition::new(
                    change,
                    if change == SessionChange::Expire {
                        Actor::System
                    } else {
                        Actor::Owner
                    },
                ),
            )
            .await
            .unwrap();
        let refused = store
            .append_message(user_message(&session, "late", "hello"))
            .await;
        assert!(
            matches!(&refused, Err(StoreError::Conflict(why)) if why.contains("session is")),
            "{change:?}: {refused:?}"
        );
        let stored = store.get_session(&session).await.unwrap().unwrap();
        assert_eq!(stored.last_seq, 0, "{change:?}: the refused message took a seq");
        assert!(store.active_runs(&session).await.unwrap().is_empty());
    }
}

/// Whether a user message starts a run is decided with the status the
/// transaction reads: a session handed to a person meanwhile gets the
/// message and no run.
#[tokio::test]
async fn a_session_with_a_person_stores_user_messages_without_a_run() {
    let (store, _db) = fresh_store().await;
    let (_, session) = user_and_session(&store).await;
    store
        .transition_session(&session, Transition::new(SessionChange::Escalate, Actor::System))
        .await
        .unwrap();
    let appended = store
        .append_message(NewMessage {
            reject_if_busy: true,
            author: None,
            metadata: None,
            ..user_message(&session, "m1", "is anyone there?")
        })
        .await
        .unwrap();
    assert_eq!(appended.message.seq, 1);
    assert!(
        appended.run.is_none(),
        "a run started while a person handles the session"
    );
    assert!(store.active_runs(&session).await.unwrap().is_empty());
}

#[tokio::test]
async fn idle_sessions_expire_and_filters_select_by_status() {
    let (store, _db) = fresh_store().await;
    let (owner, idle) = user_and_session(&store).await;
    let busy = store
        .create_session(NewSession {
            owner_id: owner.clone(),
            title: String::new(),
            agent: "echo".into(),
            metadata: "{}".into(),
            concurrency: None,
        })
        .await
        .unwrap();
    let resolved = store
        .create_session(NewSession {
            owner_id: owner.clone(),
            title: String::new(),
            agent: "echo".into(),
            metadata: "{}".into(),
            concurrency: None,
        })
        .await
        .unwrap();
    store
        .transition_session(
            &resolved.id,
            Transition {
                notes: Some("done".into()),
                ..Transition::new(SessionChange::Resolve, Actor::Owner)
            },
        )
        .await
        .unwrap();
    assert_eq!(store.count_open_sessions(&owner).await.unwrap(), 2);
    let cutoff = store.get_session(&busy.id).await.unwrap().unwrap().updated_at + 1;
    tokio::time::sleep(Duration::from_millis(5)).await;
    store
        .append_message(user_message(&busy.id, "a", "x"))
        .await
        .unwrap();

    let expired = store.expire_idle_sessions(cutoff).await.unwrap();
    assert_eq!(
        expired,
        vec![idle.clone()],
        "only the idle active session expires"
    );
    assert_eq!(
        store.get_session(&idle).await.unwrap().unwrap().status,
        SessionStatus::Expired
    );
    assert_eq!(store.count_open_sessions(&owner).await.unwrap(), 1);

    let ids = |filter| {
        let store = store.clone();
        let owner = owner.clone();
        async move {
            let q = SessionQuery {
                owner_id: Some(owner),
                filter,
                limit: 50,
                cursor: None,
            };
            store
                .list_sessions(q)
                .await
                .unwrap()
                .sessions
                .into_iter()
                .map(|s| s.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(ids(SessionFilter::Unresolved).await, vec![busy.id.clone()]);
    assert_eq!(
        ids(SessionFilter::Status(SessionStatus::Resolved)).await,
        vec![resolved.id.clone()]
    );
    assert_eq!(
        ids(SessionFilter::UpdatedSince(cutoff)).await.first(),
        Some(&busy.id)
    );
    let ended = store
        .transition_session(&busy.id, Transition::new(SessionChange::End, Actor::Owner))
        .await
        .unwrap();
    assert_eq!(ended.status, SessionStatus::Ended);
    assert!(ended.ended_at.is_some());
}

#[tokio::test]
async fn message_pages_go_forward_and_backward() {
    let (store, _db) = fresh_store().await;
    let (_, session) = user_and_session(&store).await;
    for i in 0..10 {
        let new = NewMessage {
            start_run: false,
            ..user_message(&session, &format!("m{i}"), "x")
        };
        store.append_message(new).await.unwrap();
    }
    let q = |after_seq, before_seq, limit| MessageQuery {
        session_id: session.clone(),
        after_seq,
        before_seq,
        limit,
    };
    let seqs = |ms: Vec<Message>| ms.iter().map(|m| m.seq).collect::<Vec<_>>();
    assert_eq!(
        seqs(store.list_messages(q(Some(3), None, 3)).await.unwrap()),
        vec![4, 5, 6]
    );
    assert_eq!(
        seqs(store.list_messages(q(None, Some(5), 2)).await.unwrap()),
        vec![3, 4]
    );
    assert_eq!(
        seqs(store.list_messages(q(None, None, 3)).await.unwrap()),
        vec![8, 9, 10]
    );
    assert_eq!(
        seqs(store.list_messages(q(Some(2), Some(5), 10)).await.unwrap()),
        vec![3, 4]
    );
}

#[tokio::test]
async fn sessions_list_newest_first_with_cursor_and_owner_filter() {
    let (store, _db) = fresh_store().await;
    let (owner, first) = user_and_session(&store).await;
    let mut ids = vec![first];
    for _ in 0..4 {
        let s = store
            .create_session(NewSession {
                owner_id: owner.clone(),
                title: "t".into(),
                agent: "echo".into(),
                metadata: "{}".into(),
                concurrency: None,
            })
            .await
            .unwrap();
        ids.push(s.id);
    }
    let (_, other) = user_and_session(&store).await;
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .list_sessions(SessionQuery {
                owner_id: Some(owner.clone()),
                filter: SessionFilter::All,
                limit: 2,
                cursor,
            })
            .await
            .unwrap();
        seen.extend(page.sessions.iter().map(|s| s.id.clone()));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    ids.reverse();
    assert_eq!(seen, ids);
    assert!(!seen.contains(&other));
}

#[tokio::test]
async fn usernames_are_unique_and_deleting_a_session_removes_its_messages() {
    let (store, _db) = fresh_store().await;
    store.create_user("alice", "h").await.unwrap();
    assert!(matches!(
        store.create_user("alice", "h").await,
        Err(StoreError::Conflict(_))
    ));
    let (_, session) = user_and_session(&store).await;
    store
        .append_message(user_message(&session, "a", "x"))
        .await
        .unwrap();
    store.delete_session(&session).await.unwrap();
    assert!(store.get_session(&session).await.unwrap().is_none());
    assert!(matches!(
        store.delete_session(&session).await,
        Err(StoreError::NotFound(_))
    ));
}

#[tokio::test]
async fn the_recent_filter_leaves_out_sessions_idle_since_before_the_cutoff() {
    use sea_orm::ConnectionTrait;
    let (store, db) = fresh_store().await;
    let (owner, old) = user_and_session(&store).await;
    let fresh = store
        .create_session(NewSession {
            owner_id: owner.clone(),
            title: String::new(),
            agent: "echo".into(),
            metadata: "{}".into(),
            concurrency: None,
        })
        .await
        .unwrap();
    let conn = store::connect(&db.url, 1, Duration::from_secs(5)).await.unwrap();
    conn.execute_unprepared(&format!(
        "UPDATE sessions SET updated_at = 1000 WHERE id = '{old}'"
    ))
    .await
    .unwrap();
    let query = SessionQuery {
        owner_id: Some(owner),
        filter: SessionFilter::UpdatedSince(1_000_000),
        limit: 50,
        cursor: None,
    };
    let ids: Vec<_> = store
        .list_sessions(query)
        .await
        .unwrap()
        .sessions
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(ids, vec![fresh.id]);
}
