//! The `gateway` binary: parse settings, then run until SIGTERM or Ctrl-C.

use std::process::ExitCode;

use clap::Parser;

#[global_allocator]
static ALLOCATOR: chat_common::alloc::Allocator = chat_common::alloc::ALLOCATOR;

#[tokio::main]
async fn main() -> ExitCode {
    let settings = gateway::Settings::parse();
    chat_common::shutdown::exit_code("gateway", gateway::app::run(settings).await)
}
