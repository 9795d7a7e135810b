//! Gateway configuration: flags, each with an environment variable.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use chat_common::secret;
use chat_common::telemetry::LogFormat;
use secrecy::{ExposeSecret, SecretString};

use crate::idp::{ProviderConfig, parse_providers};
use crate::origin::AllowedOrigins;
use crate::ratelimit::{Policies, Policy, Tier};

/// API window when neither `--rate-limit-window-secs` nor `--rate-limit-window-ms` is given.
const DEFAULT_API_WINDOW: Duration = Duration::from_secs(15 * 60);

/// gateway: the stateless HTTP, WebSocket and SSE edge in front of chat-core.
#[derive(Clone, Debug, clap::Parser)]
#[command(name = "gateway", version, about, long_about = None)]
pub struct Settings {
    /// Address the HTTP server listens on (port 0 picks a free port).
    #[arg(long, env = "GATEWAY_LISTEN", default_value = "127.0.0.1:3006")]
    pub listen: SocketAddr,

    /// Address of the admin listener: `/healthz`, `/readyz` and `/metrics`.
    #[arg(long, env = "ADMIN_LISTEN", default_value = "127.0.0.1:9000")]
    pub admin_listen: SocketAddr,

    /// gRPC endpoint of chat-core, e.g. `http://127.0.0.1:50051`. A DNS name (such as a Kubernetes
    /// headless service) is resolved to every address it has, and new client streams are spread
    /// across all of them.
    #[arg(long, env = "CHAT_CORE_URL", default_value = "http://127.0.0.1:50051")]
    pub chat_core_url: String,

    /// PEM CA certificates of chat-core's TLS certificate; with it, chat-core is reached over TLS
    /// (an `https://` URL), and its certificate must name the URL's host (whichever address the
    /// name resolves to).
    #[arg(long, env = "CHAT_CORE_TLS_CA_FILE", value_name = "PATH")]
    pub chat_core_tls_ca: Option<std::path::PathBuf>,

    /// PEM client certificate the gateway presents to a chat-core that requires mutual TLS.
    #[arg(long, env = "CHAT_CORE_TLS_CERT_FILE", value_name = "PATH")]
    pub chat_core_tls_cert: Option<std::path::PathBuf>,

    /// PEM private key of `--chat-core-tls-cert`.
    #[arg(long, env = "CHAT_CORE_TLS_KEY_FILE", value_name = "PATH")]
    pub chat_core_tls_key: Option<std::path::PathBuf>,

    /// Seconds between DNS lookups of the chat-core name, so replicas join and leave the balance.
    #[arg(long, env = "CHAT_CORE_RESOLVE_SECS", default_value_t = 10)]
    pub chat_core_resolve_secs: u64,

    /// WebSockets share `ChatService.Multiplex` streams to chat-core: this many are kept open once
    /// the first socket comes (each opened through the balance, so sockets spread over replicas).
    #[arg(long, env = "CHAT_CORE_MUX_STREAMS", default_value_t = 4)]
    pub chat_core_mux_streams: usize,

    /// WebSockets one `Multiplex` stream carries before another opens.
    #[arg(long, env = "CHAT_CORE_MUX_SOCKETS_PER_STREAM", default_value_t = 512)]
    pub chat_core_mux_sockets_per_stream: usize,

    /// Shared secret that signs and verifies access and service tokens (HS256); must match chat-core's.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<SecretString>,

    /// File holding the token secret, instead of `JWT_SECRET`.
    #[arg(long, env = "JWT_SECRET_FILE", value_name = "PATH")]
    pub jwt_secret_file: Option<std::path::PathBuf>,

    /// Lifetime of the access tokens issued at login, in seconds.
    #[arg(long, env = "ACCESS_TOKEN_TTL_SECS", default_value_t = 900)]
    pub access_token_ttl_secs: u64,

    /// Lifetime of the refresh tokens issued at login, in seconds.
    #[arg(long, env = "REFRESH_TOKEN_TTL_SECS", default_value_t = 30 * 24 * 3600)]
    pub refresh_token_ttl_secs: u64,

