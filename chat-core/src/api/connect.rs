//! `Connect`: one client connection's frames in, its events out. Frames are
//! handled in order; each subscription forwards its events from its own task
//! into the connection's bounded outgoing queue (a `futures` channel: it
//! allocates per frame queued, where Tokio's allocates ~0.8 KiB up front,
//! which every idle connection would hold).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use chat_common::ErrorCode;
use chat_proto::chat::v1::{self as pb, client_frame::Frame as In, server_frame::Frame as Out};
use futures::channel::mpsc as queue;
use futures::stream::BoxStream;
use futures::{SinkExt, Stream, StreamExt};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tracing::Instrument as _;

use super::{UserLimits, post};
use crate::dispatch::RunOrigin;
use crate::domain::{MessageRole, Principal, SessionId};
use crate::service::{ChatCore, ServiceError};

/// Frames a connection may have queued before it ends as a slow consumer.
const OUTGOING_QUEUE: usize = chat_common::limits::CONNECTION_FRAME_QUEUE;

/// A connection's outgoing frames, boxed: a queued frame costs one node
/// holding a pointer.
type Outgoing = queue::Sender<Frame>;
type Frame = Box<pb::ServerFrame>;

fn frame(frame: Out) -> Frame {
    Box::new(pb::ServerFrame { frame: Some(frame) })
}

fn error_frame(err: &ServiceError, session_id: &str, client_msg_id: &str) -> Frame {
    if let ServiceError::Internal(source) = err {
        tracing::error!(error = %source, "internal error");
    }
    frame(Out::Error(pb::ErrorFrame {
        code: err.code().as_str().to_owned(),
        message: err.to_string(),
        client_msg_id: client_msg_id.to_owned(),
        session_id: session_id.to_owned(),
        retry_after_ms: err
            .retry_after()
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
    }))
}

/// Starts serving a connection and returns its outgoing frames.
/// `request_id` is the connection's (the client's WebSocket upgrade).
/// `message_limit` counts the `send` frames of a user calling with their own token.
pub fn serve(
    core: ChatCore,
    principal: Principal,
    request_id: Option<String>,
    message_limit: Option<Arc<UserLimits>>,
    frames: impl Stream<Item = Result<pb::ClientFrame, Status>> + Send + Unpin + 'static,
) -> Pin<Box<dyn Stream<Item = Result<pb::ServerFrame, Status>> + Send>> {
    let (tx, rx) = queue::channel(OUTGOING_QUEUE);
    let slow = CancellationToken::new();
    // The connection stops once its stream is dropped, polled or not.
    let gone = slow.clone().drop_guard();
    tokio::spawn(
        Connection {
            core,
            principal,
            request_id,
            message_limit,
            tx,
            subscriptions: HashMap::new(),
            queue: None,
            slow: slow.clone(),
        }
        .run(frames),
    );
    Box::pin(FramesOut {
        rx,
        slow,
        _gone: gone,
        over: false,
    })
}

/// A connection's frames out: its queue, ended with `slow_consumer` as soon
/// as the queue overflows, without first draining what the client could not
/// keep up with. Dropping it stops the connection (`_gone`).
struct FramesOut {
    rx: queue::Receiver<Frame>,
    slow: CancellationToken,
    _gone: tokio_util::sync::DropGuard,
    over: bool,
}

