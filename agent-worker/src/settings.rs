//! Command-line flags and environment variables of the agent-worker binary.

use std::net::SocketAddr;
use std::path::PathBuf;

use chat_common::telemetry::LogFormat;

/// Everything an agent-worker process is configured with; each flag also reads an environment variable.
#[derive(Clone, Debug, clap::Parser)]
#[command(
    name = "agent-worker",
    version,
    about = "Stateless agent runtime: serves agent.v1.AgentWorker over gRPC for the agents in its config"
)]
pub struct Settings {
    /// Address the gRPC server listens on; port 0 picks a free port.
    #[arg(long, env = "AGENT_WORKER_LISTEN", default_value = "127.0.0.1:50052")]
    pub listen: SocketAddr,

    /// TOML file declaring the agents to serve. Without it the built-in config is used
    /// (an `echo` agent and a banking-assistant demo behind the `bank` router).
    #[arg(long, env = "AGENTS_CONFIG", value_name = "PATH")]
    pub agents_config: Option<PathBuf>,

    /// Log output: `pretty` for people reading a terminal, `json` for log collectors.
    /// `RUST_LOG` sets the filter (default `info`).
    #[arg(
        long,
        env = "LOG_FORMAT",
        value_name = "pretty|json",
        default_value = "pretty"
    )]
    pub log_format: LogFormat,

    /// Most runs this worker executes at once; runs beyond it are refused with
    /// RESOURCE_EXHAUSTED so chat-core can send them to another worker.
    #[arg(
        long,
        env = "AGENT_WORKER_MAX_CONCURRENT_RUNS",
        value_name = "N",
        default_value_t = 256,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..)
    )]
    pub max_concurrent_runs: usize,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[test]
    fn flags_are_consistent() {
        Settings::command().debug_assert();
    }

    #[test]
    fn flags_override_defaults() {
        let settings = Settings::parse_from([
            "agent-worker",
            "--listen",
            "127.0.0.1:0",
            "--agents-config",
            "/etc/agents.toml",
            "--log-format",
            "json",
            "--max-concurrent-runs",
            "8",
        ]);
        assert_eq!(settings.listen, "127.0.0.1:0".parse().expect("valid address"));
        assert_eq!(settings.agents_config, Some(PathBuf::from("/etc/agents.toml")));
        assert_eq!(settings.log_format, LogFormat::Json);
        assert_eq!(settings.max_concurrent_runs, 8);
    }

    #[test]
    fn zero_concurrent_runs_is_rejected() {
        let result = Settings::try_parse_from(["agent-worker", "--max-concurrent-runs", "0"]);
        assert!(result.is_err());
    }
}
