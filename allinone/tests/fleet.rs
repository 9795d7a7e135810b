//! A fleet of real agent-worker processes behind one chat-core: runs are
//! spread across workers; a worker killed with SIGKILL mid-stream has its
//! run retried on another and the reply arrives once, complete; with every
//! worker dead the run fails and the client is told; restarted workers are
//! used again without restarting chat-core.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use chat_common::token::{Role, TokenKeys};
use chat_proto::chat::v1::{
    self as pb, chat_service_client::ChatServiceClient, session_event::Event,
    user_service_client::UserServiceClient,
};

use futures::StreamExt;
use tonic::transport::Channel;

use chat_testkit::SECRET;
/// The agents of worker `index`: its replies start with `w<index>: `, so
/// which worker ran a run is read from what clients see.
fn agents(index: usize) -> String {
    format!(
        "[[agents]]\nname = \"echo\"\nkind = \"echo\"\nprefix = \"w{index}: \"\n\n\
         [[agents]]\nname = \"slow\"\nkind = \"echo\"\ndelay_ms = 100\nprefix = \"w{index}: \"\n"
    )
}

/// The worker whose prefix starts `text` (a reply, or a run's first delta).
fn worker_of(text: &str) -> Option<usize> {
    text.strip_prefix('w')?.split_once(':')?.0.parse().ok()
}

/// The worker that wrote the stored reply among a run's events.
fn replied_by(events: &[Event]) -> Option<usize> {
    events.iter().find_map(|e| match e {
        Event::Message(m) if m.role == "assistant" => worker_of(&m.content),
        _ => None,
    })
}

