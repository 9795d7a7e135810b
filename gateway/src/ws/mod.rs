//! `GET /api/v1/ws`: one WebSocket in, one connection of a shared
//! `ChatService.Multiplex` stream out (see [`crate::mux`]).
//!
//! The socket loop is written against `Stream`/`Sink` so tests can drive it
//! with channels; [`crate::frames`] does the JSON ⇄ proto translation.

use std::pin::Pin;
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::response::{IntoResponse as _, Response};
use chat_common::ErrorCode;
use chat_proto::chat::v1 as pb;
use futures::future::BoxFuture;
use futures::{FutureExt, Sink, SinkExt, Stream, StreamExt};
use tokio_util::sync::CancellationToken;

use crate::app::SharedState;
use crate::auth::{AuthUser, WsAuthUser};
use crate::connections::{ConnectionGuard, OverCap};
use crate::core::current_request_id;
use crate::frames::{Inbound, OutFrame, parse_client_frame};
use crate::mux::{ClientFrames, ServerFrames, Upstream};
use crate::origin::UpgradeOrigin;
use crate::ratelimit::middleware::ClientAddress;

mod peer;

pub use peer::{Expiry, Peer, TOKEN_EXPIRED, TokenClock, TurnTraces, expiry_warning};

/// Server frames written to the socket before one flush.
const MAX_BATCH: usize = 64;
/// How long a socket closed for an oversized frame stays open after its
/// close frame went out, for the client to read it (see the relay).
const TOO_BIG_LINGER: Duration = Duration::from_millis(250);

/// Close codes the gateway uses.
///
/// A missing, invalid or signed-out token is refused with 401 before the
/// upgrade (see [`upgrade`]); an open socket ends for its credentials with
/// `TOKEN_EXPIRED` (expiry or sign-out), or with `POLICY` when an `auth`
/// frame brings another user's token.
mod close {
    /// The socket reached its maximum age (`WS_MAX_AGE_SECS`): reconnect and resume.
    pub const GOING_AWAY: u16 = 1001;
    pub const BAD_DATA: u16 = 1007;
    /// An `auth` frame brought another user's token: a socket serves one user.
    pub const POLICY: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
    pub const INTERNAL: u16 = 1011;
    pub const RESTART: u16 = 1012;
    pub const TRY_AGAIN_LATER: u16 = 1013;
    /// The access token expired and no fresh one came in the grace period,
    /// or the user signed out.
    pub const TOKEN_EXPIRED: u16 = 4001;
    /// The client fell too far behind its outgoing queue; reconnect and resume.
    pub const SLOW_CONSUMER: u16 = 4008;
}

/// Checks the origin (403) and authenticates (401) before upgrading the
/// connection; the connection to chat-core is opened first too, so a
/// signed-out token is refused (401) before the upgrade.
///
/// The write buffer has no hard cap (a long reply must never fail a write);
/// the relay awaits every flush, so at most one batch is buffered.
pub async fn upgrade(
    State(state): State<SharedState>,
    _origin: UpgradeOrigin,
    WsAuthUser(user): WsAuthUser,
    ClientAddress(address): ClientAddress,
    headers: http::HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let guard = state.connections.open(&user.user_id, &address);
    let limits = &state.limits;
    // No span for the socket's life (its cost per idle socket adds up): the
    // request id is logged with the socket's events and sent to chat-core,
    // and each turn sent on it gets its own span (see `TurnTraces`).
    let request_id = current_request_id();
    let traces = TurnTraces::of_upgrade(&headers);
    let opened = match guard {
        Ok(guard) => {
            let request_id_text = request_id.as_ref().and_then(|id| id.to_str().ok());
            let upstream = Box::pin(state.mux.open(&user, request_id_text)).await;
            if let Err(status) = &upstream.frames
                && ErrorCode::from_status(status) == ErrorCode::Unauthenticated
            {
                return crate::error::ApiError::from(status.clone()).into_response();
            }
            Ok((guard, upstream))
        }
        Err(over) => Err(over),
    };
    // Answers the page's subprotocol (never echoing the token one).
    let ws = ws
        .protocols([crate::auth::WS_PROTOCOL])
        .read_buffer_size(limits.ws_read_buffer_bytes)
        .write_buffer_size(limits.ws_write_buffer_bytes)
        .max_message_size(limits.max_ws_frame_bytes)
        .max_frame_size(limits.max_ws_frame_bytes);
    let upgraded = Box::new(Upgraded {
        state,
        user,
        request_id,
        traces,
        opened,
    });
    ws.on_upgrade(move |socket| serve(socket, upgraded))
}

/// What an upgraded socket is served with, boxed: the upgrade's callback
/// (kept for the socket's life by the task that runs it) then holds a pointer.
struct Upgraded {
    state: SharedState,
    user: AuthUser,
    request_id: Option<tonic::metadata::AsciiMetadataValue>,
    traces: TurnTraces,
    opened: Result<(ConnectionGuard, Upstream), OverCap>,
}

