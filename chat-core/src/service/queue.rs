//! The operators' queue as a stream: the sessions waiting for a person, then
//! each change of it, for as long as an operator watches.

use std::collections::HashSet;

use chat_proto::chat::v1::{self as pb, session_event::Event};
use futures::StreamExt;
use futures::stream::BoxStream;

use super::{ChatCore, ServiceError, convert};
use crate::bus::BusItem;
use crate::domain::{Principal, SessionId, SessionStatus};
use crate::lifecycle::QUEUE_TOPIC;

/// Most sessions in a snapshot of the queue (as `ListWaiting` at most).
const SNAPSHOT_LIMIT: u64 = 200;

/// Queue updates for one watcher; an error ends them.
pub type QueueUpdates = BoxStream<'static, Result<pb::QueueUpdate, ServiceError>>;

impl ChatCore {
    /// The queue for an operator: a snapshot first, then one update per
    /// change (a session entering or taken, or leaving), and a fresh snapshot
    /// whenever changes may have been missed. The operator flag is read
    /// again on every change, so a revocation ends the stream with `Forbidden`.
    pub async fn watch_queue(&self, principal: &Principal) -> Result<QueueUpdates, ServiceError> {
        self.operator(principal).await?;
        // Subscribed before the snapshot is read, so no change falls between.
        let mut events = self.bus.subscribe(QUEUE_TOPIC).await;
        let core = self.clone();
        let principal = principal.clone();
        Ok(async_stream::stream! {
            // The sessions this watcher was told are queued: only those are
            // ever reported as removed.
            let mut queued = HashSet::new();
            match core.queue_snapshot(&mut queued).await {
                Ok(snapshot) => yield Ok(snapshot),
                Err(error) => {
                    yield Err(error);
                    return;
                }
            }
            while let Some(item) = events.next().await {
                let update = match item {
                    BusItem::Event(event) => {
                        let Some(Event::Session(changed)) = &event.event else {
                            continue;
                        };
                        match core.operator(&principal).await {
                            Ok(_) => core.queue_change(&changed.session_id, &mut queued).await,
                            Err(error) => Err(error),
                        }
                    }
                    BusItem::Lagged(_) | BusItem::Resync => core.queue_snapshot(&mut queued).await.map(Some),
                };
                match update {
                    Ok(Some(update)) => yield Ok(update),
                    Ok(None) => {}
                    Err(error) => {
                        yield Err(error);
                        break;
                    }
                }
            }
        }
        .boxed())
    }

    /// The whole queue, the longest waiting first; `queued` becomes its ids.
    async fn queue_snapshot(&self, queued: &mut HashSet<String>) -> Result<pb::QueueUpdate, ServiceError> {
        let waiting = self.store.list_waiting(SNAPSHOT_LIMIT).await?;
        queued.clear();
        queued.extend(waiting.iter().map(|(session, _)| session.id.to_string()));
        Ok(pb::QueueUpdate {
            snapshot: true,
            sessions: waiting
                .iter()
                .map(|(session, owner)| convert::waiting_session(session, owner))
                .collect(),
            removed: Vec::new(),
        })
    }

    /// What a change of `session_id` does to the queue, read from the
    /// store: it is (still) waiting, it left, or nothing this watcher knew of.
    async fn queue_change(
        &self,
        session_id: &str,
        queued: &mut HashSet<String>,
    ) -> Result<Option<pb::QueueUpdate>, ServiceError> {
        let id = SessionId::parse(session_id)?;
        let waiting = self
            .store
            .get_session(&id)
            .await?
            .filter(|session| session.status == SessionStatus::PendingHuman);
        let Some(session) = waiting else {
            return Ok(queued.remove(id.as_str()).then(|| pb::QueueUpdate {
                removed: vec![id.into_string()],
                ..Default::default()
            }));
        };
        let owner = self
            .store
            .get_user(&session.owner_id)
            .await?
            .map(|user| user.username)
            .unwrap_or_default();
        queued.insert(session.id.to_string());
        Ok(Some(pb::QueueUpdate {
            snapshot: false,
            sessions: vec![convert::waiting_session(&session, &owner)],
            removed: Vec::new(),
        }))
    }
}
