//! [`MessageStore`] over sea-orm, and the `last_seq` bump every
//! message-writing transaction starts with on SQLite (on Postgres the
//! message and the reply are each one call of a function that locks the
//! session row first).

use async_trait::async_trait;
use sea_orm::sea_query::{Expr, ExprTrait, Func, Query, SimpleExpr};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseTransaction, DbBackend, EntityTrait,
    FromQueryResult, IntoActiveModel, Iterable, QueryFilter, QueryOrder, QuerySelect, QueryTrait,
    TransactionTrait,
};

use super::connection::column;
use super::entity::{messages as message, runs as run, sessions as session};
use super::mapping::{TURN_STATUSES, all, unknown};
use super::runs::active_statuses;
use super::{Appended, Lease, MessageQuery, MessageStore, NewMessage, SeaStore, StoreError};
use crate::domain::{ClientMsgId, Message, RunId, RunStatus, SessionId, SessionStatus, new_id, now_ms};

/// Longest title derived from a first message, in characters.
const TITLE_CHARS: usize = 60;

/// The session row as the message-writing transaction sees it, locked.
pub(super) struct SeqBump {
    pub seq: i64,
    pub title: String,
    pub agent: String,
    pub status: SessionStatus,
}

/// Bumps the session's `last_seq` and returns the new value with the
/// session's title, agent and status; this is the first statement of every
/// message-writing transaction on SQLite. The update locks the session row (the write
/// lock on SQLite) until the transaction ends, so the status read here cannot
/// change before the commit: a concurrent `end` either commits first and is
/// seen, or waits.
pub(super) async fn next_seq(
    txn: &DatabaseTransaction,
    session_id: &SessionId,
) -> Result<SeqBump, StoreError> {
    let now = now_ms();
    let returning = [
        Expr::col(session::Column::LastSeq),
        Expr::col(session::Column::Title),
        Expr::col(session::Column::Agent),
        Expr::col(session::Column::Status),
    ];
    let stmt = Query::update()
        .table(session::Entity)
        .value(
            session::Column::LastSeq,
            Expr::col(session::Column::LastSeq).add(1),
        )
        .value(session::Column::UpdatedAt, now)
        .and_where(Expr::col(session::Column::Id).eq(session_id.as_str()))
        .returning(Query::returning().exprs(returning))
        .to_owned();
    let row = txn
        .query_one(&stmt)
        .await?
        .ok_or(StoreError::NotFound("session"))?;
    let status: String = row.try_get_by_index(3).map_err(StoreError::Other)?;
    Ok(SeqBump {
        seq: row.try_get_by_index(0).map_err(StoreError::Other)?,
        title: row.try_get_by_index(1).map_err(StoreError::Other)?,
        agent: row.try_get_by_index(2).map_err(StoreError::Other)?,
        status: SessionStatus::parse(&status).ok_or_else(|| unknown("session status", &status))?,
    })
}

/// Inserts a message in a transaction that began with [`next_seq`], and
/// counts the session's active (queued or running) runs in the same
/// statement, which spares the transaction a `SELECT`. The count misses no
/// run: the session row is locked by the earlier `next_seq`, every
/// transaction that queues a run takes that lock first, and SQLite has one
/// writer at a time (on Postgres, where the turn's functions count in a
/// statement of their own after taking the lock, this would hold as well:
/// under READ COMMITTED each statement reads a snapshot of its own start).
/// It may still count a run
/// that a cancel or failure ends meanwhile (those take no session lock):
/// too high, never too low. At worst a new run waits in the queue instead of
/// being claimed at once, or the reject policy refuses a send as the run
/// ends (the separate `SELECT` this replaced had the same window).
pub(super) async fn insert_counting_active_runs(
    txn: &DatabaseTransaction,
    session_id: &SessionId,
    new: message::ActiveModel,
) -> Result<(message::Model, i64), StoreError> {
    let mut returning: Vec<SimpleExpr> = message::Column::iter().map(Expr::col).collect();
    let count_at = returning.len();
    let count = Query::select()
        .expr(Func::count(Expr::col(run::Column::Id)))
        .from(run::Entity)
        .and_where(Expr::col(run::Column::SessionId).eq(session_id.as_str()))
        .and_where(Expr::col(run::Column::Status).is_in(active_statuses()))
        .to_owned();
    returning.push(Expr::SubQuery(None, Box::new(count.into())));
    let mut insert = message::Entity::insert(new).into_query();
    insert.returning(Query::returning().exprs(returning));
    let row = txn
        .query_one(&insert)
        .await?
        .ok_or_else(|| StoreError::Other(sea_orm::DbErr::RecordNotInserted))?;
    let message = message::Model::from_query_result(&row, "").map_err(StoreError::Other)?;
    let active_runs = row.try_get_by_index(count_at).map_err(StoreError::Other)?;
    Ok((message, active_runs))
}

