//! Session lifecycle and run control over real gRPC: concurrency policies,
//! cancel, the open-session cap, ending, idle expiry, filters and paging.
//! Each run-control behaviour is observed from a second connection.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::time::{Duration, Instant};

use chat_common::ErrorCode;
use chat_proto::chat::v1::{self as pb, session_event::Event};
use common::*;

fn is_status(event: &Event, run_id: &str, status: pb::RunStatus) -> bool {
    matches!(event, Event::Run(r) if r.run_id == run_id && r.status() == status)
}

fn is_delta_of(event: &Event, run_id: &str) -> bool {
    matches!(event, Event::Delta(d) if d.run_id == run_id)
}

async fn slow_stack(configure: impl FnOnce(&mut chat_core::Settings)) -> (chat_testkit::TestDatabase, Core) {
    let db = chat_testkit::TestDatabase::new().await.unwrap();
    let worker = spawn_worker_with(Some(SLOW_AGENTS)).await;
    let core = spawn_core_with(&db.url, &worker.url, configure).await;
    (db, core)
}

#[tokio::test]
async fn reject_policy_answers_busy_while_a_run_is_active() {
    let (_db, core) = slow_stack(|_| {}).await;
    let (_, token) = register(core.addr).await;
    let session = create_session_with(core.addr, &token, "slow", "reject").await;
    assert_eq!(session.concurrency, "reject");
    let mut observer = watch(core.addr, &token, &session.id).await;
    let first = start_send(core.addr, &token, &session.id, "m1", "one two three four")
        .await
        .unwrap();

    let refused = start_send(core.addr, &token, &session.id, "m2", "too soon")
        .await
        .unwrap_err();
    assert_eq!(ErrorCode::from_status(&refused), ErrorCode::Busy);

    next_matching(&mut observer, |e| {
        is_status(e, &first.run_id, pb::RunStatus::Completed)
    })
    .await;
    let messages = history(core.addr, &token, &session.id).await;
    assert_eq!(
        messages.iter().map(|m| m.content.as_str()).collect::<Vec<_>>(),
        ["one two three four"; 2]
    );
    // Once the run is over the session takes messages again.
    assert!(
        start_send(core.addr, &token, &session.id, "m3", "now")
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn interrupt_policy_cancels_the_running_run_and_answers_the_new_message() {
    let (_db, core) = slow_stack(|_| {}).await;
    let (_, token) = register(core.addr).await;
    let session = create_session_with(core.addr, &token, "slow", "interrupt").await;
    let mut observer = watch(core.addr, &token, &session.id).await;
    // Long enough (the slow agent says a word per 150 ms) to be running
    // still when the next message comes, on a loaded machine too.
    let first = start_send(
        core.addr,
        &token,
        &session.id,
        "m1",
        &"a long answer that takes a while ".repeat(10),
    )
    .await
    .unwrap();
    next_matching(&mut observer, |e| is_delta_of(e, &first.run_id)).await;

    let second = start_send(core.addr, &token, &session.id, "m2", "never mind")
        .await
        .unwrap();
    next_matching(&mut observer, |e| {
        is_status(e, &first.run_id, pb::RunStatus::Cancelled)
    })
    .await;
    let Event::Message(reply) = next_matching(
        &mut observer,
        |e| matches!(e, Event::Message(m) if m.role == "assistant"),
    )
    .await
    else {
        unreachable!()
    };
    assert_eq!(
        reply.run_id.as_deref(),
        Some(second.run_id.as_str()),
        "the first reply is never stored"
    );
    assert_eq!(reply.content, "never mind");
    let roles: Vec<_> = history(core.addr, &token, &session.id)
        .await
        .into_iter()
        .map(|m| m.role)
        .collect();
    assert_eq!(roles, ["user", "user", "assistant"]);
}

#[tokio::test]
async fn cancel_stops_a_running_run_and_every_subscriber_is_told() {
    let (_db, core) = slow_stack(|_| {}).await;
    let (_, token) = register(core.addr).await;
    let session = create_session_with(core.addr, &token, "slow", "").await;
    let mut observer = watch(core.addr, &token, &session.id).await;
    let ack = start_send(
        core.addr,
        &token,
        &session.id,
        "m1",
        &"please stop me before I finish ".repeat(10),
    )
    .await
    .unwrap();
    next_matching(&mut observer, |e| is_delta_of(e, &ack.run_id)).await;

    let request = pb::CancelRunRequest {
        session_id: session.id.clone(),
        run_id: ack.run_id.clone(),
    };
    client(core.addr)
        .await
        .cancel_run(with_token(request, &token))
        .await
        .unwrap();
    next_matching(&mut observer, |e| {
        is_status(e, &ack.run_id, pb::RunStatus::Cancelled)
    })
    .await;

    let messages = history(core.addr, &token, &session.id).await;
    assert_eq!(messages.len(), 1, "a cancelled run stores no reply");
    // The next message is answered normally.
    let next = start_send(core.addr, &token, &session.id, "m2", "hi")
        .await
        .unwrap();
    next_matching(&mut observer, |e| {
        is_status(e, &next.run_id, pb::RunStatus::Completed)
    })
    .await;
}

#[tokio::test]
async fn queued_runs_can_be_cancelled_before_they_start() {
    let (_db, core) = slow_stack(|_| {}).await;
    let (_, token) = register(core.addr).await;
    let session = create_session_with(core.addr, &token, "slow", "enqueue").await;
    let mut observer = watch(core.addr, &token, &session.id).await;
    // Running for ~1.5 s (a word per 150 ms): the second message is queued
    // and cancelled meanwhile.
    let long = "first answer here, in enough words to outlast the cancel";
    let first = start_send(core.addr, &token, &session.id, "m1", long)
        .await
        .unwrap();
    let second = start_send(core.addr, &token, &session.id, "m2", "second")
        .await
        .unwrap();
    let request = pb::CancelRunRequest {
        session_id: session.id.clone(),
        run_id: second.run_id.clone(),
    };
    client(core.addr)
        .await
        .cancel_run(with_token(request, &token))
        .await
        .unwrap();
    next_matching(&mut observer, |e| {
        is_status(e, &second.run_id, pb::RunStatus::Cancelled)
    })
    .await;
    next_matching(&mut observer, |e| {
        is_status(e, &first.run_id, pb::RunStatus::Completed)
    })
    .await;
    let contents: Vec<_> = history(core.addr, &token, &session.id)
        .await
        .into_iter()
        .map(|m| m.content)
        .collect();
    assert_eq!(contents, [long, "second", long]);
}

#[tokio::test]
async fn the_open_session_cap_holds_and_ending_a_session_frees_a_slot() {
    let (_db, core) = slow_stack(|s| s.max_sessions_per_user = 2).await;
    let (_, token) = register(core.addr).await;
    let first = create_session(core.addr, &token).await;
    create_session(core.addr, &token).await;
    let request = pb::CreateSessionRequest {
        agent: "echo".into(),
        ..Default::default()
    };
    let refused = client(core.addr)
        .await
        .create_session(with_token(request.clone(), &token))
        .await
        .unwrap_err();
    assert_eq!(ErrorCode::from_status(&refused), ErrorCode::Conflict);
    assert!(refused.message().contains("limit"), "{}", refused.message());

    let ended = client(core.addr)
        .await
        .end_session(with_token(
            pb::EndSessionRequest {
                session_id: first.id.clone(),
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ended.status, "ended");
    let after_end = start_send(core.addr, &token, &first.id, "late", "hello?")
        .await
        .unwrap_err();
    assert_eq!(
        ErrorCode::from_status(&after_end),
        ErrorCode::Conflict,
        "an ended session takes no messages"
    );
    assert!(
        client(core.addr)
            .await
            .create_session(with_token(request, &token))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn idle_sessions_expire_by_the_sweeper() {
    let (_db, core) = slow_stack(|s| {
        s.session_ttl_secs = 1;
        s.session_sweep_interval_ms = 50;
    })
    .await;
    let (_, token) = register(core.addr).await;
    let session = create_session(core.addr, &token).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let request = pb::GetSessionRequest {
            session_id: session.id.clone(),
        };
        let status = client(core.addr)
            .await
            .get_session(with_token(request, &token))
            .await
            .unwrap()
            .into_inner()
            .status;
        if status == "expired" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "session never expired (status {status})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn sessions_list_by_filter_and_page_by_cursor() {
    let (_db, core) = slow_stack(|_| {}).await;
    let (_, token) = register(core.addr).await;
    let mut created = Vec::new();
    for _ in 0..5 {
        created.push(create_session(core.addr, &token).await.id);
    }
    let request = pb::ResolveSessionRequest {
        session_id: created[0].clone(),
        notes: "solved".into(),
    };
    let resolved = client(core.addr)
        .await
        .resolve_session(with_token(request, &token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (resolved.status.as_str(), resolved.resolution_notes.as_str()),
        ("resolved", "solved")
    );

    let list = |status: &str, cursor: String| {
        let request = pb::ListSessionsRequest {
            status: status.into(),
            limit: 2,
            cursor,
        };
        let token = token.clone();
        async move {
            client(core.addr)
                .await
                .list_sessions(with_token(request, &token))
                .await
        }
    };
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = list("unresolved", cursor).await.unwrap().into_inner();
        assert!(page.sessions.len() <= 2);
        seen.extend(page.sessions.into_iter().map(|s| s.id));
        if page.next_cursor.is_empty() {
            break;
        }
        cursor = page.next_cursor;
    }
    let mut expected: Vec<_> = created[1..].to_vec();
    expected.reverse();
    assert_eq!(seen, expected, "newest first, every unresolved session once");
    let resolved_only = list("resolved", String::new()).await.unwrap().into_inner();
    assert_eq!(
        resolved_only
            .sessions
            .iter()
            .map(|s| s.id.clone())
            .collect::<Vec<_>>(),
        vec![created[0].clone()]
    );
    assert_eq!(
        list("recent", String::new())
            .await
            .unwrap()
            .into_inner()
            .sessions
            .len(),
        2
    );
    let bad = list("nonsense", String::new()).await.unwrap_err();
    assert_eq!(ErrorCode::from_status(&bad), ErrorCode::Invalid);
}

#[tokio::test]
async fn replies_carry_their_agent_run_and_timing() {
    let (_db, core) = slow_stack(|_| {}).await;
    let (_, token) = register(core.addr).await;
    let session = create_session_with(core.addr, &token, "slow", "").await;
    let events = send(core.addr, &token, &session.id, "m1", "two words").await;
    assert!(events.len() > 2);
    let messages = history(core.addr, &token, &session.id).await;
    let reply = &messages[1];
    assert_eq!(reply.agent, "slow");
    assert!(reply.run_id.is_some());
    let (first, total) = (reply.first_delta_ms.unwrap(), reply.duration_ms.unwrap());
    assert!(
        first >= 0 && total >= first,
        "first delta {first} ms, total {total} ms"
    );
    assert!(total >= 150, "the slow agent waits between words: {total} ms");
    assert_eq!(messages[0].first_delta_ms, None, "user messages have no timing");
}

#[tokio::test]
async fn an_agents_policy_applies_to_its_sessions_unless_the_session_has_its_own() {
    let (_db, core) = slow_stack(|s| {
        s.agent_concurrency = vec![chat_core::settings::AgentPolicy {
            agent: "slow".into(),
            policy: chat_core::service::Concurrency::Reject,
        }];
    })
    .await;
    let (_, token) = register(core.addr).await;
    let by_agent = create_session_with(core.addr, &token, "slow", "").await;
    let first = start_send(core.addr, &token, &by_agent.id, "m1", "one two three four")
        .await
        .unwrap();
    let refused = start_send(core.addr, &token, &by_agent.id, "m2", "too soon")
        .await
        .unwrap_err();
    assert_eq!(
        ErrorCode::from_status(&refused),
        ErrorCode::Busy,
        "the agent's reject policy applies"
    );
    assert!(!first.run_id.is_empty());

    let own = create_session_with(core.addr, &token, "slow", "enqueue").await;
    start_send(core.addr, &token, &own.id, "m1", "one two three four")
        .await
        .unwrap();
    assert!(
        start_send(core.addr, &token, &own.id, "m2", "queued")
            .await
            .is_ok(),
        "the session's own policy wins over its agent's"
    );
}

fn is_session_status(event: &Event, session_id: &str, status: &str) -> bool {
    matches!(event, Event::Session(s) if s.session_id == session_id && s.status == status)
}

#[tokio::test]
async fn resolving_ending_and_idle_expiry_are_published_to_subscribers() {
    let (_db, core) = slow_stack(|s| {
        s.session_ttl_secs = 2;
        s.session_sweep_interval_ms = 50;
    })
    .await;
    let (_, token) = register(core.addr).await;
    let handled = create_session(core.addr, &token).await;
    let idle = create_session(core.addr, &token).await;
    let mut handled_events = watch(core.addr, &token, &handled.id).await;
    let mut idle_events = watch(core.addr, &token, &idle.id).await;

    let request = pb::ResolveSessionRequest {
        session_id: handled.id.clone(),
        notes: "done".into(),
    };
    client(core.addr)
        .await
        .resolve_session(with_token(request, &token))
        .await
        .unwrap();
    next_matching(&mut handled_events, |e| {
        is_session_status(e, &handled.id, "resolved")
    })
    .await;

    let request = pb::EndSessionRequest {
        session_id: handled.id.clone(),
    };
    client(core.addr)
        .await
        .end_session(with_token(request, &token))
        .await
        .unwrap();
    next_matching(&mut handled_events, |e| {
        is_session_status(e, &handled.id, "ended")
    })
    .await;

    next_matching(&mut idle_events, |e| is_session_status(e, &idle.id, "expired")).await;
}

#[tokio::test]
async fn an_ended_session_cannot_be_resolved_or_handed_back() {
    let (_db, core) = slow_stack(|_| {}).await;
    let (_, token) = register(core.addr).await;
    let session = create_session(core.addr, &token).await;
    let request = pb::EndSessionRequest {
        session_id: session.id.clone(),
    };
    client(core.addr)
        .await
        .end_session(with_token(request, &token))
        .await
        .unwrap();
    let request = pb::ResolveSessionRequest {
        session_id: session.id.clone(),
        notes: String::new(),
    };
    let refused = client(core.addr)
        .await
        .resolve_session(with_token(request, &token))
        .await
        .unwrap_err();
    assert_eq!(ErrorCode::from_status(&refused), ErrorCode::Conflict);
}
