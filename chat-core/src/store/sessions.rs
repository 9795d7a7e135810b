//! [`SessionStore`] over sea-orm.

use async_trait::async_trait;
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, Set,
    TransactionTrait,
};

use super::entity::{messages as message, runs as run, sessions as session, users as user};
use super::mapping::{all, find_by_id, names};
use super::{
    NewSession, SeaStore, SessionFilter, SessionPage, SessionQuery, SessionStore, StoreError, Transition,
};
use crate::domain::{
    Actor, Assignee, Session, SessionChange, SessionId, SessionStatus, UserId, new_id, now_ms,
};

/// The stored names of the open statuses.
fn open_statuses() -> Vec<&'static str> {
    let open: Vec<_> = SessionStatus::ALL
        .iter()
        .copied()
        .filter(|s| s.is_open())
        .collect();
    names(&open, SessionStatus::as_str)
}

impl SeaStore {
    /// Sets one text column of a session (its title or agent), touching
    /// `updated_at`; returns the session as stored.
    async fn set_session_text(
        &self,
        id: &SessionId,
        column: session::Column,
        value: &str,
    ) -> Result<Session, StoreError> {
        let result = session::Entity::update_many()
            .col_expr(column, Expr::value(value))
            .col_expr(session::Column::UpdatedAt, Expr::value(now_ms()))
            .filter(session::Column::Id.eq(id.as_str()))
            .exec(&self.db)
            .await?;
        if result.rows_affected == 0 {
            return Err(StoreError::NotFound("session"));
        }
        self.stored_session(id).await
    }

    /// The session as stored now; gone is `NotFound`.
    async fn stored_session(&self, id: &SessionId) -> Result<Session, StoreError> {
        self.get_session(id).await?.ok_or(StoreError::NotFound("session"))
    }
}

#[async_trait]
impl SessionStore for SeaStore {
    async fn create_session(&self, new: NewSession) -> Result<Session, StoreError> {
        let now = now_ms();
        let model = session::ActiveModel {
            id: Set(new_id()),
            owner_id: Set(new.owner_id.into_string()),
            title: Set(new.title),
            status: Set(SessionStatus::Active.as_str().to_owned()),
            agent: Set(new.agent),
            metadata: Set(new.metadata),
            resolution_notes: Set(None),
            last_seq: Set(0),
            created_at: Set(now),
            updated_at: Set(now),
            concurrency: Set(new.concurrency.map(|c| c.as_str().to_owned())),
            ended_at: Set(None),
            assignee_id: Set(None),
            assignee_name: Set(None),
            waiting_since: Set(None),
        };
        model.insert(&self.db).await?.try_into()
    }

    async fn get_session(&self, id: &SessionId) -> Result<Option<Session>, StoreError> {
        find_by_id::<session::Entity, _>(&self.db, id.to_string()).await
    }

