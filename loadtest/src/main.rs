//! The `loadtest` binary: parses the command line and runs one mode.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = loadtest::Cli::parse();
    match loadtest::run(cli.mode).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("loadtest: {err:#}");
            ExitCode::FAILURE
        }
    }
}
