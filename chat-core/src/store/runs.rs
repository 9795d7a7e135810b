//! [`RunStore`] over sea-orm: claims under a lease, attempts, outcomes.

use async_trait::async_trait;
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, DatabaseTransaction, DbBackend, EntityTrait,
    IntoActiveModel, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, TransactionTrait,
};

use super::connection::column;
use super::entity::{messages as message, runs as run, sessions as session};
use super::mapping::{TURN_STATUSES, all, find_by_id, names, unknown};
use super::messages::{insert_counting_active_runs, next_seq};
use super::{Completed, Lease, NextRun, RunCompletion, RunStore, SeaStore, StoreError};
use crate::domain::{MessageRole, Run, RunId, RunStatus, SessionId, new_id, now_ms};

/// An update of run `run_id` that applies only while it is running under `lease`.
fn held_run(run_id: &RunId, lease: &Lease) -> sea_orm::UpdateMany<run::Entity> {
    run::Entity::update_many()
        .filter(run::Column::Id.eq(run_id.as_str()))
        .filter(run::Column::LeaseOwner.eq(lease.owner.clone()))
        .filter(run::Column::Status.eq(RunStatus::Running.as_str()))
}

/// The stored names of the statuses a run may move to `next` from.
fn allowing(next: RunStatus) -> Vec<&'static str> {
    names(&RunStatus::allowing(next), RunStatus::as_str)
}

/// The stored names of the statuses in which a run is active (queued or running).
pub(super) fn active_statuses() -> Vec<&'static str> {
    let active: Vec<_> = RunStatus::ALL.iter().copied().filter(|s| s.is_active()).collect();
    names(&active, RunStatus::as_str)
}

/// Queued and running runs of a session, oldest first.
pub(super) async fn active_runs_in(
    db: &impl ConnectionTrait,
    session_id: &SessionId,
) -> Result<Vec<Run>, StoreError> {
    all(run::Entity::find()
        .filter(run::Column::SessionId.eq(session_id.as_str()))
        .filter(run::Column::Status.is_in(active_statuses()))
        .order_by_asc(run::Column::UserSeq)
        .all(db)
        .await?)
}

/// Claims the session's next run for `lease.owner` inside `txn`, which holds
/// the session row's lock: the oldest active run, unless another replica
/// holds a live lease in the session.
async fn claim_in(
    txn: &DatabaseTransaction,
    session_id: &SessionId,
    lease: &Lease,
) -> Result<Option<Run>, StoreError> {
    let now = now_ms();
    let active = active_runs_in(txn, session_id).await?;
    let live_elsewhere = active.iter().any(|r| r.holds_live_lease(now));
    let Some(next) = active
        .into_iter()
        .next()
        .filter(|r| !live_elsewhere && r.status.can_become(RunStatus::Running))
    else {
        return Ok(None);
    };
    let expires = now + lease.duration_ms;
    run::Entity::update_many()
        .col_expr(run::Column::Status, Expr::value(RunStatus::Running.as_str()))
        .col_expr(run::Column::Attempt, Expr::col(run::Column::Attempt).add(1))
        .col_expr(run::Column::StartedAt, Expr::value(now))
        .col_expr(run::Column::LeaseOwner, Expr::value(lease.owner.clone()))
        .col_expr(run::Column::LeaseExpiresAt, Expr::value(expires))
        .filter(run::Column::Id.eq(next.id.as_str()))
        .exec(txn)
        .await?;
    Ok(Some(Run {
        status: RunStatus::Running,
        attempt: next.attempt + 1,
        started_at: Some(now),
        lease_owner: Some(lease.owner.clone()),
        lease_expires_at: Some(expires),
        ..next
    }))
}

#[async_trait]
impl RunStore for SeaStore {
    async fn count_queued_runs(&self) -> Result<u64, StoreError> {
        Ok(run::Entity::find()
            .filter(run::Column::Status.eq(RunStatus::Queued.as_str()))
            .count(&self.db)
            .await?)
    }

    async fn runs_since(&self, session_id: &SessionId, after_seq: i64) -> Result<Vec<Run>, StoreError> {
        all(run::Entity::find()
            .filter(run::Column::SessionId.eq(session_id.as_str()))
            .filter(
                Condition::any()
                    .add(run::Column::UserSeq.gt(after_seq))
                    .add(run::Column::Status.is_in(active_statuses())),
            )
            .order_by_asc(run::Column::UserSeq)
            .all(&self.db)
            .await?)
    }

    async fn get_run(&self, run_id: &RunId) -> Result<Option<Run>, StoreError> {
        find_by_id::<run::Entity, _>(&self.db, run_id.to_string()).await
    }

