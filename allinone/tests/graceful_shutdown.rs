//! Rolling a replica of any service loses and duplicates no reply.
//!
//! Two agent-workers, two chat-cores (one Postgres database, one Redis) and
//! two gateways (A in front of core A, B in front of core B) run as separate
//! processes. A WebSocket client keeps one session while, in three rounds,
//! one replica of each kind gets SIGTERM in the middle of a streaming reply:
//!
//! 1. gateway A, which the client is connected to: the client gets close
//!    1012, reconnects to gateway B and resumes with `after_seq`;
//! 2. chat-core A, on which the run executes: it releases the run, core B
//!    takes it over as a new attempt;
//! 3. the agent-worker running the run: it finishes that run, then exits.
//!
//! Every round checks that the reply arrives exactly once and complete, is
//! stored exactly once, and that the stopped process exited cleanly within
//! its drain deadline. Nothing is restarted: each round runs on what the
//! earlier ones left.
//!
//! Needs `TEST_DATABASE_URL` and `TEST_REDIS_URL`; skipped without them.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use chat_proto::chat::v1 as pb;
use common::{Api, Kind, SECRET, Service, StackBase, Ws, WsEvent, args};
use serde_json::{Value, json};

/// Drain deadline of every process (`--shutdown-timeout-secs`).
const DRAIN: Duration = Duration::from_secs(10);
/// Slack on top of [`DRAIN`] for the process to be reaped.
const EXIT_MARGIN: Duration = Duration::from_secs(2);
/// Longest one round may take.
const ROUND_TIMEOUT: Duration = Duration::from_secs(45);
/// Words per message: at 60 ms a word a reply streams for about 2.4 s.
const WORDS: usize = 40;
/// Deltas the client sees before the SIGTERM.
const DELTAS_BEFORE_STOP: usize = 3;

const AGENTS: &str = r#"
[[agents]]
name = "echo"
description = "echo"
kind = "echo"

[[agents]]
name = "slow"
description = "echo, one word every 60 ms"
kind = "echo"
delay_ms = 60
"#;

/// The processes of the test; a stopped one moves to `stopped`.
struct Stack {
    dir: tempfile::TempDir,
    _db: chat_testkit::TestDatabase,
    workers: Vec<Option<Service>>,
    cores: Vec<Option<Service>>,
    gateways: Vec<Option<Service>>,
    stopped: Vec<Service>,
}

impl Stack {
    async fn start(redis_url: &str) -> anyhow::Result<Self> {
        let StackBase { dir, db, agents } = StackBase::postgres(AGENTS).await?;
        let drain = DRAIN.as_secs().to_string();
        let worker_args = StackBase::worker_args_for(&agents, DRAIN);
        let names = ["worker-1", "worker-2"];
        let [w1, w2]: [Service; 2] = common::start_all(Kind::AgentWorker, &names, &worker_args, dir.path())
            .await?
            .try_into()
            .map_err(|_| anyhow::anyhow!("two workers"))?;
        let worker_urls = format!("{},{}", w1.url(), w2.url());
        let core_args = args(&[
            "--database-url",
            &db.url,
            "--redis-url",
            redis_url,
            "--jwt-secret",
            SECRET,
            // The client calls chat-core directly too, as the user.
            "--accept-user-tokens",
            "--agent-worker-url",
            &worker_urls,
            "--shutdown-timeout-secs",
            &drain,
            // A released run is taken over at the next orphan scan (every half lease).
            "--run-lease-ms",
            "3000",
            "--health-interval-ms",
            "200",
        ]);
        let [core_a, core_b]: [Service; 2] =
            common::start_all(Kind::ChatCore, &["core-a", "core-b"], &core_args, dir.path())
                .await?
                .try_into()
                .map_err(|_| anyhow::anyhow!("two cores"))?;
        let gateway_args = |core: &Service| {
            args(&[
                "--chat-core-url",
                &core.url(),
                "--jwt-secret",
                SECRET,
                "--shutdown-timeout-secs",
                &drain,
            ])
        };
        let (args_a, args_b) = (gateway_args(&core_a), gateway_args(&core_b));
        let (gateway_a, gateway_b) = tokio::join!(
            Service::start(Kind::Gateway, "gateway-a", &args_a, dir.path()),
            Service::start(Kind::Gateway, "gateway-b", &args_b, dir.path()),
        );
        Ok(Self {
            dir,
            _db: db,
            workers: vec![Some(w1), Some(w2)],
            cores: vec![Some(core_a), Some(core_b)],
            gateways: vec![Some(gateway_a?), Some(gateway_b?)],
            stopped: Vec::new(),
        })
    }

