//! `Connect`: one client connection's frames in, its events out. One task
//! per connection handles its frames in order and, between them, forwards
//! its subscriptions' events into the connection's bounded outgoing queue (a
//! `futures` channel: it allocates per frame queued, where Tokio's allocates
//! ~0.8 KiB up front, which every idle connection would hold).

use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use chat_common::ErrorCode;
use chat_proto::chat::v1::{self as pb, client_frame::Frame as In, server_frame::Frame as Out};
use futures::channel::mpsc as queue;
use futures::stream::BoxStream;
use futures::{FutureExt as _, SinkExt, Stream, StreamExt};
use tokio::task::JoinHandle;
use tokio_stream::StreamMap;
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
    mut frames: impl Stream<Item = Result<pb::ClientFrame, Status>> + Send + Unpin + 'static,
) -> Pin<Box<dyn Stream<Item = Result<pb::ServerFrame, Status>> + Send>> {
    let (tx, rx) = queue::channel(OUTGOING_QUEUE);
    let slow = CancellationToken::new();
    // The connection stops once its stream is dropped, polled or not.
    let gone = slow.clone().drop_guard();
    let mut out = Outlet::new(tx, slow.clone());
    let mut connection = Connection {
        core,
        principal,
        request_id,
        message_limit,
        queue: None,
    };
    // The block owns the connection and its outlet and lends them to
    // `serve_frames`: an `async fn` taking them by value would hold each
    // twice (its arguments, then its locals), in every idle connection.
    tokio::spawn(async move { serve_frames(&mut out, &mut frames, &mut connection).await });
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

/// A session subscription of a connection: the session id as the client
/// named it (for the frames that end the subscription), and its events.
struct Subscribed {
    session_id: String,
    events: BoxStream<'static, Result<pb::SessionEvent, ServiceError>>,
}

impl Stream for Subscribed {
    type Item = Result<pb::SessionEvent, ServiceError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Option<Self::Item>> {
        self.events.poll_next_unpin(cx)
    }
}

/// The key of a session's subscription: its canonical id when it has one.
fn session_key(session_id: &str) -> String {
    SessionId::parse(session_id).map_or_else(|_| session_id.to_owned(), SessionId::into_string)
}

/// A connection's subscriptions, one per session, each under a number of
/// its own (handed out with every event, so it must be cheap to copy).
/// `StreamMap` polls them from a random start, so a busy session does not
/// starve the others, and drops those whose events ended.
type Subscriptions = StreamMap<u64, Subscribed>;

/// Events a connection forwards back to back before it looks for a frame.
const EVENT_BURST: usize = 64;

/// Where a connection's frames go: its bounded outgoing queue, and the
/// subscriptions whose events it forwards there between the frames it
/// handles.
struct Outlet {
    tx: Outgoing,
    /// Cancelled when the client fell behind its outgoing queue, and when
    /// the connection's outgoing stream is dropped (the client is gone).
    slow: CancellationToken,
    subscriptions: Subscriptions,
    /// The number of the latest subscription.
    subscribed: u64,
    /// Events forwarded since the connection last looked for a frame.
    burst: usize,
}

/// What a connection does next.
enum Step {
    Frame(In),
    /// A frame without content.
    Empty,
    /// An item of the subscription with this number.
    Event(u64, Result<pb::SessionEvent, ServiceError>),
    Stop,
}

impl Outlet {
    fn new(tx: Outgoing, slow: CancellationToken) -> Self {
        Self {
            tx,
            slow,
            // Most connections follow one session: room for exactly that.
            subscriptions: StreamMap::with_capacity(1),
            subscribed: 0,
            burst: 0,
        }
    }

    /// The next thing to do: an event ready goes first (so that events
    /// waiting when a frame's handling ends go out before the next frame is
    /// handled), but after [`EVENT_BURST`] of them a frame waiting is handled
    /// (a flood of events does not hold a `cancel` back).
    async fn next(
        &mut self,
        frames: &mut (impl Stream<Item = Result<pb::ClientFrame, Status>> + Unpin),
    ) -> Step {
        if self.burst >= EVENT_BURST {
            self.burst = 0;
            if let Some(next) = frames.next().now_or_never() {
                return Step::frame(next);
            }
        }
        let Self {
            slow, subscriptions, ..
        } = self;
        let step = tokio::select! {
            biased;
            () = slow.cancelled() => Step::Stop,
            Some((number, item)) = subscriptions.next(), if !subscriptions.is_empty() => Step::Event(number, item),
            next = frames.next() => Step::frame(next),
        };
        match step {
            Step::Event(..) => self.burst += 1,
            _ => self.burst = 0,
        }
        step
    }

    /// Adds `sub`; the caller removed any earlier subscription to its session.
    fn subscribe(&mut self, sub: Subscribed) {
        self.subscribed += 1;
        self.subscriptions.insert(self.subscribed, sub);
    }

    /// Ends the subscription to the session `session_id` names, however
    /// it is written.
    fn unsubscribe(&mut self, session_id: &str) {
        let key = session_key(session_id);
        let number = self
            .subscriptions
            .iter()
            .find(|(_, sub)| session_key(&sub.session_id) == key)
            .map(|(number, _)| *number);
        if let Some(number) = number {
            self.subscriptions.remove(&number);
        }
    }

    /// Queues a subscription's item without waiting; an error ends the
    /// subscription.
    fn forward(&mut self, number: u64, item: Result<pb::SessionEvent, ServiceError>) {
        let err = match item {
            Ok(ev) => {
                queue(&mut self.tx, &self.slow, frame(Out::Event(ev)));
                return;
            }
            Err(err) => err,
        };
        let Some(Subscribed { session_id, .. }) = self.subscriptions.remove(&number) else {
            return;
        };
        // The subscription could not catch up after losing events: say
        // why, then that it ended, so the client subscribes again from its
        // last seq.
        let ended = frame(Out::Unsubscribed(pb::Unsubscribed {
            session_id: session_id.clone(),
        }));
        for out in [error_frame(&err, &session_id, ""), ended] {
            if !queue(&mut self.tx, &self.slow, out) {
                break;
            }
        }
    }
}

impl Step {
    fn frame(next: Option<Result<pb::ClientFrame, Status>>) -> Self {
        match next {
            Some(Ok(pb::ClientFrame { frame: Some(frame) })) => Self::Frame(frame),
            Some(Ok(pb::ClientFrame { frame: None })) => Self::Empty,
            Some(Err(_)) | None => Self::Stop,
        }
    }
}

/// Handles one frame of a connection.
trait Handler {
    fn handle(&mut self, frame: In, out: &mut Outlet) -> impl Future<Output = ()> + Send;
}

/// Serves a connection: its frames are handled one at a time, in order,
/// and its subscriptions' events are forwarded between them, never while
/// one is handled. So a `send`'s ack, queued within its handling, precedes
/// every event that came meanwhile: above all those of the run it queued,
/// which a runner already busy in the session may claim and publish the
/// moment the message is committed.
async fn serve_frames(
    out: &mut Outlet,
    frames: &mut (impl Stream<Item = Result<pb::ClientFrame, Status>> + Unpin),
    handler: &mut impl Handler,
) {
    loop {
        // What is handled next is taken out of the step before any wait, so
        // the future (which every idle connection holds) keeps no room for
        // a step while a frame is handled.
        let handling: Pin<Box<dyn Future<Output = ()> + Send + '_>> = match out.next(frames).await {
            Step::Stop => break,
            Step::Event(number, item) => {
                out.forward(number, item);
                continue;
            }
            // Boxed: a frame's handling (a send's transaction, above all)
            // needs far more state than an idle connection waiting for its
            // next frame.
            Step::Frame(frame) => Box::pin(handler.handle(frame, &mut *out)),
            Step::Empty => {
                let tx = &mut out.tx;
                let refusal = error_frame(&ServiceError::Invalid("empty frame".into()), "", "");
                Box::pin(async move {
                    let _ = tx.send(refusal).await;
                })
            }
        };
        handling.await;
    }
}

