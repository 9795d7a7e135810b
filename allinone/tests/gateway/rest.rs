//! Chatting over plain HTTP: JSON replies, SSE streams, accounts, probes.

use crate::common;

use common::{PASSWORD, TestStack};
use eventsource_stream::Eventsource;
use futures::StreamExt;
use serde_json::{Value, json};

#[tokio::test]
async fn rest_post_message_returns_message_and_reply() -> anyhow::Result<()> {
    // Arrange
    let stack = TestStack::spawn().await?;
    let token = stack.user("alice").await?;
    let session_id = stack.session(&token, "echo").await?;

    // Act
    let response = stack
        .http
        .post(stack.url(&format!("/api/v1/sessions/{session_id}/messages")))
        .bearer_auth(&token)
        .json(&json!({"content": "a plain json turn", "client_msg_id": "r1"}))
        .send()
        .await?;

    // Assert
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await?;
    assert_eq!(body["message"]["seq"], 1);
    assert_eq!(body["message"]["role"], "user");
    assert_eq!(body["message"]["client_msg_id"], "r1");
    assert_eq!(body["reply"]["seq"], 2);
    assert_eq!(body["reply"]["role"], "assistant");
    assert_eq!(body["reply"]["content"], "a plain json turn");
    assert_eq!(body["run"]["status"], "completed");
    assert_eq!(body["run"]["run_id"], body["reply"]["run_id"]);

    let session: Value = stack
        .http
        .get(stack.url(&format!("/api/v1/sessions/{session_id}")))
        .bearer_auth(&token)
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(session["last_seq"], 2);
    assert!(session["created_at"].as_str().is_some_and(|t| t.ends_with('Z')));
    Ok(())
}

#[tokio::test]
async fn sse_post_streams_deltas_and_ends_after_stored_reply() -> anyhow::Result<()> {
    // Arrange
    let stack = TestStack::spawn().await?;
    let token = stack.user("alice").await?;
    let session_id = stack.session(&token, "echo").await?;
    let content = "streamed over server sent events";

    // Act
    let response = stack
        .http
        .post(stack.url(&format!("/api/v1/sessions/{session_id}/messages")))
        .bearer_auth(&token)
        .header("accept", "text/event-stream")
        .json(&json!({"content": content, "client_msg_id": "s1"}))
        .send()
        .await?;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()?
            .starts_with("text/event-stream")
    );
    // The body ends by itself once the run is over: collecting it terminates.
    let events: Vec<(String, Value)> = tokio::time::timeout(
        common::TIMEOUT,
        response
            .bytes_stream()
            .eventsource()
            .map(|e| {
                let e = e.expect("well-formed event");
                (e.event, serde_json::from_str(&e.data).expect("JSON data"))
            })
            .collect(),
    )
    .await?;

    // Assert
    for (name, data) in &events {
        assert_eq!(data["type"], name.as_str(), "event name is the frame type");
    }
    assert_eq!(events[0].0, "ack");
    assert_eq!(events[0].1["seq"], 1);
    let run_id = events[0].1["run_id"].clone();
    let deltas: Vec<&Value> = events
        .iter()
        .filter(|(n, _)| n == "delta")
        .map(|(_, d)| d)
        .collect();
    assert!(deltas.len() >= 2, "{events:?}");
    for (i, delta) in deltas.iter().enumerate() {
        assert_eq!(delta["index"].as_u64(), Some(i as u64));
    }
    let streamed: String = deltas.iter().map(|d| d["text"].as_str().expect("text")).collect();
    let reply = events
        .iter()
        .find(|(n, d)| n == "message" && d["message"]["role"] == "assistant")
        .map(|(_, d)| &d["message"])
        .expect("reply event");
    assert_eq!(
        (reply["content"].as_str(), reply["seq"].as_i64()),
        (Some(content), Some(2))
    );
    assert_eq!(reply["content"], streamed);
    let (last_name, last) = events.last().expect("events");
    assert_eq!(
        (last_name.as_str(), last["status"].as_str()),
        ("run", Some("completed"))
    );
    assert_eq!(last["run_id"], run_id);
    let history = stack.history(&token, &session_id).await?;
    assert_eq!(history.len(), 2);
    Ok(())
}

