//! The chaos suite: clients chat while a seeded schedule breaks the stack,
//! then a checker proves that nothing was lost, duplicated or reordered.
//!
//! Three agent-workers, two chat-cores (one Postgres database behind a
//! [`CuttableProxy`], one private `redis-server`) and two gateways (A in
//! front of core A, B in front of core B) run as separate processes of the
//! `chat` binary. A few WebSocket clients, one session each, chat with a
//! slow echo agent (so runs are in flight when faults hit), drop their
//! sockets at random and resume on either gateway with
//! `subscribe {after_seq}`, re-sending every unacknowledged message with
//! the same `client_msg_id`.
//!
//! Meanwhile the schedule, one fault at a time, SIGKILLs and restarts each
//! kind of process, SIGTERMs and restarts each kind (the drain must end in a
//! clean exit within its deadline), restarts Redis and cuts Postgres off for
//! 10 s; after each fault it waits until every process is ready again. It
//! first covers every kind of fault in a seeded order, then picks at random
//! until the time is up.
//!
//! Then the clients stop sending and settle, and the checker compares what
//! each client was acknowledged and saw with what was stored (messages over
//! REST, runs from the database): see [`check`]. Every process's resident
//! memory (`VmRSS`) is sampled all along and must stay under
//! [`RSS_BOUND_MIB`].
//!
//! `CHAOS_SECONDS` sets the chaos time (default [`SHORT_SECONDS`]),
//! `CHAOS_SESSIONS` the number of clients (default [`SESSIONS`]) and
//! `CHAOS_SEED` the seed of the schedule and the clients' choices (random
//! by default; always printed). See docs/delivery.md, "Chaos suite".
//!
//! Needs `TEST_DATABASE_URL`, `TEST_REDIS_URL` (through
//! `chat_testkit::needs`) and `redis-server` on `PATH`.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use chat_testkit::{CuttableProxy, PrivateRedis, TestDatabase, socket_addr_of, with_host};
use common::{Api, Kind, SECRET, Service, StackBase, Ws, WsEvent, args};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sea_orm::{ConnectionTrait, Database, DbBackend, Statement};
use serde_json::{Value, json};
use tokio::time::Instant;

/// Seconds of chaos by default (the CI form).
const SHORT_SECONDS: u64 = 75;
/// Clients (one session each) by default.
const SESSIONS: usize = 6;
/// Drain deadline of every process (`--shutdown-timeout-secs`).
const DRAIN: Duration = Duration::from_secs(5);
/// Slack on top of [`DRAIN`] for a SIGTERMed process to be reaped.
const EXIT_MARGIN: Duration = Duration::from_secs(3);
/// How long Postgres is cut off.
const POSTGRES_OUTAGE: Duration = Duration::from_secs(10);
/// Longest a process may take to be ready again after a fault.
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest the clients may take, once they stop sending, to have every
/// message acknowledged and every run's outcome seen.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(45);
/// The resident memory no process may exceed, in MiB.
const RSS_BOUND_MIB: u64 = 256;
/// Interval between two RSS samples.
const RSS_EVERY: Duration = Duration::from_millis(250);
/// Messages a client keeps answered-but-unfinished at most (the second one
/// queues behind the first's run).
const MAX_IN_FLIGHT: usize = 2;

const AGENTS: &str = r#"
[[agents]]
name = "chaos"
description = "echo, one word every 40 ms"
kind = "echo"
delay_ms = 40
"#;

const TERMINAL: [&str; 3] = ["completed", "failed", "cancelled"];

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// Milliseconds since the start of the test, for the logs.
fn at(start: Instant) -> String {
    format!("{:>7.2}s", start.elapsed().as_secs_f64())
}

// --- the stack ---

/// One process of the stack with the arguments it is restarted with.
struct Proc {
    service: Service,
    args: Vec<String>,
}

struct Stack {
    dir: tempfile::TempDir,
    db: TestDatabase,
    proxy: CuttableProxy,
    redis: PrivateRedis,
    workers: Vec<Proc>,
    cores: Vec<Proc>,
    gateways: Vec<Proc>,
    /// Name → pid of every running process, for the RSS sampler.
    pids: Arc<Mutex<BTreeMap<String, u32>>>,
}

impl Stack {
    async fn start(redis: PrivateRedis) -> anyhow::Result<Self> {
        let StackBase { dir, db, agents } = StackBase::postgres(AGENTS).await?;
        let proxy = CuttableProxy::start(socket_addr_of(&db.url)?).await?;
        let proxied = with_host(&db.url, proxy.addr());
        let drain = DRAIN.as_secs().to_string();
        let worker_args = StackBase::worker_args_for(&agents, DRAIN);
        let names = ["worker-1", "worker-2", "worker-3"];
        let workers = common::start_all(Kind::AgentWorker, &names, &worker_args, dir.path()).await?;
        let worker_urls = workers.iter().map(Service::url).collect::<Vec<_>>().join(",");
        let core_args = args(&[
            "--database-url",
            &proxied,
            "--redis-url",
            &redis.url(),
            "--jwt-secret",
            SECRET,
            "--agent-worker-url",
            &worker_urls,
            "--default-agent",
            "chaos",
            "--shutdown-timeout-secs",
            &drain,
            "--run-lease-ms",
            "3000",
            "--health-interval-ms",
            "200",
        ]);
        let cores = common::start_all(Kind::ChatCore, &["core-a", "core-b"], &core_args, dir.path()).await?;
        let gateway_args = |core: &Service| {
            args(&[
                "--chat-core-url",
                &core.url(),
                "--jwt-secret",
                SECRET,
                "--shutdown-timeout-secs",
                &drain,
                "--rate-limit-max-requests",
                "100000",
                "--auth-rate-limit-max",
                "1000",
                "--message-rate-limit",
                "100000",
            ])
        };
        let gateway_argv = [gateway_args(&cores[0]), gateway_args(&cores[1])];
        let (gateway_a, gateway_b) = tokio::join!(
            Service::start(Kind::Gateway, "gateway-a", &gateway_argv[0], dir.path()),
            Service::start(Kind::Gateway, "gateway-b", &gateway_argv[1], dir.path()),
        );
        let [ga_args, gb_args] = gateway_argv;
        let stack = Self {
            dir,
            db,
            proxy,
            redis,
            workers: workers
                .into_iter()
                .map(|service| Proc {
                    service,
                    args: worker_args.clone(),
                })
                .collect(),
            cores: cores
                .into_iter()
                .map(|service| Proc {
                    service,
                    args: core_args.clone(),
                })
                .collect(),
            gateways: vec![
                Proc {
                    service: gateway_a?,
                    args: ga_args,
                },
                Proc {
                    service: gateway_b?,
                    args: gb_args,
                },
            ],
            pids: Arc::default(),
        };
        stack.register_pids();
        Ok(stack)
    }

