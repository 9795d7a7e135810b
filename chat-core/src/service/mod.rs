//! The operations of chat-core, independent of transport: every gRPC handler
//! authorises through here and calls one of these.

pub mod convert;
mod error;
mod subscribe;

pub use error::ServiceError;

use std::sync::Arc;

use chat_proto::chat::v1::{self as pb, session_event::Event};

use crate::bus::EventBus;
use crate::dispatch::Dispatcher;
use crate::domain::{self, MessageRole, Principal, RunStatus};
use crate::store::{ChatStore, MessageRecord, NewMessage, RunRecord, SessionRecord};

/// Limits applied to client input.
#[derive(Clone, Debug)]
pub struct Limits {
    pub max_content_bytes: usize,
}

/// chat-core's operations over its store, bus and dispatcher.
#[derive(Clone)]
pub struct ChatCore {
    pub(crate) store: Arc<dyn ChatStore>,
    pub(crate) bus: Arc<dyn EventBus>,
    pub(crate) dispatcher: Arc<Dispatcher>,
    pub(crate) limits: Limits,
    pub(crate) default_agent: String,
}

/// A committed send: the ack and the run it queued.
#[derive(Clone, Debug)]
pub struct Sent {
    pub ack: pb::Ack,
    pub run: Option<RunRecord>,
}

impl ChatCore {
    pub fn new(
        store: Arc<dyn ChatStore>,
        bus: Arc<dyn EventBus>,
        dispatcher: Arc<Dispatcher>,
        limits: Limits,
        default_agent: String,
    ) -> Self {
        Self {
            store,
            bus,
            dispatcher,
            limits,
            default_agent,
        }
    }

    pub fn store(&self) -> &Arc<dyn ChatStore> {
        &self.store
    }

    /// Loads a session the principal may act on.
    pub async fn authorized_session(
        &self,
        principal: &Principal,
        session_id: &str,
    ) -> Result<SessionRecord, ServiceError> {
        domain::validate_session_id(session_id)?;
        let session = self
            .store
            .get_session(session_id)
            .await?
            .ok_or(ServiceError::NotFound("session"))?;
        principal.authorize(&session)?;
        Ok(session)
    }

    /// Commits a message (and its run). A repeated `client_msg_id` returns the
    /// original ack. Follow with [`ChatCore::announce`] once the ack is on its way.
    pub async fn send(
        &self,
        principal: &Principal,
        session_id: &str,
        client_msg_id: &str,
        content: String,
        role: MessageRole,
    ) -> Result<Sent, ServiceError> {
        if !client_msg_id.is_empty() {
            domain::validate_client_msg_id(client_msg_id)?;
        }
        domain::validate_content(&content, self.limits.max_content_bytes)?;
        let session = self.authorized_session(principal, session_id).await?;
        let start_run = role == MessageRole::User;
        let appended = self
            .store
            .append_message(NewMessage {
                session_id: session.id.clone(),
                role,
                content,
                client_msg_id: (!client_msg_id.is_empty()).then(|| client_msg_id.to_owned()),
                start_run,
            })
            .await?;
        let message = convert::message(&appended.message);
        let ack = pb::Ack {
            session_id: session.id.clone(),
            client_msg_id: client_msg_id.to_owned(),
            message_id: appended.message.id.clone(),
            seq: appended.message.seq,
            run_id: appended.run.as_ref().map(|r| r.id.clone()).unwrap_or_default(),
            duplicate: appended.duplicate,
            message: Some(message.clone()),
        };
        Ok(Sent {
            ack,
            run: appended.run,
        })
    }

    /// Tells subscribers about a committed message and wakes the session's
    /// runner. Called after the ack is queued, so the ack precedes the events.
    pub async fn announce(&self, sent: &Sent) {
        let session_id = &sent.ack.session_id;
        if !sent.ack.duplicate {
            if let Some(message) = &sent.ack.message {
                self.bus
                    .publish(session_id, event(Event::Message(message.clone())))
                    .await;
            }
            if let Some(run) = &sent.run {
                let queued = convert::run_update(run, RunStatus::Queued, "");
                self.bus.publish(session_id, event(Event::Run(queued))).await;
            }
        }
        if sent.run.is_some() {
            // Also for duplicates: a restart may have left the run queued.
            self.dispatcher.wake(session_id);
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
        let run = self
            .store
            .get_run(run_id)
            .await?
            .filter(|r| r.session_id == session.id)
            .ok_or(ServiceError::NotFound("run"))?;
        if self.dispatcher.cancel_running(&run.id) {
            return Ok(());
        }
        if self.store.finish_run(&run.id, RunStatus::Cancelled, None).await? {
            let update = convert::run_update(&run, RunStatus::Cancelled, "");
            self.bus.publish(&session.id, event(Event::Run(update))).await;
        }
        Ok(())
    }

    /// The stored reply of a run, when it has one.
    pub async fn reply_of(&self, run_id: &str) -> Result<Option<MessageRecord>, ServiceError> {
        Ok(self.store.find_reply(run_id).await?)
    }
}

pub(crate) fn event(event: Event) -> pb::SessionEvent {
    pb::SessionEvent { event: Some(event) }
}
