//! Rate limits in three tiers (API, auth, messages), as in the system this
//! replaces, behind one [`RateLimitStore`] seam: in memory with governor for a
//! single gateway, or in Redis so the limits hold across replicas.
//!
//! [`middleware`] applies them to HTTP routes; the WebSocket loop checks the
//! messages tier for every `send` frame through [`RateLimits::check`].

mod memory;
pub mod middleware;
mod redis;

use std::fmt;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::response::{IntoResponse, Response};
use chat_common::ErrorCode;
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::error::ApiError;

pub use memory::MemoryStore;
pub use redis::RedisStore;

/// IETF `RateLimit-*` response headers (draft-ietf-httpapi-ratelimit-headers).
pub const RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
pub const RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
pub const RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

/// What a limit counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Tier {
    /// Every API request, per user (per client IP when anonymous).
    Api,
    /// Register, login and refresh, per client IP and username.
    Auth,
    /// Messages posted over REST or sent over the WebSocket, per user.
    Messages,
}

impl Tier {
    pub const ALL: [Tier; 3] = [Tier::Api, Tier::Auth, Tier::Messages];

    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Api => "api",
            Tier::Auth => "auth",
            Tier::Messages => "messages",
        }
    }
}

/// At most `limit` requests per `window`, replenished continuously (GCRA).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    pub limit: NonZeroU32,
    pub window: Duration,
}

impl Policy {
    /// The time one request's allowance takes to come back.
    pub fn interval(&self) -> Duration {
        (self.window / self.limit.get()).max(Duration::from_micros(1))
    }
}

/// The policy of each tier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policies {
    pub api: Policy,
    pub auth: Policy,
    pub messages: Policy,
}

impl Policies {
    pub fn get(&self, tier: Tier) -> Policy {
        match tier {
            Tier::Api => self.api,
            Tier::Auth => self.auth,
            Tier::Messages => self.messages,
        }
    }
}

/// The outcome of counting one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u32,
    /// Requests still allowed right now.
    pub remaining: u32,
    /// Time until the full allowance is back.
    pub reset: Duration,
    /// Time until the next request is allowed (zero when allowed).
    pub retry_after: Duration,
}

impl Decision {
    /// Sets the `RateLimit-*` headers (and `Retry-After` when denied).
    pub fn apply_headers(&self, headers: &mut HeaderMap) {
        headers.insert(RATELIMIT_LIMIT, HeaderValue::from(self.limit));
        headers.insert(RATELIMIT_REMAINING, HeaderValue::from(self.remaining));
        headers.insert(RATELIMIT_RESET, HeaderValue::from(ceil_secs(self.reset)));
        if !self.allowed {
            headers.insert(
                http::header::RETRY_AFTER,
                HeaderValue::from(ceil_secs(self.retry_after).max(1)),
            );
        }
    }

    /// Milliseconds to wait before retrying, at least one.
    pub fn retry_after_ms(&self) -> u64 {
        u64::try_from(self.retry_after.as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    /// The 429 answer to a denied request.
    pub fn into_rejection(self) -> Response {
        let secs = ceil_secs(self.retry_after).max(1);
        let mut error = ApiError::new(
            ErrorCode::RateLimited,
            format!("too many requests, retry in {secs} s"),
        );
        error.retry_after_ms = Some(self.retry_after_ms());
        let mut response = error.into_response();
        self.apply_headers(response.headers_mut());
        response
    }
}

fn ceil_secs(duration: Duration) -> u64 {
    duration.as_millis().div_ceil(1000).try_into().unwrap_or(u64::MAX)
}

/// Why a store could not decide.
#[derive(Debug, thiserror::Error)]
pub enum RateLimitError {
    #[error("rate limit store failed: {0}")]
    Redis(#[from] fred::error::Error),
    #[error("rate limit store returned an unexpected reply")]
    BadReply,
}

/// Counts requests per tier and key, atomically, against the tier's policy.
#[async_trait]
pub trait RateLimitStore: Send + Sync + fmt::Debug {
    /// Counts one request for `key` in `tier` and says whether it is allowed.
    async fn check(&self, tier: Tier, key: &str) -> Result<Decision, RateLimitError>;
}

/// The limits every handler shares: a store and what to do when it fails.
#[derive(Clone, Debug)]
pub struct RateLimits {
    store: Arc<dyn RateLimitStore>,
}

impl RateLimits {
    pub fn new(store: Arc<dyn RateLimitStore>) -> Self {
        Self { store }
    }

    /// Counts one request. When the store fails the request is let through
    /// (`None`): an unreachable Redis must not take the whole API down.
    pub async fn check(&self, tier: Tier, key: &str) -> Option<Decision> {
        match self.store.check(tier, key).await {
            Ok(decision) => {
                if !decision.allowed {
                    metrics::counter!("chat_rate_limited_total", "tier" => tier.as_str()).increment(1);
                }
                Some(decision)
            }
            Err(error) => {
                tracing::warn!(tier = tier.as_str(), %error, "rate limit not applied");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denied_decision_answers_429_with_headers() {
        let decision = Decision {
            allowed: false,
            limit: 10,
            remaining: 0,
            reset: Duration::from_millis(9_500),
            retry_after: Duration::from_millis(1_200),
        };
        let response = decision.into_rejection();
        assert_eq!(response.status(), 429);
        let header = |name: &str| response.headers()[name].to_str().expect("ascii").to_owned();
        assert_eq!(header("retry-after"), "2");
        assert_eq!(header("ratelimit-limit"), "10");
        assert_eq!(header("ratelimit-remaining"), "0");
        assert_eq!(header("ratelimit-reset"), "10");
    }

    #[test]
    fn interval_spreads_the_window_over_the_limit() {
        let policy = Policy {
            limit: NonZeroU32::new(300).expect("non-zero"),
            window: Duration::from_secs(900),
        };
        assert_eq!(policy.interval(), Duration::from_secs(3));
    }
}