/// An open socket and everything its relay uses, in one allocation: the
/// socket's task, alive as long as the socket, holds only this pointer and
/// the relay's own state, never copies of these.
struct Socket {
    socket: WebSocket,
    upstream: ServerFrames,
    to_core: ClientFrames,
    peer: Peer,
    request_id: String,
    opened: std::time::Instant,
    _guard: ConnectionGuard,
    _open: OpenSocket,
}

/// One socket's life: relayed, or told why it cannot be and closed.
fn serve(socket: WebSocket, upgraded: Box<Upgraded>) -> BoxFuture<'static, ()> {
    let Upgraded {
        state,
        user,
        request_id,
        traces,
        opened,
    } = *upgraded;
    let request_id = request_id
        .as_ref()
        .and_then(|id| id.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let (guard, upstream) = match opened {
        Ok(opened) => opened,
        Err(over) => return Box::pin(close_over_cap(socket, over)),
    };
    let Upstream { to_core, frames } = upstream;
    let upstream = match frames {
        Ok(frames) => frames,
        Err(status) => {
            tracing::warn!(code = ?status.code(), %request_id, "failed to open chat-core connect stream");
            let mut socket = socket;
            return Box::pin(async move {
                close_with_error(&mut socket, &status).await;
            });
        }
    };
    let AuthUser {
        user_id, expires_at, ..
    } = user;
    tracing::debug!(%user_id, %request_id, "websocket connected");
    let shutdown = state.shutdown.clone();
    let peer = Peer {
        user_id,
        max_content_bytes: state.limits.max_content_bytes,
        rate_limits: state.rate_limits.clone(),
        tokens: state.tokens.clone(),
        state: Some(state.clone()),
        expires_at,
        token_grace: state.limits.ws_token_grace,
        flush_timeout: state.limits.ws_flush_timeout,
        max_age: state.limits.ws_max_age,
        traces,
    };
    let socket = Box::new(Socket {
        socket,
        upstream,
        to_core,
        peer,
        request_id,
        opened: std::time::Instant::now(),
        _guard: guard,
        _open: OpenSocket::count(),
    });
    Box::pin(relay_socket(socket, shutdown))
}

/// Relays an open socket until it ends (or `shutdown` is cancelled), then
/// logs how it went. The wait for `shutdown` lives here once and the relay
/// borrows it: passed on by value, each future would hold its own copy.
async fn relay_socket(mut open: Box<Socket>, shutdown: CancellationToken) {
    let shutdown = std::pin::pin!(shutdown.cancelled());
    let Socket {
        socket,
        upstream,
        to_core,
        peer,
        ..
    } = &mut *open;
    let ended = relay(socket, upstream, to_core, peer, shutdown).await;
    tracing::info!(
        target: "access",
        user_id = %open.peer.user_id,
        request_id = %open.request_id,
        duration_ms = chat_common::trace::millis(open.opened.elapsed()),
        frames_in = ended.frames_in,
        frames_out = ended.frames_out,
        close_code = ended.close_code,
        closed_by = ended.closed_by.as_str(),
        "websocket closed"
    );
}

/// Tells a socket over its user's or address's connection cap why, and closes it with 1013.
async fn close_over_cap(mut socket: WebSocket, over: OverCap) {
    let frame = OutFrame::error(ErrorCode::RateLimited, over.message());
    let _ = socket.feed(Message::Text(frame.to_json().into())).await;
    close_with(&mut socket, close::TRY_AGAIN_LATER, "too many connections").await;
}

/// Counts an open socket in `chat_ws_connections` for as long as it lives.
struct OpenSocket;

impl OpenSocket {
    fn count() -> Self {
        metrics::gauge!("chat_ws_connections").increment(1.0);
        Self
    }
}

impl Drop for OpenSocket {
    fn drop(&mut self) {
        metrics::gauge!("chat_ws_connections").decrement(1.0);
    }
}

fn count_frame(direction: &'static str, kind: &'static str) {
    metrics::counter!("chat_ws_frames_total", "direction" => direction, "type" => kind).increment(1);
}

/// The `type` of a client frame, as counted in `chat_ws_frames_total`.
fn inbound_kind(inbound: &Inbound) -> &'static str {
    use pb::client_frame::Frame;
    match inbound {
        Inbound::Forward(frame) => match frame.frame {
            Some(Frame::Subscribe(_)) => "subscribe",
            Some(Frame::Unsubscribe(_)) => "unsubscribe",
            Some(Frame::Send(_)) => "send",
            Some(Frame::Cancel(_)) => "cancel",
            Some(Frame::Ping(_)) => "ping",
            Some(Frame::WatchQueue(_)) => "watch_queue",
            Some(Frame::UnwatchQueue(_)) => "unwatch_queue",
            None => "invalid",
        },
        Inbound::Reply(OutFrame::Pong) => "ping",
        Inbound::Reply(_) => "invalid",
        Inbound::Auth(_) => "auth",
    }
}

