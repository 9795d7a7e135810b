//! Orchestration over real gRPC against a real agent-worker: routing by a
//! router, handoffs that move the session to another agent, escalation to a
//! human who answers through chat-core's gRPC with a service token and
//! hands the session back.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::time::Duration;

use chat_common::ErrorCode;
use chat_common::token::{Role, TokenKeys};
use chat_proto::chat::v1::{self as pb, session_event::Event};
use common::*;

fn handoffs(events: &[pb::SendMessageEvent]) -> Vec<pb::Handoff> {
    events
        .iter()
        .filter_map(|e| match &e.event {
            Some(pb::send_message_event::Event::SessionEvent(pb::SessionEvent {
                event: Some(Event::Handoff(h)),
            })) => Some(h.clone()),
            _ => None,
        })
        .collect()
}

fn reply(events: &[pb::SendMessageEvent]) -> pb::Message {
    events
        .iter()
        .find_map(|e| match &e.event {
            Some(pb::send_message_event::Event::SessionEvent(pb::SessionEvent {
                event: Some(Event::Message(m)),
            })) if m.role == "assistant" => Some(m.as_ref().clone()),
            _ => None,
        })
        .expect("a stored reply")
}

async fn session_of(addr: std::net::SocketAddr, token: &str, id: &str) -> pb::Session {
    let request = pb::GetSessionRequest {
        session_id: id.into(),
    };
    client(addr)
        .await
        .get_session(with_token(request, token))
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test]
async fn a_router_hands_each_message_to_its_specialist_and_stays_the_sessions_agent() {
    let stack = spawn_stack().await;
    let (_, token) = register(stack.core.addr).await;
    let session = create_session_with(stack.core.addr, &token, "bank", "").await;

    let events = send(
        stack.core.addr,
        &token,
        &session.id,
        "m1",
        "I lost my card yesterday",
    )
    .await;
    let hops = handoffs(&events);
    assert_eq!(hops.len(), 1);
    assert_eq!(
        (hops[0].from_agent.as_str(), hops[0].to_agent.as_str()),
        ("bank", "cards")
    );
    assert_eq!(
        reply(&events).agent,
        "cards",
        "the specialist answers and is recorded as the author"
    );

    let events = send(stack.core.addr, &token, &session.id, "m2", "what is my balance?").await;
    assert_eq!(
        handoffs(&events)[0].to_agent,
        "balances",
        "the router picks again for every message"
    );
    assert_eq!(
        session_of(stack.core.addr, &token, &session.id).await.agent,
        "bank"
    );
}

#[tokio::test]
async fn a_handoff_by_an_agent_moves_the_conversation_to_the_new_agent() {
    let db = chat_testkit::TestDatabase::new().await.unwrap();
    let worker = spawn_worker_with(Some(
        r#"
[[agents]]
name = "front"
kind = "rules"
default_reply = "Hello from the front desk."
rules = [{ keywords = ["repeat"], route = "echo" }]

[[agents]]
name = "echo"
kind = "echo"
"#,
    ))
    .await;
    let core = spawn_core(&db.url, &worker.url).await;
    let (_, token) = register(core.addr).await;
    let session = create_session_with(core.addr, &token, "front", "").await;
    let mut observer = watch(core.addr, &token, &session.id).await;

    let events = send(core.addr, &token, &session.id, "m1", "please repeat this").await;
    assert_eq!(handoffs(&events)[0].to_agent, "echo");
    assert_eq!(reply(&events).content, "please repeat this");
    let changed = next_matching(&mut observer, |e| matches!(e, Event::Session(_))).await;
    let Event::Session(changed) = changed else {
        unreachable!()
    };
    assert_eq!(
        changed.agent, "echo",
        "subscribers are told the session's agent changed"
    );
    assert_eq!(session_of(core.addr, &token, &session.id).await.agent, "echo");

    let events = send(core.addr, &token, &session.id, "m2", "no keyword here").await;
    assert!(handoffs(&events).is_empty());
    assert_eq!(
        reply(&events).content,
        "no keyword here",
        "the next message goes to the new agent"
    );
}

