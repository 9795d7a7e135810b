//! `turns`: concurrent sessions chatting back to back; latency percentiles and turns/s.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

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

    let content = Arc::<str>::from(words(args.words));
    let counters = Arc::new(Counters::default());
    let _progress = Progress::start("turns", "turns", counters.clone(), setup.progress_every());
    let measure_from = Instant::now() + warmup;
    let deadline = measure_from + measured;
    let tasks: Vec<_> = chats
        .into_iter()
        .map(|mut chat| {
            let content = content.clone();
            let counters = counters.clone();
            tokio::spawn(async move {
                let mut stats = TurnStats::default();
                let mut warmup_turns = 0u64;
                loop {
                    let started = Instant::now();
                    if started >= deadline {
                        break;
                    }
                    let outcome = chat.turn(&content).await;
                    if started < measure_from {
                        warmup_turns += 1;
                        if let Err(kind) = outcome
                            && !stats.warmup_failed(&kind)
                        {
                            break;
                        }
                        continue;
                    }
                    if !stats.take(outcome, &counters) {
                        break;
                    }
                }
                chat.close().await;
                (stats, warmup_turns)
            })
        })
        .collect();
    let mut total = TurnStats::default();
    let mut warmup_turns = 0;
    for task in tasks {
        let (stats, warm) = task.await?;
        total.merge(&stats);
        warmup_turns += warm;
    }
    Ok(json!({
        "transport": "websocket",
        "concurrency": args.concurrency,
        "seconds": args.seconds,
        "warmup_secs": args.warmup_secs,
        "words": args.words,
        "turns": total.turns,
        "warmup_turns": warmup_turns,
        "turns_per_s": per_second(total.turns, measured),
        "latency": total.latency_json(),
        "deltas": total.deltas,
        "incomplete_replies": total.incomplete,
        "errors_total": total.errors.total(),
        "errors": total.errors,
        "rss": rss.finish()?,
    }))
}

/// `turns --rest`: the same loop over `POST .../messages`.
async fn run_rest(args: &Args, setup: &Setup, measured: Duration, warmup: Duration) -> anyhow::Result<Value> {
    let sessions = setup.sessions(args.concurrency).await?;
    let rss = RssWatch::start(&setup.common.pids)?;
    let content = Arc::<str>::from(words(args.words));
    let counters = Arc::new(Counters::default());
    let _progress = Progress::start("turns", "turns", counters.clone(), setup.progress_every());
    let measure_from = Instant::now() + warmup;
    let deadline = measure_from + measured;
    let tasks: Vec<_> = sessions
        .into_iter()
        .map(|session| {
            let (rest, content, counters) = (setup.rest.clone(), content.clone(), counters.clone());
            tokio::spawn(async move {
                let mut stats = TurnStats::default();
                let mut warmup_turns = 0u64;
                loop {
                    let started = Instant::now();
                    if started >= deadline {
                        break;
                    }
                    let outcome = rest.turn(&session, &content).await;
                    if started < measure_from {
                        warmup_turns += 1;
                        if let Err(kind) = outcome
                            && !stats.warmup_failed(&kind)
                        {
                            break;
                        }
                        continue;
                    }
                    match outcome {
                        Ok(()) => {
                            stats.reply.record(started.elapsed());
                            stats.turns += 1;
                            counters.done();
                        }
                        Err(kind) => {
                            if !stats.failed(kind, &counters) {
                                break;
                            }
                        }
                    }
                }
                (stats, warmup_turns)
            })
        })
        .collect();
    let mut total = TurnStats::default();
    let mut warmup_turns = 0;
    for task in tasks {
        let (stats, warm) = task.await?;
        total.merge(&stats);
        warmup_turns += warm;
    }
    Ok(json!({
        "transport": "rest",
        "concurrency": args.concurrency,
        "seconds": args.seconds,
        "warmup_secs": args.warmup_secs,
        "words": args.words,
        "turns": total.turns,
        "warmup_turns": warmup_turns,
        "turns_per_s": per_second(total.turns, measured),
        "latency": {"send_to_reply": total.reply.summary()},
        "errors_total": total.errors.total(),
        "errors": total.errors,
        "rss": rss.finish()?,
    }))
}
