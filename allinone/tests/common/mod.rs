//! A small kit for tests that run the services of the `chat` binary as
//! separate processes: spawn one with its flags, wait for its admin `/readyz`,
//! scrape `/metrics`, send SIGTERM and time its exit, plus REST and WebSocket
//! clients for the gateway.
//!
//! Every process logs (JSON, `RUST_LOG=info`) to `<dir>/<name>.log`; a failed
//! wait quotes the end of that log.

#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Token secret shared by the gateways and chat-cores of a test.
pub const SECRET: &str = "process-test-secret-of-32-bytes!";
pub const PASSWORD: &str = "correct horse battery";
/// Longest a service may take to turn ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Interval between two readiness probes.
const PROBE_EVERY: Duration = Duration::from_millis(50);

/// A loopback address with a port that was free a moment ago.
pub fn free_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address")
}

/// The all-in-one with a clean environment plus `env`, on free ports.
pub struct AllInOne {
    pub child: Child,
    pub gateway: SocketAddr,
    pub admin: SocketAddr,
}

impl AllInOne {
    pub fn spawn(data_dir: &Path, env: &[(&str, &str)]) -> Self {
        let (gateway, admin) = (free_addr(), free_addr());
        let log = std::fs::File::create(data_dir.with_extension("log")).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_chat"));
        command
            .args(["--data-dir", data_dir.to_str().unwrap()])
            .args([
                "--listen",
                &gateway.to_string(),
                "--admin-listen",
                &admin.to_string(),
            ])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true);
        Self {
            child: command.spawn().unwrap(),
            gateway,
            admin,
        }
    }

    pub async fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        let url = format!("http://{}/readyz", self.admin);
        loop {
            assert!(
                self.child.try_wait().unwrap().is_none(),
                "chat exited before it was ready"
            );
            if reqwest::get(&url).await.is_ok_and(|r| r.status() == 200) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "chat not ready within {READY_TIMEOUT:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id().unwrap()
    }
}

/// Which service of the `chat` binary to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Gateway,
    ChatCore,
    AgentWorker,
}

impl Kind {
    fn subcommand(self) -> &'static str {
        match self {
            Self::Gateway => "gateway",
            Self::ChatCore => "chat-core",
            Self::AgentWorker => "agent-worker",
        }
    }
}

/// The `chat` binary with a clean environment: only `env` (plus `PATH`,
/// `HOME`, `TMPDIR` and JSON logs at `RUST_LOG=info`), so settings in the
/// test's environment (`DATABASE_URL`, `REDIS_URL`, ...) cannot leak in.
fn command(args: &[String], env: &[(&str, &str)], log: &Path) -> anyhow::Result<Command> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("open {}", log.display()))?;
    let mut command = Command::new(env!("CARGO_BIN_EXE_chat"));
    command.args(args).env_clear();
    for key in ["PATH", "HOME", "TMPDIR"] {
        if let Some(value) = std::env::var_os(key) {
            command.env(key, value);
        }
    }
    command.env("LOG_FORMAT", "json").env("RUST_LOG", "info");
    command.envs(env.iter().copied());
    command
        .stdin(Stdio::null())
        .stdout(Stdio::from(file.try_clone()?))
        .stderr(Stdio::from(file))
        .kill_on_drop(true);
    Ok(command)
}

/// Owned command-line arguments.
pub fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|&a| a.to_owned()).collect()
}

/// What a stack of processes on Postgres starts from: a directory for
/// their logs and the agents config, and a migrated test database.
pub struct StackBase {
    pub dir: tempfile::TempDir,
    pub db: chat_testkit::TestDatabase,
    /// Path of the agents config.
    pub agents: String,
}

