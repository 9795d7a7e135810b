//! The operations of chat-core, independent of transport: every gRPC handler
//! authorises through here and calls one of these.

mod accounts;
pub mod convert;
mod error;
mod operators;
mod passwords;
mod queue;
mod replay;
mod revoked;
mod sessions;
mod streams;
mod subscribe;

pub use accounts::Accounts;
pub use error::ServiceError;
pub use passwords::{HASH_RETRY_AFTER, PasswordPolicy, Passwords};
pub use queue::QueueUpdates;
pub use replay::{REPLAY_PAGE, ReplayBudget};
pub use revoked::Revocation;
pub use sessions::Side;
pub use streams::{StreamGuard, UserStreams};

use std::sync::Arc;

use chat_proto::chat::v1::{self as pb, session_event::Event};
use tracing::Instrument as _;

use crate::bus::EventBus;
use crate::dispatch::{Dispatcher, RunOrigin};
use crate::domain::{
    self, Actor, ClientMsgId, Message, MessageRole, Post, Principal, Run, RunId, RunStatus, Session,
    SessionChange, SessionId, SessionStatus,
};
use crate::lifecycle::SessionLifecycle;
use crate::store::{ChatStore, NewMessage};

pub use crate::domain::Concurrency;

/// Limits applied to client input.
#[derive(Clone, Debug)]
pub struct Limits {
    pub max_content_bytes: usize,
    /// Open (active or pending_human) sessions a user may have; 0 for no cap.
    pub max_sessions_per_user: u64,
    /// Policy of sessions created without one.
    pub default_concurrency: Concurrency,
    /// Policies of sessions of these agents created without one.
    pub agent_concurrency: std::collections::HashMap<String, Concurrency>,
    /// How long an active session may sit idle before it expires (ms); 0 never.
    pub session_ttl_ms: i64,
}

/// chat-core's operations over its store, bus and dispatcher. A clone is a
/// pointer: every connection and subscription holds one.
#[derive(Clone)]
pub struct ChatCore {
    parts: Arc<Parts>,
}

/// What a [`ChatCore`] is made of, shared by its clones.
#[derive(Clone)]
pub struct Parts {
    pub(crate) store: Arc<dyn ChatStore>,
    pub(crate) bus: Arc<dyn EventBus>,
    pub(crate) dispatcher: Arc<Dispatcher>,
    pub(crate) sessions: SessionLifecycle,
    pub(crate) limits: Limits,
    pub(crate) default_agent: String,
    /// Users' open streams on this replica, ended when a sign-in is revoked.
    pub(crate) streams: UserStreams,
    /// What replaying history on subscribe costs each user.
    pub(crate) replay: ReplayBudget,
}

impl std::ops::Deref for ChatCore {
    type Target = Parts;

    fn deref(&self) -> &Parts {
        &self.parts
    }
}

/// A committed send: the ack and the run it queued.
#[derive(Clone, Debug)]
pub struct Sent {
    pub ack: pb::Ack,
    pub run: Option<Run>,
    /// Earlier runs of the session are to be cancelled (interrupt policy).
    pub interrupt: bool,
    /// The session's metadata (fixed at creation), for the run's request.
    pub session_metadata: String,
}

impl ChatCore {
    pub fn new(
        store: Arc<dyn ChatStore>,
        bus: Arc<dyn EventBus>,
        dispatcher: Arc<Dispatcher>,
        limits: Limits,
        default_agent: String,
    ) -> Self {
        let parts = Parts {
            sessions: SessionLifecycle::new(store.clone(), bus.clone()),
            store,
            bus,
            dispatcher,
            limits,
            default_agent,
            streams: UserStreams::default(),
            replay: ReplayBudget::new(0),
        };
        Self {
            parts: Arc::new(parts),
        }
    }

    /// Charges each user's history replays against `budget`.
    pub fn with_replay_budget(self, budget: ReplayBudget) -> Self {
        let mut parts = Arc::unwrap_or_clone(self.parts);
        parts.replay = budget;
        Self {
            parts: Arc::new(parts),
        }
    }

    /// A session as callers see it, with when it expires if left idle.
    pub fn session_view(&self, session: &Session) -> pb::Session {
        let mut view = convert::session(session);
        let expires = SessionStatus::allowing(SessionChange::Expire, Actor::System);
        if self.limits.session_ttl_ms > 0 && expires.contains(&session.status) {
            view.expires_at_ms = session.updated_at.saturating_add(self.limits.session_ttl_ms);
        }
        view
    }

    /// Users' open streams on this replica.
    pub fn streams(&self) -> &UserStreams {
        &self.streams
    }

    pub fn store(&self) -> &Arc<dyn ChatStore> {
        &self.store
    }

    pub fn bus(&self) -> &Arc<dyn EventBus> {
        &self.bus
    }

    /// Every session status change goes through here.
    pub fn sessions(&self) -> &SessionLifecycle {
        &self.sessions
    }

    /// Loads a session the principal may act on.
    pub async fn authorized_session(
        &self,
        principal: &Principal,
        session_id: &str,
    ) -> Result<Session, ServiceError> {
        let session = self.session(session_id).await?;
        principal.authorize(&session)?;
        Ok(session)
    }

    /// Loads a session by its id, whoever asks (an unknown one is not found).
    pub(crate) async fn session(&self, session_id: &str) -> Result<Session, ServiceError> {
        let id = SessionId::parse(session_id)?;
        self.store
            .get_session(&id)
            .await?
            .ok_or(ServiceError::NotFound("session"))
    }