    /// The gateways still running, in order.
    fn gateway_addrs(&self) -> Vec<SocketAddr> {
        self.gateways.iter().flatten().map(|g| g.addr).collect()
    }

    fn api(&self) -> anyhow::Result<Api> {
        let addr = self
            .gateway_addrs()
            .into_iter()
            .next()
            .context("no gateway left")?;
        Ok(Api::new(addr))
    }

    /// The end of every process's log.
    fn logs(&self) -> String {
        let running = [&self.workers, &self.cores, &self.gateways];
        running
            .iter()
            .flat_map(|kind| kind.iter().flatten())
            .chain(&self.stopped)
            .map(Service::logs_tail)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// A WebSocket client as a browser would run it: it keeps the frames it saw,
/// deduplicated by `seq` and `(run_id, attempt, index)`, and reconnects and
/// resumes with `after_seq` whenever its socket closes.
struct Client {
    token: String,
    session_id: String,
    ws: Option<Ws>,
    connected_to: Option<SocketAddr>,
    /// Highest `seq` of the messages seen.
    last_seq: i64,
    /// Every message seen, by `seq`.
    messages: BTreeMap<i64, Value>,
    /// Deltas by run, attempt and index.
    deltas: BTreeMap<(String, u64), BTreeMap<u64, String>>,
    /// Every `run` frame, in order.
    runs: Vec<Value>,
    acks: Vec<Value>,
    /// The close codes received, with the gateway that sent them.
    closes: Vec<(SocketAddr, Option<u16>)>,
    /// A short account of what happened, for failure messages.
    trace: Vec<String>,
}

impl Client {
    fn new(token: String, session_id: String) -> Self {
        Self {
            token,
            session_id,
            ws: None,
            connected_to: None,
            last_seq: 0,
            messages: BTreeMap::new(),
            deltas: BTreeMap::new(),
            runs: Vec::new(),
            acks: Vec::new(),
            closes: Vec::new(),
            trace: Vec::new(),
        }
    }

    fn note(&mut self, line: String) {
        self.trace.push(line);
    }

    fn handle(&mut self, frame: Value) {
        match frame["type"].as_str().unwrap_or_default() {
            "message" => {
                let seq = frame["message"]["seq"].as_i64().unwrap_or_default();
                self.note(format!(
                    "message seq={seq} role={} run={}",
                    frame["message"]["role"], frame["message"]["run_id"]
                ));
                self.last_seq = self.last_seq.max(seq);
                self.messages.insert(seq, frame["message"].clone());
            }
            "delta" => {
                let run_id = frame["run_id"].as_str().unwrap_or_default().to_owned();
                let attempt = frame["attempt"].as_u64().unwrap_or(1);
                let index = frame["index"].as_u64().unwrap_or_default();
                let text = frame["text"].as_str().unwrap_or_default().to_owned();
                if index == 0 {
                    self.note(format!("delta 0 run={run_id} attempt={attempt}"));
                }
                self.deltas
                    .entry((run_id, attempt))
                    .or_default()
                    .insert(index, text);
            }
            "run" => {
                self.note(format!(
                    "run {} status={} attempt={}",
                    frame["run_id"], frame["status"], frame["attempt"]
                ));
                self.runs.push(frame);
            }
            "ack" => {
                self.note(format!("ack seq={} run={}", frame["seq"], frame["run_id"]));
                self.acks.push(frame);
            }
            "subscribed" => self.note(format!("subscribed last_seq={}", frame["last_seq"])),
            _ => self.note(format!("frame {frame}")),
        }
    }

    /// Connects to the first gateway of `gateways` that accepts, retrying
    /// for a few seconds, and subscribes after the last seen `seq`.
    async fn connect(&mut self, gateways: &[SocketAddr]) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let (ws, addr) = 'connected: loop {
            for &addr in gateways {
                match Ws::connect(addr, &self.token).await {
                    Ok(ws) => break 'connected (ws, addr),
                    Err(error) => self.note(format!("connect {addr} failed: {error:#}")),
                }
            }
            ensure!(
                tokio::time::Instant::now() < deadline,
                "no gateway of {gateways:?} accepts WebSockets"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        self.note(format!(
            "connected to {addr}; subscribe after_seq={}",
            self.last_seq
        ));
        self.ws = Some(ws);
        self.connected_to = Some(addr);
        let subscribe = json!({
            "type": "subscribe",
            "session_id": self.session_id,
            "after_seq": self.last_seq,
        });
        self.send(&subscribe).await
    }

    async fn send(&mut self, frame: &Value) -> anyhow::Result<()> {
        self.ws.as_mut().context("not connected")?.send(frame).await
    }

    /// Reads frames (reconnecting to `gateways` after a close) until `done`
    /// holds, failing after `timeout`.
    async fn pump_until(
        &mut self,
        gateways: &[SocketAddr],
        timeout: Duration,
        what: &str,
        mut done: impl FnMut(&Self) -> bool,
    ) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        while !done(self) {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            ensure!(!left.is_zero(), "timed out waiting for {what}");
            let Some(ws) = self.ws.as_mut() else {
                self.connect(gateways).await?;
                continue;
            };
            // Short reads, so `done` is checked again even when nothing arrives.
            match ws.next(left.min(Duration::from_millis(200))).await {
                Ok(WsEvent::Frame(frame)) => self.handle(frame),
                Ok(WsEvent::Closed(code)) => {
                    let addr = self.connected_to.take().context("closed while not connected")?;
                    self.note(format!("closed by {addr} with {code:?}"));
                    self.closes.push((addr, code));
                    self.ws = None;
                }
                Err(_) => {}
            }
        }
        Ok(())
    }

    /// The `ack` of `client_msg_id`, if it came.
    fn ack(&self, client_msg_id: &str) -> Option<&Value> {
        self.acks.iter().find(|a| a["client_msg_id"] == client_msg_id)
    }

    fn delta_count(&self, run_id: &str) -> usize {
        self.deltas
            .iter()
            .filter(|((run, _), _)| run == run_id)
            .map(|(_, d)| d.len())
            .sum()
    }

    /// The distinct assistant messages (by `seq`) whose content is `text`.
    fn replies(&self, text: &str) -> Vec<&Value> {
        self.messages
            .values()
            .filter(|m| m["role"] == "assistant" && m["content"] == text)
            .collect()
    }

    fn has_reply_of(&self, run_id: &str) -> bool {
        self.messages
            .values()
            .any(|m| m["role"] == "assistant" && m["run_id"] == run_id)
    }

    fn statuses(&self, run_id: &str) -> Vec<(String, u64)> {
        self.runs
            .iter()
            .filter(|r| r["run_id"] == run_id)
            .map(|r| {
                (
                    r["status"].as_str().unwrap_or_default().to_owned(),
                    r["attempt"].as_u64().unwrap_or(1),
                )
            })
            .collect()
    }

    fn completed(&self, run_id: &str) -> bool {
        self.statuses(run_id).iter().any(|(s, _)| s == "completed")
    }

    /// The deltas of a run's last attempt seen, by index.
    fn last_attempt(&self, run_id: &str) -> Option<(u64, &BTreeMap<u64, String>)> {
        self.deltas
            .iter()
            .filter(|((run, _), _)| run == run_id)
            .max_by_key(|((_, attempt), _)| *attempt)
            .map(|((_, attempt), deltas)| (*attempt, deltas))
    }
}

/// Which replica a round stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    Gateway,
    Core,
    Worker,
}