/// How a socket's relay ended, for its access log line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ended {
    /// Text and binary frames read from the client.
    pub frames_in: u64,
    /// Frames written to the client.
    pub frames_out: u64,
    /// The close code sent or received, if a close frame was.
    pub close_code: Option<u16>,
    pub closed_by: ClosedBy,
}

/// Which side ended a socket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ClosedBy {
    /// The client closed the socket or went away.
    #[default]
    Client,
    /// The gateway closed it (restart, token expiry, chat-core's end, a slow client).
    Gateway,
}

impl ClosedBy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::Gateway => "gateway",
        }
    }
}

impl Ended {
    fn by_gateway(mut self, code: Option<u16>) -> Self {
        self.closed_by = ClosedBy::Gateway;
        self.close_code = code;
        self
    }
}

/// Relays frames between a client socket and chat-core until either side
/// ends, and tells how it ended.
///
/// Client frames are validated here; invalid ones get an error frame and the
/// socket stays open, as do `send` frames over the messages rate limit. When
/// `to_core` is full the socket is not read until it drains, while server
/// frames keep flowing. When `shutdown` completes the socket is closed with
/// 1012 (service restart) so the client reconnects elsewhere and resumes. When the access token
/// expires the client is warned, then after the grace period the socket is
/// closed with 4001 unless an `auth` frame brought a fresh token; an `auth`
/// frame with another user's token closes it with 1008. A socket older than
/// its age limit is closed with 1001, to reconnect and resume.
pub async fn relay<S, U>(
    socket: &mut S,
    upstream: &mut U,
    to_core: &mut ClientFrames,
    peer: &Peer,
    mut shutdown: Pin<&mut impl Future<Output = ()>>,
) -> Ended
where
    S: Stream<Item = Result<Message, axum::Error>> + Sink<Message, Error = axum::Error> + Unpin,
    U: Stream<Item = Result<pb::ServerFrame, tonic::Status>> + Unpin,
{
    let mut pending: Option<Box<pb::ClientFrame>> = None;
    let mut clock = TokenClock::new(peer.expires_at, peer.token_grace);
    // One timer serves the token and the age limit: it fires at the earlier.
    let retire_at = peer.age_limit().map(|age| tokio::time::Instant::now() + age);
    let next_deadline =
        |clock: &TokenClock| retire_at.map_or(clock.deadline(), |at| at.min(clock.deadline()));
    let mut expiry = std::pin::pin!(tokio::time::sleep_until(next_deadline(&clock)));
    let mut ended = Ended::default();
    loop {
        tokio::select! {
            () = shutdown.as_mut() => {
                Box::pin(close_with(socket, close::RESTART, "server restarting; reconnect and resume")).await;
                return ended.by_gateway(Some(close::RESTART));
            }
            () = &mut expiry => {
                if retire_at.is_some_and(|at| at <= tokio::time::Instant::now()) {
                    Box::pin(close_with(socket, close::GOING_AWAY, "connection age limit; reconnect and resume")).await;
                    return ended.by_gateway(Some(close::GOING_AWAY));
                }
                match clock.elapsed() {
                    Expiry::Warn => {
                        tracing::debug!(user_id = %peer.user_id, "websocket token expired");
                        let warned = Box::pin(async { send(socket, &expiry_warning(&clock), &mut ended).await }).await;
                        if warned.is_err() {
                            return ended;
                        }
                    }
                    Expiry::Close => {
                        Box::pin(close_with(socket, close::TOKEN_EXPIRED, TOKEN_EXPIRED)).await;
                        return ended.by_gateway(Some(close::TOKEN_EXPIRED));
                    }
                }
                expiry.as_mut().reset(next_deadline(&clock));
            }
            ready = std::future::poll_fn(|cx| to_core.poll_ready(cx)), if pending.is_some() => {
                // On error chat-core stopped reading: its stream's end is reported below.
                if let (Ok(()), Some(frame)) = (ready, pending.take()) {
                    let _ = to_core.start_send(frame);
                }
            }
            item = upstream.next() => {
                if let Some(closed) = Box::pin(forward_batch(socket, upstream, item, peer.flush_timeout, &mut ended.frames_out)).await {
                    return ended.by_gateway(closed);
                }
            }
            message = socket.next(), if pending.is_none() => {
                let next = Box::pin(on_message(message, socket, to_core, peer, &mut clock, &mut pending, &mut ended)).await;
                match next {
                    Next::Read => {}
                    Next::Renewed => expiry.as_mut().reset(next_deadline(&clock)),
                    Next::End => return ended,
                }
            }
        }
    }
}