    /// Commits a message (and its run). A repeated `client_msg_id` returns the
    /// original ack. Follow with [`ChatCore::announce`] once the ack is on its way.
    pub async fn send(
        &self,
        principal: &Principal,
        session_id: &str,
        client_msg_id: &str,
        post: Post,
        role: MessageRole,
    ) -> Result<Sent, ServiceError> {
        let span = tracing::info_span!("send", session_id = %session_id, run_id = tracing::field::Empty);
        let commit = async {
            let client_msg_id = (!client_msg_id.is_empty())
                .then(|| ClientMsgId::parse(client_msg_id))
                .transpose()?;
            domain::validate_content(&post.content, self.limits.max_content_bytes)?;
            if let Some(metadata) = &post.metadata {
                domain::validate_metadata(metadata)?;
            }
            let session = self.authorized_session(principal, session_id).await?;
            self.append_to(&session, client_msg_id, post, role, None).await
        };
        let sent = commit.instrument(span.clone()).await?;
        if let Some(run) = &sent.run {
            span.record("run_id", run.id.as_str());
        }
        Ok(sent)
    }

    /// Appends a message to `session`, which the caller may post to; a user
    /// message queues a run. `author` names the person who wrote a human one.
    pub(crate) async fn append_to(
        &self,
        session: &Session,
        client_msg_id: Option<ClientMsgId>,
        post: Post,
        role: MessageRole,
        author: Option<String>,
    ) -> Result<Sent, ServiceError> {
        // Checked again inside the transaction that appends (the status may
        // change meanwhile); this early answer spares the write.
        session.check_accepts_messages()?;
        let policy = self.policy_of(session);
        let start_run = role == MessageRole::User;
        let appended = self
            .store
            .append_message(NewMessage {
                session_id: session.id.clone(),
                role,
                content: post.content,
                client_msg_id: client_msg_id.clone(),
                start_run,
                reject_if_busy: start_run && policy == Concurrency::Reject,
                author,
                claim: self.dispatcher.send_lease(),
                metadata: post.metadata,
            })
            .await?;
        if !appended.duplicate {
            metrics::counter!("chat_messages_stored_total", "role" => role.as_str()).increment(1);
        }
        let message = convert::message(&appended.message);
        let ack = pb::Ack {
            session_id: session.id.to_string(),
            client_msg_id: client_msg_id.map(String::from).unwrap_or_default(),
            message_id: appended.message.id.to_string(),
            seq: appended.message.seq,
            run_id: appended
                .run
                .as_ref()
                .map(|r| r.id.to_string())
                .unwrap_or_default(),
            duplicate: appended.duplicate,
            message: Some(Box::new(message.clone())),
        };
        Ok(Sent {
            ack,
            run: appended.run,
            interrupt: policy == Concurrency::Interrupt && !appended.duplicate,
            session_metadata: session.metadata.clone(),
        })
    }

    /// Tells subscribers about a committed message and wakes the session's
    /// runner, handing it the run's `origin`. Called after the ack is queued,
    /// so the ack precedes the events.
    pub async fn announce(&self, sent: &Sent, origin: RunOrigin) {
        let session_id = &sent.ack.session_id;
        if !sent.ack.duplicate {
            // The message and its run, in one publish.
            let mut events = Vec::with_capacity(2);
            if let Some(message) = &sent.ack.message {
                events.push(event(Event::Message(message.clone())));
            }
            if let Some(run) = &sent.run {
                // Announced as queued even when the send claimed it: clients
                // see every run go queued → running.
                let queued = pb::RunUpdate {
                    attempt: 0,
                    ..convert::run_update(run, RunStatus::Queued, "")
                };
                events.push(event(Event::Run(queued)));
            }
            self.bus.publish_batch(session_id, events, None).await;
        }
        if let Some(run) = sent.run.as_ref().filter(|_| sent.interrupt) {
            self.interrupt_before(run).await;
        }
        if let Some(run) = &sent.run {
            if sent.ack.duplicate {
                // A restart may have left the run queued.
                self.dispatcher.wake(&run.session_id);
            } else {
                let origin = RunOrigin {
                    session_metadata: Some(sent.session_metadata.clone()),
                    ..origin
                };
                self.dispatcher.queued(&run.id, origin);
                if run.status == RunStatus::Running {
                    // Claimed for this replica as it was queued.
                    self.dispatcher.start_claimed(run.clone());
                } else {
                    self.dispatcher.wake(&run.session_id);
                }
            }
        }
    }

    /// The concurrency policy of a session.
    pub fn policy_of(&self, session: &Session) -> Concurrency {
        session
            .concurrency
            .or_else(|| self.limits.agent_concurrency.get(&session.agent).copied())
            .unwrap_or(self.limits.default_concurrency)
    }

    /// Cancels every active run of the session older than `run`.
    async fn interrupt_before(&self, run: &Run) {
        let active = match self.store.active_runs(&run.session_id).await {
            Ok(active) => active,
            Err(error) => {
                tracing::warn!(%error, "failed to read active runs to interrupt");
                return;
            }
        };
        for earlier in active.iter().filter(|r| r.user_seq < run.user_seq) {
            if let Err(error) = self.cancel_run(earlier).await {
                tracing::warn!(run_id = %earlier.id, %error, "failed to interrupt a run");
            }
        }
    }

    /// Stops a running run here, or marks a run that is not running here
    /// cancelled (its replica notices at its next lease renewal) and tells
    /// subscribers.
    async fn cancel_run(&self, run: &Run) -> Result<(), ServiceError> {
        Ok(self.dispatcher.cancel(run).await?)
    }

    /// The stored reply of a run, when it has one.
    pub async fn reply_of(&self, run_id: &RunId) -> Result<Option<Message>, ServiceError> {
        Ok(self.store.find_reply(run_id).await?)
    }
}

pub(crate) fn event(event: Event) -> pb::SessionEvent {
    pb::SessionEvent { event: Some(event) }
}
