//! Access tokens that expire on a live WebSocket: warned, then closed with
//! 4001 after the grace period, unless a fresh token arrives in-band.

use crate::common;

use std::time::Duration;

use common::{TIMEOUT, TestStack, WsClient};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// Access tokens that expire in 4 s, sockets closed 2 s after (the grace
/// fits a refresh on a loaded machine).
fn short_lived(s: &mut gateway::Settings) {
    s.access_token_ttl_secs = 4;
    s.ws_token_grace_secs = 2;
}

/// Registers `username` and logs in; returns the token pair.
async fn login(stack: &TestStack, username: &str) -> anyhow::Result<Value> {
    stack.register(username).await?;
    stack.login(username).await
}

/// The next message that is not a ping or pong: a JSON frame or the close code.
async fn next_event(ws: &mut WsClient) -> Result<Value, Option<u16>> {
    loop {
        let message = tokio::time::timeout(TIMEOUT, ws.stream.next())
            .await
            .expect("timed out waiting for the socket");
        match message {
            Some(Ok(Message::Text(text))) => return Ok(serde_json::from_str(text.as_str()).expect("json")),
            Some(Ok(Message::Close(frame))) => return Err(frame.map(|f| u16::from(f.code))),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return Err(None),
        }
    }
}

#[tokio::test]
async fn expired_token_is_warned_then_closed_with_4001() -> anyhow::Result<()> {
    // Arrange
    let stack = TestStack::spawn_with(short_lived).await?;
    let pair = login(&stack, "alice").await?;
    let mut ws = stack.ws(pair["access_token"].as_str().expect("token")).await?;

    // Act
    let warning = next_event(&mut ws).await;
    let after = next_event(&mut ws).await;

    // Assert
    let warning = warning.expect("a warning frame before the close");
    assert_eq!(
        (warning["type"].as_str(), warning["code"].as_str()),
        (Some("error"), Some("token_expired")),
        "{warning}"
    );
    assert_eq!(after, Err(Some(4001)));
    Ok(())
}

#[tokio::test]
async fn fresh_token_sent_in_band_keeps_the_socket_open() -> anyhow::Result<()> {
    // Arrange
    let stack = TestStack::spawn_with(short_lived).await?;
    let pair = login(&stack, "alice").await?;
    let token = pair["access_token"].as_str().expect("token");
    let session_id = stack.session(token, "echo").await?;
    let mut ws = stack.ws(token).await?;
    let warning = next_event(&mut ws).await.expect("warning");
    assert_eq!(warning["code"], "token_expired");

    // Act: garbage is refused; a refreshed token of our own is taken.
    ws.send(json!({"type": "auth", "access_token": "garbage"})).await;
    let refused = ws.recv().await;
    let refreshed: Value = stack
        .http
        .post(stack.url("/api/v1/auth/refresh"))
        .json(&json!({"refresh_token": pair["refresh_token"]}))
        .send()
        .await?
        .json()
        .await?;
    ws.send(json!({"type": "auth", "access_token": refreshed["access_token"]}))
        .await;
    let accepted = ws.recv().await;

    // Assert: still open well past the first grace period, and still chatting.
    assert_eq!(
        (refused["type"].as_str(), refused["code"].as_str()),
        (Some("error"), Some("unauthenticated")),
        "{refused}"
    );
    assert_eq!(accepted["type"], "authenticated", "{accepted}");
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    ws.subscribe(&session_id).await;
    ws.send(
        json!({"type": "send", "session_id": session_id, "client_msg_id": "late", "content": "still here"}),
    )
    .await;
    let frames = ws.recv_until(common::is_reply).await;
    assert!(
        frames
            .iter()
            .any(|f| f["type"] == "ack" && f["client_msg_id"] == "late")
    );
    Ok(())
}

#[tokio::test]
async fn another_users_token_closes_the_socket_with_1008() -> anyhow::Result<()> {
    // Arrange: alice's socket; bob signed in (the page switched accounts, say).
    let stack = TestStack::spawn().await?;
    let alice = login(&stack, "alice").await?;
    let bob = login(&stack, "bob").await?;
    let mut ws = stack.ws(alice["access_token"].as_str().expect("token")).await?;

    // Act
    ws.send(json!({"type": "auth", "access_token": bob["access_token"]}))
        .await;
    let refused = next_event(&mut ws).await;
    let after = next_event(&mut ws).await;

    // Assert: told why, then closed with 1008 (policy violation): alice's
    // socket never goes on as bob's.
    let refused = refused.expect("an error frame before the close");
    assert_eq!(
        (refused["type"].as_str(), refused["code"].as_str()),
        (Some("error"), Some("forbidden")),
        "{refused}"
    );
    assert_eq!(after, Err(Some(1008)));
    Ok(())
}

#[tokio::test]
async fn a_signed_out_token_cannot_renew_a_socket() -> anyhow::Result<()> {
    // Arrange: alice signed in on two devices and signed out on one; a
    // socket opened since runs on the other.
    let stack = TestStack::spawn().await?;
    let laptop = login(&stack, "alice").await?;
    let phone = stack.login("alice").await?;
    let logout = stack
        .http
        .post(stack.url("/api/v1/auth/logout"))
        .json(&json!({"refresh_token": phone["refresh_token"]}))
        .send()
        .await?;
    assert_eq!(logout.status(), 204);
    let mut ws = stack.ws(laptop["access_token"].as_str().expect("token")).await?;

    // Act: the signed-out device's token, then the live one.
    ws.send(json!({"type": "auth", "access_token": phone["access_token"]}))
        .await;
    let refused = ws.recv().await;
    ws.send(json!({"type": "auth", "access_token": laptop["access_token"]}))
        .await;
    let accepted = ws.recv().await;

    // Assert
    assert_eq!(
        (refused["type"].as_str(), refused["code"].as_str()),
        (Some("error"), Some("unauthenticated")),
        "{refused}"
    );
    assert_eq!(accepted["type"], "authenticated", "{accepted}");
    Ok(())
}
