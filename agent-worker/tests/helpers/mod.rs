//! Spawns a real agent-worker on 127.0.0.1:0 and talks to it with a real tonic client.

#![allow(dead_code)] // Each test file uses a different part of the helpers.

pub mod openai;

use std::net::SocketAddr;

use agent_worker::{Application, Settings};
use chat_common::token::{Audience, SelfSigned, TokenKeys};
use chat_proto::agent::v1::agent_worker_client::AgentWorkerClient;
use chat_proto::agent::v1::run_event::Event;
use chat_proto::agent::v1::{HistoryMessage, RunRequest};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

/// The token secret the test workers share with their callers.
pub const SECRET: &str = "worker-test-secret-of-32-bytes!!";

/// chat-core's tokens for agent-workers, as chat-core signs them.
pub fn chat_core_token() -> SelfSigned {
    SelfSigned::new(
        std::sync::Arc::new(TokenKeys::new(SECRET.as_bytes())),
        "chat-core",
        &[Audience::AgentWorker],
        std::time::Duration::from_secs(300),
    )
}

/// A running worker; dropping it stops the server.
pub struct TestApp {
    pub addr: SocketAddr,
    pub channel: Channel,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<anyhow::Result<()>>>,
    _config_dir: Option<tempfile::TempDir>,
}

/// Starts a worker with the built-in agents config.
pub async fn spawn_app() -> TestApp {
    spawn(|_| {}, None).await
}

/// Starts a worker serving the agents declared in `toml`, passed as an `--agents-config` file.
pub async fn spawn_app_with_config(toml: &str) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("agents.toml");
    std::fs::write(&path, toml).expect("write agents config");
    spawn(move |s| s.agents_config = Some(path), Some(dir)).await
}

/// Starts a worker with the built-in agents config and its settings adjusted by `configure`.
pub async fn spawn_app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    spawn(configure, None).await
}

async fn spawn(configure: impl FnOnce(&mut Settings), config_dir: Option<tempfile::TempDir>) -> TestApp {
    chat_common::telemetry::init_for_tests();
    // Built in code: an LLM_BASE_URL in the developer's environment cannot add an agent.
    let mut settings = Settings {
        listen: "127.0.0.1:0".parse().expect("address"),
        jwt_secret: Some(SECRET.into()),
        ..Default::default()
    };
    configure(&mut settings);
    let app = Application::build(settings).await.expect("application builds");
    let addr = app.local_addr();
    let (shutdown, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .expect("valid endpoint")
        .connect()
        .await
        .expect("worker accepts connections");
    TestApp {
        addr,
        channel,
        shutdown: Some(shutdown),
        server: Some(server),
        _config_dir: config_dir,
    }
}

impl TestApp {
    /// A client of the `agent.v1.AgentWorker` service, with chat-core's token.
    pub fn worker(&self) -> AgentWorkerClient<InterceptedService<Channel, SelfSigned>> {
        AgentWorkerClient::with_interceptor(self.channel.clone(), chat_core_token())
    }

    /// Runs `agent` on a conversation of user messages and collects every event it streams.
    pub async fn run(&self, agent: &str, messages: &[&str]) -> Vec<Event> {
        let mut stream = self
            .worker()
            .run(run_request(agent, messages))
            .await
            .expect("run starts")
            .into_inner();
        let mut events = Vec::new();
        while let Some(event) = stream.message().await.expect("stream stays healthy") {
            events.push(event.event.expect("event is set"));
        }
        events
    }

    /// Asks the server to stop and waits until it has.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        drop(self.shutdown.take());
        self.server
            .take()
            .expect("server still running")
            .await
            .expect("server task")
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(server) = &self.server {
            server.abort();
        }
    }
}

/// A run request whose history is `messages`, all from the user, oldest first.
pub fn run_request(agent: &str, messages: &[&str]) -> RunRequest {
    RunRequest {
        run_id: "run-1".into(),
        session_id: "session-1".into(),
        agent: agent.into(),
        attempt: 1,
        history: messages
            .iter()
            .zip(1..)
            .map(|(content, seq)| HistoryMessage {
                seq,
                role: "user".into(),
                agent: String::new(),
                content: (*content).into(),
            })
            .collect(),
        metadata_json: "{}".into(),
    }
}

/// Splits a successful run into its delta texts and final content, failing on anything else.
pub fn deltas_and_final(events: &[Event]) -> (Vec<String>, String) {
    let Some((Event::Final(last), deltas)) = events.split_last() else {
        panic!("run should end with a final event: {events:?}");
    };
    let deltas = deltas
        .iter()
        .map(|event| match event {
            Event::Delta(delta) => delta.text.clone(),
            other => panic!("expected only deltas before the final event, got {other:?}"),
        })
        .collect();
    (deltas, last.content.clone())
}