    /// Absolute lifetime of a login's refresh tokens, in seconds: rotation never extends a
    /// family past this (then refresh answers 401 and the user logs in again).
    #[arg(long, env = "REFRESH_FAMILY_TTL_SECS", default_value_t = 90 * 24 * 3600)]
    pub refresh_family_ttl_secs: u64,

    /// External identity providers whose RS256/ES256 user tokens are accepted, as a JSON list:
    /// `[{"issuer", "audience", "jwks_url" or "public_key_pem", "algorithms": ["RS256", "ES256"]}]`.
    #[arg(long, env = "OIDC_PROVIDERS")]
    pub oidc_providers: Option<String>,

    /// Least seconds between two fetches of a provider's JWKS (a token naming an unknown `kid`
    /// triggers one).
    #[arg(long, env = "JWKS_MIN_REFRESH_SECS", default_value_t = 30)]
    pub jwks_min_refresh_secs: u64,

    /// Seconds an external identity's local user id is cached by the gateway.
    #[arg(long, env = "EXTERNAL_USER_CACHE_SECS", default_value_t = 60)]
    pub external_user_cache_secs: u64,

    /// Largest message content accepted, in bytes (larger sends get `too_large`).
    #[arg(long, env = "MAX_CONTENT_BYTES", default_value_t = chat_common::limits::DEFAULT_MAX_CONTENT_BYTES)]
    pub max_content_bytes: usize,

