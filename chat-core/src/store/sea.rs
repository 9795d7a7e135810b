//! [`ChatStore`] over sea-orm: one implementation for Postgres and SQLite.
//!
//! Every write transaction starts with a write (the `last_seq` bump), so on
//! SQLite it takes the write lock first and waits on `busy_timeout` rather
//! than failing to upgrade a read lock.

use std::time::Duration;

use async_trait::async_trait;
use sea_orm::sea_query::{Expr, ExprTrait, Query};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectOptions, ConnectionTrait, Database, DatabaseConnection,
    DatabaseTransaction, DbBackend, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set, TransactionTrait,
};

use super::entity::{external_identity, message, refresh_token, run, session, user};
use super::*;
use crate::domain::{MessageRole, RunStatus, SessionStatus, new_id, now_ms};

/// Longest title derived from a first message, in characters.
const TITLE_CHARS: usize = 60;

/// Opens a pool for `url`, creating the SQLite file's folder when needed.
pub async fn connect(
    url: &str,
    max_connections: u32,
    acquire_timeout: Duration,
) -> Result<DatabaseConnection, StoreError> {
    let sqlite = url.starts_with("sqlite:");
    if sqlite
        && let Some(parent) =
            sqlite_path(url).and_then(|p| std::path::Path::new(p).parent().map(|p| p.to_owned()))
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(&parent).map_err(|e| {
            StoreError::Unavailable(sea_orm::DbErr::Custom(format!(
                "failed to create {}: {e}",
                parent.display()
            )))
        })?;
    }
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .max_connections(if sqlite {
            std::cmp::min(max_connections, 8)
        } else {
            max_connections
        })
        .min_connections(1)
        .connect_timeout(acquire_timeout)
        .acquire_timeout(acquire_timeout)
        .sqlx_logging(false);
    if sqlite {
        options.map_sqlx_sqlite_opts(|opts| {
            opts.journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(true)
        });
    }
    Ok(Database::connect(options).await?)
}

fn sqlite_path(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next()?;
    (!path.is_empty() && path != ":memory:").then_some(path)
}

/// The sea-orm store.
#[derive(Clone, Debug)]
pub struct SeaStore {
    db: DatabaseConnection,
}