struct Connection {
    core: ChatCore,
    principal: Principal,
    request_id: Option<String>,
    message_limit: Option<Arc<UserLimits>>,
    /// The task forwarding the operators' queue, while watched.
    queue: Option<QueueWatch>,
}

impl Connection {
    async fn send(&mut self, send: pb::SendFrame, out: &mut Outlet) -> Option<Frame> {
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
                // Queued before any event of the run: none is forwarded
                // while this frame is handled (see `serve_frames`).
                let _ = out.tx.send(frame(Out::Ack(sent.ack.clone()))).await;
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

    async fn subscribe(&mut self, sub: pb::SubscribeFrame, out: &mut Outlet) -> Option<Frame> {
        let subscription = match self
            .core
            .subscribe(&self.principal, &sub.session_id, sub.after_seq)
            .await
        {
            Ok(subscription) => subscription,
            Err(err) => return Some(error_frame(&err, &sub.session_id, "")),
        };
        // The previous subscription to the session (if any) ends here, so
        // none of its events follow `subscribed`.
        out.unsubscribe(&sub.session_id);
        let subscribed = Out::Subscribed(pb::Subscribed {
            session_id: sub.session_id.clone(),
            last_seq: subscription.last_seq,
        });
        if out.tx.send(frame(subscribed)).await.is_err() {
            return None;
        }
        out.subscribe(Subscribed {
            session_id: sub.session_id,
            events: subscription.events,
        });
        None
    }
}

impl Handler for Connection {
    async fn handle(&mut self, incoming: In, out: &mut Outlet) {
        let reply = match incoming {
            In::Subscribe(sub) => self.subscribe(sub, out).await,
            In::Unsubscribe(unsub) => {
                out.unsubscribe(&unsub.session_id);
                frame_out(Out::Unsubscribed(pb::Unsubscribed {
                    session_id: unsub.session_id,
                }))
            }
            In::Send(send) => {
                let span = self.turn_span(&send);
                self.send(send, out).instrument(span).await
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
            In::WatchQueue(_) => self.watch_queue(out).await,
            In::UnwatchQueue(_) => {
                self.queue = None;
                None
            }
        };
        if let Some(reply) = reply {
            let _ = out.tx.send(reply).await;
        }
    }
}

impl Connection {
    /// Starts forwarding the operators' queue (a snapshot, then changes),
    /// replacing an earlier watch; an error ends it with an error frame
    /// naming no session, and the client may watch again.
    async fn watch_queue(&mut self, out: &mut Outlet) -> Option<Frame> {
        self.queue = None;
        let mut updates = match self.core.watch_queue(&self.principal).await {
            Ok(updates) => updates,
            Err(err) => return Some(error_frame(&err, "", "")),
        };
        let mut tx = out.tx.clone();
        let slow = out.slow.clone();
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

    /// A connection served by [`serve_frames`] with a stand-in handler:
    /// frames in through `frames_tx`, one subscription's events through
    /// `events_tx`, frames out on `rx`.
    struct Served {
        frames_tx: mpsc::UnboundedSender<In>,
        events_tx: mpsc::UnboundedSender<Result<pb::SessionEvent, ServiceError>>,
        rx: queue::Receiver<Frame>,
        task: JoinHandle<()>,
    }

    /// Handles each frame as `Connection::send` does, in its steps: the
    /// commit (during which a runner busy in the session publishes events of
    /// the new run, here `publish`'s next batch), then the ack.
    struct Sends {
        events_tx: mpsc::UnboundedSender<Result<pb::SessionEvent, ServiceError>>,
        publish: std::collections::VecDeque<Vec<pb::SessionEvent>>,
    }

    impl Handler for Sends {
        async fn handle(&mut self, _frame: In, out: &mut Outlet) {
            for ev in self.publish.pop_front().unwrap_or_default() {
                self.events_tx.send(Ok(ev)).unwrap();
            }
            // Whatever else would run meanwhile gets its chance.
            for _ in 0..8 {
                tokio::task::yield_now().await;
            }
            out.tx.send(frame(Out::Ack(pb::Ack::default()))).await.unwrap();
        }
    }

    /// Every idle connection's task waits in this future: a frame's
    /// handling is boxed, and no room for a step is kept while it runs.
    #[test]
    fn an_idle_connections_future_is_small() {
        let (events_tx, _events_rx) = mpsc::unbounded_channel();
        let (_frames_tx, frames_rx) = mpsc::unbounded_channel::<In>();
        let (tx, _rx) = queue::channel(1);
        let mut out = Outlet::new(tx, CancellationToken::new());
        let mut handler = Sends {
            events_tx,
            publish: std::collections::VecDeque::new(),
        };
        let mut frames = tokio_stream::wrappers::UnboundedReceiverStream::new(frames_rx)
            .map(|frame| Ok(pb::ClientFrame { frame: Some(frame) }));
        let serving = serve_frames(&mut out, &mut frames, &mut handler);
        let size = std::mem::size_of_val(&serving);
        assert!(
            size <= SERVE_FUTURE_BOUND,
            "serve_frames' future takes {size} bytes"
        );
    }

    /// 192 bytes today (unoptimised build); keeping the step across a
    /// frame's handling (matching on it around the `await`) made it 336.
    const SERVE_FUTURE_BOUND: usize = 256;

    impl Served {
        /// `publish[i]`: what is published while the `i`th frame is handled.
        fn spawn(publish: Vec<Vec<pb::SessionEvent>>) -> Self {
            let (frames_tx, frames_rx) = mpsc::unbounded_channel();
            let (events_tx, events_rx) = mpsc::unbounded_channel();
            let (tx, rx) = queue::channel(4096);
            let mut out = Outlet::new(tx, CancellationToken::new());
            out.subscribe(Subscribed {
                session_id: "s".into(),
                events: tokio_stream::wrappers::UnboundedReceiverStream::new(events_rx).boxed(),
            });
            let mut handler = Sends {
                events_tx: events_tx.clone(),
                publish: publish.into(),
            };
            let mut frames = tokio_stream::wrappers::UnboundedReceiverStream::new(frames_rx)
                .map(|frame| Ok(pb::ClientFrame { frame: Some(frame) }));
            let task = tokio::spawn(async move { serve_frames(&mut out, &mut frames, &mut handler).await });
            Self {
                frames_tx,
                events_tx,
                rx,
                task,
            }
        }

        fn publish(&self, ev: pb::SessionEvent) {
            self.events_tx.send(Ok(ev)).unwrap();
        }

        fn send(&self) {
            self.frames_tx.send(In::Send(pb::SendFrame::default())).unwrap();
        }

        /// The next `n` frames out, described.
        async fn next(&mut self, n: usize) -> Vec<String> {
            let mut seen = Vec::new();
            while seen.len() < n {
                let next = tokio::time::timeout(std::time::Duration::from_secs(5), self.rx.next()).await;
                let Ok(Some(frame)) = next else { break };
                seen.push(describe(&frame));
            }
            seen
        }
    }

    /// The interleaving the ordering exists for: run `r1` streams; a `send`
    /// commits its message; `r1`'s reply commit claims the new run `r2`,
    /// whose `running` and first delta are published before the send's ack
    /// is queued. The client must still get the ack before any event of
    /// `r2`.
    #[tokio::test]
    async fn events_of_a_run_claimed_before_the_ack_wait_for_it() {
        let mut c = Served::spawn(vec![vec![
            delta("r1", 1),
            reply("r1", 3),
            run("r1", pb::RunStatus::Completed),
            run("r2", pb::RunStatus::Running),
            delta("r2", 0),
        ]]);
        c.publish(run("r1", pb::RunStatus::Running));
        c.publish(delta("r1", 0));
        assert_eq!(c.next(2).await, ["r1 RUN_STATUS_RUNNING", "r1 delta 0"]);

        c.send();
        assert_eq!(
            c.next(6).await,
            [
                "ack",
                "r1 delta 1",
                "reply of r1",
                "r1 RUN_STATUS_COMPLETED",
                "r2 RUN_STATUS_RUNNING",
                "r2 delta 0",
            ],
            "the ack precedes every event that came while its send was handled"
        );
        c.task.abort();
    }

    /// Sends back to back: the second is waiting when the first's handling
    /// ends. The events that came meanwhile go out before the second send is
    /// handled, not after it.
    #[tokio::test]
    async fn events_go_out_between_back_to_back_sends() {
        let mut c = Served::spawn(vec![vec![run("r1", pb::RunStatus::Running)], vec![]]);
        c.send();
        c.send();
        assert_eq!(
            c.next(3).await,
            ["ack", "r1 RUN_STATUS_RUNNING", "ack"],
            "not held behind the second send"
        );
        c.task.abort();
    }

    /// A flood of events does not hold a frame back: once a burst of them
    /// went out, a frame waiting is handled.
    #[tokio::test]
    async fn a_frame_waiting_is_handled_within_a_burst_of_events() {
        let mut c = Served::spawn(vec![vec![]]);
        c.publish(run("r1", pb::RunStatus::Running));
        assert_eq!(c.next(1).await, ["r1 RUN_STATUS_RUNNING"]);
        // Both ready at once: three bursts' worth of deltas, and a send.
        for i in 0..3 * EVENT_BURST {
            c.publish(delta("r1", u32::try_from(i).unwrap()));
        }
        c.send();
        let seen = c.next(3 * EVENT_BURST + 1).await;
        let ack = seen
            .iter()
            .position(|f| f == "ack")
            .expect("the send was handled");
        assert!(ack <= EVENT_BURST, "the ack came after {ack} deltas");
        c.task.abort();
    }
}
