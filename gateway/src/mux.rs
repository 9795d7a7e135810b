//! Client sockets over a few shared `ChatService.Multiplex` streams.
//!
//! A socket is served by chat-core exactly as over a `Connect` stream of
//! its own, but thousands of idle sockets then cost no HTTP/2 stream, codec
//! buffers or service stack each, on either side. Each socket gets a
//! [`Upstream`]: a sender of its client frames and a stream of its server
//! frames, which [`crate::ws::relay`] serves as it would a `Connect` stream.
//!
//! New sockets go to the stream carrying the fewest; at least
//! [`MuxSettings::min_streams`] are kept open (each opened through the
//! balanced channel, so they spread over chat-core replicas) and more open
//! as each fills to [`MuxSettings::conns_per_stream`]. A stream that ends
//! (its chat-core replica restarting, or lost) ends each of its sockets with
//! `unavailable`, and they reconnect and resume. Frames for a socket queue
//! in a bounded queue of its own: a socket that falls behind ends with
//! `slow_consumer` alone, without slowing the stream.
//!
//! Each socket's two queues are `futures` channels: they allocate per frame
//! queued rather than up front, so an idle socket's queues cost ~0.3 KiB
//! where Tokio's (a cache-padded state and a first block of 32 slots each)
//! cost ~0.8 KiB apiece.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use chat_common::ErrorCode;
use chat_proto::chat::v1::{self as pb, mux_client_frame::Kind as In, mux_server_frame::Kind as Out};
use futures::channel::mpsc as queue;
use futures::stream::SelectAll;
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;

use crate::auth::{AuthUser, Tokens};
use crate::core::CoreClient;

/// Client frames a socket may have queued towards chat-core before the
/// socket stops being read.
const CLIENT_FRAME_QUEUE: usize = 16;
/// Server frames queued for a socket before it counts as a slow consumer
/// (chat-core's own queue per connection is as long).
const SERVER_FRAME_QUEUE: usize = chat_common::limits::CONNECTION_FRAME_QUEUE;
/// How long opening a socket's connection may take.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// How sockets are spread over `Multiplex` streams.
#[derive(Clone, Copy, Debug)]
pub struct MuxSettings {
    /// Streams kept open once the first socket comes, for spreading sockets
    /// over chat-core replicas.
    pub min_streams: usize,
    /// Sockets a stream carries before another stream opens.
    pub conns_per_stream: usize,
}

impl MuxSettings {
    /// Which of the open streams (their sockets counted in `loads`) a new
    /// socket joins: the least loaded, once `min_streams` are open and while
    /// it has room; `None` to open another stream.
    pub fn pick(&self, loads: &[usize]) -> Option<usize> {
        if loads.len() < self.min_streams {
            return None;
        }
        let (least, load) = loads.iter().enumerate().min_by_key(|(_, load)| **load)?;
        (*load < self.conns_per_stream).then_some(least)
    }
}

impl Default for MuxSettings {
    fn default() -> Self {
        Self {
            min_streams: 4,
            conns_per_stream: 512,
        }
    }
}

/// Where a socket's client frames go: a bounded queue that the socket's
/// stream merges from.
pub type ClientFrames = queue::Sender<Box<pb::ClientFrame>>;

/// A socket's connection to chat-core: where its client frames go, and its
/// server frames (or why it did not open).
pub struct Upstream {
    pub to_core: ClientFrames,
    pub frames: Result<ServerFrames, tonic::Status>,
}

/// The gateway's `Multiplex` streams.
pub struct Multiplexer {
    core: CoreClient,
    tokens: Arc<Tokens>,
    settings: MuxSettings,
    streams: Mutex<Vec<Arc<MuxStream>>>,
    next_conn: AtomicU64,
}

impl std::fmt::Debug for Multiplexer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Multiplexer")
            .field("settings", &self.settings)
            .field("streams", &lock(&self.streams).len())
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A socket's state as its stream's reader sees it.
const LIVE: u8 = 0;
/// The socket fell behind its queue: it ends with `slow_consumer` at once.
const SLOW: u8 = 1;
/// The stream carrying it ended: it ends with `unavailable` after what was queued.
const LOST: u8 = 2;

struct Slot {
    frames: queue::Sender<Box<pb::MuxServerFrame>>,
    state: Arc<AtomicU8>,
}

/// One `Multiplex` stream and the sockets it carries.
struct MuxStream {
    /// Frames to send that belong to no socket's own queue: opens, closes,
    /// and new sockets' queues to merge.
    control: mpsc::UnboundedSender<Control>,
    conns: Mutex<HashMap<u64, Slot>>,
    /// Set (under the `conns` lock) once the stream ended.
    lost: AtomicBool,
}

enum Control {
    Frame(pb::MuxClientFrame),
    Add(SocketFrames),
}

type SocketFrames = Pin<Box<dyn Stream<Item = pb::MuxClientFrame> + Send>>;

impl Multiplexer {
    pub fn new(core: CoreClient, tokens: Arc<Tokens>, settings: MuxSettings) -> Self {
        Self {
            core,
            tokens,
            settings,
            streams: Mutex::new(Vec::new()),
            next_conn: AtomicU64::new(1),
        }
    }

