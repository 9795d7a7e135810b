//! Human handoff: the operators who answer sessions handed to a person, and
//! what they may read and do. The operator flag lives on the user's account
//! (set by `chat-core operator grant`), so it is read from the database on
//! each operator call, never taken from a token.

use chat_proto::chat::v1::{self as pb, session_event::Event};

use super::{ChatCore, Sent, ServiceError, event};
use crate::domain::{
    self, Assignee, ClientMsgId, MessageRole, Principal, Session, SessionId, SessionStatus, UserId,
};
use crate::store::User;

/// Longest `origin` of a typing notice, in bytes.
const MAX_ORIGIN_BYTES: usize = 64;

impl ChatCore {
    /// The account behind a user's token (none for services).
    pub async fn caller(&self, principal: &Principal) -> Result<Option<User>, ServiceError> {
        match principal {
            Principal::User(id) => Ok(self.store.get_user(id).await?),
            Principal::Service(_) => Ok(None),
        }
    }

    /// The operator calling, or `Forbidden` for anyone else.
    pub(super) async fn operator(&self, principal: &Principal) -> Result<User, ServiceError> {
        self.caller(principal)
            .await?
            .filter(|user| user.operator)
            .ok_or(ServiceError::Forbidden)
    }

    /// Loads a session the principal may read and subscribe to: its owner's,
    /// any for a service, and for an operator one waiting for a person or
    /// held by them.
    pub async fn readable_session(
        &self,
        principal: &Principal,
        session_id: &str,
    ) -> Result<Session, ServiceError> {
        let session = self.session(session_id).await?;
        if principal.authorize(&session).is_ok() {
            return Ok(session);
        }
        let Principal::User(user_id) = principal else {
            return Err(ServiceError::Forbidden);
        };
        let open_to_operators = session.status == SessionStatus::PendingHuman
            || session.assignee.as_ref().is_some_and(|a| a.id == *user_id);
        if open_to_operators && self.operator(principal).await.is_ok() {
            return Ok(session);
        }
        Err(ServiceError::Forbidden)
    }

    /// A session waiting for a person that the calling operator holds.
    pub(super) async fn held_session(
        &self,
        principal: &Principal,
        session_id: &str,
    ) -> Result<(User, Session), ServiceError> {
        let operator = self.operator(principal).await?;
        let session = self.session(session_id).await?;
        if session.status != SessionStatus::PendingHuman {
            return Err(ServiceError::Conflict(format!(
                "session is {}; it is not waiting for a person",
                session.status
            )));
        }
        match &session.assignee {
            Some(holder) if holder.id == operator.id => Ok((operator, session)),
            Some(holder) => Err(ServiceError::Conflict(format!(
                "{} holds this session",
                holder.name
            ))),
            None => Err(ServiceError::Conflict("take the session first".into())),
        }
    }

    /// Sessions waiting for a person, the longest waiting first, with their owners' names.
    pub async fn list_waiting(
        &self,
        principal: &Principal,
        limit: u64,
    ) -> Result<Vec<(Session, String)>, ServiceError> {
        self.operator(principal).await?;
        Ok(self.store.list_waiting(limit).await?)
    }

    /// Makes the calling operator the one person answering a waiting session.
    pub async fn claim(&self, principal: &Principal, session_id: &str) -> Result<Session, ServiceError> {
        let operator = self.operator(principal).await?;
        let id = SessionId::parse(session_id)?;
        let assignee = Assignee {
            id: operator.id,
            name: operator.username,
        };
        Ok(self.sessions.claim(&id, &assignee).await?)
    }

    /// Posts the holding operator's message (role `human`, signed with their name).
    pub async fn operator_reply(
        &self,
        principal: &Principal,
        session_id: &str,
        client_msg_id: &str,
        content: String,
    ) -> Result<Sent, ServiceError> {
        let client_msg_id = (!client_msg_id.is_empty())
            .then(|| ClientMsgId::parse(client_msg_id))
            .transpose()?;
        domain::validate_content(&content, self.limits.max_content_bytes)?;
        let (operator, session) = self.held_session(principal, session_id).await?;
        self.append_to(
            &session,
            client_msg_id,
            domain::Post::text(content),
            MessageRole::Human,
            Some(operator.username),
        )
        .await
    }

    /// Tells the session's subscribers that its operator, or its own user,
    /// is or stopped typing; `origin` tags the caller's connection.
    pub async fn set_typing(
        &self,
        principal: &Principal,
        session_id: &str,
        typing: bool,
        origin: String,
    ) -> Result<(), ServiceError> {
        if origin.len() > MAX_ORIGIN_BYTES {
            return Err(ServiceError::Invalid(format!(
                "origin must be at most {MAX_ORIGIN_BYTES} bytes"
            )));
        }
        let owner = match principal {
            Principal::User(user_id) => self.owned_by(user_id, session_id).await?,
            Principal::Service(_) => None,
        };
        let presence = match owner {
            Some(owner) => pb::Presence {
                session_id: session_id.to_owned(),
                name: String::new(),
                typing,
                user_id: owner.to_string(),
                origin,
            },
            None => {
                let (operator, session) = self.held_session(principal, session_id).await?;
                pb::Presence {
                    session_id: session.id.to_string(),
                    name: operator.username,
                    typing,
                    user_id: String::new(),
                    origin,
                }
            }
        };
        let session_id = presence.session_id.clone();
        self.bus
            .publish(&session_id, event(Event::Presence(presence)))
            .await;
        Ok(())
    }

    /// `user_id` when they own session `session_id` (an unknown session is not found).
    async fn owned_by<'a>(
        &self,
        user_id: &'a UserId,
        session_id: &str,
    ) -> Result<Option<&'a UserId>, ServiceError> {
        let session = self.session(session_id).await?;
        Ok((session.owner_id == *user_id).then_some(user_id))
    }
}
