//! Every long-lived stream through the gateway ends when its token expires
//! (after `WS_TOKEN_GRACE_SECS`) and at once when the user signs out: a
//! gRPC-Web `Subscribe`, an SSE reply stream and a WebSocket.

use crate::common;
use crate::grpc_web::{client, with_token};

use std::time::Duration;

use chat_proto::chat::v1 as pb;
use common::{TIMEOUT, TestStack};
use eventsource_stream::Eventsource;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// Access tokens that expire in 2 s, streams ended 1 s after.
fn short_lived(s: &mut gateway::Settings) {
    s.access_token_ttl_secs = 2;
    s.ws_token_grace_secs = 1;
}

/// A signed-in user with a session: (access token, refresh token, session id).
async fn signed_in(stack: &TestStack, username: &str) -> anyhow::Result<(String, String, String)> {
    stack.register(username).await?;
    let pair = stack.login(username).await?;
    let access = pair["access_token"].as_str().unwrap().to_owned();
    let refresh = pair["refresh_token"].as_str().unwrap().to_owned();
    let session_id = stack.session(&access, "echo").await?;
    Ok((access, refresh, session_id))
}

async fn logout(stack: &TestStack, refresh: &str) -> anyhow::Result<()> {
    let response = stack
        .http
        .post(stack.url("/api/v1/auth/logout"))
        .json(&json!({"refresh_token": refresh}))
        .send()
        .await?;
    anyhow::ensure!(response.status() == 204, "logout: {}", response.status());
    Ok(())
}

async fn grpc_web_subscription(
    stack: &TestStack,
    token: &str,
    session_id: &str,
) -> anyhow::Result<tonic::Streaming<pb::SessionEvent>> {
    let request = pb::SubscribeRequest {
        session_id: session_id.into(),
        after_seq: 0,
    };
    Ok(client(stack)?
        .subscribe(with_token(request, token))
        .await?
        .into_inner())
}

/// Reads a subscription until it ends; the status it ended with.
async fn ending(events: &mut tonic::Streaming<pb::SessionEvent>) -> tonic::Status {
    tokio::time::timeout(TIMEOUT, async {
        loop {
            match events.next().await {
                Some(Ok(_)) => {}
                Some(Err(status)) => return status,
                None => panic!("the stream ended without a status"),
            }
        }
    })
    .await
    .expect("the stream ended in time")
}

#[tokio::test]
async fn a_grpc_web_subscribe_ends_when_its_token_expires() -> anyhow::Result<()> {
    // Arrange
    let stack = TestStack::spawn_with(short_lived).await?;
    let (access, _, session_id) = signed_in(&stack, "alice").await?;
    let opened = std::time::Instant::now();
    let mut events = grpc_web_subscription(&stack, &access, &session_id).await?;

    // Act
    let status = ending(&mut events).await;

    // Assert
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    assert_eq!(status.message(), "access token expired");
    assert!(
        opened.elapsed() >= Duration::from_secs(1),
        "{:?}",
        opened.elapsed()
    );
    Ok(())
}

#[tokio::test]
async fn a_grpc_web_subscribe_ends_when_the_user_signs_out() -> anyhow::Result<()> {
    // Arrange
    let stack = TestStack::spawn().await?;
    let (access, refresh, session_id) = signed_in(&stack, "alice").await?;
    let mut events = grpc_web_subscription(&stack, &access, &session_id).await?;

    // Act
    logout(&stack, &refresh).await?;

    // Assert
    let status = ending(&mut events).await;
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    assert_eq!(status.message(), "signed out; sign in again");
    Ok(())
}

#[tokio::test]
async fn a_websocket_older_than_ws_max_age_is_closed_with_1001_and_resumes() -> anyhow::Result<()> {
    // Arrange: sockets live at most 1 s; a reply stored on the first socket.
    let stack = TestStack::spawn_with(|s| s.ws_max_age_secs = 1).await?;
    let (access, _, session_id) = signed_in(&stack, "alice").await?;
    // Before the upgrade: the socket's age counts from the gateway's side of it.
    let opened = std::time::Instant::now();
    let mut ws = stack.ws(&access).await?;
    ws.subscribe(&session_id).await;
    ws.send(json!({"type": "send", "session_id": session_id, "client_msg_id": "m1", "content": "before"}))
        .await;
    let reply = ws.recv_until(common::is_reply).await.pop().expect("the reply");

    // Act
    let close = loop {
        match tokio::time::timeout(TIMEOUT, ws.stream.next()).await? {
            Some(Ok(Message::Close(frame))) => break frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => {}
            other => anyhow::bail!("socket ended without a close frame: {other:?}"),
        }
    };
    let lived = opened.elapsed();
    let mut again = stack.ws(&access).await?;
    again
        .send(json!({"type": "subscribe", "session_id": session_id, "after_seq": 0}))
        .await;
    let replayed = again
        .recv_until(|f| f["type"] == "message" && f["message"]["seq"] == reply["message"]["seq"])
        .await;

    // Assert: going away (1001) after 0.9-1 s; the new socket resumes.
    assert_eq!(close, Some(1001));
    assert!(lived >= Duration::from_millis(900), "closed after {lived:?}");
    let replayed = replayed.last().expect("the stored reply, replayed");
    assert_eq!(replayed["message"]["content"], reply["message"]["content"]);
    Ok(())
}

