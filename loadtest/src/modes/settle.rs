//! `settle`: no load for a while, then the RSS of every watched process: what the services
//! keep once the modes before it are over (bench/run reads it at the start and after the load).

use std::time::Duration;

use serde_json::{Value, json};

use crate::Common;
use crate::procs;

#[derive(Clone, Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub common: Common,

    /// Seconds to wait, sending nothing, before reading the RSS.
    #[arg(long, default_value_t = 30.0)]
    pub settle_secs: f64,
}

pub async fn run(args: Args) -> anyhow::Result<Value> {
    anyhow::ensure!(
        args.settle_secs.is_finite() && args.settle_secs >= 0.0,
        "--settle-secs must be a number of seconds, 0 or more"
    );
    anyhow::ensure!(
        !args.common.pids.is_empty(),
        "settle reads the RSS of the processes named with --pid; none was given"
    );
    tokio::time::sleep(Duration::from_secs_f64(args.settle_secs)).await;
    let rss = procs::read_all(&args.common.pids)?;
    let rss_kib: serde_json::Map<String, Value> = args
        .common
        .pids
        .iter()
        .zip(rss)
        .map(|(watched, kib)| (watched.name.clone(), json!(kib)))
        .collect();
    Ok(json!({ "settle_secs": args.settle_secs, "rss_kib": rss_kib }))
}
