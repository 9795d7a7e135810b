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

impl SessionChange {
    fn verb(self) -> &'static str {
        match self {
            Self::Escalate => "escalate",
            Self::HandBack => "hand back",
            Self::Resolve => "resolve",
            Self::Expire => "expire",
            Self::End => "end",
        }
    }
}

/// Who asks for a session change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Actor {
    /// The session's owner, with their own token.
    Owner,
    /// An internal service, such as the desk of the people who take over
    /// escalated sessions.
    Service,
    /// chat-core itself: an agent's handoff, the idle-session sweep.
    System,
    /// A person (a user with the operator flag) holding the session.
    Operator,
}

impl Actor {
    /// The actor of a verified caller acting on a session it may act on.
    pub fn of(principal: &super::Principal) -> Self {
        if principal.is_service() {
            Self::Service
        } else {
            Self::Owner
        }
    }
}

/// One row of the session state machine.
struct Rule {
    change: SessionChange,
    from: &'static [SessionStatus],
    by: &'static [Actor],
    to: SessionStatus,
}

/// The session state machine, whole: every allowed change, the statuses it
/// may start from, who may ask for it, and where it leads. Anything not
/// listed is refused.
const RULES: &[Rule] = {
    use Actor::{Operator, Owner, Service, System};
    use SessionChange as C;
    use SessionStatus::{Active, Ended, Expired, PendingHuman, Resolved};
    &[
        // An agent hands the conversation to a person.
        Rule {
            change: C::Escalate,
            from: &[Active, PendingHuman, Resolved],
            by: &[System],
            to: PendingHuman,
        },
        // The person gives it back to an agent, or the owner goes back to
        // one (leaving the queue, or the person who took the conversation).
        Rule {
            change: C::HandBack,
            from: &[PendingHuman],
            by: &[Service, Operator, Owner],
            to: Active,
        },
        // The owner or a service closes a conversation an agent handles
        // (again: the notes are replaced).
        Rule {
            change: C::Resolve,
            from: &[Active, Resolved],
            by: &[Owner, Service],
            to: Resolved,
        },
        // While a person holds it, only their side may resolve it.
        Rule {
            change: C::Resolve,
            from: &[PendingHuman],
            by: &[Service, Operator],
            to: Resolved,
        },
        Rule {
            change: C::Expire,
            from: &[Active],
            by: &[System],
            to: Expired,
        },
        Rule {
            change: C::End,
            from: &[Active, PendingHuman, Resolved, Expired, Ended],
            by: &[Owner, Service],
            to: Ended,
        },
    ]
};

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

    /// The status `change`, asked for `by`, leads to from this one, or why it may not happen.
    pub fn next(self, change: SessionChange, by: Actor) -> Result<Self, DomainError> {
        let mut rules = RULES
            .iter()
            .filter(|r| r.change == change && r.from.contains(&self));
        let Some(first) = rules.next() else {
            return Err(DomainError::Conflict(format!(
                "session is {self}; cannot {} it",
                change.verb()
            )));
        };
        std::iter::once(first)
            .chain(rules)
            .find(|r| r.by.contains(&by))
            .map(|r| r.to)
            .ok_or_else(|| {
                DomainError::Conflict(match (self, change) {
                    (Self::PendingHuman, SessionChange::Resolve) => {
                        "session is pending_human; the person handling it resolves it".to_owned()
                    }
                    _ => format!("session is {self}; {by:?} may not {} it", change.verb()).to_lowercase(),
                })
            })
    }

    /// The statuses from which `by` may ask for `change`.
    pub fn allowing(change: SessionChange, by: Actor) -> Vec<Self> {
        Self::ALL
            .iter()
            .copied()
            .filter(|s| s.next(change, by).is_ok())
            .collect()
    }
}

/// Longest resolution notes, in characters.
pub const MAX_NOTES_CHARS: usize = 4000;

/// Longest session title, in characters.
pub const MAX_TITLE_CHARS: usize = 200;

/// Checks resolution notes: at most [`MAX_NOTES_CHARS`], no NUL.
pub fn validate_notes(notes: &str) -> Result<(), DomainError> {
    check_text("notes", notes, MAX_NOTES_CHARS, DomainError::TooLarge)
}

