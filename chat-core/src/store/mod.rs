//! Durable state: one trait per aggregate (accounts, sessions, messages,
//! runs), joined in [`ChatStore`], the seam held as `Arc<dyn ChatStore>`.
//! [`SeaStore`] implements them over sea-orm for Postgres and SQLite alike,
//! and maps its rows to the [`domain`](crate::domain) types here, in
//! `store/` only.

/// The sea-orm entities, one module per table, generated from the migrated
/// schema (never edited by hand: `allinone/tests/core/entities.rs` fails
/// while they lag, and rewrites them with `REGENERATE_ENTITIES=1`).
pub mod entity;
mod error;
mod records;

mod accounts;
mod connection;
mod mapping;
mod messages;
mod runs;
mod sessions;

pub use connection::{SeaStore, backend_name, connect, spawn_wal_checkpoints};
pub use error::StoreError;
pub use records::*;

use async_trait::async_trait;

use crate::domain::{Assignee, Message, Run, RunId, RunStatus, Session, SessionId, UserId};

/// Everything chat-core keeps in its database.
#[async_trait]
pub trait ChatStore: AccountStore + SessionStore + MessageStore + RunStore + 'static {
    /// Succeeds when the database answers a trivial query.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Sets the `chat_db_pool_connections{state}` gauges from the pool.
    fn record_pool_metrics(&self) {}
}

/// Users, their refresh tokens and external identities.
#[async_trait]
pub trait AccountStore: Send + Sync {
    /// Fails with [`StoreError::Conflict`] when the username is taken.
    async fn create_user(&self, username: &str, password_hash: &str) -> Result<User, StoreError>;
    async fn find_user(&self, username: &str) -> Result<Option<User>, StoreError>;
    async fn get_user(&self, id: &UserId) -> Result<Option<User>, StoreError>;
    /// Grants or revokes the operator flag; false when no such user exists.
    async fn set_operator(&self, username: &str, operator: bool) -> Result<bool, StoreError>;

    /// Stores the hash of a new refresh token of `user_id`, starting a new family.
    /// Fails with [`StoreError::NotFound`] when the user does not exist.
    async fn issue_refresh_token(
        &self,
        user_id: &UserId,
        token_hash: &str,
        expires_at: i64,
    ) -> Result<RefreshToken, StoreError>;
    /// In one transaction: revokes the live token `token_hash` and stores
    /// `next_hash` in its family; or, when the token was already rotated or
    /// revoked, revokes its whole family (reuse detection). With
    /// `family_ttl_ms`, a family older than that (from its first token) is
    /// not rotated (`Invalid`), and the new token expires by the family's end.
    async fn rotate_refresh_token(
        &self,
        token_hash: &str,
        next_hash: &str,
        expires_at: i64,
        family_ttl_ms: Option<i64>,
    ) -> Result<Rotation, StoreError>;
    /// Revokes every token of `token_hash`'s family; the family (and its
    /// user), or `None` when no such token exists.
    async fn revoke_refresh_family(&self, token_hash: &str) -> Result<Option<SignIn>, StoreError>;

    /// The user mapped to an identity provider's `(issuer, subject)`, created
    /// (with a username of `ext-` and random hex, and no usable password) on
    /// first sight; the flag says whether this call created it.
    async fn ensure_external_user(&self, issuer: &str, subject: &str) -> Result<(UserId, bool), StoreError>;
}

/// Sessions and their status.
#[async_trait]
pub trait SessionStore: Send + Sync {
    async fn create_session(&self, new: NewSession) -> Result<Session, StoreError>;
    async fn get_session(&self, id: &SessionId) -> Result<Option<Session>, StoreError>;
    /// Newest first (by last update). `owner` restricts to one user's sessions.
    async fn list_sessions(&self, query: SessionQuery) -> Result<SessionPage, StoreError>;
    /// Applies a status change if the session's current status allows it
    /// ([`SessionStatus::next`](crate::domain::SessionStatus::next)), checked
    /// in the same statement. Fails with [`StoreError::Conflict`] when it
    /// does not.
    async fn transition_session(&self, id: &SessionId, transition: Transition)
    -> Result<Session, StoreError>;
    /// Makes `agent` the session's current agent.
    async fn set_session_agent(&self, id: &SessionId, agent: &str) -> Result<Session, StoreError>;
    /// Sessions of `owner` that are active or waiting for a human.
    async fn count_open_sessions(&self, owner_id: &UserId) -> Result<u64, StoreError>;
    /// Marks active sessions idle since before `idle_before` (epoch ms) as
    /// expired and returns their ids.
    async fn expire_idle_sessions(&self, idle_before: i64) -> Result<Vec<SessionId>, StoreError>;
    /// Deletes the session with its messages and runs.
    async fn delete_session(&self, id: &SessionId) -> Result<(), StoreError>;
    /// Changes a session's title.
    async fn rename_session(&self, id: &SessionId, title: &str) -> Result<Session, StoreError>;
    /// Makes `assignee` the holder of a session waiting for a person, unless
    /// another operator holds it or it no longer waits (`Conflict`).
    async fn claim_session(&self, id: &SessionId, assignee: &Assignee) -> Result<Session, StoreError>;
    /// Sessions waiting for a person, the longest waiting first, each with
    /// its owner's username.
    async fn list_waiting(&self, limit: u64) -> Result<Vec<(Session, String)>, StoreError>;
}

