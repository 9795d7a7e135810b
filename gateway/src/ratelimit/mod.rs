//! Rate limits in four tiers (API, auth, account, messages) behind one
//! [`RateLimitStore`] seam: in memory with governor for a single gateway, or
//! in Redis so the limits hold across replicas. When the store fails, each
//! tier either lets requests through or refuses them with 503, as configured
//! (`RATE_LIMIT_FAIL_CLOSED`: the auth and account tiers by default).
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
    /// Logins per account (username), from any address: guessing one
    /// account's password from many addresses.
    Account,
    /// Messages posted over REST or sent over the WebSocket, per user.
    Messages,
    /// Every frame a WebSocket client sends (subscribe, unsubscribe, send,
    /// cancel, ping, auth, malformed ones), per user.
    Frames,
}

impl Tier {
    pub const ALL: [Tier; 5] = [Tier::Api, Tier::Auth, Tier::Account, Tier::Messages, Tier::Frames];

    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Api => "api",
            Tier::Auth => "auth",
            Tier::Account => "account",
            Tier::Messages => "messages",
            Tier::Frames => "frames",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|tier| tier.as_str() == name)
    }

    /// Its position in [`Tier::ALL`].
    pub fn index(self) -> usize {
        self as usize
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
    pub account: Policy,
    pub messages: Policy,
    pub frames: Policy,
}

impl Policies {
    pub fn get(&self, tier: Tier) -> Policy {
        match tier {
            Tier::Api => self.api,
            Tier::Auth => self.auth,
            Tier::Account => self.account,
            Tier::Messages => self.messages,
            Tier::Frames => self.frames,
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

    /// Counts one request for `key` in each of `tiers` in turn, until one
    /// refuses it: the decisions made, the refusal (if any) last. A tier
    /// after a refusal is not counted, as with one [`check`](Self::check)
    /// after another.
    async fn check_in_turn(&self, tiers: &[Tier], key: &str) -> Result<Vec<Decision>, RateLimitError> {
        let mut decisions = Vec::with_capacity(tiers.len());
        for &tier in tiers {
            let decision = self.check(tier, key).await?;
            decisions.push(decision);
            if !decision.allowed {
                break;
            }
        }
        Ok(decisions)
    }
}

/// What a fail-closed tier answers while its store fails: retry after this.
pub const STORE_DOWN_RETRY_AFTER: Duration = Duration::from_secs(1);

/// A request refused because its fail-closed tier could not be counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LimiterDown;

impl LimiterDown {
    /// The 503 answer, with `Retry-After`.
    pub fn into_error(self) -> ApiError {
        let mut error = ApiError::new(
            ErrorCode::Unavailable,
            "rate limiting is unavailable; retry shortly",
        );
        error.retry_after_ms = Some(STORE_DOWN_RETRY_AFTER.as_millis() as u64);
        error
    }
}

/// The limits every handler shares: a store and, per tier, what to do when it fails.
#[derive(Clone, Debug)]
pub struct RateLimits {
    store: Arc<dyn RateLimitStore>,
    /// Indexed by [`Tier::index`]: refuse requests while the store fails.
    fail_closed: [bool; 5],
}

impl RateLimits {
    /// Limits in `store`; the tiers in `fail_closed` refuse requests while it fails.
    pub fn new(store: Arc<dyn RateLimitStore>, fail_closed: &[Tier]) -> Self {
        Self {
            store,
            fail_closed: Tier::ALL.map(|tier| fail_closed.contains(&tier)),
        }
    }

    /// Counts one request. When the store fails, a fail-open tier lets it
    /// through (`Ok(None)`, so an unreachable Redis does not take the API
    /// down) and a fail-closed one refuses it.
    pub async fn check(&self, tier: Tier, key: &str) -> Result<Option<Decision>, LimiterDown> {
        match self.store.check(tier, key).await {
            Ok(decision) => Ok(Some(counted(tier, decision))),
            Err(error) => self.store_failed(tier, &error).map(|()| None),
        }
    }

    /// Counts one request in each of `tiers` in turn (in one round trip to
    /// the store), as [`check`](Self::check) one after another would: the
    /// first tier that refuses it, with its decision (or [`LimiterDown`] when
    /// the store failed and the tier is fail-closed), or `Ok(())` when all
    /// let it through.
    pub async fn check_in_turn(
        &self,
        tiers: &[Tier],
        key: &str,
    ) -> Result<(), (Tier, Result<Decision, LimiterDown>)> {
        match self.store.check_in_turn(tiers, key).await {
            Ok(decisions) => {
                for (&tier, decision) in tiers.iter().zip(decisions) {
                    if !counted(tier, decision).allowed {
                        return Err((tier, Ok(decision)));
                    }
                }
                Ok(())
            }
            Err(error) => {
                for &tier in tiers {
                    self.store_failed(tier, &error)
                        .map_err(|down| (tier, Err(down)))?;
                }
                Ok(())
            }
        }
    }

    /// What a tier does while its store fails: `Ok` lets the request through.
    fn store_failed(&self, tier: Tier, error: &RateLimitError) -> Result<(), LimiterDown> {
        let refused = self.fail_closed[tier.index()];
        let outcome = if refused { "refused" } else { "allowed" };
        tracing::warn!(tier = tier.as_str(), %error, "rate limit store failed; request {outcome}");
        metrics::counter!("chat_rate_limit_store_errors_total", "tier" => tier.as_str(), "outcome" => outcome)
            .increment(1);
        if refused { Err(LimiterDown) } else { Ok(()) }
    }
}

/// Counts a refusal in the metrics.
fn counted(tier: Tier, decision: Decision) -> Decision {
    if !decision.allowed {
        metrics::counter!("chat_rate_limited_total", "tier" => tier.as_str()).increment(1);
    }
    decision
}

/// The part of a client address that rate limits count: an IPv4 address
/// whole, an IPv6 address by its /64 (one subscriber usually holds a whole
/// /64, so counting single addresses would give them 2^64 allowances).
pub fn address_key(ip: std::net::IpAddr) -> String {
    use std::net::IpAddr;
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let prefix = u128::from(v6) & (u128::MAX << 64);
                format!("{}/64", std::net::Ipv6Addr::from(prefix))
            }
        },
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
    fn ipv6_addresses_count_by_their_64_bit_prefix() {
        let key = |ip: &str| address_key(ip.parse().expect("an address"));
        assert_eq!(key("2001:db8:1:2::1"), "2001:db8:1:2::/64");
        assert_eq!(key("2001:db8:1:2:ffff:1:2:3"), "2001:db8:1:2::/64");
        assert_ne!(key("2001:db8:1:3::1"), key("2001:db8:1:2::1"));
        assert_eq!(key("192.0.2.7"), "192.0.2.7");
        assert_eq!(key("::ffff:192.0.2.7"), "192.0.2.7");
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
