//! `turns`: concurrent sessions chatting back to back; latency percentiles and turns/s.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use super::RssWatch;
use crate::stats::{Counters, Progress, per_second};
use crate::turn::{Chat, TurnStats, words};
use crate::{Common, Setup, secs};

#[derive(Clone, Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub common: Common,

    /// Concurrent sessions, each on its own WebSocket, each with one turn in flight.
    #[arg(long, short = 'c', default_value_t = 16)]
    pub concurrency: usize,

    /// Measured seconds (after the warm-up).
    #[arg(long, default_value_t = 20.0)]
    pub seconds: f64,

    /// Seconds of turns before measuring starts (not counted).
    #[arg(long, default_value_t = 3.0)]
    pub warmup_secs: f64,

    /// Words per message; the echo agent answers with one delta per word.
    #[arg(long, default_value_t = 2)]
    pub words: usize,

    /// Chat over REST instead (`POST /api/v1/sessions/{id}/messages`, answered once the reply
    /// is stored): only send → stored reply is timed.
    #[arg(long)]
    pub rest: bool,
}

/// Opens one subscribed chat per session; the error kinds of those that failed are fatal.
pub async fn open_chats(setup: &Setup, count: usize, tag: &str) -> anyhow::Result<Vec<Chat>> {
    let sessions = setup.sessions(count).await?;
    let mut chats = Vec::with_capacity(count);
    for (i, session) in sessions.iter().enumerate() {
        let (endpoint, source) = setup.route(i);
        let chat = Chat::open(endpoint, source, session, format!("{tag}{i}"), setup.timeout)
            .await
            .map_err(|kind| anyhow::anyhow!("could not open chat {i}: {kind}"))?;
        chats.push(chat);
    }
    Ok(chats)
}

/// When a session's turns start: none at or after `deadline`, and those
/// before `measure_from` are the warm-up, counted apart.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    pub measure_from: Instant,
    pub deadline: Instant,
}

impl Window {
    /// Runs the turns of one `session` back to back through the window
    /// (`turn` sends one and waits for its outcome). A warm-up
    /// turn that fails so that the session cannot go on stops it; `measured`
    /// takes each measured turn's outcome, with when it started, and says
    /// whether the session goes on. Returns the stats and the warm-up turns.
    pub async fn back_to_back<S, T>(
        self,
        session: &mut S,
        mut turn: impl FnMut(&mut S) -> BoxFuture<'_, Result<T, String>>,
        mut measured: impl FnMut(&mut TurnStats, Instant, Result<T, String>) -> bool,
    ) -> (TurnStats, u64) {
        let mut stats = TurnStats::default();
        let mut warmup_turns = 0u64;
        loop {
            let started = Instant::now();
            if started >= self.deadline {
                break;
            }
            let outcome = turn(session).await;
            if started < self.measure_from {
                warmup_turns += 1;
                if let Err(kind) = outcome
                    && !stats.warmup_failed(&kind)
                {
                    break;
                }
                continue;
            }
            if !measured(&mut stats, started, outcome) {
                break;
            }
        }
        (stats, warmup_turns)
    }

    /// Runs each chat's turns back to back on a task of its own, sending
    /// `content`, and closes the chat at the end.
    pub fn spawn_chats(
        self,
        chats: Vec<Chat>,
        content: &Arc<str>,
        counters: &Arc<Counters>,
    ) -> Vec<JoinHandle<(TurnStats, u64)>> {
        chats
            .into_iter()
            .map(|mut chat| {
                let (content, counters) = (content.clone(), counters.clone());
                tokio::spawn(async move {
                    let result = self
                        .back_to_back(
                            &mut (&mut chat, content),
                            |(chat, content)| Box::pin(chat.turn(content)),
                            |stats, _, outcome| stats.take(outcome, &counters),
                        )
                        .await;
                    chat.close().await;
                    result
                })
            })
            .collect()
    }
}

/// Waits for every session's task and adds up their stats and warm-up turns.
pub async fn gather(tasks: Vec<JoinHandle<(TurnStats, u64)>>) -> anyhow::Result<(TurnStats, u64)> {
    let mut total = TurnStats::default();
    let mut warmup_turns = 0;
    for task in tasks {
        let (stats, warm) = task.await?;
        total.merge(&stats);
        warmup_turns += warm;
    }
    Ok((total, warmup_turns))
}