    /// Largest HTTP request body accepted, in bytes (larger bodies get 413 `too_large`).
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 64 * 1024)]
    pub max_body_bytes: usize,

    /// Largest WebSocket message and frame accepted from a client, in bytes.
    #[arg(long, env = "MAX_WS_FRAME_BYTES", default_value_t = 64 * 1024)]
    pub max_ws_frame_bytes: usize,

    /// Read buffer of each WebSocket connection, in bytes (kept small: every idle socket holds one,
    /// and clients' frames are small; a larger frame takes several reads and grows it while it is read).
    #[arg(long, env = "WS_READ_BUFFER_BYTES", default_value_t = 256)]
    pub ws_read_buffer_bytes: usize,

    /// Write buffer of each WebSocket connection, in bytes.
    #[arg(long, env = "WS_WRITE_BUFFER_BYTES", default_value_t = 4096)]
    pub ws_write_buffer_bytes: usize,

    /// Seconds a WebSocket stays open after its access token expired, for the client to send
    /// `{type: "auth", access_token}`; then it is closed with code 4001.
    #[arg(long, env = "WS_TOKEN_GRACE_SECS", default_value_t = 30)]
    pub ws_token_grace_secs: u64,

    /// Seconds a WebSocket may stay open before the gateway closes it with 1001 (going away) so
    /// the client reconnects, possibly to another gateway, and resumes; each socket gets a random
    /// age between 90% and 100% of this, so sockets opened together do not come back together.
    /// Rebalances long-lived sockets after gateways are added. 0 keeps sockets open indefinitely.
    #[arg(long, env = "WS_MAX_AGE_SECS", default_value_t = 0)]
    pub ws_max_age_secs: u64,

    /// PEM certificate chain: with `--tls-key`, the gateway serves HTTPS and WSS itself (rustls)
    /// and sends HSTS on every response.
    #[arg(long, env = "TLS_CERT_FILE")]
    pub tls_cert: Option<std::path::PathBuf>,

    /// PEM private key of `--tls-cert`.
    #[arg(long, env = "TLS_KEY_FILE")]
    pub tls_key: Option<std::path::PathBuf>,

    /// Seconds a WebSocket client may take to accept buffered frames before it is dropped
    /// as a slow consumer (it recovers by reconnecting and resuming with `after_seq`).
    #[arg(long, env = "WS_FLUSH_TIMEOUT_SECS", default_value_t = 30)]
    pub ws_flush_timeout_secs: u64,

    /// Seconds a plain HTTP request may take; SSE streams and WebSockets are not limited.
    #[arg(long, env = "REQUEST_TIMEOUT_SECS", default_value_t = 30)]
    pub request_timeout_secs: u64,

    /// API rate limit: requests per window per user (per client IP when anonymous).
    #[arg(long, env = "RATE_LIMIT_MAX_REQUESTS", default_value = "300")]
    pub rate_limit_max_requests: NonZeroU32,

    /// API rate limit window in seconds [default: 900].
    #[arg(long, env = "RATE_LIMIT_WINDOW_SECS")]
    pub rate_limit_window_secs: Option<u64>,

    /// API rate limit window in milliseconds (the replaced system's name);
    /// `--rate-limit-window-secs` wins when both are set.
    #[arg(long, env = "RATE_LIMIT_WINDOW_MS")]
    pub rate_limit_window_ms: Option<u64>,

    /// Auth rate limit: register, login and refresh requests per window per client IP and username.
    #[arg(long, env = "AUTH_RATE_LIMIT_MAX", default_value = "10")]
    pub auth_rate_limit_max: NonZeroU32,

    /// Auth rate limit window in seconds.
    #[arg(long, env = "AUTH_RATE_LIMIT_WINDOW_SECS", default_value_t = 900)]
    pub auth_rate_limit_window_secs: u64,

    /// Account rate limit: logins per window per username, from any address (against guessing
    /// one account's password from many addresses).
    #[arg(long, env = "ACCOUNT_RATE_LIMIT_MAX", default_value = "20")]
    pub account_rate_limit_max: NonZeroU32,

    /// Account rate limit window in seconds.
    #[arg(long, env = "ACCOUNT_RATE_LIMIT_WINDOW_SECS", default_value_t = 900)]
    pub account_rate_limit_window_secs: u64,

    /// Message rate limit: messages per window per user (REST posts and WebSocket `send` frames).
    #[arg(long, env = "MESSAGE_RATE_LIMIT", default_value = "60")]
    pub message_rate_limit: NonZeroU32,

    /// Message rate limit window in seconds.
    #[arg(long, env = "MESSAGE_RATE_LIMIT_WINDOW_SECS", default_value_t = 60)]
    pub message_rate_limit_window_secs: u64,

    /// Frame rate limit: WebSocket frames of any type per window per user (subscribe,
    /// unsubscribe, send, cancel, ping, auth); beyond it a frame gets a `rate_limited` error.
    #[arg(long, env = "FRAME_RATE_LIMIT", default_value = "120")]
    pub frame_rate_limit: NonZeroU32,

    /// Frame rate limit window in seconds.
    #[arg(long, env = "FRAME_RATE_LIMIT_WINDOW_SECS", default_value_t = 60)]
    pub frame_rate_limit_window_secs: u64,

    /// Long-lived connections (WebSockets, Socket.IO, SSE reply streams, gRPC-Web streams) one user may hold
    /// on this gateway at once; 0 for no cap. Beyond it: 429, `RESOURCE_EXHAUSTED`, or close 1013.
    #[arg(long, env = "MAX_CONNECTIONS_PER_USER", default_value_t = 32)]
    pub max_connections_per_user: usize,

    /// Long-lived connections one client address (an IPv6 client by its /64) may hold on this
    /// gateway at once; 0 for no cap.
    #[arg(long, env = "MAX_CONNECTIONS_PER_IP", default_value_t = 256)]
    pub max_connections_per_ip: usize,

    /// Seconds a client has to send a request's whole header (HTTP/1), also the longest a
    /// kept-alive connection waits for its next request; past it the connection is closed.
    #[arg(long, env = "HEADER_READ_TIMEOUT_SECS", default_value_t = 10)]
    pub header_read_timeout_secs: u64,

    /// Seconds a connection may stay open with no request in flight (HTTP/1 keep-alive and
    /// HTTP/2); upgraded WebSockets are not affected.
    #[arg(long, env = "IDLE_TIMEOUT_SECS", default_value_t = 60)]
    pub idle_timeout_secs: u64,

    /// Redis holding the rate limits, so they hold across gateway replicas
    /// (e.g. `redis://127.0.0.1:6379`); without it each gateway counts in memory.
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<SecretString>,

    /// File holding the Redis URL, instead of `REDIS_URL` (for URLs with a password).
    #[arg(long, env = "REDIS_URL_FILE", value_name = "PATH")]
    pub redis_url_file: Option<std::path::PathBuf>,

    /// Tiers that refuse requests (503 with `Retry-After`) while the rate limit store (Redis)
    /// fails, comma separated from `api`, `auth`, `account`, `messages`, `frames`, or `none`; the others
    /// let requests through uncounted.
    #[arg(
        long,
        env = "RATE_LIMIT_FAIL_CLOSED",
        value_delimiter = ',',
        default_value = "auth,account",
        value_parser = parse_fail_closed
    )]
    pub rate_limit_fail_closed: Vec<FailClosed>,

    /// Prefix of the rate limit keys in Redis.
    #[arg(long, env = "RATE_LIMIT_REDIS_PREFIX", default_value = "gateway:ratelimit")]
    pub rate_limit_redis_prefix: String,

    /// Trust the one proxy in front: take the client IP from the last `X-Forwarded-For` entry,
    /// and send HSTS when `X-Forwarded-Proto` says the client used https.
    #[arg(long, env = "TRUST_FORWARDED_FOR")]
    pub trust_forwarded_for: bool,

    /// Browser origins allowed to call the API besides the gateway's own, comma separated
    /// (e.g. `https://app.example.com`); none means same-origin only.
    #[arg(long, env = "ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,

    /// Log format: `auto` (JSON unless writing to a terminal), `pretty` or `json`. `RUST_LOG` sets levels.
    #[arg(long, env = "LOG_FORMAT", default_value = "auto")]
    pub log_format: LogFormat,

    /// Seconds a stopping gateway (SIGTERM) has to finish requests and close its sockets.
    #[arg(long, env = "SHUTDOWN_TIMEOUT_SECS", default_value_t = 25)]
    pub shutdown_timeout_secs: u64,
}

