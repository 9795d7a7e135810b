//! The in-process bus: one broadcast channel per session with subscribers.
//! Each send on it carries a batch (one publish: an event, or a run's events
//! relayed together), so a channel's slots, allocated up front, count
//! publishes rather than events, and a burst of deltas takes one slot.

use std::sync::Arc;

use async_trait::async_trait;
use chat_proto::chat::v1::SessionEvent;
use dashmap::DashMap;
use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use super::{BusItem, DeltaLog, EventBus, Notice, NoticeKind};

/// What travels on a session's channel: a batch of events in order, or
/// `None` asking subscribers to re-read the database (events may have been lost).
type Item = Option<Batch>;
type Batch = Arc<[Arc<SessionEvent>]>;
type Channels = DashMap<String, broadcast::Sender<Item>>;

/// Fan-out within one process.
#[derive(Clone)]
pub struct InProcessBus {
    channels: Arc<Channels>,
    capacity: usize,
    /// Revoked sign-ins and cancelled runs, for [`EventBus::revocations`]
    /// and [`EventBus::cancellations`].
    notices: broadcast::Sender<Notice>,
}

/// Notices a listener may fall behind by before it lags.
const NOTICES_CAPACITY: usize = 1024;

impl InProcessBus {
    /// `capacity` bounds how many publishes a subscriber may fall behind
    /// before it lags.
    pub fn new(capacity: usize) -> Self {
        Self {
            channels: Arc::default(),
            capacity,
            notices: broadcast::channel(NOTICES_CAPACITY).0,
        }
    }
}

impl InProcessBus {
    /// Asks every subscriber of every session to re-read the database.
    pub fn resync_all(&self) {
        for channel in self.channels.iter() {
            let _ = channel.value().send(None);
        }
    }

    /// Asks the session's subscribers to re-read the database.
    pub(super) fn resync(&self, session_id: &str) {
        if let Some(tx) = self.channels.get(session_id) {
            let _ = tx.send(None);
        }
    }
}

impl InProcessBus {
    /// Hands `events` to the session's subscribers as one batch.
    pub(super) fn send(&self, session_id: &str, events: Vec<SessionEvent>) {
        if events.is_empty() {
            return;
        }
        if let Some(tx) = self.channels.get(session_id) {
            let batch: Batch = events.into_iter().map(Arc::new).collect();
            let _ = tx.send(Some(batch));
        }
    }
}

impl Default for InProcessBus {
    fn default() -> Self {
        Self::new(crate::settings::DEFAULT_SUBSCRIBER_BUFFER)
    }
}

/// One subscriber's stream; dropping it drops the session's channel once no
/// subscriber is left.
struct Subscription {
    rx: BroadcastStream<Item>,
    /// The batch being handed out, and the index of its next event.
    batch: Option<(Batch, usize)>,
    channels: Arc<Channels>,
    session_id: String,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        // `rx` still counts here; the channel goes when it is the last one.
        self.channels
            .remove_if(&self.session_id, |_, tx| tx.receiver_count() <= 1);
    }
}

impl futures::Stream for Subscription {
    type Item = BusItem;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<BusItem>> {
        loop {
            if let Some((batch, next)) = &mut self.batch {
                if let Some(event) = batch.get(*next).cloned() {
                    // Each event costs the task's budget what receiving it
                    // alone would: a subscriber hands a burst on at the pace
                    // of single publishes, yielding to the readers it feeds
                    // (which would otherwise find a whole burst queued at once).
                    let coop = std::task::ready!(tokio::task::coop::poll_proceed(cx));
                    coop.made_progress();
                    *next += 1;
                    return std::task::Poll::Ready(Some(BusItem::Event(event)));
                }
                self.batch = None;
            }
            let item = std::task::ready!(std::pin::Pin::new(&mut self.rx).poll_next(cx));
            let item = match item {
                None => None,
                Some(Ok(Some(batch))) => {
                    self.batch = Some((batch, 0));
                    continue;
                }
                Some(Ok(None)) => Some(BusItem::Resync),
                Some(Err(BroadcastStreamRecvError::Lagged(n))) => Some(BusItem::Lagged(n)),
            };
            return std::task::Poll::Ready(item);
        }
    }
}

#[async_trait]
impl EventBus for InProcessBus {
    async fn publish(&self, session_id: &str, event: SessionEvent) {
        self.send(session_id, vec![event]);
    }

    async fn publish_batch(
        &self,
        session_id: &str,
        events: Vec<SessionEvent>,
        _deltas: Option<DeltaLog<'_>>,
    ) {
        self.send(session_id, events);
    }

    async fn subscribe(&self, session_id: &str) -> BoxStream<'static, BusItem> {
        let rx = self
            .channels
            .entry(session_id.to_owned())
            .or_insert_with(|| broadcast::channel(self.capacity).0)
            .subscribe();
        Subscription {
            rx: BroadcastStream::new(rx),
            batch: None,
            channels: self.channels.clone(),
            session_id: session_id.to_owned(),
        }
        .boxed()
    }

    async fn publish_revocation(&self, user_id: &str) {
        self.notify(Notice::new(NoticeKind::Revoked, user_id));
    }

    fn revocations(&self) -> BoxStream<'static, String> {
        self.notices(NoticeKind::Revoked)
    }

    async fn publish_cancellation(&self, run_id: &str) {
        self.notify(Notice::new(NoticeKind::Cancelled, run_id));
    }

    fn cancellations(&self) -> BoxStream<'static, String> {
        self.notices(NoticeKind::Cancelled)
    }
}

impl InProcessBus {
    /// Tells this process's listeners of `notice`.
    pub(super) fn notify(&self, notice: Notice) {
        let _ = self.notices.send(notice);
    }

    /// The ids of the notices of `kind` published from now on.
    fn notices(&self, kind: NoticeKind) -> BoxStream<'static, String> {
        BroadcastStream::new(self.notices.subscribe())
            .filter_map(move |item| async move {
                match item {
                    Ok(notice) => (notice.kind == kind).then_some(notice.id),
                    Err(BroadcastStreamRecvError::Lagged(n)) => {
                        tracing::warn!(dropped = n, "notice listener fell behind");
                        None
                    }
                }
            })
            .boxed()
    }
}
