//! One Socket.IO connection: its user, its current session, and the
//! handlers of the events its client sends. Frames for chat-core go out on
//! the connection's `Connect` stream (see [`super::relay`]); sessions are
//! created, read and ended with the unary calls the REST routes use.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chat_common::limits::{self, ContentError};
use chat_proto::chat::v1 as pb;
use pb::client_frame::Frame as ClientKind;
use serde_json::{Value, json};
use socketioxide::extract::{SocketRef, TryData};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use super::relay::Turns;
use crate::app::SharedState;
use crate::auth::AuthUser;
use crate::frames::OutFrame;
use crate::legacy::error::LegacyError;
use crate::legacy::sessions;
use crate::legacy::views::{MessageRecord, SessionView, now, stored_metadata};
use crate::ratelimit::Tier;
use crate::ws::{Peer, TurnTraces};

/// Frames queued towards chat-core before handlers wait.
const CLIENT_FRAME_QUEUE: usize = 16;
/// Messages sent with `sessionJoined` as the conversation so far.
const JOIN_HISTORY: u32 = 50;
/// A repeated `typing` (or `stopTyping`) is passed on once in this long.
const TYPING_REPEAT: Duration = Duration::from_secs(2);
/// Subscriptions awaiting chat-core's confirmation whose event is kept; the
/// oldest is forgotten beyond this (it cannot take longer than the later ones).
const ANNOUNCEMENTS_WAITING: usize = 16;
/// Typing notices waiting to be passed on; more are dropped.
const TYPING_QUEUE: usize = 8;

/// A typing notice to pass on: session, typing or not, the socket it came from.
type TypingNotice = (String, bool, String);

/// An event for the client and its data.
type Announcement = (&'static str, Value);

/// Events waiting for chat-core to confirm a subscription, per session, in
/// the order the subscriptions were asked for.
#[derive(Debug, Default)]
struct Announcements {
    waiting: Vec<(String, Announcement)>,
}

impl Announcements {
    fn hold(&mut self, session_id: &str, announcement: Announcement) {
        if self.waiting.len() >= ANNOUNCEMENTS_WAITING {
            self.waiting.remove(0);
        }
        self.waiting.push((session_id.to_owned(), announcement));
    }

    /// The event waiting for `session_id`'s subscription (confirmed, or
    /// refused with an error the client is told of anyway).
    fn release(&mut self, session_id: &str) -> Option<Announcement> {
        let index = self.waiting.iter().position(|(s, _)| s == session_id)?;
        Some(self.waiting.remove(index).1)
    }
}

/// The frames a connection sends to chat-core, as its `Connect` request stream.
pub type Upstream = ReceiverStream<Box<pb::ClientFrame>>;

/// What every handler of one connection shares.
#[derive(Debug)]
pub struct Connection {
    pub(super) state: SharedState,
    /// The user, their limits and how a fresh token is checked (the WebSocket's rules).
    pub(super) peer: Peer,
    /// The user's latest token, for the unary calls.
    user: Mutex<AuthUser>,
    to_core: mpsc::Sender<Box<pb::ClientFrame>>,
    /// The expiry (Unix seconds) of the latest token; the relay's clock follows it.
    pub(super) expires_at: watch::Sender<u64>,
    /// The session the client created or joined last.
    session: Mutex<Option<String>>,
    /// Turns in flight, to pair each reply with its message.
    pub(super) turns: Mutex<Turns>,
    /// `sessionCreated` / `sessionJoined` events held until chat-core
    /// confirms their subscription, so that once the client has one, every
    /// later event of the session reaches it (typing notices are not replayed).
    announcements: Mutex<Announcements>,
    /// Cancelled when the client disconnects.
    pub(super) closed: CancellationToken,
    /// The last typing notice queued: session, typing or not, when.
    typing: Mutex<Option<(String, bool, Instant)>>,
    /// Typing notices, passed on one at a time in the order they came.
    typing_queue: mpsc::Sender<TypingNotice>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A JSON object field of a payload as a string.
fn text<'a>(data: &'a Value, field: &str) -> Option<&'a str> {
    data.get(field).and_then(Value::as_str)
}

