//! `soak`: turns at a steady rate for a long time, sampling the RSS of every watched process;
//! reports the series and whether each process's RSS stayed flat after the warm-up.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::time::MissedTickBehavior;

use super::turns::open_chats;
use crate::procs::{self, RssSample};
use crate::stats::{Counters, Progress, per_second};
use crate::turn::{TurnStats, words};
use crate::{Common, Setup, secs};

/// Samples averaged at each end of the series to judge flatness.
const ENDS: usize = 3;

#[derive(Clone, Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub common: Common,

    /// Sessions, each on its own WebSocket, sharing the rate.
    #[arg(long, short = 'c', default_value_t = 16)]
    pub concurrency: usize,

    /// Turns per second over all sessions (each session sends at its share of the rate, and
    /// never has more than one turn in flight).
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,

    /// Seconds the soak lasts, warm-up included.
    #[arg(long, default_value_t = 300.0)]
    pub seconds: f64,

    /// Seconds before the first sample that the flatness is judged from.
    #[arg(long, default_value_t = 30.0)]
    pub warmup_secs: f64,

    /// Seconds between RSS samples.
    #[arg(long, default_value_t = 5.0)]
    pub sample_secs: f64,

    /// Words per message.
    #[arg(long, default_value_t = 2)]
    pub words: usize,

    /// Growth (last samples against the first after the warm-up) still called flat, in percent.
    #[arg(long, default_value_t = 10.0)]
    pub flat_tolerance_pct: f64,
}

pub async fn run(args: Args) -> anyhow::Result<Value> {
    let setup = Setup::new(args.common.clone())?;
    let duration = secs(args.seconds, "--seconds")?;
    let every = secs(args.sample_secs, "--sample-secs")?;
    let warmup = Duration::from_secs_f64(args.warmup_secs.max(0.0));
    anyhow::ensure!(args.concurrency > 0, "--concurrency must be at least 1");
    anyhow::ensure!(
        args.rate > 0.0 && args.rate.is_finite(),
        "--rate must be positive"
    );
    let chats = open_chats(&setup, args.concurrency, "s").await?;

    let content = Arc::<str>::from(words(args.words));
    let counters = Arc::new(Counters::default());
    let _progress = Progress::start("soak", "turns", counters.clone(), setup.progress_every());
    let started = Instant::now();
    let deadline = started + duration;
    let interval = Duration::from_secs_f64(args.concurrency as f64 / args.rate);
    let tasks: Vec<_> = chats
        .into_iter()
        .enumerate()
        .map(|(i, mut chat)| {
            let (content, counters) = (content.clone(), counters.clone());
            // Sessions start spread over one interval, not all at once.
            let offset = interval.mul_f64(i as f64 / args.concurrency as f64);
            tokio::spawn(async move {
                let mut stats = TurnStats::default();
                let mut ticker =
                    tokio::time::interval_at(tokio::time::Instant::from_std(started + offset), interval);
                ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
                loop {
                    ticker.tick().await;
                    if Instant::now() >= deadline {
                        break;
                    }
                    if !stats.take(chat.turn(&content).await, &counters) {
                        break;
                    }
                }
                chat.close().await;
                stats
            })
        })
        .collect();

    let mut series: Vec<RssSample> = vec![procs::sample(&setup.common.pids, 0.0)];
    let mut ticker = tokio::time::interval(every);
    ticker.tick().await;
    while Instant::now() + every <= deadline {
        ticker.tick().await;
        series.push(procs::sample(&setup.common.pids, started.elapsed().as_secs_f64()));
    }
    let mut total = TurnStats::default();
    for task in tasks {
        total.merge(&task.await?);
    }
    let elapsed = started.elapsed();
    tokio::time::sleep(every.min(Duration::from_secs(2))).await;
    series.push(procs::sample(&setup.common.pids, started.elapsed().as_secs_f64()));
    let flatness = flatness(
        &setup.common.pids,
        &series,
        warmup.as_secs_f64(),
        args.flat_tolerance_pct,
    );
    let all_flat = flatness.iter().all(|f| f["flat"] != false);
    Ok(json!({
        "concurrency": args.concurrency,
        "target_rate": args.rate,
        "seconds": args.seconds,
        "turns": total.turns,
        "turns_per_s": per_second(total.turns, elapsed),
        "latency": total.latency_json(),
        "incomplete_replies": total.incomplete,
        "errors_total": total.errors.total(),
        "errors": total.errors,
        "rss_flat": all_flat,
        "flatness": flatness,
        "rss_series": series,
    }))
}

/// Per process: the mean of the first samples after the warm-up against the mean of the last.
fn flatness(
    watched: &[procs::Watched],
    series: &[RssSample],
    warmup_s: f64,
    tolerance_pct: f64,
) -> Vec<Value> {
    watched
        .iter()
        .map(|w| {
            let after_warmup: Vec<u64> = series
                .iter()
                .filter(|s| s.at_s >= warmup_s)
                .filter_map(|s| s.rss_kib.get(&w.name).copied())
                .collect();
            if after_warmup.len() < 2 {
                return json!({"name": w.name, "flat": null, "why": "fewer than two samples after the warm-up"});
            }
            let n = ENDS.min(after_warmup.len() / 2).max(1);
            let mean = |values: &[u64]| values.iter().sum::<u64>() as f64 / values.len() as f64;
            let first = mean(&after_warmup[..n]);
            let last = mean(&after_warmup[after_warmup.len() - n..]);
            let growth_pct = (last - first) / first.max(1.0) * 100.0;
            json!({
                "name": w.name,
                "first_kib": first.round(),
                "last_kib": last.round(),
                "growth_pct": (growth_pct * 10.0).round() / 10.0,
                "flat": growth_pct <= tolerance_pct,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at_s: f64, kib: u64) -> RssSample {
        RssSample {
            at_s,
            rss_kib: [("chat-core".to_owned(), kib)].into_iter().collect(),
        }
    }

    #[test]
    fn growth_after_the_warm_up_is_not_flat() {
        let core: procs::Watched = "chat-core=1".parse().expect("spec");
        let growing: Vec<_> = (0..10).map(|i| sample(i as f64 * 5.0, 1000 + i * 100)).collect();
        let verdict = flatness(std::slice::from_ref(&core), &growing, 10.0, 10.0);
        assert_eq!(verdict[0]["flat"], false, "{verdict:?}");
        let steady: Vec<_> = (0..10)
            .map(|i| sample(i as f64 * 5.0, if i < 2 { 500 } else { 1000 }))
            .collect();
        let verdict = flatness(&[core], &steady, 10.0, 10.0);
        assert_eq!(verdict[0]["flat"], true, "{verdict:?}");
    }
}
