//! Only chat-core may call an agent-worker: `Run` and `ListAgents` need a
//! service token meant for agent-workers; reflection is off unless enabled,
//! and then needs one too.

mod helpers;

use std::time::Duration;

use chat_common::token::{Role, TokenKeys};
use chat_proto::agent::v1::ListAgentsRequest;
use chat_proto::agent::v1::agent_worker_client::AgentWorkerClient;
use futures::StreamExt;
use helpers::{SECRET, run_request, spawn_app, spawn_app_with};
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;

fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let value = format!("Bearer {token}").parse().expect("ascii");
    request.metadata_mut().insert("authorization", value);
    request
}

#[tokio::test]
async fn run_and_list_agents_without_chat_cores_token_are_refused() {
    // Arrange
    let app = spawn_app().await;
    let mut anonymous = AgentWorkerClient::new(app.channel.clone());
    let keys = TokenKeys::new(SECRET.as_bytes());
    let user = keys
        .sign("u1", Role::User, Duration::from_secs(60))
        .expect("sign");
    let for_chat_core = keys
        .sign("svc", Role::Service, Duration::from_secs(60))
        .expect("sign");

    // Act
    let listed = anonymous.list_agents(ListAgentsRequest {}).await;
    let run = anonymous.run(run_request("echo", &["hi"])).await;
    let as_user = anonymous
        .list_agents(with_token(ListAgentsRequest {}, &user))
        .await;
    let wrong_audience = anonymous
        .run(with_token(run_request("echo", &["hi"]), &for_chat_core))
        .await;
    let chat_core = app.worker().list_agents(ListAgentsRequest {}).await;

    // Assert
    assert_eq!(listed.unwrap_err().code(), tonic::Code::Unauthenticated);
    assert_eq!(run.unwrap_err().code(), tonic::Code::Unauthenticated);
    assert_eq!(as_user.unwrap_err().code(), tonic::Code::Unauthenticated);
    assert_eq!(wrong_audience.unwrap_err().code(), tonic::Code::Unauthenticated);
    assert!(chat_core.is_ok(), "{chat_core:?}");
}

fn list_services() -> ServerReflectionRequest {
    ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    }
}

async fn reflect<T>(client: &mut ServerReflectionClient<T>) -> Result<(), tonic::Status>
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<tonic::codegen::StdError>,
    T::ResponseBody: tonic::codegen::Body<Data = tonic::codegen::Bytes> + Send + 'static,
    <T::ResponseBody as tonic::codegen::Body>::Error: Into<tonic::codegen::StdError> + Send,
{
    let mut responses = client
        .server_reflection_info(futures::stream::iter([list_services()]))
        .await?
        .into_inner();
    match responses.next().await {
        Some(Ok(_)) => Ok(()),
        Some(Err(status)) => Err(status),
        None => Err(tonic::Status::unknown("no answer")),
    }
}

#[tokio::test]
async fn reflection_is_off_by_default_and_needs_a_token_when_on() {
    // Arrange
    let default = spawn_app().await;
    let enabled = spawn_app_with(|s| s.grpc_reflection = true).await;

    // Act
    let off = reflect(&mut ServerReflectionClient::new(default.channel.clone())).await;
    let anonymous = reflect(&mut ServerReflectionClient::new(enabled.channel.clone())).await;
    let with_token = reflect(&mut ServerReflectionClient::with_interceptor(
        enabled.channel.clone(),
        helpers::chat_core_token(),
    ))
    .await;

    // Assert
    assert_eq!(off.unwrap_err().code(), tonic::Code::Unimplemented);
    assert_eq!(anonymous.unwrap_err().code(), tonic::Code::Unauthenticated);
    assert!(with_token.is_ok(), "{with_token:?}");
}

#[tokio::test]
async fn a_worker_without_a_secret_or_mutual_tls_does_not_start() {
    let settings = agent_worker::Settings {
        listen: "127.0.0.1:0".parse().expect("address"),
        ..Default::default()
    };
    let error = agent_worker::Application::build(settings)
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(error.starts_with("JWT_SECRET"), "{error}");
}
