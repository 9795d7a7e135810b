//! A conversation and its lifecycle.

use super::{DomainError, SessionId, UserId, named_enum};

named_enum!(
    /// Lifecycle of a session.
    SessionStatus {
        Active => "active",
        /// Handed to a person; user messages wait for them.
        PendingHuman => "pending_human",
        Resolved => "resolved",
        /// Idle past the session TTL.
        Expired => "expired",
        /// Closed for good.
        Ended => "ended",
    }
);

named_enum!(
    /// What a new message does while its session already has a run.
    Concurrency {
        /// Queue behind the active run (the default).
        Enqueue => "enqueue",
        /// Refuse with `busy`.
        Reject => "reject",
        /// Cancel the active and queued runs, then take the new message.
        Interrupt => "interrupt",
    }
);

/// A change of a session's status, requested by someone or something.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionChange {
    /// An agent handed the conversation to a person.
    Escalate,
    /// A person gives the conversation back to an agent.
    HandBack,
    Resolve,
    /// Idle past the session TTL.
    Expire,
    End,
}

impl SessionStatus {
    /// Whether the session still takes messages.
    pub fn can_accept_messages(self) -> bool {
        !matches!(self, Self::Ended | Self::Expired)
    }

    /// Whether a user message starts a run (not while a person handles it).
    pub fn starts_runs(self) -> bool {
        self != Self::PendingHuman
    }

    /// Open sessions count against the per-user cap.
    pub fn is_open(self) -> bool {
        matches!(self, Self::Active | Self::PendingHuman)
    }

    /// The status `change` leads to from this one, or why it may not happen.
    pub fn next(self, change: SessionChange) -> Result<Self, DomainError> {
        use SessionChange as C;
        let next = match (change, self) {
            (C::End, _) => Self::Ended,
            (_, Self::Ended) => return Err(self.refuse(change)),
            (C::Resolve, _) => Self::Resolved,
            (C::Expire, Self::Active) => Self::Expired,
            (C::Escalate, Self::Active | Self::PendingHuman | Self::Resolved) => Self::PendingHuman,
            (C::HandBack, Self::Active | Self::PendingHuman | Self::Resolved | Self::Expired) => Self::Active,
            _ => return Err(self.refuse(change)),
        };
        Ok(next)
    }

    /// The statuses from which `change` is allowed.
    pub fn allowing(change: SessionChange) -> Vec<Self> {
        Self::ALL
            .iter()
            .copied()
            .filter(|s| s.next(change).is_ok())
            .collect()
    }

    fn refuse(self, change: SessionChange) -> DomainError {
        DomainError::Conflict(format!("session is {self}; cannot {change:?}").to_lowercase())
    }
}

/// A conversation between a user and agents (or a person).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    pub id: SessionId,
    pub owner_id: UserId,
    pub title: String,
    pub status: SessionStatus,
    /// The agent that answers the next message.
    pub agent: String,
    /// JSON object given at creation.
    pub metadata: String,
    pub resolution_notes: Option<String>,
    /// The seq of the newest message.
    pub last_seq: i64,
    pub created_at: i64,
    pub updated_at: i64,
    /// The session's own policy, if it has one.
    pub concurrency: Option<Concurrency>,
    pub ended_at: Option<i64>,
}

impl Session {
    /// Refuses messages to a session that takes none.
    pub fn check_accepts_messages(&self) -> Result<(), DomainError> {
        if self.status.can_accept_messages() {
            Ok(())
        } else {
            Err(DomainError::Conflict(format!("session is {}", self.status)))
        }
    }

    /// Whether a user message to this session starts a run.
    pub fn can_start_runs(&self) -> bool {
        self.status.starts_runs()
    }
}

#[cfg(test)]
mod tests {
    use super::SessionChange as C;
    use super::SessionStatus as S;

    #[test]
    fn ended_and_expired_sessions_take_no_messages() {
        assert!(S::Active.can_accept_messages());
        assert!(S::PendingHuman.can_accept_messages());
        assert!(S::Resolved.can_accept_messages());
        assert!(!S::Expired.can_accept_messages());
        assert!(!S::Ended.can_accept_messages());
        assert!(!S::PendingHuman.starts_runs());
        assert!(S::Active.starts_runs());
    }

    #[test]
    fn any_session_can_be_ended_and_an_ended_one_stays_ended() {
        for s in S::ALL {
            assert_eq!(s.next(C::End), Ok(S::Ended));
        }
        for change in [C::Escalate, C::HandBack, C::Resolve, C::Expire] {
            assert!(
                S::Ended.next(change).is_err(),
                "{change:?} reopened an ended session"
            );
        }
    }

    #[test]
    fn only_active_sessions_expire() {
        assert_eq!(S::allowing(C::Expire), vec![S::Active]);
    }

    #[test]
    fn escalation_and_hand_back_move_between_agent_and_person() {
        assert_eq!(S::Active.next(C::Escalate), Ok(S::PendingHuman));
        assert_eq!(S::PendingHuman.next(C::HandBack), Ok(S::Active));
        assert!(S::Expired.next(C::Escalate).is_err());
        assert_eq!(S::Resolved.next(C::Resolve), Ok(S::Resolved));
        assert_eq!(S::PendingHuman.next(C::Resolve), Ok(S::Resolved));
    }
}
