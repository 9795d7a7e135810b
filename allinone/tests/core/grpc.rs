//! chat-core over real gRPC: sends, replies, ordering, restarts and resume.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::time::Duration;

use chat_proto::chat::v1::{self as pb, send_message_event::Event as SendEvent, session_event::Event};
use common::*;
use futures::StreamExt;

fn reply_of(events: &[pb::SendMessageEvent]) -> pb::Message {
    events
        .iter()
        .find_map(|e| match &e.event {
            Some(SendEvent::SessionEvent(pb::SessionEvent {
                event: Some(Event::Message(m)),
            })) => Some(m.as_ref().clone()),
            _ => None,
        })
        .expect("a stored reply")
}

#[tokio::test]
async fn send_streams_ack_deltas_and_the_stored_reply() {
    let stack = spawn_stack().await;
    let (_, token) = register(stack.core.addr).await;
    let session = create_session(stack.core.addr, &token).await;
    let events = send(
        stack.core.addr,
        &token,
        &session.id,
        "m1",
        "hello streaming world",
    )
    .await;

    let Some(SendEvent::Ack(ack)) = &events[0].event else {
        panic!("first event is the ack")
    };
    assert_eq!(ack.seq, 1);
    let deltas: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.event {
            Some(SendEvent::SessionEvent(pb::SessionEvent {
                event: Some(Event::Delta(d)),
            })) => Some(d.clone()),
            _ => None,
        })
        .collect();
    assert!(deltas.len() >= 2, "the reply is streamed in several deltas");
    assert!(deltas.iter().enumerate().all(|(i, d)| d.index as usize == i));
    let reply = reply_of(&events);
    assert_eq!(reply.seq, 2);
    assert_eq!(reply.role, "assistant");
    assert_eq!(
        reply.content,
        deltas.iter().map(|d| d.text.as_str()).collect::<String>()
    );
    assert_eq!(reply.content, "hello streaming world");
    let Some(SendEvent::SessionEvent(pb::SessionEvent {
        event: Some(Event::Run(last)),
    })) = &events.last().unwrap().event
    else {
        panic!("the stream ends with the run's terminal status")
    };
    assert_eq!(last.status(), pb::RunStatus::Completed);
}

