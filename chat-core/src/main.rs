//! The `chat-core` binary: `chat-core [serve]`, `chat-core migrate`, `chat-core operator grant|revoke <username>` or `chat-core token` (a service token).

use std::process::ExitCode;

use clap::Parser;

#[global_allocator]
static ALLOCATOR: chat_common::alloc::Allocator = chat_common::alloc::ALLOCATOR;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = chat_core::Cli::parse();
    chat_common::shutdown::exit_code("chat-core", chat_core::run(cli).await)
}
