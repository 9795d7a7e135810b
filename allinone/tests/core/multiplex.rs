//! `Multiplex`: many users' connections over one stream, each served as a
//! `Connect` stream of its own would be, and each ending on its own.

use crate::common;

use std::time::Duration;

use chat_common::token::Role;
use chat_proto::chat::v1::{
    self as pb, client_frame::Frame as In, mux_client_frame::Kind as MuxIn, mux_server_frame::Kind as MuxOut,
    server_frame::Frame as Out, user_service_client::UserServiceClient,
};
use common::*;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

fn service_token() -> String {
    keys()
        .sign("tests", Role::Service, Duration::from_secs(600))
        .unwrap()
}

/// A `Multiplex` stream: frames in through `tx`, frames out from `rx`.
struct Mux {
    tx: mpsc::Sender<pb::MuxClientFrame>,
    rx: tonic::Streaming<pb::MuxServerFrame>,
}

impl Mux {
    async fn open(addr: std::net::SocketAddr, token: &str) -> Result<Self, tonic::Status> {
        let (tx, frames) = mpsc::channel(64);
        let rx = client(addr)
            .await
            .multiplex(with_token(ReceiverStream::new(frames), token))
            .await?
            .into_inner();
        Ok(Self { tx, rx })
    }

    async fn put(&self, conn: u64, kind: MuxIn) {
        let frame = pb::MuxClientFrame {
            conn,
            kind: Some(kind),
        };
        self.tx.send(frame).await.unwrap();
    }

    async fn open_conn(&self, conn: u64, user_id: &str, sign_in: &str) {
        let open = pb::MuxOpen {
            user_id: user_id.into(),
            sign_in: sign_in.into(),
            request_id: format!("req-{conn}"),
        };
        self.put(conn, MuxIn::Open(open)).await;
    }

    async fn frame(&self, conn: u64, frame: In) {
        self.put(conn, MuxIn::Frame(pb::ClientFrame { frame: Some(frame) }))
            .await;
    }

    /// The next frame out, whichever connection it is for.
    async fn next(&mut self) -> (u64, MuxOut) {
        let frame = tokio::time::timeout(Duration::from_secs(15), self.rx.next())
            .await
            .expect("a frame in time")
            .expect("the stream is open")
            .expect("no error");
        (frame.conn, frame.kind.expect("a kind"))
    }

    /// Frames out until `until` matches one, in order.
    async fn until(&mut self, mut until: impl FnMut(u64, &MuxOut) -> bool) -> Vec<(u64, MuxOut)> {
        let mut seen = Vec::new();
        loop {
            let (conn, kind) = self.next().await;
            let done = until(conn, &kind);
            seen.push((conn, kind));
            if done {
                return seen;
            }
        }
    }
}

fn subscribe(session_id: &str) -> In {
    In::Subscribe(pb::SubscribeFrame {
        session_id: session_id.into(),
        after_seq: 0,
    })
}

fn is_reply(kind: &MuxOut) -> bool {
    matches!(kind, MuxOut::Frame(pb::ServerFrame { frame: Some(Out::Event(pb::SessionEvent {
        event: Some(pb::session_event::Event::Message(m)), .. })) }) if m.role == "assistant")
}