impl SeaStore {
    async fn find_by_client_msg_id(
        &self,
        session_id: &SessionId,
        client_msg_id: &ClientMsgId,
    ) -> Result<Option<Appended>, StoreError> {
        let Some(message) = message::Entity::find()
            .filter(message::Column::SessionId.eq(session_id.as_str()))
            .filter(message::Column::ClientMsgId.eq(client_msg_id.as_str()))
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
            message: message.try_into()?,
            run: run.map(TryInto::try_into).transpose()?,
            duplicate: true,
        }))
    }

    async fn insert_message(&self, new: &NewMessage) -> Result<Appended, StoreError> {
        match self.db.get_database_backend() {
            DbBackend::Postgres => self.insert_message_in_one_call(new).await,
            _ => self.insert_message_in_steps(new).await,
        }
    }

    /// Postgres: `chat_append_message` (migration `m20261201_000007`) runs
    /// the steps of [`Self::insert_message_in_steps`] in one round trip and
    /// one implicit transaction, with the rules passed in.
    async fn insert_message_in_one_call(&self, new: &NewMessage) -> Result<Appended, StoreError> {
        let now = now_ms();
        let (message_id, run_id) = (new_id(), new_id());
        let claim = new.claim.as_ref();
        let statuses = &*TURN_STATUSES;
        let (row, outcome) = self
            .call_turn_function(
                "SELECT seq, agent, status, outcome FROM chat_append_message($1, $2, $3::text[], $4::text[], \
                 $5::text[], $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)",
                [
                    new.session_id.as_str().into(),
                    now.into(),
                    statuses.accepting.as_str().into(),
                    statuses.starting.as_str().into(),
                    statuses.active.as_str().into(),
                    derive_title(&new.content).into(),
                    message_id.as_str().into(),
                    new.role.as_str().into(),
                    new.author.clone().into(),
                    new.content.as_str().into(),
                    new.client_msg_id.as_ref().map(ToString::to_string).into(),
                    new.metadata.clone().into(),
                    new.start_run.into(),
                    new.reject_if_busy.into(),
                    run_id.as_str().into(),
                    RunStatus::Queued.as_str().into(),
                    RunStatus::Running.as_str().into(),
                    claim.map(|lease| lease.owner.clone()).into(),
                    claim.map_or(0, |lease| lease.duration_ms).into(),
                ],
            )
            .await?;
        let (claimed, queued) = match outcome.as_str() {
            "claimed" => (true, true),
            "queued" => (false, true),
            "stored" => (false, false),
            "not_found" => return Err(StoreError::NotFound("session")),
            "busy" => return Err(StoreError::Busy),
            "refused" => {
                let status: String = column(&row, "status")?;
                return Err(StoreError::Conflict(format!("session is {status}")));
            }
            other => return Err(unknown("append outcome", other)),
        };
        let seq = column(&row, "seq")?;
        let message = message_row(new, message_id, seq, now);
        let run = queued
            .then(|| -> Result<_, StoreError> {
                let agent = column(&row, "agent")?;
                Ok(run_row(run_id, &message, agent, claim.filter(|_| claimed), now))
            })
            .transpose()?;
        Ok(Appended {
            message: message.try_into()?,
            run: run.map(TryInto::try_into).transpose()?,
            duplicate: false,
        })
    }

    /// SQLite: the session row bumped (which takes the write lock), the
    /// message inserted while counting the session's active runs, and the
    /// run, each a statement of one transaction.
    async fn insert_message_in_steps(&self, new: &NewMessage) -> Result<Appended, StoreError> {
        let txn = self.db.begin().await?;
        let SeqBump {
            seq,
            title,
            agent,
            status,
        } = next_seq(&txn, &new.session_id).await?;
        if !status.can_accept_messages() {
            txn.rollback().await?;
            return Err(StoreError::Conflict(format!("session is {status}")));
        }
        // While a person handles the session, user messages wait for them.
        let start_run = new.start_run && status.starts_runs();
        let now = now_ms();
        if seq == 1 && title.is_empty() {
            session::Entity::update_many()
                .col_expr(session::Column::Title, Expr::value(derive_title(&new.content)))
                .filter(session::Column::Id.eq(new.session_id.as_str()))
                .exec(&txn)
                .await?;
        }
        let message = message_row(new, new_id(), seq, now)
            .into_active_model()
            .reset_all();
        let (message, active_runs) = insert_counting_active_runs(&txn, &new.session_id, message).await?;
        let idle = start_run && active_runs == 0;
        if start_run && new.reject_if_busy && !idle {
            txn.rollback().await?;
            return Err(StoreError::Busy);
        }
        // Nothing else to run in the session (the row lock keeps it so until
        // the commit): the new run is claimed as it is queued.
        let claim = new.claim.as_ref().filter(|_| idle);
        let run = if start_run {
            let run = run_row(new_id(), &message, agent, claim, now);
            Some(run.into_active_model().reset_all().insert(&txn).await?)
        } else {
            None
        };
        txn.commit().await?;
        Ok(Appended {
            message: message.try_into()?,
            run: run.map(TryInto::try_into).transpose()?,
            duplicate: false,
        })
    }
}

