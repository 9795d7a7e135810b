//! `loadtest`: a load harness that drives only the gateway's public contract (REST
//! `/api/v1/...` and the `/api/v1/ws` WebSocket) and reports, as JSON, latency percentiles
//! (HDR histograms), throughput, errors by kind and the memory of the service processes it is
//! told about. Each mode is a module under [`modes`]; see docs/benchmarks.md.

pub mod api;
pub mod modes;
pub mod procs;
pub mod report;
pub mod stats;
pub mod turn;
pub mod ws;

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use reqwest::Url;
use serde_json::{Value, json};

use crate::procs::Watched;

/// loadtest: load harness for the chat gateway (REST + WebSocket, `chat.v1` frames).
///
/// Prints progress on stderr and one JSON document with the results on stdout (or into
/// `--json FILE`). Errors (refused upgrades, error frames, failed runs, timeouts) are counted
/// by kind in the result, never hidden; the exit code is 0 when the mode ran, whatever it
/// measured.
#[derive(Debug, clap::Parser)]
#[command(name = "loadtest", version, about, long_about)]
pub struct Cli {
    #[command(subcommand)]
    pub mode: Mode,
}

#[derive(Debug, clap::Subcommand)]
pub enum Mode {
    /// Hold N authenticated, subscribed, idle WebSockets (spread over child processes and
    /// 127.0.0.x source addresses) and report the RSS growth per socket of each `--pid`.
    Idle(modes::idle::Args),
    /// C sessions, each on its own WebSocket, sending to the echo agent back to back:
    /// send → ack / first delta / stored reply percentiles and turns/s.
    Turns(modes::turns::Args),
    /// Long replies over many sessions: streamed deltas/s and whether every delta arrived.
    Deltas(modes::deltas::Args),
    /// One session, N subscriber sockets of the same user, one sender: per-delta delivery
    /// latency and deltas/s delivered in total.
    Fanout(modes::fanout::Args),
    /// A storm of connect + authenticate + subscribe: connections per second, latency, errors.
    Reconnect(modes::reconnect::Args),
    /// Turns at a steady rate for a long time, sampling the RSS of each `--pid`: is it flat?
    Soak(modes::soak::Args),
    /// Send nothing for a while, then read the RSS of each `--pid`: what the services keep
    /// once the load is over.
    Settle(modes::settle::Args),
    /// Render the results of one `bench/run` (a folder of JSON files) as Markdown on stdout.
    Report(report::Args),
    /// A child process of `idle` (started by it; reads its plan as JSON on stdin).
    #[command(hide = true)]
    IdleWorker,
}

/// Options every mode takes.
#[derive(Clone, Debug, clap::Args)]
pub struct Common {
    /// Base URL of a gateway; repeat for several gateways (WebSockets are spread over them
    /// round-robin, REST calls go to the first).
    #[arg(long = "gateway", value_name = "URL", default_value = "http://127.0.0.1:3006")]
    pub gateways: Vec<Url>,

    /// A service process to watch, as NAME=PID (repeatable): its RSS is read before and after
    /// the mode (and sampled by `soak`). Names starting with `gateway` or `chat-core` count
    /// towards the per-socket sum over the processes that hold state for a client socket.
    #[arg(long = "pid", value_name = "NAME=PID")]
    pub pids: Vec<Watched>,

    /// The agent of the sessions the mode creates (the echo agent streams a reply of one
    /// delta per word of the message).
    #[arg(long, default_value = "echo")]
    pub agent: String,

    /// Prefix of the usernames registered for this run (a timestamp and counter follow).
    #[arg(long, default_value = "lt")]
    pub user_prefix: String,

    /// Password of the users registered for this run.
    #[arg(long, default_value = "loadtest-password-1")]
    pub password: String,

    /// Sessions per registered user (chat-core caps sessions per user, 100 by default).
    #[arg(long, default_value_t = 50)]
    pub sessions_per_user: usize,

    /// Source addresses to spread client sockets over when the gateway is on 127.0.0.1:
    /// 127.0.0.2, 127.0.0.3, ... (each has its own ephemeral ports); 0 lets the kernel pick.
    #[arg(long, default_value_t = 50)]
    pub source_addrs: u8,

    /// Longest wait for any one answer (upgrade, subscribed, ack, reply), in seconds.
    #[arg(long, default_value_t = 30.0)]
    pub timeout_secs: f64,

