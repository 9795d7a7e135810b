//! What one user or one client address may hold and ask for: capped
//! long-lived connections (WebSocket, SSE, gRPC-Web streams), a rate limit
//! on every WebSocket frame type, history replay charged per page, and
//! connections that cannot hang on half-sent headers or sit idle.

use crate::common;
use crate::grpc_web::{client, with_token};

use std::time::Duration;

use chat_proto::chat::v1 as pb;
use common::{TIMEOUT, TestStack, WsClient};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

/// The next JSON frames up to the close; the close code.
async fn until_close(ws: &mut WsClient) -> (Vec<Value>, Option<u16>) {
    let mut frames = Vec::new();
    loop {
        match tokio::time::timeout(TIMEOUT, ws.stream.next())
            .await
            .expect("the socket answers in time")
        {
            Some(Ok(Message::Text(text))) => frames.push(serde_json::from_str(text.as_str()).expect("json")),
            Some(Ok(Message::Close(frame))) => return (frames, frame.map(|f| u16::from(f.code))),
            Some(Ok(_)) => {}
            other => panic!("socket ended without a close frame: {other:?}"),
        }
    }
}

/// Frames until a pong or the close.
async fn until_close_or_pong(ws: &mut WsClient) -> (Vec<Value>, Option<u16>) {
    let mut frames = Vec::new();
    loop {
        match tokio::time::timeout(TIMEOUT, ws.stream.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => {
                let frame: Value = serde_json::from_str(text.as_str()).expect("json");
                let pong = frame["type"] == "pong";
                frames.push(frame);
                if pong {
                    return (frames, None);
                }
            }
            Ok(Some(Ok(Message::Close(frame)))) => return (frames, frame.map(|f| u16::from(f.code))),
            Ok(Some(Ok(_))) => {}
            _ => return (frames, None),
        }
    }
}

#[tokio::test]
async fn websockets_beyond_the_per_user_cap_are_closed_with_1013() -> anyhow::Result<()> {
    // Arrange
    let stack = TestStack::spawn_with(|s| s.max_connections_per_user = 2).await?;
    let token = stack.user("alice").await?;
    let mut first = stack.ws(&token).await?;
    let _second = stack.ws(&token).await?;

    // Act
    let mut third = stack.ws(&token).await?;
    let (frames, close) = until_close(&mut third).await;

    // Assert: told why, closed with 1013; a place freed is taken again.
    assert_eq!(close, Some(1013));
    assert_eq!(frames[0]["code"], "rate_limited", "{frames:?}");
    first.stream.close(None).await?;
    while first.stream.next().await.is_some() {}
    common::eventually("a freed place", || async {
        let mut again = stack.ws(&token).await.ok()?;
        again.send(json!({"type": "ping"})).await;
        let (frames, _) = until_close_or_pong(&mut again).await;
        frames.iter().any(|f| f["type"] == "pong").then_some(())
    })
    .await;
    Ok(())
}

#[tokio::test]
async fn connections_beyond_the_per_address_cap_are_refused_on_every_transport() -> anyhow::Result<()> {
    // Arrange: two places per address, both taken by other users' sockets.
    let stack = TestStack::spawn_with(|s| s.max_connections_per_ip = 2).await?;
    let alice = stack.user("alice").await?;
    let bob = stack.user("bob").await?;
    let carol = stack.user("carol").await?;
    let session_id = stack.session(&carol, "echo").await?;
    let _a = stack.ws(&alice).await?;
    let _b = stack.ws(&bob).await?;

    // Act
    let mut ws = stack.ws(&carol).await?;
    let (_, close) = until_close(&mut ws).await;
    let sse = stack
        .http
        .post(stack.url(&format!("/api/v1/sessions/{session_id}/messages")))
        .bearer_auth(&carol)
        .header("accept", "text/event-stream")
        .json(&json!({"content": "over the cap"}))
        .send()
        .await?;
    let grpc_web = client(&stack)?
        .subscribe(with_token(
            pb::SubscribeRequest {
                session_id: session_id.clone(),
                after_seq: 0,
            },
            &carol,
        ))
        .await;

    // Assert: 1013, 429 with Retry-After (and nothing sent), RESOURCE_EXHAUSTED.
    assert_eq!(close, Some(1013));
    assert_eq!(sse.status(), 429);
    assert!(sse.headers().contains_key("retry-after"));
    assert!(stack.history(&carol, &session_id).await?.is_empty());
    assert_eq!(grpc_web.unwrap_err().code(), tonic::Code::ResourceExhausted);
    Ok(())
}