/// An entry of `RATE_LIMIT_FAIL_CLOSED`: a tier, or `none`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FailClosed(pub Option<Tier>);

fn parse_fail_closed(value: &str) -> Result<FailClosed, String> {
    match value.trim() {
        "none" | "" => Ok(FailClosed(None)),
        name => Tier::parse(name)
            .map(|tier| FailClosed(Some(tier)))
            .ok_or_else(|| format!("`{name}` is not api, auth, account, messages, frames or none")),
    }
}

impl Default for Settings {
    /// The flags' defaults, without reading the environment.
    fn default() -> Self {
        chat_common::config::defaults()
    }
}

impl Settings {
    pub fn access_token_ttl(&self) -> Duration {
        Duration::from_secs(self.access_token_ttl_secs)
    }

    pub fn refresh_token_ttl(&self) -> Duration {
        Duration::from_secs(self.refresh_token_ttl_secs)
    }

    /// The configured identity providers (none without `--oidc-providers`).
    pub fn identity_providers(&self) -> Result<Vec<ProviderConfig>, String> {
        match self.oidc_providers.as_deref().map(str::trim) {
            None | Some("") => Ok(Vec::new()),
            Some(json) => parse_providers(json),
        }
    }

    pub fn ws_token_grace(&self) -> Duration {
        Duration::from_secs(self.ws_token_grace_secs)
    }

    /// How long a WebSocket may stay open, if limited.
    pub fn ws_max_age(&self) -> Option<Duration> {
        (self.ws_max_age_secs > 0).then(|| Duration::from_secs(self.ws_max_age_secs))
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }

    /// The API window: seconds, else the replaced system's milliseconds, else 15 minutes.
    pub fn api_rate_limit_window(&self) -> Duration {
        match (self.rate_limit_window_secs, self.rate_limit_window_ms) {
            (Some(secs), _) => Duration::from_secs(secs),
            (None, Some(ms)) => Duration::from_millis(ms),
            (None, None) => DEFAULT_API_WINDOW,
        }
    }

    /// The tiers that refuse requests while the rate limit store fails.
    pub fn fail_closed_tiers(&self) -> Vec<Tier> {
        self.rate_limit_fail_closed.iter().filter_map(|f| f.0).collect()
    }

