//! Session events fan-out. The in-process bus serves a single chat-core;
//! a shared bus (Redis) carries the same events across replicas.

mod memory;
mod redis;

pub use memory::InProcessBus;
pub use redis::{RedisBus, RedisBusError};

use async_trait::async_trait;
use chat_proto::chat::v1::SessionEvent;
use futures::stream::BoxStream;

/// An item of a subscription: an event, or notice that events were dropped
/// because the subscriber fell behind.
#[derive(Clone, Debug)]
pub enum BusItem {
    Event(std::sync::Arc<SessionEvent>),
    Lagged(u64),
    /// Events may have been lost (the shared bus reconnected): re-read the
    /// database from the last delivered seq.
    Resync,
}

/// Deltas of one run attempt to record, numbered from `first_index`.
#[derive(Clone, Debug)]
pub struct DeltaLog<'a> {
    pub run_id: &'a str,
    pub attempt: u32,
    pub first_index: u32,
    pub texts: Vec<String>,
}

/// What every replica is told, beside sessions' events: a user id or a run id.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Notice {
    kind: NoticeKind,
    id: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum NoticeKind {
    /// A user's sign-in was revoked.
    Revoked,
    /// A run was cancelled.
    Cancelled,
}

impl Notice {
    fn new(kind: NoticeKind, id: &str) -> Self {
        Self {
            kind,
            id: id.to_owned(),
        }
    }
}

/// Publishes a session's events to every subscriber of that session.
#[async_trait]
pub trait EventBus: Send + Sync + 'static {
    async fn publish(&self, session_id: &str, event: SessionEvent);
    /// Records `deltas` (see [`EventBus::append_delta`]), then publishes
    /// `events` in order. A shared bus does it all in one round trip, which
    /// is what lets a run stream many deltas a second.
    async fn publish_batch(&self, session_id: &str, events: Vec<SessionEvent>, deltas: Option<DeltaLog<'_>>) {
        if let Some(log) = deltas {
            for (index, text) in (log.first_index..).zip(&log.texts) {
                self.append_delta(log.run_id, log.attempt, index, text).await;
            }
        }
        for event in events {
            self.publish(session_id, event).await;
        }
    }

    /// Publishes a run attempt's last `events`, then drops its recorded
    /// deltas ([`EventBus::clear_deltas`]): call once its outcome is stored.
    /// A shared bus does both in one round trip.
    async fn publish_ending(&self, session_id: &str, events: Vec<SessionEvent>, run_id: &str, attempt: u32) {
        self.publish_batch(session_id, events, None).await;
        self.clear_deltas(run_id, attempt).await;
    }

    /// Starts delivering the session's events published from now on.
    async fn subscribe(&self, session_id: &str) -> BoxStream<'static, BusItem>;

    /// Tells every replica that `user_id`'s sign-in was revoked (a logout, a
    /// refresh family revoked): their streams end.
    async fn publish_revocation(&self, user_id: &str);

    /// Revocations published from now on, by any replica.
    fn revocations(&self) -> BoxStream<'static, String>;

    /// Tells every replica that the run `run_id` was cancelled, so the one
    /// executing it stops at once rather than at its next lease renewal.
    async fn publish_cancellation(&self, run_id: &str);

    /// Ids of the runs cancelled from now on, by any replica.
    fn cancellations(&self) -> BoxStream<'static, String>;

    /// The latest revocations the shared broker keeps, oldest first, those
    /// published before this replica started among them: a replica applies
    /// them before it serves, so it refuses a sign-in revoked just before.
    /// When the broker does not answer, none; its revocation listeners hear
    /// them once it does. The in-process bus keeps none.
    async fn kept_revocations(&self) -> Vec<String> {
        Vec::new()
    }

    /// Records a delta of a run attempt where every replica can read it. The
    /// in-process bus keeps nothing: its replica's dispatcher has the deltas.
    async fn append_delta(&self, _run_id: &str, _attempt: u32, _index: u32, _text: &str) {}

    /// The deltas recorded for a run attempt, index 0 first; `None` when this
    /// bus keeps none or cannot reach its store.
    async fn read_deltas(&self, _run_id: &str, _attempt: u32) -> Option<Vec<String>> {
        None
    }

    /// Drops a run attempt's recorded deltas once the run's outcome is stored,
    /// or once the attempt failed and another takes its place.
    async fn clear_deltas(&self, _run_id: &str, _attempt: u32) {}

    /// Whether the bus reaches its shared broker; `None` when it has none
    /// (the in-process bus).
    fn is_connected(&self) -> Option<bool> {
        None
    }
}
