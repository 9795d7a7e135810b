//! `chat`: gateway, chat-core and one agent-worker in one process, talking
//! over real loopback gRPC as they do in production, on the embedded default
//! (a SQLite file under `./data` and the in-process event bus).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use tokio_util::sync::CancellationToken;

/// Runs the whole chat backend in one process.
#[derive(Parser)]
#[command(name = "chat", version, about)]
struct Cli {
    /// Address the gateway (HTTP, WebSocket, chat page) listens on.
    #[arg(long, env = "GATEWAY_LISTEN", default_value = "127.0.0.1:3006")]
    listen: SocketAddr,

    /// Folder for the SQLite database and the generated token secret.
    #[arg(long, env = "DATA_DIR", default_value = "data")]
    data_dir: PathBuf,

    /// Database URL; defaults to `<data-dir>/chat.db` (SQLite). Postgres works too.
    #[arg(long, env = "DATABASE_URL")]
    database_url: Option<String>,

    /// Token signing secret; generated once and kept in `<data-dir>/jwt_secret` when unset.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,

    /// Agents configuration file (TOML); the built-in agents when unset.
    #[arg(long, env = "AGENTS_CONFIG")]
    agents_config: Option<PathBuf>,

    /// Log format: pretty or json.
    #[arg(long, env = "LOG_FORMAT", default_value = "pretty")]
    log_format: chat_common::telemetry::LogFormat,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let started = Instant::now();
    let cli = Cli::parse();
    chat_common::telemetry::init(cli.log_format, "info,sqlx=warn,sea_orm=warn,tower_http=warn");
    std::fs::create_dir_all(&cli.data_dir)
        .with_context(|| format!("failed to create {}", cli.data_dir.display()))?;
    let secret = match cli.jwt_secret.clone().filter(|s| !s.is_empty()) {
        Some(secret) => secret,
        None => load_or_create_secret(&cli.data_dir.join("jwt_secret"))?,
    };
    let database_url = cli
        .database_url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}?mode=rwc", cli.data_dir.join("chat.db").display()));

    let mut worker_args = vec!["agent-worker".to_owned(), "--listen".into(), "127.0.0.1:0".into()];
    if let Some(path) = &cli.agents_config {
        worker_args.extend(["--agents-config".into(), path.display().to_string()]);
    }
    // An OpenAI key alone is enough to add the `assistant` llm agent.
    let base_url_unset = std::env::var("LLM_BASE_URL").map_or(true, |v| v.is_empty());
    if base_url_unset && std::env::var("OPENAI_API_KEY").is_ok_and(|k| !k.is_empty()) {
        worker_args.extend(["--llm-base-url".into(), "https://api.openai.com/v1".into()]);
    }
    let worker = agent_worker::Application::build(agent_worker::Settings::parse_from(worker_args)).await?;
    let worker_url = format!("http://{}", worker.local_addr());

    let core = chat_core::Application::build(chat_core::Settings::parse_from([
        "chat-core",
        "--listen",
        "127.0.0.1:0",
        "--database-url",
        &database_url,
        "--migrate",
        "--agent-worker-url",
        &worker_url,
        "--jwt-secret",
        &secret,
    ]))
    .await?;
    let core_url = format!("http://{}", core.local_addr());

    let gateway = gateway::Application::build(gateway::Settings::parse_from([
        "gateway",
        "--listen",
        &cli.listen.to_string(),
        "--chat-core-url",
        &core_url,
        "--jwt-secret",
        &secret,
    ]))
    .await?;
    let address = gateway.local_addr();

    let stop = CancellationToken::new();
    let stopped = |token: &CancellationToken| {
        let token = token.clone();
        async move { token.cancelled().await }
    };
    let worker_task = tokio::spawn(worker.run_until_stopped(stopped(&stop)));
    let core_task = tokio::spawn(core.run_until_stopped(stopped(&stop)));
    let gateway_task = tokio::spawn(gateway.run_until_stopped(stopped(&stop)));

    tracing::info!(elapsed_ms = started.elapsed().as_millis() as u64, "ready");
    println!();
    println!("  chat is running: open http://{address} in a browser");
    println!("  data: {}   stop: Ctrl-C", cli.data_dir.display());
    println!();

    chat_common::shutdown::signal().await;
    stop.cancel();
    // The gateway drains first, then chat-core, then the worker.
    gateway_task.await??;
    core_task.await??;
    worker_task.await??;
    Ok(())
}

/// Reads the secret kept in `path`, or creates one there (owner-only).
fn load_or_create_secret(path: &Path) -> anyhow::Result<String> {
    if let Ok(secret) = std::fs::read_to_string(path) {
        let secret = secret.trim().to_owned();
        if !secret.is_empty() {
            return Ok(secret);
        }
    }
    let bytes: [u8; 32] = rand::random();
    let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(path, &secret).with_context(|| format!("failed to write {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(secret)
}
