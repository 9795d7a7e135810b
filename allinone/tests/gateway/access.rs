//! A user sees and changes only their own sessions, on every transport.

use crate::common;

use common::{TestStack, is_reply};
use serde_json::{Value, json};

#[tokio::test]
async fn other_users_session_is_forbidden_on_rest_and_ws() -> anyhow::Result<()> {
    // Arrange
    let stack = TestStack::spawn().await?;
    let alice = stack.user("alice").await?;
    let bob = stack.user("bob").await?;
    let session_id = stack.session(&alice, "echo").await?;
    let base = stack.url(&format!("/api/v1/sessions/{session_id}"));
    let denied = |status: reqwest::StatusCode| status == 403 || status == 404;

    // Act + assert: REST
    let get = stack.http.get(&base).bearer_auth(&bob).send().await?;
    assert!(denied(get.status()), "GET session: {}", get.status());
    let code = get.json::<Value>().await?["error"]["code"].clone();
    assert!(code == "forbidden" || code == "not_found", "{code}");
    let history = stack
        .http
        .get(format!("{base}/messages"))
        .bearer_auth(&bob)
        .send()
        .await?;
    assert!(denied(history.status()), "GET messages: {}", history.status());
    let post = stack
        .http
        .post(format!("{base}/messages"))
        .bearer_auth(&bob)
        .json(&json!({"content": "let me in"}))
        .send()
        .await?;
    assert!(denied(post.status()), "POST message: {}", post.status());
    let delete = stack.http.delete(&base).bearer_auth(&bob).send().await?;
    assert!(denied(delete.status()), "DELETE: {}", delete.status());

    // Act + assert: WebSocket
    let mut ws = stack.ws(&bob).await?;
    ws.send(json!({"type": "subscribe", "session_id": session_id, "after_seq": 0}))
        .await;
    let frame = ws.recv().await;
    assert_eq!(frame["type"], "error");
    assert!(
        frame["code"] == "forbidden" || frame["code"] == "not_found",
        "{frame}"
    );
    ws.send(json!({"type": "send", "session_id": session_id, "client_msg_id": "b1", "content": "sneaky"}))
        .await;
    let frame = ws.recv().await;
    assert_eq!(frame["type"], "error");
    assert!(
        frame["code"] == "forbidden" || frame["code"] == "not_found",
        "{frame}"
    );
    assert_eq!(frame["client_msg_id"], "b1");

    // Bob's socket still works for his own session.
    let own = stack.session(&bob, "echo").await?;
    ws.subscribe(&own).await;
    ws.send(json!({"type": "send", "session_id": own, "client_msg_id": "b2", "content": "my own"}))
        .await;
    let frames = ws.recv_until(is_reply).await;
    assert!(
        frames
            .iter()
            .any(|f| f["type"] == "ack" && f["client_msg_id"] == "b2")
    );

    // Alice's session is untouched.
    let history = stack.history(&alice, &session_id).await?;
    assert!(history.is_empty(), "{history:?}");
    let get = stack.http.get(&base).bearer_auth(&alice).send().await?;
    assert_eq!(get.status(), 200);
    Ok(())
}