/// What the relay does after a client's message.
enum Next {
    /// Reads on.
    Read,
    /// Reads on; a fresh token moved the clock.
    Renewed,
    /// The socket is over (`ended` says how).
    End,
}

/// Handles one message from the client: validated, then answered or
/// forwarded. Boxed by the relay, so the future an idle socket waits in
/// holds none of the state handling a frame needs.
async fn on_message<S>(
    message: Option<Result<Message, axum::Error>>,
    socket: &mut S,
    to_core: &mut ClientFrames,
    peer: &Peer,
    clock: &mut TokenClock,
    pending: &mut Option<Box<pb::ClientFrame>>,
    ended: &mut Ended,
) -> Next
where
    S: Sink<Message, Error = axum::Error> + Unpin,
{
    // Borrowed from the frame: parsing needs no copy of its text.
    let text = match &message {
        Some(Ok(Message::Text(text))) => text.as_str(),
        Some(Ok(Message::Binary(bytes))) => match std::str::from_utf8(bytes) {
            Ok(text) => text,
            Err(_) => {
                ended.frames_in += 1;
                let error = OutFrame::error(ErrorCode::Invalid, "frames must be UTF-8 JSON text");
                if send(socket, &error, ended).await.is_err() {
                    return Next::End;
                }
                return Next::Read;
            }
        },
        Some(Ok(Message::Ping(_) | Message::Pong(_))) => return Next::Read,
        Some(Ok(Message::Close(frame))) => {
            ended.close_code = frame.as_ref().map(|f| f.code);
            let _ = socket.close().await;
            return Next::End;
        }
        Some(Err(error)) if is_bad_utf8(error) => {
            // RFC 6455: 1007 for a text message that is not UTF-8.
            Box::pin(close_with(socket, close::BAD_DATA, "text frame is not UTF-8")).await;
            *ended = ended.by_gateway(Some(close::BAD_DATA));
            return Next::End;
        }
        Some(Err(error)) if is_too_big(error) => {
            // RFC 6455: 1009 for a message too big to process.
            Box::pin(close_with(socket, close::TOO_BIG, "frame too large")).await;
            // The rest of the oversized frame is still arriving
            // unread, so closing the TCP connection now resets it,
            // and a client that had not yet read the close frame
            // would see 1006 instead of 1009. It gets a moment to.
            tokio::time::sleep(TOO_BIG_LINGER).await;
            *ended = ended.by_gateway(Some(close::TOO_BIG));
            return Next::End;
        }
        Some(Err(_)) | None => {
            let _ = socket.close().await;
            return Next::End;
        }
    };
    ended.frames_in += 1;
    let inbound = parse_client_frame(text, peer.max_content_bytes);
    count_frame("in", inbound_kind(&inbound));
    if let Some(error) = Box::pin(peer.check_frame(&inbound)).await {
        if send(socket, &error, ended).await.is_err() {
            return Next::End;
        }
        return Next::Read;
    }
    match inbound {
        Inbound::Forward(mut frame) => {
            peer.traces.trace_turn(&mut frame, &peer.user_id);
            match to_core.try_send(Box::new(frame)) {
                Ok(()) => {}
                Err(full) if full.is_full() => *pending = Some(full.into_inner()),
                Err(_closed) => {}
            }
        }
        Inbound::Reply(frame) => {
            if send(socket, &frame, ended).await.is_err() {
                return Next::End;
            }
        }
        Inbound::Auth(token) => {
            let reply = match Box::pin(peer.reauthenticate(&token, clock)).await {
                Ok(reply) => reply,
                Err(refused) => {
                    let error = OutFrame::error(ErrorCode::Forbidden, refused.message());
                    let _ = send(socket, &error, ended).await;
                    Box::pin(close_with(socket, close::POLICY, "a socket serves one user")).await;
                    *ended = ended.by_gateway(Some(close::POLICY));
                    return Next::End;
                }
            };
            if send(socket, &reply, ended).await.is_err() {
                return Next::End;
            }
            return Next::Renewed;
        }
    }

    Next::Read
}

