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
    // The place frees once chat-core has seen the stream reset: tried until then.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut again = None;
    while again.is_none() && tokio::time::Instant::now() < deadline {
        match client(core.addr)
            .await
            .subscribe(with_token(subscribe(), &token))
            .await
        {
            Ok(stream) => again = Some(stream),
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    assert!(again.is_some(), "a freed place is taken again");
}

/// Lists services through reflection with `token` (none: anonymous).
async fn reflect(addr: std::net::SocketAddr, token: Option<&str>) -> Result<(), tonic::Status> {
    use futures::StreamExt;
    use tonic_reflection_pb::server_reflection_client::ServerReflectionClient;
    use tonic_reflection_pb::server_reflection_request::MessageRequest;
    let request = tonic_reflection_pb::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut request = tonic::Request::new(futures::stream::iter([request]));
    if let Some(token) = token {
        request.metadata_mut().insert("authorization", bearer(token));
    }
    let mut answers = ServerReflectionClient::new(channel(addr).await)
        .server_reflection_info(request)
        .await?
        .into_inner();
    match answers.next().await {
        Some(Ok(_)) => Ok(()),
        Some(Err(status)) => Err(status),
        None => Err(tonic::Status::unknown("no answer")),
    }
}

use tonic_reflection::pb::v1 as tonic_reflection_pb;

#[tokio::test]
async fn reflection_is_off_by_default_and_for_services_only_when_on() {
    // Arrange
    let db = TestDatabase::new().await.unwrap();
    let worker = spawn_worker().await;
    let default = spawn_core(&db.url, &worker.url).await;
    let enabled = spawn_core_with(&db.url, &worker.url, |s| s.grpc_reflection = true).await;
    let (_, user) = register(enabled.addr).await;
    let service = keys()
        .sign("tests", Role::Service, Duration::from_secs(60))
        .unwrap();

    // Act
    let off = reflect(default.addr, Some(&service)).await;
    let anonymous = reflect(enabled.addr, None).await;
    let as_user = reflect(enabled.addr, Some(&user)).await;
    let as_service = reflect(enabled.addr, Some(&service)).await;

    // Assert
    assert_eq!(off.unwrap_err().code(), tonic::Code::Unimplemented);
    assert_eq!(anonymous.unwrap_err().code(), tonic::Code::Unauthenticated);
    assert_eq!(as_user.unwrap_err().code(), tonic::Code::Unauthenticated);
    assert!(as_service.is_ok(), "{as_service:?}");
}

/// Runs `chat chat-core token ARGS` with the test secret; stdout, or stderr on failure.
fn mint(args: &[&str]) -> Result<String, String> {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_chat"))
        .arg("chat-core")
        .arg("token")
        .args(args)
        .env("JWT_SECRET", SECRET)
        .env_remove("JWT_SECRET_FILE")
        .output()
        .unwrap();
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).trim().to_owned();
    if output.status.success() {
        Ok(text(&output.stdout))
    } else {
        Err(text(&output.stderr))
    }
}

#[tokio::test]
async fn chat_core_token_mints_service_tokens_limited_to_their_scopes() {
    // Arrange
    let stack = spawn_stack().await;
    let chat_only = mint(&[
        "--service",
        "support-desk",
        "--scope",
        "chat",
        "--ttl-secs",
        "600",
    ])
    .unwrap();
    let for_workers = mint(&["--service", "probe", "--audience", "agent-worker"]).unwrap();

    // Act
    let listed = client(stack.core.addr)
        .await
        .list_sessions(with_token(pb::ListSessionsRequest::default(), &chat_only))
        .await;
    let mut users =
        chat_proto::chat::v1::user_service_client::UserServiceClient::new(channel(stack.core.addr).await);
    let register = users
        .register(with_token(
            pb::RegisterRequest {
                username: "desk_made".into(),
                password: "correct horse".into(),
            },
            &chat_only,
        ))
        .await;
    let wrong_audience = client(stack.core.addr)
        .await
        .list_sessions(with_token(pb::ListSessionsRequest::default(), &for_workers))
        .await;

    // Assert
    assert!(listed.is_ok(), "{listed:?}");
    assert_eq!(register.unwrap_err().code(), tonic::Code::PermissionDenied);
    assert_eq!(wrong_audience.unwrap_err().code(), tonic::Code::Unauthenticated);
    let bad = mint(&["--service", "", "--ttl-secs", "0"]).unwrap_err();
    assert_eq!(bad.lines().count(), 1, "{bad}");
    let unknown_scope = mint(&["--service", "x", "--scope", "everything"]).unwrap_err();
    assert!(unknown_scope.contains("everything"), "{unknown_scope}");
}

#[tokio::test]
async fn a_user_with_their_own_token_is_held_to_the_gateways_rate_limits() {
    // Arrange: 2 messages and 6 calls per window.
    let db = TestDatabase::new().await.unwrap();
    let worker = spawn_worker().await;
    let core = spawn_core_with(&db.url, &worker.url, |s| {
        s.message_rate_limit = std::num::NonZeroU32::new(2).unwrap();
        s.rate_limit_max_requests = std::num::NonZeroU32::new(6).unwrap();
    })
    .await;
    let (user_id, token) = register(core.addr).await;
    let session = create_session(core.addr, &token).await;
    let service = keys()
        .sign("tests", Role::Service, Duration::from_secs(60))
        .unwrap();
    let send_as = |request_token: String, n: u32, behalf: Option<String>| {
        let session_id = session.id.clone();
        async move {
            let mut request = with_token(
                pb::SendMessageRequest {
                    session_id,
                    client_msg_id: format!("m{n}"),
                    content: "hi".into(),
                    role: String::new(),
                    metadata_json: String::new(),
                },
                &request_token,
            );
            if let Some(user) = behalf {
                request
                    .metadata_mut()
                    .insert(ON_BEHALF_OF_METADATA, user.parse().unwrap());
            }
            client(core.addr).await.send_message(request).await.map(drop)
        }
    };

    // Act: three sends of the user's own, one by a service acting for them.
    let first = send_as(token.clone(), 1, None).await;
    let second = send_as(token.clone(), 2, None).await;
    let third = send_as(token.clone(), 3, None).await;
    let for_the_user = send_as(service.clone(), 4, Some(user_id)).await;
    let mut calls = Vec::new();
    for _ in 0..3 {
        calls.push(
            client(core.addr)
                .await
                .list_sessions(with_token(pb::ListSessionsRequest::default(), &token))
                .await,
        );
    }

    // Assert: the third message and the seventh call are refused with a retry hint.
    assert!(first.is_ok() && second.is_ok(), "{first:?} {second:?}");
    let third = third.unwrap_err();
    assert_eq!(third.code(), tonic::Code::ResourceExhausted, "{third:?}");
    assert!(third.metadata().get("x-retry-after-ms").is_some());
    assert!(
        for_the_user.is_ok(),
        "the gateway counts its users: {for_the_user:?}"
    );
    // Calls so far: create_session, three sends, then the listings.
    assert!(calls[0].is_ok() && calls[1].is_ok(), "{calls:?}");
    assert_eq!(
        calls[2].as_ref().unwrap_err().code(),
        tonic::Code::ResourceExhausted
    );
}