impl Connection {
    /// Sets up a connection of `user`'s on `socket` and registers its event
    /// handlers (before any event can arrive); returns it with the frame
    /// stream to open chat-core's `Connect` with.
    pub fn open(state: SharedState, socket: &SocketRef, user: AuthUser) -> (Arc<Self>, Upstream) {
        let (to_core, rx) = mpsc::channel(CLIENT_FRAME_QUEUE);
        let peer = Peer {
            user_id: user.user_id.clone(),
            max_content_bytes: state.limits.max_content_bytes,
            rate_limits: state.rate_limits.clone(),
            tokens: state.tokens.clone(),
            state: Some(state.clone()),
            expires_at: user.expires_at,
            token_grace: state.limits.ws_token_grace,
            flush_timeout: state.limits.ws_flush_timeout,
            // The replaced service never closed a socket for its age.
            max_age: None,
            traces: TurnTraces::default(),
        };
        let (expires_at, _) = watch::channel(user.expires_at);
        let (typing_queue, typing_notices) = mpsc::channel(TYPING_QUEUE);
        let connection = Arc::new(Self {
            state,
            peer,
            user: Mutex::new(user),
            to_core,
            expires_at,
            session: Mutex::new(None),
            turns: Mutex::new(Turns::default()),
            announcements: Mutex::new(Announcements::default()),
            closed: CancellationToken::new(),
            typing: Mutex::new(None),
            typing_queue,
        });
        connection.register(socket);
        tokio::spawn(Arc::clone(&connection).pass_on_typing(typing_notices));
        (connection, ReceiverStream::new(rx))
    }

    /// The event held for `session_id`'s subscription, now that chat-core
    /// confirmed or refused it.
    pub(super) fn release_announcement(&self, session_id: &str) -> Option<Announcement> {
        lock(&self.announcements).release(session_id)
    }

    /// The token to make unary calls with.
    pub(super) fn user(&self) -> AuthUser {
        lock(&self.user).clone()
    }

    fn register(self: &Arc<Self>, socket: &SocketRef) {
        macro_rules! on {
            ($event:literal, $method:ident) => {{
                let connection = Arc::clone(self);
                socket.on(
                    $event,
                    move |socket: SocketRef, TryData(data): TryData<Value>| {
                        let connection = Arc::clone(&connection);
                        async move {
                            connection
                                .$method(&socket, data.unwrap_or(Value::Null))
                                .await
                        }
                    },
                );
            }};
        }
        on!("authenticate", authenticate);
        on!("createSession", create_session);
        on!("joinSession", join_session);
        on!("sendMessage", send_message);
        // Queued as they arrive (socketioxide runs each handler's future
        // as its own task, so only the synchronous part keeps their order).
        for (event, typing) in [("typing", true), ("stopTyping", false)] {
            let connection = Arc::clone(self);
            socket.on(event, move |socket: SocketRef| {
                connection.queue_typing(&socket, typing);
                std::future::ready(())
            });
        }
        on!("endSession", end_session);
        on!("ping", ping);
        let closed = self.closed.clone();
        socket.on_disconnect(move || {
            let closed = closed.clone();
            async move { closed.cancel() }
        });
    }

    // === events ===

    /// `authenticate {token}`: a fresh token of the same user keeps the connection open.
    async fn authenticate(&self, socket: &SocketRef, data: Value) {
        let token = text(&data, "token").unwrap_or_default();
        match self.peer.verify_renewal(token).await {
            Ok(user) => {
                let user_id = user.user_id.clone();
                self.expires_at.send_replace(user.expires_at);
                *lock(&self.user) = user;
                emit(
                    socket,
                    "authenticationSuccess",
                    &json!({"userId": user_id, "timestamp": now()}),
                );
            }
            Err(refused) => emit(
                socket,
                "authenticationError",
                &json!({"error": refused.message()}),
            ),
        }
    }

    /// `createSession {metadata?}` → `sessionCreated {sessionId, session}`.
    async fn create_session(&self, socket: &SocketRef, data: Value) {
        let metadata = match data.get("metadata") {
            None | Some(Value::Null) => None,
            Some(Value::Object(map)) => Some(map.clone()),
            Some(_) => return session_error(socket, "metadata must be an object"),
        };
        match sessions::create_session(&self.state, &self.user(), metadata).await {
            Ok(session) => {
                let after_seq = session.last_seq;
                let view = SessionView::from(session);
                let session_id = view.session_id.clone();
                self.enter(&session_id);
                let created = json!({"sessionId": session_id, "session": view});
                self.subscribe(session_id, after_seq, ("sessionCreated", created))
                    .await;
            }
            Err(error) => session_error(socket, &error.message),
        }
    }