/// The messages of sessions.
#[async_trait]
pub trait MessageStore: Send + Sync {
    /// Ascending by seq. With `after_seq`, the first `limit` after it; otherwise
    /// the last `limit` before `before_seq` (or the end).
    async fn list_messages(&self, query: MessageQuery) -> Result<Vec<Message>, StoreError>;

    /// Commits a message and, for user messages, its queued run, in one
    /// transaction. A `client_msg_id` seen before in the session returns the
    /// original message and run with `duplicate` set.
    async fn append_message(&self, new: NewMessage) -> Result<Appended, StoreError>;

    /// The stored reply of a run, if any.
    async fn find_reply(&self, run_id: &RunId) -> Result<Option<Message>, StoreError>;
}

/// Runs, their leases and outcomes.
#[async_trait]
pub trait RunStore: Send + Sync {
    /// Runs waiting for their session's turn, across every replica.
    async fn count_queued_runs(&self) -> Result<u64, StoreError>;
    async fn get_run(&self, run_id: &RunId) -> Result<Option<Run>, StoreError>;
    /// Claims the session's next run for `lease.owner`: the oldest queued
    /// run, or a running one whose lease expired. Returns `None` when the
    /// queue is empty or another replica holds a live lease in the session.
    async fn claim_next_run(&self, session_id: &SessionId, lease: &Lease) -> Result<Option<Run>, StoreError>;
    /// Extends a lease; `false` when the run is no longer running under it.
    async fn renew_lease(&self, run_id: &RunId, lease: &Lease) -> Result<bool, StoreError>;
    /// Starts the next attempt of a run this owner holds (attempt + 1, lease
    /// extended); `false` when the lease was lost.
    async fn next_attempt(&self, run_id: &RunId, lease: &Lease) -> Result<bool, StoreError>;
    /// Expires every lease of `owner` at once, so another replica (or the
    /// next start) takes its runs over immediately.
    async fn release_leases(&self, owner: &str) -> Result<(), StoreError>;
    /// Queued and running runs of a session, oldest first.
    async fn active_runs(&self, session_id: &SessionId) -> Result<Vec<Run>, StoreError>;
    /// Runs of a session that are active or answer a message with seq over
    /// `after_seq`, oldest first: what a subscriber that lost events since
    /// `after_seq` needs to hear about again.
    async fn runs_since(&self, session_id: &SessionId, after_seq: i64) -> Result<Vec<Run>, StoreError>;
    /// Commits the reply and completes the run in one transaction, and
    /// claims the session's next run under the same lease: in the same
    /// transaction on SQLite, in one right after on Postgres. Fails with
    /// [`StoreError::Conflict`] when the run is no longer running under it.
    async fn complete_run(&self, completion: RunCompletion) -> Result<Completed, StoreError>;
    /// Moves a run to `failed` or `cancelled` if its status allows it
    /// ([`RunStatus::can_become`]) and, with `owner`, only while that
    /// replica holds its lease (a replica that lost the run to another must
    /// not end it); returns whether it changed.
    async fn finish_run(
        &self,
        run_id: &RunId,
        status: RunStatus,
        error: Option<String>,
        owner: Option<&str>,
    ) -> Result<bool, StoreError>;
    /// Sessions with work nobody is doing: a run whose lease expired, or a
    /// queued run older than `stale_ms` with no live run in the session.
    async fn orphaned_sessions(&self, stale_ms: i64) -> Result<Vec<SessionId>, StoreError>;
}
