//! `chat`: the whole chat backend in one process, or any one of its services.
//!
//! With no subcommand, gateway, chat-core and one agent-worker run together
//! on the embedded default (a SQLite file under `./data` and the in-process
//! event bus), each calling the next one's gRPC handlers directly, with the
//! messages encoded as in production but no transport between them
//! (`chat_common::inproc`). The
//! subcommands run one service each, exactly as its own binary does, so one
//! container image serves every role.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use chat_allinone::cli::{AllInOne, Cli, Command};
use clap::Parser;
use secrecy::ExposeSecret;
use tokio_util::sync::CancellationToken;

#[global_allocator]
static ALLOCATOR: chat_common::alloc::Allocator = chat_common::alloc::ALLOCATOR;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        None => chat_common::shutdown::exit_code("chat", all_in_one(cli.all).await),
        Some(Command::Gateway(settings)) => {
            chat_common::shutdown::exit_code("gateway", gateway::app::run(settings).await)
        }
        Some(Command::ChatCore(cli)) => {
            chat_common::shutdown::exit_code("chat-core", chat_core::run(cli).await)
        }
        Some(Command::AgentWorker(settings)) => {
            chat_common::shutdown::exit_code("agent-worker", agent_worker::run(settings).await)
        }
        Some(Command::Healthcheck { url }) => match healthcheck(&url).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("unhealthy: {error:#}");
                ExitCode::FAILURE
            }
        },
    }
}

async fn all_in_one(cli: AllInOne) -> anyhow::Result<()> {
    let started = Instant::now();
    let _telemetry = chat_common::telemetry::init(
        "chat",
        cli.log_format,
        "info,sqlx=warn,sea_orm=warn,tower_http=warn",
    );
    chat_common::files::create_dir_owner_only(&cli.data_dir)
        .with_context(|| format!("failed to create {}", cli.data_dir.display()))?;
    let secret = chat_common::secret::resolve("JWT_SECRET", cli.jwt_secret, cli.jwt_secret_file.as_deref())
        .map_err(anyhow::Error::msg)?;
    let secret = match secret.filter(|s| !s.expose_secret().is_empty()) {
        Some(secret) => secret.expose_secret().to_owned(),
        None => load_or_create_secret(&cli.data_dir.join("jwt_secret"))?,
    };
    chat_common::token::check_secret(secret.as_bytes()).map_err(anyhow::Error::msg)?;
    let database_url =
        chat_common::secret::resolve("DATABASE_URL", cli.database_url, cli.database_url_file.as_deref())
            .map_err(anyhow::Error::msg)?
            .map(|url| url.expose_secret().to_owned())
            .unwrap_or_else(|| format!("sqlite://{}?mode=rwc", cli.data_dir.join("chat.db").display()));

    let shutdown_timeout_secs = cli.shutdown_timeout_secs;
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));

    // Each service reads its own variables from the environment, as its
    // binary does; the all-in-one then sets what ties them together.
    let mut worker_settings: agent_worker::Settings = from_env("agent-worker")?;
    worker_settings.listen = loopback;
    worker_settings.shutdown_timeout_secs = shutdown_timeout_secs;
    worker_settings.agents_config = cli.agents_config.clone();
    // The worker takes only chat-core's service tokens, signed with the same secret.
    worker_settings.jwt_secret = Some(secret.clone().into());
    worker_settings.jwt_secret_file = None;
    // An OpenAI key alone is enough to add the `assistant` llm agent.
    let base_url_unset = worker_settings.llm_base_url.as_deref().is_none_or(str::is_empty);
    let has_key = chat_common::secret::from_env(&worker_settings.llm_api_key_env).is_ok_and(|k| k.is_some());
    if base_url_unset && has_key {
        worker_settings.llm_base_url = Some("https://api.openai.com/v1".to_owned());
    }
    let worker = agent_worker::Application::build(worker_settings).await?;

    let mut core_settings: chat_core::Settings = from_env("chat-core")?;
    core_settings.listen = loopback;
    core_settings.database_url = Some(database_url.into());
    core_settings.database_url_file = None;
    core_settings.migrate = true;
    core_settings.jwt_secret = Some(secret.clone().into());
    core_settings.jwt_secret_file = None;
    core_settings.shutdown_timeout_secs = shutdown_timeout_secs;
    // chat-core calls the worker, and the gateway chat-core, directly.
    let core = chat_core::Application::build_with_worker(core_settings, worker.in_process()).await?;

    let mut gateway_settings: gateway::Settings = from_env("gateway")?;
    gateway_settings.listen = cli.listen;
    gateway_settings.jwt_secret = Some(secret.into());
    gateway_settings.jwt_secret_file = None;
    gateway_settings.shutdown_timeout_secs = shutdown_timeout_secs;
    let gateway = gateway::Application::build_with_core(gateway_settings, core.in_process()).await?;
    let address = gateway.local_addr();
    chat_common::alloc::spawn_trim().map_err(anyhow::Error::msg)?;
    let admin = chat_common::admin::Admin::bind(
        cli.admin_listen,
        vec![
            gateway.health().clone(),
            core.health().clone(),
            worker.health().clone(),
        ],
    )
    .await?;
    let admin_addr = admin.local_addr();
    let admin = admin.spawn();

    // The gateway drains first, then chat-core, then the worker.
    let stop_gateway = CancellationToken::new();
    let stop_core = CancellationToken::new();
    let stop_worker = CancellationToken::new();
    let gateway_task = tokio::spawn(gateway.run_until_stopped(stop_gateway.clone().cancelled_owned()));
    let core_task = tokio::spawn(core.run_until_stopped(stop_core.clone().cancelled_owned()));
    let worker_task = tokio::spawn(worker.run_until_stopped(stop_worker.clone().cancelled_owned()));

    tracing::info!(elapsed_ms = started.elapsed().as_millis() as u64, "ready");
    println!();
    println!("  chat is running: open http://{address} in a browser");
    println!("  admin: http://{admin_addr}/readyz and /metrics");
    println!("  data: {}   stop: Ctrl-C", cli.data_dir.display());
    println!();

    chat_common::shutdown::signal().await;
    stop_gateway.cancel();
    gateway_task.await??;
    stop_core.cancel();
    core_task.await??;
    stop_worker.cancel();
    worker_task.await??;
    admin.abort();
    Ok(())
}

