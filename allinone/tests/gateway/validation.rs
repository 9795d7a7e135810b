//! Bad input gets a clear error, and never costs a connection.

use crate::common;

use common::{TestStack, is_reply};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn bad_input_gets_clear_errors_and_connection_survives() -> anyhow::Result<()> {
    // Arrange
    let stack = TestStack::spawn().await?;
    let alice = stack.user("alice").await?;
    let bob = stack.user("bob").await?;
    let session_id = stack.session(&alice, "echo").await?;
    let bobs_session = stack.session(&bob, "echo").await?;
    let mut ws = stack.ws(&alice).await?;
    let mut bobs_ws = stack.ws(&bob).await?;
    ws.subscribe(&session_id).await;
    bobs_ws.subscribe(&bobs_session).await;

    // Act + assert: WebSocket
    ws.send_raw(Message::text("{not json")).await;
    let frame = ws.recv().await;
    assert_eq!(
        (frame["type"].as_str(), frame["code"].as_str()),
        (Some("error"), Some("invalid"))
    );

    ws.send(json!({"type": "dance"})).await;
    let frame = ws.recv().await;
    assert_eq!(frame["code"], "invalid");
    assert_eq!(frame["message"], "unknown frame type `dance`");

    let big = "x".repeat(16 * 1024 + 1);
    ws.send(json!({"type": "send", "session_id": session_id, "client_msg_id": "big", "content": big}))
        .await;
    let frame = ws.recv().await;
    assert_eq!(
        (frame["code"].as_str(), frame["client_msg_id"].as_str()),
        (Some("too_large"), Some("big"))
    );

    ws.send(json!({"type": "send", "session_id": session_id, "client_msg_id": "empty", "content": " \n "}))
        .await;
    let frame = ws.recv().await;
    assert_eq!(
        (frame["code"].as_str(), frame["client_msg_id"].as_str()),
        (Some("invalid"), Some("empty"))
    );

    ws.send(json!({"type": "send", "session_id": session_id, "content": "no id"}))
        .await;
    assert_eq!(ws.recv().await["code"], "invalid");

    ws.send_raw(Message::binary(vec![0xff, 0xfe])).await;
    let frame = ws.recv().await;
    assert_eq!(
        (frame["code"].as_str(), frame["message"].as_str()),
        (Some("invalid"), Some("frames must be UTF-8 JSON text"))
    );

    ws.send(json!({"type": "ping"})).await;
    assert_eq!(ws.recv().await, json!({"type": "pong"}));

    ws.send(
        json!({"type": "send", "session_id": session_id, "client_msg_id": "ok", "content": "still here"}),
    )
    .await;
    let frames = ws.recv_until(is_reply).await;
    assert!(
        frames
            .iter()
            .any(|f| f["type"] == "ack" && f["client_msg_id"] == "ok" && f["seq"] == 1)
    );
    assert_eq!(frames.last().expect("reply")["message"]["content"], "still here");

    // Another user's socket was never disturbed.
    bobs_ws
        .send(json!({"type": "send", "session_id": bobs_session, "client_msg_id": "b", "content": "hi bob"}))
        .await;
    let frames = bobs_ws.recv_until(is_reply).await;
    assert_eq!(frames.last().expect("reply")["message"]["content"], "hi bob");

    // Act + assert: REST
    let messages = stack.url(&format!("/api/v1/sessions/{session_id}/messages"));
    let error_code = |body: Value| body["error"]["code"].as_str().map(str::to_owned);

    let missing = stack.http.get(&messages).send().await?;
    assert_eq!(missing.status(), 401);
    assert_eq!(
        error_code(missing.json().await?).as_deref(),
        Some("unauthenticated")
    );

    let garbage = stack
        .http
        .get(&messages)
        .bearer_auth("garbage.token.here")
        .send()
        .await?;
    assert_eq!(garbage.status(), 401);

    let malformed = stack
        .http
        .post(&messages)
        .bearer_auth(&alice)
        .header("content-type", "application/json")
        .body("{\"content\": ")
        .send()
        .await?;
    assert_eq!(malformed.status(), 400);
    let body: Value = malformed.json().await?;
    assert_eq!(error_code(body.clone()).as_deref(), Some("invalid"));
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("JSON")),
        "{body}"
    );

    let oversize = stack
        .http
        .post(&messages)
        .bearer_auth(&alice)
        .json(&json!({"content": "y".repeat(16 * 1024 + 1)}))
        .send()
        .await?;
    assert_eq!(oversize.status(), 413);
    assert_eq!(error_code(oversize.json().await?).as_deref(), Some("too_large"));

    let huge_body = stack
        .http
        .post(&messages)
        .bearer_auth(&alice)
        .json(&json!({"content": "z".repeat(100 * 1024)}))
        .send()
        .await?;
    assert_eq!(huge_body.status(), 413);
    assert_eq!(error_code(huge_body.json().await?).as_deref(), Some("too_large"));

    let mut bad_utf8 = b"{\"content\": \"".to_vec();
    bad_utf8.extend_from_slice(&[0xff, 0xfe]);
    bad_utf8.extend_from_slice(b"\"}");
    let invalid_utf8 = stack
        .http
        .post(&messages)
        .bearer_auth(&alice)
        .header("content-type", "application/json")
        .body(bad_utf8)
        .send()
        .await?;
    assert_eq!(invalid_utf8.status(), 400);
    assert_eq!(error_code(invalid_utf8.json().await?).as_deref(), Some("invalid"));

    let not_a_uuid = stack
        .http
        .get(stack.url("/api/v1/sessions/not-a-uuid"))
        .bearer_auth(&alice)
        .send()
        .await?;
    assert_eq!(not_a_uuid.status(), 404);
    let unknown = stack.http.get(stack.url("/api/v1/nowhere")).send().await?;
    assert_eq!(unknown.status(), 404);
    assert_eq!(error_code(unknown.json().await?).as_deref(), Some("not_found"));
    let wrong_method = stack
        .http
        .put(stack.url("/api/v1/agents"))
        .bearer_auth(&alice)
        .send()
        .await?;
    assert_eq!(wrong_method.status(), 405);
    assert_eq!(error_code(wrong_method.json().await?).as_deref(), Some("invalid"));

    let ws_without_token = tokio_tungstenite::connect_async(format!("ws://{}/api/v1/ws", stack.addr)).await;
    match ws_without_token {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => assert_eq!(response.status(), 401),
        other => panic!("expected 401 before upgrade, got {other:?}"),
    }
    let ws_garbage =
        tokio_tungstenite::connect_async(format!("ws://{}/api/v1/ws?access_token=nope", stack.addr)).await;
    assert!(matches!(ws_garbage, Err(tokio_tungstenite::tungstenite::Error::Http(r)) if r.status() == 401));
    Ok(())
}
