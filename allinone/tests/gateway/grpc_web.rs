//! `chat.v1.ChatService` over gRPC-Web, called with tonic-web's client layer over hyper.

use crate::common;

use chat_proto::chat::v1 as pb;
use chat_proto::chat::v1::chat_service_client::ChatServiceClient;
use common::TestStack;
use futures::StreamExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tonic_web::GrpcWebClientLayer;

type GrpcWebClient = ChatServiceClient<
    tonic_web::GrpcWebClientService<
        Client<hyper_util::client::legacy::connect::HttpConnector, tonic_web::GrpcWebCall<tonic::body::Body>>,
    >,
>;

pub(crate) fn client(stack: &TestStack) -> anyhow::Result<GrpcWebClient> {
    let http = Client::builder(TokioExecutor::new()).build_http();
    let service = tower::ServiceBuilder::new()
        .layer(GrpcWebClientLayer::new())
        .service(http);
    Ok(ChatServiceClient::with_origin(service, stack.url("").parse()?))
}

pub(crate) fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let value = format!("Bearer {token}").parse().expect("ascii token");
    request.metadata_mut().insert("authorization", value);
    request
}

#[tokio::test]
async fn unary_calls_work_with_the_callers_token() -> anyhow::Result<()> {
    // Arrange
    let stack = TestStack::spawn().await?;
    let token = stack.user("alice").await?;
    let mut chat = client(&stack)?;

    // Act
    let created = chat
        .create_session(with_token(
            pb::CreateSessionRequest {
                title: "over grpc-web".into(),
                agent: "echo".into(),
                ..Default::default()
            },
            &token,
        ))
        .await?
        .into_inner();
    let listed = chat
        .list_sessions(with_token(pb::ListSessionsRequest::default(), &token))
        .await?
        .into_inner();

    // Assert: the same session REST sees, owned by the caller.
    assert_eq!(created.title, "over grpc-web");
    assert!(listed.sessions.iter().any(|s| s.id == created.id));
    let rest = stack
        .http
        .get(stack.url(&format!("/api/v1/sessions/{}", created.id)))
        .bearer_auth(&token)
        .send()
        .await?;
    assert_eq!(rest.status(), 200);
    Ok(())
}

#[tokio::test]
async fn calls_without_a_valid_token_are_unauthenticated() -> anyhow::Result<()> {
    // Arrange
    let stack = TestStack::spawn().await?;
    let mut chat = client(&stack)?;

    // Act
    let anonymous = chat.list_agents(pb::ListAgentsRequest {}).await;
    let garbage = chat
        .list_agents(with_token(pb::ListAgentsRequest {}, "not.a.token"))
        .await;

    // Assert
    assert_eq!(
        anonymous.expect_err("anonymous").code(),
        tonic::Code::Unauthenticated
    );
    assert_eq!(garbage.expect_err("garbage").code(), tonic::Code::Unauthenticated);
    Ok(())
}

#[tokio::test]
async fn other_users_session_is_not_readable_over_grpc_web() -> anyhow::Result<()> {
    // Arrange
    let stack = TestStack::spawn().await?;
    let alice = stack.user("alice").await?;
    let bob = stack.user("bob").await?;
    let session_id = stack.session(&alice, "echo").await?;
    let mut chat = client(&stack)?;

    // Act
    let denied = chat
        .get_session(with_token(pb::GetSessionRequest { session_id }, &bob))
        .await;

    // Assert
    let code = denied.expect_err("bob may not read alice's session").code();
    assert!(
        matches!(code, tonic::Code::PermissionDenied | tonic::Code::NotFound),
        "{code:?}"
    );
    Ok(())
}

#[tokio::test]
async fn send_message_streams_ack_and_reply() -> anyhow::Result<()> {
    // Arrange
    let stack = TestStack::spawn().await?;
    let token = stack.user("alice").await?;
    let session_id = stack.session(&token, "echo").await?;
    let mut chat = client(&stack)?;

    // Act
    let request = pb::SendMessageRequest {
        session_id: session_id.clone(),
        client_msg_id: "gw1".into(),
        content: "hello over grpc-web".into(),
        ..Default::default()
    };
    let mut events = chat.send_message(with_token(request, &token)).await?.into_inner();
    let mut acked = false;
    let mut reply = None;
    while let Some(event) = tokio::time::timeout(common::TIMEOUT, events.next()).await? {
        match event?.event {
            Some(pb::send_message_event::Event::Ack(ack)) => acked = ack.client_msg_id == "gw1",
            Some(pb::send_message_event::Event::SessionEvent(pb::SessionEvent {
                event: Some(pb::session_event::Event::Message(message)),
            })) if message.role == "assistant" => {
                reply = Some(message.content);
                break;
            }
            _ => {}
        }
    }

    // Assert
    assert!(acked, "an ack first");
    assert_eq!(reply.as_deref(), Some("hello over grpc-web"));
    Ok(())
}

#[tokio::test]
async fn connect_is_unimplemented_and_sends_are_rate_limited() -> anyhow::Result<()> {
    // Arrange
    let stack = TestStack::spawn_with(|s| {
        s.message_rate_limit = common::nz(1);
        s.message_rate_limit_window_secs = 600;
    })
    .await?;
    let token = stack.user("alice").await?;
    let session_id = stack.session(&token, "echo").await?;
    let mut chat = client(&stack)?;
    let send = |id: &str| pb::SendMessageRequest {
        session_id: session_id.clone(),
        client_msg_id: id.into(),
        content: "hi".into(),
        ..Default::default()
    };

    // Act
    let connect = chat
        .connect(with_token(futures::stream::empty::<pb::ClientFrame>(), &token))
        .await;
    let first = chat.send_message(with_token(send("a"), &token)).await;
    let second = chat.send_message(with_token(send("b"), &token)).await;

    // Assert
    assert_eq!(
        connect.expect_err("no bidi over grpc-web").code(),
        tonic::Code::Unimplemented
    );
    assert!(first.is_ok());
    let limited = second.expect_err("over the message limit");
    assert_eq!(limited.code(), tonic::Code::ResourceExhausted);
    assert!(limited.metadata().get("x-retry-after-ms").is_some());
    Ok(())
}

#[tokio::test]
async fn grpc_web_preflight_from_a_listed_origin_is_allowed() -> anyhow::Result<()> {
    // Arrange
    let stack = TestStack::spawn_with(|s| s.allowed_origins = vec!["https://app.example.com".into()]).await?;

    // Act
    let response = stack
        .http
        .request(
            reqwest::Method::OPTIONS,
            stack.url("/chat.v1.ChatService/ListSessions"),
        )
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type,x-grpc-web,x-user-agent",
        )
        .send()
        .await?;

    // Assert
    assert_eq!(
        response
            .headers()
            .get("access-control-allow-origin")
            .and_then(|v| v.to_str().ok()),
        Some("https://app.example.com")
    );
    Ok(())
}
