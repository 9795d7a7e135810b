//! Spawns the whole stack (agent-worker, chat-core on a fresh database,
//! gateway) on 127.0.0.1:0 and talks to it with real clients.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub use chat_testkit::SECRET;

/// A positive count, as the rate limit settings take them.
pub fn nz(n: u32) -> std::num::NonZeroU32 {
    std::num::NonZeroU32::new(n).expect("positive")
}
pub const PASSWORD: &str = "correct horse battery";
/// Longest any single awaited frame or response may take.
pub const TIMEOUT: Duration = Duration::from_secs(15);

/// A running stack; dropping it leaves the servers to the test runtime's end.
pub struct TestStack {
    pub addr: SocketAddr,
    pub http: reqwest::Client,
    pub core_url: String,
    _stack: chat_testkit::Stack,
}

impl TestStack {
    /// Grants `username` the operator role, as `chat-core operator grant` does.
    pub async fn grant_operator(&self, username: &str) -> anyhow::Result<()> {
        chat_core::set_operator(&self._stack.db.url, chat_core::OperatorAction::Grant, username).await
    }

    /// Takes the operator role away, as `chat-core operator revoke` does.
    pub async fn revoke_operator(&self, username: &str) -> anyhow::Result<()> {
        chat_core::set_operator(&self._stack.db.url, chat_core::OperatorAction::Revoke, username).await
    }
}

impl TestStack {
    pub async fn spawn() -> anyhow::Result<Self> {
        Self::spawn_with(|_| {}).await
    }

    /// Spawns the stack with the gateway's settings adjusted (limits, origins, lifetimes).
    pub async fn spawn_with(
        gateway: impl FnOnce(&mut gateway::Settings) + Send + 'static,
    ) -> anyhow::Result<Self> {
        Self::spawn_full(|_| {}, gateway, None).await
    }

    /// Spawns the stack with chat-core's and the gateway's settings adjusted,
    /// on a fresh database or, with `database_url`, on that one (for example
    /// through a proxy in front of the test database).
    pub async fn spawn_full(
        core: impl FnOnce(&mut chat_core::Settings) + Send + 'static,
        gateway: impl FnOnce(&mut gateway::Settings) + Send + 'static,
        database_url: Option<chat_testkit::Rewrite>,
    ) -> anyhow::Result<Self> {
        // The gateway calls chat-core with its service token only.
        let core = move |s: &mut chat_core::Settings| {
            s.accept_user_tokens = false;
            core(s);
        };
        let mut builder = chat_testkit::Stack::builder().core(core).gateway(gateway);
        if let Some(rewrite) = database_url {
            builder = builder.database_url(rewrite);
        }
        Self::from_builder(builder).await
    }

    /// Spawns the stack `builder` describes (it must add a gateway).
    pub async fn from_builder(builder: chat_testkit::StackBuilder) -> anyhow::Result<Self> {
        let stack = builder.start().await?;
        let http = reqwest::Client::builder().timeout(TIMEOUT).build()?;
        Ok(Self {
            addr: stack.gateway().addr,
            http,
            core_url: stack.core.url.clone(),
            _stack: stack,
        })
    }