/// Writes `first` and whatever else chat-core has ready, then flushes once,
/// counting the frames written in `written`. Returns `None` while the
/// connection goes on, and once it is over, the close code sent, if any.
async fn forward_batch<S, U>(
    socket: &mut S,
    upstream: &mut U,
    first: Option<Result<pb::ServerFrame, tonic::Status>>,
    flush_timeout: Duration,
    written: &mut u64,
) -> Option<Option<u16>>
where
    S: Sink<Message, Error = axum::Error> + Unpin,
    U: Stream<Item = Result<pb::ServerFrame, tonic::Status>> + Unpin,
{
    let mut item = first;
    for written_in_batch in 1..=MAX_BATCH {
        match item {
            Some(Ok(frame)) => {
                if let Some(out) = OutFrame::from_server_frame(frame) {
                    count_frame("out", out.kind());
                    if socket.feed(Message::Text(out.to_json().into())).await.is_err() {
                        return Some(None);
                    }
                    *written += 1;
                }
            }
            Some(Err(status)) if status.code() == tonic::Code::Unavailable => {
                // The chat-core replica is restarting: the client reconnects
                // (reaching another replica) and resumes.
                let frame = OutFrame::from_status(&status);
                let _ = socket.feed(Message::Text(frame.to_json().into())).await;
                *written += 1;
                close_with(socket, close::RESTART, "chat-core restarting").await;
                return Some(Some(close::RESTART));
            }
            Some(Err(status)) if ErrorCode::from_status(&status) == ErrorCode::Unauthenticated => {
                // The user signed out (or their refresh family was revoked)
                // somewhere: chat-core ended the stream.
                let frame = OutFrame::from_status(&status);
                let _ = socket.feed(Message::Text(frame.to_json().into())).await;
                *written += 1;
                close_with(socket, close::TOKEN_EXPIRED, "signed out").await;
                return Some(Some(close::TOKEN_EXPIRED));
            }
            Some(Err(status)) => {
                *written += 1;
                return Some(Some(close_with_error(socket, &status).await));
            }
            None => {
                let frame = OutFrame::error(
                    ErrorCode::Unavailable,
                    "chat-core closed the connection; reconnect",
                );
                let _ = socket.feed(Message::Text(frame.to_json().into())).await;
                *written += 1;
                close_with(socket, close::RESTART, "chat-core closed the connection").await;
                return Some(Some(close::RESTART));
            }
        }
        // A full batch is flushed before anything more is taken from
        // upstream: a frame taken now would be lost with the loop's end.
        if written_in_batch == MAX_BATCH {
            break;
        }
        match upstream.next().now_or_never() {
            Some(next) => item = next,
            None => break,
        }
    }
    match tokio::time::timeout(flush_timeout, socket.flush()).await {
        Ok(Ok(())) => None,
        Ok(Err(_)) => Some(None),
        Err(_) => {
            // A slow consumer: its socket is dropped (no close frame can get
            // through a full buffer); it recovers by resuming with after_seq.
            tracing::debug!("websocket client too slow; dropping it");
            Some(None)
        }
    }
}

async fn send<S>(socket: &mut S, frame: &OutFrame, ended: &mut Ended) -> Result<(), axum::Error>
where
    S: Sink<Message, Error = axum::Error> + Unpin,
{
    count_frame("out", frame.kind());
    socket.send(Message::Text(frame.to_json().into())).await?;
    ended.frames_out += 1;
    Ok(())
}

/// Sends the error frame of a failed stream, then closes with a matching
/// code, which it returns.
async fn close_with_error<S>(socket: &mut S, status: &tonic::Status) -> u16
where
    S: Sink<Message, Error = axum::Error> + Unpin,
{
    let frame = OutFrame::from_status(status);
    let code = ErrorCode::from_status(status);
    let close_code = match code {
        ErrorCode::RateLimited | ErrorCode::Busy => close::TRY_AGAIN_LATER,
        ErrorCode::SlowConsumer => close::SLOW_CONSUMER,
        ErrorCode::Unauthenticated => close::TOKEN_EXPIRED,
        // Anything else (chat-core refusing the gateway itself included) is
        // the service's fault, not the client's.
        _ => close::INTERNAL,
    };
    let _ = socket.feed(Message::Text(frame.to_json().into())).await;
    close_with(socket, close_code, code.as_str()).await;
    close_code
}

/// Whether a read failed because a text message was not UTF-8.
fn is_bad_utf8(error: &axum::Error) -> bool {
    error.to_string().contains("UTF-8 encoding error")
}

/// Whether a read failed because the client's message or frame exceeded
/// `--max-ws-frame-bytes` (tungstenite's capacity errors).
fn is_too_big(error: &axum::Error) -> bool {
    let text = error.to_string();
    text.contains("Message too long") || text.contains("Space limit exceeded")
}