    /// Write the JSON result to this file instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// Seconds between progress lines on stderr; 0 for none.
    #[arg(long, default_value_t = 1.0)]
    pub progress_secs: f64,
}

/// What every mode works with: the parsed common options and the gateways' endpoints.
pub struct Setup {
    pub common: Common,
    pub rest: api::Rest,
    pub endpoints: Vec<ws::Endpoint>,
    pub sources: Vec<IpAddr>,
    pub timeout: Duration,
}

impl Setup {
    pub fn new(common: Common) -> anyhow::Result<Self> {
        let timeout = secs(common.timeout_secs, "--timeout-secs")?;
        let first = common
            .gateways
            .first()
            .context("at least one --gateway is needed")?
            .clone();
        let rest = api::Rest::new(first, common.password.clone(), timeout)?;
        let endpoints = common
            .gateways
            .iter()
            .map(ws::Endpoint::of_gateway)
            .collect::<anyhow::Result<Vec<_>>>()?;
        let sources = ws::source_addrs(&endpoints[0], common.source_addrs);
        Ok(Self {
            common,
            rest,
            endpoints,
            sources,
            timeout,
        })
    }

    /// The gateway and source address of the `i`-th socket a mode opens.
    pub fn route(&self, i: usize) -> (&ws::Endpoint, Option<IpAddr>) {
        let endpoint = &self.endpoints[i % self.endpoints.len()];
        let source = (!self.sources.is_empty()).then(|| self.sources[i % self.sources.len()]);
        (endpoint, source)
    }

    /// How often progress lines are printed.
    pub fn progress_every(&self) -> Option<Duration> {
        (self.common.progress_secs > 0.0).then(|| Duration::from_secs_f64(self.common.progress_secs))
    }

    /// Fresh sessions for this run.
    pub async fn sessions(&self, count: usize) -> anyhow::Result<Vec<api::SessionRef>> {
        eprintln!("registering users and creating {count} sessions");
        self.rest
            .population(
                &self.common.user_prefix,
                count,
                self.common.sessions_per_user,
                &self.common.agent,
            )
            .await
    }
}

/// A positive number of seconds from a flag.
pub fn secs(value: f64, flag: &str) -> anyhow::Result<Duration> {
    if !(value.is_finite() && value > 0.0) {
        anyhow::bail!("{flag} must be a positive number of seconds");
    }
    Ok(Duration::from_secs_f64(value))
}

/// Runs `mode`; the JSON result.
pub async fn run(mode: Mode) -> anyhow::Result<()> {
    let (name, common, result) = match mode {
        Mode::IdleWorker => return modes::idle::worker().await,
        Mode::Report(args) => {
            print!("{}", report::render(&args.dir)?);
            if args.strict {
                let problems = report::problems(&args.dir)?;
                anyhow::ensure!(
                    problems.is_empty(),
                    "the run had problems:\n{}",
                    problems.join("\n")
                );
            }
            return Ok(());
        }
        Mode::Idle(args) => ("idle", args.common.clone(), modes::idle::run(args).await?),
        Mode::Turns(args) => ("turns", args.common.clone(), modes::turns::run(args).await?),
        Mode::Deltas(args) => ("deltas", args.common.clone(), modes::deltas::run(args).await?),
        Mode::Fanout(args) => ("fanout", args.common.clone(), modes::fanout::run(args).await?),
        Mode::Reconnect(args) => (
            "reconnect",
            args.common.clone(),
            modes::reconnect::run(args).await?,
        ),
        Mode::Soak(args) => ("soak", args.common.clone(), modes::soak::run(args).await?),
        Mode::Settle(args) => ("settle", args.common.clone(), modes::settle::run(args).await?),
    };
    let document = json!({
        "mode": name,
        "gateways": common.gateways.iter().map(Url::as_str).collect::<Vec<_>>(),
        "agent": common.agent,
        "result": result,
    });
    write_result(&document, common.json.as_deref())
}

fn write_result(document: &Value, file: Option<&std::path::Path>) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(document).context("failed to serialize the result")?;
    match file {
        Some(path) => {
            std::fs::write(path, text + "\n").with_context(|| format!("failed to write {}", path.display()))
        }
        None => {
            println!("{text}");
            Ok(())
        }
    }
}