    async fn list_sessions(&self, query: SessionQuery) -> Result<SessionPage, StoreError> {
        let limit = query.limit.clamp(1, 200);
        let mut select = session::Entity::find();
        if let Some(owner) = &query.owner_id {
            select = select.filter(session::Column::OwnerId.eq(owner.as_str()));
        }
        select = match &query.filter {
            SessionFilter::All => select,
            SessionFilter::Status(status) => select.filter(session::Column::Status.eq(status.as_str())),
            SessionFilter::Unresolved => select.filter(session::Column::Status.is_in(open_statuses())),
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
        let mut sessions: Vec<Session> = all(select
            .order_by_desc(session::Column::UpdatedAt)
            .order_by_desc(session::Column::Id)
            .limit(limit + 1)
            .all(&self.db)
            .await?)?;
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

    async fn transition_session(
        &self,
        id: &SessionId,
        transition: Transition,
    ) -> Result<Session, StoreError> {
        let (change, by) = (transition.change, transition.by);
        let from = SessionStatus::allowing(change, by);
        let Some(next) = from.first().and_then(|s| s.next(change, by).ok()) else {
            return Err(StoreError::Conflict(format!(
                "no session allows {change:?} by {by:?}"
            )));
        };
        let now = now_ms();
        let mut update = session::Entity::update_many()
            .col_expr(session::Column::Status, Expr::value(next.as_str()))
            .col_expr(
                session::Column::EndedAt,
                Expr::value((next == SessionStatus::Ended).then_some(now)),
            )
            .col_expr(session::Column::UpdatedAt, Expr::value(now));
        if change == SessionChange::Resolve {
            update = update.col_expr(session::Column::ResolutionNotes, Expr::value(transition.notes));
        }
        // Waiting for a person starts (again) with an escalation and ends
        // with any other change; so does whoever held the session.
        let waiting_since = (next == SessionStatus::PendingHuman).then_some(now);
        update = update
            .col_expr(session::Column::WaitingSince, Expr::value(waiting_since))
            .col_expr(session::Column::AssigneeId, Expr::value(Option::<String>::None))
            .col_expr(session::Column::AssigneeName, Expr::value(Option::<String>::None));
        if let Some(agent) = transition.agent {
            update = update.col_expr(session::Column::Agent, Expr::value(agent));
        }
        let result = update
            .filter(session::Column::Id.eq(id.as_str()))
            .filter(session::Column::Status.is_in(names(&from, SessionStatus::as_str)))
            .exec(&self.db)
            .await?;
        let session = self.stored_session(id).await?;
        if result.rows_affected == 0 {
            let refused = session.status.next(change, by).err();
            return Err(StoreError::Conflict(refused.map_or_else(
                || format!("session is {}", session.status),
                |e| e.to_string(),
            )));
        }
        Ok(session)
    }

    async fn set_session_agent(&self, id: &SessionId, agent: &str) -> Result<Session, StoreError> {
        self.set_session_text(id, session::Column::Agent, agent).await
    }

    async fn count_open_sessions(&self, owner_id: &UserId) -> Result<u64, StoreError> {
        Ok(session::Entity::find()
            .filter(session::Column::OwnerId.eq(owner_id.as_str()))
            .filter(session::Column::Status.is_in(open_statuses()))
            .count(&self.db)
            .await?)
    }

    async fn expire_idle_sessions(&self, idle_before: i64) -> Result<Vec<SessionId>, StoreError> {
        let from = names(
            &SessionStatus::allowing(SessionChange::Expire, Actor::System),
            SessionStatus::as_str,
        );
        let idle = session::Entity::find()
            .select_only()
            .column(session::Column::Id)
            .filter(session::Column::Status.is_in(from.clone()))
            .filter(session::Column::UpdatedAt.lt(idle_before))
            .into_tuple::<String>()
            .all(&self.db)
            .await?;
        if idle.is_empty() {
            return Ok(Vec::new());
        }
        // Re-checked in the update: a session touched since the read stays active.
        session::Entity::update_many()
            .col_expr(
                session::Column::Status,
                Expr::value(SessionStatus::Expired.as_str()),
            )
            .filter(session::Column::Id.is_in(idle.clone()))
            .filter(session::Column::Status.is_in(from))
            .filter(session::Column::UpdatedAt.lt(idle_before))
            .exec(&self.db)
            .await?;
        Ok(idle.into_iter().map(SessionId::from_trusted).collect())
    }

    async fn delete_session(&self, id: &SessionId) -> Result<(), StoreError> {
        let txn = self.db.begin().await?;
        let result = session::Entity::delete_by_id(id.to_string()).exec(&txn).await?;
        if result.rows_affected == 0 {
            return Err(StoreError::NotFound("session"));
        }
        message::Entity::delete_many()
            .filter(message::Column::SessionId.eq(id.as_str()))
            .exec(&txn)
            .await?;
        run::Entity::delete_many()
            .filter(run::Column::SessionId.eq(id.as_str()))
            .exec(&txn)
            .await?;
        txn.commit().await?;
        Ok(())
    }

    // === titles and human handoff ===

    async fn rename_session(&self, id: &SessionId, title: &str) -> Result<Session, StoreError> {
        self.set_session_text(id, session::Column::Title, title).await
    }

    async fn claim_session(&self, id: &SessionId, assignee: &Assignee) -> Result<Session, StoreError> {
        // One conditional write: of operators claiming at once, one wins.
        let result = session::Entity::update_many()
            .col_expr(session::Column::AssigneeId, Expr::value(assignee.id.as_str()))
            .col_expr(session::Column::AssigneeName, Expr::value(assignee.name.as_str()))
            .filter(session::Column::Id.eq(id.as_str()))
            .filter(session::Column::Status.eq(SessionStatus::PendingHuman.as_str()))
            .filter(
                session::Column::AssigneeId
                    .is_null()
                    .or(session::Column::AssigneeId.eq(assignee.id.as_str())),
            )
            .exec(&self.db)
            .await?;
        let session = self.stored_session(id).await?;
        if result.rows_affected == 0 {
            return Err(StoreError::Conflict(match &session.assignee {
                _ if session.status != SessionStatus::PendingHuman => {
                    format!("session is {}; it is not waiting for a person", session.status)
                }
                Some(holder) => format!("{} already took this session", holder.name),
                None => "session could not be taken".to_owned(),
            }));
        }
        Ok(session)
    }

    async fn list_waiting(&self, limit: u64) -> Result<Vec<(Session, String)>, StoreError> {
        let rows = session::Entity::find()
            .filter(session::Column::Status.eq(SessionStatus::PendingHuman.as_str()))
            .order_by_asc(session::Column::WaitingSince)
            .order_by_asc(session::Column::Id)
            .limit(limit.clamp(1, 200))
            .all(&self.db)
            .await?;
        let owners: Vec<String> = rows.iter().map(|r| r.owner_id.clone()).collect();
        let names: std::collections::HashMap<String, String> = user::Entity::find()
            .filter(user::Column::Id.is_in(owners))
            .all(&self.db)
            .await?
            .into_iter()
            .map(|u| (u.id, u.username))
            .collect();
        rows.into_iter()
            .map(|row| {
                let owner = names.get(&row.owner_id).cloned().unwrap_or_default();
                Ok((Session::try_from(row)?, owner))
            })
            .collect()
    }
}

fn encode_cursor(s: &Session) -> String {
    format!("{}_{}", s.updated_at, s.id)
}

fn decode_cursor(cursor: &str) -> Option<(i64, String)> {
    let (at, id) = cursor.split_once('_')?;
    Some((at.parse().ok()?, uuid::Uuid::parse_str(id).ok()?.to_string()))
}
