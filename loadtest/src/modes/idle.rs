//! `idle`: holds many authenticated, subscribed, idle WebSockets and reports what each costs
//! the watched service processes in RSS.
//!
//! The sockets are opened by child processes (this binary re-executed as `idle-worker`, each
//! holding at most `--per-process` sockets, as a process may open only so many files), spread
//! over the gateways and over 127.0.0.x source addresses (each has its own ephemeral ports).
//! The parent talks to each child in JSON lines: the plan on the child's stdin, then `stop`;
//! progress, `ready` and `done` on the child's stdout.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

use crate::procs::{self, Watched};
use crate::stats::{Errors, Latency};
use crate::ws;
use crate::{Common, Setup, secs};

/// Files a child keeps for itself besides its sockets.
const SPARE_FILES: u64 = 64;

#[derive(Clone, Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub common: Common,

    /// Idle sockets to hold in total (spread evenly over the gateways).
    #[arg(long, short = 'n', default_value_t = 15_000)]
    pub connections: usize,

    /// Most sockets one child process holds (it needs that many open files, plus a few).
    #[arg(long, default_value_t = 15_000)]
    pub per_process: usize,

    /// Sessions the sockets subscribe to, in turn (through `--sessions-per-user`, this also
    /// sets how many users are registered).
    #[arg(long, default_value_t = 100)]
    pub sessions: usize,

    /// Sockets each child opens at once.
    #[arg(long, default_value_t = 200)]
    pub connect_concurrency: usize,

    /// Seconds to wait once every socket is open before reading the RSS.
    #[arg(long, default_value_t = 5.0)]
    pub settle_secs: f64,

    /// Seconds to hold the sockets after the RSS was read (to look at the processes meanwhile).
    #[arg(long, default_value_t = 0.0)]
    pub hold_secs: f64,
}

/// What a child is asked to do.
#[derive(Debug, Serialize, Deserialize)]
struct Plan {
    gateways: Vec<String>,
    /// (access token, session id) pairs; socket `i` subscribes to pair `i % len`.
    sessions: Vec<(String, String)>,
    /// Index of the child's first socket among all sockets (it picks gateway and source).
    first: usize,
    count: usize,
    source_addrs: u8,
    connect_concurrency: usize,
    timeout_secs: f64,
}

/// A child's report, one JSON line each.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum Report {
    Progress {
        opened: u64,
        failed: u64,
    },
    Ready {
        opened: u64,
        errors: Errors,
        /// Connect → subscribed of every socket opened, in microseconds.
        connect_micros: Vec<u64>,
    },
    Done {
        /// Sockets the server closed while they were idle.
        closed_while_idle: u64,
    },
}

struct ChildProc {
    child: Child,
    stdin: ChildStdin,
}

pub async fn run(args: Args) -> anyhow::Result<Value> {
    let setup = Setup::new(args.common.clone())?;
    let settle = secs(args.settle_secs, "--settle-secs")?;
    anyhow::ensure!(args.connections > 0, "--connections must be at least 1");
    anyhow::ensure!(args.per_process > 0, "--per-process must be at least 1");
    let sessions = setup.sessions(args.sessions.clamp(1, args.connections)).await?;
    let plans = plans(&args, &sessions);
    let before = procs::read_all(&setup.common.pids)?;

    eprintln!(
        "opening {} idle sockets from {} processes to {} gateway(s)",
        args.connections,
        plans.len(),
        setup.endpoints.len()
    );
    let exe = std::env::current_exe().context("cannot find the loadtest executable")?;
    let (events, mut reports) = mpsc::unbounded_channel();
    let mut children = Vec::with_capacity(plans.len());
    for (index, plan) in plans.iter().enumerate() {
        children.push(spawn_child(&exe, index, plan, events.clone()).await?);
    }
    drop(events);

    let started = Instant::now();
    let mut progress = vec![(0u64, 0u64); children.len()];
    let mut ready = vec![None; children.len()];
    let mut done = vec![None; children.len()];
    let mut last_line = Instant::now();
    while let Some((index, report)) = reports.recv().await {
        let Some(report) = report else {
            // That child's stdout ended: it exited.
            anyhow::ensure!(
                ready[index].is_some(),
                "idle-worker {index} ended before opening its sockets (its error is above)"
            );
            continue;
        };
        match report {
            Report::Progress { opened, failed } => progress[index] = (opened, failed),
            Report::Ready {
                opened,
                errors,
                connect_micros,
            } => {
                progress[index] = (opened, errors.total());
                ready[index] = Some((opened, errors, connect_micros));
            }
            Report::Done { closed_while_idle } => done[index] = Some(closed_while_idle),
        }
        if setup
            .progress_every()
            .is_some_and(|every| last_line.elapsed() >= every)
        {
            let (opened, failed) = progress.iter().fold((0, 0), |acc, p| (acc.0 + p.0, acc.1 + p.1));
            eprintln!(
                "[{:>6.1}s] idle: {opened}/{} open, {failed} failed",
                started.elapsed().as_secs_f64(),
                args.connections
            );
            last_line = Instant::now();
        }
        if ready.iter().all(Option::is_some) {
            break;
        }
    }
    anyhow::ensure!(
        ready.iter().all(Option::is_some),
        "the idle-worker processes ended before opening their sockets"
    );
    let seconds_to_connect = started.elapsed().as_secs_f64();
    eprintln!("all sockets opened in {seconds_to_connect:.1}s; settling for {settle:?}");
    tokio::time::sleep(settle).await;
    let after = procs::read_all(&setup.common.pids)?;
    if args.hold_secs > 0.0 {
        eprintln!("holding the sockets for {}s", args.hold_secs);
        tokio::time::sleep(Duration::from_secs_f64(args.hold_secs)).await;
    }

    for child in &mut children {
        // A child that is gone already has closed its sockets; nothing to stop.
        let _ = child.stdin.write_all(b"stop\n").await;
    }
    while let Some((index, report)) = reports.recv().await {
        if let Some(Report::Done { closed_while_idle }) = report {
            done[index] = Some(closed_while_idle);
        }
    }
    for child in &mut children {
        let status = child.child.wait().await?;
        anyhow::ensure!(status.success(), "an idle-worker process failed: {status}");
    }

    let mut errors = Errors::default();
    let mut latency = Latency::new();
    let mut opened = 0;
    for (count, child_errors, micros) in ready.into_iter().flatten() {
        opened += count;
        errors.merge(&child_errors);
        for us in micros {
            latency.record(Duration::from_micros(us));
        }
    }
    let closed_while_idle: u64 = done.iter().flatten().sum();
    Ok(report(
        &args,
        &setup,
        Outcome {
            opened,
            errors,
            latency,
            closed_while_idle,
            seconds_to_connect,
            before,
            after,
        },
    ))
}