struct Worker {
    port: u16,
    child: Option<tokio::process::Child>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts worker `index` on `port` and returns once it accepts connections.
async fn start_worker(index: usize, port: u16, dir: &std::path::Path) -> tokio::process::Child {
    let config = dir.join(format!("worker-{index}.toml"));
    std::fs::write(&config, agents(index)).unwrap();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_chat"))
        .arg("agent-worker")
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .arg("--agents-config")
        .arg(config)
        .args(["--jwt-secret", SECRET])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    tokio::time::timeout(Duration::from_secs(20), async {
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the worker accepts connections");
    child
}

struct Fleet {
    workers: Vec<Worker>,
    dir: tempfile::TempDir,
    core: SocketAddr,
    _db: chat_testkit::TestDatabase,
}

impl Fleet {
    async fn start(size: usize) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut workers = Vec::new();
        for index in 0..size {
            let port = free_port();
            let child = start_worker(index, port, dir.path()).await;
            workers.push(Worker {
                port,
                child: Some(child),
            });
        }
        let urls: Vec<_> = workers
            .iter()
            .map(|w| format!("http://127.0.0.1:{}", w.port))
            .collect();
        let db = chat_testkit::TestDatabase::new().await.unwrap();
        let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
        let core = chat_testkit::core(&db.url, &urls, |s| s.dispatch_timeout_ms = 1500)
            .await
            .unwrap();
        let addr = core.addr;
        Self {
            workers,
            dir,
            core: addr,
            _db: db,
        }
    }

    async fn kill(&mut self, index: usize) {
        if let Some(mut child) = self.workers[index].child.take() {
            child.start_kill().unwrap();
            child.wait().await.unwrap();
        }
    }

    async fn restart(&mut self, index: usize) {
        let child = start_worker(index, self.workers[index].port, self.dir.path()).await;
        self.workers[index].child = Some(child);
    }

    async fn client(&self) -> ChatServiceClient<Channel> {
        client(self.core).await
    }

    async fn send(&self, token: &str, session_id: &str, content: &str) -> (String, Vec<Event>) {
        send(self.core, token, session_id, content).await
    }

    async fn user(&self) -> String {
        let keys = TokenKeys::new(SECRET.as_bytes());
        let service = keys
            .sign("tests", Role::Service, Duration::from_secs(600))
            .unwrap();
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", self.core))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let username = format!("fleet_{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
        let request = authed(
            pb::RegisterRequest {
                username,
                password: "correct horse".into(),
            },
            &service,
        );
        let user_id = UserServiceClient::new(channel)
            .register(request)
            .await
            .unwrap()
            .into_inner()
            .user_id;
        keys.sign(&user_id, Role::User, Duration::from_secs(600)).unwrap()
    }

    async fn session(&self, token: &str, agent: &str) -> String {
        let request = authed(
            pb::CreateSessionRequest {
                agent: agent.into(),
                ..Default::default()
            },
            token,
        );
        self.client()
            .await
            .create_session(request)
            .await
            .unwrap()
            .into_inner()
            .id
    }

    async fn history(&self, token: &str, session_id: &str) -> Vec<pb::Message> {
        let request = pb::ListMessagesRequest {
            session_id: session_id.into(),
            after_seq: Some(0),
            limit: 100,
            ..Default::default()
        };
        self.client()
            .await
            .list_messages(authed(request, token))
            .await
            .unwrap()
            .into_inner()
            .messages
    }
}

/// Sends and returns every event of the run, ack excluded, until it ends.
async fn send(core: SocketAddr, token: &str, session_id: &str, content: &str) -> (String, Vec<Event>) {
    let request = pb::SendMessageRequest {
        session_id: session_id.into(),
        client_msg_id: uuid::Uuid::new_v4().to_string(),
        content: content.into(),
        role: String::new(),
        metadata_json: String::new(),
    };
    let mut stream = client(core)
        .await
        .send_message(authed(request, token))
        .await
        .unwrap()
        .into_inner();
    let mut run_id = String::new();
    let mut events = Vec::new();
    while let Some(item) = tokio::time::timeout(Duration::from_secs(30), stream.next())
        .await
        .unwrap()
    {
        match item.unwrap().event {
            Some(pb::send_message_event::Event::Ack(ack)) => run_id = ack.run_id,
            Some(pb::send_message_event::Event::SessionEvent(pb::SessionEvent { event: Some(e) })) => {
                events.push(e)
            }
            _ => {}
        }
    }
    (run_id, events)
}

async fn client(core: SocketAddr) -> ChatServiceClient<Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{core}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    ChatServiceClient::new(channel)
}

fn authed<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

fn final_status(events: &[Event]) -> Option<pb::RunUpdate> {
    events.iter().rev().find_map(|e| {
        if let Event::Run(r) = e {
            Some(r.clone())
        } else {
            None
        }
    })
}

/// The worker streaming the first run the watcher sees, from its first delta.
async fn first_delta_worker(watcher: &mut tonic::Streaming<pb::SessionEvent>) -> usize {
    loop {
        let event = tokio::time::timeout(Duration::from_secs(10), watcher.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Some(Event::Delta(d)) = event.event {
            return worker_of(&d.text).expect("the first delta names its worker");
        }
    }
}

#[tokio::test]
async fn runs_spread_across_workers_survive_a_killed_worker_and_resume_after_restarts() {
    let mut fleet = Fleet::start(3).await;
    let token = fleet.user().await;

    // Load spreads across the fleet.
    let sessions: Vec<_> = futures::future::join_all((0..10).map(|_| fleet.session(&token, "echo"))).await;
    let sends = sessions.iter().flat_map(|s| (0..3).map(move |i| (s.clone(), i)));
    let results = futures::future::join_all(sends.map(|(s, i)| {
        let fleet = &fleet;
        let token = token.clone();
        async move { fleet.send(&token, &s, &format!("spread {i}")).await }
    }))
    .await;
    let mut per_worker = [0usize; 3];
    for (_, events) in &results {
        assert_eq!(final_status(events).unwrap().status(), pb::RunStatus::Completed);
        per_worker[replied_by(events).expect("a reply names its worker")] += 1;
    }
    assert!(
        per_worker.iter().all(|&n| n > 0),
        "every worker served runs: {per_worker:?}"
    );

    // A worker killed mid-stream: the run is retried elsewhere, one complete reply.
    let session = fleet.session(&token, "slow").await;
    let content = "this reply must survive its worker being killed";
    let watcher = {
        let request = authed(
            pb::SubscribeRequest {
                session_id: session.clone(),
                after_seq: 0,
            },
            &token,
        );
        fleet
            .client()
            .await
            .subscribe(request)
            .await
            .unwrap()
            .into_inner()
    };
    let send = {
        let (core, token, session) = (fleet.core, token.clone(), session.clone());
        tokio::spawn(async move { send(core, &token, &session, content).await })
    };
    let mut watcher = watcher;
    let victim = first_delta_worker(&mut watcher).await;
    fleet.kill(victim).await;
    let (_, events) = send.await.unwrap();
    let done = final_status(&events).unwrap();
    assert_eq!(done.status(), pb::RunStatus::Completed, "{events:?}");
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Run(r) if r.status() == pb::RunStatus::Retrying))
    );
    let survivor = replied_by(&events).expect("a reply names its worker");
    assert_ne!(survivor, victim, "the retry ran on another worker");
    let messages = fleet.history(&token, &session).await;
    assert_eq!(messages.len(), 2, "one reply, the dead attempt stored nothing");
    assert_eq!(messages[1].content, format!("w{survivor}: {content}"));

