//! A run: one agent execution answering one user message.

use super::{MessageId, RunId, SessionId, named_enum};

named_enum!(
    /// Lifecycle of a run.
    RunStatus {
        Queued => "queued",
        Running => "running",
        /// Published when a new attempt starts; never stored.
        Retrying => "retrying",
        Completed => "completed",
        Failed => "failed",
        Cancelled => "cancelled",
    }
);

impl RunStatus {
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }

    /// Waiting or executing: the session is busy.
    pub fn is_active(self) -> bool {
        matches!(self, Self::Queued | Self::Running)
    }

    /// Whether a run may move from this status to `next`.
    pub fn can_become(self, next: Self) -> bool {
        use RunStatus as S;
        match (self, next) {
            (S::Completed | S::Failed | S::Cancelled, _) => false,
            // Claimed (again, after a lost lease), or a new attempt.
            (S::Queued | S::Running | S::Retrying, S::Running | S::Retrying) => true,
            // Only a run that executed has a reply.
            (S::Running | S::Retrying, S::Completed) => true,
            (S::Queued, S::Completed) => false,
            (_, S::Failed | S::Cancelled) => true,
            (_, S::Queued) => false,
        }
    }

    /// The statuses a run may be in to move to `next`.
    pub fn allowing(next: Self) -> Vec<Self> {
        Self::ALL.iter().copied().filter(|s| s.can_become(next)).collect()
    }
}

named_enum!(
    /// Why a run failed, as clients see it (docs/api.md lists them). The
    /// first ones are the codes of `agent.v1` error events; a code a worker
    /// sends that is not listed here reaches clients as `agent_failed`.
    RunErrorCode {
        UpstreamTimeout => "upstream_timeout",
        UpstreamUnavailable => "upstream_unavailable",
        UpstreamRateLimited => "upstream_rate_limited",
        UpstreamRejected => "upstream_rejected",
        UpstreamTruncated => "upstream_truncated",
        UpstreamInvalid => "upstream_invalid",
        CircuitOpen => "circuit_open",
        BadCompletion => "bad_completion",
        UnknownAgent => "unknown_agent",
        HandoffLoop => "handoff_loop",
        /// The agent refused or failed in a way it did not name.
        AgentFailed => "agent_failed",
        /// No agent-worker took the run, or the one that did broke off.
        WorkerUnavailable => "worker_unavailable",
        /// The run took longer than `RUN_TIMEOUT_SECS`.
        Timeout => "timeout",
        /// chat-core could not run it (its database, its own failure).
        Internal => "internal",
    }
);

impl RunErrorCode {
    /// The message clients get with the code: it never quotes the detail.
    pub fn message(self) -> &'static str {
        match self {
            Self::UpstreamTimeout => "the agent's upstream service did not answer in time",
            Self::UpstreamUnavailable => "the agent's upstream service is unavailable",
            Self::UpstreamRateLimited => "the agent's upstream service is rate limiting; try again later",
            Self::UpstreamRejected => "the agent's upstream service refused the request",
            Self::UpstreamTruncated => "the agent's upstream service broke off its answer",
            Self::UpstreamInvalid => "the agent's upstream service sent an answer that could not be read",
            Self::CircuitOpen => "the agent's upstream service is failing; calls are paused",
            Self::BadCompletion => "the model gave no usable answer",
            Self::UnknownAgent => "no agent-worker serves this agent",
            Self::HandoffLoop => "the agents handed the conversation around in a loop",
            Self::AgentFailed => "the agent failed",
            Self::WorkerUnavailable => "no agent-worker could complete the run",
            Self::Timeout => "the run took too long",
            Self::Internal => "internal error",
        }
    }
}

/// Why a run failed: the code clients see, and the detail that only the
/// logs get (worker messages quote URLs, addresses and OS errors).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunFailure {
    pub code: RunErrorCode,
    pub detail: String,
}

