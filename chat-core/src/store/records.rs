//! What the store takes and returns besides the domain types.

use crate::domain::{
    Actor, ClientMsgId, Concurrency, Message, MessageRole, Run, RunId, Session, SessionChange, SessionId,
    SessionStatus, UserId,
};

/// A user account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    pub username: String,
    /// A PHC string, or empty for users without a password (external identities).
    pub password_hash: String,
    pub created_at: i64,
    /// May answer other users' sessions handed to a person.
    pub operator: bool,
}

/// A stored refresh token (only its hash).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefreshToken {
    pub id: String,
    pub user_id: UserId,
    /// Every token rotated from one login shares its family.
    pub family_id: String,
    /// SHA-256 of the opaque token, lowercase hex.
    pub token_hash: String,
    pub expires_at: i64,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
    /// The token this one was rotated into.
    pub replaced_by: Option<String>,
}

#[derive(Clone, Debug)]
pub struct NewSession {
    pub owner_id: UserId,
    pub title: String,
    pub agent: String,
    pub metadata: String,
    pub concurrency: Option<Concurrency>,
}

/// A session status change, with what it records besides the status.
#[derive(Clone, Debug)]
pub struct Transition {
    pub change: SessionChange,
    /// Who asks for it: the state machine says what each actor may do.
    pub by: Actor,
    /// Make this agent the session's at the same time.
    pub agent: Option<String>,
    /// Resolution notes (resolving only).
    pub notes: Option<String>,
}

impl Transition {
    pub fn new(change: SessionChange, by: Actor) -> Self {
        Self {
            change,
            by,
            agent: None,
            notes: None,
        }
    }
}

/// Which sessions a listing returns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum SessionFilter {
    #[default]
    All,
    /// Exactly this status.
    Status(SessionStatus),
    /// Active or waiting for a human.
    Unresolved,
    /// Updated at or after this time (epoch ms).
    UpdatedSince(i64),
}

#[derive(Clone, Debug, Default)]
pub struct SessionQuery {
    pub owner_id: Option<UserId>,
    pub filter: SessionFilter,
    pub limit: u64,
    /// Opaque position returned as `next_cursor` by the previous page.
    pub cursor: Option<String>,
}

#[derive(Clone, Debug)]
pub struct SessionPage {
    pub sessions: Vec<Session>,
    pub next_cursor: Option<String>,
}

#[derive(Clone, Debug)]
pub struct MessageQuery {
    pub session_id: SessionId,
    pub after_seq: Option<i64>,
    pub before_seq: Option<i64>,
    pub limit: u64,
}

#[derive(Clone, Debug)]
pub struct NewMessage {
    pub session_id: SessionId,
    pub role: MessageRole,
    pub content: String,
    pub client_msg_id: Option<ClientMsgId>,
    /// Whether the message starts a run (user messages do), unless the
    /// session is with a person when the message is committed.
    pub start_run: bool,
    /// Refuse with [`super::StoreError::Busy`] when the message starts a run
    /// and the session has a queued or running one.
    pub reject_if_busy: bool,
    /// Who wrote it, for a message posted by a person (the operator's name).
    pub author: Option<String>,
    /// Claim the new run at once under this lease when the session has no
    /// other queued or running run, so the turn needs no separate claim.
    pub claim: Option<Lease>,
    /// The JSON object the sender attached, as text.
    pub metadata: Option<String>,
}

#[derive(Clone, Debug)]
pub struct Appended {
    pub message: Message,
    pub run: Option<Run>,
    pub duplicate: bool,
}

#[derive(Clone, Debug)]
pub struct RunCompletion {
    pub run_id: RunId,
    pub session_id: SessionId,
    pub agent: String,
    pub content: String,
    pub first_delta_at: Option<i64>,
    /// When the attempt that made the reply started (epoch ms).
    pub started_at: Option<i64>,
    /// The replica holding the run's lease; the reply is refused if it lost
    /// it. The session's next queued run, if any, is claimed under it
    /// ([`NextRun`]).
    pub lease: Lease,
    /// JSON array of the tool calls made for this reply, if any
    /// ([`ToolCallRecord::encode`](crate::domain::ToolCallRecord::encode)).
    pub tool_calls: Option<String>,
}

/// A run's reply, committed with its completion.
#[derive(Clone, Debug)]
pub struct Completed {
    pub message: Message,
    pub next: NextRun,
}

/// What became of the session's next run as a reply was committed.
#[derive(Clone, Debug)]
pub enum NextRun {
    /// Claimed under the completion's lease: in the reply's transaction on
    /// SQLite, in the one right after it on Postgres.
    Claimed(Box<Run>),
    /// Nothing else was queued or running when the reply was committed.
    QueueEmpty,
    /// Another run waits, but the claim after the reply's commit failed
    /// (Postgres): the caller claims it again.
    Unclaimed,
}

impl NextRun {
    /// The claimed run, if one was.
    pub fn claimed(self) -> Option<Run> {
        match self {
            Self::Claimed(run) => Some(*run),
            Self::QueueEmpty | Self::Unclaimed => None,
        }
    }
}

/// A claim on a session's next run, held by one chat-core replica.
#[derive(Clone, Debug)]
pub struct Lease {
    pub owner: String,
    pub duration_ms: i64,
}

/// One login of a user: the family of refresh tokens rotated from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignIn {
    pub user_id: UserId,
    pub family_id: String,
}

/// What presenting a refresh token for rotation came to.
#[derive(Clone, Debug)]
pub enum Rotation {
    /// The token was live: it is now revoked, and this one replaces it in the same family.
    Rotated(RefreshToken),
    /// The token had already been rotated or revoked: its whole family (of
    /// this user) is now revoked.
    Reused(SignIn),
    /// No such token, or it expired.
    Invalid,
}