impl StackBase {
    /// Writes `agents_toml` to `<dir>/agents.toml` and migrates a test
    /// database, which must be Postgres (`TEST_DATABASE_URL`).
    pub async fn postgres(agents_toml: &str) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let db = chat_testkit::TestDatabase::new().await?;
        ensure!(db.is_postgres(), "TEST_DATABASE_URL must be a Postgres URL");
        let agents = dir.path().join("agents.toml");
        std::fs::write(&agents, agents_toml)?;
        let agents = agents.display().to_string();
        run_once(
            &["chat-core", "--database-url", &db.url, "migrate"],
            dir.path(),
            "migrate",
            Duration::from_secs(60),
        )
        .await?;
        Ok(Self { dir, db, agents })
    }

    /// The arguments of this stack's agent-workers: its agents, the drain
    /// deadline and the shared secret.
    pub fn worker_args(&self, drain: Duration) -> Vec<String> {
        Self::worker_args_for(&self.agents, drain)
    }

    /// [`StackBase::worker_args`] for the agents config at `agents`.
    pub fn worker_args_for(agents: &str, drain: Duration) -> Vec<String> {
        args(&[
            "--agents-config",
            agents,
            "--shutdown-timeout-secs",
            &drain.as_secs().to_string(),
            "--jwt-secret",
            SECRET,
        ])
    }
}

/// Starts one process of `kind` per name, all at once, with the same arguments.
pub async fn start_all(
    kind: Kind,
    names: &[&str],
    args: &[String],
    dir: &Path,
) -> anyhow::Result<Vec<Service>> {
    futures::future::try_join_all(names.iter().map(|name| Service::start(kind, name, args, dir))).await
}

/// Runs `chat <args>` to completion (e.g. `chat-core ... migrate`).
pub async fn run_once(
    args: &[&str],
    dir: &Path,
    name: &str,
    timeout: Duration,
) -> anyhow::Result<ExitStatus> {
    let log = dir.join(format!("{name}.log"));
    let args: Vec<String> = args.iter().map(|&a| a.to_owned()).collect();
    let mut child = command(&args, &[], &log)?.spawn().context("spawn chat")?;
    let status = tokio::time::timeout(timeout, child.wait())
        .await
        .with_context(|| format!("{name} did not finish within {timeout:?}:\n{}", tail(&log)))??;
    ensure!(status.success(), "{name} failed with {status}:\n{}", tail(&log));
    Ok(status)
}

/// One running service process.
pub struct Service {
    pub name: String,
    pub kind: Kind,
    /// The API listener (HTTP for the gateway, gRPC for the others).
    pub addr: SocketAddr,
    /// The admin listener: `/healthz`, `/readyz`, `/metrics`.
    pub admin: SocketAddr,
    pub log: PathBuf,
    child: Child,
    terminated_at: Option<Instant>,
    http: reqwest::Client,
}

impl Service {
    /// Starts `chat <kind> --listen <free> --admin-listen <free> <args>` and
    /// waits until its `/readyz` answers 200. A process that exits before
    /// (say, a port taken in between) is started again on other ports.
    pub async fn start(kind: Kind, name: &str, args: &[String], dir: &Path) -> anyhow::Result<Self> {
        let mut last_error = None;
        for _ in 0..3 {
            let mut service = Self::spawn(kind, name, args, &[], dir)?;
            match service.wait_ready(READY_TIMEOUT).await {
                Ok(()) => return Ok(service),
                Err(error) if service.has_exited() => last_error = Some(error),
                Err(error) => return Err(error),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("{name} did not start")))
    }

    /// Spawns the process without waiting for it.
    pub fn spawn(
        kind: Kind,
        name: &str,
        args: &[String],
        env: &[(&str, &str)],
        dir: &Path,
    ) -> anyhow::Result<Self> {
        Self::spawn_on(kind, name, args, env, dir, free_addr(), free_addr())
    }