    pub fn rate_limit_policies(&self) -> Policies {
        Policies {
            api: Policy {
                limit: self.rate_limit_max_requests,
                window: self.api_rate_limit_window(),
            },
            auth: Policy {
                limit: self.auth_rate_limit_max,
                window: Duration::from_secs(self.auth_rate_limit_window_secs),
            },
            account: Policy {
                limit: self.account_rate_limit_max,
                window: Duration::from_secs(self.account_rate_limit_window_secs),
            },
            messages: Policy {
                limit: self.message_rate_limit,
                window: Duration::from_secs(self.message_rate_limit_window_secs),
            },
            frames: Policy {
                limit: self.frame_rate_limit,
                window: Duration::from_secs(self.frame_rate_limit_window_secs),
            },
        }
    }

    /// Reads the secrets given as files (`JWT_SECRET_FILE`, `REDIS_URL_FILE`) into their settings.
    pub fn load_secret_files(&mut self) -> Result<(), String> {
        let file = self.jwt_secret_file.take();
        self.jwt_secret = secret::resolve("JWT_SECRET", self.jwt_secret.take(), file.as_deref())?;
        let file = self.redis_url_file.take();
        self.redis_url = secret::resolve("REDIS_URL", self.redis_url.take(), file.as_deref())?;
        Ok(())
    }

