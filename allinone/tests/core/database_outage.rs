//! The database going away: clear `unavailable` errors, health NOT_SERVING,
//! no silent fallback, and recovery without a restart. Needs Postgres
//! (`TEST_DATABASE_URL`); skipped on SQLite, which cannot go away.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::time::Duration;

use chat_proto::chat::v1 as pb;
use chat_testkit::{CuttableProxy, TestDatabase, socket_addr_of, with_host};
use common::*;
use futures::StreamExt;
use tonic_health::pb::health_check_response::ServingStatus;

async fn wait_for_health(addr: std::net::SocketAddr, wanted: ServingStatus) {
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel(addr).await);
    let request = tonic_health::pb::HealthCheckRequest {
        service: "chat.v1.ChatService".into(),
    };
    let mut watch = health.watch(request).await.unwrap().into_inner();
    loop {
        let next = tokio::time::timeout(Duration::from_secs(15), watch.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if next.status() == wanted {
            return;
        }
    }
}

#[tokio::test]
async fn database_outage_fails_clearly_and_recovers_without_restart() {
    if chat_testkit::needs::postgres().is_none() {
        return;
    }
    let db = TestDatabase::new().await.unwrap();
    let proxy = CuttableProxy::start(socket_addr_of(&db.url).unwrap())
        .await
        .unwrap();
    let worker = spawn_worker().await;
    let core = spawn_core(&with_host(&db.url, proxy.addr()), &worker.url).await;
    let (_, token) = register(core.addr).await;
    let session = create_session(core.addr, &token).await;
    send(core.addr, &token, &session.id, "before", "before the outage").await;

    proxy.cut();
    wait_for_health(core.addr, ServingStatus::NotServing).await;
    let mut client = client(core.addr).await;
    let err = client
        .list_messages(with_token(
            pb::ListMessagesRequest {
                session_id: session.id.clone(),
                ..Default::default()
            },
            &token,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    let request = pb::SendMessageRequest {
        session_id: session.id.clone(),
        client_msg_id: "during".into(),
        content: "during the outage".into(),
        role: String::new(),
        metadata_json: String::new(),
    };
    let err = client
        .send_message(with_token(request, &token))
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        tonic::Code::Unavailable,
        "a send is refused, never kept in memory"
    );

    proxy.restore();
    wait_for_health(core.addr, ServingStatus::Serving).await;
    let events = send(core.addr, &token, &session.id, "after", "after the outage").await;
    assert!(events.len() > 2, "the run streams again");
    let messages = history(core.addr, &token, &session.id).await;
    let contents: Vec<_> = messages.iter().map(|m| m.content.as_str()).collect();
    assert_eq!(
        contents,
        vec![
            "before the outage",
            "before the outage",
            "after the outage",
            "after the outage"
        ]
    );
    assert_eq!(
        messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
}
