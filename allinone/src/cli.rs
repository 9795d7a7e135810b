//! The `chat` command line: the all-in-one's settings and the subcommands
//! that run one service each. The binary is `src/main.rs`; the types live here
//! so tests can read them (the configuration reference in
//! docs/operations.md is generated from them).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use secrecy::SecretString;

/// Runs the whole chat backend in one process, or one of its services.
#[derive(Parser)]
#[command(name = "chat", version, about, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub all: AllInOne,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the gateway alone (the flags of the `gateway` binary).
    Gateway(gateway::Settings),
    /// Run chat-core alone, or apply migrations (the flags of the `chat-core` binary).
    #[command(name = "chat-core")]
    ChatCore(chat_core::Cli),
    /// Run an agent-worker alone (the flags of the `agent-worker` binary).
    #[command(name = "agent-worker")]
    AgentWorker(agent_worker::Settings),
    /// Exit 0 when URL answers with a 2xx status within two seconds (for container health checks).
    Healthcheck {
        /// URL to probe, plain HTTP.
        #[arg(default_value = "http://127.0.0.1:9000/healthz")]
        url: String,
    },
}

/// Settings of the all-in-one.
#[derive(clap::Args)]
pub struct AllInOne {
    /// Address the gateway (HTTP, WebSocket, chat page) listens on.
    #[arg(long, env = "GATEWAY_LISTEN", default_value = "127.0.0.1:3006")]
    pub listen: SocketAddr,

    /// Address of the admin listener serving all three services' `/healthz`, `/readyz` and `/metrics`.
    #[arg(long, env = "ADMIN_LISTEN", default_value = "127.0.0.1:9000")]
    pub admin_listen: SocketAddr,

    /// Folder for the SQLite database and the generated token secret.
    #[arg(long, env = "DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,

    /// Database URL; defaults to `<data-dir>/chat.db` (SQLite). Postgres works too.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<SecretString>,

    /// File holding the database URL, instead of `DATABASE_URL`.
    #[arg(long, env = "DATABASE_URL_FILE", value_name = "PATH")]
    pub database_url_file: Option<PathBuf>,

    /// Token signing secret; generated once and kept in `<data-dir>/jwt_secret` when unset.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<SecretString>,

    /// File holding the token secret, instead of `JWT_SECRET`.
    #[arg(long, env = "JWT_SECRET_FILE", value_name = "PATH")]
    pub jwt_secret_file: Option<PathBuf>,

    /// Agents configuration file (TOML); the built-in agents when unset.
    #[arg(long, env = "AGENTS_CONFIG")]
    pub agents_config: Option<PathBuf>,

    /// Log format: `auto` (JSON unless writing to a terminal), `pretty` or `json`.
    #[arg(long, env = "LOG_FORMAT", default_value = "auto")]
    pub log_format: chat_common::telemetry::LogFormat,

    /// Seconds the stopping services (SIGTERM) have to drain.
    #[arg(long, env = "SHUTDOWN_TIMEOUT_SECS", default_value_t = 25)]
    pub shutdown_timeout_secs: u64,
}
