//! Options of a `webhook` agent: an external agent service called over HTTP.

use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;
use super::llm::check_url;

/// Options of a `webhook` agent, which posts each run to an external service.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSpec {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// The service's base URL (`seed`) or the URL posted to (`simple`).
    pub endpoint: String,
    #[serde(default)]
    pub mode: WebhookMode,
    /// Name of the environment variable holding a bearer token for the service, if it needs one.
    pub api_key_env: Option<String>,
    /// How many of the latest history messages are sent.
    #[serde(default = "default_history_window")]
    pub history_window: usize,
    /// Longest wait for one call, in seconds.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: f64,
    /// Extra attempts after a failed call (timeouts, network errors, 5xx, 429).
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Pause before the first retry, in seconds; it doubles for each next retry.
    #[serde(default = "default_retry_backoff_secs")]
    pub retry_backoff_secs: f64,
    /// Longest pause between retries, in seconds.
    #[serde(default = "default_retry_backoff_max_secs")]
    pub retry_backoff_max_secs: f64,
    /// Consecutive failed calls that open the circuit breaker.
    #[serde(default = "default_breaker_failures")]
    pub breaker_failures: u32,
    /// How long an open breaker fails calls without trying, in seconds, before one probe call.
    #[serde(default = "default_breaker_cooldown_secs")]
    pub breaker_cooldown_secs: f64,
}

/// The contract spoken with the service.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookMode {
    /// `POST {endpoint}` with `{session_id, run_id, history}`, answered by `{reply}`.
    #[default]
    Simple,
    /// The replaced system's contract: `POST {endpoint}/api/process` with
    /// `{message, conversationContext, previousResults, sessionInfo}`, answered by
    /// `{response}` (or `{message}` or `{content}`).
    Seed,
}

fn default_history_window() -> usize {
    10
}
fn default_timeout_secs() -> f64 {
    10.0
}
fn default_retries() -> u32 {
    2
}
fn default_retry_backoff_secs() -> f64 {
    0.2
}
fn default_retry_backoff_max_secs() -> f64 {
    5.0
}
fn default_breaker_failures() -> u32 {
    5
}
fn default_breaker_cooldown_secs() -> f64 {
    30.0
}

// === impl WebhookSpec ===

impl WebhookSpec {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let bad = |message: String| ConfigError::BadOption {
            agent: self.name.clone(),
            message,
        };
        check_url(&self.endpoint).map_err(|m| bad(format!("endpoint {m}")))?;
        if self.history_window == 0 {
            return Err(bad("history_window must be at least 1".to_owned()));
        }
        if self.breaker_failures == 0 {
            return Err(bad("breaker_failures must be at least 1".to_owned()));
        }
        if self.api_key_env.as_deref().is_some_and(|v| v.trim().is_empty()) {
            return Err(bad("api_key_env is empty".to_owned()));
        }
        for (field, secs) in [
            ("timeout_secs", self.timeout_secs),
            ("retry_backoff_secs", self.retry_backoff_secs),
            ("retry_backoff_max_secs", self.retry_backoff_max_secs),
            ("breaker_cooldown_secs", self.breaker_cooldown_secs),
        ] {
            if !(secs > 0.0 && secs <= 86_400.0) {
                return Err(bad(format!("{field} must be more than 0 and at most 86400")));
            }
        }
        Ok(())
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_secs_f64(self.timeout_secs)
    }
}
