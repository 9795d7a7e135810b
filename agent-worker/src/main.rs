//! The agent-worker binary: parses settings, then serves until SIGINT or SIGTERM.

use std::process::ExitCode;

use clap::Parser;

#[global_allocator]
static ALLOCATOR: chat_common::alloc::Allocator = chat_common::alloc::ALLOCATOR;

#[tokio::main]
async fn main() -> ExitCode {
    let settings = agent_worker::Settings::parse();
    chat_common::shutdown::exit_code("agent-worker", agent_worker::run(settings).await)
}