    /// Opens `user`'s connection; it is refused (e.g. `unauthenticated` for
    /// a signed-out sign-in) or chat-core unreachable in `frames`.
    pub async fn open(&self, user: &AuthUser, request_id: Option<&str>) -> Upstream {
        // A stream found lost while opening (its chat-core replica draining)
        // leaves the pool: the connection is tried once more on another.
        let mut retries = 1;
        loop {
            let (to_core, from_socket) = queue::channel::<Box<pb::ClientFrame>>(CLIENT_FRAME_QUEUE);
            let frames = match self.stream().await {
                Ok(stream) => {
                    let conn = self.next_conn.fetch_add(1, Ordering::Relaxed);
                    let open = pb::MuxOpen {
                        user_id: user.user_id.clone(),
                        sign_in: user.sign_in.clone().unwrap_or_default(),
                        request_id: request_id.unwrap_or_default().to_owned(),
                    };
                    let frames = stream.open(conn, open, from_socket).await;
                    if frames.is_err() && stream.is_lost() && retries > 0 {
                        retries -= 1;
                        continue;
                    }
                    frames
                }
                Err(status) => Err(status),
            };
            return Upstream { to_core, frames };
        }
    }

    /// The stream for a new socket: the least loaded, or a new one.
    async fn stream(&self) -> Result<Arc<MuxStream>, tonic::Status> {
        {
            let mut streams = lock(&self.streams);
            streams.retain(|s| !s.is_lost());
            let loads: Vec<usize> = streams.iter().map(|s| s.len()).collect();
            if let Some(i) = self.settings.pick(&loads) {
                return Ok(streams[i].clone());
            }
        }
        let stream = self.open_stream().await?;
        lock(&self.streams).push(stream.clone());
        Ok(stream)
    }

    async fn open_stream(&self) -> Result<Arc<MuxStream>, tonic::Status> {
        let (control, control_rx) = mpsc::unbounded_channel();
        let outgoing = Merged {
            control: control_rx,
            sockets: SelectAll::new(),
        };
        let token = self
            .tokens
            .service_token()
            .map_err(|_| ErrorCode::Internal.status("no service token for chat-core"))?;
        // The stream serves many sockets: it carries none's request id or trace.
        let mut request = tonic::Request::new(outgoing);
        let bearer = tonic::metadata::MetadataValue::try_from(format!("Bearer {token}"))
            .map_err(|_| ErrorCode::Internal.status("malformed service token"))?;
        request.metadata_mut().insert("authorization", bearer);
        let incoming = self.core.chat().multiplex(request).await?.into_inner();
        let stream = Arc::new(MuxStream {
            control,
            conns: Mutex::new(HashMap::new()),
            lost: AtomicBool::new(false),
        });
        metrics::gauge!("chat_mux_streams").increment(1.0);
        tokio::spawn(route(stream.clone(), incoming));
        Ok(stream)
    }
}

impl MuxStream {
    fn len(&self) -> usize {
        lock(&self.conns).len()
    }

    fn is_lost(&self) -> bool {
        self.lost.load(Ordering::Acquire)
    }

    /// Opens connection `conn` on this stream and waits for chat-core's answer.
    async fn open(
        &self,
        conn: u64,
        open: pb::MuxOpen,
        from_socket: queue::Receiver<Box<pb::ClientFrame>>,
    ) -> Result<ServerFrames, tonic::Status> {
        let (tx, rx) = queue::channel(SERVER_FRAME_QUEUE);
        let state = Arc::new(AtomicU8::new(LIVE));
        let lost = || ErrorCode::Unavailable.status("chat-core unreachable; reconnect");
        {
            let mut conns = lock(&self.conns);
            if self.is_lost() {
                return Err(lost());
            }
            let slot = Slot {
                frames: tx,
                state: state.clone(),
            };
            conns.insert(conn, slot);
        }
        let open = pb::MuxClientFrame {
            conn,
            kind: Some(In::Open(open)),
        };
        // The socket's frames follow its open, and its close follows them.
        let frames = from_socket
            .map(move |frame| pb::MuxClientFrame {
                conn,
                kind: Some(In::Frame(*frame)),
            })
            .chain(futures::stream::once(async move {
                pb::MuxClientFrame {
                    conn,
                    kind: Some(In::Close(pb::MuxClose {})),
                }
            }));
        if self.control.send(Control::Frame(open)).is_err()
            || self.control.send(Control::Add(Box::pin(frames))).is_err()
        {
            lock(&self.conns).remove(&conn);
            return Err(lost());
        }
        let mut frames = ServerFrames {
            rx,
            state,
            over: false,
        };
        match tokio::time::timeout(OPEN_TIMEOUT, frames.rx.next()).await {
            Ok(Some(first)) => match first.kind {
                Some(Out::Opened(_)) => Ok(frames),
                Some(Out::Ended(ended)) => Err(status_of(&ended)),
                _ => Err(ErrorCode::Internal.status("chat-core answered an open out of order")),
            },
            Ok(None) => Err(lost()),
            Err(_) => {
                lock(&self.conns).remove(&conn);
                Err(ErrorCode::Unavailable.status("chat-core did not answer in time; reconnect"))
            }
        }
    }

