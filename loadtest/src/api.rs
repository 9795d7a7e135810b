//! The gateway's REST API as far as a run needs it: fresh users, their tokens and sessions.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use futures::{StreamExt, TryStreamExt};
use reqwest::{StatusCode, Url};
use serde::Deserialize;
use serde_json::{Value, json};

/// Attempts at one REST call that is refused with 429 or 503 and a `Retry-After`.
const ATTEMPTS: u32 = 20;
/// Users registered at once (password hashing is bounded on chat-core's side).
const REGISTER_CONCURRENCY: usize = 4;

/// A session to chat in, with the access token of its owner.
#[derive(Clone, Debug)]
pub struct SessionRef {
    pub token: Arc<str>,
    pub session_id: String,
}

/// One gateway's REST API.
#[derive(Clone, Debug)]
pub struct Rest {
    http: reqwest::Client,
    base: Url,
    password: String,
}

#[derive(Deserialize)]
struct Login {
    access_token: String,
}

#[derive(Deserialize)]
struct Session {
    id: String,
}

impl Rest {
    pub fn new(base: Url, password: String, timeout: Duration) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .context("failed to build the HTTP client")?;
        Ok(Self { http, base, password })
    }

    fn url(&self, path: &str) -> anyhow::Result<Url> {
        self.base
            .join(path)
            .with_context(|| format!("bad gateway URL {}", self.base))
    }

    /// POSTs `body`, waiting out 429 and 503 answers as their `Retry-After` says.
    async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> anyhow::Result<Value> {
        let url = self.url(path)?;
        for attempt in 1..=ATTEMPTS {
            let mut request = self.http.post(url.clone()).json(body);
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let response = request
                .send()
                .await
                .with_context(|| format!("POST {url} failed"))?;
            let status = response.status();
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            let text = response.text().await.unwrap_or_default();
            if status.is_success() {
                return if text.is_empty() {
                    Ok(Value::Null)
                } else {
                    serde_json::from_str(&text).with_context(|| format!("POST {url}: answer is not JSON"))
                };
            }
            let retryable = matches!(
                status,
                StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
            );
            if retryable && attempt < ATTEMPTS {
                let wait = retry_after.map_or(Duration::from_millis(200), Duration::from_secs);
                if wait > Duration::from_secs(5) {
                    bail!(
                        "POST {url}: {status} asking to wait {}s; raise the gateway's limits for benchmarks (see docs/benchmarks.md): {text}",
                        wait.as_secs()
                    );
                }
                tokio::time::sleep(wait.max(Duration::from_millis(50))).await;
                continue;
            }
            bail!("POST {url}: {status} {text}");
        }
        bail!("POST {url}: still refused after {ATTEMPTS} attempts")
    }

    /// Registers `username` and logs in: the access token.
    pub async fn user(&self, username: &str) -> anyhow::Result<Arc<str>> {
        let credentials = json!({"username": username, "password": self.password});
        self.post("api/v1/auth/register", None, &credentials)
            .await
            .with_context(|| format!("failed to register {username}"))?;
        let login: Login = serde_json::from_value(
            self.post("api/v1/auth/login", None, &credentials)
                .await
                .with_context(|| format!("failed to log in as {username}"))?,
        )
        .context("login answer without access_token")?;
        Ok(login.access_token.into())
    }

    /// Creates a session with `agent` owned by `token`'s user.
    pub async fn session(&self, token: &str, agent: &str) -> anyhow::Result<String> {
        let session: Session = serde_json::from_value(
            self.post("api/v1/sessions", Some(token), &json!({"agent": agent}))
                .await
                .context("failed to create a session")?,
        )
        .context("session answer without id")?;
        Ok(session.id)
    }

    /// One REST turn: posts `content` and waits for the JSON answer with the stored reply;
    /// the error kind otherwise.
    pub async fn turn(&self, session: &SessionRef, content: &str) -> Result<(), String> {
        let url = self
            .url(&format!("api/v1/sessions/{}/messages", session.session_id))
            .map_err(|_| "bad_url".to_owned())?;
        let response = self
            .http
            .post(url)
            .bearer_auth(&session.token)
            .json(&json!({"content": content}))
            .send()
            .await
            .map_err(|err| {
                if err.is_timeout() {
                    "timeout:reply".to_owned()
                } else {
                    "http_failed".to_owned()
                }
            })?;
        let status = response.status();
        let body: Value = response.json().await.map_err(|_| "bad_answer".to_owned())?;
        if !status.is_success() {
            let code = body["error"]["code"].as_str().unwrap_or("unknown");
            return Err(format!("http_{}:{code}", status.as_u16()));
        }
        match body["run"]["status"].as_str() {
            Some("completed") if body["reply"].is_object() => Ok(()),
            Some(status) => Err(format!("run_{status}")),
            None => Err("bad_answer".into()),
        }
    }

    /// `sessions` fresh sessions with `agent`, owned by fresh users holding at most
    /// `per_user` sessions each (chat-core caps sessions per user).
    pub async fn population(
        &self,
        prefix: &str,
        sessions: usize,
        per_user: usize,
        agent: &str,
    ) -> anyhow::Result<Vec<SessionRef>> {
        let per_user = per_user.max(1);
        let users = sessions.div_ceil(per_user).max(1);
        let run = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default();
        let tokens: Vec<Arc<str>> = futures::stream::iter(0..users)
            .map(|i| {
                let username = format!("{prefix}-{run}-{}-{i}", std::process::id());
                async move { self.user(&username).await }
            })
            .buffered(REGISTER_CONCURRENCY)
            .try_collect()
            .await?;
        futures::stream::iter(0..sessions)
            .map(|i| {
                let token = tokens[i / per_user].clone();
                async move {
                    let session_id = self.session(&token, agent).await?;
                    anyhow::Ok(SessionRef { token, session_id })
                }
            })
            .buffered(16)
            .try_collect()
            .await
    }
}