    /// Spawns the process on the given API and admin addresses (say, those
    /// of a process it replaces) without waiting for it.
    pub fn spawn_on(
        kind: Kind,
        name: &str,
        args: &[String],
        env: &[(&str, &str)],
        dir: &Path,
        addr: SocketAddr,
        admin: SocketAddr,
    ) -> anyhow::Result<Self> {
        let log = dir.join(format!("{name}.log"));
        let mut full = vec![
            kind.subcommand().to_owned(),
            "--listen".into(),
            addr.to_string(),
            "--admin-listen".into(),
            admin.to_string(),
        ];
        full.extend(args.iter().cloned());
        let child = command(&full, env, &log)?
            .spawn()
            .with_context(|| format!("spawn {name}"))?;
        Ok(Self {
            name: name.to_owned(),
            kind,
            addr,
            admin,
            log,
            child,
            terminated_at: None,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()?,
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    fn has_exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// The status `/readyz` answers with.
    pub async fn readyz(&self) -> anyhow::Result<u16> {
        let response = self
            .http
            .get(format!("http://{}/readyz", self.admin))
            .send()
            .await?;
        Ok(response.status().as_u16())
    }

    /// Polls `/readyz` until it answers 200; fails when the process exits
    /// or `timeout` passes.
    pub async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                bail!(
                    "{} exited with {status} before it was ready:\n{}",
                    self.name,
                    self.logs_tail()
                );
            }
            if matches!(self.readyz().await, Ok(200)) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} not ready within {timeout:?}:\n{}",
                    self.name,
                    self.logs_tail()
                );
            }
            tokio::time::sleep(PROBE_EVERY).await;
        }
    }

    /// The `/metrics` page, parsed.
    pub async fn metrics(&self) -> anyhow::Result<Metrics> {
        let text = self
            .http
            .get(format!("http://{}/metrics", self.admin))
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        Ok(Metrics::parse(&text))
    }

    /// Scrapes `/metrics` until `check` accepts it (counters recorded just
    /// after a response can lag it by a moment); returns the last scrape
    /// either way.
    pub async fn metrics_when(
        &self,
        timeout: Duration,
        check: impl Fn(&Metrics) -> bool,
    ) -> anyhow::Result<Metrics> {
        let deadline = Instant::now() + timeout;
        loop {
            let metrics = self.metrics().await?;
            if check(&metrics) || Instant::now() >= deadline {
                return Ok(metrics);
            }
            tokio::time::sleep(PROBE_EVERY).await;
        }
    }

    /// Sends SIGTERM (with the `kill` command: the workspace forbids `unsafe`).
    pub fn terminate(&mut self) -> anyhow::Result<()> {
        let pid = self.pid().context("process already reaped")?;
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .context("run kill")?;
        ensure!(status.success(), "kill -TERM {pid} failed: {status}");
        self.terminated_at = Some(Instant::now());
        Ok(())
    }

    /// Sends SIGKILL: the process dies at once, without draining.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        self.child
            .start_kill()
            .with_context(|| format!("kill {}", self.name))
    }

    /// Whether the process has exited (and was reaped).
    pub fn exited(&mut self) -> bool {
        self.has_exited()
    }

    /// Waits for the process to exit; returns its status and the time since
    /// [`Service::terminate`] (or since this call, without one).
    pub async fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<(ExitStatus, Duration)> {
        let since = self.terminated_at.unwrap_or_else(Instant::now);
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(status) => Ok((status?, since.elapsed())),
            Err(_) => bail!(
                "{} still running {:?} after SIGTERM:\n{}",
                self.name,
                since.elapsed(),
                self.logs_tail()
            ),
        }
    }

    /// SIGTERM, then [`Service::wait_exit`].
    pub async fn stop(&mut self, timeout: Duration) -> anyhow::Result<(ExitStatus, Duration)> {
        self.terminate()?;
        self.wait_exit(timeout).await
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last lines of the log, for failure messages.
    pub fn logs_tail(&self) -> String {
        format!(
            "--- {} ({}) ---\n{}",
            self.name,
            self.log.display(),
            tail(&self.log)
        )
    }
}