impl SeaStore {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }

    pub fn connection(&self) -> &DatabaseConnection {
        &self.db
    }

    /// Bumps the session's `last_seq` and returns the new value with the
    /// session's title and agent; this is the first statement of every
    /// message-writing transaction.
    async fn next_seq(
        txn: &DatabaseTransaction,
        session_id: &str,
    ) -> Result<(i64, String, String), StoreError> {
        let now = now_ms();
        let stmt = Query::update()
            .table(session::Entity)
            .value(
                session::Column::LastSeq,
                Expr::col(session::Column::LastSeq).add(1),
            )
            .value(session::Column::UpdatedAt, now)
            .and_where(Expr::col(session::Column::Id).eq(session_id))
            .returning(Query::returning().columns([
                session::Column::LastSeq,
                session::Column::Title,
                session::Column::Agent,
            ]))
            .to_owned();
        let row = txn
            .query_one(&stmt)
            .await?
            .ok_or(StoreError::NotFound("session"))?;
        Ok((
            row.try_get::<i64>("", "last_seq").map_err(StoreError::Other)?,
            row.try_get::<String>("", "title").map_err(StoreError::Other)?,
            row.try_get::<String>("", "agent").map_err(StoreError::Other)?,
        ))
    }

    async fn find_by_client_msg_id(
        &self,
        session_id: &str,
        client_msg_id: &str,
    ) -> Result<Option<Appended>, StoreError> {
        let Some(message) = message::Entity::find()
            .filter(message::Column::SessionId.eq(session_id))
            .filter(message::Column::ClientMsgId.eq(client_msg_id))
            .one(&self.db)
            .await?
        else {
            return Ok(None);
        };
        let run = run::Entity::find()
            .filter(run::Column::UserMessageId.eq(message.id.clone()))
            .one(&self.db)
            .await?;
        Ok(Some(Appended {
            message,
            run,
            duplicate: true,
        }))
    }

    async fn insert_message(&self, new: &NewMessage) -> Result<Appended, StoreError> {
        let txn = self.db.begin().await?;
        let (seq, title, agent) = Self::next_seq(&txn, &new.session_id).await?;
        let now = now_ms();
        if new.reject_if_busy && !active_runs_in(&txn, &new.session_id).await?.is_empty() {
            txn.rollback().await?;
            return Err(StoreError::Busy);
        }
        if seq == 1 && title.is_empty() {
            session::Entity::update_many()
                .col_expr(session::Column::Title, Expr::value(derive_title(&new.content)))
                .filter(session::Column::Id.eq(new.session_id.clone()))
                .exec(&txn)
                .await?;
        }
        let message = message::ActiveModel {
            id: Set(new_id()),
            session_id: Set(new.session_id.clone()),
            seq: Set(seq),
            role: Set(new.role.as_str().to_owned()),
            agent: Set(None),
            content: Set(new.content.clone()),
            client_msg_id: Set(new.client_msg_id.clone()),
            run_id: Set(None),
            created_at: Set(now),
            first_delta_ms: Set(None),
            duration_ms: Set(None),
            tool_calls: Set(None),
        }
        .insert(&txn)
        .await?;
        let run = if new.start_run {
            Some(
                run::ActiveModel {
                    id: Set(new_id()),
                    session_id: Set(new.session_id.clone()),
                    user_message_id: Set(message.id.clone()),
                    user_seq: Set(seq),
                    agent: Set(agent),
                    status: Set(RunStatus::Queued.as_str().to_owned()),
                    attempt: Set(0),
                    error: Set(None),
                    reply_message_id: Set(None),
                    created_at: Set(now),
                    started_at: Set(None),
                    first_delta_at: Set(None),
                    finished_at: Set(None),
                    lease_owner: Set(None),
                    lease_expires_at: Set(None),
                }
                .insert(&txn)
                .await?,
            )
        } else {
            None
        };
        txn.commit().await?;
        Ok(Appended {
            message,
            run,
            duplicate: false,
        })
    }
}

/// Queued and running runs of a session, oldest first.
async fn active_runs_in(db: &impl ConnectionTrait, session_id: &str) -> Result<Vec<RunRecord>, StoreError> {
    Ok(run::Entity::find()
        .filter(run::Column::SessionId.eq(session_id))
        .filter(run::Column::Status.is_in([RunStatus::Queued.as_str(), RunStatus::Running.as_str()]))
        .order_by_asc(run::Column::UserSeq)
        .all(db)
        .await?)
}

/// A live refresh token row `id` in `family_id`.
fn new_refresh_token(
    id: String,
    user_id: &str,
    family_id: &str,
    token_hash: &str,
    expires_at: i64,
) -> refresh_token::ActiveModel {
    refresh_token::ActiveModel {
        id: Set(id),
        user_id: Set(user_id.to_owned()),
        family_id: Set(family_id.to_owned()),
        token_hash: Set(token_hash.to_owned()),
        expires_at: Set(expires_at),
        created_at: Set(now_ms()),
        revoked_at: Set(None),
        replaced_by: Set(None),
    }
}

async fn find_external_user(
    db: &impl ConnectionTrait,
    issuer: &str,
    subject: &str,
) -> Result<Option<String>, StoreError> {
    Ok(external_identity::Entity::find()
        .filter(external_identity::Column::Issuer.eq(issuer))
        .filter(external_identity::Column::Subject.eq(subject))
        .one(db)
        .await?
        .map(|identity| identity.user_id))
}