#[tokio::test]
async fn connections_of_several_users_share_a_stream_and_each_sees_only_its_own() {
    let stack = spawn_stack().await;
    let addr = stack.core.addr;
    let (alice, alice_token) = register(addr).await;
    let (bob, bob_token) = register(addr).await;
    let alices = create_session(addr, &alice_token).await;
    let bobs = create_session(addr, &bob_token).await;
    let mut mux = Mux::open(addr, &service_token()).await.unwrap();

    // Arrange: a connection for each user.
    mux.open_conn(1, &alice, "").await;
    mux.open_conn(2, &bob, "").await;
    let mut opened = vec![mux.next().await, mux.next().await];
    opened.sort_by_key(|(conn, _)| *conn);
    assert!(
        matches!(opened[..], [(1, MuxOut::Opened(_)), (2, MuxOut::Opened(_))]),
        "{opened:?}"
    );

    // Each subscribes to its own session; Bob may not subscribe to Alice's.
    mux.frame(1, subscribe(&alices.id)).await;
    mux.frame(2, subscribe(&bobs.id)).await;
    mux.frame(2, subscribe(&alices.id)).await;
    // Connections are served side by side: wait for both answers of each.
    let (mut alice_answered, mut bob_answers) = (false, 0);
    let seen = mux
        .until(|conn, kind| {
            if matches!(kind, MuxOut::Frame(_)) {
                match conn {
                    1 => alice_answered = true,
                    _ => bob_answers += 1,
                }
            }
            alice_answered && bob_answers == 2
        })
        .await;
    let subscribed: Vec<(u64, String)> = seen
        .iter()
        .filter_map(|(conn, kind)| match kind {
            MuxOut::Frame(pb::ServerFrame {
                frame: Some(Out::Subscribed(s)),
            }) => Some((*conn, s.session_id.clone())),
            _ => None,
        })
        .collect();
    assert!(subscribed.contains(&(1, alices.id.clone())), "{seen:?}");
    assert!(subscribed.contains(&(2, bobs.id.clone())), "{seen:?}");
    assert!(
        !subscribed.contains(&(2, alices.id.clone())),
        "Bob subscribed to Alice's session: {seen:?}"
    );

    // Act: Alice sends; her ack and reply come on her connection only.
    let send = In::Send(pb::SendFrame {
        session_id: alices.id.clone(),
        client_msg_id: "m1".into(),
        content: "hello over the mux".into(),
        ..Default::default()
    });
    mux.frame(1, send).await;
    let seen = mux.until(|_, kind| is_reply(kind)).await;
    assert!(
        seen.iter().all(|(conn, _)| *conn == 1),
        "frames of Alice's turn reached another connection: {seen:?}"
    );
    let acked = seen.iter().position(|(_, kind)| {
        matches!(
            kind,
            MuxOut::Frame(pb::ServerFrame {
                frame: Some(Out::Ack(_))
            })
        )
    });
    assert!(acked.is_some(), "no ack on Alice's connection: {seen:?}");

    // Closing Alice's connection ends it alone: Bob's still answers.
    mux.put(1, MuxIn::Close(pb::MuxClose {})).await;
    let seen = mux.until(|_, kind| matches!(kind, MuxOut::Ended(_))).await;
    let (conn, ended) = seen.last().unwrap();
    assert_eq!(*conn, 1);
    assert!(
        matches!(ended, MuxOut::Ended(e) if e.code.is_empty()),
        "{ended:?}"
    );
    mux.frame(2, In::Ping(pb::PingFrame {})).await;
    let (conn, kind) = mux.next().await;
    assert_eq!(conn, 2);
    assert!(
        matches!(
            kind,
            MuxOut::Frame(pb::ServerFrame {
                frame: Some(Out::Pong(_))
            })
        ),
        "{kind:?}"
    );
}

#[tokio::test]
async fn only_services_may_multiplex() {
    let stack = spawn_stack().await;
    let (_, user_token) = register(stack.core.addr).await;
    let mut mux = match Mux::open(stack.core.addr, &user_token).await {
        Ok(mux) => mux,
        Err(status) => {
            assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
            return;
        }
    };
    let status = mux.rx.next().await.expect("an answer").expect_err("refused");
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
}

/// A sign-in and its family id, as the gateway gets them at login.
async fn sign_in(addr: std::net::SocketAddr, user_id: &str) -> (String, String) {
    let mut users = UserServiceClient::new(channel(addr).await);
    let request = pb::IssueRefreshTokenRequest {
        user_id: user_id.into(),
        ttl_secs: 3600,
    };
    let issued = users
        .issue_refresh_token(with_token(request, &service_token()))
        .await
        .unwrap()
        .into_inner();
    (issued.refresh_token, issued.family_id)
}

