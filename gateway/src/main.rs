//! The `gateway` binary: parse settings, start logging, serve until a signal.

use clap::Parser;
use gateway::{Application, Settings};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::parse();
    chat_common::telemetry::init(settings.log_format, "info,gateway=debug");
    let app = Application::build(settings).await?;
    app.run_until_stopped(chat_common::shutdown::signal()).await
}