    // Every worker dead: the run fails cleanly and the client is told.
    for index in 0..3 {
        fleet.kill(index).await;
    }
    let (_, events) = fleet.send(&token, &session, "anyone there?").await;
    let failed = final_status(&events).unwrap();
    assert_eq!(failed.status(), pb::RunStatus::Failed, "{events:?}");
    assert!(!failed.error.is_empty());

    // Workers back: the same chat-core serves again.
    for index in 0..3 {
        fleet.restart(index).await;
    }
    let (_, events) = fleet.send(&token, &session, "back again").await;
    assert_eq!(
        final_status(&events).unwrap().status(),
        pb::RunStatus::Completed,
        "{events:?}"
    );
}

#[tokio::test]
async fn a_worker_asked_to_stop_finishes_its_runs_and_takes_no_new_ones() {
    let mut fleet = Fleet::start(2).await;
    let token = fleet.user().await;
    let session = fleet.session(&token, "slow").await;
    let mut watcher = {
        let request = authed(
            pb::SubscribeRequest {
                session_id: session.clone(),
                after_seq: 0,
            },
            &token,
        );
        fleet
            .client()
            .await
            .subscribe(request)
            .await
            .unwrap()
            .into_inner()
    };
    let content = "a reply that is finished even though its worker is stopping";
    let sending = {
        let (core, token, session) = (fleet.core, token.clone(), session.clone());
        tokio::spawn(async move { send(core, &token, &session, content).await })
    };
    let stopping = first_delta_worker(&mut watcher).await;
    let pid = fleet.workers[stopping].child.as_ref().unwrap().id().unwrap();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());

    let (_, events) = sending.await.unwrap();
    let done = final_status(&events).unwrap();
    assert_eq!(
        (done.status(), done.attempt),
        (pb::RunStatus::Completed, 1),
        "finished where it started: {events:?}"
    );
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::Run(r) if r.status() == pb::RunStatus::Retrying))
    );
    let exited = tokio::time::timeout(
        Duration::from_secs(10),
        fleet.workers[stopping].child.as_mut().unwrap().wait(),
    )
    .await;
    assert!(
        exited.unwrap().unwrap().success(),
        "the worker exits cleanly once drained"
    );

    let echo = fleet.session(&token, "echo").await;
    for i in 0..6 {
        let (_, events) = fleet.send(&token, &echo, &format!("after the stop {i}")).await;
        assert_eq!(final_status(&events).unwrap().status(), pb::RunStatus::Completed);
        assert_ne!(
            replied_by(&events),
            Some(stopping),
            "a stopped worker takes no new runs"
        );
    }
}