/// A service's settings from the environment alone (no flags): what its
/// binary would run with.
fn from_env<T: clap::Parser>(name: &str) -> anyhow::Result<T> {
    T::try_parse_from([name]).map_err(|error| {
        let first = error.to_string();
        let line = first
            .lines()
            .next()
            .unwrap_or_default()
            .trim_start_matches("error: ");
        anyhow::anyhow!("{name}: {line}")
    })
}

/// GETs `url` (plain HTTP) and succeeds on a 2xx status.
async fn healthcheck(url: &str) -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let uri: http::Uri = url.parse().context("invalid url")?;
    let host = uri.host().context("url has no host")?;
    let port = uri.port_u16().unwrap_or(80);
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let probe = async {
        let mut stream = tokio::net::TcpStream::connect((host, port)).await?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut head = vec![0u8; 64];
        let read = stream.read(&mut head).await?;
        anyhow::Ok(String::from_utf8_lossy(&head[..read]).into_owned())
    };
    let head = tokio::time::timeout(Duration::from_secs(2), probe)
        .await
        .context("timed out")??;
    let status = head.split_whitespace().nth(1).unwrap_or_default();
    anyhow::ensure!(status.starts_with('2'), "status {status}");
    Ok(())
}

/// Reads the secret kept in `path`, or creates one there: 32 random bytes
/// as 64 hex characters, in a file that is owner-only from its creation.
fn load_or_create_secret(path: &Path) -> anyhow::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(secret) => {
            let secret = secret.trim().to_owned();
            anyhow::ensure!(
                !secret.is_empty(),
                "{} is empty; delete it to have a new secret generated",
                path.display()
            );
            return Ok(secret);
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(error).with_context(|| format!("failed to read {}", path.display())),
    }
    let bytes: [u8; 32] = rand::random();
    let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    chat_common::files::create_owner_only(path, secret.as_bytes())
        .with_context(|| format!("failed to create {}", path.display()))?;
    Ok(secret)
}