/// A message of [`WORDS`] words, distinct per round.
fn message(tag: &str) -> String {
    (0..WORDS)
        .map(|i| format!("{tag}-{i}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Sends `text` through chat-core A's gRPC API directly (as the user): the
/// run then executes on core A. Returns the run id and the task reading the
/// rest of the call's stream.
async fn send_through_core(
    core: &Service,
    token: &str,
    session_id: &str,
    text: &str,
) -> anyhow::Result<(String, tokio::task::JoinHandle<String>)> {
    let channel = tonic::transport::Endpoint::from_shared(core.url())?
        .connect()
        .await?;
    let mut client = pb::chat_service_client::ChatServiceClient::new(channel);
    let mut request = tonic::Request::new(pb::SendMessageRequest {
        session_id: session_id.to_owned(),
        client_msg_id: uuid::Uuid::new_v4().to_string(),
        content: text.to_owned(),
        role: String::new(),
        metadata_json: String::new(),
    });
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    let mut stream = client.send_message(request).await?.into_inner();
    let first = stream
        .message()
        .await?
        .context("SendMessage ended before its ack")?;
    let Some(pb::send_message_event::Event::Ack(ack)) = first.event else {
        bail!("SendMessage began with {first:?}, not an ack");
    };
    let rest = tokio::spawn(async move {
        let mut events = 0;
        loop {
            match stream.message().await {
                Ok(Some(_)) => events += 1,
                Ok(None) => return format!("SendMessage stream ended after {events} events"),
                Err(status) => return format!("SendMessage stream failed after {events} events: {status}"),
            }
        }
    });
    Ok((ack.run_id, rest))
}

/// The worker that reports a run in flight.
async fn busy_worker(stack: &Stack) -> anyhow::Result<usize> {
    let mut busy = Vec::new();
    for (i, worker) in stack.workers.iter().enumerate() {
        if let Some(worker) = worker
            && worker.metrics().await?.sum("chat_runs_in_flight", &[]) >= 1.0
        {
            busy.push(i);
        }
    }
    match busy[..] {
        [one] => Ok(one),
        _ => bail!("expected exactly one worker with a run in flight, got {busy:?}"),
    }
}

async fn round(stack: &mut Stack, client: &mut Client, target: Target, tag: &str) -> anyhow::Result<()> {
    client.note(format!("=== round {tag}: stop a {target:?}"));
    let text = message(tag);
    let gateways = stack.gateway_addrs();
    if client.ws.is_none() {
        client.connect(&gateways).await?;
    }

    // Send: through the WebSocket, except that the chat-core round sends
    // through core A itself, since the client's gateway (B) leads to core B.
    let mut grpc_stream = None;
    let run_id = if target == Target::Core {
        let core_a = stack.cores[0].as_ref().context("core A is gone")?;
        let (run_id, rest) = send_through_core(core_a, &client.token, &client.session_id, &text).await?;
        grpc_stream = Some(rest);
        run_id
    } else {
        let client_msg_id = uuid::Uuid::new_v4().to_string();
        let send = json!({
            "type": "send",
            "session_id": client.session_id,
            "client_msg_id": client_msg_id,
            "content": text,
        });
        client.send(&send).await?;
        client
            .pump_until(&gateways, ROUND_TIMEOUT, "the ack", |c| {
                c.ack(&client_msg_id).is_some()
            })
            .await?;
        let ack = client.ack(&client_msg_id).context("no ack")?;
        ack["run_id"].as_str().context("ack without run_id")?.to_owned()
    };
    client.note(format!("run {run_id}"));
    client
        .pump_until(&gateways, ROUND_TIMEOUT, "the first deltas", |c| {
            c.delta_count(&run_id) >= DELTAS_BEFORE_STOP
        })
        .await?;

    // SIGTERM the replica that holds the client or the run.
    let mut victim = match target {
        Target::Gateway => {
            let gateway_a = stack.gateways[0].as_ref().context("gateway A is gone")?;
            ensure!(
                client.connected_to == Some(gateway_a.addr),
                "the client is not on gateway A"
            );
            stack.gateways[0].take()
        }
        Target::Core => {
            let [Some(core_a), Some(core_b)] = &stack.cores[..] else {
                bail!("a chat-core is gone");
            };
            let on_a = core_a.metrics().await?.sum("chat_runs_in_flight", &[]);
            let on_b = core_b.metrics().await?.sum("chat_runs_in_flight", &[]);
            ensure!(
                (on_a, on_b) == (1.0, 0.0),
                "expected the run on core A: runs in flight A={on_a} B={on_b}"
            );
            stack.cores[0].take()
        }
        Target::Worker => {
            let busy = busy_worker(stack).await?;
            client.note(format!("the run is on worker-{}", busy + 1));
            stack.workers[busy].take()
        }
    }
    .context("no victim")?;
    client.note(format!("SIGTERM {}", victim.name));
    victim.terminate()?;
    let exit = tokio::spawn(async move {
        let exited = victim.wait_exit(DRAIN + EXIT_MARGIN).await;
        (victim, exited)
    });
    let gateways = stack.gateway_addrs();

    // The reply arrives; keep reading until the stopped process is gone, so
    // that any duplicate would show too.
    let read = client
        .pump_until(&gateways, ROUND_TIMEOUT, "the reply and the exit", |c| {
            c.has_reply_of(&run_id) && c.completed(&run_id) && exit.is_finished()
        })
        .await;
    let (victim, exited) = exit.await?;
    let name = victim.name.clone();
    stack.stopped.push(victim);
    read?;
    let (status, elapsed) = exited?;
    client.note(format!("{name} exited with {status} after {elapsed:?}"));
    if let Some(rest) = grpc_stream {
        let how = rest.await?;
        client.note(how);
    }
    ensure!(status.success(), "{name} exited with {status}");
    ensure!(
        elapsed <= DRAIN + EXIT_MARGIN,
        "{name} took {elapsed:?} to exit (deadline {DRAIN:?})"
    );

    // Exactly one complete reply, seen once and stored once.
    let replies = client.replies(&text);
    ensure!(
        replies.len() == 1,
        "expected one reply, the client saw {}: {replies:?}",
        replies.len()
    );
    ensure!(
        replies[0]["run_id"] == run_id.as_str(),
        "reply of another run: {}",
        replies[0]
    );
    let (attempt, deltas) = client.last_attempt(&run_id).context("no deltas seen")?;
    let indexes: Vec<u64> = deltas.keys().copied().collect();
    ensure!(
        indexes == (0..indexes.len() as u64).collect::<Vec<_>>(),
        "deltas of attempt {attempt} have gaps: {indexes:?}"
    );
    let streamed: String = deltas.values().map(String::as_str).collect();
    ensure!(
        streamed == text,
        "the streamed reply (attempt {attempt}) is not the text: {streamed:?}"
    );
    let history = stack.api()?.history(&client.token, &client.session_id).await?;
    let stored: Vec<&Value> = history
        .iter()
        .filter(|m| m["role"] == "assistant" && m["content"] == text.as_str())
        .collect();
    ensure!(
        stored.len() == 1,
        "history holds {} replies: {stored:?}",
        stored.len()
    );
    let asked = history
        .iter()
        .position(|m| m["role"] == "user" && m["content"] == text.as_str())
        .context("the message is not in the history")?;
    ensure!(
        history
            .get(asked + 1)
            .is_some_and(|m| m["content"] == text.as_str()),
        "the reply does not follow its message in the history"
    );

    // What each kind of stop must look like to the client.
    let statuses = client.statuses(&run_id);
    let retried = statuses.iter().any(|(s, _)| s == "retrying");
    match target {
        Target::Gateway => {
            ensure!(
                client
                    .closes
                    .iter()
                    .any(|(addr, code)| *code == Some(1012)
                        && Some(*addr) == stack.stopped.last().map(|s| s.addr)),
                "gateway A did not close the socket with 1012: {:?}",
                client.closes
            );
            ensure!(
                client.connected_to == gateways.first().copied(),
                "the client is not on gateway B"
            );
            ensure!(!retried, "stopping a gateway retried the run: {statuses:?}");
        }
        Target::Core => {
            ensure!(
                retried && attempt >= 2,
                "core B did not retry the released run (attempt {attempt}): {statuses:?}"
            );
        }
        Target::Worker => {
            ensure!(
                !retried && attempt == 1,
                "the stopping worker did not finish its run (attempt {attempt}): {statuses:?}"
            );
        }
    }
    Ok(())
}

/// After the three rounds, the survivors still answer.
async fn last_turn(stack: &Stack, client: &mut Client) -> anyhow::Result<()> {
    let text = "still here after the rolling restart";
    let gateways = stack.gateway_addrs();
    if client.ws.is_none() {
        client.connect(&gateways).await?;
    }
    let send = json!({
        "type": "send",
        "session_id": client.session_id,
        "client_msg_id": uuid::Uuid::new_v4().to_string(),
        "content": text,
    });
    client.send(&send).await?;
    client
        .pump_until(&gateways, ROUND_TIMEOUT, "the last reply", |c| {
            !c.replies(text).is_empty()
        })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_any_replica_loses_and_duplicates_no_reply() {
    // Two replicas of each service share Postgres and Redis.
    let (Some(_), Some(redis_url)) = (chat_testkit::needs::postgres(), chat_testkit::needs::redis()) else {
        return;
    };
    let mut stack = Stack::start(&redis_url).await.unwrap();
    let api = stack.api().unwrap();
    let token = api.new_user().await.unwrap();
    let session_id = api.session(&token, "slow").await.unwrap();
    let mut client = Client::new(token, session_id);

    let mut result = Ok(());
    for (target, tag) in [
        (Target::Gateway, "gateway"),
        (Target::Core, "core"),
        (Target::Worker, "worker"),
    ] {
        result = round(&mut stack, &mut client, target, tag)
            .await
            .with_context(|| format!("round {tag}"));
        if result.is_err() {
            break;
        }
    }
    if result.is_ok() {
        result = last_turn(&stack, &mut client).await.context("last turn");
    }
    // Shown with --nocapture.
    println!("{}", client.trace.join("\n"));
    if let Err(error) = result {
        let logs = stack.logs();
        // Kept for reading the whole logs.
        let dir = stack.dir.keep();
        panic!(
            "{error:#}\n\nclient:\n{}\n\nlogs in {}:\n{logs}",
            client.trace.join("\n"),
            dir.display(),
        );
    }
}