pub async fn run(args: Args) -> anyhow::Result<Value> {
    let setup = Setup::new(args.common.clone())?;
    let measured = secs(args.seconds, "--seconds")?;
    let warmup = Duration::from_secs_f64(args.warmup_secs.max(0.0));
    anyhow::ensure!(args.concurrency > 0, "--concurrency must be at least 1");
    if args.rest {
        return run_rest(&args, &setup, measured, warmup).await;
    }
    let chats = open_chats(&setup, args.concurrency, "t").await?;
    let rss = RssWatch::start(&setup.common.pids)?;

    let measuring = Measured::start(&args, setup.progress_every(), warmup, measured);
    let tasks = measuring
        .window
        .spawn_chats(chats, &measuring.content, &measuring.counters);
    let (total, warmup_turns) = gather(tasks).await?;
    let mut report = measuring.report("websocket", &total, warmup_turns);
    report["latency"] = total.latency_json();
    report["deltas"] = json!(total.deltas);
    report["incomplete_replies"] = json!(total.incomplete);
    report["rss"] = rss.finish()?;
    Ok(report)
}

/// What both transports of `turns` set up before their sessions start, and
/// report alike.
struct Measured<'a> {
    args: &'a Args,
    measured: Duration,
    content: Arc<str>,
    counters: Arc<Counters>,
    window: Window,
    _progress: Progress,
}

impl<'a> Measured<'a> {
    /// Starts the progress line; the window opens now, measuring after `warmup`.
    fn start(args: &'a Args, progress_every: Option<Duration>, warmup: Duration, measured: Duration) -> Self {
        let counters = Arc::new(Counters::default());
        let progress = Progress::start("turns", "turns", counters.clone(), progress_every);
        let measure_from = Instant::now() + warmup;
        Self {
            args,
            measured,
            content: Arc::from(words(args.words)),
            counters,
            window: Window {
                measure_from,
                deadline: measure_from + measured,
            },
            _progress: progress,
        }
    }

    /// The fields of the report both transports give.
    fn report(&self, transport: &str, total: &TurnStats, warmup_turns: u64) -> Value {
        let args = self.args;
        json!({
            "transport": transport,
            "concurrency": args.concurrency,
            "seconds": args.seconds,
            "warmup_secs": args.warmup_secs,
            "words": args.words,
            "turns": total.turns,
            "warmup_turns": warmup_turns,
            "turns_per_s": per_second(total.turns, self.measured),
            "errors_total": total.errors.total(),
            "errors": total.errors,
        })
    }
}

/// `turns --rest`: the same loop over `POST .../messages`.
async fn run_rest(args: &Args, setup: &Setup, measured: Duration, warmup: Duration) -> anyhow::Result<Value> {
    let sessions = setup.sessions(args.concurrency).await?;
    let rss = RssWatch::start(&setup.common.pids)?;
    let measuring = Measured::start(args, setup.progress_every(), warmup, measured);
    let (window, counters) = (measuring.window, &measuring.counters);
    let tasks: Vec<_> = sessions
        .into_iter()
        .map(|session| {
            let (rest, content, counters) = (setup.rest.clone(), measuring.content.clone(), counters.clone());
            tokio::spawn(async move {
                window
                    .back_to_back(
                        &mut (rest, session, content),
                        |(rest, session, content)| Box::pin(rest.turn(session, content)),
                        |stats, started, outcome| match outcome {
                            Ok(()) => {
                                stats.reply.record(started.elapsed());
                                stats.turns += 1;
                                counters.done();
                                true
                            }
                            Err(kind) => stats.failed(kind, &counters),
                        },
                    )
                    .await
            })
        })
        .collect();
    let (total, warmup_turns) = gather(tasks).await?;
    let mut report = measuring.report("rest", &total, warmup_turns);
    report["latency"] = json!({"send_to_reply": total.reply.summary()});
    report["rss"] = rss.finish()?;
    Ok(report)
}