    fn all(&self) -> impl Iterator<Item = &Proc> {
        self.workers.iter().chain(&self.cores).chain(&self.gateways)
    }

    fn register_pids(&self) {
        let mut pids = self.pids.lock().unwrap();
        pids.clear();
        for proc in self.all() {
            if let Some(pid) = proc.service.pid() {
                pids.insert(proc.service.name.clone(), pid);
            }
        }
    }

    fn gateway_addrs(&self) -> Vec<SocketAddr> {
        self.gateways.iter().map(|g| g.service.addr).collect()
    }

    fn procs(&mut self, kind: Kind) -> &mut Vec<Proc> {
        match kind {
            Kind::AgentWorker => &mut self.workers,
            Kind::ChatCore => &mut self.cores,
            Kind::Gateway => &mut self.gateways,
        }
    }

    /// Starts process `i` of `kind` again on its old addresses (the others
    /// and the clients know it by them).
    async fn restart(&mut self, kind: Kind, i: usize) -> anyhow::Result<()> {
        let dir = self.dir.path().to_owned();
        let proc = &mut self.procs(kind)[i];
        let (name, addr, admin) = (proc.service.name.clone(), proc.service.addr, proc.service.admin);
        let mut last_error = None;
        for _ in 0..5 {
            let mut service = Service::spawn_on(kind, &name, &proc.args, &[], &dir, addr, admin)?;
            match service.wait_ready(RECOVERY_TIMEOUT).await {
                Ok(()) => {
                    proc.service = service;
                    last_error = None;
                    break;
                }
                // The port not free yet: try again in a moment.
                Err(error) if service.exited() => last_error = Some(error),
                Err(error) => return Err(error),
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        if let Some(error) = last_error {
            return Err(error.context(format!("{name} does not start again")));
        }
        self.register_pids();
        Ok(())
    }

    /// Waits until every process answers `/readyz` with 200.
    async fn wait_all_ready(&mut self) -> anyhow::Result<()> {
        for kind in [Kind::AgentWorker, Kind::ChatCore, Kind::Gateway] {
            for proc in self.procs(kind) {
                proc.service.wait_ready(RECOVERY_TIMEOUT).await?;
            }
        }
        Ok(())
    }

    fn logs(&self) -> String {
        self.all()
            .map(|p| p.service.logs_tail())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

// --- faults ---

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// SIGKILL process `i` of a kind, then start it again.
    Kill(Kind, usize),
    /// SIGTERM process `i` of a kind: it must drain and exit cleanly within
    /// its deadline; then start it again.
    Term(Kind, usize),
    RestartRedis,
    StopPostgres,
}

const KINDS: [Kind; 3] = [Kind::Gateway, Kind::ChatCore, Kind::AgentWorker];

fn count(kind: Kind) -> usize {
    match kind {
        Kind::AgentWorker => 3,
        Kind::ChatCore | Kind::Gateway => 2,
    }
}

fn random_fault(rng: &mut StdRng) -> Fault {
    let kind = KINDS[rng.random_range(0..KINDS.len())];
    let i = rng.random_range(0..count(kind));
    match rng.random_range(0..10) {
        0..=3 => Fault::Kill(kind, i),
        4..=6 => Fault::Term(kind, i),
        7..=8 => Fault::RestartRedis,
        _ => Fault::StopPostgres,
    }
}

/// Every kind of fault once, in a seeded order.
fn every_fault(rng: &mut StdRng) -> Vec<Fault> {
    let mut faults: Vec<Fault> = KINDS
        .iter()
        .flat_map(|&kind| {
            let i = rng.random_range(0..count(kind));
            let j = rng.random_range(0..count(kind));
            [Fault::Kill(kind, i), Fault::Term(kind, j)]
        })
        .chain([Fault::RestartRedis, Fault::StopPostgres])
        .collect();
    // Fisher–Yates with the seeded generator.
    for i in (1..faults.len()).rev() {
        faults.swap(i, rng.random_range(0..=i));
    }
    faults
}

/// What the schedule did, for the report and the checker.
#[derive(Default)]
struct FaultLog {
    lines: Vec<String>,
    /// From the moment Redis went away until every chat-core was ready again.
    redis_outages: Vec<(Instant, Instant)>,
    /// Violations found by the schedule itself (an unclean drain).
    violations: Vec<String>,
}

async fn apply(
    stack: &mut Stack,
    fault: Fault,
    rng: &mut StdRng,
    log: &mut FaultLog,
    start: Instant,
) -> anyhow::Result<()> {
    let began = Instant::now();
    match fault {
        Fault::Kill(kind, i) => {
            let proc = &mut stack.procs(kind)[i];
            proc.service.kill()?;
            proc.service.wait_exit(Duration::from_secs(10)).await?;
            tokio::time::sleep(Duration::from_millis(rng.random_range(200..2000))).await;
            stack.restart(kind, i).await?;
        }
        Fault::Term(kind, i) => {
            let proc = &mut stack.procs(kind)[i];
            let name = proc.service.name.clone();
            let (status, elapsed) = proc.service.stop(DRAIN + EXIT_MARGIN).await?;
            if !status.success() || elapsed > DRAIN + EXIT_MARGIN {
                log.violations.push(format!(
                    "{name} exited with {status} {elapsed:?} after SIGTERM (deadline {DRAIN:?})"
                ));
            }
            log.lines.push(format!(
                "{}   {name} drained in {elapsed:.2?} ({status})",
                at(start)
            ));
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..1000))).await;
            stack.restart(kind, i).await?;
        }
        Fault::RestartRedis => {
            stack.redis.stop().await;
            tokio::time::sleep(Duration::from_millis(rng.random_range(500..3000))).await;
            stack.redis.resume().await?;
            stack.wait_all_ready().await?;
            log.redis_outages.push((began, Instant::now()));
        }
        Fault::StopPostgres => {
            stack.proxy.cut();
            tokio::time::sleep(POSTGRES_OUTAGE).await;
            stack.proxy.restore();
        }
    }
    stack.wait_all_ready().await?;
    log.lines.push(format!(
        "{} {fault:?}: recovered after {:.2?}",
        at(start),
        began.elapsed()
    ));
    Ok(())
}

