//! Durable state behind one trait, [`ChatStore`], with a sea-orm
//! implementation that serves Postgres and SQLite alike.

pub mod entity;
mod error;
mod records;
mod sea;

pub use error::StoreError;
pub use records::*;
pub use sea::{SeaStore, backend_name, connect};

use async_trait::async_trait;

/// Everything chat-core keeps in its database.
#[async_trait]
pub trait ChatStore: Send + Sync + 'static {
    /// Succeeds when the database answers a trivial query.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Sets the `chat_db_pool_connections{state}` gauges from the pool.
    fn record_pool_metrics(&self) {}

    /// Runs waiting for their session's turn, across every replica.
    async fn count_queued_runs(&self) -> Result<u64, StoreError>;

    // === users ===

    /// Fails with [`StoreError::Conflict`] when the username is taken.
    async fn create_user(&self, username: &str, password_hash: &str) -> Result<UserRecord, StoreError>;
    async fn find_user(&self, username: &str) -> Result<Option<UserRecord>, StoreError>;

    // === refresh tokens ===

    /// Stores the hash of a new refresh token of `user_id`, starting a new family.
    /// Fails with [`StoreError::NotFound`] when the user does not exist.
    async fn issue_refresh_token(
        &self,
        user_id: &str,
        token_hash: &str,
        expires_at: i64,
    ) -> Result<RefreshTokenRecord, StoreError>;
    /// In one transaction: revokes the live token `token_hash` and stores
    /// `next_hash` in its family; or, when the token was already rotated or
    /// revoked, revokes its whole family (reuse detection).
    async fn rotate_refresh_token(
        &self,
        token_hash: &str,
        next_hash: &str,
        expires_at: i64,
    ) -> Result<Rotation, StoreError>;
    /// Revokes every token of `token_hash`'s family; `false` when no such token exists.
    async fn revoke_refresh_family(&self, token_hash: &str) -> Result<bool, StoreError>;

    // === external identities ===

    /// The user mapped to an identity provider's `(issuer, subject)`, created
    /// (with a username of `ext-` and random hex, and no usable password) on
    /// first sight; the flag says whether this call created it.
    async fn ensure_external_user(&self, issuer: &str, subject: &str) -> Result<(String, bool), StoreError>;

    // === sessions ===

    async fn create_session(&self, new: NewSession) -> Result<SessionRecord, StoreError>;
    async fn get_session(&self, id: &str) -> Result<Option<SessionRecord>, StoreError>;
    /// Newest first (by last update). `owner` restricts to one user's sessions.
    async fn list_sessions(&self, query: SessionQuery) -> Result<SessionPage, StoreError>;
    async fn resolve_session(&self, id: &str, notes: Option<String>) -> Result<SessionRecord, StoreError>;
    /// Moves a session to `status` (recording `ended_at` for `ended`).
    async fn set_session_status(
        &self,
        id: &str,
        status: crate::domain::SessionStatus,
    ) -> Result<SessionRecord, StoreError>;
    /// Makes `agent` the session's current agent.
    async fn set_session_agent(&self, id: &str, agent: &str) -> Result<SessionRecord, StoreError>;
    /// Sessions of `owner` that are active or waiting for a human.
    async fn count_open_sessions(&self, owner_id: &str) -> Result<u64, StoreError>;
    /// Marks active sessions idle since before `idle_before` (epoch ms) as
    /// expired and returns their ids.
    async fn expire_idle_sessions(&self, idle_before: i64) -> Result<Vec<String>, StoreError>;
    /// Deletes the session with its messages and runs.
    async fn delete_session(&self, id: &str) -> Result<(), StoreError>;

    // === messages ===

    /// Ascending by seq. With `after_seq`, the first `limit` after it; otherwise
    /// the last `limit` before `before_seq` (or the end).
    async fn list_messages(&self, query: MessageQuery) -> Result<Vec<MessageRecord>, StoreError>;

    /// Commits a message and, for user messages, its queued run, in one
    /// transaction. A `client_msg_id` seen before in the session returns the
    /// original message and run with `duplicate` set.
    async fn append_message(&self, new: NewMessage) -> Result<Appended, StoreError>;

    // === runs ===

    async fn get_run(&self, run_id: &str) -> Result<Option<RunRecord>, StoreError>;
    /// Claims the session's next run for `lease.owner`: the oldest queued
    /// run, or a running one whose lease expired. Returns `None` when the
    /// queue is empty or another replica holds a live lease in the session.
    async fn claim_next_run(&self, session_id: &str, lease: &Lease) -> Result<Option<RunRecord>, StoreError>;
    /// Extends a lease; `false` when the run is no longer running under it.
    async fn renew_lease(&self, run_id: &str, lease: &Lease) -> Result<bool, StoreError>;
    /// Starts the next attempt of a run this owner holds (attempt + 1, lease
    /// extended); `false` when the lease was lost.
    async fn next_attempt(&self, run_id: &str, lease: &Lease) -> Result<bool, StoreError>;
    /// Expires every lease of `owner` at once, so another replica (or the
    /// next start) takes its runs over immediately.
    async fn release_leases(&self, owner: &str) -> Result<(), StoreError>;
    /// Queued and running runs of a session, oldest first.
    async fn active_runs(&self, session_id: &str) -> Result<Vec<RunRecord>, StoreError>;
    /// Commits the reply and completes the run, in one transaction. Fails with
    /// [`StoreError::Conflict`] when the run is no longer running.
    async fn complete_run(&self, completion: RunCompletion) -> Result<MessageRecord, StoreError>;
    /// Moves a run that is not yet terminal to `failed` or `cancelled`;
    /// returns whether it changed.
    async fn finish_run(
        &self,
        run_id: &str,
        status: crate::domain::RunStatus,
        error: Option<String>,
    ) -> Result<bool, StoreError>;
    /// The stored reply of a run, if any.
    async fn find_reply(&self, run_id: &str) -> Result<Option<MessageRecord>, StoreError>;
    /// Sessions with work nobody is doing: a run whose lease expired, or a
    /// queued run older than `stale_ms` with no live run in the session.
    async fn orphaned_sessions(&self, stale_ms: i64) -> Result<Vec<String>, StoreError>;
}