#[tokio::test]
async fn signing_out_ends_the_users_connection_and_refuses_new_ones() {
    let stack = spawn_stack().await;
    let addr = stack.core.addr;
    let (alice, _) = register(addr).await;
    let (bob, _) = register(addr).await;
    let (refresh, sign_in_id) = sign_in(addr, &alice).await;
    let mut mux = Mux::open(addr, &service_token()).await.unwrap();
    mux.open_conn(1, &alice, &sign_in_id).await;
    mux.open_conn(2, &bob, "").await;
    let opened = vec![mux.next().await, mux.next().await];
    assert!(
        opened.iter().all(|(_, kind)| matches!(kind, MuxOut::Opened(_))),
        "{opened:?}"
    );

    // Act: Alice signs out.
    let mut users = UserServiceClient::new(channel(addr).await);
    let request = pb::RevokeRefreshTokenRequest {
        refresh_token: refresh,
        access_ttl_secs: 60,
    };
    users
        .revoke_refresh_token(with_token(request, &service_token()))
        .await
        .unwrap();

    // Her connection ends as unauthenticated; Bob's stays.
    let (conn, kind) = mux.next().await;
    assert_eq!(conn, 1);
    assert!(
        matches!(&kind, MuxOut::Ended(e) if e.code == "unauthenticated"),
        "{kind:?}"
    );
    mux.frame(2, In::Ping(pb::PingFrame {})).await;
    let (conn, kind) = mux.next().await;
    assert_eq!(conn, 2);
    assert!(
        matches!(
            kind,
            MuxOut::Frame(pb::ServerFrame {
                frame: Some(Out::Pong(_))
            })
        ),
        "{kind:?}"
    );

    // A new connection of the signed-out sign-in is refused.
    mux.open_conn(3, &alice, &sign_in_id).await;
    let (conn, kind) = mux.next().await;
    assert_eq!(conn, 3);
    assert!(
        matches!(&kind, MuxOut::Ended(e) if e.code == "unauthenticated"),
        "{kind:?}"
    );
}

/// A channel to `url` whose streams have a small receive window, so the
/// server stops sending on a stream as soon as its reader stops reading.
async fn narrow_channel(url: &str) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(url.to_owned())
        .unwrap()
        .initial_stream_window_size(Some(16 * 1024))
        .connect()
        .await
        .unwrap()
}

/// Words in the reply that overflows a connection's queue: more frames than
/// the queue (`CONNECTION_FRAME_QUEUE`, 4096), the HTTP/2 send buffer and the
/// small window hold.
const FLOOD_WORDS: usize = 20_000;

/// A stack whose messages may be long enough for [`FLOOD_WORDS`].
async fn flood_stack() -> Stack {
    let db = chat_testkit::TestDatabase::new().await.expect("test database");
    let worker = spawn_worker().await;
    let core = spawn_core_with(&db.url, &worker.url, |s| s.max_content_bytes = 256 * 1024).await;
    Stack { db, worker, core }
}

/// A reply of `words` words, sent with `SendMessage` to completion.
async fn long_turn(addr: std::net::SocketAddr, token: &str, session_id: &str, words: usize) {
    let content: Vec<String> = (0..words).map(|i| format!("w{i}")).collect();
    send(addr, token, session_id, "long", &content.join(" ")).await;
}