// --- RSS ---

/// `VmRSS` of a process, in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Peak RSS by process name (KiB), and every process's RSS (MiB) every
/// 10 s, for the report.
type RssSamples = (BTreeMap<String, u64>, BTreeMap<String, Vec<u64>>);

/// Samples every registered process until `stop`.
fn sample_rss(
    pids: Arc<Mutex<BTreeMap<String, u32>>>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<RssSamples> {
    tokio::spawn(async move {
        let mut peaks: BTreeMap<String, u64> = BTreeMap::new();
        let mut timeline: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        let mut round = 0u64;
        while !stop.load(Ordering::SeqCst) {
            round += 1;
            let current: Vec<(String, u32)> = pids
                .lock()
                .unwrap()
                .iter()
                .map(|(n, p)| (n.clone(), *p))
                .collect();
            for (name, pid) in current {
                if let Some(kib) = rss_kib(pid) {
                    if round % 40 == 1 {
                        timeline.entry(name.clone()).or_default().push(kib / 1024);
                    }
                    let peak = peaks.entry(name).or_default();
                    *peak = (*peak).max(kib);
                }
            }
            tokio::time::sleep(RSS_EVERY).await;
        }
        (peaks, timeline)
    })
}

// --- clients ---

/// A message the client sent, with the ack it got.
#[derive(Clone, Debug)]
struct Sent {
    client_msg_id: String,
    content: String,
    ack: Option<Value>,
}

/// Deltas of one run attempt, by index: text and the connections that
/// carried it.
type Attempt = BTreeMap<u64, (String, BTreeSet<u64>)>;

/// A WebSocket client that chats in one session, drops its socket at random
/// and resumes on either gateway, and keeps every frame it saw.
struct Client {
    id: usize,
    token: String,
    session_id: String,
    gateways: Vec<SocketAddr>,
    rng: StdRng,
    ws: Option<Ws>,
    /// Incremented on every connection.
    epoch: u64,
    /// Highest `seq` seen, for `after_seq`.
    last_seq: i64,
    /// Messages seen, by `seq`.
    messages: BTreeMap<i64, Value>,
    /// The `(epoch, time)` each message was first seen.
    message_seen: BTreeMap<i64, (u64, Instant)>,
    /// Deltas by run and attempt.
    deltas: BTreeMap<(String, u64), Attempt>,
    /// When delta 0 of a run attempt was first seen on a connection.
    delta_zero: BTreeMap<(String, u64, u64), Instant>,
    /// Runs whose reply message was seen.
    replied: BTreeSet<String>,
    /// Every `run` frame: run id → (status, attempt, epoch).
    runs: BTreeMap<String, Vec<(String, u64, u64)>>,
    sent: Vec<Sent>,
    /// Contradictions seen on the wire (same key, different content).
    conflicts: Vec<String>,
    /// Frames received in all, deltas received twice (before de-duplication).
    frames: u64,
    duplicate_deltas: u64,
    reconnects: u64,
    switches: u64,
    closes: BTreeMap<String, u64>,
    resend_at: Option<Instant>,
    /// When to connect again after losing the socket.
    reconnect_at: Instant,
    trace: Vec<String>,
    start: Instant,
}

impl Client {
    fn note(&mut self, line: String) {
        let line = format!("{} c{} {line}", at(self.start), self.id);
        self.trace.push(line);
    }

    fn run_done(&self, run_id: &str) -> bool {
        self.runs
            .get(run_id)
            .is_some_and(|r| r.iter().any(|(s, _, _)| TERMINAL.contains(&s.as_str())))
            || self.replied.contains(run_id)
    }

    fn acked_runs(&self) -> Vec<String> {
        self.sent
            .iter()
            .filter_map(|s| s.ack.as_ref())
            .filter_map(|a| a["run_id"].as_str().map(str::to_owned))
            .collect()
    }

    /// Runs acknowledged but not finished as far as this client knows.
    fn open_runs(&self) -> usize {
        self.acked_runs().iter().filter(|r| !self.run_done(r)).count()
    }

    fn all_acked(&self) -> bool {
        self.sent.iter().all(|s| s.ack.is_some())
    }

    fn settled(&self) -> bool {
        self.all_acked() && self.open_runs() == 0
    }

    fn handle(&mut self, frame: Value) {
        self.frames += 1;
        let now = Instant::now();
        match frame["type"].as_str().unwrap_or_default() {
            "message" => {
                let message = frame["message"].clone();
                let seq = message["seq"].as_i64().unwrap_or_default();
                if let Some(seen) = self.messages.get(&seq) {
                    if seen["id"] != message["id"] || seen["content"] != message["content"] {
                        self.conflicts
                            .push(format!("seq {seq} seen as {seen} and as {message}"));
                    }
                } else {
                    self.note(format!(
                        "message seq={seq} role={} run={}",
                        message["role"], message["run_id"]
                    ));
                    self.message_seen.insert(seq, (self.epoch, now));
                    if message["role"] == "assistant"
                        && let Some(run_id) = message["run_id"].as_str()
                    {
                        self.replied.insert(run_id.to_owned());
                    }
                    self.messages.insert(seq, message);
                }
                self.last_seq = self.last_seq.max(seq);
            }
            "delta" => {
                let run_id = frame["run_id"].as_str().unwrap_or_default().to_owned();
                let attempt = frame["attempt"].as_u64().unwrap_or(1);
                let index = frame["index"].as_u64().unwrap_or(u64::MAX);
                let text = frame["text"].as_str().unwrap_or_default().to_owned();
                if index == 0 {
                    self.delta_zero
                        .entry((run_id.clone(), attempt, self.epoch))
                        .or_insert(now);
                }
                let epoch = self.epoch;
                let entry = self
                    .deltas
                    .entry((run_id.clone(), attempt))
                    .or_default()
                    .entry(index)
                    .or_insert_with(|| (text.clone(), BTreeSet::new()));
                if !entry.1.is_empty() {
                    self.duplicate_deltas += 1;
                }
                entry.1.insert(epoch);
                if entry.0 != text {
                    let seen = entry.0.clone();
                    self.conflicts.push(format!(
                        "delta ({run_id}, {attempt}, {index}) seen as {seen:?} and as {text:?}"
                    ));
                }
            }
            "run" => {
                let run_id = frame["run_id"].as_str().unwrap_or_default().to_owned();
                let status = frame["status"].as_str().unwrap_or_default().to_owned();
                let attempt = frame["attempt"].as_u64().unwrap_or(1);
                self.note(format!("run {run_id} {status} attempt={attempt}"));
                self.runs
                    .entry(run_id)
                    .or_default()
                    .push((status, attempt, self.epoch));
            }
            "ack" => {
                let client_msg_id = frame["client_msg_id"].as_str().unwrap_or_default().to_owned();
                self.note(format!(
                    "ack {client_msg_id} seq={} run={} duplicate={}",
                    frame["seq"], frame["run_id"], frame["duplicate"]
                ));
                match self.sent.iter_mut().find(|s| s.client_msg_id == client_msg_id) {
                    None => self
                        .conflicts
                        .push(format!("ack of a message never sent: {frame}")),
                    Some(sent) => match &sent.ack {
                        Some(first)
                            if first["message_id"] != frame["message_id"]
                                || first["seq"] != frame["seq"]
                                || first["run_id"] != frame["run_id"] =>
                        {
                            let line = format!("{client_msg_id} acked as {first} and as {frame}");
                            self.conflicts.push(line);
                        }
                        Some(_) => {}
                        None => sent.ack = Some(frame),
                    },
                }
            }
            "error" => {
                self.note(format!("error {frame}"));
                if frame["client_msg_id"].is_string() {
                    // The send was refused (say, the database is down): send
                    // it again, with the same id, in a moment.
                    let wait = frame["retry_after_ms"].as_u64().unwrap_or(0).max(300);
                    self.resend_at = Some(now + Duration::from_millis(wait));
                } else {
                    // The subscription failed or ended (say, the database is
                    // down): resume on a new socket in a moment.
                    self.disconnect("error frame");
                    self.reconnect_at = now + Duration::from_millis(self.rng.random_range(300..800));
                }
            }
            "subscribed" | "pong" => {}
            _ => self.note(format!("frame {frame}")),
        }
    }

    fn disconnect(&mut self, why: &str) {
        if self.ws.take().is_some() {
            self.note(format!("disconnect: {why}"));
        }
    }

    /// Connects to gateway `first` (or else the other), subscribes after the
    /// last seen `seq` and re-sends every unacknowledged message.
    async fn connect(&mut self, first: usize) -> anyhow::Result<()> {
        let n = self.gateways.len();
        for k in 0..n {
            let addr = self.gateways[(first + k) % n];
            match Ws::connect(addr, &self.token).await {
                Ok(ws) => {
                    self.ws = Some(ws);
                    self.epoch += 1;
                    self.reconnects += 1;
                    self.note(format!(
                        "connected to {addr} (epoch {}); subscribe after_seq={}",
                        self.epoch, self.last_seq
                    ));
                    let subscribe = json!({
                        "type": "subscribe",
                        "session_id": self.session_id,
                        "after_seq": self.last_seq,
                    });
                    self.send_frame(&subscribe).await;
                    self.resend().await;
                    return Ok(());
                }
                Err(error) => self.note(format!("connect {addr}: {error:#}")),
            }
        }
        bail!("no gateway accepts WebSockets")
    }

    async fn send_frame(&mut self, frame: &Value) {
        if let Some(ws) = self.ws.as_mut()
            && ws.send(frame).await.is_err()
        {
            self.disconnect("send failed");
        }
    }

    async fn resend(&mut self) {
        self.resend_at = None;
        let unacked: Vec<Sent> = self.sent.iter().filter(|s| s.ack.is_none()).cloned().collect();
        for sent in unacked {
            self.note(format!("resend {}", sent.client_msg_id));
            self.send_frame(&self.send_json(&sent)).await;
        }
    }

    fn send_json(&self, sent: &Sent) -> Value {
        json!({
            "type": "send",
            "session_id": self.session_id,
            "client_msg_id": sent.client_msg_id,
            "content": sent.content,
        })
    }

    async fn send_new(&mut self) {
        let n = self.sent.len();
        let words = self.rng.random_range(4..16);
        let mut content = format!("c{}-m{n}", self.id);
        for _ in 0..words {
            let _ = write!(content, " w{}", self.rng.random_range(0..1000));
        }
        let sent = Sent {
            client_msg_id: format!("c{}-m{n}-{}", self.id, uuid::Uuid::new_v4().simple()),
            content,
            ack: None,
        };
        self.note(format!("send {}", sent.client_msg_id));
        let frame = self.send_json(&sent);
        self.sent.push(sent);
        self.send_frame(&frame).await;
    }

    /// Chats until `chatting` turns false, then settles: sends nothing new,
    /// reconnects only when closed, until every message is acknowledged and
    /// every run's outcome seen (or [`SETTLE_TIMEOUT`] passes).
    async fn run(mut self, chatting: Arc<AtomicBool>) -> Self {
        let mut gateway = self.rng.random_range(0..self.gateways.len());
        let mut next_drop = Instant::now() + Duration::from_millis(self.rng.random_range(1000..6000));
        let mut next_send = Instant::now();
        let mut settle_deadline: Option<Instant> = None;
        loop {
            let now = Instant::now();
            let chat = chatting.load(Ordering::SeqCst);
            if !chat {
                let deadline = *settle_deadline.get_or_insert(now + SETTLE_TIMEOUT);
                if self.settled() {
                    self.note("settled".into());
                    break;
                }
                if now >= deadline {
                    self.note("did not settle".into());
                    break;
                }
            }
            if self.ws.is_none() {
                if now < self.reconnect_at {
                    tokio::time::sleep_until(self.reconnect_at).await;
                    continue;
                }
                if self.connect(gateway).await.is_err() {
                    self.reconnect_at = Instant::now() + Duration::from_millis(300);
                    gateway = (gateway + 1) % self.gateways.len();
                }
                continue;
            }
            if chat && now >= next_drop {
                // Drop the socket without a close and resume, on the other
                // gateway half of the time.
                self.disconnect("at random");
                if self.rng.random_bool(0.5) {
                    gateway = (gateway + 1) % self.gateways.len();
                    self.switches += 1;
                }
                self.reconnect_at = now + Duration::from_millis(self.rng.random_range(0..300));
                next_drop = now + Duration::from_millis(self.rng.random_range(1000..8000));
                continue;
            }
            if chat && now >= next_send && self.all_acked() && self.open_runs() < MAX_IN_FLIGHT {
                self.send_new().await;
                next_send = now + Duration::from_millis(self.rng.random_range(0..400));
                continue;
            }
            if self.resend_at.is_some_and(|t| now >= t) {
                self.resend().await;
                continue;
            }
            let Some(ws) = self.ws.as_mut() else { continue };
            match ws.next(Duration::from_millis(100)).await {
                Ok(WsEvent::Frame(frame)) => self.handle(frame),
                Ok(WsEvent::Closed(code)) => {
                    let code = code.map_or_else(|| "none".to_owned(), |c| c.to_string());
                    *self.closes.entry(code.clone()).or_default() += 1;
                    self.disconnect(&format!("closed by the server ({code})"));
                    // Resume elsewhere: the gateway may be going away.
                    gateway = (gateway + 1) % self.gateways.len();
                    self.reconnect_at = Instant::now() + Duration::from_millis(self.rng.random_range(0..300));
                }
                Err(_) => {}
            }
        }
        self.ws = None;
        self
    }
}

// --- the checker ---

/// One row of `runs`.
#[derive(Debug)]
struct RunRow {
    id: String,
    session_id: String,
    user_message_id: String,
    status: String,
    attempt: i64,
    reply_message_id: Option<String>,
}

async fn stored_runs(url: &str) -> anyhow::Result<Vec<RunRow>> {
    let db = Database::connect(url).await?;
    let rows = db
        .query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT id, session_id, user_message_id, status, attempt::bigint AS attempt, reply_message_id FROM runs",
        ))
        .await?;
    let mut runs = Vec::new();
    for row in rows {
        runs.push(RunRow {
            id: row.try_get("", "id")?,
            session_id: row.try_get("", "session_id")?,
            user_message_id: row.try_get("", "user_message_id")?,
            status: row.try_get("", "status")?,
            attempt: row.try_get("", "attempt")?,
            reply_message_id: row.try_get("", "reply_message_id")?,
        });
    }
    db.close().await?;
    Ok(runs)
}