#[tokio::test]
async fn escalation_waits_for_a_human_who_answers_over_grpc_and_hands_back() {
    let stack = spawn_stack().await;
    let addr = stack.core.addr;
    let (_, token) = register(addr).await;
    let session = create_session_with(addr, &token, "bank", "").await;
    let mut observer = watch(addr, &token, &session.id).await;

    let events = send(addr, &token, &session.id, "m1", "I want to speak to a person").await;
    assert!(handoffs(&events).iter().any(|h| h.to_agent == "human"));
    assert!(!reply(&events).content.is_empty(), "a holding reply is stored");
    let Event::Session(changed) = next_matching(&mut observer, |e| matches!(e, Event::Session(_))).await
    else {
        unreachable!()
    };
    assert_eq!(
        changed.status, "pending_human",
        "clients are told a person takes over"
    );

    // While a person handles the session, user messages wait for them: no run.
    let waiting = start_send(addr, &token, &session.id, "m2", "hello? anyone?")
        .await
        .unwrap();
    assert!(waiting.run_id.is_empty());

    // An internal service finds the waiting session and answers as `human`.
    let service = TokenKeys::new(SECRET.as_bytes())
        .sign("support-desk", Role::Service, Duration::from_secs(60))
        .unwrap();
    let mut desk = client(addr).await;
    let request = pb::ListSessionsRequest {
        status: "pending_human".into(),
        limit: 200,
        cursor: String::new(),
    };
    let waiting_sessions = desk
        .list_sessions(with_token(request, &service))
        .await
        .unwrap()
        .into_inner()
        .sessions;
    assert!(waiting_sessions.iter().any(|s| s.id == session.id));
    let answer = pb::SendMessageRequest {
        session_id: session.id.clone(),
        client_msg_id: "desk-1".into(),
        content: "Hi, this is Sam from the team. How can I help?".into(),
        role: "human".into(),
        metadata_json: String::new(),
    };
    desk.send_message(with_token(answer, &service)).await.unwrap();
    let Event::Message(human) = next_matching(
        &mut observer,
        |e| matches!(e, Event::Message(m) if m.role == "human"),
    )
    .await
    else {
        unreachable!()
    };
    assert_eq!(human.seq, 4);

    // The user may not resolve the session past the person who holds it; the person's side may.
    let resolve = |notes: &str| pb::ResolveSessionRequest {
        session_id: session.id.clone(),
        notes: notes.into(),
    };
    let skipped = client(addr)
        .await
        .resolve_session(with_token(resolve("never mind"), &token))
        .await
        .unwrap_err();
    assert_eq!(
        ErrorCode::from_status(&skipped),
        ErrorCode::Conflict,
        "{skipped:?}"
    );
    assert!(
        skipped.message().contains("pending_human"),
        "{}",
        skipped.message()
    );

    // A user may not post as a human.
    let forged = pb::SendMessageRequest {
        role: "human".into(),
        client_msg_id: "x".into(),
        content: "hi".into(),
        session_id: session.id.clone(),
        metadata_json: String::new(),
    };
    assert_eq!(
        client(addr)
            .await
            .send_message(with_token(forged, &token))
            .await
            .unwrap_err()
            .code(),
        tonic::Code::PermissionDenied
    );
    let back = pb::HandBackRequest {
        session_id: session.id.clone(),
        agent: "bank".into(),
    };

    let handed = desk
        .hand_back(with_token(back, &service))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (handed.status.as_str(), handed.agent.as_str()),
        ("active", "bank")
    );
    let events = send(addr, &token, &session.id, "m3", "what is my balance?").await;
    assert_eq!(reply(&events).agent, "balances", "agents answer again");
}
