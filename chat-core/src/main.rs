//! The `chat-core` binary: `chat-core [serve]` or `chat-core migrate`.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = chat_core::Cli::parse();
    chat_common::shutdown::exit_code("chat-core", chat_core::run(cli).await)
}
