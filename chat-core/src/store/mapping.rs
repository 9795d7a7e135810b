//! Rows to domain types: the only place stored status and role names are read.

use sea_orm::{ConnectionTrait, DbErr, EntityTrait, PrimaryKeyTrait};

use super::StoreError;
use super::entity::{
    messages as message, refresh_tokens as refresh_token, runs as run, sessions as session, users as user,
};
use super::records::{RefreshToken, User};
use crate::domain::{
    Assignee, ClientMsgId, Concurrency, Message, MessageId, MessageRole, Run, RunId, RunStatus, Session,
    SessionId, SessionStatus, UserId,
};

pub(super) fn unknown(what: &str, value: &str) -> StoreError {
    StoreError::Other(DbErr::Type(format!("unknown {what} `{value}` in the database")))
}

/// The row of `E` whose primary key is `id`, as the domain type `T`.
pub(super) async fn find_by_id<E, T>(db: &impl ConnectionTrait, id: String) -> Result<Option<T>, StoreError>
where
    E: EntityTrait,
    <E::PrimaryKey as PrimaryKeyTrait>::ValueType: From<String>,
    T: TryFrom<E::Model, Error = StoreError>,
{
    E::find_by_id(id).one(db).await?.map(T::try_from).transpose()
}

impl TryFrom<session::Model> for Session {
    type Error = StoreError;

    fn try_from(row: session::Model) -> Result<Self, StoreError> {
        Ok(Self {
            status: SessionStatus::parse(&row.status)
                .ok_or_else(|| unknown("session status", &row.status))?,
            id: SessionId::from_trusted(row.id),
            owner_id: UserId::from_trusted(row.owner_id),
            title: row.title,
            agent: row.agent,
            metadata: row.metadata,
            resolution_notes: row.resolution_notes,
            last_seq: row.last_seq,
            created_at: row.created_at,
            updated_at: row.updated_at,
            // Policies are checked on the way in; an unknown one means none.
            concurrency: row.concurrency.as_deref().and_then(Concurrency::parse),
            ended_at: row.ended_at,
            assignee: row.assignee_id.map(|id| Assignee {
                id: UserId::from_trusted(id),
                name: row.assignee_name.unwrap_or_default(),
            }),
            waiting_since: row.waiting_since,
        })
    }
}

impl TryFrom<message::Model> for Message {
    type Error = StoreError;

    fn try_from(row: message::Model) -> Result<Self, StoreError> {
        Ok(Self {
            role: MessageRole::parse(&row.role).ok_or_else(|| unknown("message role", &row.role))?,
            id: MessageId::from_trusted(row.id),
            session_id: SessionId::from_trusted(row.session_id),
            seq: row.seq,
            agent: row.agent,
            content: row.content,
            client_msg_id: row.client_msg_id.map(ClientMsgId::from_trusted),
            run_id: row.run_id.map(RunId::from_trusted),
            created_at: row.created_at,
            first_delta_ms: row.first_delta_ms,
            duration_ms: row.duration_ms,
            tool_calls: row.tool_calls,
            metadata: row.metadata,
        })
    }
}

impl TryFrom<run::Model> for Run {
    type Error = StoreError;

    fn try_from(row: run::Model) -> Result<Self, StoreError> {
        Ok(Self {
            status: RunStatus::parse(&row.status).ok_or_else(|| unknown("run status", &row.status))?,
            id: RunId::from_trusted(row.id),
            session_id: SessionId::from_trusted(row.session_id),
            user_message_id: MessageId::from_trusted(row.user_message_id),
            user_seq: row.user_seq,
            agent: row.agent,
            attempt: u32::try_from(row.attempt).unwrap_or_default(),
            error: row.error,
            reply_message_id: row.reply_message_id.map(MessageId::from_trusted),
            created_at: row.created_at,
            started_at: row.started_at,
            first_delta_at: row.first_delta_at,
            finished_at: row.finished_at,
            lease_owner: row.lease_owner,
            lease_expires_at: row.lease_expires_at,
        })
    }
}

impl From<user::Model> for User {
    fn from(row: user::Model) -> Self {
        Self {
            id: UserId::from_trusted(row.id),
            username: row.username,
            password_hash: row.password_hash,
            created_at: row.created_at,
            operator: row.operator,
        }
    }
}

impl From<refresh_token::Model> for RefreshToken {
    fn from(row: refresh_token::Model) -> Self {
        Self {
            id: row.id,
            user_id: UserId::from_trusted(row.user_id),
            family_id: row.family_id,
            token_hash: row.token_hash,
            expires_at: row.expires_at,
            created_at: row.created_at,
            revoked_at: row.revoked_at,
            replaced_by: row.replaced_by,
        }
    }
}

/// Maps every row, failing on the first that does not map.
pub(super) fn all<M, T: TryFrom<M, Error = StoreError>>(rows: Vec<M>) -> Result<Vec<T>, StoreError> {
    rows.into_iter().map(T::try_from).collect()
}

/// The status arguments of the Postgres turn functions (migration
/// `m20261201_000007`), as `text[]` literals: the rules in stored names.
/// They never change while the process runs, so they are built once.
pub(super) struct TurnStatuses {
    /// Session statuses that take messages.
    pub accepting: String,
    /// Session statuses in which a user message starts a run.
    pub starting: String,
    /// Run statuses that count as active (queued or running).
    pub active: String,
    /// Run statuses a run may complete from.
    pub completable: String,
}

pub(super) static TURN_STATUSES: std::sync::LazyLock<TurnStatuses> = std::sync::LazyLock::new(|| {
    let sessions = |rule: fn(SessionStatus) -> bool| {
        pg_array(
            SessionStatus::ALL
                .iter()
                .copied()
                .filter(|s| rule(*s))
                .map(SessionStatus::as_str),
        )
    };
    TurnStatuses {
        accepting: sessions(SessionStatus::can_accept_messages),
        starting: sessions(SessionStatus::starts_runs),
        active: pg_array(super::runs::active_statuses()),
        completable: pg_array(names(
            &RunStatus::allowing(RunStatus::Completed),
            RunStatus::as_str,
        )),
    }
});

/// Stored names as a Postgres `text[]` literal, for a `$n::text[]`
/// parameter (the names are plain identifiers: nothing to quote).
fn pg_array<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    let names: Vec<&str> = names.into_iter().collect();
    debug_assert!(
        names
            .iter()
            .all(|n| !n.is_empty() && *n != "null" && n.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')),
        "not a plain name in {names:?}"
    );
    format!("{{{}}}", names.join(","))
}

/// The stored names of `statuses`, for `IN (…)` filters.
pub(super) fn names<S: Copy>(statuses: &[S], name: impl Fn(S) -> &'static str) -> Vec<&'static str> {
    statuses.iter().map(|s| name(*s)).collect()
}