/// The last 40 lines of a log file.
pub fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

// --- Prometheus text format ---

/// One sample line: `name{labels} value`.
#[derive(Clone, Debug)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed `/metrics` page.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    pub samples: Vec<Sample>,
    pub text: String,
}

impl Metrics {
    pub fn parse(text: &str) -> Self {
        let samples = text
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .filter_map(parse_sample)
            .collect();
        Self {
            samples,
            text: text.to_owned(),
        }
    }

    /// The samples of `name` whose labels include every pair of `labels`
    /// (in any order).
    pub fn find<'a>(&'a self, name: &'a str, labels: &'a [(&str, &str)]) -> impl Iterator<Item = &'a Sample> {
        self.samples.iter().filter(move |sample| {
            sample.name == name
                && labels
                    .iter()
                    .all(|(key, value)| sample.labels.get(*key).is_some_and(|v| v == value))
        })
    }

    /// The sum of [`Metrics::find`]'s samples (0 when there are none).
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.find(name, labels).map(|s| s.value).sum()
    }

    pub fn has(&self, name: &str, labels: &[(&str, &str)]) -> bool {
        self.find(name, labels).next().is_some()
    }

    /// The distinct `le` bounds of a histogram's buckets.
    pub fn bucket_bounds(&self, histogram: &str, labels: &[(&str, &str)]) -> Vec<String> {
        let name = format!("{histogram}_bucket");
        let bounds: std::collections::BTreeSet<String> = self
            .find(&name, labels)
            .filter_map(|s| s.labels.get("le").cloned())
            .collect();
        bounds.into_iter().collect()
    }
}

fn parse_sample(line: &str) -> Option<Sample> {
    let name_end = line.find(['{', ' ', '\t']).unwrap_or(line.len());
    let name = line[..name_end].to_owned();
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(body) = rest.strip_prefix('{') {
        let mut chars = body.char_indices().peekable();
        loop {
            // Separators, then a key up to '=' or the closing brace.
            while chars.next_if(|(_, c)| *c == ',' || c.is_whitespace()).is_some() {}
            let (start, first) = chars.next()?;
            if first == '}' {
                rest = &body[start + 1..];
                break;
            }
            let mut key = String::from(first);
            for (_, c) in chars.by_ref() {
                if c == '=' {
                    break;
                }
                key.push(c);
            }
            if chars.next()?.1 != '"' {
                return None;
            }
            let mut value = String::new();
            loop {
                match chars.next()?.1 {
                    '"' => break,
                    '\\' => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        other => value.push(other),
                    },
                    c => value.push(c),
                }
            }
            labels.insert(key.trim().to_owned(), value);
        }
    }
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some(Sample { name, labels, value })
}

// --- gateway clients ---

/// REST calls to one gateway.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub http: reqwest::Client,
}

