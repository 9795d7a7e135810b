//! Plain records the store takes and returns.

use super::entity::{external_identity, message, refresh_token, run, session, user};

pub type UserRecord = user::Model;
pub type SessionRecord = session::Model;
pub type MessageRecord = message::Model;
pub type RunRecord = run::Model;
pub type RefreshTokenRecord = refresh_token::Model;
pub type ExternalIdentityRecord = external_identity::Model;

#[derive(Clone, Debug)]
pub struct NewSession {
    pub owner_id: String,
    pub title: String,
    pub agent: String,
    pub metadata: String,
    pub concurrency: Option<String>,
}

/// Which sessions a listing returns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum SessionFilter {
    #[default]
    All,
    /// Exactly this status.
    Status(crate::domain::SessionStatus),
    /// Active or waiting for a human.
    Unresolved,
    /// Updated at or after this time (epoch ms).
    UpdatedSince(i64),
}

#[derive(Clone, Debug, Default)]
pub struct SessionQuery {
    pub owner_id: Option<String>,
    pub filter: SessionFilter,
    pub limit: u64,
    /// Opaque position returned as `next_cursor` by the previous page.
    pub cursor: Option<String>,
}

#[derive(Clone, Debug)]
pub struct SessionPage {
    pub sessions: Vec<SessionRecord>,
    pub next_cursor: Option<String>,
}

#[derive(Clone, Debug)]
pub struct MessageQuery {
    pub session_id: String,
    pub after_seq: Option<i64>,
    pub before_seq: Option<i64>,
    pub limit: u64,
}

#[derive(Clone, Debug)]
pub struct NewMessage {
    pub session_id: String,
    pub role: crate::domain::MessageRole,
    pub content: String,
    pub client_msg_id: Option<String>,
    /// Whether the message starts a run (user messages do).
    pub start_run: bool,
    /// Refuse with [`super::StoreError::Busy`] when the session has a queued or running run.
    pub reject_if_busy: bool,
}

#[derive(Clone, Debug)]
pub struct Appended {
    pub message: MessageRecord,
    pub run: Option<RunRecord>,
    pub duplicate: bool,
}

#[derive(Clone, Debug)]
pub struct RunCompletion {
    pub run_id: String,
    pub session_id: String,
    pub agent: String,
    pub content: String,
    pub first_delta_at: Option<i64>,
    /// The replica holding the run's lease; the reply is refused if it lost it.
    pub lease_owner: String,
    /// JSON array of the tool calls made for this reply, if any.
    pub tool_calls: Option<String>,
}

/// A claim on a session's next run, held by one chat-core replica.
#[derive(Clone, Debug)]
pub struct Lease {
    pub owner: String,
    pub duration_ms: i64,
}

/// What presenting a refresh token for rotation came to.
#[derive(Clone, Debug)]
pub enum Rotation {
    /// The token was live: it is now revoked, and this one replaces it in the same family.
    Rotated(RefreshTokenRecord),
    /// The token had already been rotated or revoked: its whole family is now revoked.
    Reused,
    /// No such token, or it expired.
    Invalid,
}
