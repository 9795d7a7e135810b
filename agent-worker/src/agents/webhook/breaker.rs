//! A circuit breaker: after enough consecutive failures, calls fail fast for a cool-down, then
//! one probe call decides whether the service is back.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Shared by every run of one agent.
#[derive(Debug)]
pub struct Breaker {
    failures_to_open: u32,
    cooldown: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    consecutive_failures: u32,
    /// Set while open: calls before `opened_at + cooldown` fail fast.
    opened_at: Option<Instant>,
    /// Whether the one half-open probe call is in flight.
    probing: bool,
}

/// Leave to make one call; report its outcome with [`Permit::record`].
#[derive(Debug)]
pub struct Permit<'a> {
    breaker: &'a Breaker,
    is_probe: bool,
    recorded: bool,
}

// === impl Breaker ===

impl Breaker {
    pub fn new(failures_to_open: u32, cooldown: Duration) -> Self {
        Self {
            failures_to_open,
            cooldown,
            state: Mutex::new(State::default()),
        }
    }

    /// A permit to call now, or how long until a call may be tried.
    pub fn try_call(&self, now: Instant) -> Result<Permit<'_>, Duration> {
        let mut state = self.lock();
        let Some(opened_at) = state.opened_at else {
            return Ok(self.permit(false));
        };
        let reopens_at = opened_at + self.cooldown;
        if now < reopens_at {
            return Err(reopens_at - now);
        }
        if state.probing {
            return Err(self.cooldown);
        }
        state.probing = true;
        Ok(self.permit(true))
    }

    /// Whether calls currently fail fast.
    #[cfg(test)]
    pub fn is_open(&self) -> bool {
        self.lock().opened_at.is_some()
    }

    fn permit(&self, is_probe: bool) -> Permit<'_> {
        Permit {
            breaker: self,
            is_probe,
            recorded: false,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state stays consistent even if a holder panicked: every update is a plain store.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

// === impl Permit ===

impl Permit<'_> {
    /// Records the call's outcome: a success closes the breaker, a failure counts toward opening it
    /// (a failed probe reopens it at once). Returns whether this outcome opened the breaker.
    pub fn record(mut self, succeeded: bool, now: Instant) -> bool {
        self.recorded = true;
        let mut state = self.breaker.lock();
        if self.is_probe {
            state.probing = false;
        }
        if succeeded {
            *state = State::default();
            return false;
        }
        state.consecutive_failures = state.consecutive_failures.saturating_add(1);
        let opens = self.is_probe
            || (state.opened_at.is_none() && state.consecutive_failures >= self.breaker.failures_to_open);
        if opens {
            state.opened_at = Some(now);
        }
        opens
    }
}

impl Drop for Permit<'_> {
    /// A probe abandoned before its outcome (the run was cancelled) lets the next call probe.
    fn drop(&mut self) {
        if self.is_probe && !self.recorded {
            self.breaker.lock().probing = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COOLDOWN: Duration = Duration::from_secs(30);

    fn fail(breaker: &Breaker, now: Instant) {
        breaker.try_call(now).expect("closed").record(false, now);
    }

    /// A breaker opened by one failure, and the moment its cooldown ends.
    fn cooled_down() -> (Breaker, Instant) {
        let breaker = Breaker::new(1, COOLDOWN);
        let start = Instant::now();
        fail(&breaker, start);
        (breaker, start + COOLDOWN)
    }

    #[test]
    fn the_failure_that_opens_the_breaker_says_so() {
        let breaker = Breaker::new(2, COOLDOWN);
        let now = Instant::now();
        assert!(!breaker.try_call(now).expect("closed").record(false, now));
        assert!(breaker.try_call(now).expect("closed").record(false, now));
    }

    #[test]
    fn opens_after_consecutive_failures_only() {
        let breaker = Breaker::new(3, COOLDOWN);
        let now = Instant::now();
        fail(&breaker, now);
        fail(&breaker, now);
        assert!(!breaker.try_call(now).expect("closed").record(true, now));
        fail(&breaker, now);
        fail(&breaker, now);
        assert!(!breaker.is_open(), "a success resets the count");

        fail(&breaker, now);

        assert!(breaker.is_open());
        assert_eq!(
            breaker.try_call(now + Duration::from_secs(10)).err(),
            Some(Duration::from_secs(20))
        );
    }

    #[test]
    fn after_the_cooldown_one_probe_decides() {
        let (breaker, later) = cooled_down();

        let probe = breaker.try_call(later).expect("probe allowed");
        assert!(breaker.try_call(later).is_err(), "only one probe at a time");
        assert!(probe.record(false, later));
        assert!(
            breaker.try_call(later + Duration::from_secs(1)).is_err(),
            "failed probe reopens"
        );

        let again = later + COOLDOWN;
        assert!(!breaker.try_call(again).expect("second probe").record(true, again));
        assert!(!breaker.is_open());
        assert!(breaker.try_call(again).is_ok());
    }

    #[test]
    fn an_abandoned_probe_lets_the_next_call_probe() {
        let (breaker, later) = cooled_down();

        drop(breaker.try_call(later).expect("probe"));

        assert!(breaker.try_call(later).is_ok());
    }
}
