//! Failures of the external services agents call (LLM endpoints, webhooks), as run errors.

use std::time::Duration;

use chat_proto::agent::v1::RunEvent;
use secrecy::SecretString;

use super::events;
use crate::config::ConfigError;

/// Longest upstream error text quoted in an error event.
const MAX_QUOTED_CHARS: usize = 300;

/// Why a call to an external service failed; each maps to an `ErrorEvent` code.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// `upstream_timeout`, retryable.
    #[error("{service} did not answer within {}s", .after.as_secs_f32())]
    Timeout { service: String, after: Duration },
    /// `upstream_unavailable` (5xx), `upstream_rate_limited` (429) or `upstream_rejected` (other 4xx).
    #[error("{service} answered HTTP {status}: {message}")]
    Status {
        service: String,
        status: u16,
        message: String,
    },
    /// `upstream_unavailable`, retryable: the request did not get through.
    #[error("{service} is unreachable: {message}")]
    Unreachable { service: String, message: String },
    /// `upstream_truncated`, retryable: the response ended before it was complete.
    #[error("{service} closed the stream before it was complete: {message}")]
    Truncated { service: String, message: String },
    /// `upstream_invalid`, not retryable: the response could not be understood.
    #[error("{service} sent an invalid response: {message}")]
    Invalid { service: String, message: String },
    /// `circuit_open`, retryable: recent calls failed, so this one was not attempted.
    #[error("{service} is failing; calls are paused for {}s", .retry_in.as_secs().max(1))]
    CircuitOpen { service: String, retry_in: Duration },
}

impl UpstreamError {
    /// The `ErrorEvent.code`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Timeout { .. } => "upstream_timeout",
            Self::Status { status: 429, .. } => "upstream_rate_limited",
            Self::Status { status, .. } if *status >= 500 => "upstream_unavailable",
            Self::Status { .. } => "upstream_rejected",
            Self::Unreachable { .. } => "upstream_unavailable",
            Self::Truncated { .. } => "upstream_truncated",
            Self::Invalid { .. } => "upstream_invalid",
            Self::CircuitOpen { .. } => "circuit_open",
        }
    }

    /// Whether another attempt may succeed: timeouts, 5xx, 408, 429, truncation and network errors.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Status { status, .. } => *status >= 500 || matches!(status, 408 | 429),
            Self::Invalid { .. } => false,
            _ => true,
        }
    }

    /// The error event ending the run.
    pub fn into_event(self) -> RunEvent {
        events::error(self.code(), self.to_string(), self.is_retryable())
    }

    /// A failed request, from reqwest's error.
    pub fn from_reqwest(service: &str, err: &reqwest::Error) -> Self {
        let message = error_chain(err);
        let service = service.to_owned();
        if err.is_body() || err.is_decode() {
            Self::Truncated { service, message }
        } else {
            Self::Unreachable { service, message }
        }
    }
}

/// The API key of agent `agent` from the variable `var` (read with `env`), if it names one;
/// a named variable that is unset or blank refuses the agent.
pub fn read_api_key(
    agent: &str,
    var: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<SecretString>, ConfigError> {
    let Some(var) = var else {
        return Ok(None);
    };
    match env(var).filter(|key| !key.trim().is_empty()) {
        Some(key) => Ok(Some(SecretString::from(key))),
        None => Err(ConfigError::BadOption {
            agent: agent.to_owned(),
            message: format!("environment variable {var} (api_key_env) is not set"),
        }),
    }
}

/// Builds the HTTP client of agent `agent` from `builder`; a failure refuses the agent.
pub fn http_client(agent: &str, builder: reqwest::ClientBuilder) -> Result<reqwest::Client, ConfigError> {
    builder.build().map_err(|err| ConfigError::BadOption {
        agent: agent.to_owned(),
        message: format!("failed to build the HTTP client: {err}"),
    })
}

/// An error and its causes on one line.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

/// Upstream text fit for an error message: one line, bounded, without `secret`.
pub fn quote(text: &str, secret: Option<&str>) -> String {
    let mut text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if let Some(secret) = secret.filter(|s| !s.is_empty()) {
        text = text.replace(secret, "[redacted]");
    }
    if text.chars().count() > MAX_QUOTED_CHARS {
        text = text.chars().take(MAX_QUOTED_CHARS).collect::<String>() + "…";
    }
    text
}