#[tokio::test]
async fn calls_without_a_valid_token_are_unauthenticated() {
    let stack = spawn_stack().await;
    let mut client = client(stack.core.addr).await;
    let err = client
        .list_sessions(pb::ListSessionsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    let err = client
        .list_sessions(with_token(pb::ListSessionsRequest::default(), "garbage"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    let other = chat_common::token::TokenKeys::new(b"another secret")
        .sign("x", chat_common::token::Role::Service, Duration::from_secs(60))
        .unwrap();
    let err = client
        .list_sessions(with_token(pb::ListSessionsRequest::default(), &other))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
}

#[tokio::test]
async fn chat_core_accepts_only_tokens_meant_for_it() {
    use chat_common::token::{Audience, ISSUER, Role};
    let stack = spawn_stack().await;
    let mut client = client(stack.core.addr).await;
    let list = |token: &str| with_token(pb::ListSessionsRequest::default(), token);
    let raw = |claims: serde_json::Value| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    };
    let now = chat_core::domain::now_ms() as u64 / 1000;
    let service = |aud: serde_json::Value, typ: &str| {
        raw(serde_json::json!({
            "sub": "desk", "role": "service", "typ": typ, "aud": aud,
            "iss": ISSUER, "iat": now, "exp": now + 60, "jti": "j",
        }))
    };

    // The control: a service token for chat-core.
    let good = service(serde_json::json!(["chat-core"]), "service");
    assert!(client.list_sessions(list(&good)).await.is_ok());
    let refused = [
        (
            "a token meant for the gateway only",
            keys()
                .sign_for("u", Role::User, &[Audience::Gateway], Duration::from_secs(60))
                .unwrap(),
        ),
        (
            "a service token without an audience",
            raw(serde_json::json!({
                "sub": "desk", "role": "service", "typ": "service",
                "iss": ISSUER, "iat": now, "exp": now + 60, "jti": "j",
            })),
        ),
        (
            "a service role typed as an access token",
            service(serde_json::json!(["chat-core"]), "access"),
        ),
        (
            "another audience",
            service(serde_json::json!(["agent-worker"]), "service"),
        ),
    ];
    for (name, token) in refused {
        let err = client.list_sessions(list(&token)).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated, "{name}");
    }
}

#[tokio::test]
async fn another_users_session_is_forbidden() {
    let stack = spawn_stack().await;
    let (_, alice) = register(stack.core.addr).await;
    let (_, bob) = register(stack.core.addr).await;
    let session = create_session(stack.core.addr, &alice).await;
    let mut client = client(stack.core.addr).await;
    let err = client
        .get_session(with_token(
            pb::GetSessionRequest {
                session_id: session.id.clone(),
            },
            &bob,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    let err = client
        .subscribe(with_token(
            pb::SubscribeRequest {
                session_id: session.id.clone(),
                after_seq: 0,
            },
            &bob,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    let listed = client
        .list_sessions(with_token(pb::ListSessionsRequest::default(), &bob))
        .await
        .unwrap();
    assert!(listed.into_inner().sessions.is_empty());
}

#[tokio::test]
async fn history_survives_a_restart_and_subscribe_resumes_after_seq() {
    let db = chat_testkit::TestDatabase::new().await.unwrap();
    let worker = spawn_worker().await;
    let core = spawn_core(&db.url, &worker.url).await;
    let (_, token) = register(core.addr).await;
    let session = create_session(core.addr, &token).await;
    for i in 0..3 {
        send(
            core.addr,
            &token,
            &session.id,
            &format!("m{i}"),
            &format!("message {i}"),
        )
        .await;
    }
    core.stop().await.expect("core stops");

    let core = spawn_core(&db.url, &worker.url).await;
    let messages = history(core.addr, &token, &session.id).await;
    assert_eq!(
        messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5, 6]
    );
    assert_eq!(messages[5].content, "message 2");

    let mut events = client(core.addr)
        .await
        .subscribe(with_token(
            pb::SubscribeRequest {
                session_id: session.id.clone(),
                after_seq: 4,
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    // The replay: the messages after after_seq, then how their run ended.
    let mut replay = Vec::new();
    while replay.len() < 3 {
        let event = tokio::time::timeout(Duration::from_secs(5), events.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        match event.event {
            Some(Event::Message(m)) => replay.push(format!("message {}", m.seq)),
            Some(Event::Run(r)) => replay.push(format!("run {}", r.status().as_str_name())),
            other => panic!("unexpected in the replay: {other:?}"),
        }
    }
    assert_eq!(
        replay,
        ["message 5", "message 6", "run RUN_STATUS_COMPLETED"],
        "exactly what follows after_seq"
    );
    // A new message arrives live on the same subscription, after the replay.
    send(core.addr, &token, &session.id, "m-live", "live").await;
    let event = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let Some(Event::Message(m)) = event.event else {
        panic!("expected the live user message, got {event:?}")
    };
    assert_eq!(m.seq, 7);
}

#[tokio::test]
async fn back_to_back_messages_are_answered_in_order_without_interleaving() {
    let stack = spawn_stack().await;
    let (_, token) = register(stack.core.addr).await;
    let session = create_session(stack.core.addr, &token).await;
    let mut events = client(stack.core.addr)
        .await
        .subscribe(with_token(
            pb::SubscribeRequest {
                session_id: session.id.clone(),
                after_seq: 0,
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    let sends: Vec<_> = (0..3)
        .map(|i| {
            let token = token.clone();
            let session_id = session.id.clone();
            let addr = stack.core.addr;
            async move {
                send(
                    addr,
                    &token,
                    &session_id,
                    &format!("m{i}"),
                    &format!("reply number {i}"),
                )
                .await
            }
        })
        .collect();
    futures::future::join_all(sends).await;

    let mut messages = Vec::new();
    let mut delta_runs = Vec::new();
    while messages.len() < 6 {
        let event = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        match event.event {
            Some(Event::Message(m)) => messages.push(m),
            Some(Event::Delta(d)) if delta_runs.last() != Some(&d.run_id) => {
                delta_runs.push(d.run_id);
            }
            _ => {}
        }
    }
    assert_eq!(
        messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5, 6]
    );
    let replies: Vec<_> = messages.iter().filter(|m| m.role == "assistant").collect();
    assert_eq!(replies.len(), 3);
    for reply in &replies {
        let question = messages
            .iter()
            .find(|m| m.seq < reply.seq && m.role == "user" && m.content == reply.content);
        assert!(question.is_some(), "each reply echoes a message sent before it");
    }
    let mut distinct = delta_runs.clone();
    distinct.dedup();
    assert_eq!(delta_runs.len(), 3, "each run streams as one uninterrupted block");
    // Replies come back in the order their messages were stored.
    let users: Vec<_> = messages
        .iter()
        .filter(|m| m.role == "user")
        .map(|m| m.content.clone())
        .collect();
    let answered: Vec<_> = replies.iter().map(|m| m.content.clone()).collect();
    assert_eq!(users, answered);
}

#[tokio::test]
async fn resent_client_msg_id_returns_the_original_ack_and_one_run() {
    let stack = spawn_stack().await;
    let (_, token) = register(stack.core.addr).await;
    let session = create_session(stack.core.addr, &token).await;
    let first = send(stack.core.addr, &token, &session.id, "same-id", "only once").await;
    let second = send(stack.core.addr, &token, &session.id, "same-id", "only once").await;
    let (Some(SendEvent::Ack(a)), Some(SendEvent::Ack(b))) = (&first[0].event, &second[0].event) else {
        panic!("acks first")
    };
    assert_eq!(
        (a.message_id.as_str(), a.seq, a.run_id.as_str()),
        (b.message_id.as_str(), b.seq, b.run_id.as_str())
    );
    assert!(!a.duplicate && b.duplicate);
    assert_eq!(
        reply_of(&second).id,
        reply_of(&first).id,
        "the resend reports the original reply"
    );
    let messages = history(stack.core.addr, &token, &session.id).await;
    assert_eq!(messages.len(), 2, "one user message and one reply");
}

/// A resend that arrives while the original's run is still streaming, even
/// with other content, is the original message: the same ack, no second
/// run (no second `queued` event, no second run id anywhere), and the reply
/// answers the original content.
#[tokio::test]
async fn a_resend_during_the_run_with_other_content_starts_no_second_run() {
    let db = chat_testkit::TestDatabase::new().await.unwrap();
    let worker = spawn_worker_with(Some(SLOW_AGENTS)).await;
    let core = spawn_core(&db.url, &worker.url).await;
    let (_, token) = register(core.addr).await;
    let session = create_session_with(core.addr, &token, "slow", "").await;
    let mut watcher = watch(core.addr, &token, &session.id).await;

    let first = start_send(core.addr, &token, &session.id, "same-id", "the original words")
        .await
        .unwrap();
    next_matching(
        &mut watcher,
        |e| matches!(e, Event::Delta(d) if d.run_id == first.run_id),
    )
    .await;
    let resent = send(core.addr, &token, &session.id, "same-id", "different words").await;
    let Some(SendEvent::Ack(again)) = &resent[0].event else {
        panic!("ack first")
    };
    assert!(again.duplicate);
    assert_eq!(
        (again.message_id.as_str(), again.seq, again.run_id.as_str()),
        (first.message_id.as_str(), first.seq, first.run_id.as_str())
    );
    assert_eq!(reply_of(&resent).content, "the original words");

    let mut run_ids = std::collections::BTreeSet::new();
    let mut queued = 0;
    loop {
        let event = next_matching(&mut watcher, |_| true).await;
        match &event {
            Event::Run(r) => {
                run_ids.insert(r.run_id.clone());
                queued += usize::from(r.status() == pb::RunStatus::Queued);
                if r.status().is_terminal() {
                    break;
                }
            }
            Event::Delta(d) => {
                run_ids.insert(d.run_id.clone());
            }
            _ => {}
        }
    }
    assert_eq!(run_ids, [first.run_id.clone()].into(), "one run only");
    // The original's `queued` came before its first delta, which the watch
    // had already passed.
    assert_eq!(queued, 0, "a run was queued for the resend");
    let messages = history(core.addr, &token, &session.id).await;
    assert_eq!(messages.len(), 2, "one user message and one reply");
    assert_eq!(messages[0].content, "the original words");
}

#[tokio::test]
async fn health_reports_serving_with_the_database_up() {
    let stack = spawn_stack().await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel(stack.core.addr).await);
    let request = tonic_health::pb::HealthCheckRequest {
        service: "chat.v1.ChatService".into(),
    };
    let mut status = health.watch(request).await.unwrap().into_inner();
    loop {
        let next = tokio::time::timeout(Duration::from_secs(5), status.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if next.status() == tonic_health::pb::health_check_response::ServingStatus::Serving {
            break;
        }
    }
}

#[tokio::test]
async fn agent_workers_named_by_dns_are_resolved() {
    let db = chat_testkit::TestDatabase::new().await.unwrap();
    let worker = spawn_worker().await;
    let port = worker.url.rsplit(':').next().unwrap();
    let core = spawn_core(&db.url, &format!("http://localhost:{port}")).await;
    let (_, token) = register(core.addr).await;
    let session = create_session(core.addr, &token).await;
    let events = send(core.addr, &token, &session.id, "m1", "found by name").await;
    assert_eq!(reply_of(&events).content, "found by name");
}

/// Every session status and message role is sent both as text (for
/// existing clients) and as its enum, and the two agree.
#[tokio::test]
async fn statuses_and_roles_come_as_text_and_as_enums_that_agree() {
    let stack = spawn_stack().await;
    let (_, token) = register(stack.core.addr).await;
    let session = create_session(stack.core.addr, &token).await;
    assert_eq!(
        (session.status.as_str(), session.session_status()),
        ("active", pb::SessionStatus::Active)
    );
    send(stack.core.addr, &token, &session.id, "m1", "hello").await;
    let roles: Vec<_> = history(stack.core.addr, &token, &session.id)
        .await
        .iter()
        .map(|m| (m.role.clone(), m.message_role()))
        .collect();
    assert_eq!(
        roles,
        [
            ("user".to_owned(), pb::MessageRole::User),
            ("assistant".to_owned(), pb::MessageRole::Assistant)
        ]
    );
    let ended = client(stack.core.addr)
        .await
        .end_session(with_token(
            pb::EndSessionRequest {
                session_id: session.id.clone(),
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (ended.status.as_str(), ended.session_status()),
        ("ended", pb::SessionStatus::Ended)
    );
}
