//! The agent-worker binary: parses settings, starts logging, serves until SIGINT or SIGTERM.

use std::process::ExitCode;

use agent_worker::{Application, Settings};
use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let settings = Settings::parse();
    chat_common::telemetry::init(settings.log_format, "info");
    match run(settings).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("agent-worker: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(settings: Settings) -> anyhow::Result<()> {
    let app = Application::build(settings).await?;
    app.run_until_stopped(chat_common::shutdown::signal()).await
}