/// chat-core's queue for one connection overflows when its frames are not
/// taken: that connection ends with `slow_consumer`, while the stream and
/// its other connections go on.
#[tokio::test]
async fn a_multiplexed_connection_that_falls_behind_ends_alone_with_slow_consumer() {
    let stack = flood_stack().await;
    let addr = stack.core.addr;
    let (alice, alice_token) = register(addr).await;
    let (bob, _) = register(addr).await;
    let session = create_session(addr, &alice_token).await;
    let (tx, frames) = mpsc::channel(64);
    let mut request = tonic::Request::new(ReceiverStream::new(frames));
    request
        .metadata_mut()
        .insert("authorization", bearer(&service_token()));
    let rx = chat_proto::chat::v1::chat_service_client::ChatServiceClient::new(
        narrow_channel(&stack.core.url).await,
    )
    .multiplex(request)
    .await
    .unwrap()
    .into_inner();
    let mut mux = Mux { tx, rx };
    mux.open_conn(1, &alice, "").await;
    mux.frame(1, subscribe(&session.id)).await;
    mux.until(|_, kind| {
        matches!(
            kind,
            MuxOut::Frame(pb::ServerFrame {
                frame: Some(Out::Subscribed(_))
            })
        )
    })
    .await;

    // Act: a long reply streams to the session while nobody reads the stream.
    long_turn(addr, &alice_token, &session.id, FLOOD_WORDS).await;

    // Alice's connection overflowed and ended; a new connection works.
    let seen = mux.until(|_, kind| matches!(kind, MuxOut::Ended(_))).await;
    let (conn, ended) = seen.last().unwrap();
    assert_eq!(*conn, 1);
    assert!(
        matches!(ended, MuxOut::Ended(e) if e.code == "slow_consumer"),
        "{ended:?}"
    );
    let deltas = seen
        .iter()
        .filter(|(_, kind)| {
            matches!(
                kind,
                MuxOut::Frame(pb::ServerFrame {
                    frame: Some(Out::Event(pb::SessionEvent {
                        event: Some(pb::session_event::Event::Delta(_)),
                        ..
                    }))
                })
            )
        })
        .count();
    assert!(
        deltas < FLOOD_WORDS,
        "the connection was meant to fall behind, yet got all {deltas} deltas"
    );
    mux.open_conn(2, &bob, "").await;
    let (conn, kind) = mux.next().await;
    assert_eq!((conn, matches!(kind, MuxOut::Opened(_))), (2, true), "{kind:?}");
    mux.frame(2, In::Ping(pb::PingFrame {})).await;
    let (conn, kind) = mux.next().await;
    assert_eq!(conn, 2);
    assert!(
        matches!(
            kind,
            MuxOut::Frame(pb::ServerFrame {
                frame: Some(Out::Pong(_))
            })
        ),
        "{kind:?}"
    );
}

/// The same bound on a `Connect` stream: it ends with `slow_consumer`.
#[tokio::test]
async fn a_connect_stream_that_falls_behind_ends_with_slow_consumer() {
    let stack = flood_stack().await;
    let addr = stack.core.addr;
    let (_, token) = register(addr).await;
    let session = create_session(addr, &token).await;
    let (tx, frames) = mpsc::channel(8);
    let mut rx = chat_proto::chat::v1::chat_service_client::ChatServiceClient::new(
        narrow_channel(&stack.core.url).await,
    )
    .connect(with_token(ReceiverStream::new(frames), &token))
    .await
    .unwrap()
    .into_inner();
    tx.send(pb::ClientFrame {
        frame: Some(subscribe(&session.id)),
    })
    .await
    .unwrap();
    let first = rx.next().await.unwrap().unwrap();
    assert!(matches!(first.frame, Some(Out::Subscribed(_))), "{first:?}");

    long_turn(addr, &token, &session.id, FLOOD_WORDS).await;

    let ended = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match rx.next().await {
                Some(Ok(_)) => {}
                Some(Err(status)) => return status,
                None => panic!("the stream ended without a status"),
            }
        }
    })
    .await
    .expect("the stream ends");
    assert_eq!(
        chat_common::ErrorCode::from_status(&ended).as_str(),
        "slow_consumer",
        "{ended:?}"
    );
}
