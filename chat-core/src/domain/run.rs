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
