//! Health, reflection and graceful shutdown of the gRPC server.

mod helpers;

use futures::StreamExt;
use helpers::spawn_app;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

#[tokio::test]
async fn health_check_reports_the_worker_and_the_server_serving() {
    let app = spawn_app().await;
    let mut health = HealthClient::new(app.channel.clone());

    for service in ["agent.v1.AgentWorker", ""] {
        let request = HealthCheckRequest {
            service: service.into(),
        };
        let response = health.check(request).await.expect("health check").into_inner();

        assert_eq!(response.status(), ServingStatus::Serving, "service {service:?}");
    }
}

#[tokio::test]
async fn reflection_lists_the_agent_worker_service() {
    let app = helpers::spawn_app_with(|s| s.grpc_reflection = true).await;
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };

    let mut responses =
        ServerReflectionClient::with_interceptor(app.channel.clone(), helpers::chat_core_token())
            .server_reflection_info(futures::stream::iter([request]))
            .await
            .expect("reflection stream")
            .into_inner();
    let response = responses
        .next()
        .await
        .expect("one response")
        .expect("reflection answer");

    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("expected a service list, got {:?}", response.message_response);
    };
    let names: Vec<&str> = list.service.iter().map(|service| service.name.as_str()).collect();
    assert!(names.contains(&"agent.v1.AgentWorker"), "{names:?}");
    assert!(
        !names.iter().any(|name| name.starts_with("chat.v1")),
        "chat.v1 is not served here: {names:?}"
    );
}

#[tokio::test]
async fn server_stops_cleanly_when_shutdown_completes() {
    let app = spawn_app().await;

    let result = app.stop().await;

    assert!(result.is_ok(), "{result:?}");
}
