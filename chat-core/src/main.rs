use clap::{Parser, Subcommand};

use chat_core::{Application, Settings};

/// chat-core: owns sessions, messages and runs; dispatches runs to agent-workers.
#[derive(Parser)]
#[command(name = "chat-core", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    settings: Settings,
}

#[derive(Subcommand)]
enum Command {
    /// Serve gRPC (the default).
    Serve,
    /// Apply pending database migrations, then exit.
    Migrate,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    chat_common::telemetry::init(cli.settings.log_format, "info,sqlx=warn,sea_orm=warn");
    match cli.command.unwrap_or(Command::Serve) {
        Command::Migrate => chat_core::migrate(&cli.settings).await,
        Command::Serve => {
            let app = Application::build(cli.settings).await?;
            app.run_until_stopped(chat_common::shutdown::signal()).await
        }
    }
}
