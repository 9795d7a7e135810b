//! Who may call chat-core and agent-workers: users' own tokens only where
//! chat-core accepts them, services acting for a user, reflection only when
//! enabled and only for services, workers only for chat-core.

use crate::common;

use std::time::Duration;

use chat_common::token::{ON_BEHALF_OF_METADATA, Role};
use chat_proto::chat::v1 as pb;
use chat_testkit::TestDatabase;
use common::*;

#[tokio::test]
async fn user_tokens_are_refused_unless_chat_core_accepts_them() {
    // Arrange: one chat-core that refuses user tokens (the default), one that accepts them.
    let db = TestDatabase::new().await.unwrap();
    let worker = spawn_worker().await;
    let strict = spawn_core_with(&db.url, &worker.url, |s| s.accept_user_tokens = false).await;
    let open = spawn_core(&db.url, &worker.url).await;
    let (user_id, token) = register(open.addr).await;
    let service = keys()
        .sign("tests", Role::Service, Duration::from_secs(60))
        .unwrap();

    // Act
    let refused = client(strict.addr)
        .await
        .list_sessions(with_token(pb::ListSessionsRequest::default(), &token))
        .await;
    let accepted = client(open.addr)
        .await
        .list_sessions(with_token(pb::ListSessionsRequest::default(), &token))
        .await;
    let mut on_behalf = with_token(
        pb::CreateSessionRequest {
            agent: "echo".into(),
            ..Default::default()
        },
        &service,
    );
    on_behalf
        .metadata_mut()
        .insert(ON_BEHALF_OF_METADATA, user_id.parse().unwrap());
    let created = client(strict.addr).await.create_session(on_behalf).await;

    // Assert: the strict replica takes the service token acting for the user.
    let refused = refused.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    assert!(
        refused.message().contains("does not accept user tokens"),
        "{refused:?}"
    );
    assert!(accepted.is_ok(), "{accepted:?}");
    let created = created.unwrap().into_inner();
    let theirs = client(open.addr)
        .await
        .get_session(with_token(
            pb::GetSessionRequest {
                session_id: created.id.clone(),
            },
            &token,
        ))
        .await;
    assert!(theirs.is_ok(), "the session is the user's own: {theirs:?}");
}

#[tokio::test]
async fn only_services_may_act_on_behalf_of_a_user() {
    // Arrange
    let stack = spawn_stack().await;
    let (_, token) = register(stack.core.addr).await;
    let (victim, _) = register(stack.core.addr).await;
    let mut request = with_token(pb::ListSessionsRequest::default(), &token);
    request
        .metadata_mut()
        .insert(ON_BEHALF_OF_METADATA, victim.parse().unwrap());

    // Act
    let result = client(stack.core.addr).await.list_sessions(request).await;

    // Assert
    assert_eq!(result.unwrap_err().code(), tonic::Code::PermissionDenied);
}

#[tokio::test]
async fn a_user_with_their_own_token_holds_at_most_max_streams_per_user() {
    // Arrange
    let db = TestDatabase::new().await.unwrap();
    let worker = spawn_worker().await;
    let core = spawn_core_with(&db.url, &worker.url, |s| s.max_streams_per_user = 2).await;
    let (_, token) = register(core.addr).await;
    let session = create_session(core.addr, &token).await;
    let _first = watch(core.addr, &token, &session.id).await;
    let second = watch(core.addr, &token, &session.id).await;

    // Act
    let subscribe = || pb::SubscribeRequest {
        session_id: session.id.clone(),
        after_seq: 0,
    };
    let third = client(core.addr)
        .await
        .subscribe(with_token(subscribe(), &token))
        .await;
    drop(second);

    // Assert: refused while two are open; a closed one frees its place.
    assert_eq!(third.unwrap_err().code(), tonic::Code::ResourceExhausted);
    let mut again = None;
    for _ in 0..100 {
        match client(core.addr)
            .await
            .subscribe(with_token(subscribe(), &token))
            .await
        {
            Ok(stream) => {
                again = Some(stream);
                break;
            }
            Err(_) => tokio::task::yield_now().await,
        }
    }
    assert!(again.is_some(), "a freed place is taken again");
}
