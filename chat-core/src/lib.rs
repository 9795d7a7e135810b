//! chat-core: the service that owns state.
//!
//! A send commits the user message and its run in one transaction, acks,
//! then the [`dispatch`] module runs the session's queue one run at a time on
//! an agent-worker, relaying deltas through the [`bus`] and committing the
//! reply. [`api`] holds the gRPC handlers, [`service`] the operations they
//! call, [`domain`] the types and rules, [`lifecycle`] every status change
//! and the event it publishes, [`store`] the database.

pub mod api;
pub mod bus;
pub mod dispatch;
pub mod domain;
pub mod lifecycle;
pub mod service;
pub mod settings;
pub mod store;

mod app;

pub use app::Application;
pub use settings::Settings;

/// chat-core's command line: serve (the default), apply migrations, or mint a service token.
#[derive(clap::Parser)]
#[command(name = "chat-core", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub settings: Settings,
}

#[derive(Clone, clap::Subcommand)]
pub enum Command {
    /// Serve gRPC (the default).
    Serve,
    /// Apply pending database migrations, then exit.
    Migrate,
    /// Grant or revoke the operator role (answering sessions handed to a person), then exit.
    Operator {
        #[arg(value_enum)]
        action: OperatorAction,
        /// The account's username.
        username: String,
    },
    /// Print a service token signed with the configured `JWT_SECRET`, for an internal caller
    /// (a support desk, `grpcurl`), then exit.
    Token(TokenArgs),
}

/// What `chat-core operator` does to an account.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum OperatorAction {
    Grant,
    Revoke,
}

/// What `chat-core token` mints.
#[derive(Clone, Debug, clap::Args)]
pub struct TokenArgs {
    /// Name of the service the token speaks for (its `sub`, logged with its calls).
    #[arg(long)]
    pub service: String,

    /// What the token may call, comma separated: `chat` (ChatService), `users` (UserService),
    /// `reflection`, `run` (agent-workers); without it, everything its audience serves.
    #[arg(long = "scope", value_delimiter = ',', value_enum)]
    pub scopes: Vec<chat_common::token::Scope>,

    /// Seconds the token is valid, at most 30 days.
    #[arg(long, default_value_t = 3600)]
    pub ttl_secs: u64,

    /// The service that accepts it.
    #[arg(long, value_enum, default_value = "chat-core")]
    pub audience: TokenAudience,
}

/// The services a minted token may be meant for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TokenAudience {
    ChatCore,
    AgentWorker,
}

/// Longest lifetime `chat-core token` signs.
const MAX_TOKEN_TTL_SECS: u64 = 30 * 24 * 3600;

/// Signs the service token `args` describes with the settings' secret; the
/// error is one line.
pub fn mint_token(settings: &Settings, args: &TokenArgs) -> Result<String, String> {
    use chat_common::token::{Audience, Role, TokenKeys};
    use secrecy::ExposeSecret;
    let secret = settings
        .jwt_secret
        .as_ref()
        .map_or("", ExposeSecret::expose_secret);
    chat_common::token::check_secret(secret.as_bytes())?;
    let service = args.service.trim();
    if service.is_empty()
        || service.len() > 64
        || !service
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err("--service must be 1 to 64 of A-Z a-z 0-9 - _ .".into());
    }
    if args.ttl_secs == 0 || args.ttl_secs > MAX_TOKEN_TTL_SECS {
        return Err(format!("--ttl-secs must be between 1 and {MAX_TOKEN_TTL_SECS}"));
    }
    let audience = match args.audience {
        TokenAudience::ChatCore => Audience::ChatCore,
        TokenAudience::AgentWorker => Audience::AgentWorker,
    };
    let scopes = (!args.scopes.is_empty()).then_some(args.scopes.as_slice());
    TokenKeys::new(secret.as_bytes())
        .sign_scoped(
            service,
            Role::Service,
            &[audience],
            scopes,
            std::time::Duration::from_secs(args.ttl_secs),
        )
        .map_err(|e| e.to_string())
}

/// Log levels when `RUST_LOG` is unset.
pub const LOG_FILTER: &str = "info,sqlx=warn,sea_orm=warn";

/// Runs chat-core from its command line: logging, then migrations or the
/// admin listener and the server until SIGTERM or Ctrl-C. What the
/// `chat-core` binary and `chat chat-core` do.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut settings = cli.settings;
    settings.load_secret_files().map_err(anyhow::Error::msg)?;
    if let Some(Command::Token(args)) = &cli.command {
        // Only the token on stdout, so `$(chat-core token …)` captures it.
        println!("{}", mint_token(&settings, args).map_err(anyhow::Error::msg)?);
        return Ok(());
    }
    let _telemetry = chat_common::telemetry::init("chat-core", settings.log_format, LOG_FILTER);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Migrate => migrate(&settings).await,
        Command::Operator { action, username } => {
            set_operator(settings.database_url(), action, &username).await
        }
        Command::Token(_) => Ok(()),
        Command::Serve => {
            settings.validate().map_err(anyhow::Error::msg)?;
            let admin_listen = settings.admin_listen;
            let app = Application::build(settings).await?;
            let health = app.health().clone();
            chat_common::admin::until_signal(admin_listen, health, |stop| app.run_until_stopped(stop)).await
        }
    }
}

/// Grants or revokes the operator flag of `username` in the database at
/// `database_url` (migrating it first).
pub async fn set_operator(database_url: &str, action: OperatorAction, username: &str) -> anyhow::Result<()> {
    use anyhow::Context;
    use migration::MigratorTrait;
    use store::AccountStore as _;
    let db = store::connect(database_url, 1, std::time::Duration::from_secs(10))
        .await
        .context("failed to connect to the database")?;
    migration::Migrator::up(&db, None)
        .await
        .context("failed to run migrations")?;
    let operator = matches!(action, OperatorAction::Grant);
    let found = store::SeaStore::new(db)
        .set_operator(username, operator)
        .await
        .context("failed to update the account")?;
    anyhow::ensure!(found, "no account named `{username}`");
    tracing::info!(username, operator, "operator role updated");
    Ok(())
}

/// Applies pending migrations to the configured database.
pub async fn migrate(settings: &Settings) -> anyhow::Result<()> {
    use anyhow::Context;
    use migration::MigratorTrait;
    let db = store::connect(settings.database_url(), 1, std::time::Duration::from_secs(10))
        .await
        .context("failed to connect to the database")?;
    migration::Migrator::up(&db, None)
        .await
        .context("failed to run migrations")?;
    tracing::info!("migrations applied");
    Ok(())
}
