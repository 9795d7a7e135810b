//! The `gateway` binary: parse settings, then run until SIGTERM or Ctrl-C.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let settings = gateway::Settings::parse();
    chat_common::shutdown::exit_code("gateway", gateway::app::run(settings).await)
}
