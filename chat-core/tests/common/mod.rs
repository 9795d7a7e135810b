//! Spawns real agent-worker and chat-core servers on loopback for tests.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use chat_common::token::{Role, TokenKeys};
use chat_core::testing::TestDatabase;
use chat_proto::chat::v1::{
    self as pb, chat_service_client::ChatServiceClient, user_service_client::UserServiceClient,
};
use clap::Parser;
use futures::StreamExt;
use tokio::sync::oneshot;
use tonic::transport::Channel;

pub const SECRET: &str = "test-secret";

pub struct Worker {
    pub url: String,
}

pub async fn spawn_worker() -> Worker {
    let settings = agent_worker::Settings::parse_from(["agent-worker", "--listen", "127.0.0.1:0"]);
    let app = agent_worker::Application::build(settings)
        .await
        .expect("worker builds");
    let url = format!("http://{}", app.local_addr());
    tokio::spawn(app.run_until_stopped(std::future::pending()));
    Worker { url }
}

/// A running chat-core that can be stopped.
pub struct Core {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Core {
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), &mut self.done)
            .await
            .expect("core stops")
            .ok();
    }
}

pub async fn spawn_core(database_url: &str, worker_url: &str) -> Core {
    chat_common::telemetry::init_for_tests();
    let settings = chat_core::Settings::parse_from([
        "chat-core",
        "--listen",
        "127.0.0.1:0",
        "--database-url",
        database_url,
        "--migrate",
        "--agent-worker-url",
        worker_url,
        "--jwt-secret",
        SECRET,
        "--health-interval-ms",
        "100",
    ]);
    let mut settings = settings;
    settings.redis_url = std::env::var("TEST_REDIS_URL").ok().filter(|u| !u.is_empty());
    let app = chat_core::Application::build(settings)
        .await
        .expect("core builds");
    let addr = app.local_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    let done = tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    Core {
        addr,
        stop: Some(stop),
        done,
    }
}

pub struct Stack {
    pub db: TestDatabase,
    pub worker: Worker,
    pub core: Core,
}

pub async fn spawn_stack() -> Stack {
    let db = TestDatabase::new().await.expect("test database");
    let worker = spawn_worker().await;
    let core = spawn_core(&db.url, &worker.url).await;
    Stack { db, worker, core }
}

pub fn keys() -> TokenKeys {
    TokenKeys::new(SECRET.as_bytes())
}

pub fn bearer(token: &str) -> tonic::metadata::MetadataValue<tonic::metadata::Ascii> {
    format!("Bearer {token}").parse().expect("ascii token")
}

pub fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", bearer(token));
    request
}

pub async fn channel(addr: SocketAddr) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .expect("connects")
}

/// Registers a user through chat-core and returns (user id, access token).
pub async fn register(addr: SocketAddr) -> (String, String) {
    let service = keys()
        .sign("tests", Role::Service, Duration::from_secs(600))
        .unwrap();
    let mut users = UserServiceClient::new(channel(addr).await);
    let username = format!("user_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let user_id = users
        .register(with_token(
            pb::RegisterRequest {
                username,
                password: "correct horse".into(),
            },
            &service,
        ))
        .await
        .expect("registers")
        .into_inner()
        .user_id;
    let token = keys()
        .sign(&user_id, Role::User, Duration::from_secs(600))
        .unwrap();
    (user_id, token)
}

pub async fn client(addr: SocketAddr) -> ChatServiceClient<Channel> {
    ChatServiceClient::new(channel(addr).await)
}

pub async fn create_session(addr: SocketAddr, token: &str) -> pb::Session {
    client(addr)
        .await
        .create_session(with_token(
            pb::CreateSessionRequest {
                agent: "echo".into(),
                ..Default::default()
            },
            token,
        ))
        .await
        .expect("session created")
        .into_inner()
}

/// Sends a message and collects everything SendMessage streams for it.
pub async fn send(
    addr: SocketAddr,
    token: &str,
    session_id: &str,
    client_msg_id: &str,
    content: &str,
) -> Vec<pb::SendMessageEvent> {
    let request = pb::SendMessageRequest {
        session_id: session_id.into(),
        client_msg_id: client_msg_id.into(),
        content: content.into(),
        role: String::new(),
    };
    let stream = client(addr)
        .await
        .send_message(with_token(request, token))
        .await
        .expect("send accepted")
        .into_inner();
    tokio::time::timeout(
        Duration::from_secs(20),
        stream.map(|e| e.expect("stream item")).collect::<Vec<_>>(),
    )
    .await
    .expect("run finishes")
}

pub async fn history(addr: SocketAddr, token: &str, session_id: &str) -> Vec<pb::Message> {
    client(addr)
        .await
        .list_messages(with_token(
            pb::ListMessagesRequest {
                session_id: session_id.into(),
                after_seq: Some(0),
                limit: 1000,
                ..Default::default()
            },
            token,
        ))
        .await
        .expect("history")
        .into_inner()
        .messages
}