impl Stream for FramesOut {
    type Item = Result<pb::ServerFrame, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Option<Self::Item>> {
        if self.over {
            return Poll::Ready(None);
        }
        // An overflow also closes the queue (see `queue`), waking this.
        if self.slow.is_cancelled() {
            self.over = true;
            return Poll::Ready(Some(Err(ErrorCode::SlowConsumer.status(format!(
                "fell more than {OUTGOING_QUEUE} frames behind; reconnect and resume with after_seq"
            )))));
        }
        match self.rx.poll_next_unpin(cx) {
            Poll::Ready(Some(frame)) => Poll::Ready(Some(Ok(*frame))),
            Poll::Ready(None) => {
                self.over = true;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// A session subscription of a connection: the task forwarding its events,
/// and whether a `send` to the session is between its commit and its ack.
struct Subscribed {
    task: JoinHandle<()>,
    sending: Arc<watch::Sender<Sends>>,
}

impl Drop for Subscribed {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The key of a session's subscription: its canonical id when it has one.
fn session_key(session_id: &str) -> String {
    SessionId::parse(session_id).map_or_else(|_| session_id.to_owned(), SessionId::into_string)
}

struct Connection {
    core: ChatCore,
    principal: Principal,
    request_id: Option<String>,
    message_limit: Option<Arc<UserLimits>>,
    tx: Outgoing,
    subscriptions: HashMap<String, Subscribed>,
    /// The task forwarding the operators' queue, while watched.
    queue: Option<QueueWatch>,
    /// Cancelled when the client fell behind its outgoing queue, and when
    /// the connection's outgoing stream is dropped (the client is gone).
    slow: CancellationToken,
}

impl Connection {
    async fn run(mut self, mut frames: impl Stream<Item = Result<pb::ClientFrame, Status>> + Unpin) {
        loop {
            let next = tokio::select! {
                next = frames.next() => next,
                () = self.slow.cancelled() => break,
            };
            match next {
                // Boxed: a frame's handling (a send's transaction, above all)
                // needs far more state than an idle connection waiting for
                // its next frame, and every idle connection holds this future.
                Some(Ok(pb::ClientFrame { frame: Some(frame) })) => Box::pin(self.handle(frame)).await,
                Some(Ok(pb::ClientFrame { frame: None })) => {
                    let err = ServiceError::Invalid("empty frame".into());
                    let _ = self.tx.send(error_frame(&err, "", "")).await;
                }
                Some(Err(_)) | None => break,
            }
        }
        self.subscriptions.clear();
        self.queue = None;
    }

    async fn handle(&mut self, incoming: In) {
        let reply = match incoming {
            In::Subscribe(sub) => self.subscribe(sub).await,
            In::Unsubscribe(unsub) => {
                self.subscriptions.remove(&session_key(&unsub.session_id));
                frame_out(Out::Unsubscribed(pb::Unsubscribed {
                    session_id: unsub.session_id,
                }))
            }
            In::Send(send) => {
                let span = self.turn_span(&send);
                self.send(send).instrument(span).await
            }
            In::Cancel(cancel) => match self
                .core
                .cancel(&self.principal, &cancel.session_id, &cancel.run_id)
                .await
            {
                Ok(()) => None,
                Err(err) => Some(error_frame(&err, &cancel.session_id, "")),
            },
            In::Ping(_) => frame_out(Out::Pong(pb::PongFrame {})),
            In::WatchQueue(_) => self.watch_queue().await,
            In::UnwatchQueue(_) => {
                self.queue = None;
                None
            }
        };
        if let Some(reply) = reply {
            let _ = self.tx.send(reply).await;
        }
    }

    async fn send(&mut self, send: pb::SendFrame) -> Option<Frame> {
        if let (Some(limits), Principal::User(user_id)) = (&self.message_limit, &self.principal)
            && let Err(status) = limits.check_message(user_id)
        {
            let retry_after_ms = status
                .metadata()
                .get(chat_common::error::RETRY_AFTER_MS_METADATA)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .unwrap_or(1000);
            return Some(frame(Out::Error(pb::ErrorFrame {
                code: ErrorCode::RateLimited.as_str().to_owned(),
                message: status.message().to_owned(),
                client_msg_id: send.client_msg_id,
                session_id: send.session_id,
                retry_after_ms,
            })));
        }
        // A runner already busy in the session may claim the new run and
        // publish its events the moment it is committed, before the ack is
        // queued; until then the subscription holds back events of runs it
        // has not seen yet, so the ack precedes them.
        let sending = self
            .subscriptions
            .get(&session_key(&send.session_id))
            .map(|s| s.sending.clone());
        let _sending = sending.as_deref().map(Sending::start);
        let result = self
            .core
            .send(
                &self.principal,
                &send.session_id,
                &send.client_msg_id,
                post(send.content, send.metadata_json),
                MessageRole::User,
            )
            .await;
        match result {
            Ok(sent) => {
                let _ = self.tx.send(frame(Out::Ack(sent.ack.clone()))).await;
                drop(_sending);
                let origin = RunOrigin::current(self.request_id.clone());
                self.core.announce(&sent, origin).await;
                None
            }
            Err(err) => Some(error_frame(&err, &send.session_id, &send.client_msg_id)),
        }
    }

    /// The span of a `send` frame that brings its turn's trace context; none
    /// for frames without one, so untraced turns cost nothing here.
    fn turn_span(&self, send: &pb::SendFrame) -> tracing::Span {
        if send.trace_context.is_empty() || !chat_common::trace::enabled() {
            return tracing::Span::none();
        }
        let span = tracing::info_span!(
            "turn",
            otel.name = "chat.v1.ChatService/Connect send",
            otel.kind = "server",
            session_id = %send.session_id,
            request_id = self.request_id.as_deref().unwrap_or_default(),
        );
        chat_common::trace::continue_from_map(&span, &send.trace_context);
        span
    }

    async fn subscribe(&mut self, sub: pb::SubscribeFrame) -> Option<Frame> {
        let subscription = match self
            .core
            .subscribe(&self.principal, &sub.session_id, sub.after_seq)
            .await
        {
            Ok(subscription) => subscription,
            Err(err) => return Some(error_frame(&err, &sub.session_id, "")),
        };
        let key = session_key(&sub.session_id);
        // Replacing the previous subscription (if any) aborts its task.
        self.subscriptions.remove(&key);
        let subscribed = Out::Subscribed(pb::Subscribed {
            session_id: sub.session_id.clone(),
            last_seq: subscription.last_seq,
        });
        // Sent before the task starts so `subscribed` precedes the events.
        if self.tx.send(frame(subscribed)).await.is_err() {
            return None;
        }
        let (sending, send_done) = watch::channel(Sends::default());
        let task = tokio::spawn(forward(
            subscription.events,
            sub.session_id.clone(),
            send_done,
            self.tx.clone(),
            self.slow.clone(),
        ));
        self.subscriptions.insert(
            key,
            Subscribed {
                task,
                sending: Arc::new(sending),
            },
        );
        None
    }
}

/// Forwards a subscription's events into the connection's outgoing queue.
/// While `send_done` says a `send` to the session is between its commit and
/// its ack, the first event of a run not forwarded before waits (and so does
/// everything after it) until the ack is queued: a runner already busy in
/// the session may claim the new run and publish its events before then.
/// It waits for the sends begun by then only, not for sends that follow
/// back to back.
async fn forward(
    mut events: BoxStream<'static, Result<pb::SessionEvent, ServiceError>>,
    session_id: String,
    mut send_done: watch::Receiver<Sends>,
    mut tx: Outgoing,
    slow: CancellationToken,
) {
    let mut known = KnownRuns::default();
    while let Some(item) = events.next().await {
        if let Ok(ev) = &item
            && known.is_new(ev)
        {
            // Ends at once when no send is in flight (or the
            // subscription is being replaced).
            let begun = send_done.borrow().started;
            let _ = send_done.wait_for(|sends| sends.acked >= begun).await;
        }
        let ev = match item {
            Ok(ev) => ev,
            Err(err) => {
                // The subscription could not catch up after losing
                // events: say why, then that it ended, so the client
                // subscribes again from its last seq.
                let ended = Out::Unsubscribed(pb::Unsubscribed {
                    session_id: session_id.clone(),
                });
                for out in [error_frame(&err, &session_id, ""), frame(ended)] {
                    if !queue(&mut tx, &slow, out) {
                        break;
                    }
                }
                return;
            }
        };
        if !queue(&mut tx, &slow, frame(Out::Event(ev))) {
            return;
        }
    }
}

impl Connection {
    /// Starts forwarding the operators' queue (a snapshot, then changes),
    /// replacing an earlier watch; an error ends it with an error frame
    /// naming no session, and the client may watch again.
    async fn watch_queue(&mut self) -> Option<Frame> {
        self.queue = None;
        let mut updates = match self.core.watch_queue(&self.principal).await {
            Ok(updates) => updates,
            Err(err) => return Some(error_frame(&err, "", "")),
        };
        let mut tx = self.tx.clone();
        let slow = self.slow.clone();
        let task = tokio::spawn(async move {
            while let Some(update) = updates.next().await {
                let (out, last) = match update {
                    Ok(update) => (frame(Out::Queue(update)), false),
                    Err(err) => (error_frame(&err, "", ""), true),
                };
                if !queue(&mut tx, &slow, out) || last {
                    return;
                }
            }
        });
        self.queue = Some(QueueWatch(task));
        None
    }
}

/// The task forwarding the operators' queue to a connection; dropping it stops it.
struct QueueWatch(JoinHandle<()>);

impl Drop for QueueWatch {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A connection's `send`s to a session: how many began (committing) and how
/// many of those have their ack queued. A connection handles its frames in
/// order, so sends are acked in the order they began.
#[derive(Clone, Copy, Debug, Default)]
struct Sends {
    started: u64,
    acked: u64,
}

/// Marks a session's `send` in flight until dropped.
struct Sending<'a> {
    sends: &'a watch::Sender<Sends>,
    number: u64,
}

impl<'a> Sending<'a> {
    fn start(sends: &'a watch::Sender<Sends>) -> Self {
        let mut number = 0;
        sends.send_modify(|s| {
            s.started += 1;
            number = s.started;
        });
        Self { sends, number }
    }
}

impl Drop for Sending<'_> {
    fn drop(&mut self) {
        let number = self.number;
        self.sends.send_modify(|s| s.acked = s.acked.max(number));
    }
}

/// The runs a subscription has forwarded events of, to tell a new run's
/// first event; bounded, as forgetting one only costs a wait.
#[derive(Default)]
struct KnownRuns(std::collections::HashSet<String>);

impl KnownRuns {
    const MAX: usize = 256;

    /// Whether `event` belongs to a run not seen before; remembers it.
    fn is_new(&mut self, event: &pb::SessionEvent) -> bool {
        use pb::session_event::Event;
        let run_id = match &event.event {
            Some(Event::Run(r)) => &r.run_id,
            Some(Event::Delta(d)) => &d.run_id,
            Some(Event::Handoff(h)) => &h.run_id,
            Some(Event::ToolCall(t)) => &t.run_id,
            Some(Event::ToolResult(t)) => &t.run_id,
            Some(Event::Message(_) | Event::Session(_) | Event::Presence(_)) | None => return false,
        };
        if self.0.contains(run_id) {
            return false;
        }
        if self.0.len() >= Self::MAX {
            self.0.clear();
        }
        self.0.insert(run_id.clone());
        true
    }
}

/// Queues a subscription's frame without waiting. A full queue means the
/// client cannot keep up: the connection ends (`slow`) rather than block the
/// session's events. Returns whether the frame was queued.
fn queue(tx: &mut Outgoing, slow: &CancellationToken, out: Frame) -> bool {
    match tx.try_send(out) {
        Ok(()) => true,
        Err(full) if full.is_full() => {
            slow.cancel();
            // Wakes the connection's outgoing stream, which then ends.
            tx.close_channel();
            false
        }
        Err(_closed) => false,
    }
}

fn frame_out(out: Out) -> Option<Frame> {
    Some(frame(out))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use pb::session_event::Event;
    use tokio::sync::mpsc;

    fn run(run_id: &str, status: pb::RunStatus) -> pb::SessionEvent {
        pb::SessionEvent {
            event: Some(Event::Run(pb::RunUpdate {
                run_id: run_id.into(),
                status: status.into(),
                attempt: 1,
                ..Default::default()
            })),
        }
    }

    fn delta(run_id: &str, index: u32) -> pb::SessionEvent {
        pb::SessionEvent {
            event: Some(Event::Delta(pb::Delta {
                run_id: run_id.into(),
                index,
                text: format!("{run_id}:{index} "),
                attempt: 1,
                ..Default::default()
            })),
        }
    }

    fn reply(run_id: &str, seq: i64) -> pb::SessionEvent {
        pb::SessionEvent {
            event: Some(Event::Message(Box::new(pb::Message {
                seq,
                run_id: Some(run_id.into()),
                ..Default::default()
            }))),
        }
    }

    /// What a frame is, in short: `ack`, or the event's kind and run.
    fn describe(frame: &pb::ServerFrame) -> String {
        match &frame.frame {
            Some(Out::Ack(_)) => "ack".into(),
            Some(Out::Event(pb::SessionEvent { event: Some(ev) })) => match ev {
                Event::Run(r) => format!("{} {}", r.run_id, r.status().as_str_name()),
                Event::Delta(d) => format!("{} delta {}", d.run_id, d.index),
                Event::Message(m) => format!("reply of {}", m.run_id.as_deref().unwrap_or("")),
                other => format!("{other:?}"),
            },
            other => format!("{other:?}"),
        }
    }

    /// A subscription's forwarding task fed by hand: events in through
    /// `events_tx` (room for one), frames out on `rx`, sends marked on
    /// `sending`, and the connection's own frames (an ack) queued on `tx`.
    struct Forwarder {
        events_tx: mpsc::Sender<Result<pb::SessionEvent, ServiceError>>,
        sending: watch::Sender<Sends>,
        tx: Outgoing,
        rx: queue::Receiver<Frame>,
        task: JoinHandle<()>,
    }

    impl Forwarder {
        fn spawn() -> Self {
            let (events_tx, events_rx) = mpsc::channel(1);
            let (sending, send_done) = watch::channel(Sends::default());
            let (tx, rx) = queue::channel(16);
            let task = tokio::spawn(forward(
                tokio_stream::wrappers::ReceiverStream::new(events_rx).boxed(),
                "s".into(),
                send_done,
                tx.clone(),
                CancellationToken::new(),
            ));
            Self {
                events_tx,
                sending,
                tx,
                rx,
                task,
            }
        }

        /// Publishes `ev` and waits until the forwarder has taken it (room
        /// for one: once the slot is free again, on this single-threaded
        /// runtime, the forwarder has done all it does with the event).
        async fn publish(&self, ev: pb::SessionEvent) {
            self.events_tx.send(Ok(ev)).await.unwrap();
            drop(self.events_tx.reserve().await.unwrap());
        }

        /// Queues the connection's ack of a send.
        async fn ack(&self) {
            let mut tx = self.tx.clone();
            tx.send(frame(Out::Ack(pb::Ack::default()))).await.unwrap();
        }
    }

    /// The interleaving the hold-back exists for, fed to the forwarder
    /// directly: run `r1` streams; a `send` commits its message; `r1`'s
    /// reply commit claims the new run `r2`, whose `running` and first delta
    /// are published before the send's ack is queued. The client must still
    /// get the ack before any event of `r2`, while `r1`'s end goes on
    /// without waiting.
    #[tokio::test]
    async fn events_of_a_run_claimed_before_the_ack_wait_for_it() {
        let mut f = Forwarder::spawn();

        f.publish(run("r1", pb::RunStatus::Running)).await;
        f.publish(delta("r1", 0)).await;
        // The send, as `Connection::send` does it: in flight from before its
        // commit until its ack is queued.
        let in_flight = Sending::start(&f.sending);
        f.publish(delta("r1", 1)).await;
        f.publish(reply("r1", 3)).await;
        f.publish(run("r1", pb::RunStatus::Completed)).await;
        f.publish(run("r2", pb::RunStatus::Running)).await;
        f.ack().await;
        drop(in_flight);
        f.publish(delta("r2", 0)).await;

        let mut seen = Vec::new();
        while seen.len() < 8 {
            seen.push(describe(&f.rx.next().await.unwrap()));
        }
        assert_eq!(
            seen,
            [
                "r1 RUN_STATUS_RUNNING",
                "r1 delta 0",
                "r1 delta 1",
                "reply of r1",
                "r1 RUN_STATUS_COMPLETED",
                "ack",
                "r2 RUN_STATUS_RUNNING",
                "r2 delta 0",
            ],
            "the ack precedes every event of the run it starts"
        );
        f.task.abort();
    }

    /// Sends back to back: the second begins as soon as the first's ack is
    /// queued, before the forwarder looks again. An event of a new run held
    /// for the first send goes out after that ack, not after the second's.
    #[tokio::test]
    async fn a_held_event_waits_for_the_send_in_flight_not_for_the_next() {
        let mut f = Forwarder::spawn();

        let first = Sending::start(&f.sending);
        f.publish(run("r1", pb::RunStatus::Running)).await;
        f.ack().await;
        drop(first);
        let second = Sending::start(&f.sending);

        let mut seen = Vec::new();
        while seen.len() < 2 {
            let next = tokio::time::timeout(std::time::Duration::from_secs(5), f.rx.next()).await;
            let Ok(Some(frame)) = next else { break };
            seen.push(describe(&frame));
        }
        assert_eq!(
            seen,
            ["ack", "r1 RUN_STATUS_RUNNING"],
            "not held behind the second send"
        );
        drop(second);
        f.task.abort();
    }
}