    /// `joinSession {sessionId}` → `sessionJoined {sessionId, session,
    /// conversationHistory}`, then the session's new messages as they come.
    async fn join_session(&self, socket: &SocketRef, data: Value) {
        let Some(id) = text(&data, "sessionId") else {
            return session_error(socket, "sessionId is required");
        };
        let user = self.user();
        let session = match sessions::fetch(&self.state, &user, id).await {
            Ok(session) => session,
            Err(error) => return session_error(socket, &legacy_message(error)),
        };
        let history = match sessions::messages(&self.state, &user, id, None, JOIN_HISTORY).await {
            Ok(history) => history,
            Err(error) => return session_error(socket, &legacy_message(error)),
        };
        // Everything after the history read is delivered by the subscription.
        let after_seq = history.last().map_or(0, |m| m.seq);
        let view = SessionView::from(session);
        let session_id = view.session_id.clone();
        self.enter(&session_id);
        let history: Vec<MessageRecord> = history.into_iter().map(MessageRecord::from).collect();
        let joined = json!({"sessionId": session_id, "session": view, "conversationHistory": history});
        self.subscribe(session_id, after_seq, ("sessionJoined", joined))
            .await;
    }

    /// `sendMessage {content, type?, metadata?}` into the current session →
    /// `messageReceived` once stored, `newMessage` with the reply.
    async fn send_message(&self, socket: &SocketRef, data: Value) {
        let Some(session_id) = lock(&self.session).clone() else {
            return message_error(socket, "create or join a session first", None);
        };
        let Some(content) = text(&data, "content").or_else(|| text(&data, "message")) else {
            return message_error(socket, "content is required", None);
        };
        match limits::check_content(content, self.peer.max_content_bytes) {
            Ok(()) => {}
            Err(error @ (ContentError::Empty | ContentError::Nul | ContentError::TooLarge(_))) => {
                return message_error(socket, &error.to_string(), None);
            }
        }
        let metadata = match stored_metadata(text(&data, "type"), data.get("metadata")) {
            Ok(metadata) => metadata,
            Err(error) => return message_error(socket, error, None),
        };
        let client_msg_id = uuid::Uuid::new_v4().to_string();
        let frame = pb::ClientFrame {
            frame: Some(ClientKind::Send(pb::SendFrame {
                session_id,
                client_msg_id,
                content: content.to_owned(),
                trace_context: Default::default(),
                metadata_json: metadata.unwrap_or_default(),
            })),
        };
        if let Some(OutFrame::Error(limited)) = self.peer.check_send(&frame).await {
            return message_error(socket, &limited.message, limited.retry_after_ms);
        }
        self.forward(frame).await;
    }

    /// `endSession {reason?}` → `sessionEnded {sessionId, reason}`; the session is ended, not erased.
    async fn end_session(&self, socket: &SocketRef, data: Value) {
        let Some(session_id) = lock(&self.session).clone() else {
            return session_error(socket, "no current session");
        };
        let reason = text(&data, "reason").unwrap_or("ended by user").to_owned();
        match sessions::end_session(&self.state, &self.user(), &session_id).await {
            Ok(session) => {
                self.leave().await;
                let status = crate::legacy::views::status(session.session_status()).to_owned();
                emit(
                    socket,
                    "sessionEnded",
                    &json!({"sessionId": session_id, "reason": reason, "status": status, "timestamp": now()}),
                );
            }
            Err(error) => session_error(socket, &legacy_message(error)),
        }
    }

    /// `ping` → `pong {timestamp}`.
    async fn ping(&self, socket: &SocketRef, _data: Value) {
        emit(socket, "pong", &json!({"timestamp": now()}));
    }

    // === helpers ===

    /// Makes `session_id` the current session (unsubscribing from the previous one).
    fn enter(&self, session_id: &str) {
        let previous = lock(&self.session).replace(session_id.to_owned());
        if let Some(previous) = previous.filter(|p| p != session_id) {
            let frame = ClientKind::Unsubscribe(pb::UnsubscribeFrame { session_id: previous });
            // Best effort: a full queue only delays the unsubscribe's effect.
            let _ = self
                .to_core
                .try_send(Box::new(pb::ClientFrame { frame: Some(frame) }));
        }
    }

