//! `Multiplex`: many client connections over one stream. Each connection is
//! served exactly as a `Connect` stream is ([`super::connect::serve`]); what
//! it saves is the HTTP/2 stream, its codec buffers and its service stack,
//! which a gateway holding thousands of idle sockets would otherwise pay for
//! each of them, on both sides.
//!
//! Frames in are routed to their connection's queue in order; a connection
//! whose queue is full holds the stream's reading until it takes a frame
//! (clients' frames are rate limited at the gateway, so this is the rare
//! flood, and nothing is dropped). Frames out are merged from every
//! connection's own bounded queue, so a connection that falls behind ends
//! with `slow_consumer` alone, as on `Connect`.

use std::collections::HashMap;
use std::pin::Pin;
use std::task::{Context, Poll};

use chat_common::ErrorCode;
use chat_proto::chat::v1::{self as pb, mux_client_frame::Kind as In, mux_server_frame::Kind as Out};
use futures::channel::mpsc as queue;
use futures::stream::SelectAll;
use futures::{SinkExt, Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::{Status, Streaming};

use super::chat::{Ends, EventStream, until_ended};
use crate::domain::{Principal, UserId};
use crate::service::ChatCore;

/// Frames a connection may have waiting to be handled before the stream's
/// reading waits for it.
const INCOMING_QUEUE: usize = 64;

/// A connection's frames out, ended by `ended`.
type ConnFrames = Pin<Box<dyn Stream<Item = pb::MuxServerFrame> + Send>>;

/// Serves a `Multiplex` stream: `ends` builds what ends each connection
/// (draining, its user's revocation).
pub fn serve(
    core: ChatCore,
    frames: Streaming<pb::MuxClientFrame>,
    draining: CancellationToken,
    ends: impl Fn(&UserId) -> Ends + Send + 'static,
) -> EventStream<pb::MuxServerFrame> {
    let (opened_tx, opened_rx) = mpsc::unbounded_channel();
    tokio::spawn(route(core, frames, draining, ends, opened_tx));
    Box::pin(Merged {
        opened: opened_rx,
        open: SelectAll::new(),
        routing: true,
    })
}

/// Reads the stream's frames and hands each to its connection, opening and
/// closing connections as asked. When the stream ends every connection
/// does; while chat-core drains, it takes no more frames, so the stream ends
/// once every connection said its end (`unavailable`) and the caller opens
/// its next stream elsewhere.
async fn route(
    core: ChatCore,
    mut frames: Streaming<pb::MuxClientFrame>,
    draining: CancellationToken,
    ends: impl Fn(&UserId) -> Ends,
    opened: mpsc::UnboundedSender<ConnFrames>,
) {
    let mut conns: HashMap<u64, queue::Sender<Box<pb::ClientFrame>>> = HashMap::new();
    loop {
        let next = tokio::select! {
            next = frames.next() => next,
            () = draining.cancelled() => break,
        };
        let Some(Ok(pb::MuxClientFrame { conn, kind })) = next else {
            break;
        };
        match kind {
            Some(In::Open(open)) => {
                let (tx, connection) = open_conn(&core, conn, open, &ends);
                if let Some(tx) = tx {
                    conns.insert(conn, tx);
                }
                if opened.send(connection).is_err() {
                    break;
                }
            }
            Some(In::Frame(frame)) => {
                // A connection that is gone (or never opened) had its end
                // said already; its late frames are dropped.
                if let Some(tx) = conns.get_mut(&conn)
                    && tx.send(Box::new(frame)).await.is_err()
                {
                    conns.remove(&conn);
                }
            }
            Some(In::Close(_)) => {
                // Its frames end; the connection winds down and says `ended`.
                conns.remove(&conn);
            }
            None => {}
        }
    }
}

/// Opens connection `conn`: its frames' queue (none when refused) and its
/// frames out, from `opened` to `ended`.
fn open_conn(
    core: &ChatCore,
    conn: u64,
    open: pb::MuxOpen,
    ends: &impl Fn(&UserId) -> Ends,
) -> (Option<queue::Sender<Box<pb::ClientFrame>>>, ConnFrames) {
    let refusal = match UserId::parse(&open.user_id) {
        Err(_) => Err("malformed user id"),
        Ok(_) if !open.sign_in.is_empty() && core.streams().is_signed_out(&open.sign_in) => {
            Err("signed out; sign in again")
        }
        Ok(user) => Ok(user),
    };
    let user = match refusal {
        Ok(user) => user,
        Err(reason) => {
            let refused = ErrorCode::Unauthenticated.status(reason);
            let only_end = futures::stream::iter([ended(conn, Some(&refused))]);
            return (None, Box::pin(only_end));
        }
    };
    // A `futures` queue of boxed frames: it allocates per frame queued, so an
    // idle connection's queue is a few hundred bytes (Tokio's allocates a
    // cache-padded state and a block of 32 slots up front).
    let (tx, rx) = queue::channel::<Box<pb::ClientFrame>>(INCOMING_QUEUE);
    let request_id = Some(open.request_id).filter(|id| !id.is_empty());
    let ends = ends(&user);
    let served = until_ended(
        super::connect::serve(
            core.clone(),
            Principal::User(user),
            request_id,
            None,
            rx.map(|frame| Ok(*frame)),
        ),
        ends,
    );
    let frames = ConnFramesOut {
        conn,
        served: Some(served),
        opened: false,
    };
    (Some(tx), Box::pin(frames))
}

/// A connection's frames out: `opened`, what it is served, then `ended`
/// (with the status it ended with, if any).
struct ConnFramesOut {
    conn: u64,
    /// None once `ended` is said.
    served: Option<EventStream<pb::ServerFrame>>,
    opened: bool,
}

impl Stream for ConnFramesOut {
    type Item = pb::MuxServerFrame;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let conn = self.conn;
        if !self.opened {
            self.opened = true;
            return Poll::Ready(Some(pb::MuxServerFrame {
                conn,
                kind: Some(Out::Opened(pb::MuxOpened {})),
            }));
        }
        let Some(served) = self.served.as_mut() else {
            return Poll::Ready(None);
        };
        let status = match served.poll_next_unpin(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Some(Ok(frame))) => {
                return Poll::Ready(Some(pb::MuxServerFrame {
                    conn,
                    kind: Some(Out::Frame(frame)),
                }));
            }
            Poll::Ready(Some(Err(status))) => Some(status),
            Poll::Ready(None) => None,
        };
        self.served = None;
        Poll::Ready(Some(ended(conn, status.as_ref())))
    }
}