impl RunFailure {
    pub fn new(code: RunErrorCode, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: detail.into(),
        }
    }

    /// A failure a worker reported in an error event; an unlisted code
    /// becomes [`RunErrorCode::AgentFailed`] (the original stays in the detail).
    pub fn from_worker(code: &str, message: &str) -> Self {
        let known = RunErrorCode::parse(code).filter(|c| {
            !matches!(
                c,
                RunErrorCode::WorkerUnavailable | RunErrorCode::Timeout | RunErrorCode::Internal
            )
        });
        Self::new(
            known.unwrap_or(RunErrorCode::AgentFailed),
            format!("{code}: {message}"),
        )
    }

    /// What is stored with the run and sent to clients: `code: message`.
    pub fn public(&self) -> String {
        format!("{}: {}", self.code, self.code.message())
    }

    /// The public form of a stored error: rows written before errors were
    /// stored in that form may quote worker detail, which is dropped here.
    pub fn public_of_stored(stored: &str) -> String {
        let code = stored
            .split_once(':')
            .and_then(|(code, _)| RunErrorCode::parse(code))
            .unwrap_or(RunErrorCode::AgentFailed);
        Self::new(code, "").public()
    }
}

/// A run as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Run {
    pub id: RunId,
    pub session_id: SessionId,
    pub user_message_id: MessageId,
    pub user_seq: i64,
    pub agent: String,
    pub status: RunStatus,
    /// 0 while queued; 1 for the first attempt.
    pub attempt: u32,
    pub error: Option<String>,
    pub reply_message_id: Option<MessageId>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub first_delta_at: Option<i64>,
    pub finished_at: Option<i64>,
    /// The replica executing it, while running.
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<i64>,
}

impl Run {
    /// Whether another replica holds a live lease on this run at `now`.
    pub fn holds_live_lease(&self, now: i64) -> bool {
        self.status == RunStatus::Running && self.lease_expires_at.unwrap_or(0) > now
    }
}

#[cfg(test)]
mod tests {
    use super::RunStatus as S;
    use super::{RunErrorCode, RunFailure};

    #[test]
    fn run_failures_show_clients_a_code_and_a_fixed_message_only() {
        let failure = RunFailure::from_worker(
            "upstream_unavailable",
            "llm endpoint of 'assistant' is unreachable: error sending request for url \
             (http://127.0.0.1:9/v1/chat/completions): tcp connect error (os error 111)",
        );
        assert_eq!(failure.code, RunErrorCode::UpstreamUnavailable);
        assert_eq!(
            failure.public(),
            "upstream_unavailable: the agent's upstream service is unavailable"
        );
        assert!(failure.detail.contains("127.0.0.1:9"), "the logs keep the detail");
        let foreign = RunFailure::from_worker("my_db_said_no", "password for root@10.0.0.3 rejected");
        assert_eq!(foreign.public(), "agent_failed: the agent failed");
        assert_eq!(
            RunFailure::public_of_stored("upstream_timeout: llm at 10.0.0.3:443 did not answer within 30s"),
            "upstream_timeout: the agent's upstream service did not answer in time"
        );
        assert_eq!(
            RunFailure::public_of_stored("agent-worker failed: tcp connect error"),
            "agent_failed: the agent failed"
        );
        let spoofed = RunFailure::from_worker("internal", "x");
        assert_eq!(
            spoofed.code,
            RunErrorCode::AgentFailed,
            "workers cannot claim chat-core's codes"
        );
    }

    #[test]
    fn terminal_statuses_are_final() {
        for from in [S::Completed, S::Failed, S::Cancelled] {
            assert!(from.is_terminal());
            for to in S::ALL {
                assert!(!from.can_become(*to), "{from} -> {to}");
            }
        }
        for s in [S::Queued, S::Running, S::Retrying] {
            assert!(!s.is_terminal());
        }
    }

    #[test]
    fn only_an_executing_run_completes() {
        assert_eq!(S::allowing(S::Completed), vec![S::Running, S::Retrying]);
    }

    #[test]
    fn unfinished_runs_can_fail_or_be_cancelled() {
        let unfinished = vec![S::Queued, S::Running, S::Retrying];
        assert_eq!(S::allowing(S::Cancelled), unfinished);
        assert_eq!(S::allowing(S::Failed), unfinished);
    }

    #[test]
    fn runs_are_claimed_from_queued_or_running_and_never_requeued() {
        assert!(S::Queued.can_become(S::Running));
        assert!(S::Running.can_become(S::Running), "a lost lease is taken over");
        assert!(S::allowing(S::Queued).is_empty());
        assert!(S::Queued.is_active() && S::Running.is_active());
        assert!(!S::Completed.is_active());
    }
}