struct Outcome {
    opened: u64,
    errors: Errors,
    latency: Latency,
    closed_while_idle: u64,
    seconds_to_connect: f64,
    before: Vec<u64>,
    after: Vec<u64>,
}

fn report(args: &Args, setup: &Setup, outcome: Outcome) -> Value {
    let per = |kib: i64, sockets: f64| {
        if sockets > 0.0 {
            (kib as f64 / sockets * 100.0).round() / 100.0
        } else {
            0.0
        }
    };
    let sockets = outcome.opened as f64;
    let per_gateway = sockets / setup.endpoints.len() as f64;
    let watched: &[Watched] = &setup.common.pids;
    let changes = procs::changes(watched, &outcome.before, &outcome.after);
    let processes: Vec<Value> = watched
        .iter()
        .zip(&changes)
        .map(|(w, change)| {
            let mut entry = json!({
                "name": change.name,
                "pid": change.pid,
                "rss_before_kib": change.before_kib,
                "rss_after_kib": change.after_kib,
                "growth_kib": change.growth_kib,
                "kib_per_socket": per(change.growth_kib, sockets),
            });
            if w.is_gateway() {
                // Each gateway holds its share of the sockets.
                entry["kib_per_own_socket"] = json!(per(change.growth_kib, per_gateway));
            }
            entry
        })
        .collect();
    let state_growth: i64 = watched
        .iter()
        .zip(&changes)
        .filter(|(w, _)| w.holds_socket_state())
        .map(|(_, c)| c.growth_kib)
        .sum();
    json!({
        "connections": args.connections,
        "opened": outcome.opened,
        "processes": args.connections.div_ceil(args.per_process),
        "gateways": setup.endpoints.len(),
        "sockets_per_gateway": per_gateway.round(),
        "seconds_to_connect": (outcome.seconds_to_connect * 10.0).round() / 10.0,
        "connect_latency": outcome.latency.summary(),
        "closed_while_idle": outcome.closed_while_idle,
        "errors_total": outcome.errors.total(),
        "errors": outcome.errors,
        "rss": processes,
        "gateway_plus_core_kib_per_socket": per(state_growth, sockets),
    })
}

/// Splits the sockets into child plans of at most `--per-process` each.
fn plans(args: &Args, sessions: &[crate::api::SessionRef]) -> Vec<Plan> {
    let children = args.connections.div_ceil(args.per_process);
    let base = args.connections / children;
    let extra = args.connections % children;
    let mut first = 0;
    (0..children)
        .map(|i| {
            let count = base + usize::from(i < extra);
            let plan = Plan {
                gateways: args.common.gateways.iter().map(ToString::to_string).collect(),
                sessions: sessions
                    .iter()
                    .map(|s| (s.token.to_string(), s.session_id.clone()))
                    .collect(),
                first,
                count,
                source_addrs: args.common.source_addrs,
                connect_concurrency: args.connect_concurrency.max(1),
                timeout_secs: args.common.timeout_secs,
            };
            first += count;
            plan
        })
        .collect()
}