fn ended(conn: u64, status: Option<&Status>) -> pb::MuxServerFrame {
    let (code, message) = match status {
        Some(status) => (
            ErrorCode::from_status(status).as_str().to_owned(),
            status.message().to_owned(),
        ),
        None => (String::new(), String::new()),
    };
    pb::MuxServerFrame {
        conn,
        kind: Some(Out::Ended(pb::MuxEnded { code, message })),
    }
}

/// Every open connection's frames out, merged fairly; ends when the stream's
/// reading has ended and every connection has said its end.
struct Merged {
    opened: mpsc::UnboundedReceiver<ConnFrames>,
    open: SelectAll<ConnFrames>,
    routing: bool,
}

impl Stream for Merged {
    type Item = Result<pb::MuxServerFrame, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        while self.routing {
            match self.opened.poll_recv(cx) {
                Poll::Ready(Some(conn)) => self.open.push(conn),
                Poll::Ready(None) => self.routing = false,
                Poll::Pending => break,
            }
        }
        match self.open.poll_next_unpin(cx) {
            Poll::Ready(Some(frame)) => Poll::Ready(Some(Ok(frame))),
            Poll::Ready(None) if !self.routing => Poll::Ready(None),
            Poll::Ready(None) | Poll::Pending => Poll::Pending,
        }
    }
}
