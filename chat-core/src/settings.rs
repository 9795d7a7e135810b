//! chat-core configuration: flags, each with an environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;

use chat_common::secret;
use chat_common::telemetry::LogFormat;
use secrecy::{ExposeSecret, SecretString};

use crate::service::Concurrency;

/// chat-core: owns sessions, messages and runs, and dispatches runs to agent-workers.
#[derive(Clone, clap::Parser)]
#[command(name = "chat-core", version, about, long_about = None)]
pub struct Settings {
    /// Address the gRPC server listens on (port 0 picks a free port).
    #[arg(long, env = "CHAT_CORE_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,

    /// Address of the admin listener: `/healthz`, `/readyz` and `/metrics`.
    #[arg(long, env = "ADMIN_LISTEN", default_value = "127.0.0.1:9001")]
    pub admin_listen: SocketAddr,

    /// Database URL: `postgres://user:password@host/db` or `sqlite://path/to/file.db?mode=rwc`
    /// [default: sqlite://data/chat.db?mode=rwc].
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<SecretString>,

    /// File holding the database URL, instead of `DATABASE_URL`.
    #[arg(long, env = "DATABASE_URL_FILE", value_name = "PATH")]
    pub database_url_file: Option<PathBuf>,

    /// Largest number of pooled database connections (Postgres; a SQLite
    /// database is served by one connection, and one more for its WAL checkpoints).
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 16)]
    pub database_max_connections: u32,

    /// Seconds to wait for a database connection before failing a request with `unavailable`.
    #[arg(long, env = "DATABASE_ACQUIRE_TIMEOUT_SECS", default_value_t = 3)]
    pub database_acquire_timeout_secs: u64,

    /// Redis URL for cross-replica event fan-out; the in-process bus when unset.
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<SecretString>,

    /// File holding the Redis URL, instead of `REDIS_URL`.
    #[arg(long, env = "REDIS_URL_FILE", value_name = "PATH")]
    pub redis_url_file: Option<PathBuf>,

    /// Publishes a session's subscriber may fall behind live delivery (each
    /// an event, or a run's events relayed together, up to 256); past it, the
    /// subscriber catches up from the database and the delta log instead.
    /// Every session with subscribers holds this many slots (~40 bytes each).
    #[arg(long, env = "SUBSCRIBER_BUFFER_BATCHES", default_value_t = DEFAULT_SUBSCRIBER_BUFFER)]
    pub subscriber_buffer_batches: usize,

    /// Run pending database migrations at start-up.
    #[arg(long, env = "CHAT_CORE_MIGRATE", default_value_t = false)]
    pub migrate: bool,

    /// Agent-worker gRPC endpoints, comma separated; runs are balanced across them.
    #[arg(
        long = "agent-worker-url",
        env = "AGENT_WORKER_URLS",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:50052"
    )]
    pub agent_worker_urls: Vec<String>,

    /// PEM CA certificates of the agent-workers' TLS certificates; with it, workers are reached
    /// over TLS (`https://` URLs), and each worker's certificate must name the host of the first
    /// URL (the service name, whichever address it resolves to).
    #[arg(long, env = "AGENT_WORKER_TLS_CA_FILE", value_name = "PATH")]
    pub agent_worker_tls_ca: Option<PathBuf>,

    /// PEM client certificate chat-core presents to agent-workers that require mutual TLS.
    #[arg(long, env = "AGENT_WORKER_TLS_CERT_FILE", value_name = "PATH")]
    pub agent_worker_tls_cert: Option<PathBuf>,

    /// PEM private key of `--agent-worker-tls-cert`.
    #[arg(long, env = "AGENT_WORKER_TLS_KEY_FILE", value_name = "PATH")]
    pub agent_worker_tls_key: Option<PathBuf>,

    /// Seconds between DNS lookups of agent-worker names (a headless service's pods).
    #[arg(long, env = "AGENT_WORKER_RESOLVE_SECS", default_value_t = 10)]
    pub agent_worker_resolve_secs: u64,

    /// Shared secret that signs and verifies access and service tokens (HS256).
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<SecretString>,

    /// File holding the token secret, instead of `JWT_SECRET`.
    #[arg(long, env = "JWT_SECRET_FILE", value_name = "PATH")]
    pub jwt_secret_file: Option<PathBuf>,

    /// Accept end users' own access tokens (not only service tokens); such
    /// callers get the per-user limits below. Off: users go through the gateway.
    #[arg(long, env = "ACCEPT_USER_TOKENS", default_value_t = false)]
    pub accept_user_tokens: bool,

    /// Serve gRPC server reflection, to callers with a service token only.
    #[arg(long, env = "GRPC_REFLECTION")]
    pub grpc_reflection: bool,

    #[command(flatten)]
    pub tls: chat_common::tls::ServerTlsSettings,

    /// Seconds a stream opened with a user's own token outlives the token.
    #[arg(long, env = "STREAM_TOKEN_GRACE_SECS", default_value_t = 30)]
    pub stream_token_grace_secs: u64,

    /// Streams (`Subscribe`, `SendMessage`, `Connect`) one user with their own
    /// token may hold on this replica; 0 for no cap. Beyond it: `RESOURCE_EXHAUSTED`.
    #[arg(long, env = "MAX_STREAMS_PER_USER", default_value_t = 16)]
    pub max_streams_per_user: usize,

    /// Requests per window one user calling with their own token may make (the gateway's API
    /// tier, same variable), per replica.
    #[arg(long, env = "RATE_LIMIT_MAX_REQUESTS", default_value = "300")]
    pub rate_limit_max_requests: std::num::NonZeroU32,

    /// Window of `RATE_LIMIT_MAX_REQUESTS`, in seconds.
    #[arg(long, env = "RATE_LIMIT_WINDOW_SECS", default_value_t = 900)]
    pub rate_limit_window_secs: u64,

    /// Messages per window one user calling with their own token may send (the gateway's
    /// message tier, same variable), per replica.
    #[arg(long, env = "MESSAGE_RATE_LIMIT", default_value = "60")]
    pub message_rate_limit: std::num::NonZeroU32,

    /// Window of `MESSAGE_RATE_LIMIT`, in seconds.
    #[arg(long, env = "MESSAGE_RATE_LIMIT_WINDOW_SECS", default_value_t = 60)]
    pub message_rate_limit_window_secs: u64,

    /// Pages of history (200 stored messages each) one user's subscribes may replay per minute,
    /// through any gateway; a subscribe beyond it is refused with `rate_limited`, further pages
    /// of a long replay wait. 0 for no limit.
    #[arg(long, env = "REPLAY_RATE_LIMIT", default_value_t = 60)]
    pub replay_rate_limit: u32,

    /// Agent of new sessions that do not name one: the built-in banking demo's router, which hands
    /// each message to the right specialist or to a person.
    #[arg(long, env = "DEFAULT_AGENT", default_value = "bank")]
    pub default_agent: String,

    /// Number of earlier messages sent to the agent with each run.
    #[arg(long, env = "HISTORY_WINDOW", default_value_t = 20)]
    pub history_window: u64,

    /// Seconds a run may take before it is failed.
    #[arg(long, env = "RUN_TIMEOUT_SECS", default_value_t = 120)]
    pub run_timeout_secs: u64,

    /// Milliseconds a replica holds a run without renewing its lease; a run
    /// whose replica died is taken over after this.
    #[arg(long, env = "RUN_LEASE_MS", default_value_t = 15_000)]
    pub run_lease_ms: u64,

    /// Attempts a run gets when its agent-worker fails or dies mid-stream.
    #[arg(long, env = "RUN_MAX_ATTEMPTS", default_value_t = 3)]
    pub run_max_attempts: u32,

    /// Milliseconds a run waits for an agent-worker to accept it before the
    /// attempt counts as failed.
    #[arg(long, env = "DISPATCH_TIMEOUT_MS", default_value_t = 5_000)]
    pub dispatch_timeout_ms: u64,

    /// Per-agent concurrency policies, e.g. `bank=interrupt,slow=reject`; a
    /// session's own policy wins, then its agent's, then the default.
    #[arg(long, env = "AGENT_CONCURRENCY", value_delimiter = ',', value_parser = parse_agent_policy)]
    pub agent_concurrency: Vec<AgentPolicy>,

    /// What a message does while its session has a run: enqueue, reject or interrupt.
    #[arg(long, env = "DEFAULT_CONCURRENCY", default_value = "enqueue", value_parser = parse_concurrency)]
    pub default_concurrency: Concurrency,

    /// Open (active or pending_human) sessions one user may have; 0 for no cap.
    #[arg(long, env = "MAX_SESSIONS_PER_USER", default_value_t = 100)]
    pub max_sessions_per_user: u64,

    /// Seconds without activity after which an active session expires; 0 never.
    #[arg(long = "session-ttl-secs", env = "SESSION_TTL", default_value_t = 7 * 24 * 3600)]
    pub session_ttl_secs: u64,

    /// Milliseconds between sweeps for idle sessions.
    #[arg(long, env = "SESSION_SWEEP_INTERVAL_MS", default_value_t = 60_000)]
    pub session_sweep_interval_ms: u64,

    /// Largest message content accepted, in bytes.
    #[arg(long, env = "MAX_CONTENT_BYTES", default_value_t = chat_common::limits::DEFAULT_MAX_CONTENT_BYTES)]
    pub max_content_bytes: usize,

    /// Milliseconds between database health probes (drives gRPC health and readiness).
    #[arg(long, env = "HEALTH_INTERVAL_MS", default_value_t = 1000)]
    pub health_interval_ms: u64,

    /// Fewest characters a new password may have.
    #[arg(long, env = "PASSWORD_MIN_LENGTH", default_value_t = 8)]
    pub password_min_length: usize,

    /// Most characters a new password may have.
    #[arg(long, env = "PASSWORD_MAX_LENGTH", default_value_t = 256)]
    pub password_max_length: usize,

    /// Memory cost of argon2id password hashes, in KiB.
    #[arg(long, env = "ARGON2_MEMORY_KIB", default_value_t = 19_456)]
    pub argon2_memory_kib: u32,

    /// Iterations (time cost) of argon2id password hashes.
    #[arg(long, env = "ARGON2_ITERATIONS", default_value_t = 2)]
    pub argon2_iterations: u32,

    /// Lanes (parallelism) of argon2id password hashes.
    #[arg(long, env = "ARGON2_PARALLELISM", default_value_t = 1)]
    pub argon2_parallelism: u32,

    /// Password hashes that may run at once (each holds `ARGON2_MEMORY_KIB`)
    /// [default: the number of CPUs].
    #[arg(long, env = "PASSWORD_HASH_CONCURRENCY")]
    pub password_hash_concurrency: Option<usize>,

    /// Milliseconds a registration or login waits for a hashing slot before it is refused with
    /// `unavailable` (HTTP 503 with `Retry-After`).
    #[arg(long, env = "PASSWORD_HASH_QUEUE_MS", default_value_t = 1000)]
    pub password_hash_queue_ms: u64,

    /// Log format: `auto` (JSON unless writing to a terminal), `pretty` or `json`. `RUST_LOG` sets levels.
    #[arg(long, env = "LOG_FORMAT", default_value = "auto")]
    pub log_format: LogFormat,

    /// Seconds a stopping chat-core (SIGTERM) has to end its client streams and finish or
    /// release the runs it holds.
    #[arg(long, env = "SHUTDOWN_TIMEOUT_SECS", default_value_t = 25)]
    pub shutdown_timeout_secs: u64,
}