async fn spawn_child(
    exe: &std::path::Path,
    index: usize,
    plan: &Plan,
    events: mpsc::UnboundedSender<(usize, Option<Report>)>,
) -> anyhow::Result<ChildProc> {
    let mut child = Command::new(exe)
        .arg("idle-worker")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("failed to start {}", exe.display()))?;
    let mut stdin = child.stdin.take().context("child without stdin")?;
    let stdout = child.stdout.take().context("child without stdout")?;
    let mut line = serde_json::to_vec(plan)?;
    line.push(b'\n');
    stdin
        .write_all(&line)
        .await
        .context("failed to hand a child its plan")?;
    tokio::spawn(async move {
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            match serde_json::from_str::<Report>(&line) {
                Ok(report) => {
                    if events.send((index, Some(report))).is_err() {
                        return;
                    }
                }
                Err(err) => eprintln!("idle-worker {index}: unreadable report ({err}): {line}"),
            }
        }
        let _ = events.send((index, None));
    });
    Ok(ChildProc { child, stdin })
}

// === the child ===

/// Runs one child: opens the planned sockets, reports, holds them until told to stop.
pub async fn worker() -> anyhow::Result<()> {
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let line = stdin
        .next_line()
        .await?
        .context("idle-worker is started by `loadtest idle` and reads its plan on stdin")?;
    let plan: Plan = serde_json::from_str(&line).context("bad plan on stdin")?;
    if let Some(limit) = procs::open_files_limit() {
        anyhow::ensure!(
            plan.count as u64 + SPARE_FILES <= limit,
            "this process may open {limit} files, too few for {} sockets: raise `ulimit -n` or lower --per-process",
            plan.count
        );
    }
    anyhow::ensure!(!plan.sessions.is_empty(), "plan without sessions");
    let timeout = secs(plan.timeout_secs, "timeout")?;
    let endpoints = plan
        .gateways
        .iter()
        .map(|g| ws::Endpoint::of_gateway(&g.parse()?))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let sources = ws::source_addrs(&endpoints[0], plan.source_addrs);

    let opened = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let closed = Arc::new(AtomicU64::new(0));
    let ticker = {
        let (opened, failed) = (opened.clone(), failed.clone());
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(1));
            loop {
                every.tick().await;
                emit(&Report::Progress {
                    opened: opened.load(Ordering::Relaxed),
                    failed: failed.load(Ordering::Relaxed),
                });
            }
        })
    };
    let results: Vec<Result<(ws::Socket, Duration), String>> =
        futures::stream::iter(plan.first..plan.first + plan.count)
            .map(|i| {
                let endpoint = &endpoints[i % endpoints.len()];
                let source = (!sources.is_empty()).then(|| sources[i % sources.len()]);
                let (token, session_id) = &plan.sessions[i % plan.sessions.len()];
                let (opened, failed) = (opened.clone(), failed.clone());
                async move {
                    let began = Instant::now();
                    let opening = async {
                        let mut socket = ws::connect(endpoint, source, token, timeout)
                            .await
                            .map_err(|err| err.kind())?;
                        ws::subscribe(&mut socket, session_id, timeout).await?;
                        Ok::<_, String>(socket)
                    };
                    let result = opening.await.map(|socket| (socket, began.elapsed()));
                    match &result {
                        Ok(_) => opened.fetch_add(1, Ordering::Relaxed),
                        Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                    };
                    result
                }
            })
            .buffer_unordered(plan.connect_concurrency)
            .collect()
            .await;
    ticker.abort();

    let mut errors = Errors::default();
    let mut connect_micros = Vec::with_capacity(plan.count);
    let mut holders = Vec::with_capacity(plan.count);
    for result in results {
        match result {
            Ok((mut socket, took)) => {
                connect_micros.push(u64::try_from(took.as_micros()).unwrap_or(u64::MAX));
                let closed = closed.clone();
                // Read (and so answer pings) until the server closes or the child stops.
                holders.push(tokio::spawn(async move {
                    while let Some(Ok(message)) = socket.next().await {
                        if message.is_close() {
                            break;
                        }
                    }
                    closed.fetch_add(1, Ordering::Relaxed);
                }));
            }
            Err(kind) => errors.add(kind),
        }
    }
    emit(&Report::Ready {
        opened: opened.load(Ordering::Relaxed),
        errors,
        connect_micros,
    });
    // Until `stop` or the parent going away.
    while let Ok(Some(line)) = stdin.next_line().await {
        if line.trim() == "stop" {
            break;
        }
    }
    let closed_while_idle = closed.load(Ordering::Relaxed);
    for holder in &holders {
        holder.abort();
    }
    emit(&Report::Done { closed_while_idle });
    Ok(())
}

fn emit(report: &Report) {
    if let Ok(line) = serde_json::to_string(report) {
        println!("{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(clap::Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: Args,
    }

    #[test]
    fn sockets_are_split_evenly_over_children() {
        let args = Wrapper::parse_from(["idle", "--connections", "35001", "--per-process", "15000"]).args;
        let sessions = vec![crate::api::SessionRef {
            token: "t".into(),
            session_id: "s".into(),
        }];
        let plans = plans(&args, &sessions);
        let counts: Vec<_> = plans.iter().map(|p| (p.first, p.count)).collect();
        assert_eq!(counts, [(0, 11667), (11667, 11667), (23334, 11667)]);
    }
}