/// Checks a trimmed title: not empty, at most [`MAX_TITLE_CHARS`], no NUL.
pub fn validate_title(title: &str) -> Result<(), DomainError> {
    if title.is_empty() {
        return Err(DomainError::Invalid("title must not be empty".into()));
    }
    check_text("title", title, MAX_TITLE_CHARS, DomainError::Invalid)
}

/// At most `max_chars` characters (else the error `too_long` makes), and no NUL.
fn check_text(
    what: &str,
    text: &str,
    max_chars: usize,
    too_long: fn(String) -> DomainError,
) -> Result<(), DomainError> {
    if text.chars().count() > max_chars {
        return Err(too_long(format!("{what} must be at most {max_chars} characters")));
    }
    if chat_common::limits::has_nul(text) {
        return Err(DomainError::Invalid(format!(
            "{what} must not contain NUL characters"
        )));
    }
    Ok(())
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
    /// The operator holding a session handed to a person.
    pub assignee: Option<Assignee>,
    /// When it was handed to a person (epoch ms), while it waits for one.
    pub waiting_since: Option<i64>,
}

/// An operator holding a session, by id and the name users see.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assignee {
    pub id: UserId,
    pub name: String,
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
    use super::Actor::{Operator, Owner, Service, System};
    use super::SessionChange as C;
    use super::SessionStatus as S;
    use super::*;

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
            assert_eq!(s.next(C::End, Owner), Ok(S::Ended));
            assert_eq!(s.next(C::End, Service), Ok(S::Ended));
        }
        for change in [C::Escalate, C::HandBack, C::Resolve, C::Expire] {
            for by in [Owner, Service, System] {
                assert!(
                    S::Ended.next(change, by).is_err(),
                    "{change:?} by {by:?} reopened an ended session"
                );
            }
        }
    }

    #[test]
    fn only_the_sweep_expires_and_only_active_sessions() {
        assert_eq!(S::allowing(C::Expire, System), vec![S::Active]);
        assert!(S::allowing(C::Expire, Owner).is_empty());
    }

    #[test]
    fn resolve_refuses_ended_and_expired_sessions_and_never_skips_a_person() {
        assert_eq!(S::allowing(C::Resolve, Owner), vec![S::Active, S::Resolved]);
        assert_eq!(
            S::allowing(C::Resolve, Service),
            vec![S::Active, S::PendingHuman, S::Resolved]
        );
        let refused = S::PendingHuman.next(C::Resolve, Owner).unwrap_err();
        assert!(refused.to_string().contains("pending_human"), "{refused}");
        assert!(S::Expired.next(C::Resolve, Service).is_err());
    }

    #[test]
    fn escalation_and_hand_back_move_between_agent_and_person() {
        assert_eq!(S::Active.next(C::Escalate, System), Ok(S::PendingHuman));
        assert!(
            S::Active.next(C::Escalate, Owner).is_err(),
            "only agents escalate"
        );
        assert_eq!(S::PendingHuman.next(C::HandBack, Service), Ok(S::Active));
        assert_eq!(
            S::allowing(C::HandBack, Owner),
            vec![S::PendingHuman],
            "owners go back to the assistant from waiting for a person only"
        );
        assert_eq!(S::PendingHuman.next(C::HandBack, Operator), Ok(S::Active));
        assert_eq!(S::PendingHuman.next(C::Resolve, Operator), Ok(S::Resolved));
        assert!(
            S::Active.next(C::Resolve, Operator).is_err(),
            "operators act on sessions handed to a person only"
        );
        assert!(S::Active.next(C::End, Operator).is_err());
        assert!(
            S::Expired.next(C::HandBack, Service).is_err(),
            "hand back revives nothing"
        );
        assert!(S::Expired.next(C::Escalate, System).is_err());
    }

    #[test]
    fn every_change_leads_to_one_status() {
        for change in [C::Escalate, C::HandBack, C::Resolve, C::Expire, C::End] {
            let targets: std::collections::HashSet<_> = RULES
                .iter()
                .filter(|r| r.change == change)
                .map(|r| r.to)
                .collect();
            assert_eq!(targets.len(), 1, "{change:?}");
        }
    }

    #[test]
    fn notes_are_bounded() {
        assert!(validate_notes(&"n".repeat(MAX_NOTES_CHARS)).is_ok());
        assert!(matches!(
            validate_notes(&"n".repeat(MAX_NOTES_CHARS + 1)),
            Err(DomainError::TooLarge(_))
        ));
        assert!(validate_notes("a\0b").is_err());
    }
}