    async fn claim_next_run(&self, session_id: &SessionId, lease: &Lease) -> Result<Option<Run>, StoreError> {
        let txn = self.db.begin().await?;
        // A no-op write on the session row serializes claims within the
        // session: a row lock on Postgres, the write lock on SQLite.
        let locked = session::Entity::update_many()
            .col_expr(session::Column::LastSeq, Expr::col(session::Column::LastSeq))
            .filter(session::Column::Id.eq(session_id.as_str()))
            .exec(&txn)
            .await?;
        if locked.rows_affected == 0 {
            txn.rollback().await?;
            return Ok(None);
        }
        let claimed = claim_in(&txn, session_id, lease).await?;
        txn.commit().await?;
        Ok(claimed)
    }

    async fn renew_lease(&self, run_id: &RunId, lease: &Lease) -> Result<bool, StoreError> {
        let result = held_run(run_id, lease)
            .col_expr(
                run::Column::LeaseExpiresAt,
                Expr::value(now_ms() + lease.duration_ms),
            )
            .exec(&self.db)
            .await?;
        Ok(result.rows_affected == 1)
    }

    async fn next_attempt(&self, run_id: &RunId, lease: &Lease) -> Result<bool, StoreError> {
        let now = now_ms();
        let result = held_run(run_id, lease)
            .col_expr(run::Column::Attempt, Expr::col(run::Column::Attempt).add(1))
            .col_expr(run::Column::StartedAt, Expr::value(now))
            .col_expr(run::Column::LeaseExpiresAt, Expr::value(now + lease.duration_ms))
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

    async fn active_runs(&self, session_id: &SessionId) -> Result<Vec<Run>, StoreError> {
        active_runs_in(&self.db, session_id).await
    }

    async fn complete_run(&self, completion: RunCompletion) -> Result<Completed, StoreError> {
        match self.db.get_database_backend() {
            DbBackend::Postgres => self.complete_run_in_one_call(completion).await,
            _ => self.complete_run_in_steps(completion).await,
        }
    }

    async fn finish_run(
        &self,
        run_id: &RunId,
        status: RunStatus,
        error: Option<String>,
        owner: Option<&str>,
    ) -> Result<bool, StoreError> {
        let mut update = run::Entity::update_many()
            .col_expr(run::Column::Status, Expr::value(status.as_str()))
            .col_expr(run::Column::Error, Expr::value(error))
            .col_expr(run::Column::FinishedAt, Expr::value(now_ms()))
            .filter(run::Column::Id.eq(run_id.as_str()))
            .filter(run::Column::Status.is_in(allowing(status)));
        if let Some(owner) = owner {
            update = update.filter(run::Column::LeaseOwner.eq(owner));
        }
        let result = update.exec(&self.db).await?;
        Ok(result.rows_affected == 1)
    }

    async fn orphaned_sessions(&self, stale_ms: i64) -> Result<Vec<SessionId>, StoreError> {
        let now = now_ms();
        let expired = run::Column::Status.eq(RunStatus::Running.as_str()).and(
            run::Column::LeaseExpiresAt
                .is_null()
                .or(run::Column::LeaseExpiresAt.lt(now)),
        );
        let stale = run::Column::Status
            .eq(RunStatus::Queued.as_str())
            .and(run::Column::CreatedAt.lt(now - stale_ms));
        let sessions = run::Entity::find()
            .select_only()
            .column(run::Column::SessionId)
            .distinct()
            .filter(expired.or(stale))
            .into_tuple::<String>()
            .all(&self.db)
            .await?;
        Ok(sessions.into_iter().map(SessionId::from_trusted).collect())
    }
}

impl SeaStore {
    /// Postgres: `chat_complete_run` (migration `m20261201_000007`) stores
    /// the reply and completes the run in one round trip and one implicit
    /// transaction. When another run waits in the session, it is claimed
    /// right after, in a transaction of its own ([`RunStore::claim_next_run`]):
    /// a message sent in between finds that run active and queues behind it,
    /// as it would have behind the completing one, and another replica's
    /// claim in between is refused by its live lease, or refuses this one.
    async fn complete_run_in_one_call(&self, completion: RunCompletion) -> Result<Completed, StoreError> {
        let now = now_ms();
        let reply = reply_row(&completion, new_id(), 0, now);
        let (row, outcome) = self
            .call_turn_function(
                "SELECT seq, active_runs, outcome FROM chat_complete_run($1, $2, $3, $4, $5::text[], \
                 $6::text[], $7, $8, $9, $10, $11, $12, $13, $14, $15)",
                [
                    reply.session_id.as_str().into(),
                    completion.run_id.as_str().into(),
                    completion.lease.owner.as_str().into(),
                    now.into(),
                    TURN_STATUSES.active.as_str().into(),
                    TURN_STATUSES.completable.as_str().into(),
                    RunStatus::Completed.as_str().into(),
                    reply.id.as_str().into(),
                    reply.role.as_str().into(),
                    reply.agent.clone().into(),
                    reply.content.as_str().into(),
                    reply.first_delta_ms.into(),
                    reply.duration_ms.into(),
                    reply.tool_calls.clone().into(),
                    completion.first_delta_at.into(),
                ],
            )
            .await?;
        match outcome.as_str() {
            "completed" => {}
            "not_found" => return Err(StoreError::NotFound("session")),
            "lost" => return Err(lease_lost()),
            other => return Err(unknown("completion outcome", other)),
        }
        let message = message::Model {
            seq: column(&row, "seq")?,
            ..reply
        };
        let active_runs: i64 = column(&row, "active_runs")?;
        // The completed run was one of them.
        let next = if active_runs == 1 {
            NextRun::QueueEmpty
        } else {
            // The reply is committed whatever happens here: a failed claim
            // is the caller's to retry.
            match self
                .claim_next_run(&completion.session_id, &completion.lease)
                .await
            {
                Ok(Some(run)) => NextRun::Claimed(Box::new(run)),
                Ok(None) => NextRun::QueueEmpty,
                Err(error) => {
                    tracing::warn!(session_id = %completion.session_id, %error, "failed to claim the next run");
                    NextRun::Unclaimed
                }
            }
        };
        Ok(Completed {
            message: message.try_into()?,
            next,
        })
    }