impl Api {
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            base: format!("http://{addr}"),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("http client"),
        }
    }

    async fn json(&self, request: reqwest::RequestBuilder, expect: u16, what: &str) -> anyhow::Result<Value> {
        let response = request.send().await.with_context(|| what.to_owned())?;
        let status = response.status().as_u16();
        let body = response.text().await?;
        ensure!(status == expect, "{what}: {status} {body}");
        Ok(if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&body)?
        })
    }

    /// Registers a fresh user and logs in; returns the access token.
    pub async fn new_user(&self) -> anyhow::Result<String> {
        let username = format!("user_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let credentials = json!({"username": username, "password": PASSWORD});
        let url = format!("{}/api/v1/auth/register", self.base);
        self.json(self.http.post(url).json(&credentials), 201, "register")
            .await?;
        let url = format!("{}/api/v1/auth/login", self.base);
        let pair = self
            .json(self.http.post(url).json(&credentials), 200, "login")
            .await?;
        pair["access_token"]
            .as_str()
            .map(str::to_owned)
            .context("login returned no access_token")
    }

    /// Creates a session with `agent`; returns its id.
    pub async fn session(&self, token: &str, agent: &str) -> anyhow::Result<String> {
        let url = format!("{}/api/v1/sessions", self.base);
        let session = self
            .json(
                self.http
                    .post(url)
                    .bearer_auth(token)
                    .json(&json!({"agent": agent})),
                201,
                "create session",
            )
            .await?;
        session["id"]
            .as_str()
            .map(str::to_owned)
            .context("session has no id")
    }

    /// Posts a message and waits for the stored reply: `{message, reply, run}`.
    pub async fn post_message(&self, token: &str, session_id: &str, content: &str) -> anyhow::Result<Value> {
        let url = format!("{}/api/v1/sessions/{session_id}/messages", self.base);
        self.json(
            self.http
                .post(url)
                .bearer_auth(token)
                .json(&json!({"content": content})),
            200,
            "post message",
        )
        .await
    }

    /// The whole stored history of a session.
    pub async fn history(&self, token: &str, session_id: &str) -> anyhow::Result<Vec<Value>> {
        let url = format!(
            "{}/api/v1/sessions/{session_id}/messages?after_seq=0&limit=1000",
            self.base
        );
        let body = self
            .json(self.http.get(url).bearer_auth(token), 200, "history")
            .await?;
        body["messages"].as_array().cloned().context("no messages array")
    }
}

/// What a WebSocket read produced.
#[derive(Debug)]
pub enum WsEvent {
    Frame(Value),
    /// The server closed the socket (with its close code, if it sent one) or it broke.
    Closed(Option<u16>),
}

/// A WebSocket client speaking the JSON frames of docs/api.md.
pub struct Ws {
    stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Ws {
    /// Connects to `/api/v1/ws?access_token=...` of the gateway at `addr`.
    pub async fn connect(addr: SocketAddr, token: &str) -> anyhow::Result<Self> {
        let url = format!("ws://{addr}/api/v1/ws?access_token={token}");
        let (stream, _) = tokio::time::timeout(Duration::from_secs(5), tokio_tungstenite::connect_async(url))
            .await
            .context("WebSocket connect timed out")??;
        Ok(Self { stream })
    }

    pub async fn send(&mut self, frame: &Value) -> anyhow::Result<()> {
        self.stream.send(Message::text(frame.to_string())).await?;
        Ok(())
    }

    /// The next frame or the close, waiting at most `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> anyhow::Result<WsEvent> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let message = tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .context("timed out waiting for a WebSocket frame")?;
            match message {
                Some(Ok(Message::Text(text))) => {
                    return Ok(WsEvent::Frame(
                        serde_json::from_str(text.as_str()).context("frame is not JSON")?,
                    ));
                }
                Some(Ok(Message::Close(frame))) => {
                    return Ok(WsEvent::Closed(frame.map(|f| u16::from(f.code))));
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return Ok(WsEvent::Closed(None)),
            }
        }
    }

    /// Reads frames until one of type `kind`; fails on a close.
    pub async fn expect(&mut self, kind: &str, timeout: Duration) -> anyhow::Result<Value> {
        loop {
            match self.next(timeout).await? {
                WsEvent::Frame(frame) if frame["type"] == kind => return Ok(frame),
                WsEvent::Frame(_) => {}
                WsEvent::Closed(code) => bail!("socket closed ({code:?}) while waiting for `{kind}`"),
            }
        }
    }

    /// Closes normally and waits for the server's close.
    pub async fn close(mut self) -> anyhow::Result<()> {
        self.stream
            .send(Message::Close(Some(
                tokio_tungstenite::tungstenite::protocol::CloseFrame {
                    code: CloseCode::Normal,
                    reason: "bye".into(),
                },
            )))
            .await?;
        while let Ok(Some(Ok(message))) =
            tokio::time::timeout(Duration::from_secs(5), self.stream.next()).await
        {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
        Ok(())
    }
}
