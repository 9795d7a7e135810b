//! `fanout`: one session, N subscriber sockets of its owner, one sender; per-delta delivery
//! latency (send → the delta on each subscriber) and deltas/s delivered in total.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};

use super::RssWatch;
use crate::stats::{Counters, Errors, Latency, Progress, per_second};
use crate::turn::{Chat, TurnStats, words};
use crate::ws::{self, Frame, Incoming};
use crate::{Common, Setup};

#[derive(Clone, Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub common: Common,

    /// Subscriber sockets on the session (all of its owner: the gateway's
    /// MAX_CONNECTIONS_PER_USER must allow them).
    #[arg(long, default_value_t = 1000)]
    pub subscribers: usize,

    /// Messages the sender sends, one after the other's reply.
    #[arg(long, default_value_t = 20)]
    pub turns: usize,

    /// Words per message (the echo agent streams one delta per word).
    #[arg(long, default_value_t = 100)]
    pub words: usize,

    /// Subscriber sockets opened at once.
    #[arg(long, default_value_t = 100)]
    pub connect_concurrency: usize,
}

/// What one subscriber received: per run, the arrival of each delta in order of arrival,
/// and whether indices came 0, 1, ...
#[derive(Default)]
struct Received {
    runs: HashMap<String, RunSeen>,
    replies: usize,
    errors: Errors,
}

#[derive(Default)]
struct RunSeen {
    arrivals: Vec<Instant>,
    in_order: bool,
}

pub async fn run(args: Args) -> anyhow::Result<Value> {
    let setup = Setup::new(args.common.clone())?;
    anyhow::ensure!(args.turns > 0, "--turns must be at least 1");
    let session = setup
        .sessions(1)
        .await?
        .pop()
        .ok_or_else(|| anyhow::anyhow!("no session created"))?;
    eprintln!("opening {} subscriber sockets", args.subscribers);
    let mut open_errors = Errors::default();
    let sockets: Vec<_> = futures::stream::iter(0..args.subscribers)
        .map(|i| {
            let (endpoint, source) = setup.route(i);
            let (token, session_id, timeout) =
                (session.token.clone(), session.session_id.clone(), setup.timeout);
            async move {
                let mut socket = ws::connect(endpoint, source, &token, timeout)
                    .await
                    .map_err(|err| err.kind())?;
                ws::subscribe(&mut socket, &session_id, timeout).await?;
                Ok::<_, String>(socket)
            }
        })
        .buffer_unordered(args.connect_concurrency.max(1))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .filter_map(|opened| opened.map_err(|kind| open_errors.add(kind)).ok())
        .collect();
    let (endpoint, source) = setup.route(args.subscribers);
    let mut sender = Chat::open(endpoint, source, &session, "f".into(), setup.timeout)
        .await
        .map_err(|kind| anyhow::anyhow!("could not open the sender's socket: {kind}"))?;
    let rss = RssWatch::start(&setup.common.pids)?;

    let counters = Arc::new(Counters::default());
    let _progress = Progress::start("fanout", "turns", counters.clone(), setup.progress_every());
    let subscribers = sockets.len();
    let readers: Vec<_> = sockets
        .into_iter()
        .map(|socket| tokio::spawn(read_until_replies(socket, args.turns, setup.timeout)))
        .collect();

    // Run id → when its message was sent, filled in as acks come back to the sender.
    let sent_at: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let content = words(args.words);
    let started = Instant::now();
    let mut sender_stats = TurnStats::default();
    for _ in 0..args.turns {
        let sent = Instant::now();
        match sender.turn_with_run_id(&content).await {
            Ok((run_id, times)) => {
                sent_at
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(run_id, sent);
                sender_stats.record(&times);
                counters.done();
            }
            Err(kind) => {
                sender_stats.errors.add(format!("sender:{kind}"));
                counters.error();
            }
        }
    }
    sender.close().await;

    let mut latency = Latency::new();
    let (mut delivered, mut incomplete, mut last_arrival) = (0u64, 0u64, started);
    let mut errors = open_errors;
    errors.merge(&sender_stats.errors);
    let sent_at = sent_at.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let expected_per_run = sender_stats.deltas.checked_div(sender_stats.turns).unwrap_or(0);
    for reader in readers {
        let received = reader.await?;
        errors.merge(&received.errors);
        for run_id in sent_at.keys() {
            if !received.runs.contains_key(run_id) {
                incomplete += 1;
            }
        }
        for (run_id, seen) in received.runs {
            let Some(&sent) = sent_at.get(&run_id) else {
                continue;
            };
            if !seen.in_order || (seen.arrivals.len() as u64) < expected_per_run {
                incomplete += 1;
            }
            for arrival in &seen.arrivals {
                latency.record(arrival.saturating_duration_since(sent));
                last_arrival = last_arrival.max(*arrival);
            }
            delivered += seen.arrivals.len() as u64;
        }
    }
    let elapsed = last_arrival
        .saturating_duration_since(started)
        .max(Duration::from_millis(1));
    Ok(json!({
        "subscribers": subscribers,
        "turns": args.turns,
        "words": args.words,
        "replies_to_sender": sender_stats.turns,
        "deltas_delivered": delivered,
        "deltas_per_s": per_second(delivered, elapsed),
        "elapsed_s": (elapsed.as_secs_f64() * 100.0).round() / 100.0,
        "delivery_latency": latency.summary(),
        "sender_latency": sender_stats.latency_json(),
        "incomplete_runs": incomplete,
        "every_delta_delivered": incomplete == 0 && errors.total() == 0 && sender_stats.turns > 0,
        "errors_total": errors.total(),
        "errors": errors,
        "rss": rss.finish()?,
    }))
}

/// Reads a subscriber's socket until it has seen `replies` assistant replies.
async fn read_until_replies(mut socket: ws::Socket, replies: usize, timeout: Duration) -> Received {
    let mut received = Received::default();
    while received.replies < replies {
        let text = match ws::next_text(&mut socket, timeout).await {
            None => {
                received.errors.add("subscriber:timeout:reply");
                break;
            }
            Some(Incoming::Closed(code)) => {
                received
                    .errors
                    .add(format!("subscriber:{}", ws::closed_kind(code)));
                break;
            }
            Some(Incoming::Text(text)) => text,
        };
        let now = Instant::now();
        match serde_json::from_str::<Frame>(&text) {
            Ok(Frame::Delta { run_id, index, .. }) => {
                let seen = received
                    .runs
                    .entry(run_id.into_owned())
                    .or_insert_with(|| RunSeen {
                        arrivals: Vec::new(),
                        in_order: true,
                    });
                seen.in_order &= index as usize == seen.arrivals.len();
                seen.arrivals.push(now);
            }
            Ok(Frame::Message { message }) if message.role == "assistant" => received.replies += 1,
            Ok(Frame::Error { code, .. }) => received.errors.add(format!("subscriber:error_frame:{code}")),
            Ok(_) => {}
            Err(_) => received.errors.add("subscriber:bad_frame"),
        }
    }
    let _ = socket.close(None).await;
    received
}