#[tokio::test]
async fn a_websocket_closes_with_4001_when_the_user_signs_out() -> anyhow::Result<()> {
    // Arrange
    let stack = TestStack::spawn().await?;
    let (access, refresh, session_id) = signed_in(&stack, "alice").await?;
    let mut ws = stack.ws(&access).await?;
    ws.subscribe(&session_id).await;

    // Act
    logout(&stack, &refresh).await?;

    // Assert: an error frame, then the close.
    let mut frames = Vec::new();
    let close = tokio::time::timeout(TIMEOUT, async {
        loop {
            match ws.stream.next().await {
                Some(Ok(Message::Text(text))) => frames.push(serde_json::from_str::<Value>(text.as_str())?),
                Some(Ok(Message::Close(frame))) => return anyhow::Ok(frame.map(|f| u16::from(f.code))),
                Some(Ok(_)) => {}
                other => anyhow::bail!("socket ended without a close frame: {other:?}"),
            }
        }
    })
    .await??;
    assert_eq!(close, Some(4001));
    assert!(
        frames
            .iter()
            .any(|f| f["type"] == "error" && f["code"] == "unauthenticated"),
        "{frames:?}"
    );
    Ok(())
}

#[tokio::test]
async fn an_sse_reply_stream_ends_when_its_token_expires() -> anyhow::Result<()> {
    // Arrange: a reply that streams for about 6 s.
    let builder = chat_testkit::Stack::builder()
        .agents(chat_testkit::SLOW_AGENTS)
        .core(|s| s.accept_user_tokens = false)
        .gateway(short_lived);
    let stack = TestStack::from_builder(builder).await?;
    let (access, _, _) = signed_in(&stack, "alice").await?;
    let session_id = stack.session(&access, "slow").await?;
    let words = vec!["word"; 40].join(" ");

    // Act
    let response = stack
        .http
        .post(stack.url(&format!("/api/v1/sessions/{session_id}/messages")))
        .bearer_auth(&access)
        .header("accept", "text/event-stream")
        .json(&json!({"content": words}))
        .send()
        .await?;
    let events: Vec<_> = response.bytes_stream().eventsource().collect().await;

    // Assert: the stream ended on an error, before the reply.
    let last = events.last().expect("events").as_ref().expect("event");
    assert_eq!(last.event, "error", "{events:?}");
    let error: Value = serde_json::from_str(&last.data)?;
    assert_eq!(error["code"], "unauthenticated", "{error}");
    assert!(
        !events
            .iter()
            .flatten()
            .any(|e| e.event == "run" && e.data.contains("\"completed\"")),
        "the run had not ended: {events:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_signed_out_access_token_is_refused_on_rest_websocket_and_grpc_web_but_another_devices_is_not()
-> anyhow::Result<()> {
    // Arrange: one user signed in on two devices.
    let stack = TestStack::spawn().await?;
    let (laptop, refresh, _) = signed_in(&stack, "alice").await?;
    let phone = stack.login("alice").await?["access_token"]
        .as_str()
        .unwrap()
        .to_owned();

    // Act: the laptop signs out.
    logout(&stack, &refresh).await?;

    // Assert: REST.
    let rest = |token: String| {
        stack
            .http
            .get(stack.url("/api/v1/sessions"))
            .bearer_auth(token)
            .send()
    };
    assert_eq!(rest(laptop.clone()).await?.status(), 401);
    assert_eq!(rest(phone.clone()).await?.status(), 200);
    // The WebSocket upgrade.
    let refused = stack.ws(&laptop).await.err().expect("the upgrade is refused");
    match refused.downcast_ref::<tokio_tungstenite::tungstenite::Error>() {
        Some(tokio_tungstenite::tungstenite::Error::Http(response)) => assert_eq!(response.status(), 401),
        other => panic!("expected an HTTP refusal, got {other:?}"),
    }
    stack.ws(&phone).await?;
    // gRPC-Web.
    let mut grpc_web = client(&stack)?;
    let status = grpc_web
        .list_sessions(with_token(pb::ListSessionsRequest::default(), &laptop))
        .await
        .expect_err("refused");
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    grpc_web
        .list_sessions(with_token(pb::ListSessionsRequest::default(), &phone))
        .await?;
    Ok(())
}