/// Revokes the tokens of a family that are not revoked yet.
async fn revoke_family(db: &impl ConnectionTrait, family_id: &str, now: i64) -> Result<(), StoreError> {
    refresh_token::Entity::update_many()
        .col_expr(refresh_token::Column::RevokedAt, Expr::value(now))
        .filter(refresh_token::Column::FamilyId.eq(family_id))
        .filter(refresh_token::Column::RevokedAt.is_null())
        .exec(db)
        .await?;
    Ok(())
}

fn is_foreign_key_violation(err: &sea_orm::DbErr) -> bool {
    matches!(
        err.sql_err(),
        Some(sea_orm::SqlErr::ForeignKeyConstraintViolation(_))
    )
}

fn derive_title(content: &str) -> String {
    let line = content
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or_default();
    let mut title: String = line.chars().take(TITLE_CHARS).collect();
    if line.chars().count() > TITLE_CHARS {
        title.push('…');
    }
    title
}

fn encode_cursor(s: &SessionRecord) -> String {
    format!("{}_{}", s.updated_at, s.id)
}

fn decode_cursor(cursor: &str) -> Option<(i64, String)> {
    let (at, id) = cursor.split_once('_')?;
    Some((at.parse().ok()?, uuid::Uuid::parse_str(id).ok()?.to_string()))
}

