//! `Connect`: one client connection's frames in, its events out. Frames are
//! handled in order; each subscription forwards its events from its own task
//! into the connection's bounded outgoing queue.

use std::collections::HashMap;
use std::pin::Pin;

use chat_common::ErrorCode;
use chat_proto::chat::v1::{self as pb, client_frame::Frame as In, server_frame::Frame as Out};
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::{Status, Streaming};
use tracing::Instrument as _;

use crate::dispatch::RunOrigin;
use crate::domain::{MessageRole, Principal};
use crate::service::{ChatCore, ServiceError};

/// Frames a connection may have queued before its subscriptions wait.
const OUTGOING_QUEUE: usize = 1024;

type Outgoing = mpsc::Sender<Result<pb::ServerFrame, Status>>;

fn frame(frame: Out) -> Result<pb::ServerFrame, Status> {
    Ok(pb::ServerFrame { frame: Some(frame) })
}

fn error_frame(err: &ServiceError, session_id: &str, client_msg_id: &str) -> Result<pb::ServerFrame, Status> {
    if let ServiceError::Internal(source) = err {
        tracing::error!(error = %source, "internal error");
    }
    frame(Out::Error(pb::ErrorFrame {
        code: err.code().as_str().to_owned(),
        message: err.to_string(),
        client_msg_id: client_msg_id.to_owned(),
        session_id: session_id.to_owned(),
        retry_after_ms: 0,
    }))
}

/// Starts serving a connection and returns its outgoing frames.
/// `request_id` is the connection's (the client's WebSocket upgrade).
pub fn serve(
    core: ChatCore,
    principal: Principal,
    request_id: Option<String>,
    frames: Streaming<pb::ClientFrame>,
) -> Pin<Box<dyn Stream<Item = Result<pb::ServerFrame, Status>> + Send>> {
    let (tx, mut rx) = mpsc::channel(OUTGOING_QUEUE);
    let slow = CancellationToken::new();
    tokio::spawn(
        Connection {
            core,
            principal,
            request_id,
            tx,
            subscriptions: HashMap::new(),
            slow: slow.clone(),
        }
        .run(frames),
    );
    // Ends the stream with `slow_consumer` as soon as the queue overflows,
    // without first draining what the client could not keep up with.
    Box::pin(async_stream::stream! {
        loop {
            tokio::select! {
                biased;
                () = slow.cancelled() => {
                    yield Err(ErrorCode::SlowConsumer.status(format!(
                        "fell more than {OUTGOING_QUEUE} frames behind; reconnect and resume with after_seq"
                    )));
                    break;
                }
                item = rx.recv() => match item {
                    Some(item) => yield item,
                    None => break,
                },
            }
        }
    })
}

struct Connection {
    core: ChatCore,
    principal: Principal,
    request_id: Option<String>,
    tx: Outgoing,
    subscriptions: HashMap<String, JoinHandle<()>>,
    /// Cancelled when the client fell behind its outgoing queue.
    slow: CancellationToken,
}

impl Connection {
    async fn run(mut self, mut frames: Streaming<pb::ClientFrame>) {
        loop {
            let next = tokio::select! {
                next = frames.next() => next,
                () = self.tx.closed() => break,
            };
            match next {
                Some(Ok(pb::ClientFrame { frame: Some(frame) })) => self.handle(frame).await,
                Some(Ok(pb::ClientFrame { frame: None })) => {
                    let err = ServiceError::Invalid("empty frame".into());
                    let _ = self.tx.send(error_frame(&err, "", "")).await;
                }
                Some(Err(_)) | None => break,
            }
        }
        for (_, task) in self.subscriptions.drain() {
            task.abort();
        }
    }

    async fn handle(&mut self, incoming: In) {
        let reply = match incoming {
            In::Subscribe(sub) => self.subscribe(sub).await,
            In::Unsubscribe(unsub) => {
                if let Some(task) = self.subscriptions.remove(&unsub.session_id) {
                    task.abort();
                }
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
        };
        if let Some(reply) = reply {
            let _ = self.tx.send(reply).await;
        }
    }

    async fn send(&mut self, send: pb::SendFrame) -> Option<Result<pb::ServerFrame, Status>> {
        let result = self
            .core
            .send(
                &self.principal,
                &send.session_id,
                &send.client_msg_id,
                send.content,
                MessageRole::User,
            )
            .await;
        match result {
            Ok(sent) => {
                let _ = self.tx.send(frame(Out::Ack(sent.ack.clone()))).await;
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

    async fn subscribe(&mut self, sub: pb::SubscribeFrame) -> Option<Result<pb::ServerFrame, Status>> {
        let subscription = match self
            .core
            .subscribe(&self.principal, &sub.session_id, sub.after_seq)
            .await
        {
            Ok(subscription) => subscription,
            Err(err) => return Some(error_frame(&err, &sub.session_id, "")),
        };
        if let Some(previous) = self.subscriptions.remove(&sub.session_id) {
            previous.abort();
        }
        let subscribed = Out::Subscribed(pb::Subscribed {
            session_id: sub.session_id.clone(),
            last_seq: subscription.last_seq,
        });
        // Sent before the task starts so `subscribed` precedes the events.
        if self.tx.send(frame(subscribed)).await.is_err() {
            return None;
        }
        let tx = self.tx.clone();
        let session_id = sub.session_id.clone();
        let mut events = subscription.events;
        let slow = self.slow.clone();
        let task = tokio::spawn(async move {
            while let Some(item) = events.next().await {
                let out = match item {
                    Ok(ev) => frame(Out::Event(ev)),
                    Err(err) => error_frame(&err, &session_id, ""),
                };
                let failed = out.is_err() || matches!(&out, Ok(f) if matches!(f.frame, Some(Out::Error(_))));
                match tx.try_send(out) {
                    Ok(()) if !failed => {}
                    Ok(()) => return,
                    // A full queue means the client cannot keep up: end the
                    // connection rather than block the session's events.
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        slow.cancel();
                        return;
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return,
                }
            }
        });
        self.subscriptions.insert(sub.session_id, task);
        None
    }
}

fn frame_out(out: Out) -> Option<Result<pb::ServerFrame, Status>> {
    Some(frame(out))
}