    /// Ends every socket still open on this stream, after what is queued for it.
    fn lose_all(&self) {
        let mut conns = lock(&self.conns);
        self.lost.store(true, Ordering::Release);
        for (_, slot) in conns.drain() {
            slot.state.store(LOST, Ordering::Release);
        }
    }
}

/// The status a connection ended with.
fn status_of(ended: &pb::MuxEnded) -> tonic::Status {
    let code = ErrorCode::parse(&ended.code).unwrap_or(ErrorCode::Internal);
    code.status(ended.message.clone())
}

/// Reads a stream's frames and queues each for its socket, until the stream ends.
async fn route(stream: Arc<MuxStream>, mut incoming: tonic::Streaming<pb::MuxServerFrame>) {
    loop {
        let frame = match incoming.next().await {
            Some(Ok(frame)) => frame,
            Some(Err(status)) => {
                tracing::warn!(code = ?status.code(), message = status.message(), "chat-core multiplex stream failed");
                break;
            }
            None => break,
        };
        let conn = frame.conn;
        let ended = matches!(frame.kind, Some(Out::Ended(_)));
        let mut conns = lock(&stream.conns);
        let Some(slot) = conns.get_mut(&conn) else {
            continue;
        };
        match slot.frames.try_send(Box::new(frame)) {
            Ok(()) if !ended => {}
            Ok(()) => {
                conns.remove(&conn);
            }
            Err(full) if full.is_full() => {
                slot.state.store(SLOW, Ordering::Release);
                conns.remove(&conn);
                drop(conns);
                let close = pb::MuxClientFrame {
                    conn,
                    kind: Some(In::Close(pb::MuxClose {})),
                };
                let _ = stream.control.send(Control::Frame(close));
            }
            Err(_) => {
                // The socket is gone; its close is on its way to chat-core.
                conns.remove(&conn);
            }
        }
    }
    stream.lose_all();
    metrics::gauge!("chat_mux_streams").decrement(1.0);
}

/// A socket's server frames, as a `Connect` stream would bring them.
pub struct ServerFrames {
    rx: queue::Receiver<Box<pb::MuxServerFrame>>,
    state: Arc<AtomicU8>,
    over: bool,
}

impl Stream for ServerFrames {
    type Item = Result<pb::ServerFrame, tonic::Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.over {
            return Poll::Ready(None);
        }
        if self.state.load(Ordering::Acquire) == SLOW {
            self.over = true;
            return Poll::Ready(Some(Err(ErrorCode::SlowConsumer.status(format!(
                "fell more than {SERVER_FRAME_QUEUE} frames behind; reconnect and resume with after_seq"
            )))));
        }
        loop {
            let frame = match self.rx.poll_next_unpin(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(frame)) => frame,
                Poll::Ready(None) => {
                    self.over = true;
                    let lost = self.state.load(Ordering::Acquire) == LOST;
                    return Poll::Ready(lost.then(|| {
                        Err(ErrorCode::Unavailable.status("chat-core connection lost; reconnect and resume"))
                    }));
                }
            };
            match frame.kind {
                Some(Out::Frame(frame)) => return Poll::Ready(Some(Ok(frame))),
                Some(Out::Ended(ended)) => {
                    self.over = true;
                    if ended.code.is_empty() {
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Err(status_of(&ended))));
                }
                Some(Out::Opened(_)) | None => {}
            }
        }
    }
}

/// A stream's frames out: control frames first, then every socket's frames, merged fairly.
struct Merged {
    control: mpsc::UnboundedReceiver<Control>,
    sockets: SelectAll<SocketFrames>,
}

impl Stream for Merged {
    type Item = pb::MuxClientFrame;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            match self.control.poll_recv(cx) {
                Poll::Ready(Some(Control::Frame(frame))) => return Poll::Ready(Some(frame)),
                Poll::Ready(Some(Control::Add(socket))) => self.sockets.push(socket),
                // The pool dropped the stream: nothing more comes.
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => break,
            }
        }
        match self.sockets.poll_next_unpin(cx) {
            Poll::Ready(Some(frame)) => Poll::Ready(Some(frame)),
            Poll::Ready(None) | Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_spread_over_the_minimum_then_fill_streams_before_opening_more() {
        let settings = MuxSettings {
            min_streams: 2,
            conns_per_stream: 3,
        };
        // Below the minimum, every socket opens a stream.
        assert_eq!(settings.pick(&[]), None);
        assert_eq!(settings.pick(&[1]), None);
        // Then the least loaded takes it, while it has room.
        assert_eq!(settings.pick(&[1, 1]), Some(0));
        assert_eq!(settings.pick(&[2, 1]), Some(1));
        assert_eq!(settings.pick(&[3, 2]), Some(1));
        // All full: another stream.
        assert_eq!(settings.pick(&[3, 3]), None);
        assert_eq!(settings.pick(&[3, 3, 0]), Some(2));
    }
}