#[async_trait]
impl ChatStore for SeaStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.db.execute_unprepared("SELECT 1").await?;
        Ok(())
    }

    async fn count_queued_runs(&self) -> Result<u64, StoreError> {
        use sea_orm::PaginatorTrait;
        Ok(run::Entity::find()
            .filter(run::Column::Status.eq(RunStatus::Queued.as_str()))
            .count(&self.db)
            .await?)
    }

    fn record_pool_metrics(&self) {
        let (size, idle) = match self.db.get_database_backend() {
            DbBackend::Postgres => {
                let pool = self.db.get_postgres_connection_pool();
                (pool.size(), pool.num_idle())
            }
            DbBackend::Sqlite => {
                let pool = self.db.get_sqlite_connection_pool();
                (pool.size(), pool.num_idle())
            }
            _ => return,
        };
        let idle = u32::try_from(idle).unwrap_or(u32::MAX);
        metrics::gauge!("chat_db_pool_connections", "state" => "idle").set(f64::from(idle));
        metrics::gauge!("chat_db_pool_connections", "state" => "in_use")
            .set(f64::from(size.saturating_sub(idle)));
    }

    async fn create_user(&self, username: &str, password_hash: &str) -> Result<UserRecord, StoreError> {
        let model = user::ActiveModel {
            id: Set(new_id()),
            username: Set(username.to_owned()),
            password_hash: Set(password_hash.to_owned()),
            created_at: Set(now_ms()),
        };
        match model.insert(&self.db).await {
            Ok(user) => Ok(user),
            Err(e) if StoreError::is_unique_violation(&e) => {
                Err(StoreError::Conflict("username is taken".into()))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn find_user(&self, username: &str) -> Result<Option<UserRecord>, StoreError> {
        Ok(user::Entity::find()
            .filter(user::Column::Username.eq(username))
            .one(&self.db)
            .await?)
    }

    // === refresh tokens ===

    async fn issue_refresh_token(
        &self,
        user_id: &str,
        token_hash: &str,
        expires_at: i64,
    ) -> Result<RefreshTokenRecord, StoreError> {
        let model = new_refresh_token(new_id(), user_id, &new_id(), token_hash, expires_at);
        match model.insert(&self.db).await {
            Ok(token) => Ok(token),
            Err(e) if is_foreign_key_violation(&e) => Err(StoreError::NotFound("user")),
            Err(e) => Err(e.into()),
        }
    }

    async fn rotate_refresh_token(
        &self,
        token_hash: &str,
        next_hash: &str,
        expires_at: i64,
    ) -> Result<Rotation, StoreError> {
        let txn = self.db.begin().await?;
        let now = now_ms();
        let next_id = new_id();
        // A conditional write first: of concurrent rotations of one token,
        // exactly one matches; the others find it revoked below.
        let rotated = refresh_token::Entity::update_many()
            .col_expr(refresh_token::Column::RevokedAt, Expr::value(now))
            .col_expr(refresh_token::Column::ReplacedBy, Expr::value(next_id.clone()))
            .filter(refresh_token::Column::TokenHash.eq(token_hash))
            .filter(refresh_token::Column::RevokedAt.is_null())
            .filter(refresh_token::Column::ExpiresAt.gt(now))
            .exec(&txn)
            .await?;
        let Some(current) = refresh_token::Entity::find()
            .filter(refresh_token::Column::TokenHash.eq(token_hash))
            .one(&txn)
            .await?
        else {
            txn.rollback().await?;
            return Ok(Rotation::Invalid);
        };
        if rotated.rows_affected == 1 {
            let next = new_refresh_token(
                next_id,
                &current.user_id,
                &current.family_id,
                next_hash,
                expires_at,
            )
            .insert(&txn)
            .await?;
            txn.commit().await?;
            return Ok(Rotation::Rotated(next));
        }
        if current.revoked_at.is_none() {
            // Unrevoked but not rotated: it expired.
            txn.rollback().await?;
            return Ok(Rotation::Invalid);
        }
        revoke_family(&txn, &current.family_id, now).await?;
        txn.commit().await?;
        Ok(Rotation::Reused)
    }

    async fn revoke_refresh_family(&self, token_hash: &str) -> Result<bool, StoreError> {
        let Some(token) = refresh_token::Entity::find()
            .filter(refresh_token::Column::TokenHash.eq(token_hash))
            .one(&self.db)
            .await?
        else {
            return Ok(false);
        };
        revoke_family(&self.db, &token.family_id, now_ms()).await?;
        Ok(true)
    }

    // === external identities ===

    async fn ensure_external_user(&self, issuer: &str, subject: &str) -> Result<(String, bool), StoreError> {
        if let Some(user_id) = find_external_user(&self.db, issuer, subject).await? {
            return Ok((user_id, false));
        }
        let now = now_ms();
        let user_id = new_id();
        let txn = self.db.begin().await?;
        let inserted = async {
            user::ActiveModel {
                id: Set(user_id.clone()),
                username: Set(format!("ext-{}", uuid::Uuid::new_v4().simple())),
                // Not a PHC string: no password ever verifies.
                password_hash: Set(String::new()),
                created_at: Set(now),
            }
            .insert(&txn)
            .await?;
            external_identity::ActiveModel {
                id: Set(new_id()),
                issuer: Set(issuer.to_owned()),
                subject: Set(subject.to_owned()),
                user_id: Set(user_id.clone()),
                created_at: Set(now),
            }
            .insert(&txn)
            .await
        }
        .await;
        match inserted {
            Ok(_) => {
                txn.commit().await?;
                Ok((user_id, true))
            }
            Err(e) if StoreError::is_unique_violation(&e) => {
                // A concurrent first sight won the race: use its user.
                txn.rollback().await?;
                find_external_user(&self.db, issuer, subject)
                    .await?
                    .map(|user_id| (user_id, false))
                    .ok_or_else(|| StoreError::Conflict("concurrent external user creation".into()))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn create_session(&self, new: NewSession) -> Result<SessionRecord, StoreError> {
        let now = now_ms();
        let model = session::ActiveModel {
            id: Set(new_id()),
            owner_id: Set(new.owner_id),
            title: Set(new.title),
            status: Set(SessionStatus::Active.as_str().to_owned()),
            agent: Set(new.agent),
            metadata: Set(new.metadata),
            resolution_notes: Set(None),
            last_seq: Set(0),
            created_at: Set(now),
            updated_at: Set(now),
            concurrency: Set(new.concurrency),
            ended_at: Set(None),
        };
        Ok(model.insert(&self.db).await?)
    }

    async fn get_session(&self, id: &str) -> Result<Option<SessionRecord>, StoreError> {
        Ok(session::Entity::find_by_id(id.to_owned()).one(&self.db).await?)
    }

    async fn list_sessions(&self, query: SessionQuery) -> Result<SessionPage, StoreError> {
        let limit = query.limit.clamp(1, 200);
        let mut select = session::Entity::find();
        if let Some(owner) = &query.owner_id {
            select = select.filter(session::Column::OwnerId.eq(owner.clone()));
        }
        select = match &query.filter {
            SessionFilter::All => select,
            SessionFilter::Status(status) => select.filter(session::Column::Status.eq(status.as_str())),
            SessionFilter::Unresolved => select.filter(session::Column::Status.is_in([
                SessionStatus::Active.as_str(),
                SessionStatus::PendingHuman.as_str(),
            ])),
            SessionFilter::UpdatedSince(since) => select.filter(session::Column::UpdatedAt.gte(*since)),
        };
        if let Some((at, id)) = query.cursor.as_deref().and_then(decode_cursor) {
            select = select.filter(
                Expr::col(session::Column::UpdatedAt)
                    .lt(at)
                    .or(Expr::col(session::Column::UpdatedAt)
                        .eq(at)
                        .and(Expr::col(session::Column::Id).lt(id))),
            );
        }
        let mut sessions = select
            .order_by_desc(session::Column::UpdatedAt)
            .order_by_desc(session::Column::Id)
            .limit(limit + 1)
            .all(&self.db)
            .await?;
        let next_cursor = if sessions.len() as u64 > limit {
            sessions.truncate(limit as usize);
            sessions.last().map(encode_cursor)
        } else {
            None
        };
        Ok(SessionPage {
            sessions,
            next_cursor,
        })
    }

    async fn resolve_session(&self, id: &str, notes: Option<String>) -> Result<SessionRecord, StoreError> {
        let result = session::Entity::update_many()
            .col_expr(
                session::Column::Status,
                Expr::value(SessionStatus::Resolved.as_str()),
            )
            .col_expr(session::Column::ResolutionNotes, Expr::value(notes))
            .col_expr(session::Column::UpdatedAt, Expr::value(now_ms()))
            .filter(session::Column::Id.eq(id))
            .exec(&self.db)
            .await?;
        if result.rows_affected == 0 {
            return Err(StoreError::NotFound("session"));
        }
        self.get_session(id).await?.ok_or(StoreError::NotFound("session"))
    }

    async fn set_session_status(&self, id: &str, status: SessionStatus) -> Result<SessionRecord, StoreError> {
        let now = now_ms();
        let ended_at = (status == SessionStatus::Ended).then_some(now);
        let result = session::Entity::update_many()
            .col_expr(session::Column::Status, Expr::value(status.as_str()))
            .col_expr(session::Column::EndedAt, Expr::value(ended_at))
            .col_expr(session::Column::UpdatedAt, Expr::value(now))
            .filter(session::Column::Id.eq(id))
            .exec(&self.db)
            .await?;
        if result.rows_affected == 0 {
            return Err(StoreError::NotFound("session"));
        }
        self.get_session(id).await?.ok_or(StoreError::NotFound("session"))
    }

    async fn set_session_agent(&self, id: &str, agent: &str) -> Result<SessionRecord, StoreError> {
        let result = session::Entity::update_many()
            .col_expr(session::Column::Agent, Expr::value(agent))
            .col_expr(session::Column::UpdatedAt, Expr::value(now_ms()))
            .filter(session::Column::Id.eq(id))
            .exec(&self.db)
            .await?;
        if result.rows_affected == 0 {
            return Err(StoreError::NotFound("session"));
        }
        self.get_session(id).await?.ok_or(StoreError::NotFound("session"))
    }

    async fn count_open_sessions(&self, owner_id: &str) -> Result<u64, StoreError> {
        use sea_orm::PaginatorTrait;
        Ok(session::Entity::find()
            .filter(session::Column::OwnerId.eq(owner_id))
            .filter(session::Column::Status.is_in([
                SessionStatus::Active.as_str(),
                SessionStatus::PendingHuman.as_str(),
            ]))
            .count(&self.db)
            .await?)
    }

    async fn expire_idle_sessions(&self, idle_before: i64) -> Result<Vec<String>, StoreError> {
        let idle = session::Entity::find()
            .select_only()
            .column(session::Column::Id)
            .filter(session::Column::Status.eq(SessionStatus::Active.as_str()))
            .filter(session::Column::UpdatedAt.lt(idle_before))
            .into_tuple::<String>()
            .all(&self.db)
            .await?;
        if idle.is_empty() {
            return Ok(idle);
        }
        // Re-checked in the update: a session touched since the read stays active.
        session::Entity::update_many()
            .col_expr(
                session::Column::Status,
                Expr::value(SessionStatus::Expired.as_str()),
            )
            .filter(session::Column::Id.is_in(idle.clone()))
            .filter(session::Column::Status.eq(SessionStatus::Active.as_str()))
            .filter(session::Column::UpdatedAt.lt(idle_before))
            .exec(&self.db)
            .await?;
        Ok(idle)
    }

    async fn delete_session(&self, id: &str) -> Result<(), StoreError> {
        let txn = self.db.begin().await?;
        let result = session::Entity::delete_by_id(id.to_owned()).exec(&txn).await?;
        if result.rows_affected == 0 {
            return Err(StoreError::NotFound("session"));
        }
        message::Entity::delete_many()
            .filter(message::Column::SessionId.eq(id))
            .exec(&txn)
            .await?;
        run::Entity::delete_many()
            .filter(run::Column::SessionId.eq(id))
            .exec(&txn)
            .await?;
        txn.commit().await?;
        Ok(())
    }

    async fn list_messages(&self, query: MessageQuery) -> Result<Vec<MessageRecord>, StoreError> {
        let limit = query.limit.clamp(1, 1000);
        let mut select =
            message::Entity::find().filter(message::Column::SessionId.eq(query.session_id.clone()));
        if let Some(after) = query.after_seq {
            select = select.filter(message::Column::Seq.gt(after));
        }
        if let Some(before) = query.before_seq {
            select = select.filter(message::Column::Seq.lt(before));
        }
        if query.after_seq.is_some() {
            // Forward from after_seq.
            return Ok(select
                .order_by_asc(message::Column::Seq)
                .limit(limit)
                .all(&self.db)
                .await?);
        }
        // Otherwise the last `limit` before before_seq (or the end), oldest first.
        let mut messages = select
            .order_by_desc(message::Column::Seq)
            .limit(limit)
            .all(&self.db)
            .await?;
        messages.reverse();
        Ok(messages)
    }

    async fn append_message(&self, new: NewMessage) -> Result<Appended, StoreError> {
        if let Some(id) = &new.client_msg_id
            && let Some(existing) = self.find_by_client_msg_id(&new.session_id, id).await?
        {
            return Ok(existing);
        }
        match self.insert_message(&new).await {
            Err(StoreError::Other(e)) if StoreError::is_unique_violation(&e) => {
                // A concurrent send with the same client_msg_id won the race.
                let id = new.client_msg_id.as_deref().ok_or(StoreError::Other(e))?;
                self.find_by_client_msg_id(&new.session_id, id)
                    .await?
                    .ok_or_else(|| StoreError::Conflict("concurrent duplicate send".into()))
            }
            other => other,
        }
    }

    async fn get_run(&self, run_id: &str) -> Result<Option<RunRecord>, StoreError> {
        Ok(run::Entity::find_by_id(run_id.to_owned()).one(&self.db).await?)
    }

    async fn claim_next_run(&self, session_id: &str, lease: &Lease) -> Result<Option<RunRecord>, StoreError> {
        let txn = self.db.begin().await?;
        // A no-op write on the session row serializes claims within the
        // session: a row lock on Postgres, the write lock on SQLite.
        let locked = session::Entity::update_many()
            .col_expr(session::Column::LastSeq, Expr::col(session::Column::LastSeq))
            .filter(session::Column::Id.eq(session_id))
            .exec(&txn)
            .await?;
        if locked.rows_affected == 0 {
            txn.rollback().await?;
            return Ok(None);
        }
        let now = now_ms();
        let active = active_runs_in(&txn, session_id).await?;
        let live_elsewhere = active
            .iter()
            .any(|r| r.status == RunStatus::Running.as_str() && r.lease_expires_at.unwrap_or(0) > now);
        let Some(next) = active.into_iter().next().filter(|_| !live_elsewhere) else {
            txn.commit().await?;
            return Ok(None);
        };
        let expires = now + lease.duration_ms;
        run::Entity::update_many()
            .col_expr(run::Column::Status, Expr::value(RunStatus::Running.as_str()))
            .col_expr(run::Column::Attempt, Expr::col(run::Column::Attempt).add(1))
            .col_expr(run::Column::StartedAt, Expr::value(now))
            .col_expr(run::Column::LeaseOwner, Expr::value(lease.owner.clone()))
            .col_expr(run::Column::LeaseExpiresAt, Expr::value(expires))
            .filter(run::Column::Id.eq(next.id.clone()))
            .exec(&txn)
            .await?;
        txn.commit().await?;
        Ok(Some(RunRecord {
            status: RunStatus::Running.as_str().to_owned(),
            attempt: next.attempt + 1,
            started_at: Some(now),
            lease_owner: Some(lease.owner.clone()),
            lease_expires_at: Some(expires),
            ..next
        }))
    }

    async fn renew_lease(&self, run_id: &str, lease: &Lease) -> Result<bool, StoreError> {
        let result = run::Entity::update_many()
            .col_expr(
                run::Column::LeaseExpiresAt,
                Expr::value(now_ms() + lease.duration_ms),
            )
            .filter(run::Column::Id.eq(run_id))
            .filter(run::Column::LeaseOwner.eq(lease.owner.clone()))
            .filter(run::Column::Status.eq(RunStatus::Running.as_str()))
            .exec(&self.db)
            .await?;
        Ok(result.rows_affected == 1)
    }

    async fn next_attempt(&self, run_id: &str, lease: &Lease) -> Result<bool, StoreError> {
        let now = now_ms();
        let result = run::Entity::update_many()
            .col_expr(run::Column::Attempt, Expr::col(run::Column::Attempt).add(1))
            .col_expr(run::Column::StartedAt, Expr::value(now))
            .col_expr(run::Column::LeaseExpiresAt, Expr::value(now + lease.duration_ms))
            .filter(run::Column::Id.eq(run_id))
            .filter(run::Column::LeaseOwner.eq(lease.owner.clone()))
            .filter(run::Column::Status.eq(RunStatus::Running.as_str()))
            .exec(&self.db)
            .await?;
        Ok(result.rows_affected == 1)
    }

    async fn release_leases(&self, owner: &str) -> Result<(), StoreError> {
        run::Entity::update_many()
            .col_expr(run::Column::LeaseExpiresAt, Expr::value(0i64))
            .filter(run::Column::LeaseOwner.eq(owner))
            .filter(run::Column::Status.eq(RunStatus::Running.as_str()))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    async fn active_runs(&self, session_id: &str) -> Result<Vec<RunRecord>, StoreError> {
        active_runs_in(&self.db, session_id).await
    }

    async fn complete_run(&self, completion: RunCompletion) -> Result<MessageRecord, StoreError> {
        let txn = self.db.begin().await?;
        let (seq, _, _) = Self::next_seq(&txn, &completion.session_id).await?;
        let now = now_ms();
        let started_at = run::Entity::find_by_id(completion.run_id.clone())
            .one(&txn)
            .await?
            .and_then(|r| r.started_at)
            .unwrap_or(now);
        let message = message::ActiveModel {
            id: Set(new_id()),
            session_id: Set(completion.session_id.clone()),
            seq: Set(seq),
            role: Set(MessageRole::Assistant.as_str().to_owned()),
            agent: Set(Some(completion.agent.clone())),
            content: Set(completion.content.clone()),
            client_msg_id: Set(None),
            run_id: Set(Some(completion.run_id.clone())),
            created_at: Set(now),
            first_delta_ms: Set(completion
                .first_delta_at
                .map(|at| std::cmp::max(at - started_at, 0))),
            duration_ms: Set(Some(std::cmp::max(now - started_at, 0))),
            tool_calls: Set(completion.tool_calls.clone()),
        }
        .insert(&txn)
        .await?;
        let updated = run::Entity::update_many()
            .col_expr(run::Column::Status, Expr::value(RunStatus::Completed.as_str()))
            .col_expr(run::Column::ReplyMessageId, Expr::value(message.id.clone()))
            .col_expr(run::Column::FinishedAt, Expr::value(now))
            .col_expr(run::Column::FirstDeltaAt, Expr::value(completion.first_delta_at))
            .filter(run::Column::Id.eq(completion.run_id.clone()))
            .filter(run::Column::Status.eq(RunStatus::Running.as_str()))
            .filter(run::Column::LeaseOwner.eq(completion.lease_owner.clone()))
            .exec(&txn)
            .await?;
        if updated.rows_affected != 1 {
            txn.rollback().await?;
            return Err(StoreError::Conflict(
                "run is no longer running under this lease".into(),
            ));
        }
        txn.commit().await?;
        Ok(message)
    }

    async fn finish_run(
        &self,
        run_id: &str,
        status: RunStatus,
        error: Option<String>,
    ) -> Result<bool, StoreError> {
        let result = run::Entity::update_many()
            .col_expr(run::Column::Status, Expr::value(status.as_str()))
            .col_expr(run::Column::Error, Expr::value(error))
            .col_expr(run::Column::FinishedAt, Expr::value(now_ms()))
            .filter(run::Column::Id.eq(run_id))
            .filter(run::Column::Status.is_in([
                RunStatus::Queued.as_str(),
                RunStatus::Running.as_str(),
                RunStatus::Retrying.as_str(),
            ]))
            .exec(&self.db)
            .await?;
        Ok(result.rows_affected == 1)
    }

    async fn find_reply(&self, run_id: &str) -> Result<Option<MessageRecord>, StoreError> {
        Ok(message::Entity::find()
            .filter(message::Column::RunId.eq(run_id))
            .one(&self.db)
            .await?)
    }

    async fn orphaned_sessions(&self, stale_ms: i64) -> Result<Vec<String>, StoreError> {
        let now = now_ms();
        let expired = run::Column::Status.eq(RunStatus::Running.as_str()).and(
            run::Column::LeaseExpiresAt
                .is_null()
                .or(run::Column::LeaseExpiresAt.lt(now)),
        );
        let stale = run::Column::Status
            .eq(RunStatus::Queued.as_str())
            .and(run::Column::CreatedAt.lt(now - stale_ms));
        Ok(run::Entity::find()
            .select_only()
            .column(run::Column::SessionId)
            .distinct()
            .filter(expired.or(stale))
            .into_tuple::<String>()
            .all(&self.db)
            .await?)
    }
}

/// Reports which database family a URL points at, for logs.
pub fn backend_name(db: &DatabaseConnection) -> &'static str {
    match db.get_database_backend() {
        DbBackend::Postgres => "postgres",
        DbBackend::Sqlite => "sqlite",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_take_the_first_line_and_are_bounded() {
        assert_eq!(derive_title("\n  hello there \nmore"), "hello there");
        assert_eq!(derive_title(&"x".repeat(70)).chars().count(), TITLE_CHARS + 1);
    }

    #[test]
    fn sqlite_paths_are_read_from_urls() {
        assert_eq!(
            sqlite_path("sqlite://data/chat.db?mode=rwc"),
            Some("data/chat.db")
        );
        assert_eq!(sqlite_path("sqlite::memory:"), None);
    }
}
