//! chat-core configuration: flags, each with an environment variable.

use std::net::SocketAddr;

use chat_common::telemetry::LogFormat;

/// chat-core: owns sessions, messages and runs, and dispatches runs to agent-workers.
#[derive(Clone, clap::Parser)]
#[command(name = "chat-core", version, about, long_about = None)]
pub struct Settings {
    /// Address the gRPC server listens on (port 0 picks a free port).
    #[arg(long, env = "CHAT_CORE_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,

    /// Database URL: `postgres://user@host/db` or `sqlite://path/to/file.db?mode=rwc`.
    #[arg(long, env = "DATABASE_URL", default_value = "sqlite://data/chat.db?mode=rwc")]
    pub database_url: String,

    /// Largest number of pooled database connections.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 16)]
    pub database_max_connections: u32,

    /// Seconds to wait for a database connection before failing a request with `unavailable`.
    #[arg(long, env = "DATABASE_ACQUIRE_TIMEOUT_SECS", default_value_t = 3)]
    pub database_acquire_timeout_secs: u64,

    /// Redis URL for cross-replica event fan-out; the in-process bus when unset.
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<String>,

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

    /// Seconds between DNS lookups of agent-worker names (a headless service's pods).
    #[arg(long, env = "AGENT_WORKER_RESOLVE_SECS", default_value_t = 10)]
    pub agent_worker_resolve_secs: u64,

    /// Shared secret that signs and verifies access and service tokens (HS256).
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// Agent of new sessions that do not name one.
    #[arg(long, env = "DEFAULT_AGENT", default_value = "echo")]
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
    #[arg(long, env = "AGENT_CONCURRENCY", value_delimiter = ',')]
    pub agent_concurrency: Vec<String>,

    /// What a message does while its session has a run: enqueue, reject or interrupt.
    #[arg(long, env = "DEFAULT_CONCURRENCY", default_value = "enqueue")]
    pub default_concurrency: String,

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
    #[arg(long, env = "MAX_CONTENT_BYTES", default_value_t = 16 * 1024)]
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

    /// Log format: pretty or json.
    #[arg(long, env = "LOG_FORMAT", default_value = "pretty")]
    pub log_format: LogFormat,
}

impl Settings {
    /// Password rules and hashing costs.
    pub fn password_policy(&self) -> crate::api::PasswordPolicy {
        crate::api::PasswordPolicy {
            min_chars: self.password_min_length,
            max_chars: self.password_max_length,
            argon2_memory_kib: self.argon2_memory_kib,
            argon2_iterations: self.argon2_iterations,
            argon2_parallelism: self.argon2_parallelism,
        }
    }
}
