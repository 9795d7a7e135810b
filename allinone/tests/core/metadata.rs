//! A session's metadata, given at creation, reaches its agent with every
//! run: here a webhook agent, whose service records what it is sent.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::State;
use chat_proto::chat::v1 as pb;
use common::*;
use serde_json::{Value, json};

#[tokio::test]
async fn session_metadata_reaches_the_agent() {
    // Arrange: a webhook service that answers and keeps each body.
    let bodies: Arc<Mutex<Vec<Value>>> = Arc::default();
    let app = axum::Router::new()
        .fallback(
            |State(bodies): State<Arc<Mutex<Vec<Value>>>>, Json(body): Json<Value>| async move {
                bodies.lock().unwrap().push(body);
                Json(json!({"reply": "noted"}))
            },
        )
        .with_state(bodies.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let worker = spawn_worker_with(Some(&format!(
        r#"
[[agents]]
name = "hook"
kind = "webhook"
mode = "simple"
endpoint = "{hook}"
"#
    )))
    .await;
    let db = chat_testkit::TestDatabase::new().await.unwrap();
    let core = spawn_core(&db.url, &worker.url).await;
    let (_, token) = register(core.addr).await;
    let session = client(core.addr)
        .await
        .create_session(with_token(
            pb::CreateSessionRequest {
                agent: "hook".into(),
                metadata_json: r#"{"tier":"gold","locale":"de"}"#.into(),
                ..Default::default()
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner();

    // Act
    send(core.addr, &token, &session.id, "m1", "hello").await;

    // Assert
    let bodies = bodies.lock().unwrap().clone();
    assert_eq!(bodies.len(), 1, "{bodies:?}");
    assert_eq!(bodies[0]["metadata"], json!({"tier": "gold", "locale": "de"}));
    assert_eq!(bodies[0]["session_id"], session.id);
}
