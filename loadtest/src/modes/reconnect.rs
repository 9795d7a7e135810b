//! `reconnect`: a storm of connect + authenticate + subscribe (then close), from many loops at
//! once; connections accepted and authenticated per second, latency percentiles, errors.

use std::sync::Arc;
use std::time::Instant;

use serde_json::{Value, json};

use super::RssWatch;
use crate::stats::{Counters, Errors, Latency, Progress, per_second};
use crate::ws;
use crate::{Common, Setup, secs};

#[derive(Clone, Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub common: Common,

    /// Loops connecting at once; each opens a socket, subscribes, closes it and starts over.
    #[arg(long, short = 'c', default_value_t = 64)]
    pub concurrency: usize,

    /// Seconds the storm lasts.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,

    /// Sessions (and through `--sessions-per-user`, users) the sockets subscribe to, in turn.
    #[arg(long, default_value_t = 16)]
    pub sessions: usize,
}

#[derive(Default)]
struct LoopStats {
    upgrade: Latency,
    subscribed: Latency,
    errors: Errors,
}

pub async fn run(args: Args) -> anyhow::Result<Value> {
    let setup = Arc::new(Setup::new(args.common.clone())?);
    let duration = secs(args.seconds, "--seconds")?;
    anyhow::ensure!(args.concurrency > 0, "--concurrency must be at least 1");
    let sessions = Arc::new(setup.sessions(args.sessions.max(1)).await?);
    let rss = RssWatch::start(&setup.common.pids)?;

    let counters = Arc::new(Counters::default());
    let _progress = Progress::start(
        "reconnect",
        "connections",
        counters.clone(),
        setup.progress_every(),
    );
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = (0..args.concurrency)
        .map(|worker| {
            let (setup, sessions, counters) = (setup.clone(), sessions.clone(), counters.clone());
            tokio::spawn(async move {
                let mut stats = LoopStats::default();
                let mut n = worker;
                while Instant::now() < deadline {
                    let session = &sessions[n % sessions.len()];
                    let (endpoint, source) = setup.route(n);
                    n += args.concurrency;
                    let began = Instant::now();
                    let mut socket = match ws::connect(endpoint, source, &session.token, setup.timeout).await
                    {
                        Ok(socket) => socket,
                        Err(err) => {
                            stats.errors.add(err.kind());
                            counters.error();
                            // A refused connect comes back at once; don't spin on it.
                            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                            continue;
                        }
                    };
                    stats.upgrade.record(began.elapsed());
                    match ws::subscribe(&mut socket, &session.session_id, setup.timeout).await {
                        Ok(()) => {
                            stats.subscribed.record(began.elapsed());
                            counters.done();
                        }
                        Err(kind) => {
                            stats.errors.add(kind);
                            counters.error();
                        }
                    }
                    let _ = socket.close(None).await;
                }
                stats
            })
        })
        .collect();
    let mut total = LoopStats::default();
    for task in tasks {
        let stats = task.await?;
        total.upgrade.merge(&stats.upgrade);
        total.subscribed.merge(&stats.subscribed);
        total.errors.merge(&stats.errors);
    }
    let elapsed = started.elapsed();
    Ok(json!({
        "concurrency": args.concurrency,
        "seconds": args.seconds,
        "connections": total.subscribed.len(),
        "connections_per_s": per_second(total.subscribed.len(), elapsed),
        "upgrades": total.upgrade.len(),
        "latency": {
            "connect_to_upgraded": total.upgrade.summary(),
            "connect_to_subscribed": total.subscribed.summary(),
        },
        "errors_total": total.errors.total(),
        "errors": total.errors,
        "rss": rss.finish()?,
    }))
}
