//! `deltas`: long streamed replies over many sessions; deltas/s and whether every delta arrived.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use serde_json::{Value, json};

use super::RssWatch;
use super::turns::{Window, gather, open_chats};
use crate::stats::{Counters, Progress, per_second};
use crate::turn::words;
use crate::{Common, Setup, secs};

#[derive(Clone, Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub common: Common,

    /// Sessions streaming at once, each on its own WebSocket.
    #[arg(long, default_value_t = 16)]
    pub sessions: usize,

    /// Words per message: the echo agent streams one delta per word, so this many deltas per
    /// reply (3 bytes a word; the gateway's MAX_CONTENT_BYTES, 16 KiB by default, bounds it).
    #[arg(long, default_value_t = 2000)]
    pub words: usize,

    /// Seconds during which sessions start new turns (turns in flight then are finished).
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
}

pub async fn run(args: Args) -> anyhow::Result<Value> {
    let setup = Setup::new(args.common.clone())?;
    let duration = secs(args.seconds, "--seconds")?;
    anyhow::ensure!(args.sessions > 0, "--sessions must be at least 1");
    let content = Arc::<str>::from(words(args.words));
    let chats = open_chats(&setup, args.sessions, "d").await?;
    let rss = RssWatch::start(&setup.common.pids)?;

    let counters = Arc::new(Counters::default());
    let _progress = Progress::start("deltas", "replies", counters.clone(), setup.progress_every());
    let started = Instant::now();
    let deadline = started + duration;
    let window = Window {
        measure_from: started,
        deadline,
    };
    let tasks = window.spawn_chats(chats, &content, &counters);
    let (total, _) = gather(tasks).await?;
    let elapsed = started.elapsed();
    let errors = counters.errors.load(Ordering::Relaxed);
    Ok(json!({
        "sessions": args.sessions,
        "words": args.words,
        "seconds": args.seconds,
        "elapsed_s": (elapsed.as_secs_f64() * 100.0).round() / 100.0,
        "replies": total.turns,
        "deltas": total.deltas,
        "deltas_per_s": per_second(total.deltas, elapsed),
        "expected_deltas": total.turns * deltas_per_reply(&content),
        "incomplete_replies": total.incomplete,
        "every_delta_delivered": total.incomplete == 0 && errors == 0 && total.turns > 0,
        "latency": total.latency_json(),
        "errors_total": total.errors.total(),
        "errors": total.errors,
        "rss": rss.finish()?,
    }))
}

/// How many deltas the echo agent streams for `content`: one per word, a lone word in two halves.
fn deltas_per_reply(content: &str) -> u64 {
    match content.split_whitespace().count() {
        1 if content.trim().chars().count() > 1 => 2,
        n => n as u64,
    }
}
