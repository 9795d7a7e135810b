//! Session operations: create, list, read, rename, resolve, end, hand back,
//! delete, cancel a run, and the agents a session may use.

use chat_proto::agent::v1 as agent;

use super::{ChatCore, ServiceError};
use crate::domain::{
    Actor, Message, Principal, RunId, Session, SessionChange, UserId, validate_notes, validate_title,
};
use crate::store::{MessageQuery, NewSession, SessionFilter, SessionPage, SessionQuery, Transition};

/// Which service a session change comes through: `ChatService`, for the
/// session's owner or a service, or `OperatorService`, for the operator
/// holding the session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Owner,
    Operator,
}

impl ChatCore {
    /// Creates a session for `owner_id`, within the per-user cap.
    pub async fn create_session(&self, new: NewSession) -> Result<Session, ServiceError> {
        let cap = self.limits.max_sessions_per_user;
        if cap > 0 && self.store.count_open_sessions(&new.owner_id).await? >= cap {
            return Err(ServiceError::Conflict(format!(
                "open session limit reached ({cap}); resolve or end a session first"
            )));
        }
        Ok(self.store.create_session(new).await?)
    }

    /// Ends a session: its active runs are cancelled and it takes no more messages.
    pub async fn end_session(
        &self,
        principal: &Principal,
        session_id: &str,
    ) -> Result<Session, ServiceError> {
        let session = self.authorized_session(principal, session_id).await?;
        let by = Actor::of(principal);
        session.status.next(SessionChange::End, by)?;
        for run in self.store.active_runs(&session.id).await? {
            self.cancel_run(&run).await?;
        }
        Ok(self.sessions.change(&session.id, SessionChange::End, by).await?)
    }

    /// Marks a session resolved, with optional notes, where the state
    /// machine lets this caller (not an ended or expired session; one
    /// waiting for a person only by a service or the operator holding it).
    pub async fn resolve_session(
        &self,
        principal: &Principal,
        session_id: &str,
        notes: Option<String>,
        side: Side,
    ) -> Result<Session, ServiceError> {
        if let Some(notes) = &notes {
            validate_notes(notes)?;
        }
        let (session, actor) = self.session_for(principal, session_id, side).await?;
        let transition = Transition {
            notes,
            ..Transition::new(SessionChange::Resolve, actor)
        };
        Ok(self.sessions.apply(&session.id, transition).await?)
    }

    /// Deletes a session with its messages and runs; its unfinished runs
    /// are cancelled first.
    pub async fn delete_session(&self, principal: &Principal, session_id: &str) -> Result<(), ServiceError> {
        let session = self.authorized_session(principal, session_id).await?;
        for run in self.store.active_runs(&session.id).await? {
            self.cancel_run(&run).await?;
        }
        self.store.delete_session(&session.id).await?;
        self.sessions.deleted(&session).await;
        Ok(())
    }

    /// Gives a session waiting for a human back to an agent (the session's,
    /// or `agent`): by a service, by the session's owner going back to the
    /// assistant (whether or not a person has taken the session), or by the
    /// operator holding it.
    pub async fn hand_back(
        &self,
        principal: &Principal,
        session_id: &str,
        agent: &str,
        side: Side,
    ) -> Result<Session, ServiceError> {
        self.check_hand_back_agent(agent).await?;
        let (session, actor) = self.session_for(principal, session_id, side).await?;
        let mut transition = Transition::new(SessionChange::HandBack, actor);
        if !agent.is_empty() && agent != session.agent {
            transition.agent = Some(agent.to_owned());
        }
        Ok(self.sessions.apply(&session.id, transition).await?)
    }

    /// Loads the session `principal` changes from `side`, and who they are to it.
    async fn session_for(
        &self,
        principal: &Principal,
        session_id: &str,
        side: Side,
    ) -> Result<(Session, Actor), ServiceError> {
        match side {
            Side::Owner => {
                let session = self.authorized_session(principal, session_id).await?;
                Ok((session, Actor::of(principal)))
            }
            Side::Operator => {
                let (_, session) = self.held_session(principal, session_id).await?;
                Ok((session, Actor::Operator))
            }
        }
    }

    /// Cancels a queued or running run of the session.
    pub async fn cancel(
        &self,
        principal: &Principal,
        session_id: &str,
        run_id: &str,
    ) -> Result<(), ServiceError> {
        let session = self.authorized_session(principal, session_id).await?;
        let run_id = RunId::parse(run_id)?;
        let run = self
            .store
            .get_run(&run_id)
            .await?
            .filter(|r| r.session_id == session.id)
            .ok_or(ServiceError::NotFound("run"))?;
        self.cancel_run(&run).await
    }

    /// A page of sessions: a user's own, or anyone's for a service.
    pub async fn list_sessions(
        &self,
        principal: &Principal,
        filter: SessionFilter,
        limit: u64,
        cursor: Option<String>,
    ) -> Result<SessionPage, ServiceError> {
        let owner_id: Option<UserId> = match principal {
            Principal::User(id) => Some(id.clone()),
            Principal::Service(_) => None,
        };
        Ok(self
            .store
            .list_sessions(SessionQuery {
                owner_id,
                filter,
                limit,
                cursor,
            })
            .await?)
    }

    /// Messages of a session, ascending by seq (see [`MessageQuery`]).
    pub async fn list_messages(
        &self,
        principal: &Principal,
        session_id: &str,
        after_seq: Option<i64>,
        before_seq: Option<i64>,
        limit: u64,
    ) -> Result<Vec<Message>, ServiceError> {
        let session = self.readable_session(principal, session_id).await?;
        Ok(self
            .store
            .list_messages(MessageQuery {
                session_id: session.id,
                after_seq,
                before_seq,
                limit,
            })
            .await?)
    }

    /// The agents the worker fleet serves.
    pub async fn list_agents(&self) -> Result<Vec<agent::AgentInfo>, ServiceError> {
        self.dispatcher.workers().list_agents().await.map_err(|status| {
            tracing::warn!(code = ?status.code(), message = status.message(), "agent-workers unavailable");
            ServiceError::Unavailable("agent-workers unavailable".into())
        })
    }

    /// Refuses an agent name that is malformed or that the fleet does not serve.
    /// The agent a hand-back names, if any, must be one the fleet serves.
    pub(crate) async fn check_hand_back_agent(&self, agent: &str) -> Result<(), ServiceError> {
        if agent.is_empty() {
            return Ok(());
        }
        self.check_agent(agent).await
    }

    pub async fn check_agent(&self, agent: &str) -> Result<(), ServiceError> {
        let valid_name = !agent.is_empty()
            && agent.len() <= 64
            && agent
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if !valid_name {
            return Err(ServiceError::Invalid(format!("invalid agent name `{agent}`")));
        }
        // When the fleet cannot be asked, the run reports an unknown agent later.
        if let Ok(agents) = self.dispatcher.workers().list_agents().await
            && !agents.iter().any(|a| a.name == agent)
        {
            return Err(ServiceError::Invalid(format!("unknown agent `{agent}`")));
        }
        Ok(())
    }

    /// Changes the title of the owner's session.
    pub async fn rename(
        &self,
        principal: &Principal,
        session_id: &str,
        title: &str,
    ) -> Result<Session, ServiceError> {
        let title = title.trim();
        validate_title(title)?;
        let session = self.authorized_session(principal, session_id).await?;
        Ok(self.store.rename_session(&session.id, title).await?)
    }
}
