//! Session status and agent changes, each stored and then published as a
//! `session` event; those that touch the operators' queue are published on
//! [`QUEUE_TOPIC`] too.

use std::sync::Arc;

use chat_proto::chat::v1::session_event::Event;

use crate::bus::EventBus;
use crate::domain::{Actor, Assignee, Session, SessionChange, SessionId, SessionStatus};
use crate::service::{convert, event};
use crate::store::{ChatStore, StoreError, Transition};

/// The bus topic of the operators' queue (sessions waiting for a person): a
/// session's `session` event goes there too when the session enters the
/// queue, changes in it or may have left it. Watchers re-read the session,
/// so an event for a session that was never queued costs a read, nothing more.
pub const QUEUE_TOPIC: &str = "operators.queue";

/// Changes sessions' status (per the state machine of
/// [`SessionStatus::next`](crate::domain::SessionStatus::next), which says who may do what)
/// and agent, and tells their subscribers.
#[derive(Clone)]
pub struct SessionLifecycle {
    store: Arc<dyn ChatStore>,
    bus: Arc<dyn EventBus>,
}

impl SessionLifecycle {
    pub fn new(store: Arc<dyn ChatStore>, bus: Arc<dyn EventBus>) -> Self {
        Self { store, bus }
    }

    /// Applies `transition` if the session's status allows it, then publishes it.
    pub async fn apply(&self, id: &SessionId, transition: Transition) -> Result<Session, StoreError> {
        let may_leave_queue =
            SessionStatus::allowing(transition.change, transition.by).contains(&SessionStatus::PendingHuman);
        let session = self.store.transition_session(id, transition).await?;
        self.publish(&session).await;
        if may_leave_queue || session.status == SessionStatus::PendingHuman {
            self.publish_queue(&session).await;
        }
        Ok(session)
    }

    /// Shorthand for [`SessionLifecycle::apply`] without agent or notes.
    pub async fn change(
        &self,
        id: &SessionId,
        change: SessionChange,
        by: Actor,
    ) -> Result<Session, StoreError> {
        self.apply(id, Transition::new(change, by)).await
    }

    /// Makes `assignee` the one person answering a session waiting for a
    /// person, then publishes it.
    pub async fn claim(&self, id: &SessionId, assignee: &Assignee) -> Result<Session, StoreError> {
        let session = self.store.claim_session(id, assignee).await?;
        self.publish(&session).await;
        self.publish_queue(&session).await;
        Ok(session)
    }

    /// Makes `agent` the session's agent, then publishes it.
    pub async fn set_agent(&self, id: &SessionId, agent: &str) -> Result<Session, StoreError> {
        let session = self.store.set_session_agent(id, agent).await?;
        self.publish(&session).await;
        Ok(session)
    }

    /// Expires active sessions idle since before `idle_before` (epoch ms)
    /// and publishes each; returns how many expired.
    pub async fn expire_idle(&self, idle_before: i64) -> Result<usize, StoreError> {
        let expired = self.store.expire_idle_sessions(idle_before).await?;
        for id in &expired {
            match self.store.get_session(id).await {
                Ok(Some(session)) => self.publish(&session).await,
                Ok(None) => {}
                Err(error) => tracing::warn!(session_id = %id, %error, "failed to read an expired session"),
            }
        }
        Ok(expired.len())
    }

    /// Tells the operators' queue that `session`, just deleted, left it
    /// if it was waiting for a person.
    pub async fn deleted(&self, session: &Session) {
        if session.status == SessionStatus::PendingHuman {
            self.publish_queue(session).await;
        }
    }

    async fn publish_queue(&self, session: &Session) {
        let update = convert::session_changed(session);
        self.bus.publish(QUEUE_TOPIC, event(Event::Session(update))).await;
    }

    async fn publish(&self, session: &Session) {
        let update = convert::session_changed(session);
        self.bus.publish(&session.id, event(Event::Session(update))).await;
    }
}
