//! The `webhook` agent: posts each run to an external agent service, with a timeout, retries with
//! exponential backoff, and a circuit breaker; the reply is streamed as word deltas.

mod breaker;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chat_proto::agent::v1::{RunEvent, RunRequest};
use futures::StreamExt;
use futures::stream::BoxStream;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use self::breaker::Breaker;
use super::events;
use super::upstream::{UpstreamError, error_chain, http_client, quote, read_api_key};
use crate::config::{ConfigError, WebhookMode, WebhookSpec};

/// Fields of a `seed` reply that hold its text, in the order they are looked for.
pub const SEED_REPLY_FIELDS: [&str; 3] = ["response", "message", "content"];

/// Calls an external agent service for each run.
#[derive(Clone, Debug)]
pub struct WebhookAgent {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    service: String,
    url: String,
    mode: WebhookMode,
    api_key: Option<SecretString>,
    history_window: usize,
    timeout: Duration,
    retries: u32,
    backoff: Duration,
    backoff_max: Duration,
    client: reqwest::Client,
    breaker: Breaker,
}

// === impl WebhookAgent ===

impl WebhookAgent {
    /// Builds the agent, reading its token (if any) with `env`.
    pub fn new(spec: WebhookSpec, env: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let api_key = read_api_key(&spec.name, spec.api_key_env.as_deref(), env)?;
        let client = http_client(&spec.name, reqwest::Client::builder())?;
        let url = match spec.mode {
            WebhookMode::Seed => format!("{}/api/process", spec.endpoint.trim_end_matches('/')),
            WebhookMode::Simple => spec.endpoint.clone(),
        };
        Ok(Self {
            inner: Arc::new(Inner {
                service: format!("webhook of `{}`", spec.name),
                url,
                mode: spec.mode,
                api_key,
                history_window: spec.history_window,
                timeout: spec.timeout(),
                retries: spec.retries,
                backoff: Duration::from_secs_f64(spec.retry_backoff_secs),
                backoff_max: Duration::from_secs_f64(spec.retry_backoff_max_secs),
                client,
                breaker: Breaker::new(
                    spec.breaker_failures,
                    Duration::from_secs_f64(spec.breaker_cooldown_secs),
                ),
            }),
        })
    }

    /// Calls the service, then streams its reply as word deltas and the final text.
    pub fn run(&self, request: &RunRequest) -> BoxStream<'static, RunEvent> {
        let inner = Arc::clone(&self.inner);
        let body = inner.body(request);
        futures::stream::once(async move { inner.call(&body).await })
            .flat_map(|outcome| match outcome {
                Ok(reply) => events::reply(reply).boxed(),
                Err(err) => futures::stream::iter([err.into_event()]).boxed(),
            })
            .boxed()
    }
}

// === impl Inner ===

impl Inner {
    /// The request body of the configured contract.
    fn body(&self, request: &RunRequest) -> Value {
        let start = request.history.len().saturating_sub(self.history_window);
        let recent = &request.history[start..];
        // The session's metadata as JSON (an object when the session has none).
        let metadata: Value = serde_json::from_str(&request.metadata_json).unwrap_or_else(|_| json!({}));
        match self.mode {
            WebhookMode::Simple => json!({
                "session_id": request.session_id,
                "run_id": request.run_id,
                "metadata": metadata,
                "history": recent.iter().map(|m| json!({
                    "seq": m.seq, "role": m.role, "agent": m.agent, "content": m.content,
                })).collect::<Vec<_>>(),
            }),
            WebhookMode::Seed => {
                let (message, context) = match recent.split_last() {
                    Some((last, earlier)) => (last.content.as_str(), earlier),
                    None => ("", recent),
                };
                json!({
                    "message": message,
                    "conversationContext": context.iter().map(|m| json!({
                        "role": m.role, "content": m.content,
                    })).collect::<Vec<_>>(),
                    "previousResults": [],
                    "sessionInfo": { "sessionId": request.session_id, "agent": request.agent, "metadata": metadata },
                })
            }
        }
    }

    /// Posts `body`, retrying failures worth retrying with growing pauses, through the breaker.
    async fn call(&self, body: &Value) -> Result<String, UpstreamError> {
        let mut pause = self.backoff;
        let mut attempt = 0;
        loop {
            let permit =
                self.breaker
                    .try_call(Instant::now())
                    .map_err(|retry_in| UpstreamError::CircuitOpen {
                        service: self.service.clone(),
                        retry_in,
                    })?;
            let outcome = self.post(body).await;
            // Only failures of the service's health count; a 4xx or a bad body is our problem.
            let healthy = outcome.as_ref().map_or_else(|err| !err.is_retryable(), |_| true);
            if permit.record(healthy, Instant::now()) {
                tracing::warn!(service = %self.service, "circuit breaker opened");
            }
            match outcome {
                Err(err) if err.is_retryable() && attempt < self.retries => {
                    attempt += 1;
                    tracing::warn!(service = %self.service, attempt, error = %err, "webhook call failed; retrying");
                    // Full jitter between half and all of the pause spreads out retrying workers.
                    tokio::time::sleep(pause.mul_f64(rand::random_range(0.5..=1.0))).await;
                    pause = (pause * 2).min(self.backoff_max);
                }
                outcome => return outcome,
            }
        }
    }

    /// One call: the reply text, or why there is none.
    async fn post(&self, body: &Value) -> Result<String, UpstreamError> {
        let mut request = self
            .client
            .post(&self.url)
            .headers(chat_common::trace::headers())
            .json(body)
            .timeout(self.timeout);
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key.expose_secret());
        }
        let failed = |err: reqwest::Error| {
            if err.is_timeout() {
                UpstreamError::Timeout {
                    service: self.service.clone(),
                    after: self.timeout,
                }
            } else {
                UpstreamError::from_reqwest(&self.service, &err)
            }
        };
        let response = request.send().await.map_err(failed)?;
        let status = response.status();
        let text = response.text().await.map_err(failed)?;
        let secret = self.api_key.as_ref().map(|key| key.expose_secret());
        if !status.is_success() {
            return Err(UpstreamError::Status {
                service: self.service.clone(),
                status: status.as_u16(),
                message: quote(&text, secret),
            });
        }
        let invalid = |message: String| UpstreamError::Invalid {
            service: self.service.clone(),
            message,
        };
        let json: Value = serde_json::from_str(&text)
            .map_err(|err| invalid(format!("body is not JSON: {}", error_chain(&err))))?;
        let fields: &[&str] = match self.mode {
            WebhookMode::Seed => &SEED_REPLY_FIELDS,
            WebhookMode::Simple => &["reply"],
        };
        let reply = fields
            .iter()
            .find_map(|field| json.get(field).and_then(Value::as_str))
            .filter(|reply| !reply.trim().is_empty())
            .ok_or_else(|| invalid(format!("no non-empty text in {}", fields.join(", "))))?;
        Ok(reply.to_owned())
    }
}