/// An agent's own concurrency policy (`agent=policy` in `AGENT_CONCURRENCY`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentPolicy {
    pub agent: String,
    pub policy: Concurrency,
}

fn parse_concurrency(value: &str) -> Result<Concurrency, String> {
    Concurrency::parse(value.trim()).ok_or_else(|| format!("`{value}` is not enqueue, reject or interrupt"))
}

fn parse_agent_policy(entry: &str) -> Result<AgentPolicy, String> {
    let (agent, policy) = entry
        .split_once('=')
        .ok_or_else(|| format!("`{entry}` is not agent=enqueue|reject|interrupt"))?;
    let agent = agent.trim();
    if agent.is_empty() {
        return Err(format!("`{entry}` names no agent"));
    }
    Ok(AgentPolicy {
        agent: agent.to_owned(),
        policy: parse_concurrency(policy)?,
    })
}

impl Default for Settings {
    /// The flags' defaults, without reading the environment.
    fn default() -> Self {
        chat_common::config::defaults()
    }
}

/// Default of `SUBSCRIBER_BUFFER_BATCHES`.
pub const DEFAULT_SUBSCRIBER_BUFFER: usize = 128;

/// Database used when neither `DATABASE_URL` nor `DATABASE_URL_FILE` is set.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://data/chat.db?mode=rwc";