#[tokio::test]
async fn accounts_register_login_refresh_and_logout() -> anyhow::Result<()> {
    let stack = TestStack::spawn().await?;
    let credentials = json!({"username": "bob.b-1", "password": PASSWORD});
    let register = stack
        .http
        .post(stack.url("/api/v1/auth/register"))
        .json(&credentials)
        .send()
        .await?;
    assert_eq!(register.status(), 201);
    let user_id = register.json::<Value>().await?["user_id"].clone();
    assert!(user_id.is_string());

    let again = stack
        .http
        .post(stack.url("/api/v1/auth/register"))
        .json(&credentials)
        .send()
        .await?;
    assert_eq!(again.status(), 409);
    let short = json!({"username": "bo", "password": PASSWORD});
    let short = stack
        .http
        .post(stack.url("/api/v1/auth/register"))
        .json(&short)
        .send()
        .await?;
    assert_eq!(short.status(), 400);
    assert_eq!(short.json::<Value>().await?["error"]["code"], "invalid");
    let wrong = json!({"username": "bob.b-1", "password": "wrong password"});
    let wrong = stack
        .http
        .post(stack.url("/api/v1/auth/login"))
        .json(&wrong)
        .send()
        .await?;
    assert_eq!(wrong.status(), 401);

    let login: Value = stack
        .http
        .post(stack.url("/api/v1/auth/login"))
        .json(&credentials)
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(
        (login["token_type"].as_str(), login["expires_in"].as_u64()),
        (Some("Bearer"), Some(900))
    );
    let refresh_token = login["refresh_token"].as_str().expect("refresh token");
    let as_access = stack
        .http
        .get(stack.url("/api/v1/sessions"))
        .bearer_auth(refresh_token)
        .send()
        .await?;
    assert_eq!(as_access.status(), 401, "a refresh token is not an access token");

    let refresh = stack
        .http
        .post(stack.url("/api/v1/auth/refresh"))
        .json(&json!({"refresh_token": refresh_token}))
        .send()
        .await?;
    assert_eq!(refresh.status(), 200);
    let pair: Value = refresh.json().await?;
    let sessions = stack
        .http
        .get(stack.url("/api/v1/sessions"))
        .bearer_auth(pair["access_token"].as_str().expect("access"))
        .send()
        .await?;
    assert_eq!(sessions.status(), 200);
    assert_eq!(
        sessions.json::<Value>().await?,
        json!({"sessions": [], "next_cursor": null})
    );

    let logout = stack
        .http
        .post(stack.url("/api/v1/auth/logout"))
        .json(&json!({"refresh_token": pair["refresh_token"]}))
        .send()
        .await?;
    assert_eq!(logout.status(), 204);
    Ok(())
}

#[tokio::test]
async fn health() -> anyhow::Result<()> {
    let stack = TestStack::spawn().await?;
    let live = stack.http.get(stack.url("/healthz")).send().await?;
    assert_eq!(live.status(), 200);
    assert!(live.headers().contains_key("x-request-id"));
    assert_eq!(live.headers()["x-content-type-options"], "nosniff");
    assert_eq!(live.json::<Value>().await?, json!({"status": "ok"}));

    // chat-core reports serving after its first database probe: wait for it, bounded.
    let deadline = tokio::time::Instant::now() + common::TIMEOUT;
    let ready = loop {
        let response = stack.http.get(stack.url("/readyz")).send().await?;
        if response.status() == 200 || tokio::time::Instant::now() > deadline {
            break response;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(ready.status(), 200);
    assert_eq!(ready.json::<Value>().await?, json!({"status": "ok"}));

    let page = stack.http.get(stack.url("/")).send().await?;
    assert!(page.headers()["content-type"].to_str()?.starts_with("text/html"));
    assert!(
        page.headers()["content-security-policy"]
            .to_str()?
            .contains("default-src 'self'")
    );
    let js = stack.http.get(stack.url("/app.js")).send().await?;
    assert!(
        js.headers()["content-type"]
            .to_str()?
            .starts_with("text/javascript")
    );
    Ok(())
}

#[tokio::test]
async fn readyz_is_unavailable_without_chat_core() -> anyhow::Result<()> {
    let addr = common::spawn_gateway("http://127.0.0.1:1", |_| {}).await?;
    let url = format!("http://{addr}/readyz");
    let response = reqwest::get(&url).await?;
    assert_eq!(response.status(), 503);
    assert_eq!(response.json::<Value>().await?, json!({"status": "unavailable"}));
    Ok(())
}
