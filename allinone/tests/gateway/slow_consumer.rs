//! A deliberately stalled reader is dropped at its bound while a fast reader
//! of the same session keeps getting its replies promptly; the dropped
//! client recovers everything by resuming with `after_seq`.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use crate::common;

use common::TestStack;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const TURNS: usize = 40;

type Socket = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// A WebSocket over a socket with a tiny receive buffer, so a client that
/// stops reading backs up into the gateway quickly.
async fn connect(gateway: std::net::SocketAddr, token: &str, recv_buffer: Option<u32>) -> Socket {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    if let Some(size) = recv_buffer {
        socket.set_recv_buffer_size(size).unwrap();
    }
    let stream = socket.connect(gateway).await.unwrap();
    let url = format!("ws://{gateway}/api/v1/ws?access_token={token}");
    tokio_tungstenite::client_async(url, stream).await.unwrap().0
}

async fn next_json(socket: &mut Socket, wait: Duration) -> Option<Value> {
    loop {
        match tokio::time::timeout(wait, socket.next()).await.ok()?? {
            Ok(Message::Text(text)) => return Some(serde_json::from_str(&text).unwrap()),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

/// A session with two readers: `stalled`, over a socket with a 4 KiB receive
/// buffer, subscribed and then never read; and `fast`, which has sent and
/// read through `TURNS` long turns. The gateway gives up on a socket that
/// takes no write for `flush_timeout_secs`.
struct Load {
    stack: TestStack,
    token: String,
    session_id: String,
    stalled: Socket,
}

async fn stall_one_reader_through_a_load(user: &str, flush_timeout_secs: u64) -> Load {
    let stack = TestStack::spawn_with(move |s| {
        s.message_rate_limit = common::nz(100_000);
        s.ws_flush_timeout_secs = flush_timeout_secs;
    })
    .await
    .unwrap();
    let addr = stack.addr;
    let token = stack.user(user).await.unwrap();
    let session_id = stack.session(&token, "echo").await.unwrap();
    let subscribe = json!({"type": "subscribe", "session_id": session_id, "after_seq": 0}).to_string();

    let mut stalled = connect(addr, &token, Some(4096)).await;
    stalled.send(Message::text(subscribe.clone())).await.unwrap();
    assert_eq!(
        next_json(&mut stalled, Duration::from_secs(10)).await.unwrap()["type"],
        "subscribed"
    );
    // From here on `stalled` is not read until the load is over.

    let mut fast = connect(addr, &token, None).await;
    fast.send(Message::text(subscribe)).await.unwrap();
    let words = "stream ".repeat(1200);
    for turn in 0..TURNS {
        let send = json!({"type": "send", "session_id": session_id, "client_msg_id": format!("t{turn}"), "content": words});
        fast.send(Message::text(send.to_string())).await.unwrap();
        loop {
            let frame = next_json(&mut fast, Duration::from_secs(10))
                .await
                .expect("the fast reader is never dropped");
            assert_ne!(frame["type"], "error", "{frame}");
            if frame["type"] == "message" && frame["message"]["role"] == "assistant" {
                break;
            }
        }
    }
    Load {
        stack,
        token,
        session_id,
        stalled,
    }
}

#[tokio::test]
async fn a_stalled_reader_is_dropped_while_a_fast_reader_stays_prompt() {
    let Load {
        stack,
        token,
        session_id,
        mut stalled,
    } = stall_one_reader_through_a_load("slow_reader", 2).await;
    let addr = stack.addr;
    // (That the stalled reader never holds the fast one up is proven without
    // a clock by the 4008 test below, where nothing drops the stalled socket
    // until the fast reader's own turns have overflowed its queue.)

    // The stalled reader was dropped: reading now ends early, well before
    // the last message of the load.
    let mut last_seq = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Some(frame) = next_json(&mut stalled, Duration::from_secs(5)).await {
        if frame["type"] == "message" {
            last_seq = frame["message"]["seq"].as_i64().unwrap();
        }
        assert!(Instant::now() < deadline, "the stalled reader was never dropped");
    }
    assert!(
        last_seq < (2 * TURNS) as i64,
        "dropped before the end (saw up to seq {last_seq})"
    );

    // It recovers everything by resuming.
    let mut resumed = connect(addr, &token, None).await;
    let resume = json!({"type": "subscribe", "session_id": session_id, "after_seq": last_seq});
    resumed.send(Message::text(resume.to_string())).await.unwrap();
    let mut seqs = Vec::new();
    while seqs.last() != Some(&((2 * TURNS) as i64)) {
        let frame = next_json(&mut resumed, Duration::from_secs(10))
            .await
            .expect("resume delivers the rest");
        if frame["type"] == "message" {
            seqs.push(frame["message"]["seq"].as_i64().unwrap());
        }
    }
    assert_eq!(seqs, ((last_seq + 1)..=(2 * TURNS) as i64).collect::<Vec<_>>());
}

/// The gateway waits long enough on a stalled socket that the connection's
/// queue overflows first: the connection ends with `slow_consumer`, and the
/// client, once it reads again, finds
/// what was already on its way, then an error frame `slow_consumer` and the
/// close code 4008. The session's other reader is not disturbed.
#[tokio::test]
async fn a_connection_that_overflows_its_queue_is_closed_with_4008() {
    // The gateway would wait 600 s on the stalled socket's writes: only the
    // connection's queue can end it. The load is far more than the socket buffers,
    // the gateway's batch and the HTTP/2 window hold.
    let Load { mut stalled, .. } = stall_one_reader_through_a_load("overflowing_reader", 600).await;

    // Reads what was on its way, then the error frame and the close.
    let mut error = None;
    let close = loop {
        match tokio::time::timeout(Duration::from_secs(30), stalled.next())
            .await
            .expect("the stalled connection ends")
        {
            Some(Ok(Message::Text(text))) => {
                let frame: Value = serde_json::from_str(&text).unwrap();
                if frame["type"] == "error" {
                    error = Some(frame);
                }
            }
            Some(Ok(Message::Close(close))) => break close,
            Some(Ok(_)) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    let error = error.expect("an error frame before the close");
    assert_eq!(error["code"], "slow_consumer", "{error}");
    assert_eq!(close.map(|c| u16::from(c.code)), Some(4008));
}
