//! Spawns real agent-worker and chat-core servers on loopback for tests.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use chat_common::token::{Role, TokenKeys};
use chat_proto::chat::v1::{
    self as pb, chat_service_client::ChatServiceClient, user_service_client::UserServiceClient,
};
use chat_testkit::TestDatabase;
use futures::StreamExt;
use tonic::transport::Channel;

pub use chat_testkit::{Core, SECRET, SLOW_AGENTS, Worker};

/// A store over a fresh, migrated test database (SQLite, or Postgres when
/// `TEST_DATABASE_URL` is set); keep the database alive as long as the store.
pub async fn fresh_store() -> (std::sync::Arc<dyn chat_core::store::ChatStore>, TestDatabase) {
    use migration::MigratorTrait;
    let db = TestDatabase::new().await.expect("test database");
    let conn = chat_core::store::connect(&db.url, 8, Duration::from_secs(5))
        .await
        .expect("connect");
    migration::Migrator::up(&conn, None).await.expect("migrate");
    (std::sync::Arc::new(chat_core::store::SeaStore::new(conn)), db)
}

pub async fn spawn_worker() -> Worker {
    spawn_worker_with(None).await
}

/// A worker with the agents of `config` (TOML), or the built-in ones.
pub async fn spawn_worker_with(config: Option<&str>) -> Worker {
    chat_testkit::worker(config, |_| {}).await.expect("worker starts")
}

pub async fn spawn_core(database_url: &str, worker_url: &str) -> Core {
    spawn_core_with(database_url, worker_url, |_| {}).await
}

/// A chat-core with its settings adjusted by `configure`. `worker_urls` is comma separated.
pub async fn spawn_core_with(
    database_url: &str,
    worker_urls: &str,
    configure: impl FnOnce(&mut chat_core::Settings),
) -> Core {
    let workers: Vec<&str> = worker_urls.split(',').collect();
    chat_testkit::core(database_url, &workers, configure)
        .await
        .expect("core starts")
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
    create_session_with(addr, token, "echo", "").await
}

pub async fn create_session_with(
    addr: SocketAddr,
    token: &str,
    agent: &str,
    concurrency: &str,
) -> pb::Session {
    let request = pb::CreateSessionRequest {
        agent: agent.into(),
        concurrency: concurrency.into(),
        ..Default::default()
    };
    client(addr)
        .await
        .create_session(with_token(request, token))
        .await
        .expect("session created")
        .into_inner()
}

/// Opens a second connection's view of a session: `Subscribe` from seq 0.
pub async fn watch(addr: SocketAddr, token: &str, session_id: &str) -> tonic::Streaming<pb::SessionEvent> {
    let request = pb::SubscribeRequest {
        session_id: session_id.into(),
        after_seq: 0,
    };
    client(addr)
        .await
        .subscribe(with_token(request, token))
        .await
        .expect("subscribed")
        .into_inner()
}

/// The next event of a subscription matching `wanted`, skipping others.
pub async fn next_matching(
    events: &mut tonic::Streaming<pb::SessionEvent>,
    mut wanted: impl FnMut(&pb::session_event::Event) -> bool,
) -> pb::session_event::Event {
    loop {
        let item = tokio::time::timeout(Duration::from_secs(15), events.next())
            .await
            .expect("event in time")
            .expect("stream open")
            .expect("no error");
        if let Some(event) = item.event
            && wanted(&event)
        {
            return event;
        }
    }
}

/// Starts a send and returns once it is acked, leaving the run going.
pub async fn start_send(
    addr: SocketAddr,
    token: &str,
    session_id: &str,
    client_msg_id: &str,
    content: &str,
) -> Result<pb::Ack, tonic::Status> {
    let request = pb::SendMessageRequest {
        session_id: session_id.into(),
        client_msg_id: client_msg_id.into(),
        content: content.into(),
        role: String::new(),
        metadata_json: String::new(),
    };
    let mut stream = client(addr)
        .await
        .send_message(with_token(request, token))
        .await?
        .into_inner();
    match stream.next().await {
        Some(Ok(pb::SendMessageEvent {
            event: Some(pb::send_message_event::Event::Ack(ack)),
        })) => Ok(ack),
        Some(Err(status)) => Err(status),
        other => panic!("expected an ack, got {other:?}"),
    }
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
        metadata_json: String::new(),
    };
    let stream = client(addr)
        .await
        .send_message(with_token(request, token))
        .await
        .expect("send accepted")
        .into_inner();
    // Generous: a long reply on Redis under a loaded machine takes a while;
    // this only turns a hang into a failure.
    tokio::time::timeout(
        Duration::from_secs(90),
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