impl Settings {
    /// Reads the secrets given as files (`*_FILE`) into their settings.
    pub fn load_secret_files(&mut self) -> Result<(), String> {
        let file = self.jwt_secret_file.take();
        self.jwt_secret = secret::resolve("JWT_SECRET", self.jwt_secret.take(), file.as_deref())?;
        let file = self.database_url_file.take();
        self.database_url = secret::resolve("DATABASE_URL", self.database_url.take(), file.as_deref())?;
        let file = self.redis_url_file.take();
        self.redis_url = secret::resolve("REDIS_URL", self.redis_url.take(), file.as_deref())?;
        Ok(())
    }

    /// The database URL, or the embedded default.
    pub fn database_url(&self) -> &str {
        self.database_url
            .as_ref()
            .map(ExposeSecret::expose_secret)
            .filter(|url| !url.is_empty())
            .unwrap_or(DEFAULT_DATABASE_URL)
    }

    /// The Redis URL, when one is set.
    pub fn redis_url(&self) -> Option<&str> {
        self.redis_url
            .as_ref()
            .map(ExposeSecret::expose_secret)
            .filter(|url| !url.is_empty())
    }

    /// Checks what clap cannot; the error is one line naming the setting.
    pub fn validate(&self) -> Result<(), String> {
        let secret = self.jwt_secret.as_ref().map_or("", ExposeSecret::expose_secret);
        chat_common::token::check_secret(secret.as_bytes())?;
        if self.agent_worker_urls.iter().all(|u| u.trim().is_empty()) {
            return Err("AGENT_WORKER_URLS (--agent-worker-url) names no agent-worker".into());
        }
        for url in &self.agent_worker_urls {
            chat_common::discovery::Target::parse(url).map_err(|e| format!("AGENT_WORKER_URLS: {e}"))?;
        }
        if let Some(tls) = self.agent_worker_tls()? {
            // Every worker's certificate must name the first URL's host.
            tls.config(self.agent_worker_urls.first().map_or("", String::as_str))?;
            if let Some(url) = self.agent_worker_urls.iter().find(|u| !u.starts_with("https://")) {
                return Err(format!(
                    "AGENT_WORKER_TLS_CA_FILE is set but AGENT_WORKER_URLS has `{url}`: use https:// URLs"
                ));
            }
        }
        self.tls.files()?;
        if self.agent_worker_resolve_secs == 0 {
            return Err("AGENT_WORKER_RESOLVE_SECS must be positive".into());
        }
        if self.rate_limit_window_secs == 0 || self.message_rate_limit_window_secs == 0 {
            return Err("RATE_LIMIT_WINDOW_SECS and MESSAGE_RATE_LIMIT_WINDOW_SECS must be positive".into());
        }
        if self.subscriber_buffer_batches == 0 {
            return Err("SUBSCRIBER_BUFFER_BATCHES must be positive".into());
        }
        if self.run_max_attempts == 0 {
            return Err("RUN_MAX_ATTEMPTS must be at least 1".into());
        }
        if self.run_lease_ms < 100 {
            return Err("RUN_LEASE_MS must be at least 100".into());
        }
        if self.database_max_connections == 0 {
            return Err("DATABASE_MAX_CONNECTIONS must be positive".into());
        }
        if self.health_interval_ms < 10 {
            return Err("HEALTH_INTERVAL_MS must be at least 10".into());
        }
        if self.session_sweep_interval_ms < 10 {
            return Err("SESSION_SWEEP_INTERVAL_MS must be at least 10".into());
        }
        if self.dispatch_timeout_ms == 0 {
            return Err("DISPATCH_TIMEOUT_MS must be positive".into());
        }
        if self.run_timeout_secs == 0 {
            return Err("RUN_TIMEOUT_SECS must be positive".into());
        }
        if self.max_content_bytes == 0 {
            return Err("MAX_CONTENT_BYTES must be positive".into());
        }
        if self.password_hash_concurrency == Some(0) {
            return Err("PASSWORD_HASH_CONCURRENCY must be at least 1".into());
        }
        if self.password_min_length > self.password_max_length {
            return Err("PASSWORD_MIN_LENGTH must not exceed PASSWORD_MAX_LENGTH".into());
        }
        Ok(())
    }

    /// How chat-core reaches agent-workers over TLS, when configured.
    pub fn agent_worker_tls(&self) -> Result<Option<chat_common::tls::ClientTlsFiles>, String> {
        chat_common::tls::ClientTlsFiles::from_settings(
            "AGENT_WORKER",
            self.agent_worker_tls_ca.as_deref(),
            self.agent_worker_tls_cert.as_deref(),
            self.agent_worker_tls_key.as_deref(),
        )
    }

    /// Password rules and hashing costs.
    pub fn password_policy(&self) -> crate::api::PasswordPolicy {
        crate::api::PasswordPolicy {
            min_chars: self.password_min_length,
            max_chars: self.password_max_length,
            argon2_memory_kib: self.argon2_memory_kib,
            argon2_iterations: self.argon2_iterations,
            argon2_parallelism: self.argon2_parallelism,
            max_concurrent: self.password_hash_concurrency(),
            queue_wait: std::time::Duration::from_millis(self.password_hash_queue_ms),
        }
    }

    /// Hashes that may run at once: the setting, or the number of CPUs.
    pub fn password_hash_concurrency(&self) -> usize {
        self.password_hash_concurrency
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get))
    }
}