    /// Leaves the current session: no more events from it.
    async fn leave(&self) {
        let Some(session_id) = lock(&self.session).take() else {
            return;
        };
        let frame = ClientKind::Unsubscribe(pb::UnsubscribeFrame { session_id });
        self.forward(pb::ClientFrame { frame: Some(frame) }).await;
    }

    /// Subscribes to `session_id`'s events after `after_seq`; `announcement`
    /// goes to the client once chat-core confirms, before those events.
    async fn subscribe(&self, session_id: String, after_seq: i64, announcement: Announcement) {
        lock(&self.announcements).hold(&session_id, announcement);
        let frame = ClientKind::Subscribe(pb::SubscribeFrame {
            session_id,
            after_seq,
        });
        self.forward(pb::ClientFrame { frame: Some(frame) }).await;
    }

    /// Queues a frame for chat-core; when the stream is gone the relay has
    /// already told the client and disconnected it.
    async fn forward(&self, frame: pb::ClientFrame) {
        let _ = self.to_core.send(Box::new(frame)).await;
    }

    /// `typing` / `stopTyping` → `userTyping` / `userStoppedTyping {userId,
    /// sessionId}` to the current session's other sockets, on every gateway:
    /// queues the notice for [`Self::pass_on_typing`]. A repeat within
    /// [`TYPING_REPEAT`] is dropped.
    fn queue_typing(&self, socket: &SocketRef, typing: bool) {
        let Some(session_id) = lock(&self.session).clone() else {
            return;
        };
        let mut last = lock(&self.typing);
        let now = Instant::now();
        if let Some((session, was, at)) = last.as_ref()
            && *session == session_id
            && *was == typing
            && now.duration_since(*at) < TYPING_REPEAT
        {
            return;
        }
        *last = Some((session_id.clone(), typing, now));
        // A full queue drops the notice: typing notices are best effort.
        let _ = self
            .typing_queue
            .try_send((session_id, typing, socket.id.to_string()));
    }

    /// Passes queued typing notices on to chat-core (`SetTyping`, whose
    /// presence event reaches the session's sockets on every gateway, the
    /// one it names skipping it), in order, each counted in the user's frame
    /// rate limit, until the client disconnects.
    async fn pass_on_typing(self: Arc<Self>, mut notices: mpsc::Receiver<TypingNotice>) {
        loop {
            let notice = tokio::select! {
                () = self.closed.cancelled() => return,
                notice = notices.recv() => notice,
            };
            let Some((session_id, typing, origin)) = notice else {
                return;
            };
            match self
                .state
                .rate_limits
                .check(Tier::Frames, &self.peer.user_id)
                .await
            {
                Ok(Some(decision)) if !decision.allowed => continue,
                Ok(_) => {}
                // The limits cannot be checked and this tier fails closed.
                Err(_) => continue,
            }
            let request = pb::SetTypingRequest {
                session_id,
                typing,
                origin,
            };
            let sent = match self.state.unary_as(request, &self.user()) {
                Ok(request) => self.state.core.operators().set_typing(request).await.map(drop),
                Err(error) => Err(tonic::Status::unauthenticated(error.message.into_owned())),
            };
            if let Err(status) = sent {
                // Best effort: nothing to tell the client.
                tracing::debug!(code = ?status.code(), "typing notice not passed on");
            }
        }
    }
}

/// Emits `event` to this socket; a socket gone meanwhile has nothing to be told.
pub(super) fn emit(socket: &SocketRef, event: &str, data: &Value) {
    let _ = socket.emit(event, data);
}

fn session_error(socket: &SocketRef, message: &str) {
    emit(
        socket,
        "sessionError",
        &json!({"error": message, "timestamp": now()}),
    );
}

pub(super) fn message_error(socket: &SocketRef, message: &str, retry_after_ms: Option<u64>) {
    let mut body = json!({"error": message, "timestamp": now()});
    if let Some(ms) = retry_after_ms {
        body["retryAfter"] = ms.div_ceil(1000).max(1).into();
    }
    emit(socket, "messageError", &body);
}

/// The client-facing text of a legacy error.
fn legacy_message(error: LegacyError) -> String {
    match error {
        LegacyError::Api(error) => error.message.into_owned(),
        LegacyError::SessionNotFound(_) => "Session not found".to_owned(),
    }
}