    /// SQLite: the session row bumped (the write lock), the reply inserted
    /// while counting the active runs, the run completed, and the next run
    /// claimed, in one transaction.
    async fn complete_run_in_steps(&self, completion: RunCompletion) -> Result<Completed, StoreError> {
        let txn = self.db.begin().await?;
        let bump = next_seq(&txn, &completion.session_id).await?;
        let now = now_ms();
        let reply = reply_row(&completion, new_id(), bump.seq, now)
            .into_active_model()
            .reset_all();
        // Counted before this run completes: it is one of them.
        let (message, active_runs) = insert_counting_active_runs(&txn, &completion.session_id, reply).await?;
        let updated = run::Entity::update_many()
            .col_expr(run::Column::Status, Expr::value(RunStatus::Completed.as_str()))
            .col_expr(run::Column::ReplyMessageId, Expr::value(message.id.clone()))
            .col_expr(run::Column::FinishedAt, Expr::value(now))
            .col_expr(run::Column::FirstDeltaAt, Expr::value(completion.first_delta_at))
            .filter(run::Column::Id.eq(completion.run_id.as_str()))
            .filter(run::Column::Status.is_in(allowing(RunStatus::Completed)))
            .filter(run::Column::LeaseOwner.eq(completion.lease.owner.clone()))
            .exec(&txn)
            .await?;
        if updated.rows_affected != 1 {
            txn.rollback().await?;
            return Err(lease_lost());
        }
        // The session row is still locked (by `next_seq`): a message sent
        // meanwhile is either queued already and claimed here, or commits
        // after this and finds the queue empty. When this run (running until
        // now) was the only active one, there is nothing to claim.
        let next = if active_runs == 1 {
            NextRun::QueueEmpty
        } else {
            claim_in(&txn, &completion.session_id, &completion.lease)
                .await?
                .map_or(NextRun::QueueEmpty, |run| NextRun::Claimed(Box::new(run)))
        };
        txn.commit().await?;
        Ok(Completed {
            message: message.try_into()?,
            next,
        })
    }
}

fn lease_lost() -> StoreError {
    StoreError::Conflict("run is no longer running under this lease".into())
}

/// The reply row of `completion`, at `seq`.
fn reply_row(completion: &RunCompletion, id: String, seq: i64, now: i64) -> message::Model {
    let started_at = completion.started_at.unwrap_or(now);
    message::Model {
        id,
        session_id: completion.session_id.to_string(),
        seq,
        role: MessageRole::Assistant.as_str().to_owned(),
        agent: Some(completion.agent.clone()),
        content: completion.content.clone(),
        client_msg_id: None,
        run_id: Some(completion.run_id.to_string()),
        created_at: now,
        first_delta_ms: completion
            .first_delta_at
            .map(|at| std::cmp::max(at - started_at, 0)),
        duration_ms: Some(std::cmp::max(now - started_at, 0)),
        tool_calls: completion.tool_calls.clone(),
        metadata: None,
    }
}