/// The row `new` is stored as, at `seq`.
fn message_row(new: &NewMessage, id: String, seq: i64, now: i64) -> message::Model {
    message::Model {
        id,
        session_id: new.session_id.to_string(),
        seq,
        role: new.role.as_str().to_owned(),
        agent: new.author.clone(),
        content: new.content.clone(),
        client_msg_id: new.client_msg_id.as_ref().map(ToString::to_string),
        run_id: None,
        created_at: now,
        first_delta_ms: None,
        duration_ms: None,
        tool_calls: None,
        metadata: new.metadata.clone(),
    }
}

/// The run a user message starts: claimed under `claim` when given,
/// otherwise queued.
fn run_row(
    id: String,
    message: &message::Model,
    agent: String,
    claim: Option<&Lease>,
    now: i64,
) -> run::Model {
    run::Model {
        id,
        session_id: message.session_id.clone(),
        user_message_id: message.id.clone(),
        user_seq: message.seq,
        agent,
        status: match claim {
            Some(_) => RunStatus::Running,
            None => RunStatus::Queued,
        }
        .as_str()
        .to_owned(),
        attempt: i32::from(claim.is_some()),
        error: None,
        reply_message_id: None,
        created_at: now,
        started_at: claim.map(|_| now),
        first_delta_at: None,
        finished_at: None,
        lease_owner: claim.map(|lease| lease.owner.clone()),
        lease_expires_at: claim.map(|lease| now + lease.duration_ms),
    }
}

#[async_trait]
impl MessageStore for SeaStore {
    async fn list_messages(&self, query: MessageQuery) -> Result<Vec<Message>, StoreError> {
        let limit = query.limit.clamp(1, 1000);
        let mut select =
            message::Entity::find().filter(message::Column::SessionId.eq(query.session_id.as_str()));
        if let Some(after) = query.after_seq {
            select = select.filter(message::Column::Seq.gt(after));
        }
        if let Some(before) = query.before_seq {
            select = select.filter(message::Column::Seq.lt(before));
        }
        if query.after_seq.is_some() {
            // Forward from after_seq.
            return all(select
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
        all(messages)
    }

    async fn append_message(&self, new: NewMessage) -> Result<Appended, StoreError> {
        // A repeated client_msg_id is rare: it is looked up only when the
        // insert fails, on the unique index or because the session no
        // longer takes (or is busy with) messages, where the original's ack
        // must still come back.
        match self.insert_message(&new).await {
            Err(StoreError::Other(e)) if StoreError::is_unique_violation(&e) => {
                // Sent before, or a concurrent send with the same client_msg_id won the race.
                let id = new.client_msg_id.as_ref().ok_or(StoreError::Other(e))?;
                self.find_by_client_msg_id(&new.session_id, id)
                    .await?
                    .ok_or_else(|| StoreError::Conflict("concurrent duplicate send".into()))
            }
            Err(refused @ (StoreError::Conflict(_) | StoreError::Busy)) => match &new.client_msg_id {
                Some(id) => Ok(self
                    .find_by_client_msg_id(&new.session_id, id)
                    .await?
                    .ok_or(refused)?),
                None => Err(refused),
            },
            other => other,
        }
    }

    async fn find_reply(&self, run_id: &RunId) -> Result<Option<Message>, StoreError> {
        message::Entity::find()
            .filter(message::Column::RunId.eq(run_id.as_str()))
            .one(&self.db)
            .await?
            .map(Message::try_from)
            .transpose()
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_take_the_first_line_and_are_bounded() {
        assert_eq!(derive_title("\n  hello there \nmore"), "hello there");
        assert_eq!(derive_title(&"x".repeat(70)).chars().count(), TITLE_CHARS + 1);
    }
}