async fn close_with<S>(socket: &mut S, code: u16, reason: &str)
where
    S: Sink<Message, Error = axum::Error> + Unpin,
{
    let close = Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }));
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let _ = socket.send(close).await;
        let _ = socket.close().await;
    })
    .await;
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use futures::channel::mpsc as fmpsc;
    use serde_json::{Value, json};
    use tokio::sync::mpsc;

    use std::sync::Arc;

    use tokio_stream::wrappers::ReceiverStream;

    use super::*;
    use crate::auth::Tokens;
    use crate::ratelimit::{MemoryStore, Policies, Policy, RateLimits};

    /// A socket made of two channels: frames the "client" sends, frames it receives.
    struct FakeSocket {
        incoming: fmpsc::UnboundedReceiver<Message>,
        outgoing: fmpsc::UnboundedSender<Message>,
    }

    impl Stream for FakeSocket {
        type Item = Result<Message, axum::Error>;
        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            self.incoming.poll_next_unpin(cx).map(|m| m.map(Ok))
        }
    }

    impl Sink<Message> for FakeSocket {
        type Error = axum::Error;
        fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }
        fn start_send(self: Pin<&mut Self>, item: Message) -> Result<(), Self::Error> {
            self.outgoing.unbounded_send(item).map_err(axum::Error::new)
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }
        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }
    }

    struct Harness {
        client_tx: fmpsc::UnboundedSender<Message>,
        client_rx: fmpsc::UnboundedReceiver<Message>,
        core_tx: mpsc::Sender<Result<pb::ServerFrame, tonic::Status>>,
        core_rx: fmpsc::Receiver<Box<pb::ClientFrame>>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Harness {
        /// Sends a text frame from the client.
        fn say(&self, text: impl Into<String>) {
            self.client_tx
                .unbounded_send(Message::Text(text.into().into()))
                .expect("send");
        }

        /// Sends an `auth` frame with `token` from the client.
        fn say_auth(&self, token: &str) {
            self.say(json!({"type": "auth", "access_token": token}).to_string());
        }

        /// The error frame the client gets before its socket closes, and the
        /// close code, once the relay has ended.
        async fn error_and_close(mut self) -> (Value, u16) {
            let error = next_json(&mut self.client_rx).await;
            let close = next_close(&mut self.client_rx).await;
            self.task.await.expect("relay ends");
            (error, close)
        }
    }

    /// A fresh access token (valid for a minute) of `user_id`, signed with the test secret.
    fn access_token_of(user_id: &str) -> String {
        let tokens = Tokens::new(SECRET, Duration::from_secs(60), Duration::from_secs(60));
        tokens.issue_access(user_id, None).expect("sign")
    }

    const SECRET: &[u8] = b"relay-test-secret";

    fn start() -> Harness {
        start_with_token(unix_now() + 3600, Duration::from_secs(30))
    }

    fn unix_now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs()
    }

    fn peer(expires_at: u64, token_grace: Duration) -> Peer {
        let policy = Policy {
            limit: std::num::NonZeroU32::new(2).expect("non-zero"),
            window: Duration::from_secs(3600),
        };
        let tokens = Arc::new(Tokens::new(
            SECRET,
            Duration::from_secs(3600),
            Duration::from_secs(3600),
        ));
        Peer {
            user_id: "u1".into(),
            max_content_bytes: 100,
            rate_limits: RateLimits::new(
                MemoryStore::new(Policies {
                    api: policy,
                    auth: policy,
                    account: policy,
                    messages: policy,
                    frames: Policy {
                        limit: std::num::NonZeroU32::new(100).expect("non-zero"),
                        window: Duration::from_secs(3600),
                    },
                }),
                &[],
            ),
            tokens,
            state: None,
            expires_at,
            token_grace,
            flush_timeout: Duration::from_secs(30),
            max_age: None,
            traces: TurnTraces::default(),
        }
    }

    fn start_with_token(expires_at: u64, token_grace: Duration) -> Harness {
        let (client_tx, incoming) = fmpsc::unbounded();
        let (outgoing, client_rx) = fmpsc::unbounded();
        let (core_tx, upstream) = mpsc::channel(8);
        let (mut to_core, core_rx) = fmpsc::channel(8);
        let mut socket = FakeSocket { incoming, outgoing };
        let peer = peer(expires_at, token_grace);
        let task = tokio::spawn(async move {
            let mut upstream = ReceiverStream::new(upstream);
            relay(
                &mut socket,
                &mut upstream,
                &mut to_core,
                &peer,
                std::pin::pin!(std::future::pending()),
            )
            .await;
        });
        Harness {
            client_tx,
            client_rx,
            core_tx,
            core_rx,
            task,
        }
    }

    /// Every idle socket holds its relay's future: what it needs only for a
    /// moment (handling a client's message, writing a batch, warning of
    /// expiry) is boxed, so the future an idle socket waits in stays small.
    #[test]
    fn an_idle_sockets_relay_future_is_small() {
        let (_client_tx, incoming) = fmpsc::unbounded();
        let (outgoing, _client_rx) = fmpsc::unbounded();
        let (_core_tx, upstream) = mpsc::channel::<Result<pb::ServerFrame, tonic::Status>>(8);
        let (mut to_core, _core_rx) = fmpsc::channel(8);
        let mut socket = FakeSocket { incoming, outgoing };
        let peer = peer(unix_now() + 3600, Duration::from_secs(30));
        let mut upstream = ReceiverStream::new(upstream);
        let shutdown = std::pin::pin!(std::future::pending());
        let relay = relay(&mut socket, &mut upstream, &mut to_core, &peer, shutdown);
        let size = std::mem::size_of_val(&relay);
        assert!(
            size <= RELAY_FUTURE_BOUND,
            "the relay's future takes {size} bytes"
        );
    }

    /// 480 bytes today (unoptimised build); handling a client's message
    /// inline (not boxed in `on_message`) made it 1.6 KiB, and an unboxed
    /// token renewal alone would add several KiB.
    const RELAY_FUTURE_BOUND: usize = 768;

    async fn next_json(rx: &mut fmpsc::UnboundedReceiver<Message>) -> Value {
        let message = tokio::time::timeout(Duration::from_secs(5), rx.next())
            .await
            .expect("timely frame");
        match message {
            Some(Message::Text(text)) => serde_json::from_str(text.as_str()).expect("json frame"),
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn bad_frames_get_errors_and_good_ones_are_forwarded() {
        let mut h = start();
        h.say("{oops");
        assert_eq!(next_json(&mut h.client_rx).await["code"], "invalid");
        h.client_tx
            .unbounded_send(Message::Binary(vec![0xff, 0xfe].into()))
            .expect("send");
        let reply = next_json(&mut h.client_rx).await;
        assert_eq!(reply["message"], "frames must be UTF-8 JSON text");
        let unsubscribe =
            json!({"type": "unsubscribe", "session_id": "0190f5c2-7b1e-7cc0-8000-000000000000"});
        h.client_tx
            .unbounded_send(Message::Binary(unsubscribe.to_string().into_bytes().into()))
            .expect("send");
        let forwarded = h.core_rx.next().await.expect("forwarded frame");
        assert!(matches!(
            forwarded.frame,
            Some(pb::client_frame::Frame::Unsubscribe(_))
        ));
        h.say(r#"{"type":"ping"}"#);
        assert_eq!(next_json(&mut h.client_rx).await, json!({"type": "pong"}));
    }

    #[tokio::test]
    async fn server_frames_are_translated_to_json() {
        let mut h = start();
        let frame = pb::ServerFrame {
            frame: Some(pb::server_frame::Frame::Subscribed(pb::Subscribed {
                session_id: "s".into(),
                last_seq: 2,
            })),
        };
        h.core_tx.send(Ok(frame)).await.expect("send");
        assert_eq!(
            next_json(&mut h.client_rx).await,
            json!({"type": "subscribed", "session_id": "s", "last_seq": 2})
        );
    }

    /// More frames ready at once than one batch holds: every one is written,
    /// in order, over several batches (the frame after a full batch once got
    /// lost).
    #[tokio::test]
    async fn frames_beyond_a_full_batch_are_all_forwarded_in_order() {
        let (_client_tx, incoming) = fmpsc::unbounded();
        let (outgoing, mut client_rx) = fmpsc::unbounded();
        let mut socket = FakeSocket { incoming, outgoing };
        let total = MAX_BATCH * 2 + 5;
        let frames = (0..total).map(|i| {
            Ok(pb::ServerFrame {
                frame: Some(pb::server_frame::Frame::Subscribed(pb::Subscribed {
                    session_id: "s".into(),
                    last_seq: i as i64,
                })),
            })
        });
        // Stays open after the frames, as a quiet chat-core stream does.
        let mut upstream =
            futures::stream::iter(frames.collect::<Vec<_>>()).chain(futures::stream::pending());
        let mut written = 0;
        while written < total as u64 {
            let first = tokio::time::timeout(Duration::from_secs(5), upstream.next())
                .await
                .unwrap_or_else(|_| panic!("{written} of {total} frames written; one was lost"));
            let ended = forward_batch(
                &mut socket,
                &mut upstream,
                first,
                Duration::from_secs(1),
                &mut written,
            )
            .await;
            assert_eq!(ended, None);
        }
        let mut seqs = Vec::new();
        while let Ok(Message::Text(text)) = client_rx.try_recv() {
            let json: serde_json::Value = serde_json::from_str(&text).expect("json");
            seqs.push(json["last_seq"].as_i64().expect("seq"));
        }
        assert_eq!(seqs, (0..total as i64).collect::<Vec<_>>());
        assert_eq!(written, total as u64);
    }

    /// Ends a relay's upstream with `status`: the error frame the client then
    /// gets, and the code its socket is closed with.
    async fn fail_upstream(status: tonic::Status) -> (Value, u16) {
        let h = start();
        h.core_tx.send(Err(status)).await.expect("send");
        h.error_and_close().await
    }

    #[tokio::test]
    async fn an_upstream_gone_mid_stream_sends_unavailable_and_closes_with_1012() {
        // A chat-core replica restarting or lost: the client reconnects and resumes.
        let (error, close) = fail_upstream(tonic::Status::unavailable("connection reset")).await;
        assert_eq!(error["code"], "unavailable");
        assert_eq!(close, 1012);
    }

    #[tokio::test]
    async fn a_failed_upstream_closes_with_1011() {
        let (error, close) = fail_upstream(tonic::Status::internal("broken")).await;
        assert_eq!(error["type"], "error");
        assert_eq!(close, 1011);
    }

    #[tokio::test]
    async fn a_stream_chat_core_ends_as_forbidden_closes_with_1011_not_1008() {
        // chat-core refusing the gateway itself is the service's fault: no
        // close code tells the client its credentials were refused.
        let (error, close) = fail_upstream(ErrorCode::Forbidden.status("not a service")).await;
        assert_eq!(error["code"], "forbidden");
        assert_eq!(close, 1011);
    }

    #[tokio::test]
    async fn sends_over_the_message_limit_get_rate_limited_and_the_socket_stays_open() {
        let mut h = start();
        let session_id = "0190f5c2-7b1e-7cc0-8000-000000000000";
        for i in 0..3 {
            let send = json!({"type": "send", "session_id": session_id, "client_msg_id": format!("c{i}"), "content": "hi"});
            h.say(send.to_string());
        }
        for _ in 0..2 {
            let forwarded = h.core_rx.next().await.expect("forwarded frame");
            assert!(matches!(forwarded.frame, Some(pb::client_frame::Frame::Send(_))));
        }
        let error = next_json(&mut h.client_rx).await;
        assert_eq!(
            (error["code"].as_str(), error["client_msg_id"].as_str()),
            (Some("rate_limited"), Some("c2"))
        );
        assert!(
            error["retry_after_ms"].as_u64().is_some_and(|ms| ms > 0),
            "{error}"
        );
        h.say(r#"{"type":"ping"}"#);
        assert_eq!(next_json(&mut h.client_rx).await, json!({"type": "pong"}));
    }

    async fn next_close(rx: &mut fmpsc::UnboundedReceiver<Message>) -> u16 {
        loop {
            match tokio::time::timeout(Duration::from_secs(5), rx.next()).await {
                Ok(Some(Message::Close(Some(frame)))) => return frame.code,
                Ok(Some(_)) => {}
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn expired_token_is_warned_then_closed_with_4001() {
        let h = start_with_token(unix_now(), Duration::from_millis(200));
        let (warning, close) = h.error_and_close().await;
        assert_eq!(
            (warning["type"].as_str(), warning["code"].as_str()),
            (Some("error"), Some("token_expired"))
        );
        assert_eq!(close, 4001);
    }

    #[tokio::test]
    async fn fresh_token_in_band_keeps_the_socket_open() {
        let mut h = start_with_token(unix_now(), Duration::from_millis(300));
        assert_eq!(next_json(&mut h.client_rx).await["code"], "token_expired");
        h.say_auth(&access_token_of("u1"));
        let reply = next_json(&mut h.client_rx).await;
        assert_eq!(reply["type"], "authenticated", "{reply}");
        assert!(reply["expires_at"].as_u64() >= Some(unix_now() + 59));
        tokio::time::sleep(Duration::from_millis(500)).await;
        h.say(r#"{"type":"ping"}"#);
        assert_eq!(next_json(&mut h.client_rx).await, json!({"type": "pong"}));
    }

    #[tokio::test]
    async fn a_garbage_in_band_token_is_refused_and_the_socket_stays_open() {
        let mut h = start();
        h.say_auth("garbage");
        let reply = next_json(&mut h.client_rx).await;
        assert_eq!(
            (reply["type"].as_str(), reply["code"].as_str()),
            (Some("error"), Some("unauthenticated"))
        );
        h.say(r#"{"type":"ping"}"#);
        assert_eq!(next_json(&mut h.client_rx).await, json!({"type": "pong"}));
    }

    #[tokio::test]
    async fn an_in_band_token_of_another_user_closes_the_socket_with_1008() {
        let h = start();
        h.say_auth(&access_token_of("u2"));
        let (reply, close) = h.error_and_close().await;
        assert_eq!(
            (reply["type"].as_str(), reply["code"].as_str()),
            (Some("error"), Some("forbidden"))
        );
        assert_eq!(close, 1008);
    }

    #[test]
    fn the_age_limit_is_spread_over_the_last_tenth_of_the_maximum() {
        let mut peer = peer(unix_now() + 3600, Duration::from_secs(1));
        assert_eq!(peer.age_limit(), None);
        peer.max_age = Some(Duration::from_secs(1000));
        let limits: Vec<Duration> = (0..200).map(|_| peer.age_limit().expect("limited")).collect();
        assert!(
            limits
                .iter()
                .all(|age| (Duration::from_secs(900)..=Duration::from_secs(1000)).contains(age))
        );
        assert!(
            limits.iter().any(|age| *age != limits[0]),
            "spread, not one moment"
        );
    }

    #[tokio::test]
    async fn client_close_drops_the_upstream() {
        let mut h = start();
        drop(h.client_tx);
        h.task.await.expect("relay ends");
        assert!(h.core_rx.next().await.is_none(), "to_core sender dropped");
        assert!(h.core_tx.is_closed(), "upstream dropped");
    }
}