    /// The token secret (empty until given; [`Settings::validate`] refuses that).
    pub fn jwt_secret(&self) -> &str {
        self.jwt_secret.as_ref().map_or("", ExposeSecret::expose_secret)
    }

    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.shutdown_timeout_secs)
    }

    /// How the gateway reaches chat-core over TLS, when configured.
    pub fn chat_core_tls(&self) -> Result<Option<chat_common::tls::ClientTlsFiles>, String> {
        chat_common::tls::ClientTlsFiles::from_settings(
            "CHAT_CORE",
            self.chat_core_tls_ca.as_deref(),
            self.chat_core_tls_cert.as_deref(),
            self.chat_core_tls_key.as_deref(),
        )
    }

    /// Checks the values clap cannot: returns one line naming the bad option.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(tls) = self.chat_core_tls()? {
            tls.config(&self.chat_core_url)?;
            if !self.chat_core_url.starts_with("https://") {
                return Err("CHAT_CORE_TLS_CA_FILE is set: CHAT_CORE_URL must be an https:// URL".into());
            }
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err("--tls-cert (TLS_CERT_FILE) and --tls-key (TLS_KEY_FILE) go together".into());
        }
        chat_common::token::check_secret(self.jwt_secret().as_bytes())?;
        if self.chat_core_resolve_secs == 0 {
            return Err("--chat-core-resolve-secs (CHAT_CORE_RESOLVE_SECS) must be positive".into());
        }
        if self.refresh_family_ttl_secs == 0 {
            return Err("REFRESH_FAMILY_TTL_SECS must be positive".into());
        }
        if self.access_token_ttl_secs == 0 || self.refresh_token_ttl_secs == 0 {
            return Err("token lifetimes must be at least one second".into());
        }
        if self.max_content_bytes == 0 {
            return Err("--max-content-bytes must be positive".into());
        }
        if self.max_body_bytes < self.max_content_bytes {
            return Err("--max-body-bytes must be at least --max-content-bytes".into());
        }
        if self.max_ws_frame_bytes < self.max_content_bytes {
            return Err("--max-ws-frame-bytes must be at least --max-content-bytes".into());
        }
        if self.chat_core_mux_streams == 0 {
            return Err("--chat-core-mux-streams (CHAT_CORE_MUX_STREAMS) must be positive".into());
        }
        if self.chat_core_mux_sockets_per_stream == 0 {
            return Err(
                "--chat-core-mux-sockets-per-stream (CHAT_CORE_MUX_SOCKETS_PER_STREAM) must be positive"
                    .into(),
            );
        }
        if self.ws_read_buffer_bytes == 0 || self.ws_write_buffer_bytes == 0 {
            return Err("WebSocket buffer sizes must be positive".into());
        }
        if self.ws_flush_timeout_secs == 0 {
            return Err("--ws-flush-timeout-secs (WS_FLUSH_TIMEOUT_SECS) must be positive".into());
        }
        if self.request_timeout_secs == 0 {
            return Err("--request-timeout-secs must be positive".into());
        }
        if self.api_rate_limit_window().is_zero()
            || self.auth_rate_limit_window_secs == 0
            || self.account_rate_limit_window_secs == 0
            || self.message_rate_limit_window_secs == 0
            || self.frame_rate_limit_window_secs == 0
        {
            return Err("rate limit windows must be positive".into());
        }
        if self.header_read_timeout_secs == 0 {
            return Err("HEADER_READ_TIMEOUT_SECS must be positive".into());
        }
        if self.idle_timeout_secs == 0 {
            return Err("IDLE_TIMEOUT_SECS must be positive".into());
        }
        AllowedOrigins::parse(&self.allowed_origins)?;
        self.identity_providers()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// A secret of the shortest accepted length.
    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn test_style_arguments_parse_with_defaults() {
        let settings = Settings::parse_from([
            "gateway",
            "--listen",
            "127.0.0.1:0",
            "--chat-core-url",
            "http://127.0.0.1:1",
            "--jwt-secret",
            SECRET,
        ]);
        assert_eq!(settings.jwt_secret(), SECRET);
        assert_eq!(settings.max_content_bytes, 16384);
        assert_eq!(settings.ws_read_buffer_bytes, 256);
        assert!(settings.validate().is_ok());
    }

    #[test]
    fn api_window_prefers_seconds_then_the_legacy_milliseconds() {
        let base = ["gateway", "--jwt-secret", SECRET];
        let settings = Settings::parse_from(base);
        assert_eq!(settings.api_rate_limit_window(), Duration::from_secs(900));
        assert_eq!(settings.rate_limit_policies().api.limit.get(), 300);
        assert_eq!(settings.rate_limit_policies().auth.limit.get(), 10);
        assert_eq!(settings.rate_limit_policies().messages.limit.get(), 60);
        assert_eq!(settings.rate_limit_policies().account.limit.get(), 20);
        assert_eq!(settings.fail_closed_tiers(), [Tier::Auth, Tier::Account]);
        let open = Settings::parse_from([&base[..], &["--rate-limit-fail-closed", "none"]].concat());
        assert!(open.fail_closed_tiers().is_empty());
        assert!(
            Settings::try_parse_from([&base[..], &["--rate-limit-fail-closed", "nope"]].concat()).is_err()
        );
        let legacy = Settings::parse_from([&base[..], &["--rate-limit-window-ms", "1500"]].concat());
        assert_eq!(legacy.api_rate_limit_window(), Duration::from_millis(1500));
        let both = Settings::parse_from(
            [
                &base[..],
                &["--rate-limit-window-ms", "1500", "--rate-limit-window-secs", "7"],
            ]
            .concat(),
        );
        assert_eq!(both.api_rate_limit_window(), Duration::from_secs(7));
        let zero = Settings::parse_from([&base[..], &["--rate-limit-window-ms", "0"]].concat());
        assert!(zero.validate().is_err());
    }

    #[test]
    fn identity_providers_are_checked_at_start_up() {
        let with = |providers: &str| {
            Settings::parse_from(["gateway", "--jwt-secret", SECRET, "--oidc-providers", providers])
        };
        let good = with(r#"[{"issuer":"https://idp","audience":"chat","jwks_url":"http://idp/jwks"}]"#);
        assert!(good.validate().is_ok());
        assert_eq!(good.identity_providers().map(|p| p.len()), Ok(1));
        let hmac = with(r#"[{"issuer":"i","audience":"a","jwks_url":"http://x","algorithms":["HS256"]}]"#);
        assert!(hmac.validate().is_err());
        assert!(with("{not json").validate().is_err());
    }

    #[test]
    fn a_short_secret_is_refused_naming_the_setting() {
        let short = Settings::parse_from(["gateway", "--jwt-secret", "s"]);
        let error = short.validate().expect_err("one byte is too short");
        assert!(
            error.starts_with("JWT_SECRET must be at least 32 bytes"),
            "{error}"
        );
    }

    #[test]
    fn debug_output_hides_the_secret() {
        let settings = Settings::parse_from(["gateway", "--jwt-secret", "hunter2-secret"]);
        assert!(!format!("{settings:?}").contains("hunter2-secret"));
    }
}