/// A session's whole stored history, page by page.
async fn history(api: &Api, token: &str, session_id: &str) -> anyhow::Result<Vec<Value>> {
    let mut messages: Vec<Value> = Vec::new();
    let mut after = 0;
    loop {
        let url = format!(
            "{}/api/v1/sessions/{session_id}/messages?after_seq={after}&limit=1000",
            api.base
        );
        let response = api.http.get(url).bearer_auth(token).send().await?;
        ensure!(response.status().is_success(), "history: {}", response.status());
        let body: Value = response.json().await?;
        let page = body["messages"].as_array().cloned().context("no messages")?;
        let Some(last) = page.last() else { break };
        after = last["seq"].as_i64().context("message without seq")?;
        messages.extend(page);
    }
    Ok(messages)
}

/// Counts of what the checker saw, for the report.
#[derive(Default, Debug)]
struct Tally {
    acked: usize,
    completed: usize,
    failed: usize,
    cancelled: usize,
    retried: usize,
    streamed_whole: usize,
    streamed_partly_before_a_disconnect: usize,
    truncated_by_redis_outage: usize,
    not_streamed: usize,
}

/// Compares one client's view with what was stored.
#[allow(clippy::too_many_lines)]
fn check_client(
    client: &Client,
    stored: &[Value],
    runs: &BTreeMap<String, &RunRow>,
    redis_outages: &[(Instant, Instant)],
    tally: &mut Tally,
    violations: &mut Vec<String>,
) {
    let c = client.id;
    let mut fail =
        |line: String| violations.push(format!("client {c} (session {}): {line}", client.session_id));
    for conflict in &client.conflicts {
        fail(format!("contradictory frames: {conflict}"));
    }

    // Seqs 1..=n, each once; message ids unique.
    let seqs: Vec<i64> = stored.iter().filter_map(|m| m["seq"].as_i64()).collect();
    let expected: Vec<i64> = (1..=seqs.len() as i64).collect();
    if seqs != expected {
        fail(format!("stored seqs are not 1..={}: {seqs:?}", seqs.len()));
    }
    let ids: BTreeSet<&str> = stored.iter().filter_map(|m| m["id"].as_str()).collect();
    if ids.len() != stored.len() {
        fail("a message id is stored twice".into());
    }
    let by_seq: BTreeMap<i64, &Value> = stored
        .iter()
        .filter_map(|m| Some((m["seq"].as_i64()?, m)))
        .collect();

    // Every user message is one the client sent, stored once, in send order.
    let order: BTreeMap<&str, usize> = client
        .sent
        .iter()
        .enumerate()
        .map(|(i, s)| (s.client_msg_id.as_str(), i))
        .collect();
    let mut last_index = None;
    let mut stored_user: BTreeMap<&str, &Value> = BTreeMap::new();
    for message in stored.iter().filter(|m| m["role"] == "user") {
        let id = message["client_msg_id"].as_str().unwrap_or_default();
        let Some(&index) = order.get(id) else {
            fail(format!("a stored user message was never sent: {message}"));
            continue;
        };
        if stored_user.insert(id, message).is_some() {
            fail(format!("{id} is stored twice"));
        }
        if last_index.is_some_and(|last| index < last) {
            fail(format!("{id} (sent #{index}) is stored after a later message"));
        }
        last_index = Some(index);
    }

    // Every acked message: stored once, as acked, with one terminal run whose
    // outcome matches what is stored and what the client saw.
    let mut last_reply_seq = 0;
    for sent in &client.sent {
        let id = &sent.client_msg_id;
        let Some(ack) = &sent.ack else {
            fail(format!("{id} was never acknowledged"));
            continue;
        };
        tally.acked += 1;
        let Some(message) = stored_user.get(id.as_str()) else {
            fail(format!("{id} was acknowledged ({ack}) but is not stored"));
            continue;
        };
        if message["id"] != ack["message_id"]
            || message["seq"] != ack["seq"]
            || message["content"] != sent.content.as_str()
        {
            fail(format!("{id} acked as {ack} but stored as {message}"));
        }
        let run_id = ack["run_id"].as_str().unwrap_or_default();
        let Some(run) = runs.get(run_id) else {
            fail(format!("{id}: run {run_id} of the ack is not stored"));
            continue;
        };
        if run.user_message_id != message["id"].as_str().unwrap_or_default()
            || run.session_id != client.session_id
        {
            fail(format!("{id}: run {run_id} belongs to another message: {run:?}"));
        }
        if !TERMINAL.contains(&run.status.as_str()) {
            fail(format!("{id}: run {run_id} ended {}, not terminal", run.status));
            continue;
        }
        if run.attempt > 1 {
            tally.retried += 1;
        }
        // The terminal statuses the client saw agree with the store.
        let seen: BTreeSet<&str> = client
            .runs
            .get(run_id)
            .map(|r| {
                r.iter()
                    .map(|(s, _, _)| s.as_str())
                    .filter(|s| TERMINAL.contains(s))
                    .collect()
            })
            .unwrap_or_default();
        if seen.len() > 1 || seen.iter().any(|s| *s != run.status) {
            fail(format!(
                "run {run_id} is stored {} but the client saw {seen:?}",
                run.status
            ));
        }
        let replies: Vec<&Value> = stored
            .iter()
            .filter(|m| m["role"] == "assistant" && m["run_id"] == run_id)
            .collect();
        match run.status.as_str() {
            "completed" => tally.completed += 1,
            "failed" => tally.failed += 1,
            _ => tally.cancelled += 1,
        }
        if run.status != "completed" {
            if !replies.is_empty() {
                fail(format!(
                    "run {run_id} is {} yet has replies {replies:?}",
                    run.status
                ));
            }
            continue;
        }
        let [reply] = replies[..] else {
            fail(format!(
                "run {run_id} is completed with {} replies stored: {replies:?}",
                replies.len()
            ));
            continue;
        };
        if run.reply_message_id.as_deref() != reply["id"].as_str() {
            fail(format!(
                "run {run_id} names reply {:?}, stored {reply}",
                run.reply_message_id
            ));
        }
        let text = reply["content"].as_str().unwrap_or_default();
        if text != sent.content {
            fail(format!(
                "run {run_id}: the reply {text:?} does not echo {:?}",
                sent.content
            ));
        }
        let reply_seq = reply["seq"].as_i64().unwrap_or_default();
        if reply_seq <= message["seq"].as_i64().unwrap_or_default() || reply_seq <= last_reply_seq {
            fail(format!("run {run_id}: reply seq {reply_seq} out of order"));
        }
        last_reply_seq = reply_seq;

        // Deltas: per attempt, indexes 0..n without holes, each a prefix of
        // the reply; the completing attempt whole when the client followed
        // it from delta 0 to the end on one connection.
        for ((_, attempt), deltas) in client
            .deltas
            .range((run_id.to_owned(), 0)..=(run_id.to_owned(), u64::MAX))
        {
            let indexes: Vec<u64> = deltas.keys().copied().collect();
            if indexes != (0..indexes.len() as u64).collect::<Vec<_>>() {
                fail(format!(
                    "run {run_id} attempt {attempt}: deltas with holes: {indexes:?}"
                ));
                continue;
            }
            let streamed: String = deltas.values().map(|(t, _)| t.as_str()).collect();
            if !text.starts_with(&streamed) {
                fail(format!(
                    "run {run_id} attempt {attempt}: streamed {streamed:?} is not a prefix of the reply {text:?}"
                ));
            }
        }
        let attempt = u64::try_from(run.attempt).unwrap_or_default();
        let deltas = client.deltas.get(&(run_id.to_owned(), attempt));
        let streamed: String = deltas
            .map(|d| d.values().map(|(t, _)| t.as_str()).collect())
            .unwrap_or_default();
        if deltas.is_none() {
            tally.not_streamed += 1;
        } else if streamed == text {
            tally.streamed_whole += 1;
        } else {
            // Partial: fine if the client was not on one connection from
            // delta 0 to the reply (it resumed after the run ended).
            let Some(&(epoch, reply_at)) = by_seq
                .get(&reply_seq)
                .and_then(|_| client.message_seen.get(&reply_seq))
            else {
                fail(format!("the client never saw reply seq {reply_seq}"));
                continue;
            };
            match client.delta_zero.get(&(run_id.to_owned(), attempt, epoch)) {
                None => tally.streamed_partly_before_a_disconnect += 1,
                Some(&zero_at)
                    if redis_outages
                        .iter()
                        .any(|&(from, to)| from <= reply_at && zero_at <= to) =>
                {
                    tally.truncated_by_redis_outage += 1;
                }
                Some(_) => fail(format!(
                    "run {run_id} attempt {attempt}: followed from delta 0 on one connection, the client saw {streamed:?} of {text:?}"
                )),
            }
        }
    }

    // The client saw every stored message, as stored, and nothing else.
    for (seq, message) in &by_seq {
        match client.messages.get(seq) {
            None => fail(format!("the client never saw seq {seq}: {message}")),
            Some(seen) if seen["id"] != message["id"] || seen["content"] != message["content"] => {
                fail(format!("seq {seq}: the client saw {seen}, stored {message}"));
            }
            Some(_) => {}
        }
    }
    for seq in client.messages.keys() {
        if !by_seq.contains_key(seq) {
            fail(format!("the client saw seq {seq}, which is not stored"));
        }
    }
}

