//! When a stream opened with a token must end: at the token's expiry the
//! holder is warned (and may renew in-band where the transport allows it),
//! and at the end of a grace period after it the stream ends. Every
//! long-lived stream (WebSocket, SSE, gRPC-Web, direct gRPC) runs on one.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// What happens when the token clock's deadline passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// The token just expired: warn, and wait out the grace period.
    Warn,
    /// The grace period is over: end the stream.
    Close,
}

/// Tracks a stream's token: first the expiry, then the end of the grace period.
#[derive(Debug)]
pub struct TokenClock {
    expires_at: u64,
    grace: Duration,
    grace_ends: Option<Instant>,
}

impl TokenClock {
    /// A clock for a token expiring at `expires_at` (Unix seconds).
    pub fn new(expires_at: u64, grace: Duration) -> Self {
        Self {
            expires_at,
            grace,
            grace_ends: None,
        }
    }

    /// When the stream must next call [`TokenClock::elapsed`].
    pub fn deadline(&self) -> Instant {
        self.grace_ends.unwrap_or_else(|| instant_at(self.expires_at))
    }

    /// Moves past the deadline: the first time a warning, then the end.
    pub fn elapsed(&mut self) -> Expiry {
        if self.grace_ends.is_some() {
            return Expiry::Close;
        }
        self.grace_ends = Some(Instant::now() + self.grace);
        Expiry::Warn
    }

    /// Takes a fresh token's expiry: the warning and the grace period start over.
    pub fn renew(&mut self, expires_at: u64) {
        self.expires_at = expires_at;
        self.grace_ends = None;
    }

    /// How long the stream waits for a fresh token after expiry.
    pub fn grace(&self) -> Duration {
        self.grace
    }

    /// Completes when the stream must end, for transports that cannot renew
    /// a token in-band: the expiry plus the grace period.
    pub async fn closed(mut self) {
        loop {
            tokio::time::sleep_until(self.deadline()).await;
            if self.elapsed() == Expiry::Close {
                return;
            }
        }
    }
}

/// The monotonic instant of a Unix time in seconds (now, if it has passed).
fn instant_at(unix_secs: u64) -> Instant {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    Instant::now() + Duration::from_secs(unix_secs).saturating_sub(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_clock_warns_at_expiry_and_closes_after_the_grace() {
        let mut clock = TokenClock::new(0, Duration::from_secs(30));
        assert!(clock.deadline() <= Instant::now());
        assert_eq!(clock.elapsed(), Expiry::Warn);
        assert!(clock.deadline() > Instant::now() + Duration::from_secs(29));
        assert_eq!(clock.elapsed(), Expiry::Close);
        clock.renew(u64::MAX / 2);
        assert!(clock.deadline() > Instant::now() + Duration::from_secs(3600));
        let started = Instant::now();
        TokenClock::new(0, Duration::from_millis(200)).closed().await;
        assert!(started.elapsed() >= Duration::from_millis(200));
    }
}
