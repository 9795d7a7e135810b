//! The `gateway` binary: parse settings, start logging, serve until a signal.

use std::process::ExitCode;

use clap::Parser;
use gateway::{Application, Settings};

#[tokio::main]
async fn main() -> ExitCode {
    let settings = Settings::parse();
    if let Err(message) = settings.validate() {
        eprintln!("error: {message}");
        return ExitCode::from(2);
    }
    chat_common::telemetry::init(settings.log_format, "info,gateway=debug");
    match run(settings).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "gateway failed");
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(settings: Settings) -> anyhow::Result<()> {
    let app = Application::build(settings).await?;
    app.run_until_stopped(chat_common::shutdown::signal()).await
}