/// Runs the checker over every client; returns the violations.
async fn check(
    stack: &Stack,
    clients: &[Client],
    redis_outages: &[(Instant, Instant)],
    tally: &mut Tally,
) -> anyhow::Result<Vec<String>> {
    let api = Api::new(stack.gateways[0].service.addr);
    let runs = stored_runs(&stack.db.url).await?;
    let by_id: BTreeMap<String, &RunRow> = runs.iter().map(|r| (r.id.clone(), r)).collect();
    let mut violations = Vec::new();
    if by_id.len() != runs.len() {
        violations.push("a run id is stored twice".into());
    }
    // One run per user message.
    let mut per_message: BTreeMap<&str, usize> = BTreeMap::new();
    for run in &runs {
        *per_message.entry(&run.user_message_id).or_default() += 1;
    }
    for (message, n) in per_message.iter().filter(|(_, n)| **n > 1) {
        violations.push(format!("message {message} has {n} runs"));
    }
    for client in clients {
        let stored = history(&api, &client.token, &client.session_id).await?;
        check_client(client, &stored, &by_id, redis_outages, tally, &mut violations);
    }
    Ok(violations)
}

// --- the test ---

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_survives_a_seeded_chaos_schedule() {
    let (Some(_), Some(_)) = (chat_testkit::needs::postgres(), chat_testkit::needs::redis()) else {
        return;
    };
    let Some(redis) = PrivateRedis::start().await else {
        return;
    };
    let seed = env_u64("CHAOS_SEED").unwrap_or_else(rand::random);
    let seconds = env_u64("CHAOS_SECONDS").unwrap_or(SHORT_SECONDS);
    let sessions = env_u64("CHAOS_SESSIONS").map_or(SESSIONS, |n| usize::try_from(n).unwrap_or(SESSIONS));
    println!("chaos seed {seed}: {seconds} s, {sessions} sessions (replay with CHAOS_SEED={seed})");
    let replay = format!(
        "chaos seed {seed} (replay: CHAOS_SEED={seed} CHAOS_SECONDS={seconds} CHAOS_SESSIONS={sessions})"
    );

    let start = Instant::now();
    let mut stack = Stack::start(redis).await.expect("the stack starts");
    println!("{} stack ready", at(start));
    let stop_rss = Arc::new(AtomicBool::new(false));
    let rss = sample_rss(stack.pids.clone(), stop_rss.clone());

    // Clients, one session each.
    let mut rng = StdRng::seed_from_u64(seed);
    let api = Api::new(stack.gateways[0].service.addr);
    let chatting = Arc::new(AtomicBool::new(true));
    let mut tasks = Vec::new();
    for id in 0..sessions {
        let token = api.new_user().await.expect("user");
        let session_id = api.session(&token, "chaos").await.expect("session");
        let client = Client {
            id,
            token,
            session_id,
            gateways: stack.gateway_addrs(),
            rng: StdRng::seed_from_u64(rng.random()),
            ws: None,
            epoch: 0,
            last_seq: 0,
            messages: BTreeMap::new(),
            message_seen: BTreeMap::new(),
            deltas: BTreeMap::new(),
            delta_zero: BTreeMap::new(),
            replied: BTreeSet::new(),
            runs: BTreeMap::new(),
            sent: Vec::new(),
            conflicts: Vec::new(),
            frames: 0,
            duplicate_deltas: 0,
            reconnects: 0,
            switches: 0,
            closes: BTreeMap::new(),
            resend_at: None,
            reconnect_at: Instant::now(),
            trace: Vec::new(),
            start,
        };
        tasks.push(tokio::spawn(client.run(chatting.clone())));
    }

    // The schedule: every kind of fault once, then at random until the time is up.
    let mut log = FaultLog::default();
    let chaos_until = Instant::now() + Duration::from_secs(seconds);
    let mut planned = every_fault(&mut rng).into_iter();
    let mut result: anyhow::Result<()> = Ok(());
    tokio::time::sleep(Duration::from_millis(rng.random_range(1000..3000))).await;
    loop {
        let fault = match planned.next() {
            Some(fault) => fault,
            None if Instant::now() < chaos_until => random_fault(&mut rng),
            None => break,
        };
        log.lines.push(format!("{} {fault:?}", at(start)));
        println!("{} {fault:?}", at(start));
        if let Err(error) = apply(&mut stack, fault, &mut rng, &mut log, start).await {
            result = Err(error.context(format!("{fault:?}")));
            break;
        }
        let pause = Duration::from_millis(rng.random_range(500..4000));
        if Instant::now() + pause >= chaos_until && planned.len() == 0 {
            break;
        }
        tokio::time::sleep(pause).await;
    }
    println!("{} chaos over; settling", at(start));
    chatting.store(false, Ordering::SeqCst);
    let mut clients = Vec::new();
    for task in tasks {
        clients.push(task.await.expect("client task"));
    }
    println!("{} settled", at(start));
    stop_rss.store(true, Ordering::SeqCst);
    let (peaks, timeline) = rss.await.expect("rss sampler");

    let mut tally = Tally::default();
    let mut violations = log.violations.clone();
    if result.is_ok() {
        match check(&stack, &clients, &log.redis_outages, &mut tally).await {
            Ok(found) => violations.extend(found),
            Err(error) => result = Err(error.context("checker")),
        }
    }
    for (name, kib) in &peaks {
        if *kib > RSS_BOUND_MIB * 1024 {
            violations.push(format!(
                "{name} peaked at {} MiB RSS, over {RSS_BOUND_MIB} MiB",
                kib / 1024
            ));
        }
    }

    // The report.
    let mut report = String::new();
    let _ = writeln!(report, "{replay}\nschedule:");
    for line in &log.lines {
        let _ = writeln!(report, "  {line}");
    }
    for client in &clients {
        let _ = writeln!(
            report,
            "client {}: {} sent, {} frames, {} connections ({} switches), closes {:?}, {} duplicate deltas dropped",
            client.id,
            client.sent.len(),
            client.frames,
            client.reconnects,
            client.switches,
            client.closes,
            client.duplicate_deltas,
        );
    }
    let _ = writeln!(report, "{tally:?}");
    let peaks_mib: BTreeMap<&String, u64> = peaks.iter().map(|(n, k)| (n, k / 1024)).collect();
    let _ = writeln!(report, "peak RSS (MiB, bound {RSS_BOUND_MIB}): {peaks_mib:?}");
    let _ = writeln!(
        report,
        "RSS every 10 s (MiB; a restarted process continues its name): {timeline:?}"
    );
    let _ = writeln!(report, "took {:.1?}", start.elapsed());
    println!("{report}");

    if result.is_err() || !violations.is_empty() {
        let traces: String = clients
            .iter()
            .map(|c| {
                let from = c.trace.len().saturating_sub(60);
                c.trace[from..].join("\n")
            })
            .collect::<Vec<_>>()
            .join("\n");
        let logs = stack.logs();
        let dir = stack.dir.keep();
        panic!(
            "{replay}\n{}violations:\n  {}\n\n{report}\nclient traces (last lines):\n{traces}\n\nlogs in {}:\n{logs}",
            result
                .err()
                .map(|e| format!("error: {e:#}\n"))
                .unwrap_or_default(),
            violations.join("\n  "),
            dir.display(),
        );
    }
    assert!(tally.completed > 0, "{replay}: no run completed");
}
