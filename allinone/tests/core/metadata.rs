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

/// A webhook service that answers and keeps each body, a worker whose
/// `hook` agent calls it, chat-core, a user and a session of that agent
/// with metadata.
async fn hook_stack() -> (
    Arc<Mutex<Vec<Value>>>,
    chat_testkit::TestDatabase,
    Core,
    String,
    pb::Session,
) {
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
    (bodies, db, core, token, session)
}

#[tokio::test]
async fn session_metadata_reaches_the_agent() {
    // Arrange
    let (bodies, _db, core, token, session) = hook_stack().await;

    // Act
    send(core.addr, &token, &session.id, "m1", "hello").await;

    // Assert
    let bodies = bodies.lock().unwrap().clone();
    assert_eq!(bodies.len(), 1, "{bodies:?}");
    assert_eq!(bodies[0]["metadata"], json!({"tier": "gold", "locale": "de"}));
    assert_eq!(bodies[0]["session_id"], session.id);
}

/// A run that did not come from a send to this replica (queued by another,
/// or left from before a restart) has no copy of the metadata from its
/// send: it is read from the session.
#[tokio::test]
async fn a_run_queued_elsewhere_gets_the_metadata_too() {
    use chat_core::domain::{ClientMsgId, MessageRole, SessionId};
    use chat_core::store::{MessageStore, NewMessage, SeaStore};

    // Arrange: a run queued straight in the store, behind no send here.
    let (bodies, db, core, token, session) = hook_stack().await;
    let store = SeaStore::new(
        chat_core::store::connect(&db.url, 1, std::time::Duration::from_secs(5))
            .await
            .unwrap(),
    );
    store
        .append_message(NewMessage {
            session_id: SessionId::parse(&session.id).unwrap(),
            role: MessageRole::User,
            content: "queued elsewhere".into(),
            client_msg_id: Some(ClientMsgId::parse("elsewhere").unwrap()),
            start_run: true,
            reject_if_busy: false,
            author: None,
            claim: None,
            metadata: None,
        })
        .await
        .unwrap();

    // Act: a send here wakes the session's runner, which runs the queued
    // run first, then the send's.
    send(core.addr, &token, &session.id, "m2", "hello").await;

    // Assert
    let bodies = bodies.lock().unwrap().clone();
    assert_eq!(bodies.len(), 2, "{bodies:?}");
    for body in &bodies {
        assert_eq!(
            body["metadata"],
            json!({"tier": "gold", "locale": "de"}),
            "{body}"
        );
    }
}