#[tokio::test]
async fn every_websocket_frame_type_counts_against_the_frame_rate_limit() -> anyhow::Result<()> {
    // Arrange
    let stack = TestStack::spawn_with(|s| s.frame_rate_limit = common::nz(3)).await?;
    let token = stack.user("alice").await?;
    let session_id = stack.session(&token, "echo").await?;
    let mut ws = stack.ws(&token).await?;

    // Act: a ping, an unsubscribe and a cancel use the allowance up.
    ws.send(json!({"type": "ping"})).await;
    assert_eq!(ws.recv().await["type"], "pong");
    ws.send(json!({"type": "unsubscribe", "session_id": session_id}))
        .await;
    assert_eq!(ws.recv().await["type"], "unsubscribed");
    let run_id = uuid::Uuid::new_v4().to_string();
    ws.send(json!({"type": "cancel", "session_id": session_id, "run_id": run_id}))
        .await;
    assert_eq!(ws.recv().await["type"], "error", "unknown run");
    ws.send(json!({"type": "subscribe", "session_id": session_id, "after_seq": 0}))
        .await;
    let limited = ws.recv().await;

    // Assert: the subscribe is refused with a retry hint, the socket stays open.
    assert_eq!(limited["code"], "rate_limited", "{limited}");
    assert!(
        limited["retry_after_ms"].as_u64().is_some_and(|ms| ms > 0),
        "{limited}"
    );
    ws.send(json!({"type": "ping"})).await;
    assert_eq!(ws.recv().await["code"], "rate_limited");
    Ok(())
}

#[tokio::test]
async fn subscribes_beyond_the_replay_budget_are_rate_limited() -> anyhow::Result<()> {
    // Arrange: three pages of replay per minute.
    let stack = TestStack::spawn_full(|s| s.replay_rate_limit = 3, |_| {}, None).await?;
    let token = stack.user("alice").await?;
    let session_id = stack.session(&token, "echo").await?;
    let mut ws = stack.ws(&token).await?;
    for _ in 0..3 {
        ws.subscribe(&session_id).await;
    }

    // Act
    ws.send(json!({"type": "subscribe", "session_id": session_id, "after_seq": 0}))
        .await;
    let refused = ws.recv().await;

    // Assert
    assert_eq!(
        (refused["type"].as_str(), refused["code"].as_str()),
        (Some("error"), Some("rate_limited")),
        "{refused}"
    );
    assert!(
        refused["retry_after_ms"].as_u64().is_some_and(|ms| ms > 0),
        "{refused}"
    );
    Ok(())
}

#[tokio::test]
async fn a_half_sent_request_header_is_disconnected_within_the_timeout() -> anyhow::Result<()> {
    // Arrange
    let stack = TestStack::spawn_with(|s| s.header_read_timeout_secs = 1).await?;
    let mut tcp = tokio::net::TcpStream::connect(stack.addr).await?;
    let started = std::time::Instant::now();

    // Act
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: chat\r\nX-Slow: ")
        .await?;
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut rest)).await;

    // Assert: the server closed the connection (whatever it wrote first).
    assert!(read.is_ok(), "still open after 5 s");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    Ok(())
}

#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed_but_a_websocket_is_not() -> anyhow::Result<()> {
    // Arrange: headers may take long, idleness may not.
    let stack = TestStack::spawn_with(|s| {
        s.header_read_timeout_secs = 30;
        s.idle_timeout_secs = 1;
    })
    .await?;
    let token = stack.user("alice").await?;
    let mut ws = stack.ws(&token).await?;
    let mut tcp = tokio::net::TcpStream::connect(stack.addr).await?;

    // Act: one request, then nothing.
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: chat\r\n\r\n")
        .await?;
    let mut response = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut response)).await;

    // Assert: answered, then closed; the idle WebSocket still answers.
    assert!(read.is_ok(), "kept-alive connection still open after 5 s");
    assert!(String::from_utf8_lossy(&response).starts_with("HTTP/1.1 200"));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    ws.send(json!({"type": "ping"})).await;
    assert_eq!(ws.recv().await["type"], "pong");
    Ok(())
}