    /// Another gateway in front of the same chat-core; returns its address.
    pub async fn spawn_gateway(
        &self,
        configure: impl FnOnce(&mut gateway::Settings),
    ) -> anyhow::Result<SocketAddr> {
        spawn_gateway(&self.core_url, configure).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Registers `username` with [`PASSWORD`].
    pub async fn register(&self, username: &str) -> anyhow::Result<()> {
        let response = self
            .http
            .post(self.url("/api/v1/auth/register"))
            .json(&json!({"username": username, "password": PASSWORD}))
            .send()
            .await?;
        anyhow::ensure!(
            response.status() == 201,
            "register: {} {}",
            response.status(),
            response.text().await?
        );
        Ok(())
    }

    /// Logs `username` in with [`PASSWORD`]; returns the token pair.
    pub async fn login(&self, username: &str) -> anyhow::Result<Value> {
        let response = self
            .http
            .post(self.url("/api/v1/auth/login"))
            .json(&json!({"username": username, "password": PASSWORD}))
            .send()
            .await?;
        anyhow::ensure!(
            response.status() == 200,
            "login: {} {}",
            response.status(),
            response.text().await?
        );
        Ok(response.json().await?)
    }

    /// Registers `username` and logs in; returns the access token.
    pub async fn user(&self, username: &str) -> anyhow::Result<String> {
        self.register(username).await?;
        let pair = self.login(username).await?;
        pair["access_token"]
            .as_str()
            .map(str::to_owned)
            .context("login returned no access_token")
    }

    /// Creates a session with `agent`; returns its id.
    pub async fn session(&self, token: &str, agent: &str) -> anyhow::Result<String> {
        let response = self
            .http
            .post(self.url("/api/v1/sessions"))
            .bearer_auth(token)
            .json(&json!({"title": "test", "agent": agent}))
            .send()
            .await?;
        anyhow::ensure!(
            response.status() == 201,
            "create session: {} {}",
            response.status(),
            response.text().await?
        );
        let body: Value = response.json().await?;
        body["id"]
            .as_str()
            .map(str::to_owned)
            .context("session has no id")
    }

    pub async fn history(&self, token: &str, session_id: &str) -> anyhow::Result<Vec<Value>> {
        let response = self
            .http
            .get(self.url(&format!("/api/v1/sessions/{session_id}/messages")))
            .bearer_auth(token)
            .send()
            .await?;
        anyhow::ensure!(response.status() == 200, "history: {}", response.status());
        let body: Value = response.json().await?;
        body["messages"].as_array().cloned().context("no messages array")
    }

    /// Opens a WebSocket authenticated with the `Authorization` header.
    pub async fn ws(&self, token: &str) -> anyhow::Result<WsClient> {
        let mut request = format!("ws://{}/api/v1/ws", self.addr).into_client_request()?;
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse()?);
        let (stream, _) = tokio_tungstenite::connect_async(request).await?;
        Ok(WsClient { stream })
    }
}

/// Starts a gateway on 127.0.0.1:0 in front of `core_url`, its settings adjusted by `configure`.
pub async fn spawn_gateway(
    core_url: &str,
    configure: impl FnOnce(&mut gateway::Settings),
) -> anyhow::Result<SocketAddr> {
    Ok(chat_testkit::gateway(core_url, configure).await?.addr)
}

/// Retries `attempt` until it returns `Some`, failing after [`TIMEOUT`].
pub async fn eventually<T, F, Fut>(what: &str, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        if let Some(value) = attempt().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A WebSocket client speaking JSON frames.
pub struct WsClient {
    pub stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl WsClient {
    pub async fn send(&mut self, frame: Value) {
        self.stream
            .send(Message::text(frame.to_string()))
            .await
            .expect("send frame");
    }

    pub async fn send_raw(&mut self, message: Message) {
        self.stream.send(message).await.expect("send frame");
    }

    /// The next JSON frame; panics on close or after [`TIMEOUT`].
    pub async fn recv(&mut self) -> Value {
        loop {
            let message = tokio::time::timeout(TIMEOUT, self.stream.next())
                .await
                .expect("timed out waiting for a frame")
                .expect("socket closed")
                .expect("socket error");
            match message {
                Message::Text(text) => return serde_json::from_str(text.as_str()).expect("frame is JSON"),
                Message::Ping(_) | Message::Pong(_) => {}
                other => panic!("unexpected message {other:?}"),
            }
        }
    }

    /// Frames up to and including the first one matching `done`.
    pub async fn recv_until(&mut self, mut done: impl FnMut(&Value) -> bool) -> Vec<Value> {
        let mut frames = Vec::new();
        loop {
            let frame = self.recv().await;
            let finished = done(&frame);
            frames.push(frame);
            if finished {
                return frames;
            }
        }
    }

    pub async fn subscribe(&mut self, session_id: &str) -> Value {
        self.send(json!({"type": "subscribe", "session_id": session_id, "after_seq": 0}))
            .await;
        let frame = self.recv().await;
        assert_eq!(frame["type"], "subscribed", "{frame}");
        frame
    }
}

/// True for the `message` frame carrying an assistant reply.
pub fn is_reply(frame: &Value) -> bool {
    frame["type"] == "message" && frame["message"]["role"] == "assistant"
}

/// The frames of type `kind`.
pub fn of_type<'a>(frames: &'a [Value], kind: &str) -> Vec<&'a Value> {
    frames.iter().filter(|f| f["type"] == kind).collect()
}
