//! The per-user limits of end users calling chat-core with their own tokens
//! (`--accept-user-tokens`): the gateway's API and message tiers, with the
//! same settings, counted by this replica. Users behind the gateway are
//! counted there.

use std::num::NonZeroU32;
use std::time::Duration;

use chat_common::ErrorCode;
use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

type KeyedLimiter = RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock>;

/// Calls and messages per user with their own token.
#[derive(Debug)]
pub struct UserLimits {
    requests: KeyedLimiter,
    messages: KeyedLimiter,
}

/// At most `limit` per `window`, replenished continuously.
fn limiter(limit: NonZeroU32, window: Duration) -> KeyedLimiter {
    let quota = Quota::with_period((window / limit.get()).max(Duration::from_micros(1)))
        .unwrap_or_else(|| Quota::per_second(limit))
        .allow_burst(limit);
    RateLimiter::keyed(quota)
}

fn limited(what: &str, not_until: &governor::NotUntil<<DefaultClock as Clock>::Instant>) -> tonic::Status {
    let wait = not_until.wait_time_from(DefaultClock::default().now());
    let retry_after_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1);
    let mut status = ErrorCode::RateLimited.status(format!("too many {what}, retry in {retry_after_ms} ms"));
    if let Ok(value) = retry_after_ms.to_string().parse() {
        status
            .metadata_mut()
            .insert(chat_common::error::RETRY_AFTER_MS_METADATA, value);
    }
    status
}

impl UserLimits {
    pub fn new(requests: (NonZeroU32, Duration), messages: (NonZeroU32, Duration)) -> Self {
        Self {
            requests: limiter(requests.0, requests.1),
            messages: limiter(messages.0, messages.1),
        }
    }

    /// Counts one call of `user_id`.
    pub fn check_request(&self, user_id: &str) -> Result<(), tonic::Status> {
        self.requests
            .check_key(&user_id.to_owned())
            .map_err(|n| limited("requests", &n))
    }

    /// Counts one message `user_id` sends.
    pub fn check_message(&self, user_id: &str) -> Result<(), tonic::Status> {
        self.messages
            .check_key(&user_id.to_owned())
            .map_err(|n| limited("messages", &n))
    }

    /// Forgets users whose allowance is back in full.
    pub fn prune(&self) {
        self.requests.retain_recent();
        self.messages.retain_recent();
    }
}
